/* SPDX-License-Identifier: MIT */
/* REST gateway: libmicrohttpd with a thread per connection, a route table, the /api/v1 JSON
 * replies (dhaf_pb_to_json of the gRPC messages), the original dhaf's paths and envelope,
 * /metrics, /healthz and /readyz. Every operation is a call into service.c with the config
 * snapshot current when the request arrived: reads come from the node's view (no etcd round
 * trip), changes go to etcd; no lock is held by the gateway itself. Connections are limited
 * per client address and guarded by rest_guard.c (a deadline for each request to arrive; idle
 * connections make room for new ones); requests that change state are refused from other
 * sites (rest_req.c), and never happen on HEAD. */
#include <netinet/in.h> /* before microhttpd.h: struct sockaddr_in */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "access.h"
#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/etcd.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/rpc.h"
#include "dhaf/valid.h"
#include "cfgdrift.h"
#include "etcdmon.h"
#include "metrics.h"
#include "ready.h"
#include "dhaf/pbjson.h"
#include "rest.h"
#include "rest_guard.h"
#include "rest_req.h"
#include "service.h"
#include "view.h"

#define BODY_MAX        (64 * 1024)       /* larger bodies get 413 */
#define DRAIN_MAX       (8 * 1024 * 1024) /* up to this much is read and dropped before the 413 */
#define PATH_MAX_LEN    512               /* longer paths get 414 (MHD caps the whole head too) */
#define ARGS_MAX        16                /* query parameters */
#define ARG_KEY_MAX     64
#define ARG_VALUE_MAX   256
#define CONN_LIMIT      128         /* beyond: the oldest connection not being answered is cut */
#define CONN_RESERVE    32          /* beyond CONN_LIMIT while every connection is being answered */
#define CONN_PER_IP     32          /* connections from one client address */
#define REQ_DEADLINE_MS 10000       /* TLS handshake + request head + body; idle keep-alive */
#define CONN_TIMEOUT_S  15          /* no byte moves (a client that does not read its reply) */
#define CONN_MEMORY     (32 * 1024) /* request line + headers must fit */
#define TLS_PRIORITIES  "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

struct rest {
    struct cluster *c;
    struct MHD_Daemon *d;
    atomic_int inflight; /* requests being answered: a stop does not cut one short */
    atomic_bool stopping;
    struct dhaf_waker idle; /* kicked when the last request in progress ends during a stop */
    char *cert, *key, *ca;  /* PEM, kept for the daemon's life */
    char addr[300];
    char *host, *cert_file, *key_file, *ca_file; /* as started: a reload cannot change them */
    int port;
    bool tls;
    struct rest_guard *guard;
    const char *names[2]; /* host names that are ours besides localhost (Host checks) */
    char hostname[256];
};

/* One request's state, from the first call of the access handler to the completion. */
struct req {
    char *body;
    size_t len;
    size_t seen;     /* body bytes received, kept or not */
    bool started;    /* the access handler has seen the head */
    bool bad_target; /* the path encodes a control byte (%00...) */
    bool too_big;
    bool replied;
    int64_t t0_ms;
};

/* The reply a handler builds. */
struct out {
    unsigned status;
    const char *ctype;
    char *body; /* taken by the reply */
    size_t len;
    char allow[64];
    bool challenge;       /* WWW-Authenticate: Bearer */
    int64_t stale_age_ms; /* > 0: served from a stale view this old (X-Dhaf-Stale) */
    char warning[300];    /* "": none; else X-Dhaf-Warning (ready, with something to say) */
};

enum family { FAM_V1, FAM_ORIG, FAM_PLAIN };

/* What a handler gets. */
struct ctx {
    struct rest *r;
    struct MHD_Connection *conn;
    struct svc_env env;
    const char *cap[2]; /* the path's '*' segments */
    const struct req *rq;
    const char *peer;
    struct access_who who;    /* the caller (routes that are not open) */
    struct event_actor actor; /* the changes' audit trail: who, its role, peer, comment */
};

typedef void route_fn(struct ctx *x, struct out *o);

/* ------------------------------------------------------------------ reply helpers */

/* A JSON string of s; text that is not valid UTF-8 (echoed client input) loses those bytes. */
static json_t *jstr(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j)
        return j;
    char *copy = dhaf_xstrdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j ? j : json_string("");
}

static void set_body(struct out *o, unsigned status, const char *ctype, char *body)
{
    free(o->body);
    o->status = status;
    o->ctype = ctype;
    o->body = body;
    o->len = strlen(body);
}

static void set_text(struct out *o, unsigned status, const char *text)
{
    set_body(o, status, "text/plain; charset=utf-8", dhaf_xstrdup(text));
}

/* Replies j (taken) as compact JSON with a final newline. */
static void set_json(struct out *o, unsigned status, json_t *j)
{
    char *s = dhaf_json_dump(j);
    json_decref(j);
    char *body = dhaf_xasprintf("%s\n", s);
    free(s);
    set_body(o, status, "application/json", body);
}

