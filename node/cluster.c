/* SPDX-License-Identifier: MIT */
/* Membership, election, terms and their duties.
 *
 * Two threads, each a loop over a step function (the steps are what unit tests drive in
 * virtual time):
 *  - session: keeps the node's session lease alive (alive/<node> and config/<node>, the
 *    node's config hash, live on it; the hash is published again after a reload);
 *  - election: campaigns when the view shows no leader key (a deleted key wakes it at once);
 *    as leader renews the leader lease at TTL/3 and closes the term when a renewal fails, when
 *    too little of the lease is surely left, or when the view shows the key gone or replaced.
 *    Closing stops the duties, then hands the lease back so that another node leads at once.
 * Leadership is judged on this node's monotonic clock: the lease is trusted for its TTL from
 * before the renewal was sent, less one renewal interval. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfgdrift.h"
#include "cluster.h"
#include "dhaf/alloc.h"
#include "dhaf/cancel.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "outbox.h"

#define MAX_TERM_WATCHERS 32
#define REVOKE_MS         500  /* a stop or hand-over waits at most this for etcd */
#define DUTY_STOP_MS      1000 /* per duty, when a term closes */

struct term {
    atomic_int refs;
    struct cluster *c;
    int64_t epoch, lease;
    int64_t opened_ms;           /* monotonic ms */
    _Atomic int64_t valid_until; /* monotonic ms */
    atomic_bool closed;
    pthread_mutex_t lock; /* guards the fields below */
    char reason[200];
    int64_t closed_at;
    struct {
        struct dhaf_waker *w;
        unsigned bits;
    } watchers[MAX_TERM_WATCHERS];
    size_t n_watchers;
    uint64_t ctr_seq;
    int64_t ctr_rev;
    uint64_t first_seq;        /* the seq of the term's new-leader event (0: not recorded) */
    pthread_cond_t renewed;    /* broadcast after each renewal (with lock) */
    uint64_t renewals;         /* how many renewals so far (lock) */
    atomic_bool renew_asked;   /* term_renew wants one now */
    struct dhaf_cancel cancel; /* fired when the term closes */
    /* the election thread's own */
    struct store_keepalive *ka;
    int64_t next_ka;
    void *handles[CLUSTER_MAX_DUTIES];
};

struct cluster {
    struct store store;
    const struct dhaf_clock *clock;
    struct view *view;
    struct snap_holder *snaps;
    struct etcdmon *etcdmon;
    char *name, *node, *grpc_ep, *rest_ep;
    bool probe;
    char prefix[160];
    struct duty duties[CLUSTER_MAX_DUTIES];
    size_t n_duties;

    struct dhaf_waker session_wake, election_wake;
    pthread_mutex_t lock; /* guards the fields below */
    bool stopping;
    enum cluster_role role;
    struct term *term;
    int64_t session_lease;
    int64_t stale_lease; /* a leader lease given up but not revoked yet (etcd was away) */
    char leader_seen[80];
    struct {
        struct dhaf_waker *w;
        unsigned bits;
    } reload_watch[CLUSTER_MAX_DUTIES * 4];
    size_t n_reload_watch;

    /* the session thread's own */
    struct store_keepalive *session_ka;
    int64_t next_hb, session_backoff;
    uint64_t cfg_gen; /* the config generation whose hash config/<node> holds (0: none) */
    /* the election thread's own */
    int64_t campaign_backoff;

    pthread_t t_session, t_election;
    bool started;
    atomic_int running;
};

/* ------------------------------------------------------------------ small helpers */

const char *cluster_key(const struct cluster *c, char *buf, size_t len, const char *path)
{
    size_t a = strlen(c->prefix), b = strlen(path);
    if (a + b + 1 > len) {
        if (len)
            buf[0] = '\0';
        return NULL;
    }
    memcpy(buf, c->prefix, a);
    memcpy(buf + a, path, b + 1);
    return buf;
}

const struct store *cluster_store(const struct cluster *c)
{
    return &c->store;
}

const struct dhaf_clock *cluster_clock(const struct cluster *c)
{
    return c->clock;
}

struct view *cluster_view(const struct cluster *c)
{
    return c->view;
}

struct snap_holder *cluster_snaps(const struct cluster *c)
{
    return c->snaps;
}

struct etcdmon *cluster_etcdmon(const struct cluster *c)
{
    return c->etcdmon;
}

const char *cluster_node(const struct cluster *c)
{
    return c->node;
}

const char *cluster_name(const struct cluster *c)
{
    return c->name;
}

static int64_t now_ms(const struct cluster *c)
{
    return dhaf_clock_mono(c->clock);
}

static bool is_stopping(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    bool s = c->stopping;
    pthread_mutex_unlock(&c->lock);
    return s;
}

/* A failed step of the session or election thread. They repeat every round while etcd is away
 * or refuses writes (a follower campaigns every second while nobody leads), so at most one
 * line per kind per 10 s says it, with the count held back. */
