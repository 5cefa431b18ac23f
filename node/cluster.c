/* SPDX-License-Identifier: MIT */
/* Membership, election with fencing, step-down and node-up/down tracking.
 *
 * Three threads:
 *  - session: keeps the node's session lease alive (alive/<node> lives on it);
 *  - election: campaigns when there is no leader (watching the leader key, so a deleted key
 *    starts a campaign at once), and as leader renews the leader lease at TTL/3, stepping
 *    down at once when a renewal fails or too little of the lease is surely left;
 *  - duties: as leader, turns changes of alive/ into node-up / node-down events, once per
 *    transition (the last announced state is kept in members/<node>).
 * Leadership is judged on this node's monotonic clock, so a node frozen (SIGSTOP) past its
 * TTL knows on waking that it is no longer the leader before it does anything. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "events.h"

struct cluster {
    struct dhaf_etcd *etcd;
    char *cluster_name;
    char *node;
    char prefix[128];
    char *grpc_ep, *rest_ep;

    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
    /* timings (ms), reloadable */
    int heartbeat_ms;
    int session_ttl_s;
    int leader_ttl_s;

    int64_t session_lease;

    enum cluster_role role;
    int64_t epoch;
    int64_t leader_lease;
    int64_t stale_lease; /* a leader lease we gave up but could not revoke yet */
    int64_t valid_until; /* monotonic ms: leadership is trusted until then */
    char leader_seen[80];

    pthread_t t_session, t_election, t_duties;
    bool started;
    atomic_int running; /* threads still running */
};

const char *cluster_key(const struct cluster *c, char *buf, size_t len, const char *path)
{
    snprintf(buf, len, "%s%s", c->prefix, path);
    return buf;
}

struct dhaf_etcd *cluster_etcd(struct cluster *c)
{
    return c->etcd;
}

const char *cluster_node(const struct cluster *c)
{
    return c->node;
}

static char *endpoint_of(const struct dhaf_api *api)
{
    return strchr(api->host, ':') ? dhaf_xasprintf("[%s]:%d", api->host, api->port)
                                  : dhaf_xasprintf("%s:%d", api->host, api->port);
}

struct cluster *cluster_new(const struct dhaf_config *cfg, struct dhaf_etcd *etcd)
{
    struct cluster *c = dhaf_xcalloc(1, sizeof(*c));
    c->etcd = etcd;
    c->cluster_name = dhaf_xstrdup(cfg->cluster_name);
    c->node = dhaf_xstrdup(cfg->node_name);
    snprintf(c->prefix, sizeof(c->prefix), "/dhaf/%s/", cfg->cluster_name);
    c->grpc_ep = endpoint_of(&cfg->grpc_api);
    c->rest_ep = endpoint_of(&cfg->web_api);
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->wake, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&c->running, 0);
    cluster_reload(c, cfg);
    return c;
}

void cluster_reload(struct cluster *c, const struct dhaf_config *cfg)
{
    pthread_mutex_lock(&c->lock);
    c->heartbeat_ms = cfg->heartbeat_interval * 1000;
    c->session_ttl_s = cfg->healthy_node_status_ttl;
    c->leader_ttl_s = cfg->etcd.leader_key_ttl;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
}

/* Sleeps up to ms unless the cluster is stopping; returns true when stopping. */
static bool nap(struct cluster *c, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->lock);
    while (!c->stopping && pthread_cond_timedwait(&c->wake, &c->lock, &ts) == 0)
        ;
    bool s = c->stopping;
    pthread_mutex_unlock(&c->lock);
    return s;
}

static bool stopping(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    bool s = c->stopping;
    pthread_mutex_unlock(&c->lock);
    return s;
}

static void log_err(const char *event, const struct dhaf_err *err)
{
    char q[400];
    DHAF_LOG(DHAF_LOG_WARN, "event=%s reason=\"%s\"", event,
             dhaf_log_quote(q, sizeof(q), err->msg));
}

int64_t cluster_session_lease(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    int64_t l = c->session_lease;
    pthread_mutex_unlock(&c->lock);
    return l;
}

bool cluster_nap(struct cluster *c, int64_t ms)
{
    return nap(c, ms);
}

bool cluster_stopping(struct cluster *c)
{
    return stopping(c);
}

/* ------------------------------------------------------------------ leadership state */