/* /api/v1 error: {"error":{"code":"NOT_FOUND","message":"..."}} */
static void v1_error(struct out *o, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void v1_error(struct out *o, unsigned status, const char *code, const char *fmt, ...)
{
    char msg[DHAF_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(code));
    json_object_set_new(e, "message", jstr(msg));
    json_t *j = json_object();
    json_object_set_new(j, "error", e);
    set_json(o, status, j);
}

/* The HTTP status and code name of a service.c error. */
static void v1_from_err(struct out *o, int rc, const struct dhaf_err *err)
{
    switch (rc) {
    case DHAF_EINVAL:
        v1_error(o, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT", "%s", err->msg);
        break;
    case DHAF_ENOTFOUND:
        v1_error(o, MHD_HTTP_NOT_FOUND, "NOT_FOUND", "%s", err->msg);
        break;
    case DHAF_ECONFLICT:
        v1_error(o, MHD_HTTP_CONFLICT, "FAILED_PRECONDITION", "%s", err->msg);
        break;
    case DHAF_EDENIED:
        v1_error(o, MHD_HTTP_FORBIDDEN, "PERMISSION_DENIED", "%s", err->msg);
        break;
    case DHAF_EUNAVAILABLE:
    case DHAF_ETIMEOUT:
    case DHAF_EUNKNOWN_OUTCOME:
    case DHAF_EFENCED:
        v1_error(o, MHD_HTTP_SERVICE_UNAVAILABLE, "UNAVAILABLE", "%s", err->msg);
        break;
    default:
        v1_error(o, MHD_HTTP_INTERNAL_SERVER_ERROR, "INTERNAL", "%s", err->msg);
    }
}

/* Marks the reply as served from a stale view (the original paths' envelope has no room for
 * it: a header says it on every path). */
static void mark_view(struct out *o, const Dhaf__V1__ViewState *v)
{
    if (v && v->stale)
        o->stale_age_ms = v->age_ms > 0 ? v->age_ms : 1;
}

/* A message (taken) as JSON. */
static void set_msg(struct out *o, unsigned status, ProtobufCMessage *m)
{
    json_t *j = dhaf_pb_to_json(m);
    protobuf_c_message_free_unpacked(m, NULL);
    set_json(o, status, j);
}

/* The original's envelope. Success: data (taken) may be NULL (no "data" member). */
static void orig_ok(struct out *o, json_t *data)
{
    json_t *j = json_object();
    json_object_set_new(j, "success", json_true());
    json_object_set_new(j, "errors", json_array());
    if (data)
        json_object_set_new(j, "data", data);
    set_json(o, MHD_HTTP_OK, j);
}

static void orig_fail(struct out *o, unsigned status, int code, const char *msg)
{
    json_t *e = json_object();
    json_object_set_new(e, "code", json_integer(code));
    json_object_set_new(e, "message", jstr(msg));
    json_t *errs = json_array();
    json_array_append_new(errs, e);
    json_t *j = json_object();
    json_object_set_new(j, "success", json_false());
    json_object_set_new(j, "errors", errs);
    set_json(o, status, j);
}

/* The original answers its own errors with HTTP 400 and anything else with 500 / -1. */
static void orig_other(struct out *o, const struct dhaf_err *err)
{
    char msg[DHAF_ERR_MSG_MAX + 32];
    snprintf(msg, sizeof(msg), "Internal error: %s", err->msg);
    orig_fail(o, MHD_HTTP_INTERNAL_SERVER_ERROR, -1, msg);
}

/* ------------------------------------------------------------------ request input */

/* A query parameter; NULL when absent or empty. */
static const char *arg(struct ctx *x, const char *name)
{
    const char *v = MHD_lookup_connection_value(x->conn, MHD_GET_ARGUMENT_KIND, name);
    return v && *v ? v : NULL;
}

/* Original: the required parameter, or NULL after the 400 envelope. */
static const char *orig_param(struct ctx *x, struct out *o, const char *name)
{
    const char *v = arg(x, name);
    if (!v) {
        char msg[128];
        snprintf(msg, sizeof(msg), "Missing required query parameter \"%s\".", name);
        orig_fail(o, MHD_HTTP_BAD_REQUEST, 400, msg);
    }
    return v;
}

/* v1: false after a 400 when s is not a valid name. */
static bool v1_name(struct out *o, const char *what, const char *s)
{
    if (s && dhaf_valid_name(s))
        return true;
    char q[80];
    v1_error(o, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT",
             "\"%s\" is not a valid %s name (1-64 of A-Z a-z 0-9 _ -)",
             rest_printable(q, sizeof(q), s), what);
    return false;
}

/* ?limit=N (0..1000; absent = server default). False after a 400. */
static bool v1_limit(struct ctx *x, struct out *o, uint32_t *limit)
{
    const char *s = arg(x, "limit");
    *limit = 0;
    if (!s)
        return true;
    unsigned long v = 0;
    size_t n = strlen(s);
    bool ok = n >= 1 && n <= 4 && strspn(s, "0123456789") == n;
    if (ok)
        v = strtoul(s, NULL, 10);
    if (!ok || v > 1000) {
        char q[80];
        v1_error(o, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT",
                 "limit \"%s\" is not a number from 0 to 1000", rest_printable(q, sizeof(q), s));
        return false;
    }
    *limit = (uint32_t)v;
    return true;
}

/* ------------------------------------------------------------------ /api/v1 */

static void v1_cluster(struct ctx *x, struct out *o)
{
    Dhaf__V1__ClusterStatus *m = NULL;
    struct dhaf_err err;
    int rc = svc_cluster_status(&x->env, &m, &err);
    if (rc) {
        v1_from_err(o, rc, &err);
        return;
    }
    mark_view(o, m->view);
    set_msg(o, MHD_HTTP_OK, &m->base);
}

static void v1_services(struct ctx *x, struct out *o)
{
    Dhaf__V1__ListServicesResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_list_services(&x->env, &m, &err);
    if (rc) {
        v1_from_err(o, rc, &err);
        return;
    }
    mark_view(o, m->view);
    set_msg(o, MHD_HTTP_OK, &m->base);
}

static void v1_service(struct ctx *x, struct out *o)
{
    if (!v1_name(o, "service", x->cap[0]))
        return;
    Dhaf__V1__ServiceStatus *m = NULL;
    struct dhaf_err err;
    int rc = svc_get_service(&x->env, x->cap[0], &m, &err);
    if (rc) {
        v1_from_err(o, rc, &err);
        return;
    }
    mark_view(o, m->view);
    set_msg(o, MHD_HTTP_OK, &m->base);
}

static void v1_candidates(struct ctx *x, struct out *o)
{
    if (!v1_name(o, "service", x->cap[0]))
        return;
    Dhaf__V1__SwitchoverCandidates *m = NULL;
    struct dhaf_err err;
    int rc = svc_candidates(&x->env, x->cap[0], &m, &err);
    if (rc)
        v1_from_err(o, rc, &err);
    else
        set_msg(o, MHD_HTTP_OK, &m->base);
}

/* POST /api/v1/services/{svc}/switchover: {"entry_point": "...", "requested_by": "..."} or
 * ?entry_point=. */
static void v1_switchover(struct ctx *x, struct out *o)
{
    if (!v1_name(o, "service", x->cap[0]))
        return;
    char ep[DHAF_NAME_MAX + 1] = "", by[REST_BY_MAX + 1] = "";
    struct dhaf_err err;
    if (x->rq->len > 0 && rest_switchover_body(x->rq->body, x->rq->len, ep, by, &err) != 0) {
        v1_error(o, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT", "%s", err.msg);
        return;
    }
    const char *q_ep = arg(x, "entry_point");
    if (q_ep) {
        if (!v1_name(o, "entry point", q_ep))
            return;
        if (ep[0] && strcmp(ep, q_ep) != 0) {
            v1_error(o, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT",
                     "the body says entry_point \"%s\", the query \"%s\"", ep, q_ep);
            return;
        }
        snprintf(ep, sizeof(ep), "%s", q_ep);
    }
    if (!ep[0]) {
        v1_error(o, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT",
                 "entry_point is required: a JSON body {\"entry_point\": \"NAME\"} or "
                 "?entry_point=NAME");
        return;
    }
    x->actor.comment = by;
    Dhaf__V1__SwitchoverResponse *m = NULL;
    int rc = svc_switchover(&x->env, x->cap[0], ep, &m, &err);
    if (rc)
        v1_from_err(o, rc, &err);
    else /* recorded; the leader carries it out */
        set_msg(o, MHD_HTTP_ACCEPTED, &m->base);
}

static void v1_purge(struct ctx *x, struct out *o)
{
    if (!v1_name(o, "service", x->cap[0]))
        return;
    Dhaf__V1__PurgeSwitchoverResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_purge(&x->env, x->cap[0], &m, &err);
    if (rc)
        v1_from_err(o, rc, &err);
    else
        set_msg(o, MHD_HTTP_OK, &m->base);
}

/* ?comment= of a maintenance request: the caller's words for the audit trail. False after a
 * 400. */
static bool v1_comment(struct ctx *x, struct out *o)
{
    const char *c = arg(x, "comment");
    if (c && !dhaf_valid_comment(c)) {
        v1_error(o, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT",
                 "comment must be UTF-8 text of at most %d bytes without control characters",
                 DHAF_COMMENT_MAX);
        return false;
    }
    x->actor.comment = c;
    return true;
}

/* POST / DELETE /api/v1/services/{svc}/entry-points/{ep}/drain[?comment=] */
static void v1_drain_as(struct ctx *x, struct out *o, bool drain)
{
    if (!v1_name(o, "service", x->cap[0]) || !v1_name(o, "entry point", x->cap[1]) ||
        !v1_comment(x, o))
        return;
    Dhaf__V1__DrainResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_drain(&x->env, x->cap[0], x->cap[1], drain, &m, &err);
    if (rc)
        v1_from_err(o, rc, &err);
    else
        set_msg(o, MHD_HTTP_OK, &m->base);
}

static void v1_drain(struct ctx *x, struct out *o)
{
    v1_drain_as(x, o, true);
}

static void v1_undrain(struct ctx *x, struct out *o)
{
    v1_drain_as(x, o, false);
}

/* POST / DELETE /api/v1/pause[?comment=] */
static void v1_pause_as(struct ctx *x, struct out *o, bool pause)
{
    if (!v1_comment(x, o))
        return;
    Dhaf__V1__PauseResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_pause(&x->env, pause, &m, &err);
    if (rc)
        v1_from_err(o, rc, &err);
    else
        set_msg(o, MHD_HTTP_OK, &m->base);
}

static void v1_pause(struct ctx *x, struct out *o)
{
    v1_pause_as(x, o, true);
}

static void v1_resume(struct ctx *x, struct out *o)
{
    v1_pause_as(x, o, false);
}

static void v1_events_of(struct ctx *x, struct out *o, const char *service)
{
    uint32_t limit;
    if (!v1_limit(x, o, &limit))
        return;
    Dhaf__V1__ListEventsResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_events(&x->env, service, limit, &m, &err);
    if (rc)
        v1_from_err(o, rc, &err);
    else
        set_msg(o, MHD_HTTP_OK, &m->base);
}

static void v1_service_events(struct ctx *x, struct out *o)
{
    if (v1_name(o, "service", x->cap[0]))
        v1_events_of(x, o, x->cap[0]);
}

static void v1_cluster_events(struct ctx *x, struct out *o)
{
    v1_events_of(x, o, NULL);
}

static void v1_decommission(struct ctx *x, struct out *o)
{
    if (!v1_name(o, "node", x->cap[0]))
        return;
    Dhaf__V1__DecommissionNodeResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_decommission(&x->env, x->cap[0], &m, &err);
    if (rc)
        v1_from_err(o, rc, &err);
    else
        set_msg(o, MHD_HTTP_OK, &m->base);
}

static void v1_version(struct ctx *x, struct out *o)
{
    Dhaf__V1__VersionInfo *m = NULL;
    struct dhaf_err err;
    int rc = svc_version(&x->env, &m, &err);
    if (rc)
        v1_from_err(o, rc, &err);
    else
        set_msg(o, MHD_HTTP_OK, &m->base);
}

/* ------------------------------------------------------------------ the original's paths */

enum {
    ORIG_NO_SERVICE = 1301,
    ORIG_NO_EP = 1101,
    ORIG_EP_UNHEALTHY = 1102,
    ORIG_NO_NODE = 1201,
    ORIG_NODE_HEALTHY = 1202,
};

static json_t *str_or_null(const char *s)
{
    return s && *s ? jstr(s) : json_null();
}

/* The original's ServiceStatus (camelCase). */
static json_t *orig_service(const Dhaf__V1__ServiceStatus *ss)
{
    json_t *eps = json_array();
    for (size_t e = 0; e < ss->n_entry_points; e++) {
        const Dhaf__V1__EntryPointStatus *ep = ss->entry_points[e];
        json_array_append_new(eps, json_pack("{s:o, s:b, s:i}", "name", jstr(ep->name), "healthy",
                                             (int)ep->healthy, "priority", (int)ep->priority));
    }
    json_t *j = json_object();
    json_object_set_new(j, "name", jstr(ss->name));
    json_object_set_new(j, "domain", jstr(ss->domain));
    json_object_set_new(j, "currentEntryPointName", str_or_null(ss->current_entry_point));
    json_object_set_new(j, "entryPoints", eps);
    json_object_set_new(j, "switchoverRequirement", str_or_null(ss->switchover_requirement));
    return j;
}

static void orig_ping(struct ctx *x, struct out *o)
{
    (void)x;
    set_body(o, MHD_HTTP_OK, "application/json", dhaf_xstrdup("\"pong\"\n"));
}

static void orig_dhaf_status(struct ctx *x, struct out *o)
{
    Dhaf__V1__ClusterStatus *m = NULL;
    struct dhaf_err err;
    int rc = svc_cluster_status(&x->env, &m, &err);
    if (rc) {
        orig_other(o, &err);
        return;
    }
    mark_view(o, m->view);
    json_t *nodes = json_array();
    for (size_t i = 0; i < m->n_nodes; i++)
        json_array_append_new(nodes, json_pack("{s:o, s:b}", "name", jstr(m->nodes[i]->name),
                                               "healthy", (int)m->nodes[i]->healthy));
    json_t *d = json_object();
    json_object_set_new(d, "leader", str_or_null(m->leader));
    json_object_set_new(d, "nodes", nodes);
    dhaf__v1__cluster_status__free_unpacked(m, NULL);
    orig_ok(o, d);
}

static void orig_services_status(struct ctx *x, struct out *o)
{
    Dhaf__V1__ListServicesResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_list_services(&x->env, &m, &err);
    if (rc) {
        orig_other(o, &err);
        return;
    }
    mark_view(o, m->view);
    json_t *a = json_array();
    for (size_t i = 0; i < m->n_services; i++)
        json_array_append_new(a, orig_service(m->services[i]));
    dhaf__v1__list_services_response__free_unpacked(m, NULL);
    orig_ok(o, a);
}

/* serviceName, checked against the config (no etcd call for an unknown or invalid name).
 * NULL after the error reply. */
static const char *orig_service_name(struct ctx *x, struct out *o)
{
    const char *s = orig_param(x, o, "serviceName");
    if (!s)
        return NULL;
    if (!dhaf_valid_name(s) || !dhaf_config_service(x->env.cfg, s)) {
        char q[80], msg[160];
        snprintf(msg, sizeof(msg), "There is no service named \"%s\".",
                 rest_printable(q, sizeof(q), s));
        orig_fail(o, MHD_HTTP_BAD_REQUEST, ORIG_NO_SERVICE, msg);
        return NULL;
    }
    return s;
}

/* 1301 for a service that vanished between the check and the call; anything else -1. */
static void orig_service_err(struct out *o, int rc, const struct dhaf_err *err)
{
    if (rc == DHAF_ENOTFOUND)
        orig_fail(o, MHD_HTTP_BAD_REQUEST, ORIG_NO_SERVICE, err->msg);
    else
        orig_other(o, err);
}

static void orig_service_status(struct ctx *x, struct out *o)
{
    const char *svc = orig_service_name(x, o);
    if (!svc)
        return;
    Dhaf__V1__ServiceStatus *m = NULL;
    struct dhaf_err err;
    int rc = svc_get_service(&x->env, svc, &m, &err);
    if (rc) {
        orig_service_err(o, rc, &err);
        return;
    }
    mark_view(o, m->view);
    json_t *d = orig_service(m);
    dhaf__v1__service_status__free_unpacked(m, NULL);
    orig_ok(o, d);
}

static void orig_switchover(struct ctx *x, struct out *o)
{
    const char *svc = orig_service_name(x, o);
    if (!svc)
        return;
    const char *ep = orig_param(x, o, "entryPointId");
    if (!ep)
        return;
    char q[80], msg[200];
    if (!dhaf_valid_name(ep)) {
        snprintf(msg, sizeof(msg), "Service %s has no entry point \"%s\".", svc,
                 rest_printable(q, sizeof(q), ep));
        orig_fail(o, MHD_HTTP_BAD_REQUEST, ORIG_NO_EP, msg);
        return;
    }
    Dhaf__V1__SwitchoverResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_switchover(&x->env, svc, ep, &m, &err);
    if (rc == 0) {
        dhaf__v1__switchover_response__free_unpacked(m, NULL);
        orig_ok(o, NULL);
    } else if (rc == DHAF_ENOTFOUND) { /* the service was checked: the entry point is unknown */
        orig_fail(o, MHD_HTTP_BAD_REQUEST, ORIG_NO_EP, err.msg);
    } else if (rc == DHAF_ECONFLICT) {
        orig_fail(o, MHD_HTTP_BAD_REQUEST, ORIG_EP_UNHEALTHY, err.msg);
    } else {
        orig_other(o, &err);
    }
}

static void orig_purge(struct ctx *x, struct out *o)
{
    const char *svc = orig_service_name(x, o);
    if (!svc)
        return;
    Dhaf__V1__PurgeSwitchoverResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_purge(&x->env, svc, &m, &err);
    if (rc) {
        orig_service_err(o, rc, &err);
        return;
    }
    dhaf__v1__purge_switchover_response__free_unpacked(m, NULL);
    orig_ok(o, NULL);
}

static void orig_candidates(struct ctx *x, struct out *o)
{
    const char *svc = orig_service_name(x, o);
    if (!svc)
        return;
    Dhaf__V1__SwitchoverCandidates *m = NULL;
    struct dhaf_err err;
    int rc = svc_candidates(&x->env, svc, &m, &err);
    if (rc) {
        orig_service_err(o, rc, &err);
        return;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < m->n_candidates; i++)
        json_array_append_new(a, json_pack("{s:o, s:i}", "name", jstr(m->candidates[i]->name),
                                           "priority", (int)m->candidates[i]->priority));
    dhaf__v1__switchover_candidates__free_unpacked(m, NULL);
    orig_ok(o, a);
}

static void orig_decommission(struct ctx *x, struct out *o)
{
    const char *node = orig_param(x, o, "name");
    if (!node)
        return;
    char q[80], msg[160];
    if (!dhaf_valid_name(node)) {
        snprintf(msg, sizeof(msg), "There is no dhaf node named \"%s\".",
                 rest_printable(q, sizeof(q), node));
        orig_fail(o, MHD_HTTP_BAD_REQUEST, ORIG_NO_NODE, msg);
        return;
    }
    Dhaf__V1__DecommissionNodeResponse *m = NULL;
    struct dhaf_err err;
    int rc = svc_decommission(&x->env, node, &m, &err);
    if (rc == 0) {
        dhaf__v1__decommission_node_response__free_unpacked(m, NULL);
        orig_ok(o, NULL);
    } else if (rc == DHAF_ENOTFOUND) {
        orig_fail(o, MHD_HTTP_BAD_REQUEST, ORIG_NO_NODE, err.msg);
    } else if (rc == DHAF_ECONFLICT) {
        orig_fail(o, MHD_HTTP_BAD_REQUEST, ORIG_NODE_HEALTHY, err.msg);
    } else {
        orig_other(o, &err);
    }
}

/* ------------------------------------------------------------------ probes and metrics */

static void plain_healthz(struct ctx *x, struct out *o)
{
    (void)x;
    set_text(o, MHD_HTTP_OK, "ok\n");
}

static const char *identify(struct rest *r, const struct dhaf_config *cfg,
                            struct MHD_Connection *conn, struct access_who *who,
                            struct dhaf_err *err);

/* 503 not ready: the details (etcd endpoints, errors) to a caller that passes the API's
 * authentication with the read or admin role; a one-word reason to anyone else. detail is
 * taken. */
static void not_ready(struct ctx *x, struct out *o, const char *word, char *detail)
{
    struct access_who who;
    struct dhaf_err err;
    bool known = !identify(x->r, x->env.cfg, x->conn, &who, &err) && who.role >= ACCESS_READ;
    char *t = dhaf_xasprintf("not ready: %s\n", known ? detail : word);
    free(detail);
    set_body(o, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", t);
}

/* Ready as node_ready says (ready.c; the gRPC health service answers the same). */
static void plain_readyz(struct ctx *x, struct out *o)
{
    if (atomic_load(&x->r->stopping)) {
        not_ready(x, o, "stopping", dhaf_xstrdup("the node is stopping"));
        return;
    }
    const char *word;
    char *detail;
    if (!node_ready(x->r->c, &word, &detail)) {
        not_ready(x, o, word, detail);
        return;
    }
    /* a config drift is a warning, not unreadiness: the API must stay reachable to see it */
    struct view *v = cluster_view(x->r->c);
    struct cfgdrift d;
    view_rdlock(v);
    cfgdrift_read(v, &d);
    view_unlock(v);
    if (d.drift) {
        /* which nodes and hashes, only for callers that may read status (as not_ready) */
        struct access_who who;
        struct dhaf_err err;
        bool known = !identify(x->r, x->env.cfg, x->conn, &who, &err) && who.role >= ACCESS_READ;
        char summary[sizeof(o->warning) - 16];
        cfgdrift_summary(&d, summary, sizeof(summary));
        snprintf(o->warning, sizeof(o->warning), "config-drift%s%s", known ? ": " : "",
                 known ? summary : "");
        set_body(o, MHD_HTTP_OK, "text/plain; charset=utf-8",
                 dhaf_xasprintf("ready\nwarning: %s\n", o->warning));
    } else {
        set_text(o, MHD_HTTP_OK, "ready\n");
    }
    cfgdrift_release(&d);
}

static void plain_metrics(struct ctx *x, struct out *o)
{
    Dhaf__V1__ClusterStatus *cs = NULL;
    Dhaf__V1__ListServicesResponse *ls = NULL;
    struct dhaf_err err;
    if (svc_cluster_status(&x->env, &cs, &err) != 0)
        cs = NULL;
    if (svc_list_services(&x->env, &ls, &err) != 0)
        ls = NULL;
    struct view *view = cluster_view(x->r->c);
    view_rdlock(view);
    struct view_sync vs = view_sync(view);
    view_unlock(view);
    struct metrics_view v = {
        .leader = cluster_role(x->r->c) == ROLE_LEADER,
        .cluster = cs,
        .ls = ls,
        .view_synced = vs.synced,
        .view_age_ms = vs.age_ms,
        .etcd_errors = dhaf_etcd_error_count(),
        .cfg = x->env.cfg,
    };
    struct etcdmon_state es;
    if (cluster_etcdmon(x->r->c)) {
        etcdmon_state(cluster_etcdmon(x->r->c), &es);
        v.etcd = &es;
    }
    set_body(o, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", metrics_render(&v));
    if (cs)
        dhaf__v1__cluster_status__free_unpacked(cs, NULL);
    if (ls)
        dhaf__v1__list_services_response__free_unpacked(ls, NULL);
}

/* ------------------------------------------------------------------ routing */

enum { M_GET = 1, M_POST = 2, M_DELETE = 4 };

struct route {
    unsigned method;
    const char *path; /* '*' is one segment, captured */
    enum family fam;
    bool open;    /* no token needed */
    bool changes; /* changes state: never on HEAD, never from another site */
    route_fn *fn;
};

static const struct route routes[] = {
    {M_GET, "/api/v1/cluster", FAM_V1, false, false, v1_cluster},
    {M_GET, "/api/v1/services", FAM_V1, false, false, v1_services},
    {M_GET, "/api/v1/services/*", FAM_V1, false, false, v1_service},
    {M_GET, "/api/v1/services/*/candidates", FAM_V1, false, false, v1_candidates},
    {M_POST, "/api/v1/services/*/switchover", FAM_V1, false, true, v1_switchover},
    {M_DELETE, "/api/v1/services/*/switchover", FAM_V1, false, true, v1_purge},
    {M_GET, "/api/v1/services/*/events", FAM_V1, false, false, v1_service_events},
    {M_GET, "/api/v1/events", FAM_V1, false, false, v1_cluster_events},
    {M_DELETE, "/api/v1/nodes/*", FAM_V1, false, true, v1_decommission},
    {M_POST, "/api/v1/services/*/entry-points/*/drain", FAM_V1, false, true, v1_drain},
    {M_DELETE, "/api/v1/services/*/entry-points/*/drain", FAM_V1, false, true, v1_undrain},
    {M_POST, "/api/v1/pause", FAM_V1, false, true, v1_pause},
    {M_DELETE, "/api/v1/pause", FAM_V1, false, true, v1_resume},
    {M_GET, "/api/v1/version", FAM_V1, false, false, v1_version},
    {M_GET, "/ping", FAM_ORIG, true, false, orig_ping},
    {M_GET, "/dhaf/status", FAM_ORIG, false, false, orig_dhaf_status},
    {M_GET, "/services/status", FAM_ORIG, false, false, orig_services_status},
    {M_GET, "/service/status", FAM_ORIG, false, false, orig_service_status},
    {M_GET, "/switchover", FAM_ORIG, false, true, orig_switchover},
    {M_GET, "/switchover/purge", FAM_ORIG, false, true, orig_purge},
    {M_GET, "/switchover/candidates", FAM_ORIG, false, false, orig_candidates},
    {M_GET, "/dhaf/node/decommission", FAM_ORIG, false, true, orig_decommission},
    {M_GET, "/healthz", FAM_PLAIN, true, false, plain_healthz},
    {M_GET, "/readyz", FAM_PLAIN, true, false, plain_readyz},
    {M_GET, "/metrics", FAM_PLAIN, false, false, plain_metrics},
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static unsigned method_bit(const char *m)
{
    if (!strcmp(m, MHD_HTTP_METHOD_GET) || !strcmp(m, MHD_HTTP_METHOD_HEAD))
        return M_GET;
    if (!strcmp(m, MHD_HTTP_METHOD_POST))
        return M_POST;
    if (!strcmp(m, MHD_HTTP_METHOD_DELETE))
        return M_DELETE;
    return 0;
}

static void allow_list(char *buf, size_t len, unsigned methods)
{
    snprintf(buf, len, "%s%s%s", methods & M_GET ? "GET, HEAD" : "",
             methods & M_POST ? (methods & M_GET ? ", POST" : "POST") : "",
             methods & M_DELETE ? (methods & (M_GET | M_POST) ? ", DELETE" : "DELETE") : "");
}

/* The common name of the connection's client certificate, verified against the client CA,
 * into buf. False (with why) when the API asks for client certificates and this one has
 * none that verifies; true with buf "" when the API asks for none. */
static bool client_cn(struct rest *r, struct MHD_Connection *conn, char *buf, size_t len,
                      const char **why)
{
    buf[0] = '\0';
    if (!r->ca)
        return true;
    *why = "a client certificate signed by the configured client CA is required";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    unsigned status = 0;
    if (!ci || !ci->tls_session)
        return false;
    gnutls_session_t ses = (gnutls_session_t)ci->tls_session;
    if (gnutls_certificate_verify_peers2(ses, &status) != 0 || status != 0)
        return false;
    unsigned n = 0;
    const gnutls_datum_t *chain = gnutls_certificate_get_peers(ses, &n);
    gnutls_x509_crt_t crt;
    if (!chain || n == 0 || gnutls_x509_crt_init(&crt) != 0)
        return false;
    size_t sz = len;
    bool ok = gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) == 0 &&
              gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &sz) == 0;
    gnutls_x509_crt_deinit(crt);
    if (!ok || !rest_bytes_clean(buf, strlen(buf))) {
        buf[0] = '\0';
        *why = "the client certificate has no readable common name (CN)";
        return false;
    }
    return true;
}

/* Who the caller is (access.h): its bearer token, else its client certificate. Returns NULL
 * when known (*who filled), else the reason for a 401. */
static const char *identify(struct rest *r, const struct dhaf_config *cfg,
                            struct MHD_Connection *conn, struct access_who *who,
                            struct dhaf_err *err)
{
    memset(who, 0, sizeof(*who));
    char cn[128];
    const char *why = NULL;
    if (!client_cn(r, conn, cn, sizeof(cn), &why))
        return why;
    const char *h =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    while (h && *h == ' ')
        h++;
    char tok[1024];
    bool have_tok = false;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ')
            h++;
        size_t n = strlen(h);
        while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
            n--;
        if (n == 0 || n >= sizeof(tok))
            return "invalid token";
        memcpy(tok, h, n);
        tok[n] = '\0';
        have_tok = true;
    }
    struct access_creds cr = {
        .token = have_tok ? tok : NULL, .cn = cn[0] ? cn : NULL, .client_ca = r->ca != NULL};
    int rc = access_identify(cfg, &cr, who, err);
    explicit_bzero(tok, sizeof(tok));
    return rc ? err->msg : NULL;
}
/* Query parameters: how many, how long, and no NUL or control byte in a name or value
 * (their decoded lengths count: "%00" would cut the C string and pass unseen). */
struct argcheck {
    size_t n;
    bool bad;
    char ctl[ARG_KEY_MAX + 1]; /* the first parameter holding a control byte (cleaned) */
};

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    struct argcheck *a = cls;
    a->n++;
    if (a->n > ARGS_MAX || key_size > ARG_KEY_MAX || (value && value_size > ARG_VALUE_MAX)) {
        a->bad = true;
        return MHD_NO;
    }
    if (!rest_bytes_clean(key, key_size) || (value && !rest_bytes_clean(value, value_size))) {
        rest_printable(a->ctl, sizeof(a->ctl), key);
        if (!a->ctl[0])
            snprintf(a->ctl, sizeof(a->ctl), "?");
        return MHD_NO;
    }
    return MHD_YES;
}

/* The original's envelope answers its errors with HTTP 400; 401, 403 and 405 (HEAD on a
 * changing path) keep their status so clients and proxies see them. */
static void bad_request(struct out *o, enum family fam, unsigned status, const char *code,
                        const char *msg)
{
    if (fam == FAM_ORIG)
        orig_fail(o,
                  status == MHD_HTTP_UNAUTHORIZED || status == MHD_HTTP_FORBIDDEN ||
                          status == MHD_HTTP_METHOD_NOT_ALLOWED
                      ? status
                      : MHD_HTTP_BAD_REQUEST,
                  (int)status, msg);
    else
        v1_error(o, status, code, "%s", msg);
}

/* The connection's own address, numeric ("" when unknown). */
static void local_ip_of(struct MHD_Connection *conn, char *buf, size_t len)
{
    buf[0] = '\0';
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (!ci || getsockname(ci->connect_fd, (struct sockaddr *)&ss, &sl) != 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, buf, (socklen_t)len, NULL, 0, NI_NUMERICHOST) != 0)
        buf[0] = '\0';
}

/* A request that changes state: refused on HEAD (405) and from another site (403). False
 * after the reply. */
static bool change_allowed(struct rest *r, const struct dhaf_config *cfg, bool by_token,
                           struct MHD_Connection *conn, const struct route *hit, const char *method,
                           const char *url, const char *peer, struct out *o)
{
    if (strcmp(method, MHD_HTTP_METHOD_HEAD) == 0) {
        snprintf(o->allow, sizeof(o->allow), "GET"); /* the changing paths HEAD can reach */
        bad_request(o, hit->fam, MHD_HTTP_METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED",
                    "HEAD never changes state: this path changes state, use GET");
        return false;
    }
    char local[INET6_ADDRSTRLEN];
    local_ip_of(conn, local, sizeof(local));
    /* ours: the bind address, the machine's name, and dhaf.web-api.names (a reload applies) */
    const struct dhaf_strlist *more = &cfg->web_api.names;
    const char *names[2 + DHAF_WEB_NAMES_MAX];
    size_t n_names = 0;
    for (size_t i = 0; i < 2; i++)
        if (r->names[i])
            names[n_names++] = r->names[i];
    for (size_t i = 0; i < more->n && i < DHAF_WEB_NAMES_MAX; i++)
        names[n_names++] = more->v[i];
    struct rest_site site = {
        .host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST),
        .origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ORIGIN),
        .fetch_site = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-Fetch-Site"),
        .local_ip = local,
        .names = names,
        .n_names = n_names,
        .tls = r->tls,
        .port = r->port,
        /* a token (checked before this) is something a web page cannot send; a client
         * certificate or no credential at all, a browser sends by itself */
        .any_host = by_token,
    };
    const char *why = rest_cross_site(&site);
    if (!why)
        return true;
    char q[200], qw[200];
    DHAF_LOG(DHAF_LOG_WARN, "event=rest-refused peer=%s path=\"%s\" reason=\"%s\"", peer,
             dhaf_log_quote(q, sizeof(q), url), dhaf_log_quote(qw, sizeof(qw), why));
    bad_request(o, hit->fam, MHD_HTTP_FORBIDDEN, "PERMISSION_DENIED", why);
    return false;
}

