/* SPDX-License-Identifier: MIT */
/* gRPC API of the node: dhaf.v1.Dhaf (the operations of service.c) and dhaf.v1.Prober, beside
 * grpc.health.v1.Health (health.c: no credentials) and server reflection (reflect.c: the read
 * role), whose methods this file's table registers on the same server. A
 * remote prober authenticates with its token (or a client certificate whose CN is its name),
 * fetches the plan, and reports each round; the node validates the report against the plan
 * and writes votes/<prober> and probers/<prober> on a lease of its own for that prober
 * (3 x tact-interval), so a prober that goes quiet loses its vote by itself - only if the
 * report's seq is newer than the last one written (probers-seq/<prober>, in the same
 * transaction), so a report delayed in one node cannot overwrite a newer one. Every call runs
 * with the config snapshot current when it started; the API's lock guards only the plan and
 * the relay table in memory, never a call to etcd. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "api.h"
#include "metrics.h"
#include "service.h"
#include "suspects.h"
#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/hash.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/rpc.h"
#include "dhaf/v1/prober.pb-c.h"
#include "dhaf/valid.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "health.h"
#include "reflect.h"
#include "votes.h"

#define MAX_RELAYS    256
#define MAX_WATCHERS  16  /* probers streaming suspicions at once (a worker thread each) */
#define SUSPECT_RING  64  /* the latest suspicions, for the streams to catch up with */
#define WATCH_WAIT_MS 500 /* a stream looks at its call this often while nothing comes */

struct suspicion {
    char svc[DHAF_NAME_MAX + 1], ep[DHAF_NAME_MAX + 1], voter[DHAF_NAME_MAX + 1];
};

/* A prober's stream of suspicions: a newer stream of the same prober ends it. */
struct watcher {
    char name[DHAF_NAME_MAX + 1]; /* "": a free slot */
    uint64_t gen;
};

struct relay {
    char name[DHAF_NAME_MAX + 1];
    int64_t lease;
    struct store_keepalive *ka;
    int64_t renewed_ms; /* monotonic time of the last successful grant or renewal */
    bool busy;          /* a call is renewing or granting it (outside the lock) */
};

struct api {
    struct cluster *c;
    struct dhaf_rpc_server *srv;
    pthread_mutex_t lock; /* guards plan and relays: memory only, never held across a call */
    uint8_t *plan;        /* packed ProbePlan */
    size_t plan_len;
    uint64_t generation;
    struct relay relays[MAX_RELAYS];
    size_t n_relays;
    struct suspects *sus;  /* the probers' first failures of current entry points */
    struct health *health; /* grpc.health.v1.Health */

    /* WatchSuspects: the view's suspicions, for the probers' streams (under lock) */
    pthread_cond_t sus_cv; /* a suspicion came, a watcher was replaced, or the api stops */
    struct suspicion ring[SUSPECT_RING];
    uint64_t sus_seq; /* suspicions seen; ring[(seq - 1) % SUSPECT_RING] is the latest */
    struct watcher watchers[MAX_WATCHERS];
    uint64_t watch_gen;
    bool stopping;
};

/* ------------------------------------------------------------------ plan */

/* The plan's generation: FNV-1a from the start value the first versions used (not FNV's own
 * offset basis), so that nodes of two versions give one plan the same generation. */
static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = dhaf_fnv1a(1469598103934665603ull, p, n);
    return h ? h : 1;
}

/* Builds and packs the plan of cfg; the generation is a hash of its content. Called with the
 * lock held (memory work only). */
static void plan_build(struct api *a, const struct dhaf_config *cfg)
{
    Dhaf__V1__ProbePlan plan = DHAF__V1__PROBE_PLAN__INIT;
    plan.interval_s = (uint32_t)cfg->tact_interval;
    plan.n_services = cfg->n_services;
    plan.services = dhaf_xcalloc(cfg->n_services + 1, sizeof(*plan.services));
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct dhaf_service *s = &cfg->services[i];
        Dhaf__V1__PlanService *ps = dhaf_xcalloc(1, sizeof(*ps));
        dhaf__v1__plan_service__init(ps);
        ps->name = s->name;
        ps->domain = s->domain;
        ps->checker_type = s->checker.type;
        ps->checker_json = dhaf_section_to_json(&s->checker);
        ps->n_entry_points = s->n_eps;
        ps->entry_points = dhaf_xcalloc(s->n_eps + 1, sizeof(*ps->entry_points));
        for (size_t e = 0; e < s->n_eps; e++) {
            Dhaf__V1__PlanEntryPoint *pe = dhaf_xcalloc(1, sizeof(*pe));
            dhaf__v1__plan_entry_point__init(pe);
            pe->name = s->eps[e].name;
            pe->ip = s->eps[e].ip;
            ps->entry_points[e] = pe;
        }
        plan.services[i] = ps;
    }
    size_t len = dhaf__v1__probe_plan__get_packed_size(&plan);
    uint8_t *buf = dhaf_xmalloc(len + 1);
    dhaf__v1__probe_plan__pack(&plan, buf);
    uint64_t gen = fnv1a(buf, len);
    plan.generation = gen;
    free(buf);
    len = dhaf__v1__probe_plan__get_packed_size(&plan);
    buf = dhaf_xmalloc(len + 1);
    dhaf__v1__probe_plan__pack(&plan, buf);
    for (size_t i = 0; i < plan.n_services; i++) {
        for (size_t e = 0; e < plan.services[i]->n_entry_points; e++)
            free(plan.services[i]->entry_points[e]);
        free(plan.services[i]->entry_points);
        free(plan.services[i]->checker_json);
        free(plan.services[i]);
    }
    free(plan.services);
    free(a->plan);
    a->plan = buf;
    a->plan_len = len;
    a->generation = gen;
}

