/* SPDX-License-Identifier: MIT */
/* The built-in prober: a thread that owns the probe engine and runs a round every tact, its
 * checks spread over the tact at stable offsets, the nodes' rounds spread evenly over the tact
 * (next_round). The vote (votes/<node>) is written only when
 * an opinion changes - at once, in the middle of a round - and lives on the node's vote lease,
 * which this loop renews as checks end (once a tact): a steady node adds no etcd revisions, and a
 * node whose loop stalls loses its vote within the lease's TTL (VOTE_LEASE_TACTS tacts).
 *
 * A reload hands the thread a new engine through a one-slot mailbox: the switch happens
 * between rounds, and no lock is held while checks run or the vote is written. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/cancel.h"
#include "dhaf/log.h"
#include "dhaf/probe.h"
#include "metrics.h"
#include "probing.h"
#include "suspects.h"
#include "view.h"
#include "votes.h"

struct probing {
    struct cluster *c;
    struct dhaf_probe *engine;   /* the thread's own */
    struct snap *snap;           /* the snapshot the engine points into */
    struct dhaf_waker wake;      /* stop, a new engine */
    struct dhaf_cancel stop_tok; /* fired by probing_stop: a round in progress ends early */
    pthread_mutex_t lock;        /* guards the mailbox and stop */
    struct dhaf_probe *next;     /* an engine handed over by a reload */
    struct snap *next_snap;
    bool has_next; /* (next may be NULL: probing turned off) */
    bool stop;
    pthread_t t;
    bool running;

    /* the vote, the thread's own */
    char key[256];
    uint64_t seq;
    int64_t lease; /* 0: none (not granted yet, or expired: the vote went with it) */
    int lease_ttl; /* seconds it was granted for */
    struct store_keepalive *ka;
    uint64_t written; /* digest of the opinions last written */
    bool impaired;    /* the last vote written said this vantage point looks broken */
    bool dirty;       /* the opinions in etcd are not (known to be) the latest */
    int tact_ms;
    int64_t renewed_ms;   /* the vote lease's last renewal, or attempt (monotonic) */
    struct suspects *sus; /* the thread's: its first failures of current entry points */
};

/* Takes a new engine from the mailbox, if there is one (then true). */
static bool take_mail(struct probing *p)
{
    pthread_mutex_lock(&p->lock);
    struct dhaf_probe *old = NULL;
    struct snap *old_snap = NULL;
    bool taken = p->has_next;
    if (taken) {
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
    return taken;
}

static bool mail_waiting(struct probing *p)
{
    pthread_mutex_lock(&p->lock);
    bool m = p->has_next;
    pthread_mutex_unlock(&p->lock);
    return m;
}

static bool stopping(struct probing *p)
{
    pthread_mutex_lock(&p->lock);
    bool s = p->stop;
    pthread_mutex_unlock(&p->lock);
    return s;
}

/* A vote not written or not kept alive: repeats every round while etcd refuses, so at most
 * one line per 10 s says it (repeated=N). */
static void vote_warn(const char *what, const struct dhaf_err *err)
{
    char q[300];
    DHAF_LOG_LIMITED("vote-not-written", DHAF_LOG_WARN, "event=vote-not-written reason=\"%s: %s\"",
                     what, dhaf_log_quote(q, sizeof(q), err->msg));
}

/* Forgets the vote lease (expired or about to be replaced): the next write grants another. */
static void lease_forget(struct probing *p)
{
    const struct store *st = cluster_store(p->c);
    if (p->ka)
        st->ops->keepalive_free(p->ka);
    p->ka = NULL;
    p->lease = 0;
    p->dirty = true;
}

static int lease_ensure(struct probing *p, struct dhaf_err *err)
{
    int ttl = VOTE_LEASE_TACTS * (p->tact_ms / 1000);
    if (p->lease && p->lease_ttl == ttl)
        return 0;
    lease_forget(p); /* a new tact: the old lease expires on its own */
    const struct store *st = cluster_store(p->c);
    int rc = st->ops->lease_grant(st->ud, ttl, &p->lease, err);
    if (rc) {
        p->lease = 0;
        return rc;
    }
    p->lease_ttl = ttl;
    p->ka = st->ops->keepalive_new(st->ud, p->lease);
    return 0;
}

/* Writes the vote when an opinion changed since the last write (or that write failed). */
static void publish(struct probing *p, const struct dhaf_probe_result *r, size_t n)
{
    uint64_t d = dhaf_probe_digest(r, n);
    if (!p->dirty && d == p->written)
        return;
    p->dirty = true;
    struct dhaf_err err;
    if (lease_ensure(p, &err) != 0) {
        vote_warn("no vote lease", &err);
        return;
    }
    char *text = vote_encode(cluster_node(p->c), "node", ++p->seq, r, n);
    int rc = store_put(cluster_store(p->c), p->key, text, p->lease, &err);
    free(text);
    if (rc == 0) {
        p->dirty = false;
        p->written = d;
        DHAF_LOG(DHAF_LOG_DEBUG, "event=vote-written seq=%llu", (unsigned long long)p->seq);
        bool impaired = vote_round_impaired(r, n);
        if (impaired && !p->impaired) /* said once per change: the vote abstains meanwhile */
            DHAF_LOG(DHAF_LOG_WARN, "event=vantage-impaired note=\"every entry point of every "
                                    "service fails from this node: its vote counts for nothing "
                                    "until one passes (its network, resolver or load?)\"");
        else if (!impaired && p->impaired)
            DHAF_LOG(DHAF_LOG_INFO, "event=vantage-recovered");
        p->impaired = impaired;
    } else {
        if (rc == DHAF_ENOTFOUND)
            lease_forget(p); /* the lease expired under us */
        vote_warn("put", &err);
    }
}

/* Renews the vote lease - only while etcd holds our latest opinions, so that a vote we could
 * not update expires rather than speak for us. r: the opinions to write again if the lease has
 * expired (NULL: not all known yet; the round's end writes them). */
static void renew(struct probing *p, const struct dhaf_probe_result *r, size_t n)
{
    if (p->dirty || !p->lease)
        return;
    int64_t ttl = 0;
    struct dhaf_err err;
    const struct store *st = cluster_store(p->c);
    p->renewed_ms = dhaf_mono_ms(); /* tried: a failing etcd is not asked after every batch */
    int rc = st->ops->keepalive_once(p->ka, &ttl, p->tact_ms < 2000 ? p->tact_ms : 2000, &err);
    if (rc == 0) {
        /* renewed */
    } else if (rc == DHAF_ENOTFOUND) {
        /* expired (this process or etcd was frozen): the vote is gone; write it again */
        DHAF_LOG(DHAF_LOG_INFO, "event=vote-lease-expired note=\"writing the vote again\"");
        lease_forget(p);
        if (r) /* (else at the end of the round: not every entry point is known yet) */
            publish(p, r, n);
    } else {
        vote_warn("lease keep-alive", &err);
    }
}

static bool all_known(const struct dhaf_probe_result *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!r[i].known)
            return false;
    return true;
}