bool cluster_is_leader(struct cluster *c, int64_t *epoch)
{
    pthread_mutex_lock(&c->lock);
    bool yes = c->role == ROLE_LEADER && dhaf_mono_ms() < c->valid_until;
    if (epoch)
        *epoch = yes ? c->epoch : 0;
    pthread_mutex_unlock(&c->lock);
    return yes;
}

enum cluster_role cluster_role(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    enum cluster_role r = c->role;
    if (r == ROLE_LEADER && dhaf_mono_ms() >= c->valid_until)
        r = ROLE_FOLLOWER;
    pthread_mutex_unlock(&c->lock);
    return r;
}

/* Stops acting as leader at once; then hands the key over by revoking the lease. */
static void step_down(struct cluster *c, const char *reason)
{
    pthread_mutex_lock(&c->lock);
    if (c->role != ROLE_LEADER) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->role = ROLE_FOLLOWER;
    int64_t epoch = c->epoch, lease = c->leader_lease;
    c->epoch = 0;
    c->leader_lease = 0;
    c->valid_until = 0;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);

    char msg[300];
    snprintf(msg, sizeof(msg), "%s stopped acting as leader (epoch %lld): %s", c->node,
             (long long)epoch, reason);
    struct event ev = {.kind = "leader-lost", .level = EV_WARNING, .node = c->node, .message = msg};
    event_emit(c, &ev);
    /* If etcd still has our lease, revoking it lets another node lead now; when etcd is out
     * of reach, the election thread retries as soon as it answers again. */
    struct dhaf_err err;
    if (lease && dhaf_etcd_lease_revoke(c->etcd, lease, &err) != 0 && err.code != DHAF_ENOTFOUND) {
        pthread_mutex_lock(&c->lock);
        c->stale_lease = lease;
        pthread_mutex_unlock(&c->lock);
    }
}

/* Revokes a leader lease left over from a step-down while etcd was unreachable. */
static void revoke_stale(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    int64_t lease = c->stale_lease;
    pthread_mutex_unlock(&c->lock);
    if (!lease)
        return;
    struct dhaf_err err;
    int rc = dhaf_etcd_lease_revoke(c->etcd, lease, &err);
    if (rc == 0 || rc == DHAF_ENOTFOUND) {
        pthread_mutex_lock(&c->lock);
        if (c->stale_lease == lease)
            c->stale_lease = 0;
        pthread_mutex_unlock(&c->lock);
        if (rc == 0)
            DHAF_LOG(DHAF_LOG_INFO, "event=stale-leader-lease-revoked node=%s", c->node);
    }
}

int cluster_txn_as_leader(struct cluster *c, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                          const struct dhaf_etcd_op *ops, size_t n_ops,
                          struct dhaf_etcd_txn_result *res, struct dhaf_err *err)
{
    memset(res, 0, sizeof(*res));
    int64_t epoch;
    if (!cluster_is_leader(c, &epoch))
        return dhaf_err_set(err, DHAF_EFENCED, "%s is not the leader", c->node);
    char key[256];
    cluster_key(c, key, sizeof(key), "leader");
    struct dhaf_etcd_cmp all[17];
    if (n_cmps > 16)
        return dhaf_err_set(err, DHAF_EINVAL, "too many compares");
    all[0] = (struct dhaf_etcd_cmp){
        .key = key, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_EQ, .num = epoch};
    for (size_t i = 0; i < n_cmps; i++)
        all[i + 1] = cmps[i];
    /* On failure, read the leader key to tell "fenced" from "the caller's compare failed". */
    struct dhaf_etcd_op get = {.type = DHAF_ETCD_OP_GET, .key = key};
    int rc = dhaf_etcd_txn(c->etcd, all, n_cmps + 1, ops, n_ops, &get, 1, res, err);
    if (rc != 0)
        return rc;
    if (res->succeeded)
        return 0;
    bool still_ours =
        res->n_gets == 1 && res->gets[0].n == 1 && res->gets[0].kvs[0].create_rev == epoch;
    dhaf_etcd_txn_result_release(res);
    if (!still_ours) {
        step_down(c, "the leader key is no longer ours (fenced write refused)");
        return dhaf_err_set(err, DHAF_EFENCED, "fenced: epoch %lld is over", (long long)epoch);
    }
    return dhaf_err_set(err, DHAF_ECONFLICT, "a compare of the transaction failed");
}

