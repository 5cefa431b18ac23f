/* SPDX-License-Identifier: MIT */
/* gRPC API of the node: the Prober service. A remote prober authenticates with its token (or
 * a client certificate whose CN is its name), fetches the plan, and reports each round; the
 * node validates the report against the plan and writes votes/<prober> and probers/<prober>
 * on a lease of its own for that prober (3 x tact-interval), so a prober that goes quiet
 * loses its vote by itself. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "service.h"
#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/rpc.h"
#include "dhaf/v1/prober.pb-c.h"
#include "dhaf/valid.h"
#include "votes.h"

#define MAX_RELAYS 256

struct relay {
    char name[DHAF_NAME_MAX + 1];
    int64_t lease;
    struct dhaf_etcd_keepalive *ka;
};

struct api {
    struct cluster *c;
    struct dhaf_rpc_server *srv;
    pthread_mutex_t lock; /* guards cfg, plan, relays */
    const struct dhaf_config *cfg;
    uint8_t *plan; /* packed ProbePlan */
    size_t plan_len;
    uint64_t generation;
    struct relay relays[MAX_RELAYS];
    size_t n_relays;
};

/* ------------------------------------------------------------------ plan */

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

/* Builds and packs the plan of cfg; the generation is a hash of its content. */
static void plan_build(struct api *a)
{
    const struct dhaf_config *cfg = a->cfg;
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

uint64_t api_plan_generation(struct api *a)
{
    pthread_mutex_lock(&a->lock);
    uint64_t g = a->generation;
    pthread_mutex_unlock(&a->lock);
    return g;
}

/* ------------------------------------------------------------------ prober auth */

/* Checks that the caller is prober `name`: its token, or a client certificate with CN = name.
 * Called with the lock held. */
static int authorize(struct api *a, struct dhaf_rpc_call *call, const char *name,
                     struct dhaf_err *err)
{
    const struct dhaf_prober_cfg *p = NULL;
    for (size_t i = 0; name && i < a->cfg->n_probers; i++)
        if (strcmp(a->cfg->probers[i].name, name) == 0)
            p = &a->cfg->probers[i];
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

/* Prober methods check their caller themselves (the token depends on the prober named). */
static int open_auth(void *ud, struct dhaf_rpc_call *call, struct dhaf_err *err)
{
    (void)ud;
    (void)call;
    (void)err;
    return 0;
}

/* ------------------------------------------------------------------ handlers */

static int h_get_plan(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *msg,
                      struct dhaf_err *err)
{
    struct api *a = ud;
    const Dhaf__V1__GetPlanRequest *req = (const Dhaf__V1__GetPlanRequest *)msg;
    pthread_mutex_lock(&a->lock);
    int rc = authorize(a, call, req->prober, err);
    Dhaf__V1__ProbePlan *plan = NULL;
    if (rc == 0)
        plan = dhaf__v1__probe_plan__unpack(NULL, a->plan_len, a->plan);
    pthread_mutex_unlock(&a->lock);
    if (rc)
        return rc;
    if (!plan)
        return dhaf_err_set(err, DHAF_EINTERNAL, "cannot build the plan");
    DHAF_LOG(DHAF_LOG_INFO, "event=plan-sent prober=%s location=\"%.64s\" generation=%llx",
             req->prober, req->location ? req->location : "", (unsigned long long)plan->generation);
    rc = dhaf_rpc_send(call, &plan->base, err);
    dhaf__v1__probe_plan__free_unpacked(plan, NULL);
    return rc;
}

/* The relay lease of prober name, renewed or granted. Called with the lock held. */
static int relay_lease(struct api *a, const char *name, int64_t *lease, struct dhaf_err *err)
{
    struct dhaf_etcd *etcd = cluster_etcd(a->c);
    int ttl = a->cfg->tact_interval * 3;
    if (ttl < 3)
        ttl = 3;
    struct relay *r = NULL;
    for (size_t i = 0; i < a->n_relays; i++)
        if (strcmp(a->relays[i].name, name) == 0)
            r = &a->relays[i];
    if (r && r->lease) {
        int64_t left = 0;
        if (dhaf_etcd_keepalive_once(r->ka, &left, 1000, err) == 0) {
            *lease = r->lease;
            return 0;
        }
        dhaf_etcd_keepalive_free(r->ka);
        r->ka = NULL;
        r->lease = 0;
    }
    if (!r) {
        if (a->n_relays == MAX_RELAYS)
            return dhaf_err_set(err, DHAF_ETOOBIG, "too many probers relayed by this node");
        r = &a->relays[a->n_relays++];
        memset(r, 0, sizeof(*r));
        snprintf(r->name, sizeof(r->name), "%s", name);
    }
    int rc = dhaf_etcd_lease_grant(etcd, ttl, &r->lease, NULL, err);
    if (rc)
        return rc;
    r->ka = dhaf_etcd_keepalive_new(etcd, r->lease);
    *lease = r->lease;
    return 0;
}

static int h_report(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *msg,
                    struct dhaf_err *err)
{
    struct api *a = ud;
    const Dhaf__V1__ReportRequest *req = (const Dhaf__V1__ReportRequest *)msg;
    pthread_mutex_lock(&a->lock);
    int rc = authorize(a, call, req->prober, err);
    if (rc)
        goto out;
    if (req->generation != a->generation) {
        rc = dhaf_err_set(err, DHAF_ECONFLICT,
                          "plan generation %llx is old (current %llx): fetch the plan again",
                          (unsigned long long)req->generation, (unsigned long long)a->generation);
        goto out;
    }
    if (req->n_results > VOTE_MAX_RESULTS) {
        rc = dhaf_err_set(err, DHAF_EINVAL, "%zu results; at most %d", req->n_results,
                          VOTE_MAX_RESULTS);
        goto out;
    }
    /* Every result must name an entry point of the plan; otherwise nothing is written. */
    struct dhaf_probe_result *res = dhaf_xcalloc(req->n_results + 1, sizeof(*res));
    for (size_t i = 0; i < req->n_results && rc == 0; i++) {
        const Dhaf__V1__CheckResult *r = req->results[i];
        const struct dhaf_service *s = dhaf_config_service(a->cfg, r->service);
        if (!s || dhaf_service_ep_index(s, r->entry_point) < 0) {
            rc =
                dhaf_err_set(err, DHAF_EINVAL, "result %zu: no entry point %.64s/%.64s in the plan",
                             i, r->service, r->entry_point);
            break;
        }
        if (strlen(r->reason) > 32) {
            rc = dhaf_err_set(err, DHAF_EINVAL, "result %zu: reason code longer than 32", i);
            break;
        }
        res[i].service = r->service;
        res[i].ep = r->entry_point;
        res[i].healthy = r->healthy;
        res[i].reason = r->reason;
        snprintf(res[i].text, sizeof(res[i].text), "%s", r->reason_text);
        res[i].latency_ms = r->latency_ms;
    }
    int64_t lease = 0;
    if (rc == 0)
        rc = relay_lease(a, req->prober, &lease, err);
    if (rc == 0) {
        char *vote = vote_encode(req->prober, "prober", req->seq, res, req->n_results);
        const char *location = "";
        for (size_t i = 0; i < a->cfg->n_probers; i++)
            if (strcmp(a->cfg->probers[i].name, req->prober) == 0 && a->cfg->probers[i].location)
                location = a->cfg->probers[i].location;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        json_t *pj = json_pack("{s:s, s:s, s:I, s:s, s:I}", "location", location, "version",
                               dhaf_rpc_call_metadata(call, "x-dhaf-version")
                                   ? dhaf_rpc_call_metadata(call, "x-dhaf-version")
                                   : "",
                               "last_report", (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                               "relayed_by", cluster_node(a->c), "seq", (json_int_t)req->seq);
        char *pinfo = dhaf_json_dump(pj);
        json_decref(pj);
        char vkey[256], pkey[256], path[128];
        snprintf(path, sizeof(path), "votes/%s", req->prober);
        cluster_key(a->c, vkey, sizeof(vkey), path);
        snprintf(path, sizeof(path), "probers/%s", req->prober);
        cluster_key(a->c, pkey, sizeof(pkey), path);
        struct dhaf_etcd_op ops[2] = {
            {.type = DHAF_ETCD_OP_PUT, .key = vkey, .value = vote, .lease = lease},
            {.type = DHAF_ETCD_OP_PUT, .key = pkey, .value = pinfo, .lease = lease},
        };
        struct dhaf_etcd_txn_result tr;
        rc = dhaf_etcd_txn(cluster_etcd(a->c), NULL, 0, ops, 2, NULL, 0, &tr, err);
        if (rc == 0)
            dhaf_etcd_txn_result_release(&tr);
        free(vote);
        free(pinfo);
    }
    free(res);
out:;
    uint64_t gen = a->generation;
    pthread_mutex_unlock(&a->lock);
    if (rc)
        return rc;
    Dhaf__V1__ReportResponse resp = DHAF__V1__REPORT_RESPONSE__INIT;
    resp.accepted = 1;
    resp.generation = gen;
    return dhaf_rpc_send(call, &resp.base, err);
}

/* ------------------------------------------------------------------ dhaf.v1.Dhaf */

/* The Dhaf methods: decode, call the shared operation (service.c) with the current config,
 * send the reply. Generated by one macro so every method is the same plumbing. */
#define DHAF_METHOD(fn, Req, call_expr)                                                            \
    static int fn(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *msg,               \
                  struct dhaf_err *err)                                                            \
    {                                                                                              \
        struct api *a = ud;                                                                        \
        const Req *req = (const Req *)msg;                                                         \
        (void)req;                                                                                 \
        ProtobufCMessage *resp = NULL;                                                             \
        pthread_mutex_lock(&a->lock);                                                              \
        struct svc_env env = {a->c, a->cfg};                                                       \
        int rc = (call_expr);                                                                      \
        pthread_mutex_unlock(&a->lock);                                                            \
        if (rc)                                                                                    \
            return rc;                                                                             \
        rc = dhaf_rpc_send(call, resp, err);                                                       \
        protobuf_c_message_free_unpacked(resp, NULL);                                              \
        return rc;                                                                                 \
    }

/* who asked, for the audit trail: the request's own field, else the peer address */
static const char *requester(const char *given, struct dhaf_rpc_call *call)
{
    return given && *given ? given : dhaf_rpc_call_peer(call);
}

DHAF_METHOD(h_cluster, Dhaf__V1__GetClusterStatusRequest,
            svc_cluster_status(&env, (Dhaf__V1__ClusterStatus **)&resp, err))
DHAF_METHOD(h_services, Dhaf__V1__ListServicesRequest,
            svc_list_services(&env, (Dhaf__V1__ListServicesResponse **)&resp, err))
DHAF_METHOD(h_service, Dhaf__V1__GetServiceRequest,
            svc_get_service(&env, req->service, (Dhaf__V1__ServiceStatus **)&resp, err))
DHAF_METHOD(h_candidates, Dhaf__V1__GetSwitchoverCandidatesRequest,
            svc_candidates(&env, req->service, (Dhaf__V1__SwitchoverCandidates **)&resp, err))
DHAF_METHOD(h_switchover, Dhaf__V1__SwitchoverRequest,
            svc_switchover(&env, req->service, req->entry_point, requester(req->requested_by, call),
                           (Dhaf__V1__SwitchoverResponse **)&resp, err))
DHAF_METHOD(h_purge, Dhaf__V1__PurgeSwitchoverRequest,
            svc_purge(&env, req->service, (Dhaf__V1__PurgeSwitchoverResponse **)&resp, err))
DHAF_METHOD(h_decommission, Dhaf__V1__DecommissionNodeRequest,
            svc_decommission(&env, req->name, (Dhaf__V1__DecommissionNodeResponse **)&resp, err))
DHAF_METHOD(h_events, Dhaf__V1__ListEventsRequest,
            svc_events(&env, req->service, req->limit, (Dhaf__V1__ListEventsResponse **)&resp, err))
DHAF_METHOD(h_version, Dhaf__V1__GetVersionRequest,
            svc_version(&env, (Dhaf__V1__VersionInfo **)&resp, err))

static const struct dhaf_rpc_method methods_tpl[] = {
    {"/dhaf.v1.Dhaf/GetClusterStatus", &dhaf__v1__get_cluster_status_request__descriptor, false,
     h_cluster, NULL, NULL},
    {"/dhaf.v1.Dhaf/ListServices", &dhaf__v1__list_services_request__descriptor, false, h_services,
     NULL, NULL},
    {"/dhaf.v1.Dhaf/GetService", &dhaf__v1__get_service_request__descriptor, false, h_service, NULL,
     NULL},
    {"/dhaf.v1.Dhaf/GetSwitchoverCandidates",
     &dhaf__v1__get_switchover_candidates_request__descriptor, false, h_candidates, NULL, NULL},
    {"/dhaf.v1.Dhaf/Switchover", &dhaf__v1__switchover_request__descriptor, false, h_switchover,
     NULL, NULL},
    {"/dhaf.v1.Dhaf/PurgeSwitchover", &dhaf__v1__purge_switchover_request__descriptor, false,
     h_purge, NULL, NULL},
    {"/dhaf.v1.Dhaf/DecommissionNode", &dhaf__v1__decommission_node_request__descriptor, false,
     h_decommission, NULL, NULL},
    {"/dhaf.v1.Dhaf/ListEvents", &dhaf__v1__list_events_request__descriptor, false, h_events, NULL,
     NULL},
    {"/dhaf.v1.Dhaf/GetVersion", &dhaf__v1__get_version_request__descriptor, false, h_version, NULL,
     NULL},
    {"/dhaf.v1.Prober/GetPlan", &dhaf__v1__get_plan_request__descriptor, false, h_get_plan,
     open_auth, NULL},
    {"/dhaf.v1.Prober/Report", &dhaf__v1__report_request__descriptor, false, h_report, open_auth,
     NULL},
};

#define N_METHODS (sizeof(methods_tpl) / sizeof(methods_tpl[0]))
static struct dhaf_rpc_method methods[N_METHODS];

/* ------------------------------------------------------------------ lifecycle */

struct api *api_start(struct cluster *c, const struct dhaf_config *cfg, struct dhaf_err *err)
{
    struct api *a = dhaf_xcalloc(1, sizeof(*a));
    a->c = c;
    a->cfg = cfg;
    pthread_mutex_init(&a->lock, NULL);
    plan_build(a);
    for (size_t i = 0; i < N_METHODS; i++) {
        methods[i] = methods_tpl[i];
        methods[i].ud = a;
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
        .bearer_token = cfg->api_token,
    };
    a->srv = dhaf_rpc_server_start(&o, methods, N_METHODS, err);
    if (!a->srv) {
        free(a->plan);
        pthread_mutex_destroy(&a->lock);
        free(a);
        return NULL;
    }
    DHAF_LOG(DHAF_LOG_INFO, "event=grpc-listening addr=%s tls=%s plan_generation=%llx", addr,
             o.tls.tls ? "on" : "off", (unsigned long long)a->generation);
    return a;
}

void api_reload(struct api *a, const struct dhaf_config *cfg)
{
    pthread_mutex_lock(&a->lock);
    a->cfg = cfg;
    dhaf_rpc_server_set_token(a->srv, cfg->api_token);
    uint64_t old = a->generation;
    plan_build(a);
    if (old != a->generation)
        DHAF_LOG(DHAF_LOG_INFO, "event=plan-changed generation=%llx",
                 (unsigned long long)a->generation);
    pthread_mutex_unlock(&a->lock);
}

void api_stop(struct api *a)
{
    if (!a)
        return;
    dhaf_rpc_server_stop(a->srv);
    struct dhaf_err err;
    for (size_t i = 0; i < a->n_relays; i++) {
        dhaf_etcd_keepalive_free(a->relays[i].ka);
        if (a->relays[i].lease)
            dhaf_etcd_lease_revoke(cluster_etcd(a->c), a->relays[i].lease, &err);
    }
    free(a->plan);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