/* ------------------------------------------------------------------ prober auth */

/* Checks that the caller is prober `name`: its token, or a client certificate with CN = name. */
static int authorize(const struct dhaf_config *cfg, struct dhaf_rpc_call *call, const char *name,
                     struct dhaf_err *err)
{
    const struct dhaf_prober_cfg *p = NULL;
    for (size_t i = 0; name && i < cfg->n_probers; i++)
        if (strcmp(cfg->probers[i].name, name) == 0)
            p = &cfg->probers[i];
    int rc = 0;
    if (!p) {
        rc = dhaf_err_set(err, DHAF_EAUTH, "unknown prober \"%.64s\"", name ? name : "");
    } else {
        const char *cn = dhaf_rpc_call_peer_cn(call);
        const char *tok = dhaf_rpc_call_bearer(call);
        bool by_cert = cn && strcmp(cn, p->name) == 0;
        bool by_token = p->token && tok && dhaf_rpc_token_equal(tok, p->token);
        if (!by_cert && !by_token)
            rc = dhaf_err_set(err, DHAF_EAUTH, "%s token for prober \"%s\"",
                              tok ? "invalid" : "missing", p->name);
    }
    if (rc) {
        char q[200], r[400];
        DHAF_LOG(DHAF_LOG_WARN, "event=prober-refused prober=\"%s\" peer=%s reason=\"%s\"",
                 dhaf_log_quote(q, sizeof(q), name ? name : ""), dhaf_rpc_call_peer(call),
                 dhaf_log_quote(r, sizeof(r), err->msg));
    }
    return rc;
}

/* At most 10 refusals a second are logged by the prober checks (a flood of refused calls must
 * not flood the log); the calls are refused all the same. */
static bool refusal_log_allowed(void)
{
    static atomic_llong second;
    static atomic_int count;
    long long now = dhaf_mono_ms() / 1000;
    long long was = atomic_load(&second);
    if (now != was && atomic_compare_exchange_strong(&second, &was, now))
        atomic_store(&count, 0);
    return atomic_fetch_add(&count, 1) < 10;
}

/* Prober methods: before the message is read, the caller must hold a prober's credentials
 * (the token of a configured prober, or a client certificate whose CN is one's name); the
 * handler then checks that they are those of the prober the request names (authorize). A
 * caller without them is refused from its metadata, and its message is never received. A
 * prober says its name in "x-dhaf-prober": then the credentials must be that prober's, and a
 * refusal is logged with the name (event=prober-refused). */
static int prober_auth(void *ud, struct dhaf_rpc_call *call, struct dhaf_err *err)
{
    struct api *a = ud;
    struct snap *s = snap_get(cluster_snaps(a->c));
    const struct dhaf_config *cfg = &s->cfg;
    const char *cn = dhaf_rpc_call_peer_cn(call);
    const char *tok = dhaf_rpc_call_bearer(call);
    const char *claimed = dhaf_rpc_call_metadata(call, "x-dhaf-prober");
    bool ok = false, known = false;
    for (size_t i = 0; i < cfg->n_probers; i++) {
        const struct dhaf_prober_cfg *p = &cfg->probers[i];
        if (claimed && strcmp(claimed, p->name) != 0)
            continue;
        known = true;
        /* no early exit: every token is compared, so the time says nothing about which */
        if (cn && strcmp(cn, p->name) == 0)
            ok = true;
        if (p->token && tok && dhaf_rpc_token_equal(tok, p->token))
            ok = true;
    }
    snap_put(s);
    if (ok)
        return 0;
    int rc;
    if (!claimed)
        return dhaf_err_set(err, DHAF_EAUTH, "%s prober token",
                            tok ? "invalid" : "missing \"authorization: Bearer <token>\" with a");
    char q[200], r[400];
    if (!known)
        rc = dhaf_err_set(err, DHAF_EAUTH, "unknown prober \"%s\"",
                          dhaf_log_quote(q, sizeof(q), claimed));
    else
        rc = dhaf_err_set(err, DHAF_EAUTH, "%s token for prober \"%s\"",
                          tok ? "invalid" : "missing", dhaf_log_quote(q, sizeof(q), claimed));
    if (refusal_log_allowed())
        DHAF_LOG(DHAF_LOG_WARN, "event=prober-refused prober=\"%s\" peer=%s reason=\"%s\"",
                 dhaf_log_quote(q, sizeof(q), claimed), dhaf_rpc_call_peer(call),
                 dhaf_log_quote(r, sizeof(r), err->msg));
    return rc;
}

/* ------------------------------------------------------------------ handlers */