static void peer_of(struct MHD_Connection *conn, char *buf, size_t len)
{
    snprintf(buf, len, "?");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return;
    socklen_t sl = ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                          : sizeof(struct sockaddr_in);
    if (getnameinfo(ci->client_addr, sl, buf, (socklen_t)len, NULL, 0, NI_NUMERICHOST) != 0)
        snprintf(buf, len, "?");
}

static void dispatch(struct rest *r, const struct dhaf_config *cfg, struct MHD_Connection *conn,
                     const char *url, const char *method, const struct req *rq, const char *peer,
                     struct out *o)
{
    bool v1_path = strncmp(url, "/api/", 5) == 0;
    enum family fam = v1_path ? FAM_V1 : FAM_ORIG;
    if (strlen(url) > PATH_MAX_LEN || url[0] != '/') {
        bad_request(o, fam, MHD_HTTP_URI_TOO_LONG, "URI_TOO_LONG", "the path is too long");
        return;
    }
    char buf[PATH_MAX_LEN + 2], *seg[REST_SEGMENTS_MAX];
    size_t n = 0;
    const struct route *hit = NULL;
    unsigned allowed = 0;
    const char *caps[2] = {NULL, NULL};
    if (rest_path_split(url, buf, sizeof(buf), seg, &n)) {
        unsigned m = method_bit(method);
        for (size_t i = 0; i < N_ROUTES; i++) {
            const char *c2[2] = {NULL, NULL};
            if (!rest_path_match(routes[i].path, seg, n, c2))
                continue;
            allowed |= routes[i].method;
            fam = routes[i].fam;
            if (routes[i].method & m) {
                hit = &routes[i];
                caps[0] = c2[0];
                caps[1] = c2[1];
            }
        }
    }
    struct access_who who = {0};
    struct dhaf_err aerr;
    if (!hit || !hit->open) {
        const char *why = identify(r, cfg, conn, &who, &aerr);
        if (why) {
            char q[200], qw[200];
            DHAF_LOG(DHAF_LOG_WARN, "event=rest-refused peer=%s path=\"%s\" reason=\"%s\"", peer,
                     dhaf_log_quote(q, sizeof(q), url), dhaf_log_quote(qw, sizeof(qw), why));
            bad_request(o, fam == FAM_PLAIN ? FAM_V1 : fam, MHD_HTTP_UNAUTHORIZED,
                        "UNAUTHENTICATED", why);
            o->challenge = true;
            return;
        }
    }
    if (rq->bad_target) {
        bad_request(o, fam == FAM_PLAIN ? FAM_V1 : fam, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT",
                    "the path contains an encoded NUL or control byte (%00-%1F, %7F)");
        return;
    }
    if (!hit && allowed) {
        allow_list(o->allow, sizeof(o->allow), allowed);
        char msg[160];
        snprintf(msg, sizeof(msg), "method %.16s is not allowed here (allowed: %s)", method,
                 o->allow);
        if (fam == FAM_ORIG)
            orig_fail(o, MHD_HTTP_BAD_REQUEST, 405, msg);
        else
            v1_error(o, MHD_HTTP_METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "%s", msg);
        return;
    }
    if (!hit) {
        if (fam == FAM_V1)
            v1_error(o, MHD_HTTP_NOT_FOUND, "NOT_FOUND", "no such endpoint");
        else
            orig_fail(o, MHD_HTTP_BAD_REQUEST, 404, "Endpoint not found.");
        return;
    }
    struct argcheck ac = {0, false, ""};
    MHD_get_connection_values_n(conn, MHD_GET_ARGUMENT_KIND, check_arg, &ac);
    if (ac.bad) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "too many or too long query parameters (at most %d, names %d and values %d "
                 "characters)",
                 ARGS_MAX, ARG_KEY_MAX, ARG_VALUE_MAX);
        bad_request(o, hit->fam, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT", msg);
        return;
    }
    if (ac.ctl[0]) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "query parameter \"%s\" contains a NUL or control byte (%%00-%%1F, %%7F)", ac.ctl);
        bad_request(o, hit->fam, MHD_HTTP_BAD_REQUEST, "INVALID_ARGUMENT", msg);
        return;
    }
    if (!hit->open && access_allow(&who, hit->changes ? ACCESS_ADMIN : ACCESS_READ,
                                   hit->changes ? "a change" : "a read", &aerr) != 0) {
        char q[200], qw[300];
        DHAF_LOG(DHAF_LOG_WARN, "event=rest-refused peer=%s path=\"%s\" reason=\"%s\"", peer,
                 dhaf_log_quote(q, sizeof(q), url), dhaf_log_quote(qw, sizeof(qw), aerr.msg));
        bad_request(o, hit->fam == FAM_PLAIN ? FAM_V1 : hit->fam, MHD_HTTP_FORBIDDEN,
                    "PERMISSION_DENIED", aerr.msg);
        return;
    }
    if (hit->changes && !change_allowed(r, cfg, who.by_token, conn, hit, method, url, peer, o))
        return;
    struct ctx x = {.r = r,
                    .conn = conn,
                    .env = {r->c, cfg, NULL},
                    .cap = {caps[0], caps[1]},
                    .rq = rq,
                    .peer = peer,
                    .who = who};
    x.actor = (struct event_actor){
        .name = x.who.name, .role = access_role_name(x.who.role), .peer = peer};
    if (hit->changes)
        x.env.actor = &x.actor;
    hit->fn(&x, o);
}