/* ------------------------------------------------------------------ session */

/* members/<node>: created if absent; its version refreshed. */
static int register_member(struct cluster *c, struct dhaf_err *err)
{
    char key[256];
    cluster_key(c, key, sizeof(key), "members/");
    strncat(key, c->node, sizeof(key) - strlen(key) - 1);
    for (int attempt = 0; attempt < 5; attempt++) {
        struct dhaf_kvs kvs;
        int rc = dhaf_etcd_get(c->etcd, key, &kvs, err);
        if (rc)
            return rc;
        json_t *j = NULL;
        int64_t mod = 0;
        if (kvs.n) {
            mod = kvs.kvs[0].mod_rev;
            struct dhaf_err perr;
            if (dhaf_json_parse_object(kvs.kvs[0].value, kvs.kvs[0].value_len, key, &j, &perr))
                j = NULL; /* a broken record is replaced */
        }
        dhaf_kvs_release(&kvs);
        if (!j) {
            j = json_object();
            json_object_set_new(j, "first_seen", json_integer(dhaf_wall_ms()));
        }
        json_object_set_new(j, "version", json_string(DHAF_VERSION));
        char *text = dhaf_json_dump(j);
        json_decref(j);
        struct dhaf_etcd_cmp cmp = {.key = key,
                                    .target = mod ? DHAF_ETCD_MOD_REV : DHAF_ETCD_CREATE_REV,
                                    .result = DHAF_ETCD_EQ,
                                    .num = mod};
        struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = text};
        struct dhaf_etcd_txn_result res;
        rc = dhaf_etcd_txn(c->etcd, &cmp, 1, &put, 1, NULL, 0, &res, err);
        free(text);
        bool ok = rc == 0 && res.succeeded;
        if (rc == 0)
            dhaf_etcd_txn_result_release(&res);
        if (ok)
            return 0;
        if (rc && rc != DHAF_EUNKNOWN_OUTCOME)
            return rc;
        /* someone (the leader) changed it meanwhile: read again */
    }
    return dhaf_err_set(err, DHAF_ECONFLICT, "%s changes too often", key);
}

/* Grants the session lease and puts alive/<node> on it. */
static int open_session(struct cluster *c, struct dhaf_err *err)
{
    int64_t lease = 0;
    int rc = dhaf_etcd_lease_grant(c->etcd, c->session_ttl_s, &lease, NULL, err);
    if (rc)
        return rc;
    if ((rc = register_member(c, err)) != 0) {
        struct dhaf_err e2;
        dhaf_etcd_lease_revoke(c->etcd, lease, &e2);
        return rc;
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:I}", "version", DHAF_VERSION, "grpc", c->grpc_ep,
                          "rest", c->rest_ep, "started_at", (json_int_t)dhaf_wall_ms());
    char *text = dhaf_json_dump(j);
    json_decref(j);
    char key[256];
    cluster_key(c, key, sizeof(key), "alive/");
    strncat(key, c->node, sizeof(key) - strlen(key) - 1);
    rc = dhaf_etcd_put(c->etcd, key, text, SIZE_MAX, lease, NULL, err);
    free(text);
    if (rc) {
        struct dhaf_err e2;
        dhaf_etcd_lease_revoke(c->etcd, lease, &e2);
        return rc;
    }
    pthread_mutex_lock(&c->lock);
    c->session_lease = lease;
    pthread_mutex_unlock(&c->lock);
    DHAF_LOG(DHAF_LOG_INFO, "event=session-open node=%s lease=%llx ttl=%d grpc=%s rest=%s", c->node,
             (unsigned long long)lease, c->session_ttl_s, c->grpc_ep, c->rest_ep);
    return 0;
}