static int h_get_plan(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *msg,
                      struct dhaf_err *err)
{
    struct api *a = ud;
    const Dhaf__V1__GetPlanRequest *req = (const Dhaf__V1__GetPlanRequest *)msg;
    struct snap *s = snap_get(cluster_snaps(a->c));
    int rc = authorize(&s->cfg, call, req->prober, err);
    snap_put(s);
    Dhaf__V1__ProbePlan *plan = NULL;
    if (rc == 0) {
        pthread_mutex_lock(&a->lock);
        plan = dhaf__v1__probe_plan__unpack(NULL, a->plan_len, a->plan);
        pthread_mutex_unlock(&a->lock);
    }
    if (rc)
        return rc;
    if (!plan)
        return dhaf_err_set(err, DHAF_EINTERNAL, "cannot build the plan");
    char qp[200], ql[200];
    DHAF_LOG(DHAF_LOG_INFO, "event=plan-sent prober=\"%s\" location=\"%s\" generation=%llx",
             dhaf_log_quote(qp, sizeof(qp), req->prober),
             dhaf_log_quote(ql, sizeof(ql), req->location ? req->location : ""),
             (unsigned long long)plan->generation);
    rc = dhaf_rpc_send(call, &plan->base, err);
    dhaf__v1__probe_plan__free_unpacked(plan, NULL);
    return rc;
}

/* The vote lease of prober name, as this node knows it: kept while renewed within a third of
 * its TTL, renewed or granted otherwise - outside the lock; a report that finds another one
 * renewing it uses the lease as it is. adopt (nonzero): the lease the prober's vote is on in
 * etcd (another node may have granted it): renew that one. */
static int relay_lease(struct api *a, const struct dhaf_config *cfg, const char *name,
                       int64_t adopt, int64_t *lease, struct dhaf_err *err)
{
    const struct store *st = cluster_store(a->c);
    int ttl = cfg->tact_interval * VOTE_LEASE_TACTS;
    int64_t now = dhaf_mono_ms();
    pthread_mutex_lock(&a->lock);
    struct relay *r = NULL;
    for (size_t i = 0; i < a->n_relays; i++)
        if (strcmp(a->relays[i].name, name) == 0)
            r = &a->relays[i];
    if (!r) {
        if (a->n_relays == MAX_RELAYS) {
            pthread_mutex_unlock(&a->lock);
            return dhaf_err_set(err, DHAF_ETOOBIG, "too many probers relayed by this node");
        }
        r = &a->relays[a->n_relays++];
        memset(r, 0, sizeof(*r));
        snprintf(r->name, sizeof(r->name), "%s", name);
    }
    bool same = !adopt || adopt == r->lease;
    if (r->lease && same && (r->busy || now - r->renewed_ms < ttl * 1000 / 3)) {
        *lease = r->lease;
        pthread_mutex_unlock(&a->lock);
        return 0;
    }
    if (r->busy) {
        pthread_mutex_unlock(&a->lock);
        return dhaf_err_set(err, DHAF_EUNAVAILABLE, "the vote lease of %s is being renewed", name);
    }
    r->busy = true;
    int64_t old = same ? r->lease : adopt;
    struct store_keepalive *ka = same ? r->ka : NULL;
    struct store_keepalive *drop = same ? NULL : r->ka;
    pthread_mutex_unlock(&a->lock);

    if (drop)
        st->ops->keepalive_free(drop);
    if (old && !ka)
        ka = st->ops->keepalive_new(st->ud, old);
    int64_t got = 0, fresh = 0;
    int rc = DHAF_ENOTFOUND;
    if (old)
        rc = st->ops->keepalive_once(ka, &got, 1000, err);
    if (rc == 0) {
        fresh = old;
    } else if (!adopt) {
        if (ka)
            st->ops->keepalive_free(ka);
        ka = NULL;
        rc = st->ops->lease_grant(st->ud, ttl, &fresh, err);
        if (rc == 0)
            ka = st->ops->keepalive_new(st->ud, fresh);
    }
    pthread_mutex_lock(&a->lock);
    r->busy = false;
    r->ka = ka;
    r->lease = rc == 0 ? fresh : 0;
    if (rc == 0)
        r->renewed_ms = dhaf_mono_ms();
    *lease = r->lease;
    pthread_mutex_unlock(&a->lock);
    return rc;
}

/* A report that says what the prober's vote in the view says: renew the vote's lease and
 * write nothing - if etcd still holds that very vote (a read-only txn comparing its mod
 * revision: the view may lag a write another node just made). Returns true when done. */
static bool report_unchanged(struct api *a, const struct dhaf_config *cfg, const char *prober,
                             const char *vkey, const struct dhaf_probe_result *res, size_t n)
{
    struct view *v = cluster_view(a->c);
    int64_t lease = 0, rev = 0;
    view_rdlock(v);
    const struct view_vote *vv = view_vote_of(v, prober);
    if (vv && vv->ok && vv->lease && vote_same(&vv->vote, res, n)) {
        lease = vv->lease;
        rev = vv->mod_rev;
    }
    view_unlock(v);
    if (!lease)
        return false;
    const struct dhaf_etcd_cmp cmp = {
        .key = vkey, .target = DHAF_ETCD_MOD_REV, .result = DHAF_ETCD_EQ, .num = rev};
    struct dhaf_etcd_txn_result tr;
    struct dhaf_err err;
    if (store_txn(cluster_store(a->c), &cmp, 1, NULL, 0, NULL, 0, &tr, &err) != 0)
        return false;
    bool current = tr.succeeded;
    dhaf_etcd_txn_result_release(&tr);
    int64_t got = 0;
    return current && relay_lease(a, cfg, prober, lease, &got, &err) == 0;
}

/* Writes a report's keys (ops, the last one the put of skey = padded) only if its seq is newer
 * than the one stored in skey (probers-seq/<prober>): a report delayed in one node must not
 * overwrite a newer one that another node relayed. Seqs are stored as 20 zero-padded digits,
 * so etcd's byte-wise compare of values is numeric. A compare on a missing key is false in
 * etcd, so a first report (or one after the relay lease expired) is written under "the key
 * does not exist" instead. Returns 0, DHAF_ECONFLICT ("stale report ...") when the report is
 * not newer, or the store's error. */