static void log_err(const char *event, const struct dhaf_err *err)
{
    char q[400];
    DHAF_LOG_LIMITED(event, DHAF_LOG_WARN, "event=%s reason=\"%s\"", event,
                     dhaf_log_quote(q, sizeof(q), err->msg));
}

/* The timings of the current snapshot. */
struct timings {
    int hb_ms, session_ttl_s, leader_ttl_s;
};

static struct timings timings_of(struct cluster *c)
{
    struct snap *s = snap_get(c->snaps);
    struct timings t = {s->cfg.heartbeat_interval * 1000, s->cfg.healthy_node_status_ttl,
                        s->cfg.etcd.leader_key_ttl};
    snap_put(s);
    return t;
}

static char *endpoint_of(const struct dhaf_api *api)
{
    return strchr(api->host, ':') ? dhaf_xasprintf("[%s]:%d", api->host, api->port)
                                  : dhaf_xasprintf("%s:%d", api->host, api->port);
}

int64_t cluster_session_lease(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    int64_t l = c->session_lease;
    pthread_mutex_unlock(&c->lock);
    return l;
}

enum cluster_role cluster_role(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    enum cluster_role r = c->role;
    if (r == ROLE_LEADER && (!c->term || !term_valid(c->term)))
        r = ROLE_FOLLOWER;
    pthread_mutex_unlock(&c->lock);
    return r;
}

struct term *cluster_term(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    struct term *t = c->term;
    if (t)
        term_hold(t);
    pthread_mutex_unlock(&c->lock);
    return t;
}

/* ------------------------------------------------------------------ terms */

int64_t term_epoch(const struct term *t)
{
    return t->epoch;
}

struct cluster *term_cluster(const struct term *t)
{
    return t->c;
}

bool term_closed(const struct term *t)
{
    return atomic_load(&t->closed);
}

bool term_valid(const struct term *t)
{
    return !atomic_load(&t->closed) && now_ms(t->c) < atomic_load(&t->valid_until);
}

void term_close(struct term *t, const char *reason)
{
    pthread_mutex_lock(&t->lock);
    bool first = !atomic_load(&t->closed);
    if (first) {
        atomic_store(&t->closed, true);
        snprintf(t->reason, sizeof(t->reason), "%s", reason);
        t->closed_at = now_ms(t->c);
        for (size_t i = 0; i < t->n_watchers; i++)
            dhaf_waker_kick(t->watchers[i].w, t->watchers[i].bits);
        pthread_cond_broadcast(&t->renewed);
    }
    pthread_mutex_unlock(&t->lock);
    if (first) {
        dhaf_cancel_fire(&t->cancel); /* provider calls in flight end now */
        dhaf_waker_kick(&t->c->election_wake, 1);
    }
}

void term_watch(struct term *t, struct dhaf_waker *w, unsigned bits)
{
    pthread_mutex_lock(&t->lock);
    if (t->n_watchers < MAX_TERM_WATCHERS)
        t->watchers[t->n_watchers++] = (typeof(t->watchers[0])){w, bits};
    bool closed = atomic_load(&t->closed);
    pthread_mutex_unlock(&t->lock);
    if (closed)
        dhaf_waker_kick(w, bits);
}

void term_unwatch(struct term *t, struct dhaf_waker *w)
{
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->n_watchers;)
        if (t->watchers[i].w == w)
            t->watchers[i] = t->watchers[--t->n_watchers];
        else
            i++;
    pthread_mutex_unlock(&t->lock);
}

void term_hold(struct term *t)
{
    atomic_fetch_add(&t->refs, 1);
}