static void *session_thread(void *arg)
{
    struct cluster *c = arg;
    struct dhaf_err err;
    struct dhaf_etcd_keepalive *ka = NULL;
    int64_t backoff = 200;
    while (!stopping(c)) {
        pthread_mutex_lock(&c->lock);
        int64_t lease = c->session_lease;
        int hb = c->heartbeat_ms;
        pthread_mutex_unlock(&c->lock);
        if (!lease) {
            if (open_session(c, &err) != 0) {
                log_err("session-failed", &err);
                if (nap(c, backoff))
                    break;
                backoff = backoff * 2 > hb ? hb : backoff * 2;
                continue;
            }
            backoff = 200;
            dhaf_etcd_keepalive_free(ka);
            pthread_mutex_lock(&c->lock);
            ka = dhaf_etcd_keepalive_new(c->etcd, c->session_lease);
            pthread_mutex_unlock(&c->lock);
        }
        if (nap(c, hb))
            break;
        int64_t ttl = 0;
        int rc = dhaf_etcd_keepalive_once(ka, &ttl, hb, &err);
        if (rc == DHAF_ENOTFOUND) {
            /* The lease ran out (etcd unreachable, or this process frozen): start anew. */
            DHAF_LOG(DHAF_LOG_WARN, "event=session-expired node=%s", c->node);
            pthread_mutex_lock(&c->lock);
            c->session_lease = 0;
            pthread_mutex_unlock(&c->lock);
        } else if (rc != 0) {
            log_err("heartbeat-failed", &err);
        }
    }
    dhaf_etcd_keepalive_free(ka);
    atomic_fetch_sub(&c->running, 1);
    return NULL;
}

/* ------------------------------------------------------------------ election */

/* One campaign: 1 when won, 0 when someone else leads (*rev = revision to watch from),
 * negative on an etcd error. */
static int campaign(struct cluster *c, int64_t *rev, struct dhaf_err *err)
{
    pthread_mutex_lock(&c->lock);
    int ttl = c->leader_ttl_s;
    c->role = ROLE_CANDIDATE;
    pthread_mutex_unlock(&c->lock);

    int64_t lease = 0;
    int64_t t_grant = dhaf_mono_ms();
    int rc = dhaf_etcd_lease_grant(c->etcd, ttl, &lease, NULL, err);
    if (rc)
        return rc;
    char key[256];
    cluster_key(c, key, sizeof(key), "leader");
    json_t *j = json_pack("{s:s, s:I}", "node", c->node, "since", (json_int_t)dhaf_wall_ms());
    char *text = dhaf_json_dump(j);
    json_decref(j);
    struct dhaf_etcd_cmp cmp = {
        .key = key, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_EQ, .num = 0};
    struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = text, .lease = lease};
    struct dhaf_etcd_op get = {.type = DHAF_ETCD_OP_GET, .key = key};
    struct dhaf_etcd_txn_result res;
    rc = dhaf_etcd_txn(c->etcd, &cmp, 1, &put, 1, &get, 1, &res, err);
    free(text);
    struct dhaf_err e2;
    if (rc) {
        dhaf_etcd_lease_revoke(c->etcd, lease, &e2);
        return rc;
    }
    if (!res.succeeded) {
        *rev = res.revision;
        char who[80] = "?";
        if (res.n_gets == 1 && res.gets[0].n == 1) {
            json_t *v = NULL;
            if (dhaf_json_parse_object(res.gets[0].kvs[0].value, res.gets[0].kvs[0].value_len, key,
                                       &v, &e2) == 0) {
                const char *n = dhaf_json_str(v, "node");
                snprintf(who, sizeof(who), "%s", n ? n : "?");
                json_decref(v);
            }
        }
        dhaf_etcd_txn_result_release(&res);
        dhaf_etcd_lease_revoke(c->etcd, lease, &e2);
        pthread_mutex_lock(&c->lock);
        c->role = ROLE_FOLLOWER;
        bool changed = strcmp(c->leader_seen, who) != 0;
        snprintf(c->leader_seen, sizeof(c->leader_seen), "%s", who);
        pthread_mutex_unlock(&c->lock);
        if (changed)
            DHAF_LOG(
                DHAF_LOG_INFO, "event=leader-seen node=%s leader=%s%s", c->node, who,
                strcmp(who, c->node) == 0
                    ? " note=\"a key of an earlier run of this node; waiting for it to expire\""
                    : "");
        return 0;
    }
    /* The txn created the key: its revision is the key's create_revision, our epoch. */
    int64_t epoch = res.revision;
    dhaf_etcd_txn_result_release(&res);
    int ka_ms = ttl * 1000 / 3;
    pthread_mutex_lock(&c->lock);
    c->role = ROLE_LEADER;
    c->epoch = epoch;
    c->leader_lease = lease;
    /* Trust the lease for its TTL from before we asked for it, less one renewal interval. */
    c->valid_until = t_grant + ttl * 1000 - ka_ms;
    snprintf(c->leader_seen, sizeof(c->leader_seen), "%s", c->node);
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    char msg[200];
    snprintf(msg, sizeof(msg), "%s is the leader of cluster %s (epoch %lld)", c->node,
             c->cluster_name, (long long)epoch);
    struct event ev = {.kind = "new-leader", .level = EV_INFO, .node = c->node, .message = msg};
    event_emit(c, &ev);
    return 1;
}