static int report_write(const struct store *st, const char *prober, const char *skey,
                        const char *padded, const struct dhaf_etcd_op *ops, size_t n_ops,
                        struct dhaf_err *err)
{
    const struct dhaf_etcd_cmp newer = {
        .key = skey, .target = DHAF_ETCD_VALUE, .result = DHAF_ETCD_LT, .value = padded};
    const struct dhaf_etcd_cmp absent = {
        .key = skey, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_EQ, .num = 0};
    const struct dhaf_etcd_op get = {.type = DHAF_ETCD_OP_GET, .key = skey};
    const struct dhaf_etcd_cmp *cmp = &newer;
    /* a third attempt only if another node's report created or raised the key in between */
    for (int attempt = 0; attempt < 3; attempt++) {
        struct dhaf_etcd_txn_result tr;
        int rc = store_txn(st, cmp, 1, ops, n_ops, &get, 1, &tr, err);
        if (rc)
            return rc;
        bool done = tr.succeeded;
        bool present = !done && tr.n_gets && tr.gets[0].n;
        char stored[32] = "";
        if (present)
            snprintf(stored, sizeof(stored), "%.*s", (int)tr.gets[0].kvs[0].value_len,
                     tr.gets[0].kvs[0].value);
        dhaf_etcd_txn_result_release(&tr);
        if (done)
            return 0;
        if (!present) {
            cmp = &absent;
            continue;
        }
        if (strcmp(stored, padded) >= 0) {
            unsigned long long have = strtoull(stored, NULL, 10);
            unsigned long long seq = strtoull(padded, NULL, 10);
            char qp[200];
            DHAF_LOG(DHAF_LOG_INFO, "event=report-stale prober=\"%s\" seq=%llu stored_seq=%llu",
                     dhaf_log_quote(qp, sizeof(qp), prober), seq, have);
            return dhaf_err_set(err, DHAF_ECONFLICT,
                                "stale report from prober %s: seq %llu is not newer than the "
                                "stored seq %llu",
                                prober, seq, have);
        }
        cmp = &newer;
    }
    return dhaf_err_set(err, DHAF_EUNAVAILABLE,
                        "report of prober %s: its seq key kept changing; try again", prober);
}

static int h_report(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *msg,
                    struct dhaf_err *err)
{
    struct api *a = ud;
    const Dhaf__V1__ReportRequest *req = (const Dhaf__V1__ReportRequest *)msg;
    struct snap *s = snap_get(cluster_snaps(a->c));
    const struct dhaf_config *cfg = &s->cfg;
    struct dhaf_probe_result *res = NULL;
    pthread_mutex_lock(&a->lock);
    uint64_t gen = a->generation;
    pthread_mutex_unlock(&a->lock);
    int rc = authorize(cfg, call, req->prober, err);
    if (rc)
        goto out;
    if (req->generation != gen) {
        rc = dhaf_err_set(err, DHAF_ECONFLICT,
                          "plan generation %llx is old (current %llx): fetch the plan again",
                          (unsigned long long)req->generation, (unsigned long long)gen);
        goto out;
    }
    /* Every result must name an entry point of the plan; otherwise nothing is written. */
    res = vote_from_report(cfg, req, err);
    if (!res) {
        rc = DHAF_EINVAL;
        goto out;
    }
    suspects_raise(a->sus, req->prober, res, req->n_results); /* first: others start checking */
    char vkey[256], path[128];
    snprintf(path, sizeof(path), "votes/%s", req->prober);
    cluster_key(a->c, vkey, sizeof(vkey), path);
    int64_t lease = 0;
    if (rc == 0 && report_unchanged(a, cfg, req->prober, vkey, res, req->n_results))
        goto out; /* accepted: the vote in etcd says it already */
    if (rc == 0)
        rc = relay_lease(a, cfg, req->prober, 0, &lease, err);
    if (rc == 0) {
        char *vote = vote_encode(req->prober, "prober", req->seq, res, req->n_results);
        const char *location = "";
        for (size_t i = 0; i < cfg->n_probers; i++)
            if (strcmp(cfg->probers[i].name, req->prober) == 0 && cfg->probers[i].location)
                location = cfg->probers[i].location;
        const char *version = dhaf_rpc_call_metadata(call, "x-dhaf-version");
        json_t *pj = json_pack("{s:s, s:s, s:I, s:s, s:I}", "location", location, "version",
                               version ? version : "", "last_report", (json_int_t)dhaf_wall_ms(),
                               "relayed_by", cluster_node(a->c), "seq", (json_int_t)req->seq);
        char *pinfo = dhaf_json_dump(pj);
        json_decref(pj);
        char pkey[256], skey[256];
        snprintf(path, sizeof(path), "probers/%s", req->prober);
        cluster_key(a->c, pkey, sizeof(pkey), path);
        snprintf(path, sizeof(path), "probers-seq/%s", req->prober);
        cluster_key(a->c, skey, sizeof(skey), path);
        char padded[24];
        snprintf(padded, sizeof(padded), "%020llu", (unsigned long long)req->seq);
        struct dhaf_etcd_op ops[3] = {
            {.type = DHAF_ETCD_OP_PUT, .key = vkey, .value = vote, .lease = lease},
            {.type = DHAF_ETCD_OP_PUT, .key = pkey, .value = pinfo, .lease = lease},
            {.type = DHAF_ETCD_OP_PUT, .key = skey, .value = padded, .lease = lease},
        };
        rc = report_write(cluster_store(a->c), req->prober, skey, padded, ops, 3, err);
        free(vote);
        free(pinfo);
    }
out:
    free(res);
    snap_put(s);
    if (rc)
        return rc;
    metrics_prober_report(req->prober);
    Dhaf__V1__ReportResponse resp = DHAF__V1__REPORT_RESPONSE__INIT;
    resp.accepted = 1;
    resp.generation = gen;
    return dhaf_rpc_send(call, &resp.base, err);
}