void term_put(struct term *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    if (t->ka)
        t->c->store.ops->keepalive_free(t->ka);
    dhaf_cancel_destroy(&t->cancel);
    pthread_cond_destroy(&t->renewed);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

int64_t term_opened_ms(const struct term *t)
{
    return t->opened_ms;
}

int64_t term_left_ms(const struct term *t)
{
    if (atomic_load(&t->closed))
        return 0;
    int64_t left = atomic_load(&t->valid_until) - now_ms(t->c);
    return left > 0 ? left : 0;
}

struct dhaf_cancel *term_cancel(struct term *t)
{
    return &t->cancel;
}

int64_t term_renew(struct term *t, int64_t need_ms, int wait_ms)
{
    int64_t left = term_left_ms(t);
    if (left >= need_ms || left <= 0)
        return left;
    pthread_mutex_lock(&t->lock);
    uint64_t before = t->renewals;
    pthread_mutex_unlock(&t->lock);
    atomic_store(&t->renew_asked, true);
    dhaf_waker_kick(&t->c->election_wake, 1);
    int64_t until = dhaf_mono_ms() + wait_ms; /* real time: the election thread renews */
    pthread_mutex_lock(&t->lock);
    while (t->renewals == before && !atomic_load(&t->closed))
        if (!dhaf_cond_wait_until(&t->renewed, &t->lock, until))
            break;
    pthread_mutex_unlock(&t->lock);
    return term_left_ms(t);
}

void term_counter(struct term *t, uint64_t *seq, int64_t *rev)
{
    pthread_mutex_lock(&t->lock);
    *seq = t->ctr_seq;
    *rev = t->ctr_rev;
    pthread_mutex_unlock(&t->lock);
}

uint64_t term_first_seq(struct term *t)
{
    pthread_mutex_lock(&t->lock);
    uint64_t s = t->first_seq;
    pthread_mutex_unlock(&t->lock);
    return s;
}

void term_set_counter(struct term *t, uint64_t seq, int64_t rev)
{
    pthread_mutex_lock(&t->lock);
    if (rev >= t->ctr_rev) {
        t->ctr_seq = seq;
        t->ctr_rev = rev;
    }
    pthread_mutex_unlock(&t->lock);
}

#define TERM_MAX_CMPS 16
#define TERM_MAX_ELSE 8

int term_txn(struct term *t, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
             const struct dhaf_etcd_op *then, size_t n_then, const struct dhaf_etcd_op *otherwise,
             size_t n_otherwise, struct dhaf_etcd_txn_result *res, struct dhaf_err *err)
{
    struct cluster *c = t->c;
    memset(res, 0, sizeof(*res));
    if (!term_valid(t)) {
        if (!term_closed(t))
            term_close(t, "the lease may have expired (no renewal in time)");
        return dhaf_err_set(err, DHAF_EFENCED, "%s no longer leads (epoch %lld is over)", c->node,
                            (long long)t->epoch);
    }
    if (n_cmps >= TERM_MAX_CMPS || n_otherwise >= TERM_MAX_ELSE)
        return dhaf_err_set(err, DHAF_EINVAL, "too many compares or reads in a fenced txn");
    char key[256];
    cluster_key(c, key, sizeof(key), "leader");
    struct dhaf_etcd_cmp all[TERM_MAX_CMPS];
    all[0] = (struct dhaf_etcd_cmp){
        .key = key, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_EQ, .num = t->epoch};
    for (size_t i = 0; i < n_cmps; i++)
        all[i + 1] = cmps[i];
    struct dhaf_etcd_op reads[TERM_MAX_ELSE];
    reads[0] = (struct dhaf_etcd_op){.type = DHAF_ETCD_OP_GET, .key = key};
    for (size_t i = 0; i < n_otherwise; i++)
        reads[i + 1] = otherwise[i];
    int rc = store_txn(&c->store, all, n_cmps + 1, then, n_then, reads, n_otherwise + 1, res, err);
    if (rc != 0)
        return rc;
    if (res->succeeded)
        return 0;
    bool ours =
        res->n_gets >= 1 && res->gets[0].n == 1 && res->gets[0].kvs[0].create_rev == t->epoch;
    if (!ours) {
        dhaf_etcd_txn_result_release(res);
        term_close(t, "the leader key is no longer ours (a fenced write was refused)");
        return dhaf_err_set(err, DHAF_EFENCED, "fenced: epoch %lld is over", (long long)t->epoch);
    }
    return dhaf_err_set(err, DHAF_ECONFLICT, "a compare of the transaction failed");
}

/* ------------------------------------------------------------------ session */

/* One transaction: members/<node> (created if absent, its version refreshed; persistent) and
 * alive/<node> on the session lease, so that no reader sees a member that is not alive
 * merely because it is half registered; config/<node> (its config hash) comes with them, so
 * that no alive node is without one. */
static int register_alive(struct cluster *c, int64_t lease, struct dhaf_err *err)
{
    char mkey[256], akey[256], path[128];
    snprintf(path, sizeof(path), "members/%s", c->node);
    cluster_key(c, mkey, sizeof(mkey), path);
    snprintf(path, sizeof(path), "alive/%s", c->node);
    cluster_key(c, akey, sizeof(akey), path);
    json_t *a = json_pack("{s:s, s:s, s:s, s:I, s:b}", "version", DHAF_VERSION, "grpc", c->grpc_ep,
                          "rest", c->rest_ep, "started_at", (json_int_t)dhaf_clock_wall(c->clock),
                          "probe", c->probe);
    char *alive = dhaf_json_dump(a);
    json_decref(a);
    char ckey[256];
    snprintf(path, sizeof(path), "config/%s", c->node);
    cluster_key(c, ckey, sizeof(ckey), path);
    struct snap *s = snap_get(c->snaps);
    uint64_t gen = s->generation;
    char *conf = cfgdrift_record(&s->cfg, gen);
    snap_put(s);
    int rc = DHAF_ECONFLICT;
    for (int attempt = 0; attempt < 5; attempt++) {
        struct dhaf_kvs kvs;
        rc = store_get(&c->store, mkey, &kvs, err);
        if (rc)
            break;
        json_t *j = NULL;
        int64_t mod = 0;
        if (kvs.n) {
            mod = kvs.kvs[0].mod_rev;
            struct dhaf_err perr;
            if (dhaf_json_parse_object(kvs.kvs[0].value, kvs.kvs[0].value_len, mkey, &j, &perr))
                j = NULL; /* a broken record is replaced */
        }
        dhaf_kvs_release(&kvs);
        if (!j) {
            j = json_object();
            json_object_set_new(j, "first_seen", json_integer(dhaf_clock_wall(c->clock)));
        }
        json_object_set_new(j, "version", json_string(DHAF_VERSION));
        /* whether it votes: the quorum counts the member nodes that probe, alive or not */
        json_object_set_new(j, "probe", json_boolean(c->probe));
        char *member = dhaf_json_dump(j);
        json_decref(j);
        struct dhaf_etcd_cmp cmp = {.key = mkey,
                                    .target = mod ? DHAF_ETCD_MOD_REV : DHAF_ETCD_CREATE_REV,
                                    .result = DHAF_ETCD_EQ,
                                    .num = mod};
        struct dhaf_etcd_op puts[3] = {
            {.type = DHAF_ETCD_OP_PUT, .key = mkey, .value = member},
            {.type = DHAF_ETCD_OP_PUT, .key = akey, .value = alive, .lease = lease},
            {.type = DHAF_ETCD_OP_PUT, .key = ckey, .value = conf, .lease = lease}};
        struct dhaf_etcd_txn_result res;
        rc = store_txn(&c->store, &cmp, 1, puts, conf ? 3 : 2, NULL, 0, &res, err);
        free(member);
        bool ok = rc == 0 && res.succeeded;
        if (rc == 0)
            dhaf_etcd_txn_result_release(&res);
        if (ok) {
            c->cfg_gen = conf ? gen : 0;
            break;
        }
        if (rc && rc != DHAF_EUNKNOWN_OUTCOME)
            break;
        /* someone (the leader) changed it meanwhile, or we may have: read again */
        rc = dhaf_err_set(err, DHAF_ECONFLICT, "%s changes too often", mkey);
    }
    free(alive);
    free(conf);
    return rc;
}

/* A reload published a new config: its hash replaces config/<node> (on the session lease).
 * A failure is tried again at the next heartbeat. */
static void publish_config(struct cluster *c, int64_t lease)
{
    struct snap *s = snap_get(c->snaps);
    uint64_t gen = s->generation;
    char *conf = gen != c->cfg_gen ? cfgdrift_record(&s->cfg, gen) : NULL;
    snap_put(s);
    if (!conf)
        return;
    char key[256], path[128];
    snprintf(path, sizeof(path), "config/%s", c->node);
    cluster_key(c, key, sizeof(key), path);
    struct dhaf_err err;
    if (store_put(&c->store, key, conf, lease, &err) == 0)
        c->cfg_gen = gen;
    else
        log_err("config-hash-not-published", &err);
    free(conf);
}

/* Grants the session lease and registers the node on it. */
static int open_session(struct cluster *c, int ttl_s, struct dhaf_err *err)
{
    int64_t lease = 0;
    int rc = c->store.ops->lease_grant(c->store.ud, ttl_s, &lease, err);
    if (rc)
        return rc;
    if ((rc = register_alive(c, lease, err)) != 0) {
        struct dhaf_err e2;
        c->store.ops->lease_revoke(c->store.ud, lease, REVOKE_MS, &e2);
        return rc;
    }
    pthread_mutex_lock(&c->lock);
    c->session_lease = lease;
    pthread_mutex_unlock(&c->lock);
    DHAF_LOG(DHAF_LOG_INFO, "event=session-open node=%s lease=%llx ttl=%d grpc=%s rest=%s", c->node,
             (unsigned long long)lease, ttl_s, c->grpc_ep, c->rest_ep);
    return 0;
}

int64_t cluster_session_step(struct cluster *c)
{
    struct timings tm = timings_of(c);
    int64_t now = now_ms(c);
    struct dhaf_err err;
    if (!cluster_session_lease(c)) {
        if (open_session(c, tm.session_ttl_s, &err) != 0) {
            log_err("session-failed", &err);
            c->session_backoff = c->session_backoff ? c->session_backoff * 2 : 200;
            if (c->session_backoff > tm.hb_ms)
                c->session_backoff = tm.hb_ms;
            return now + c->session_backoff;
        }
        c->session_backoff = 0;
        if (c->session_ka)
            c->store.ops->keepalive_free(c->session_ka);
        c->session_ka = c->store.ops->keepalive_new(c->store.ud, cluster_session_lease(c));
        c->next_hb = now + tm.hb_ms;
        return c->next_hb;
    }
    publish_config(c, cluster_session_lease(c));
    if (now < c->next_hb)
        return c->next_hb;
    int64_t ttl = 0;
    int rc = c->store.ops->keepalive_once(c->session_ka, &ttl, tm.hb_ms, &err);
    c->next_hb = now + tm.hb_ms;
    if (rc == DHAF_ENOTFOUND) {
        /* The lease ran out (etcd unreachable, or this process frozen): start anew. */
        DHAF_LOG(DHAF_LOG_WARN, "event=session-expired node=%s", c->node);
        pthread_mutex_lock(&c->lock);
        c->session_lease = 0;
        pthread_mutex_unlock(&c->lock);
        return now;
    }
    if (rc != 0)
        log_err("heartbeat-failed", &err);
    return c->next_hb;
}

/* ------------------------------------------------------------------ election */

/* Revokes a leader lease left over from a term closed while etcd was unreachable. */
static void revoke_stale(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    int64_t lease = c->stale_lease;
    pthread_mutex_unlock(&c->lock);
    if (!lease)
        return;
    struct dhaf_err err;
    int rc = c->store.ops->lease_revoke(c->store.ud, lease, REVOKE_MS, &err);
    if (rc == 0 || rc == DHAF_ENOTFOUND) {
        pthread_mutex_lock(&c->lock);
        if (c->stale_lease == lease)
            c->stale_lease = 0;
        pthread_mutex_unlock(&c->lock);
        if (rc == 0)
            DHAF_LOG(DHAF_LOG_INFO, "event=stale-leader-lease-revoked node=%s", c->node);
    }
}

static void note_leader(struct cluster *c, const char *who)
{
    pthread_mutex_lock(&c->lock);
    bool changed = strcmp(c->leader_seen, who) != 0;
    snprintf(c->leader_seen, sizeof(c->leader_seen), "%s", who);
    pthread_mutex_unlock(&c->lock);
    if (changed)
        DHAF_LOG(DHAF_LOG_INFO, "event=leader-seen node=%s leader=%s%s", c->node, who,
                 strcmp(who, c->node) == 0
                     ? " note=\"a key of an earlier run of this node; waiting for it to expire\""
                     : "");
}

static void leader_name(const json_t *j, char *buf, size_t len)
{
    const char *n = j ? dhaf_json_str(j, "node") : NULL;
    snprintf(buf, len, "%s", n ? n : "?");
}

/* Stops the duties of a closed term, hands the lease back, and says so. */
static void finish_term(struct cluster *c, bool stopping)
{
    pthread_mutex_lock(&c->lock);
    struct term *t = c->term;
    c->term = NULL;
    c->role = ROLE_FOLLOWER;
    pthread_mutex_unlock(&c->lock);
    if (!t)
        return;
    term_close(t, stopping ? "the node is stopping" : "closed");
    struct dhaf_err err;
    int rc = 0;
    if (stopping) {
        /* hand over first: the next leader starts while our duties wind down */
        rc = c->store.ops->lease_revoke(c->store.ud, t->lease, REVOKE_MS, &err);
        if (rc == 0)
            DHAF_LOG(DHAF_LOG_INFO, "event=leadership-released node=%s epoch=%lld", c->node,
                     (long long)t->epoch);
    }
    size_t stopped = 0;
    for (size_t i = c->n_duties; i-- > 0;)
        if (t->handles[i])
            stopped += c->duties[i].stop(t->handles[i], DUTY_STOP_MS) ? 1 : 0;
    int64_t took = now_ms(c) - t->closed_at;
    pthread_mutex_lock(&t->lock);
    char reason[200];
    snprintf(reason, sizeof(reason), "%s", t->reason);
    pthread_mutex_unlock(&t->lock);
    DHAF_LOG(DHAF_LOG_INFO,
             "event=term-closed node=%s epoch=%lld reason=\"%s\" workers_stopped=%zu "
             "doubt_to_stopped_ms=%lld",
             c->node, (long long)t->epoch, reason, stopped, (long long)took);
    if (!stopping) {
        rc = c->store.ops->lease_revoke(c->store.ud, t->lease, REVOKE_MS, &err);
        if (rc != 0 && rc != DHAF_ENOTFOUND) {
            /* etcd is away: revoke it as soon as it answers, or nobody leads until it ends */
            pthread_mutex_lock(&c->lock);
            c->stale_lease = t->lease;
            pthread_mutex_unlock(&c->lock);
        }
        char detail[260];
        snprintf(detail, sizeof(detail), ": %s (epoch %lld)", reason, (long long)t->epoch);
        struct event ev = {.kind = EVK_LEADER_LOST, .node = c->node, .detail = detail};
        if (outbox_record(c, &ev, 1, &err) != 0)
            DHAF_LOG(DHAF_LOG_DEBUG, "event=event-not-recorded kind=leader-lost reason=\"%s\"",
                     err.msg);
    }
    term_put(t);
}

static struct term *term_new(struct cluster *c, int64_t epoch, int64_t lease, int64_t valid_until,
                             int64_t next_ka)
{
    struct term *t = dhaf_xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->c = c;
    t->epoch = epoch;
    t->lease = lease;
    t->opened_ms = now_ms(c);
    atomic_init(&t->valid_until, valid_until);
    atomic_init(&t->closed, false);
    atomic_init(&t->renew_asked, false);
    pthread_mutex_init(&t->lock, NULL);
    dhaf_cond_init_mono(&t->renewed);
    dhaf_cancel_init(&t->cancel);
    t->ka = c->store.ops->keepalive_new(c->store.ud, lease);
    t->next_ka = next_ka;
    return t;
}

/* A won election: the term opens, is announced, and its duties start. */
static void open_term(struct cluster *c, int64_t epoch, int64_t lease, int64_t t_grant, int ttl_s)
{
    int ka_ms = ttl_s * 1000 / 3;
    /* Trust the lease for its TTL from before we asked for it, less one renewal interval. */
    struct term *t = term_new(c, epoch, lease, t_grant + ttl_s * 1000 - ka_ms, t_grant + ka_ms);
    pthread_mutex_lock(&c->lock);
    char before[80];
    snprintf(before, sizeof(before), "%s", c->leader_seen);
    c->term = t;
    c->role = ROLE_LEADER;
    snprintf(c->leader_seen, sizeof(c->leader_seen), "%s", c->node);
    pthread_mutex_unlock(&c->lock);
    char detail[200];
    if (before[0] && strcmp(before, c->node) != 0)
        snprintf(detail, sizeof(detail), " (epoch %lld; before: %s)", (long long)epoch, before);
    else
        snprintf(detail, sizeof(detail), " (epoch %lld)", (long long)epoch);
    struct event ev = {.kind = EVK_NEW_LEADER, .node = c->node, .detail = detail};
    struct dhaf_err err;
    int rc = outbox_commit(t, NULL, 0, NULL, 0, &ev, 1, &err);
    if (rc == 0) {
        pthread_mutex_lock(&t->lock);
        t->first_seq = t->ctr_seq;
        pthread_mutex_unlock(&t->lock);
    }
    for (size_t i = 0; i < c->n_duties && !term_closed(t); i++)
        t->handles[i] = c->duties[i].start(t, c->duties[i].ud);
}

/* One campaign: 1 won (the term is open), 0 someone else leads, negative on an etcd error. */
static int campaign(struct cluster *c, int ttl_s, struct dhaf_err *err)
{
    pthread_mutex_lock(&c->lock);
    c->role = ROLE_CANDIDATE;
    pthread_mutex_unlock(&c->lock);
    int64_t lease = 0;
    int64_t t_grant = now_ms(c);
    int rc = c->store.ops->lease_grant(c->store.ud, ttl_s, &lease, err);
    if (rc)
        return rc;
    char key[256];
    cluster_key(c, key, sizeof(key), "leader");
    json_t *j =
        json_pack("{s:s, s:I}", "node", c->node, "since", (json_int_t)dhaf_clock_wall(c->clock));
    char *text = dhaf_json_dump(j);
    json_decref(j);
    struct dhaf_etcd_cmp cmp = {
        .key = key, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_EQ, .num = 0};
    struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = text, .lease = lease};
    struct dhaf_etcd_op get = {.type = DHAF_ETCD_OP_GET, .key = key};
    struct dhaf_etcd_txn_result res;
    rc = store_txn(&c->store, &cmp, 1, &put, 1, &get, 1, &res, err);
    free(text);
    struct dhaf_err e2;
    if (rc) {
        c->store.ops->lease_revoke(c->store.ud, lease, REVOKE_MS, &e2);
        return rc;
    }
    if (!res.succeeded) {
        char who[80] = "?";
        if (res.n_gets == 1 && res.gets[0].n == 1) {
            json_t *v = NULL;
            if (dhaf_json_parse_object(res.gets[0].kvs[0].value, res.gets[0].kvs[0].value_len, key,
                                       &v, &e2) == 0) {
                leader_name(v, who, sizeof(who));
                json_decref(v);
            }
        }
        dhaf_etcd_txn_result_release(&res);
        c->store.ops->lease_revoke(c->store.ud, lease, REVOKE_MS, &e2);
        pthread_mutex_lock(&c->lock);
        c->role = ROLE_FOLLOWER;
        pthread_mutex_unlock(&c->lock);
        note_leader(c, who);
        return 0;
    }
    /* The txn created the key: its revision is the key's create_revision, our epoch. */
    int64_t epoch = res.revision;
    dhaf_etcd_txn_result_release(&res);
    open_term(c, epoch, lease, t_grant, ttl_s);
    return 1;
}