/* Follower: wait for the leader key to go away (or stop / timeout). */
static void follow(struct cluster *c, int64_t rev)
{
    char key[256];
    cluster_key(c, key, sizeof(key), "leader");
    struct dhaf_err err;
    struct dhaf_etcd_watch *w = dhaf_etcd_watch_new(c->etcd, key, false, rev + 1, &err);
    if (!w) {
        nap(c, 500);
        return;
    }
    while (!stopping(c)) {
        struct dhaf_etcd_events ev;
        int rc = dhaf_etcd_watch_next(w, &ev, 500, &err);
        if (rc == DHAF_ETIMEOUT) {
            /* The key we watch may be our own, from a step-down while etcd had no quorum
             * (a watch on a surviving member does not fail then): revoke it as soon as etcd
             * takes writes again, or nobody leads until its lease runs out. */
            revoke_stale(c);
            continue;
        }
        if (rc) {
            log_err("leader-watch-failed", &err);
            nap(c, 200);
            break;
        }
        bool gone = false;
        for (size_t i = 0; i < ev.n; i++)
            gone |= ev.v[i].type == DHAF_ETCD_EV_DELETE;
        dhaf_etcd_events_release(&ev);
        if (gone)
            break; /* campaign at once */
    }
    dhaf_etcd_watch_free(w);
}

/* Leader: renew at TTL/3; step down when a renewal fails or too little lease is sure. */
static void lead(struct cluster *c)
{
    pthread_mutex_lock(&c->lock);
    int64_t lease = c->leader_lease, epoch = c->epoch;
    int ttl = c->leader_ttl_s;
    pthread_mutex_unlock(&c->lock);
    int ka_ms = ttl * 1000 / 3;
    struct dhaf_etcd_keepalive *ka = dhaf_etcd_keepalive_new(c->etcd, lease);
    struct dhaf_err err;
    char key[256];
    cluster_key(c, key, sizeof(key), "leader");
    int64_t next = dhaf_mono_ms() + ka_ms;
    while (cluster_is_leader(c, NULL)) {
        int64_t wait = next - dhaf_mono_ms();
        if (wait > 0 && nap(c, wait))
            break;
        if (!cluster_is_leader(c, NULL)) {
            step_down(c, "the lease may have expired (no renewal in time)");
            break;
        }
        int64_t t_send = dhaf_mono_ms();
        int64_t got = 0;
        int rc = dhaf_etcd_keepalive_once(ka, &got, ka_ms, &err);
        if (rc != 0) {
            step_down(c, rc == DHAF_ENOTFOUND ? "the leader lease has expired"
                                              : "a keep-alive of the leader lease failed");
            if (rc != DHAF_ENOTFOUND)
                log_err("leader-keepalive-failed", &err);
            break;
        }
        /* The key itself must still be ours (someone may have deleted it). */
        struct dhaf_kvs kvs;
        rc = dhaf_etcd_get(c->etcd, key, &kvs, &err);
        bool ours = rc == 0 && kvs.n == 1 && kvs.kvs[0].create_rev == epoch;
        if (rc == 0)
            dhaf_kvs_release(&kvs);
        if (rc == 0 && !ours) {
            step_down(c, "the leader key was removed or replaced");
            break;
        }
        pthread_mutex_lock(&c->lock);
        if (c->role == ROLE_LEADER && c->epoch == epoch)
            c->valid_until = t_send + got * 1000 - ka_ms;
        pthread_mutex_unlock(&c->lock);
        next = t_send + ka_ms;
    }
    dhaf_etcd_keepalive_free(ka);
}