/* A suspicion in the view (the view's thread): kept for the probers' streams. */
static void on_suspect(void *ud, const char *svc, const char *ep, const char *voter)
{
    struct api *a = ud;
    pthread_mutex_lock(&a->lock);
    struct suspicion *x = &a->ring[a->sus_seq++ % SUSPECT_RING];
    snprintf(x->svc, sizeof(x->svc), "%s", svc);
    snprintf(x->ep, sizeof(x->ep), "%s", ep);
    snprintf(x->voter, sizeof(x->voter), "%s", voter);
    pthread_cond_broadcast(&a->sus_cv);
    pthread_mutex_unlock(&a->lock);
}

/* Takes a watcher slot for prober (its own, or a free one): the stream's generation, or 0 when
 * every slot is taken by other probers. Lock held. */
static uint64_t watcher_claim(struct api *a, const char *prober)
{
    struct watcher *w = NULL;
    for (size_t i = 0; i < MAX_WATCHERS && !w; i++)
        if (strcmp(a->watchers[i].name, prober) == 0)
            w = &a->watchers[i];
    for (size_t i = 0; i < MAX_WATCHERS && !w; i++)
        if (!a->watchers[i].name[0])
            w = &a->watchers[i];
    if (!w)
        return 0;
    snprintf(w->name, sizeof(w->name), "%s", prober);
    w->gen = ++a->watch_gen;
    pthread_cond_broadcast(&a->sus_cv); /* an older stream of the prober ends */
    return w->gen;
}

/* Whether the stream gen is still the prober's current one; false also frees nothing. */
static bool watcher_current(const struct api *a, uint64_t gen)
{
    for (size_t i = 0; i < MAX_WATCHERS; i++)
        if (a->watchers[i].gen == gen && a->watchers[i].name[0])
            return true;
    return false;
}

static void watcher_release(struct api *a, uint64_t gen)
{
    for (size_t i = 0; i < MAX_WATCHERS; i++)
        if (a->watchers[i].gen == gen)
            a->watchers[i].name[0] = 0;
}

static int h_watch_suspects(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *msg,
                            struct dhaf_err *err)
{
    struct api *a = ud;
    const Dhaf__V1__WatchSuspectsRequest *req = (const Dhaf__V1__WatchSuspectsRequest *)msg;
    struct snap *s = snap_get(cluster_snaps(a->c));
    int rc = authorize(&s->cfg, call, req->prober, err);
    snap_put(s);
    if (rc)
        return rc;
    pthread_mutex_lock(&a->lock);
    uint64_t gen = a->stopping ? 0 : watcher_claim(a, req->prober);
    uint64_t seen = a->sus_seq; /* from now on */
    pthread_mutex_unlock(&a->lock);
    if (!gen)
        return dhaf_err_set(err, DHAF_ETOOBIG, "%d probers already watch suspicions here",
                            MAX_WATCHERS);
    DHAF_LOG(DHAF_LOG_DEBUG, "event=suspects-watch-start prober=%s", req->prober);
    for (;;) {
        /* the stream ends a little before its deadline, so that the prober sees an end, not
         * a deadline error */
        if (dhaf_rpc_call_cancelled(call) || dhaf_rpc_call_remaining_ms(call) < 2 * WATCH_WAIT_MS)
            break;
        struct suspicion batch[8];
        size_t n = 0;
        pthread_mutex_lock(&a->lock);
        if (a->sus_seq == seen && !a->stopping && watcher_current(a, gen)) {
            dhaf_cond_wait_until(&a->sus_cv, &a->lock, dhaf_mono_ms() + WATCH_WAIT_MS);
        }
        bool over = a->stopping || !watcher_current(a, gen);
        if (a->sus_seq - seen > SUSPECT_RING) /* too slow a reader: the oldest are gone */
            seen = a->sus_seq - SUSPECT_RING;
        for (; !over && seen < a->sus_seq && n < sizeof(batch) / sizeof(batch[0]); seen++)
            batch[n++] = a->ring[seen % SUSPECT_RING];
        pthread_mutex_unlock(&a->lock);
        if (over)
            break;
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (strcmp(batch[i].voter, req->prober) == 0)
                continue; /* its own */
            Dhaf__V1__Suspicion m = DHAF__V1__SUSPICION__INIT;
            m.service = batch[i].svc;
            m.entry_point = batch[i].ep;
            m.voter = batch[i].voter;
            rc = dhaf_rpc_send(call, &m.base, err);
        }
        if (rc)
            break;
    }
    pthread_mutex_lock(&a->lock);
    watcher_release(a, gen);
    pthread_mutex_unlock(&a->lock);
    DHAF_LOG(DHAF_LOG_DEBUG, "event=suspects-watch-end prober=%s", req->prober);
    return rc == DHAF_ECANCELLED ? 0 : rc;
}

