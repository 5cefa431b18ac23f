/* SPDX-License-Identifier: MIT */
/* Built-in prober (writes votes/<node> on the session lease each tact) and the leader's
 * vote tally (watches votes/, judges freshness on its own monotonic clock). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/log.h"
#include "dhaf/probe.h"
#include "metrics.h"
#include "probing.h"

#define FRESH_TACTS 3 /* a vote counts while rewritten within 3 x tact-interval */

struct voter {
    struct vote vote;
    int64_t seen_ms;
};

struct probing {
    struct cluster *c;
    /* probe_lock guards engine (held through a round); lock guards cfg, voters and tallies.
     * A reload takes both, probe_lock first. */
    pthread_mutex_t probe_lock;
    pthread_mutex_t lock;
    const struct dhaf_config *cfg;
    struct dhaf_probe *engine;
    uint64_t seq;

    struct voter *voters;
    size_t n_voters;
    struct ep_tally **tallies; /* per service, per entry point; last logged */
    bool tally_valid;
    uint64_t generation;    /* bumped whenever a tally changes */
    pthread_cond_t changed; /* with lock */

    pthread_t t_probe, t_tally;
    bool probe_running;
};

/* ------------------------------------------------------------------ built-in prober */

static void *probe_thread(void *arg)
{
    struct probing *p = arg;
    struct cluster *c = p->c;
    char key[256], path[128];
    snprintf(path, sizeof(path), "votes/%s", cluster_node(c));
    cluster_key(c, key, sizeof(key), path);
    while (!cluster_stopping(c)) {
        pthread_mutex_lock(&p->probe_lock);
        pthread_mutex_lock(&p->lock);
        int tact_ms = p->cfg->tact_interval * 1000;
        pthread_mutex_unlock(&p->lock);
        char *text = NULL;
        if (p->engine) {
            const struct dhaf_probe_result *r;
            size_t n;
            dhaf_probe_round(p->engine, &r, &n);
            for (size_t i = 0; i < n; i++)
                metrics_check_latency(r[i].latency_ms);
            text = vote_encode(cluster_node(c), "node", ++p->seq, r, n);
        }
        pthread_mutex_unlock(&p->probe_lock);
        /* At start (or while the session is re-created) the round may end before the lease
         * exists: wait for it up to one tact rather than drop the vote. */
        int64_t lease = cluster_session_lease(c);
        for (int waited = 0; text && !lease && waited < tact_ms; waited += 50) {
            if (cluster_nap(c, 50))
                break;
            lease = cluster_session_lease(c);
        }
        if (text && !lease)
            DHAF_LOG(DHAF_LOG_DEBUG, "event=vote-not-written reason=\"no session lease yet\"");
        if (text && lease) {
            struct dhaf_err err;
            if (dhaf_etcd_put(cluster_etcd(c), key, text, SIZE_MAX, lease, NULL, &err) != 0) {
                char q[300];
                DHAF_LOG(DHAF_LOG_WARN, "event=vote-not-written reason=\"%s\"",
                         dhaf_log_quote(q, sizeof(q), err.msg));
            }
        }
        free(text);
        /* The tact counts from the end of the previous round, as in the original. */
        if (cluster_nap(c, tact_ms))
            break;
    }
    return NULL;
}

/* ------------------------------------------------------------------ leader's tally */

static void voters_clear(struct probing *p)
{
    for (size_t i = 0; i < p->n_voters; i++)
        vote_release(&p->voters[i].vote);
    free(p->voters);
    p->voters = NULL;
    p->n_voters = 0;
}

static void tallies_free(struct probing *p, size_t n_services)
{
    if (p->tallies)
        for (size_t i = 0; i < n_services; i++)
            free(p->tallies[i]);
    free(p->tallies);
    p->tallies = NULL;
    p->tally_valid = false;
}

static void tallies_alloc(struct probing *p)
{
    p->tallies = dhaf_xcalloc(p->cfg->n_services ? p->cfg->n_services : 1, sizeof(*p->tallies));
    for (size_t i = 0; i < p->cfg->n_services; i++)
        p->tallies[i] = dhaf_xcalloc(p->cfg->services[i].n_eps + 1, sizeof(struct ep_tally));
    p->tally_valid = false;
}

/* Replaces (or adds) a voter's vote, seen now. Called with the lock held. */
static void voter_put(struct probing *p, struct vote *v)
{
    for (size_t i = 0; i < p->n_voters; i++) {
        if (strcmp(p->voters[i].vote.voter, v->voter) == 0) {
            vote_release(&p->voters[i].vote);
            p->voters[i].vote = *v;
            p->voters[i].seen_ms = dhaf_mono_ms();
            return;
        }
    }
    p->voters = dhaf_xreallocarray(p->voters, p->n_voters + 1, sizeof(*p->voters));
    p->voters[p->n_voters].vote = *v;
    p->voters[p->n_voters].seen_ms = dhaf_mono_ms();
    p->n_voters++;
}