/* Leader: renew when due; close the term when leadership is in doubt. */
static int64_t lead_step(struct cluster *c, struct term *t, int ttl_s)
{
    int64_t now = now_ms(c);
    if (term_closed(t)) {
        finish_term(c, false);
        return now;
    }
    if (now >= atomic_load(&t->valid_until)) {
        term_close(t, "the lease may have expired (no renewal in time)");
        finish_term(c, false);
        return now;
    }
    view_rdlock(c->view);
    const struct view_rec *lk = view_leader(c->view);
    struct view_sync vs = view_sync(c->view);
    bool lost = vs.synced && vs.revision >= t->epoch && (!lk || lk->create_rev != t->epoch);
    view_unlock(c->view);
    if (lost) {
        term_close(t, "the leader key was removed or replaced");
        finish_term(c, false);
        return now;
    }
    if (now >= t->next_ka || atomic_exchange(&t->renew_asked, false)) {
        int ka_ms = ttl_s * 1000 / 3;
        struct dhaf_err err;
        int64_t t_send = now_ms(c), got = 0;
        int rc = c->store.ops->keepalive_once(t->ka, &got, ka_ms, &err);
        if (rc != 0) {
            if (rc != DHAF_ENOTFOUND)
                log_err("leader-keepalive-failed", &err);
            term_close(t, rc == DHAF_ENOTFOUND ? "the leader lease has expired"
                                               : "a keep-alive of the leader lease failed");
            finish_term(c, false);
            return now_ms(c);
        }
        int64_t until = t_send + got * 1000 - ka_ms;
        if (until > atomic_load(&t->valid_until))
            atomic_store(&t->valid_until, until);
        t->next_ka = t_send + ka_ms;
        pthread_mutex_lock(&t->lock);
        t->renewals++;
        pthread_cond_broadcast(&t->renewed);
        pthread_mutex_unlock(&t->lock);
    }
    int64_t until = atomic_load(&t->valid_until);
    return t->next_ka < until ? t->next_ka : until;
}