/* ------------------------------------------------------------------ dhaf.v1.Dhaf */

/* The caller of a Dhaf method (access.h), from its metadata and certificate. */
static int caller(struct api *a, struct dhaf_rpc_call *call, struct access_who *who,
                  struct dhaf_err *err)
{
    struct snap *s = snap_get(cluster_snaps(a->c));
    struct access_creds cr = {.token = dhaf_rpc_call_bearer(call),
                              .cn = dhaf_rpc_call_peer_cn(call),
                              .client_ca = s->cfg.grpc_api.tls.ca_file != NULL};
    int rc = access_identify(&s->cfg, &cr, who, err);
    snap_put(s);
    return rc;
}

/* Before the message is read: the caller must be known and hold the method's role. */
static int role_auth(void *ud, struct dhaf_rpc_call *call, enum access_role need,
                     struct dhaf_err *err)
{
    struct access_who who;
    int rc = caller(ud, call, &who, err);
    if (rc == 0)
        rc = access_allow(&who, need, need == ACCESS_ADMIN ? "a change" : "a read", err);
    return rc;
}

static int read_auth(void *ud, struct dhaf_rpc_call *call, struct dhaf_err *err)
{
    return role_auth(ud, call, ACCESS_READ, err);
}

static int admin_auth(void *ud, struct dhaf_rpc_call *call, struct dhaf_err *err)
{
    return role_auth(ud, call, ACCESS_ADMIN, err);
}

/* A change's actor for the audit trail; comment is the request's own words (checked: at most
 * 128 bytes of printable UTF-8, since it lands in events, logs and notifications). The
 * strings live in who and peer. */
static int actor_of(struct api *a, struct dhaf_rpc_call *call, const char *comment,
                    struct access_who *who, char *peer, size_t peer_len, struct event_actor *out,
                    struct dhaf_err *err)
{
    int rc = caller(a, call, who, err);
    if (rc)
        return rc;
    if (comment && !dhaf_valid_comment(comment))
        return dhaf_err_set(err, DHAF_EINVAL,
                            "requested_by: at most 128 bytes of UTF-8 text without control "
                            "characters");
    access_peer_addr(dhaf_rpc_call_peer(call), peer, peer_len);
    *out = (struct event_actor){
        .name = who->name, .role = access_role_name(who->role), .peer = peer, .comment = comment};
    return 0;
}

/* The Dhaf methods: decode, call the shared operation (service.c) with the current config
 * snapshot, send the reply. Generated by one macro so every method is the same plumbing (the
 * macro hides no control flow: it defines a function). */
#define DHAF_METHOD(fn, Req, call_expr)                                                            \
    static int fn(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *msg,               \
                  struct dhaf_err *err)                                                            \
    {                                                                                              \
        struct api *a = ud;                                                                        \
        const Req *req = (const Req *)msg;                                                         \
        (void)req;                                                                                 \
        ProtobufCMessage *resp = NULL;                                                             \
        struct snap *snap = snap_get(cluster_snaps(a->c));                                         \
        struct svc_env env = {a->c, &snap->cfg, NULL};                                             \
        int rc = (call_expr);                                                                      \
        snap_put(snap);                                                                            \
        if (rc)                                                                                    \
            return rc;                                                                             \
        rc = dhaf_rpc_send(call, resp, err);                                                       \
        protobuf_c_message_free_unpacked(resp, NULL);                                              \
        return rc;                                                                                 \
    }

DHAF_METHOD(h_cluster, Dhaf__V1__GetClusterStatusRequest,
            svc_cluster_status(&env, (Dhaf__V1__ClusterStatus **)&resp, err))
DHAF_METHOD(h_services, Dhaf__V1__ListServicesRequest,
            svc_list_services(&env, (Dhaf__V1__ListServicesResponse **)&resp, err))
DHAF_METHOD(h_service, Dhaf__V1__GetServiceRequest,
            svc_get_service(&env, req->service, (Dhaf__V1__ServiceStatus **)&resp, err))
DHAF_METHOD(h_candidates, Dhaf__V1__GetSwitchoverCandidatesRequest,
            svc_candidates(&env, req->service, (Dhaf__V1__SwitchoverCandidates **)&resp, err))
/* The changes run with the caller as env.actor; the identity is taken again from the call
 * (its auth hook already let it in). */
static int with_actor(struct api *a, struct dhaf_rpc_call *call, const char *comment,
                      struct svc_env *env,
                      int (*op)(struct svc_env *env, const void *req, ProtobufCMessage **resp,
                                struct dhaf_err *err),
                      const void *req, ProtobufCMessage **resp, struct dhaf_err *err)
{
    struct access_who who;
    struct event_actor actor;
    char peer[80];
    int rc = actor_of(a, call, comment, &who, peer, sizeof(peer), &actor, err);
    if (rc)
        return rc;
    env->actor = &actor;
    rc = op(env, req, resp, err);
    env->actor = NULL;
    return rc;
}

static int op_switchover(struct svc_env *env, const void *r, ProtobufCMessage **resp,
                         struct dhaf_err *err)
{
    const Dhaf__V1__SwitchoverRequest *req = r;
    return svc_switchover(env, req->service, req->entry_point,
                          (Dhaf__V1__SwitchoverResponse **)resp, err);
}