/* A batch of checks ended: publish at once what changed - once every entry point has been
 * checked (the first round of an engine publishes at its end, not in pieces) - and renew the
 * lease when a tact has passed since: a round that checks hang in (to their timeouts) keeps
 * the vote while it makes progress; a loop that makes none loses it. */
static void on_results(void *ud, const struct dhaf_probe_result *r, size_t n)
{
    struct probing *p = ud;
    bool known = all_known(r, n);
    suspects_raise(p->sus, cluster_node(p->c), r, n); /* first: the others start checking */
    if (known)
        publish(p, r, n);
    if (dhaf_mono_ms() - p->renewed_ms >= p->tact_ms)
        renew(p, known ? r : NULL, known ? n : 0);
}

/* Once a round: publish what changed, renew the lease. */
static void keep_vote(struct probing *p, const struct dhaf_probe_result *r, size_t n)
{
    publish(p, r, n);
    renew(p, r, n);
}

/* Withdraws the vote (probing turned off, or the node stops): revoking the lease deletes it. */
static void withdraw(struct probing *p, int timeout_ms)
{
    if (!p->lease)
        return;
    const struct store *st = cluster_store(p->c);
    struct dhaf_err err;
    if (st->ops->lease_revoke(st->ud, p->lease, timeout_ms, &err) != 0)
        DHAF_LOG(DHAF_LOG_DEBUG, "event=vote-not-withdrawn reason=\"%s\"", err.msg);
    lease_forget(p);
    p->written = 0;
}

/*
 * When this node's next round starts (monotonic ms). Rounds start at the same point of every
 * tact of the wall clock, this node's rank among the member nodes (by name) over their number:
 * with entry point offsets that do not depend on the voter (probing_prepare), the nodes' checks
 * of an entry point are spread evenly over the tact - a failure is seen by the first node's
 * check within tact/n, not wherever each process happened to start. Never sooner than half a
 * tact after the last round began (the rank may change); after a round that took a tact or
 * more (checks near their timeouts), at once: the vote lease is renewed as rounds make progress.
 */
static int64_t next_round(struct probing *p, int64_t last)
{
    struct view *v = cluster_view(p->c);
    size_t rank = 0, n = 0;
    view_rdlock(v);
    n = view_count(v, VS_MEMBERS);
    for (size_t i = 0; i < n; i++)
        if (strcmp(view_at(v, VS_MEMBERS, i)->name, cluster_node(p->c)) == 0)
            rank = i;
    view_unlock(v);
    int64_t tact = p->tact_ms, phase = n ? (int64_t)rank * tact / (int64_t)n : 0;
    int64_t now = dhaf_mono_ms(), wall = dhaf_wall_ms();
    if (now - last >= tact)
        return now;
    int64_t wait = ((phase - wall % tact) % tact + tact) % tact; /* to the next such point */
    int64_t at = now + wait;
    if (at < last + tact / 2)
        at += tact;
    return at;
}