static void *election_thread(void *arg)
{
    struct cluster *c = arg;
    struct dhaf_err err;
    int64_t backoff = 100;
    while (!stopping(c)) {
        int64_t rev = 0;
        revoke_stale(c);
        int rc = campaign(c, &rev, &err);
        if (rc < 0) {
            pthread_mutex_lock(&c->lock);
            c->role = ROLE_FOLLOWER;
            pthread_mutex_unlock(&c->lock);
            log_err("campaign-failed", &err);
            if (nap(c, backoff))
                break;
            backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
            continue;
        }
        backoff = 100;
        if (rc == 1)
            lead(c);
        else
            follow(c, rev);
    }
    atomic_fetch_sub(&c->running, 1);
    return NULL;
}

/* ------------------------------------------------------------------ leader duties */

/* Compares alive/ with the state announced in members/ and announces the differences. */
static void reconcile_nodes(struct cluster *c)
{
    char apfx[256], mpfx[256];
    cluster_key(c, apfx, sizeof(apfx), "alive/");
    cluster_key(c, mpfx, sizeof(mpfx), "members/");
    struct dhaf_err err;
    struct dhaf_kvs alive, members;
    if (dhaf_etcd_get_prefix(c->etcd, apfx, 0, &alive, &err) != 0) {
        log_err("reconcile-failed", &err);
        return;
    }
    if (dhaf_etcd_get_prefix(c->etcd, mpfx, 0, &members, &err) != 0) {
        dhaf_kvs_release(&alive);
        log_err("reconcile-failed", &err);
        return;
    }
    for (size_t i = 0; i < members.n && cluster_is_leader(c, NULL); i++) {
        const struct dhaf_kv *m = &members.kvs[i];
        const char *name = m->key + strlen(mpfx);
        bool up = false;
        for (size_t k = 0; k < alive.n && !up; k++)
            up = strcmp(alive.kvs[k].key + strlen(apfx), name) == 0;
        json_t *j = NULL;
        if (dhaf_json_parse_object(m->value, m->value_len, m->key, &j, &err) != 0)
            j = json_object();
        const char *state = dhaf_json_str(j, "state");
        const char *now = up ? "up" : "down";
        if (state && strcmp(state, now) == 0) {
            json_decref(j);
            continue;
        }
        json_object_set_new(j, "state", json_string(now));
        json_object_set_new(j, "state_since", json_integer(dhaf_wall_ms()));
        char *text = dhaf_json_dump(j);
        json_decref(j);
        struct dhaf_etcd_cmp cmp = {
            .key = m->key, .target = DHAF_ETCD_MOD_REV, .result = DHAF_ETCD_EQ, .num = m->mod_rev};
        struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = m->key, .value = text};
        struct dhaf_etcd_txn_result res;
        int rc = cluster_txn_as_leader(c, &cmp, 1, &put, 1, &res, &err);
        free(text);
        if (rc == 0) {
            dhaf_etcd_txn_result_release(&res);
            char msg[200];
            snprintf(msg, sizeof(msg), "dhaf node %s is %s", name, up ? "UP" : "DOWN");
            struct event ev = {.kind = up ? "node-up" : "node-down",
                               .level = up ? EV_INFO : EV_WARNING,
                               .node = name,
                               .message = msg};
            event_emit(c, &ev);
        } else if (rc != DHAF_ECONFLICT) {
            log_err("node-state-not-written", &err);
        }
    }
    dhaf_kvs_release(&alive);
    dhaf_kvs_release(&members);
}

static void *duties_thread(void *arg)
{
    struct cluster *c = arg;
    struct dhaf_err err;
    char apfx[256];
    cluster_key(c, apfx, sizeof(apfx), "alive/");
    while (!stopping(c)) {
        if (!cluster_is_leader(c, NULL)) {
            nap(c, 500);
            continue;
        }
        /* Reconcile, then react to every change of alive/ (and of members/, via polling). */
        struct dhaf_etcd_watch *w = dhaf_etcd_watch_new(c->etcd, apfx, true, 0, &err);
        reconcile_nodes(c);
        int64_t last = dhaf_mono_ms();
        while (w && cluster_is_leader(c, NULL) && !stopping(c)) {
            struct dhaf_etcd_events ev;
            int rc = dhaf_etcd_watch_next(w, &ev, 500, &err);
            if (rc == 0) {
                dhaf_etcd_events_release(&ev);
                reconcile_nodes(c);
                last = dhaf_mono_ms();
            } else if (rc != DHAF_ETIMEOUT) {
                break;
            } else if (dhaf_mono_ms() - last > 5000) {
                reconcile_nodes(c); /* new members appear without an alive/ change */
                last = dhaf_mono_ms();
            }
        }
        dhaf_etcd_watch_free(w);
        if (!w)
            nap(c, 500);
    }
    atomic_fetch_sub(&c->running, 1);
    return NULL;
}