/* Follower: campaign when nobody leads (as far as the view knows, or when it cannot know). */
static int64_t follow_step(struct cluster *c, const struct timings *tm)
{
    int64_t now = now_ms(c);
    revoke_stale(c);
    view_rdlock(c->view);
    const struct view_rec *lk = view_leader(c->view);
    struct view_sync vs = view_sync(c->view);
    char who[80] = "";
    if (vs.synced && lk)
        leader_name(lk->j, who, sizeof(who));
    view_unlock(c->view);
    if (who[0]) {
        note_leader(c, who);
        return now + tm->hb_ms; /* the view wakes us when the key goes */
    }
    struct dhaf_err err;
    int rc = campaign(c, tm->leader_ttl_s, &err);
    if (rc < 0) {
        pthread_mutex_lock(&c->lock);
        c->role = ROLE_FOLLOWER;
        pthread_mutex_unlock(&c->lock);
        log_err("campaign-failed", &err);
        c->campaign_backoff = c->campaign_backoff ? c->campaign_backoff * 2 : 100;
        if (c->campaign_backoff > 1000)
            c->campaign_backoff = 1000;
        return now_ms(c) + c->campaign_backoff;
    }
    c->campaign_backoff = 0;
    return rc == 1 ? now_ms(c) : now_ms(c) + tm->hb_ms;
}