/* ------------------------------------------------------------------ MHD callbacks */

/* The guard's entry of a connection (NULL when it has none). */
static struct rest_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static enum MHD_Result queue(struct MHD_Connection *conn, struct out *o)
{
    if (!o->body)
        v1_error(o, MHD_HTTP_INTERNAL_SERVER_ERROR, "INTERNAL", "no reply");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(o->len, o->body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        DHAF_FREE(o->body);
        return MHD_NO;
    }
    o->body = NULL; /* the response owns it */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, o->ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (o->stale_age_ms > 0) {
        char h[64];
        snprintf(h, sizeof(h), "age_ms=%lld", (long long)o->stale_age_ms);
        MHD_add_response_header(resp, "X-Dhaf-Stale", h);
    }
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (o->warning[0])
        MHD_add_response_header(resp, "X-Dhaf-Warning", o->warning);
    if (o->allow[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, o->allow);
    if (o->challenge)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"dhaf\"");
    enum MHD_Result ret = MHD_queue_response(conn, o->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result too_large(struct MHD_Connection *conn, const char *url, struct req *rq)
{
    struct out o = {0};
    bool v1 = strncmp(url, "/api/", 5) == 0 || strcmp(url, "/metrics") == 0;
    char msg[100];
    snprintf(msg, sizeof(msg), "the request body is larger than %d bytes", BODY_MAX);
    if (v1)
        v1_error(&o, MHD_HTTP_CONTENT_TOO_LARGE, "PAYLOAD_TOO_LARGE", "%s", msg);
    else
        orig_fail(&o, MHD_HTTP_CONTENT_TOO_LARGE, 413, msg);
    rq->replied = true;
    return queue(conn, &o);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct rest *r = cls;
    struct req *rq = *con_cls;
    if (!rq) { /* uri_log made it; this is a fallback */
        rq = dhaf_xcalloc(1, sizeof(*rq));
        rq->t0_ms = dhaf_mono_ms();
        *con_cls = rq;
    }
    if (!rq->started) {
        rq->started = true;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > BODY_MAX) {
            rq->too_big = true;
            /* A client waiting for "100 Continue", or one announcing more than we care to
             * read, gets the answer now (the connection closes after it). */
            if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT) ||
                strtoull(cl, NULL, 10) > DRAIN_MAX) {
                rest_guard_busy(r->guard, conn_of(conn), true);
                return too_large(conn, url, rq);
            }
        }
        return MHD_YES;
    }
    if (rq->replied)
        return MHD_YES;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        rq->seen += n;
        if (rq->too_big || rq->len + n > BODY_MAX) {
            /* read and drop the rest, so the client sees the 413 rather than a reset */
            rq->too_big = true;
            DHAF_FREE(rq->body);
            rq->len = 0;
            if (rq->seen <= DRAIN_MAX)
                return MHD_YES;
            rest_guard_busy(r->guard, conn_of(conn), true);
            return too_large(conn, url, rq);
        }
        rq->body = dhaf_xreallocarray(rq->body, rq->len + n + 1, 1);
        memcpy(rq->body + rq->len, upload_data, n);
        rq->len += n;
        rq->body[rq->len] = '\0';
        return MHD_YES;
    }
    /* the request is in: answering it has no deadline of ours (handlers have their own) */
    rest_guard_busy(r->guard, conn_of(conn), true);
    if (rq->too_big)
        return too_large(conn, url, rq);
    char peer[INET6_ADDRSTRLEN + 8];
    peer_of(conn, peer, sizeof(peer));
    struct out o = {0};
    atomic_fetch_add(&r->inflight, 1);
    struct snap *snap = snap_get(cluster_snaps(r->c));
    dispatch(r, &snap->cfg, conn, url, method, rq, peer, &o);
    snap_put(snap);
    if (atomic_fetch_sub(&r->inflight, 1) == 1 && atomic_load(&r->stopping))
        dhaf_waker_kick(&r->idle, 1);
    rq->replied = true;
    unsigned status = o.status;
    enum MHD_Result ret = queue(conn, &o);
    char q[200];
    DHAF_LOG(DHAF_LOG_DEBUG,
             "event=rest-request peer=%s method=%.16s path=\"%s\" status=%u ms=%lld", peer, method,
             dhaf_log_quote(q, sizeof(q), url), status, (long long)(dhaf_mono_ms() - rq->t0_ms));
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct rest *r = cls;
    (void)toe;
    struct req *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
    /* the next request on this connection has a deadline again */
    rest_guard_busy(r->guard, conn_of(conn), false);
}