static void *probe_thread(void *arg)
{
    struct probing *p = arg;
    struct cluster *c = p->c;
    char path[128];
    snprintf(path, sizeof(path), "votes/%s", cluster_node(c));
    cluster_key(c, p->key, sizeof(p->key), path);
    int64_t start = dhaf_mono_ms();
    bool first = true; /* an engine's first round checks everything at once: a vote soon */
    while (!stopping(p)) {
        first |= take_mail(p);
        struct snap *s = snap_get(cluster_snaps(c));
        p->tact_ms = s->cfg.tact_interval * 1000;
        snap_put(s);
        if (p->engine) {
            const struct dhaf_probe_result *r;
            size_t n;
            int64_t t0 = dhaf_mono_ms();
            dhaf_probe_round(p->engine, first ? 0 : p->tact_ms * 4 / 5, &p->stop_tok, on_results, p,
                             &r, &n);
            int64_t took = dhaf_mono_ms() - t0;
            if (!first)
                metrics_probe_round(took, took >= p->tact_ms);
            first = false;
            if (stopping(p))
                break;
            for (size_t i = 0; i < n; i++)
                if (r[i].fresh)
                    metrics_check_latency(r[i].latency_ms);
            keep_vote(p, r, n);
        } else {
            withdraw(p, 1000);
        }
        /* Rounds start every tact at this node's phase; after one that overran, at the next. */
        start = next_round(p, start);
        while (!stopping(p) && dhaf_mono_ms() < start && !mail_waiting(p)) {
            if (p->engine) /* burst checks, asked by other voters, run meanwhile */
                dhaf_probe_idle(p->engine, start, &p->stop_tok, on_results, p);
            else
                dhaf_waker_wait(&p->wake, start);
        }
    }
    withdraw(p, 300);
    return NULL;
}

/* Another voter suspects an entry point (the view's thread): the engine checks it at once. */
static void on_suspect(void *ud, const char *svc, const char *ep, const char *voter)
{
    struct probing *p = ud;
    if (strcmp(voter, cluster_node(p->c)) == 0)
        return; /* our own */
    pthread_mutex_lock(&p->lock);
    if (p->engine) /* (the thread's engine: replaced under this lock only) */
        dhaf_probe_suspect(p->engine, svc, ep);
    pthread_mutex_unlock(&p->lock);
}

static void probing_free(struct probing *p)
{
    dhaf_probe_free(p->engine);
    snap_put(p->snap);
    if (p->has_next) {
        dhaf_probe_free(p->next);
        snap_put(p->next_snap);
    }
    pthread_mutex_destroy(&p->lock);
    dhaf_waker_release(&p->wake);
    dhaf_cancel_destroy(&p->stop_tok);
    suspects_free(p->sus);
    free(p);
}

struct probing *probing_start(struct cluster *c, struct dhaf_err *err)
{
    struct probing *p = dhaf_xcalloc(1, sizeof(*p));
    p->c = c;
    p->dirty = true;
    p->sus = suspects_new(c);
    pthread_mutex_init(&p->lock, NULL);
    dhaf_waker_init(&p->wake);
    dhaf_cancel_init(&p->stop_tok);
    p->snap = snap_get(cluster_snaps(c));
    if (probing_prepare(&p->snap->cfg, &p->engine, err) != 0) {
        probing_free(p);
        return NULL;
    }
    if (dhaf_thread_start(&p->t, false, probe_thread, p) != 0) {
        dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the prober thread");
        probing_free(p);
        return NULL;
    }
    p->running = true;
    view_on_suspect(cluster_view(c), on_suspect, p); /* (the first hook: there is room) */
    return p;
}

int probing_prepare(const struct dhaf_config *cfg, struct dhaf_probe **engine, struct dhaf_err *err)
{
    *engine = NULL;
    /* The entry points' offsets in a round are the same on every node: the nodes' rounds are
     * spread over the tact instead (next_round). */
    struct dhaf_probe_opts o = {.voter = "", .max_inflight = 0};
    if (cfg->probe && !(*engine = dhaf_probe_new(cfg->services, cfg->n_services, &o, err)))
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
    if (p->engine)
        dhaf_probe_wake(p->engine); /* ends the wait between rounds */
    pthread_mutex_unlock(&p->lock);
    dhaf_probe_free(old);
    snap_put(old_snap);
    dhaf_waker_kick(&p->wake, 1);
}

bool probing_stop(struct probing *p, int deadline_ms)
{
    if (!p)
        return true;
    view_off_suspect(cluster_view(p->c), on_suspect, p);
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_mutex_unlock(&p->lock);
    dhaf_cancel_fire(&p->stop_tok);
    dhaf_waker_kick(&p->wake, 1);
    /* Checks in flight may take their timeouts; they are not waited for past the deadline:
     * the process exits around them (the vote then expires with its lease). */
    if (p->running && !dhaf_join_within(p->t, deadline_ms)) {
        DHAF_LOG(DHAF_LOG_WARN, "event=stop-slow note=\"a probe round is still running; exiting "
                                "anyway\"");
        pthread_detach(p->t);
        return false;
    }
    const struct store *st = cluster_store(p->c);
    if (p->ka)
        st->ops->keepalive_free(p->ka);
    probing_free(p);
    return true;
}