int64_t cluster_election_step(struct cluster *c)
{
    struct timings tm = timings_of(c);
    pthread_mutex_lock(&c->lock);
    struct term *t = c->term;
    bool stopping = c->stopping;
    pthread_mutex_unlock(&c->lock);
    if (stopping) {
        finish_term(c, true);
        return now_ms(c) + 1000;
    }
    return t ? lead_step(c, t, tm.leader_ttl_s) : follow_step(c, &tm);
}

/* ------------------------------------------------------------------ threads and lifecycle */

static void *session_thread(void *arg)
{
    struct cluster *c = arg;
    while (!is_stopping(c)) {
        int64_t next = cluster_session_step(c);
        dhaf_waker_wait(&c->session_wake, next);
    }
    int64_t lease = cluster_session_lease(c);
    struct dhaf_err err;
    if (lease)
        c->store.ops->lease_revoke(c->store.ud, lease, REVOKE_MS, &err);
    atomic_fetch_sub(&c->running, 1);
    return NULL;
}

static void *election_thread(void *arg)
{
    struct cluster *c = arg;
    while (!is_stopping(c)) {
        int64_t next = cluster_election_step(c);
        dhaf_waker_wait(&c->election_wake, next);
    }
    finish_term(c, true);
    atomic_fetch_sub(&c->running, 1);
    return NULL;
}