/* ------------------------------------------------------------------ lifecycle */

int cluster_start(struct cluster *c, struct dhaf_err *err)
{
    atomic_store(&c->running, 3);
    if (pthread_create(&c->t_session, NULL, session_thread, c) != 0 ||
        pthread_create(&c->t_election, NULL, election_thread, c) != 0 ||
        pthread_create(&c->t_duties, NULL, duties_thread, c) != 0)
        return dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the cluster threads");
    c->started = true;
    return 0;
}

bool cluster_stop(struct cluster *c, int deadline_ms)
{
    if (!c->started)
        return true;
    int64_t deadline = dhaf_mono_ms() + deadline_ms;
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    bool was_leader = c->role == ROLE_LEADER;
    int64_t leader_lease = c->leader_lease, session = c->session_lease;
    c->role = ROLE_FOLLOWER;
    c->valid_until = 0;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);

    /* Revoke first: the next leader can take over while our threads wind down. */
    struct dhaf_err err;
    if (leader_lease && dhaf_etcd_lease_revoke(c->etcd, leader_lease, &err) == 0)
        DHAF_LOG(DHAF_LOG_INFO, "event=leadership-released node=%s", c->node);
    if (session)
        dhaf_etcd_lease_revoke(c->etcd, session, &err);
    (void)was_leader;

    pthread_t *ts[3] = {&c->t_session, &c->t_election, &c->t_duties};
    for (int i = 0; i < 3; i++) {
        if (!dhaf_join_within(*ts[i], deadline - dhaf_mono_ms())) {
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=stop-slow node=%s note=\"a thread did not finish in "
                     "time; exiting anyway\"",
                     c->node);
            pthread_detach(*ts[i]);
        }
    }
    c->started = atomic_load(&c->running) != 0; /* detached threads still use c */
    return !c->started;
}

void cluster_free(struct cluster *c)
{
    if (!c || c->started)
        return; /* threads still running: the process is about to exit anyway */
    free(c->cluster_name);
    free(c->node);
    free(c->grpc_ep);
    free(c->rest_ep);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->wake);
    free(c);
}

int cluster_decommission(struct cluster *c, const char *node, struct dhaf_err *err)
{
    char mkey[512], akey[512], vkey[512], tmp[200];
    snprintf(tmp, sizeof(tmp), "members/%s", node);
    cluster_key(c, mkey, sizeof(mkey), tmp);
    snprintf(tmp, sizeof(tmp), "alive/%s", node);
    cluster_key(c, akey, sizeof(akey), tmp);
    snprintf(tmp, sizeof(tmp), "votes/%s", node);
    cluster_key(c, vkey, sizeof(vkey), tmp);
    /* Atomically: only a member that is not alive is removed, with its vote. */
    struct dhaf_etcd_cmp cmps[2] = {
        {.key = mkey, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_GT, .num = 0},
        {.key = akey, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_EQ, .num = 0},
    };
    struct dhaf_etcd_op del[2] = {{.type = DHAF_ETCD_OP_DELETE, .key = mkey},
                                  {.type = DHAF_ETCD_OP_DELETE, .key = vkey}};
    struct dhaf_etcd_op check[2] = {{.type = DHAF_ETCD_OP_GET, .key = mkey},
                                    {.type = DHAF_ETCD_OP_GET, .key = akey}};
    struct dhaf_etcd_txn_result res;
    int rc = dhaf_etcd_txn(c->etcd, cmps, 2, del, 2, check, 2, &res, err);
    if (rc)
        return rc;
    bool ok = res.succeeded;
    bool member = !ok && res.n_gets == 2 && res.gets[0].n == 1;
    dhaf_etcd_txn_result_release(&res);
    if (ok) {
        DHAF_LOG(DHAF_LOG_INFO, "event=node-decommissioned node=%s by=%s", node, c->node);
        return 0;
    }
    if (!member)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "there is no dhaf node named \"%s\"", node);
    return dhaf_err_set(err, DHAF_ECONFLICT,
                        "node \"%s\" is alive; only a node that is down can be decommissioned",
                        node);
}