/* Called with the request target as received, before %-decoding: the request's state starts
 * here, so a path with an encoded control byte is seen (decoding would cut it at a %00). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    struct req *rq = dhaf_xcalloc(1, sizeof(*rq));
    rq->t0_ms = dhaf_mono_ms();
    rq->bad_target = !rest_target_clean(uri);
    return rq;
}

/* Connections open and close: the guard keeps their deadlines (and the socket context holds
 * the guard's entry). CLOSED comes before libmicrohttpd closes the socket. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct rest *r = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        char peer[INET6_ADDRSTRLEN + 8];
        peer_of(conn, peer, sizeof(peer));
        *socket_context = ci ? rest_guard_add(r->guard, ci->connect_fd, peer) : NULL;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        rest_guard_remove(r->guard, *socket_context);
        *socket_context = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[400], q[420];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    /* mostly clients' mistakes (bad requests, resets): not worth more than debug */
    DHAF_LOG(DHAF_LOG_DEBUG, "event=rest-http msg=\"%s\"", dhaf_log_quote(q, sizeof(q), msg));
}

/* ------------------------------------------------------------------ lifecycle */

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* A listening socket on host:port (IPv4 preferred when the name has both). */
static int listen_on(const char *host, int port, char *addr, size_t alen, struct dhaf_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g != 0)
        return dhaf_err_set(err, DHAF_EINVAL, "web-api: cannot resolve host \"%s\": %s", host,
                            gai_strerror(g));
    const struct addrinfo *ai = res;
    for (const struct addrinfo *p = res; p; p = p->ai_next)
        if (p->ai_family == AF_INET) {
            ai = p;
            break;
        }
    char ip[INET6_ADDRSTRLEN] = "?";
    getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST);
    snprintf(addr, alen, ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    int rc = 0;
    if (fd < 0) {
        rc = dhaf_err_set(err, DHAF_EIO, "web-api %s: socket: %s", addr, strerror(errno));
    } else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
               bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        rc = dhaf_err_set(err, DHAF_EIO, "web-api %s: cannot listen: %s%s", addr, strerror(errno),
                          errno == EADDRINUSE ? " (another process has the port)" : "");
        close(fd);
    }
    freeaddrinfo(res);
    return rc ? rc : fd;
}