struct cluster *cluster_new(const struct cluster_opts *o)
{
    struct cluster *c = dhaf_xcalloc(1, sizeof(*c));
    c->store = o->store;
    c->clock = o->clock;
    c->view = o->view;
    c->snaps = o->snaps;
    c->etcdmon = o->etcdmon;
    struct snap *s = snap_get(c->snaps);
    c->name = dhaf_xstrdup(s->cfg.cluster_name);
    c->node = dhaf_xstrdup(s->cfg.node_name);
    c->grpc_ep = endpoint_of(&s->cfg.grpc_api);
    c->rest_ep = endpoint_of(&s->cfg.web_api);
    c->probe = s->cfg.probe;
    snprintf(c->prefix, sizeof(c->prefix), "/dhaf/%s/", s->cfg.cluster_name);
    snap_put(s);
    dhaf_waker_init(&c->session_wake);
    dhaf_waker_init(&c->election_wake);
    pthread_mutex_init(&c->lock, NULL);
    atomic_init(&c->running, 0);
    if (c->view)
        view_subscribe(c->view, &c->election_wake, VIEW_LEADER | VIEW_SYNC, 1);
    return c;
}

void cluster_add_duty(struct cluster *c, const struct duty *d)
{
    if (c->n_duties < CLUSTER_MAX_DUTIES)
        c->duties[c->n_duties++] = *d;
}

