/* SPDX-License-Identifier: MIT */
/* The built-in prober: a thread that owns the probe engine, runs a round, writes the vote and
 * waits a tact. A reload hands it a new engine through a one-slot mailbox: the switch happens
 * between rounds, and no lock is held while checks run or the vote is written. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "dhaf/probe.h"
#include "metrics.h"
#include "probing.h"
#include "votes.h"

struct probing {
    struct cluster *c;
    struct dhaf_probe *engine; /* the thread's own */
    struct snap *snap;         /* the snapshot the engine points into */
    uint64_t seq;
    struct dhaf_waker wake;  /* stop, a new engine */
    pthread_mutex_t lock;    /* guards the mailbox and stop */
    struct dhaf_probe *next; /* an engine handed over by a reload */
    struct snap *next_snap;
    bool has_next; /* (next may be NULL: probing turned off) */
    bool stop;
    pthread_t t;
    bool running;
};

/* Takes a new engine from the mailbox, if there is one. */
static void take_mail(struct probing *p)
{
    pthread_mutex_lock(&p->lock);
    struct dhaf_probe *old = NULL;
    struct snap *old_snap = NULL;
    if (p->has_next) {
        old = p->engine;
        old_snap = p->snap;
        p->engine = p->next;
        p->snap = p->next_snap;
        p->next = NULL;
        p->next_snap = NULL;
        p->has_next = false;
    }
    pthread_mutex_unlock(&p->lock);
    dhaf_probe_free(old);
    snap_put(old_snap);
}

static bool stopping(struct probing *p)
{
    pthread_mutex_lock(&p->lock);
    bool s = p->stop;
    pthread_mutex_unlock(&p->lock);
    return s;
}

static void *probe_thread(void *arg)
{
    struct probing *p = arg;
    struct cluster *c = p->c;
    char key[256], path[128];
    snprintf(path, sizeof(path), "votes/%s", cluster_node(c));
    cluster_key(c, key, sizeof(key), path);
    while (!stopping(p)) {
        take_mail(p);
        struct snap *s = snap_get(cluster_snaps(c));
        int64_t tact_ms = (int64_t)s->cfg.tact_interval * 1000;
        snap_put(s);
        char *text = NULL;
        if (p->engine) {
            const struct dhaf_probe_result *r;
            size_t n;
            dhaf_probe_round(p->engine, &r, &n);
            for (size_t i = 0; i < n; i++)
                metrics_check_latency(r[i].latency_ms);
            text = vote_encode(cluster_node(c), "node", ++p->seq, r, n);
        }
        /* At start (or while the session is re-created) the round may end before the lease
         * exists: wait for it up to one tact rather than drop the vote. */
        int64_t lease = cluster_session_lease(c);
        int64_t until = dhaf_mono_ms() + tact_ms;
        while (text && !lease && !stopping(p) && dhaf_mono_ms() < until) {
            dhaf_waker_wait(&p->wake, dhaf_mono_ms() + 50);
            lease = cluster_session_lease(c);
        }
        if (text && !lease)
            DHAF_LOG(DHAF_LOG_DEBUG, "event=vote-not-written reason=\"no session lease yet\"");
        if (text && lease) {
            struct dhaf_err err;
            if (store_put(cluster_store(c), key, text, lease, &err) != 0) {
                char q[300];
                DHAF_LOG(DHAF_LOG_WARN, "event=vote-not-written reason=\"%s\"",
                         dhaf_log_quote(q, sizeof(q), err.msg));
            }
        }
        free(text);
        /* The tact counts from the end of the previous round, as in the original. */
        until = dhaf_mono_ms() + tact_ms;
        while (!stopping(p) && dhaf_mono_ms() < until)
            dhaf_waker_wait(&p->wake, until);
    }
    return NULL;
}

struct probing *probing_start(struct cluster *c, struct dhaf_err *err)
{
    struct probing *p = dhaf_xcalloc(1, sizeof(*p));
    p->c = c;
    pthread_mutex_init(&p->lock, NULL);
    dhaf_waker_init(&p->wake);
    p->snap = snap_get(cluster_snaps(c));
    if (probing_prepare(&p->snap->cfg, &p->engine, err) != 0) {
        snap_put(p->snap);
        pthread_mutex_destroy(&p->lock);
        dhaf_waker_release(&p->wake);
        free(p);
        return NULL;
    }
    if (pthread_create(&p->t, NULL, probe_thread, p) != 0) {
        dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the prober thread");
        dhaf_probe_free(p->engine);
        snap_put(p->snap);
        pthread_mutex_destroy(&p->lock);
        dhaf_waker_release(&p->wake);
        free(p);
        return NULL;
    }
    p->running = true;
    return p;
}

int probing_prepare(const struct dhaf_config *cfg, struct dhaf_probe **engine, struct dhaf_err *err)
{
    *engine = NULL;
    if (cfg->probe && !(*engine = dhaf_probe_new(cfg->services, cfg->n_services, err)))
        return err->code ? err->code : DHAF_EINVAL;
    return 0;
}

void probing_switch(struct probing *p, struct dhaf_probe *engine, struct snap *s)
{
    pthread_mutex_lock(&p->lock);
    struct dhaf_probe *old = p->has_next ? p->next : NULL;
    struct snap *old_snap = p->has_next ? p->next_snap : NULL;
    p->next = engine;
    p->next_snap = s;
    p->has_next = true;
    pthread_mutex_unlock(&p->lock);
    dhaf_probe_free(old);
    snap_put(old_snap);
    dhaf_waker_kick(&p->wake, 1);
}

bool probing_stop(struct probing *p, int deadline_ms)
{
    if (!p)
        return true;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_mutex_unlock(&p->lock);
    dhaf_waker_kick(&p->wake, 1);
    /* A round in progress may take its checks' timeouts; it is not waited for past the
     * deadline: the process exits around it. */
    if (p->running && !dhaf_join_within(p->t, deadline_ms)) {
        DHAF_LOG(DHAF_LOG_WARN, "event=stop-slow note=\"a probe round is still running; exiting "
                                "anyway\"");
        pthread_detach(p->t);
        return false;
    }
    dhaf_probe_free(p->engine);
    snap_put(p->snap);
    if (p->has_next) {
        dhaf_probe_free(p->next);
        snap_put(p->next_snap);
    }
    pthread_mutex_destroy(&p->lock);
    dhaf_waker_release(&p->wake);
    free(p);
    return true;
}