static char *dup_or_null(const char *s)
{
    return s ? dhaf_xstrdup(s) : NULL;
}

static void rest_free(struct rest *r)
{
    free_secret(r->key);
    free(r->cert);
    free(r->ca);
    free(r->host);
    free(r->cert_file);
    free(r->key_file);
    free(r->ca_file);
    rest_guard_free(r->guard);
    dhaf_waker_release(&r->idle);
    free(r);
}

struct rest *rest_start(struct cluster *c, struct dhaf_err *err)
{
    struct rest *r = dhaf_xcalloc(1, sizeof(*r));
    r->c = c;
    atomic_init(&r->inflight, 0);
    atomic_init(&r->stopping, false);
    dhaf_waker_init(&r->idle);
    struct snap *snap = snap_get(cluster_snaps(c));
    const struct dhaf_config *cfg = &snap->cfg;
    const struct dhaf_api *w = &cfg->web_api;
    r->host = dhaf_xstrdup(w->host ? w->host : "localhost");
    r->port = w->port ? w->port : 8128;
    r->cert_file = dup_or_null(w->tls.cert_file);
    r->key_file = dup_or_null(w->tls.key_file);
    r->ca_file = dup_or_null(w->tls.ca_file);
    bool tls = w->tls.cert_file != NULL;
    r->tls = tls;
    r->names[0] = r->host;
    if (gethostname(r->hostname, sizeof(r->hostname)) == 0 && r->hostname[0]) {
        r->hostname[sizeof(r->hostname) - 1] = '\0';
        r->names[1] = r->hostname;
    }
    if (tls) {
        if (!w->tls.key_file) {
            dhaf_err_set(err, DHAF_ECONFIG, "web-api: tls.cert-file needs tls.key-file");
            goto fail;
        }
        if (!(r->cert = dhaf_read_pem(w->tls.cert_file, "web-api certificate", err)) ||
            !(r->key = dhaf_read_pem(w->tls.key_file, "web-api key", err)) ||
            (w->tls.ca_file && !(r->ca = dhaf_read_pem(w->tls.ca_file, "web-api client CA", err))))
            goto fail;
    }
    r->guard = rest_guard_new(CONN_LIMIT, REQ_DEADLINE_MS);
    if (!r->guard) {
        dhaf_err_set(err, DHAF_EIO, "web-api: cannot start the connection guard's thread");
        goto fail;
    }
    int fd = listen_on(r->host, r->port, r->addr, sizeof(r->addr), err);
    if (fd < 0)
        goto fail;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG | (tls ? MHD_USE_TLS : 0);
    /* options that only apply with TLS go last, so a plain daemon ends the list earlier */
    r->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, r, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, r,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(CONN_LIMIT + CONN_RESERVE), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)CONN_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONN_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, r, MHD_OPTION_URI_LOG_CALLBACK, on_uri, r, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, r, tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, r->cert,
        MHD_OPTION_HTTPS_MEM_KEY, r->key, MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITIES,
        r->ca ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, r->ca, MHD_OPTION_END);
    if (!r->d) {
        /* MHD may or may not have closed fd; it is left alone (the node is exiting). */
        dhaf_err_set(err, DHAF_EIO,
                     "web-api %s: the HTTP server did not start%s (run with --log-level debug "
                     "for libmicrohttpd's reason)",
                     r->addr, tls ? " (TLS: check the certificate and key)" : "");
        goto fail;
    }
    DHAF_LOG(DHAF_LOG_INFO, "event=rest-listening addr=%s tls=%s client_cert=%s token=%s", r->addr,
             tls ? "on" : "off", r->ca ? "required" : "off", cfg->api_token ? "required" : "off");
    snap_put(snap);
    return r;