void cluster_reload(struct cluster *c)
{
    dhaf_waker_kick(&c->session_wake, 1);
    dhaf_waker_kick(&c->election_wake, 1);
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n_reload_watch; i++)
        dhaf_waker_kick(c->reload_watch[i].w, c->reload_watch[i].bits);
    pthread_mutex_unlock(&c->lock);
}

void cluster_watch_reload(struct cluster *c, struct dhaf_waker *w, unsigned bits)
{
    pthread_mutex_lock(&c->lock);
    size_t max = sizeof(c->reload_watch) / sizeof(c->reload_watch[0]);
    if (c->n_reload_watch < max)
        c->reload_watch[c->n_reload_watch++] = (typeof(c->reload_watch[0])){w, bits};
    pthread_mutex_unlock(&c->lock);
}

void cluster_unwatch_reload(struct cluster *c, struct dhaf_waker *w)
{
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n_reload_watch;)
        if (c->reload_watch[i].w == w)
            c->reload_watch[i] = c->reload_watch[--c->n_reload_watch];
        else
            i++;
    pthread_mutex_unlock(&c->lock);
}

int cluster_start(struct cluster *c, struct dhaf_err *err)
{
    atomic_store(&c->running, 2);
    if (dhaf_thread_start(&c->t_session, false, session_thread, c) != 0) {
        atomic_store(&c->running, 0);
        return dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the session thread");
    }
    if (dhaf_thread_start(&c->t_election, false, election_thread, c) != 0) {
        atomic_store(&c->running, 1);
        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        pthread_mutex_unlock(&c->lock);
        dhaf_waker_kick(&c->session_wake, 1);
        pthread_join(c->t_session, NULL);
        return dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the election thread");
    }
    c->started = true;
    return 0;
}

bool cluster_stop(struct cluster *c, int deadline_ms)
{
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    struct term *t = c->term;
    if (t)
        term_hold(t);
    pthread_mutex_unlock(&c->lock);
    if (t) {
        term_close(t, "the node is stopping");
        term_put(t);
    }
    if (!c->started) {
        finish_term(c, true);
        return true;
    }
    dhaf_waker_kick(&c->session_wake, 1);
    dhaf_waker_kick(&c->election_wake, 1);
    int64_t deadline = dhaf_mono_ms() + deadline_ms;
    pthread_t ts[2] = {c->t_election, c->t_session};
    for (int i = 0; i < 2; i++) {
        if (!dhaf_join_within(ts[i], deadline - dhaf_mono_ms())) {
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=stop-slow node=%s note=\"a cluster thread did not finish in time; "
                     "exiting anyway\"",
                     c->node);
            pthread_detach(ts[i]);
        }
    }
    c->started = atomic_load(&c->running) != 0; /* detached threads still use c */
    return !c->started;
}

void cluster_free(struct cluster *c)
{
    if (!c || c->started)
        return; /* threads still running: the process is about to exit anyway */
    if (c->view)
        view_unsubscribe(c->view, &c->election_wake);
    if (c->session_ka)
        c->store.ops->keepalive_free(c->session_ka);
    free(c->name);
    free(c->node);
    free(c->grpc_ep);
    free(c->rest_ep);
    dhaf_waker_release(&c->session_wake);
    dhaf_waker_release(&c->election_wake);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int cluster_decommission(struct cluster *c, const char *node, const struct event_actor *actor,
                         struct dhaf_err *err)
{
    char mkey[512], akey[512], vkey[512], tmp[200];
    snprintf(tmp, sizeof(tmp), "members/%s", node);
    cluster_key(c, mkey, sizeof(mkey), tmp);
    snprintf(tmp, sizeof(tmp), "alive/%s", node);
    cluster_key(c, akey, sizeof(akey), tmp);
    snprintf(tmp, sizeof(tmp), "votes/%s", node);
    cluster_key(c, vkey, sizeof(vkey), tmp);
    /* Atomically: only a member that is not alive is removed, with its vote, and the audit
     * event says who asked. */
    struct dhaf_etcd_cmp cmps[2] = {
        {.key = mkey, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_GT, .num = 0},
        {.key = akey, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_EQ, .num = 0},
    };
    struct dhaf_etcd_op del[2] = {{.type = DHAF_ETCD_OP_DELETE, .key = mkey},
                                  {.type = DHAF_ETCD_OP_DELETE, .key = vkey}};
    char detail[400];
    event_actor_text(actor, detail, sizeof(detail));
    struct event ev = {
        .kind = EVK_NODE_DECOMMISSIONED, .node = node, .detail = detail, .actor = actor};
    int rc = outbox_record_ops(c, cmps, 2, del, 2, &ev, 1, err);
    if (rc != DHAF_ECONFLICT)
        return rc;
    /* A compare failed: say which. */
    struct dhaf_kvs kvs;
    rc = store_get(&c->store, mkey, &kvs, err);
    if (rc)
        return rc;
    bool member = kvs.n == 1;
    dhaf_kvs_release(&kvs);
    if (!member)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "there is no dhaf node named \"%s\"", node);
    return dhaf_err_set(err, DHAF_ECONFLICT,
                        "node \"%s\" is alive; only a node that is down can be decommissioned",
                        node);
}