static int op_purge(struct svc_env *env, const void *r, ProtobufCMessage **resp,
                    struct dhaf_err *err)
{
    const Dhaf__V1__PurgeSwitchoverRequest *req = r;
    return svc_purge(env, req->service, (Dhaf__V1__PurgeSwitchoverResponse **)resp, err);
}

static int op_decommission(struct svc_env *env, const void *r, ProtobufCMessage **resp,
                           struct dhaf_err *err)
{
    const Dhaf__V1__DecommissionNodeRequest *req = r;
    return svc_decommission(env, req->name, (Dhaf__V1__DecommissionNodeResponse **)resp, err);
}

static int op_drain(struct svc_env *env, const void *r, ProtobufCMessage **resp,
                    struct dhaf_err *err)
{
    const Dhaf__V1__DrainRequest *req = r;
    return svc_drain(env, req->service, req->entry_point, true, (Dhaf__V1__DrainResponse **)resp,
                     err);
}

static int op_undrain(struct svc_env *env, const void *r, ProtobufCMessage **resp,
                      struct dhaf_err *err)
{
    const Dhaf__V1__DrainRequest *req = r;
    return svc_drain(env, req->service, req->entry_point, false, (Dhaf__V1__DrainResponse **)resp,
                     err);
}

static int op_pause(struct svc_env *env, const void *r, ProtobufCMessage **resp,
                    struct dhaf_err *err)
{
    (void)r;
    return svc_pause(env, true, (Dhaf__V1__PauseResponse **)resp, err);
}

static int op_resume(struct svc_env *env, const void *r, ProtobufCMessage **resp,
                     struct dhaf_err *err)
{
    (void)r;
    return svc_pause(env, false, (Dhaf__V1__PauseResponse **)resp, err);
}

DHAF_METHOD(h_drain, Dhaf__V1__DrainRequest,
            with_actor(a, call, req->comment, &env, op_drain, req, &resp, err))
DHAF_METHOD(h_undrain, Dhaf__V1__DrainRequest,
            with_actor(a, call, req->comment, &env, op_undrain, req, &resp, err))
DHAF_METHOD(h_pause, Dhaf__V1__PauseRequest,
            with_actor(a, call, req->comment, &env, op_pause, req, &resp, err))
DHAF_METHOD(h_resume, Dhaf__V1__PauseRequest,
            with_actor(a, call, req->comment, &env, op_resume, req, &resp, err))
DHAF_METHOD(h_switchover, Dhaf__V1__SwitchoverRequest,
            with_actor(a, call, req->requested_by, &env, op_switchover, req, &resp, err))
DHAF_METHOD(h_purge, Dhaf__V1__PurgeSwitchoverRequest,
            with_actor(a, call, NULL, &env, op_purge, req, &resp, err))
DHAF_METHOD(h_decommission, Dhaf__V1__DecommissionNodeRequest,
            with_actor(a, call, NULL, &env, op_decommission, req, &resp, err))
DHAF_METHOD(h_events, Dhaf__V1__ListEventsRequest,
            svc_events(&env, req->service, req->limit, (Dhaf__V1__ListEventsResponse **)&resp, err))
DHAF_METHOD(h_version, Dhaf__V1__GetVersionRequest,
            svc_version(&env, (Dhaf__V1__VersionInfo **)&resp, err))

static const struct dhaf_rpc_method methods_tpl[] = {
    {"/dhaf.v1.Dhaf/GetClusterStatus", &dhaf__v1__get_cluster_status_request__descriptor, false,
     h_cluster, read_auth, NULL},
    {"/dhaf.v1.Dhaf/ListServices", &dhaf__v1__list_services_request__descriptor, false, h_services,
     read_auth, NULL},
    {"/dhaf.v1.Dhaf/GetService", &dhaf__v1__get_service_request__descriptor, false, h_service,
     read_auth, NULL},
    {"/dhaf.v1.Dhaf/GetSwitchoverCandidates",
     &dhaf__v1__get_switchover_candidates_request__descriptor, false, h_candidates, read_auth,
     NULL},
    {"/dhaf.v1.Dhaf/Switchover", &dhaf__v1__switchover_request__descriptor, false, h_switchover,
     admin_auth, NULL},
    {"/dhaf.v1.Dhaf/PurgeSwitchover", &dhaf__v1__purge_switchover_request__descriptor, false,
     h_purge, admin_auth, NULL},
    {"/dhaf.v1.Dhaf/DecommissionNode", &dhaf__v1__decommission_node_request__descriptor, false,
     h_decommission, admin_auth, NULL},
    {"/dhaf.v1.Dhaf/ListEvents", &dhaf__v1__list_events_request__descriptor, false, h_events,
     read_auth, NULL},
    {"/dhaf.v1.Dhaf/GetVersion", &dhaf__v1__get_version_request__descriptor, false, h_version,
     read_auth, NULL},
    {"/dhaf.v1.Dhaf/DrainEntryPoint", &dhaf__v1__drain_request__descriptor, false, h_drain,
     admin_auth, NULL},
    {"/dhaf.v1.Dhaf/UndrainEntryPoint", &dhaf__v1__drain_request__descriptor, false, h_undrain,
     admin_auth, NULL},
    {"/dhaf.v1.Dhaf/Pause", &dhaf__v1__pause_request__descriptor, false, h_pause, admin_auth, NULL},
    {"/dhaf.v1.Dhaf/Resume", &dhaf__v1__pause_request__descriptor, false, h_resume, admin_auth,
     NULL},
    {"/dhaf.v1.Prober/GetPlan", &dhaf__v1__get_plan_request__descriptor, false, h_get_plan,
     prober_auth, NULL},
    {"/dhaf.v1.Prober/Report", &dhaf__v1__report_request__descriptor, false, h_report, prober_auth,
     NULL},
    {"/dhaf.v1.Prober/WatchSuspects", &dhaf__v1__watch_suspects_request__descriptor, true,
     h_watch_suspects, prober_auth, NULL},
    /* health: no credentials (probes send none); ud is the struct health (api_start) */
    {"/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor, false,
     health_check, health_auth, NULL},
    {"/grpc.health.v1.Health/Watch", &grpc__health__v1__health_check_request__descriptor, true,
     health_watch, health_auth, NULL},
    /* reflection: the read role, as the API's other reads; both packages decode as v1 (the
     * same messages on the wire) */
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
     &grpc__reflection__v1__server_reflection_request__descriptor, DHAF_RPC_BIDI, reflect_handler,
     read_auth, NULL},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
     &grpc__reflection__v1__server_reflection_request__descriptor, DHAF_RPC_BIDI, reflect_handler,
     read_auth, NULL},
};