fail:
    snap_put(snap);
    rest_free(r);
    return NULL;
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

void rest_reload(struct rest *r)
{
    if (!r)
        return;
    struct snap *snap = snap_get(cluster_snaps(r->c));
    const struct dhaf_api *w = &snap->cfg.web_api;
    if (!same(r->host, w->host ? w->host : "localhost") || r->port != (w->port ? w->port : 8128) ||
        !same(r->cert_file, w->tls.cert_file) || !same(r->key_file, w->tls.key_file) ||
        !same(r->ca_file, w->tls.ca_file))
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=reload-partial part=web-api reason=\"host, port and TLS files of "
                 "dhaf.web-api change only with a restart; still serving %s\"",
                 r->addr);
    snap_put(snap);
}

bool rest_stop(struct rest *r, int deadline_ms)
{
    if (!r)
        return true;
    atomic_store(&r->stopping, true);
    /* Requests in progress end on their own deadlines (a change waits for etcd); one that
     * would outlast ours is left to the process exit with the daemon. */
    int64_t until = dhaf_mono_ms() + deadline_ms;
    while (atomic_load(&r->inflight) > 0 && dhaf_mono_ms() < until)
        dhaf_waker_wait(&r->idle, until);
    if (atomic_load(&r->inflight) > 0) {
        DHAF_LOG(DHAF_LOG_WARN, "event=stop-slow part=rest note=\"a request is still waiting for "
                                "etcd; exiting anyway\"");
        return false;
    }
    MHD_stop_daemon(r->d);
    unsigned long cut_deadline, cut_evicted;
    rest_guard_counts(r->guard, &cut_deadline, &cut_evicted);
    DHAF_LOG(DHAF_LOG_INFO, "event=rest-stopped addr=%s cut_deadline=%lu cut_evicted=%lu", r->addr,
             cut_deadline, cut_evicted);
    rest_free(r);
    return true;
}
