/* SPDX-License-Identifier: MIT */
/* The standard gRPC health service. Check answers from memory at once; Watch sends the status
 * now and again at every change, looking every HEALTH_WATCH_POLL_MS (readiness is a property
 * of several parts - etcd's writability, the session, the view - that publish no single
 * change signal), until the client cancels, its deadline passes or the node stops. No
 * credentials are asked (the auth hook lets every caller in), but the calls take the server's
 * slots like any other (total, per address, per connection; a message within the receive
 * deadline), and Watch streams are capped at HEALTH_MAX_WATCHES, so they cannot starve the
 * API. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/log.h"
#include "grpc/health/v1/health.pb-c.h"
#include "health.h"
#include "ready.h"

#define SERVICE_DHAF "dhaf.v1.Dhaf"

struct health {
    struct cluster *c;
    pthread_mutex_t lock;
    pthread_cond_t cv; /* the node stops */
    int watches;       /* Watch streams running */
    bool stopping;
};

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving;

struct health *health_new(struct cluster *c)
{
    struct health *h = dhaf_xcalloc(1, sizeof(*h));
    h->c = c;
    pthread_mutex_init(&h->lock, NULL);
    dhaf_cond_init_mono(&h->cv);
    return h;
}

void health_stop(struct health *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    h->stopping = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->lock);
}

void health_free(struct health *h)
{
    if (!h)
        return;
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cv);
    free(h);
}

/* Probes carry no credentials: every caller may ask (the server's slots still apply). */
int health_auth(void *ud, struct dhaf_rpc_call *call, struct dhaf_err *err)
{
    (void)ud;
    (void)call;
    (void)err;
    return 0;
}

/* The status of service name (SERVICE_UNKNOWN for a name this node does not serve). */
static serving status_of(struct health *h, const char *name)
{
    pthread_mutex_lock(&h->lock);
    bool stopping = h->stopping;
    pthread_mutex_unlock(&h->lock);
    bool process = !name || !name[0];
    if (!process && strcmp(name, SERVICE_DHAF) != 0)
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    if (stopping)
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    const char *word;
    if (!process && !node_ready(h->c, &word, NULL))
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

static int send_status(struct dhaf_rpc_call *call, serving st, struct dhaf_err *err)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = st;
    return dhaf_rpc_send(call, &r.base, err);
}

int health_check(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *msg,
                 struct dhaf_err *err)
{
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)msg;
    serving st = status_of(ud, req->service);
    if (st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN) {
        char q[160];
        return dhaf_err_set(err, DHAF_ENOTFOUND,
                            "unknown service \"%s\" (this node answers for \"\" and \"%s\")",
                            dhaf_log_quote(q, sizeof(q), req->service), SERVICE_DHAF);
    }
    return send_status(call, st, err);
}

int health_watch(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *msg,
                 struct dhaf_err *err)
{
    struct health *h = ud;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)msg;
    pthread_mutex_lock(&h->lock);
    bool stopping = h->stopping, room = !stopping && h->watches < HEALTH_MAX_WATCHES;
    if (room)
        h->watches++;
    pthread_mutex_unlock(&h->lock);
    if (stopping)
        return dhaf_err_set(err, DHAF_EUNAVAILABLE, "the node is stopping");
    if (!room)
        return dhaf_err_set(err, DHAF_ETOOBIG,
                            "%d health watches already run on this node; use Check",
                            HEALTH_MAX_WATCHES);
    int rc = 0;
    serving sent = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN;
    bool first = true;
    for (;;) {
        serving st = status_of(h, req->service);
        if (first || st != sent) {
            /* an unknown name gets SERVICE_UNKNOWN and the stream stays open, as the
             * protocol says (the name may become known) */
            rc = send_status(call, st, err);
            if (rc)
                break;
            sent = st;
            first = false;
        }
        pthread_mutex_lock(&h->lock);
        if (!h->stopping)
            dhaf_cond_wait_until(&h->cv, &h->lock, dhaf_mono_ms() + HEALTH_WATCH_POLL_MS);
        stopping = h->stopping;
        pthread_mutex_unlock(&h->lock);
        if (stopping) {
            /* the last word: not serving; then the stream ends with OK */
            if (sent != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING &&
                sent != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN)
                send_status(call,
                            GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING,
                            err);
            break;
        }
        if (dhaf_rpc_call_cancelled(call))
            break;
    }
    pthread_mutex_lock(&h->lock);
    h->watches--;
    pthread_mutex_unlock(&h->lock);
    /* a client that went away is the normal end of a watch, not an error */
    return rc == DHAF_ECANCELLED ? 0 : rc;
}