#define N_METHODS (sizeof(methods_tpl) / sizeof(methods_tpl[0]))
static struct dhaf_rpc_method methods[N_METHODS];

/* The largest request each method takes (parallel to methods_tpl): the Dhaf requests and
 * GetPlan carry a few names; a Report carries up to VOTE_MAX_RESULTS results. */
#define SMALL_REQUEST (64 * 1024)
static size_t methods_max[N_METHODS]; /* filled by api_start */

/* ------------------------------------------------------------------ lifecycle */

struct api *api_start(struct cluster *c, struct dhaf_err *err)
{
    struct api *a = dhaf_xcalloc(1, sizeof(*a));
    a->c = c;
    a->sus = suspects_new(c);
    a->health = health_new(c);
    pthread_mutex_init(&a->lock, NULL);
    dhaf_cond_init_mono(&a->sus_cv);
    struct snap *s = snap_get(cluster_snaps(c));
    const struct dhaf_config *cfg = &s->cfg;
    plan_build(a, cfg);
    for (size_t i = 0; i < N_METHODS; i++) {
        methods[i] = methods_tpl[i];
        methods[i].ud = methods[i].auth == health_auth ? (void *)a->health : (void *)a;
        methods_max[i] = methods[i].handler == h_report ? 4 * 1024 * 1024 : SMALL_REQUEST;
    }
    char addr[300];
    snprintf(addr, sizeof(addr), strchr(cfg->grpc_api.host, ':') ? "[%s]:%d" : "%s:%d",
             cfg->grpc_api.host, cfg->grpc_api.port);
    struct dhaf_rpc_server_opts o = {
        .addr = addr,
        .tls = {.tls = cfg->grpc_api.tls.cert_file != NULL,
                .cert_file = cfg->grpc_api.tls.cert_file,
                .key_file = cfg->grpc_api.tls.key_file,
                .ca_file = cfg->grpc_api.tls.ca_file},
        .method_max_bytes = methods_max,
        /* the default pool, and a thread for each prober's stream of suspicions, health
         * watch and reflection stream */
        .workers = 8 + (int)(cfg->n_probers < MAX_WATCHERS ? cfg->n_probers : MAX_WATCHERS) +
                   HEALTH_MAX_WATCHES + REFLECT_MAX_STREAMS,
    };
    a->srv = dhaf_rpc_server_start(&o, methods, N_METHODS, err);
    snap_put(s);
    if (!a->srv) {
        free(a->plan);
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->sus_cv);
        suspects_free(a->sus);
        health_free(a->health);
        free(a);
        return NULL;
    }
    view_on_suspect(cluster_view(c), on_suspect, a);
    DHAF_LOG(DHAF_LOG_INFO, "event=grpc-listening addr=%s tls=%s plan_generation=%llx", addr,
             o.tls.tls ? "on" : "off", (unsigned long long)a->generation);
    return a;
}

void api_reload(struct api *a)
{
    struct snap *s = snap_get(cluster_snaps(a->c));
    pthread_mutex_lock(&a->lock);
    uint64_t old = a->generation;
    plan_build(a, &s->cfg);
    uint64_t gen = a->generation;
    pthread_mutex_unlock(&a->lock);
    snap_put(s);
    if (old != gen)
        DHAF_LOG(DHAF_LOG_INFO, "event=plan-changed generation=%llx", (unsigned long long)gen);
}

bool api_stop(struct api *a, int deadline_ms)
{
    if (!a)
        return true;
    view_off_suspect(cluster_view(a->c), on_suspect, a);
    pthread_mutex_lock(&a->lock);
    a->stopping = true; /* the streams end */
    pthread_cond_broadcast(&a->sus_cv);
    pthread_mutex_unlock(&a->lock);
    health_stop(a->health); /* not serving from now on; its watches end */
    if (!dhaf_rpc_server_stop_within(a->srv, deadline_ms))
        return false; /* a call may still use a: left to the process exit */
    /* The probers' votes stay on their leases: a prober reports to another node, which renews
     * them; a prober that is gone too loses its vote when the lease expires. */
    const struct store *st = cluster_store(a->c);
    for (size_t i = 0; i < a->n_relays; i++)
        if (a->relays[i].ka)
            st->ops->keepalive_free(a->relays[i].ka);
    free(a->plan);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->sus_cv);
    suspects_free(a->sus);
    health_free(a->health);
    free(a);
    return true;
}