static void voter_drop(struct probing *p, const char *name)
{
    for (size_t i = 0; i < p->n_voters; i++) {
        if (strcmp(p->voters[i].vote.voter, name) == 0) {
            vote_release(&p->voters[i].vote);
            p->voters[i] = p->voters[--p->n_voters];
            return;
        }
    }
}

/* Decodes a votes/ key-value; the voter's name is the key's last part. */
static void absorb(struct probing *p, const char *key, const char *value, size_t len)
{
    const char *name = strrchr(key, '/');
    name = name ? name + 1 : key;
    struct vote v;
    struct dhaf_err err;
    if (vote_decode(value, len, key, p->cfg, &v, &err) != 0) {
        char q[300];
        DHAF_LOG(DHAF_LOG_WARN, "event=vote-refused key=%s reason=\"%s\"", key,
                 dhaf_log_quote(q, sizeof(q), err.msg));
        voter_drop(p, name); /* a broken vote is not a vote */
        return;
    }
    if (strcmp(v.voter, name) != 0) {
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=vote-refused key=%s reason=\"voter %s does not match the key\"", key,
                 v.voter);
        vote_release(&v);
        voter_drop(p, name);
        return;
    }
    voter_put(p, &v);
}

/* Recomputes every service's tally and logs the entry points whose counts changed. */
static void retally(struct probing *p)
{
    int64_t now = dhaf_mono_ms();
    int64_t fresh = (int64_t)FRESH_TACTS * p->cfg->tact_interval * 1000;
    bool bumped = false;
    struct seen_vote *sv = dhaf_xcalloc(p->n_voters + 1, sizeof(*sv));
    for (size_t i = 0; i < p->n_voters; i++)
        sv[i] = (struct seen_vote){&p->voters[i].vote, p->voters[i].seen_ms};
    for (size_t s = 0; s < p->cfg->n_services; s++) {
        const struct dhaf_service *svc = &p->cfg->services[s];
        struct ep_tally *now_t = dhaf_xcalloc(svc->n_eps + 1, sizeof(*now_t));
        tally_service(svc, sv, p->n_voters, now, fresh, now_t);
        for (size_t e = 0; e < svc->n_eps; e++) {
            const struct ep_tally *a = &p->tallies[s][e], *b = &now_t[e];
            if (p->tally_valid && a->healthy == b->healthy && a->unhealthy == b->unhealthy &&
                a->voters == b->voters)
                continue;
            char q[600];
            DHAF_LOG(DHAF_LOG_INFO,
                     "event=ep-votes service=%s ep=%s state=%s healthy=%u unhealthy=%u "
                     "voters=%u%s%s%s",
                     svc->name, svc->eps[e].name,
                     !b->known ? "unknown" : (b->is_healthy ? "healthy" : "unhealthy"), b->healthy,
                     b->unhealthy, b->voters, b->unhealthy ? " reasons=\"" : "",
                     b->unhealthy ? dhaf_log_quote(q, sizeof(q), b->reasons) : "",
                     b->unhealthy ? "\"" : "");
        }
        if (!p->tally_valid || memcmp(p->tallies[s], now_t, svc->n_eps * sizeof(*now_t)) != 0)
            bumped = true;
        memcpy(p->tallies[s], now_t, svc->n_eps * sizeof(*now_t));
        free(now_t);
    }
    p->tally_valid = true;
    if (bumped) {
        p->generation++;
        pthread_cond_broadcast(&p->changed);
    }
    free(sv);
}

static void *tally_thread(void *arg)
{
    struct probing *p = arg;
    struct cluster *c = p->c;
    char prefix[256];
    cluster_key(c, prefix, sizeof(prefix), "votes/");
    struct dhaf_err err;
    while (!cluster_stopping(c)) {
        if (!cluster_is_leader(c, NULL)) {
            pthread_mutex_lock(&p->lock);
            voters_clear(p);
            p->tally_valid = false;
            pthread_mutex_unlock(&p->lock);
            cluster_nap(c, 200);
            continue;
        }
        /* Leader: read every vote, then follow changes. */
        struct dhaf_kvs kvs;
        if (dhaf_etcd_get_prefix(cluster_etcd(c), prefix, 0, &kvs, &err) != 0) {
            cluster_nap(c, 500);
            continue;
        }
        pthread_mutex_lock(&p->lock);
        voters_clear(p);
        for (size_t i = 0; i < kvs.n; i++)
            absorb(p, kvs.kvs[i].key, kvs.kvs[i].value, kvs.kvs[i].value_len);
        retally(p);
        pthread_mutex_unlock(&p->lock);
        struct dhaf_etcd_watch *w =
            dhaf_etcd_watch_new(cluster_etcd(c), prefix, true, kvs.revision + 1, &err);
        dhaf_kvs_release(&kvs);
        while (w && cluster_is_leader(c, NULL) && !cluster_stopping(c)) {
            struct dhaf_etcd_events ev;
            int rc = dhaf_etcd_watch_next(w, &ev, 500, &err);
            if (rc != 0 && rc != DHAF_ETIMEOUT)
                break;
            pthread_mutex_lock(&p->lock);
            for (size_t i = 0; rc == 0 && i < ev.n; i++) {
                if (ev.v[i].type == DHAF_ETCD_EV_PUT) {
                    absorb(p, ev.v[i].kv.key, ev.v[i].kv.value, ev.v[i].kv.value_len);
                } else {
                    const char *name = strrchr(ev.v[i].kv.key, '/');
                    voter_drop(p, name ? name + 1 : ev.v[i].kv.key);
                }
            }
            retally(p); /* also ages out voters that went quiet */
            pthread_mutex_unlock(&p->lock);
            if (rc == 0)
                dhaf_etcd_events_release(&ev);
        }
        dhaf_etcd_watch_free(w);
    }
    return NULL;
}

/* ------------------------------------------------------------------ lifecycle */

struct probing *probing_start(struct cluster *c, const struct dhaf_config *cfg,
                              struct dhaf_err *err)
{
    struct probing *p = dhaf_xcalloc(1, sizeof(*p));
    p->c = c;
    p->cfg = cfg;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->probe_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->changed, &ca);
    pthread_condattr_destroy(&ca);
    if (cfg->probe) {
        p->engine = dhaf_probe_new(cfg->services, cfg->n_services, err);
        if (!p->engine) {
            pthread_mutex_destroy(&p->lock);
            pthread_mutex_destroy(&p->probe_lock);
            free(p);
            return NULL;
        }
    }
    tallies_alloc(p);
    if (cfg->probe)
        p->probe_running = pthread_create(&p->t_probe, NULL, probe_thread, p) == 0;
    if (pthread_create(&p->t_tally, NULL, tally_thread, p) != 0) {
        dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the tally thread");
        return NULL;
    }
    return p;
}

int probing_reload(struct probing *p, const struct dhaf_config *cfg, struct dhaf_err *err)
{
    struct dhaf_probe *fresh = NULL;
    if (cfg->probe && !(fresh = dhaf_probe_new(cfg->services, cfg->n_services, err)))
        return err->code;
    pthread_mutex_lock(&p->probe_lock);
    pthread_mutex_lock(&p->lock);
    dhaf_probe_free(p->engine);
    p->engine = fresh;
    tallies_free(p, p->cfg->n_services);
    voters_clear(p);
    p->cfg = cfg;
    tallies_alloc(p);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->probe_lock);
    if (cfg->probe && !p->probe_running)
        p->probe_running = pthread_create(&p->t_probe, NULL, probe_thread, p) == 0;
    return 0;
}

bool probing_stop(struct probing *p, int deadline_ms)
{
    if (!p)
        return true;
    /* The threads end when the cluster is stopping (cluster_stop was called first); a probe
     * round in progress may take its checks' timeouts, and is not waited for past the
     * deadline: the process exits around it. */
    int64_t deadline = dhaf_mono_ms() + deadline_ms;
    bool done = (!p->probe_running || dhaf_join_within(p->t_probe, deadline_ms)) &&
                dhaf_join_within(p->t_tally, deadline - dhaf_mono_ms());
    if (!done) {
        DHAF_LOG(DHAF_LOG_WARN, "event=stop-slow note=\"a probe round is still running; exiting "
                                "anyway\"");
        return false;
    }
    dhaf_probe_free(p->engine);
    voters_clear(p);
    tallies_free(p, p->cfg->n_services);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->probe_lock);
    pthread_cond_destroy(&p->changed);
    free(p);
    return true;
}

bool probing_tally(struct probing *p, const char *service, struct ep_tally *out, size_t n)
{
    bool ok = false;
    pthread_mutex_lock(&p->lock);
    for (size_t s = 0; s < p->cfg->n_services && !ok; s++) {
        if (strcmp(p->cfg->services[s].name, service) != 0)
            continue;
        ok = p->tally_valid && cluster_is_leader(p->c, NULL) && n >= p->cfg->services[s].n_eps;
        if (ok)
            memcpy(out, p->tallies[s], p->cfg->services[s].n_eps * sizeof(*out));
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

uint64_t probing_wait(struct probing *p, uint64_t seen, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->lock);
    while (p->generation == seen && pthread_cond_timedwait(&p->changed, &p->lock, &ts) == 0)
        ;
    uint64_t g = p->generation;
    pthread_mutex_unlock(&p->lock);
    return g;
}
