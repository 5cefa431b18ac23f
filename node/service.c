/* SPDX-License-Identifier: MIT */
/* dhaf.v1.Dhaf operations over etcd, shared by the gRPC API and the REST gateway.
 * Messages are built in an arena and handed out as one packed-and-unpacked copy, so the
 * caller frees them with protobuf_c_message_free_unpacked like any received message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "leader.h"
#include "service.h"

/* ------------------------------------------------------------------ arena */

struct arena {
    void **p;
    size_t n, cap;
};

static void *a_alloc(struct arena *a, size_t size)
{
    DHAF_GROW(a->p, a->n + 1, a->cap);
    return a->p[a->n++] = dhaf_xcalloc(1, size);
}

static char *a_str(struct arena *a, const char *s)
{
    DHAF_GROW(a->p, a->n + 1, a->cap);
    return a->p[a->n++] = dhaf_xstrdup(s ? s : "");
}

static void a_free(struct arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->p[i]);
    free(a->p);
    memset(a, 0, sizeof(*a));
}

/* The message as an independent copy (freed with protobuf_c_message_free_unpacked). */
static ProtobufCMessage *a_finish(struct arena *a, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = dhaf_xmalloc(len + 1);
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    free(buf);
    a_free(a);
    if (!copy) {
        fprintf(stderr, "dhaf: out of memory (message copy)\n");
        abort();
    }
    return copy;
}

/* ------------------------------------------------------------------ helpers */

/* A JSON value from etcd (NULL when absent or unreadable). */
static json_t *get_json(struct cluster *c, const char *path, struct dhaf_err *err, int *rc)
{
    char key[300];
    cluster_key(c, key, sizeof(key), path);
    struct dhaf_kvs kvs;
    *rc = dhaf_etcd_get(cluster_etcd(c), key, &kvs, err);
    if (*rc)
        return NULL;
    json_t *j = NULL;
    struct dhaf_err perr;
    if (kvs.n && dhaf_json_parse_object(kvs.kvs[0].value, kvs.kvs[0].value_len, key, &j, &perr))
        j = NULL;
    dhaf_kvs_release(&kvs);
    return j;
}

static int64_t jint(const json_t *o, const char *k)
{
    int64_t v = 0;
    dhaf_json_int(o, k, &v);
    return v;
}

/* ------------------------------------------------------------------ cluster */

int svc_cluster_status(const struct svc_env *env, Dhaf__V1__ClusterStatus **out,
                       struct dhaf_err *err)
{
    struct cluster *c = env->c;
    struct arena a = {0};
    Dhaf__V1__ClusterStatus st = DHAF__V1__CLUSTER_STATUS__INIT;
    st.cluster = env->cfg->cluster_name;
    st.answered_by = (char *)cluster_node(c);
    st.leader = "";
    char pfx[256];
    cluster_key(c, pfx, sizeof(pfx), "");
    struct dhaf_kvs kvs;
    int rc = dhaf_etcd_get_prefix(cluster_etcd(c), pfx, 0, &kvs, err);
    if (rc)
        return rc;
    size_t pl = strlen(pfx);
    /* one read of the whole cluster folder: a consistent picture */
    const struct dhaf_kv *leader = NULL;
    for (size_t i = 0; i < kvs.n; i++)
        if (strcmp(kvs.kvs[i].key + pl, "leader") == 0)
            leader = &kvs.kvs[i];
    if (leader) {
        json_t *j = NULL;
        if (dhaf_json_parse_object(leader->value, leader->value_len, "leader", &j, err) == 0) {
            st.leader = a_str(&a, dhaf_json_str(j, "node"));
            st.leader_since_ms = jint(j, "since");
            json_decref(j);
        }
        st.epoch = leader->create_rev;
    }
    Dhaf__V1__NodeStatus **nodes = a_alloc(&a, (kvs.n + 1) * sizeof(*nodes));
    for (size_t i = 0; i < kvs.n; i++) {
        const char *k = kvs.kvs[i].key + pl;
        if (strncmp(k, "members/", 8) != 0)
            continue;
        Dhaf__V1__NodeStatus *ns = a_alloc(&a, sizeof(*ns));
        dhaf__v1__node_status__init(ns);
        ns->name = a_str(&a, k + 8);
        json_t *m = NULL;
        if (dhaf_json_parse_object(kvs.kvs[i].value, kvs.kvs[i].value_len, k, &m, err) == 0) {
            ns->first_seen_ms = jint(m, "first_seen");
            ns->version = a_str(&a, dhaf_json_str(m, "version"));
            json_decref(m);
        }
        ns->grpc_endpoint = ns->rest_endpoint = "";
        char ak[200];
        snprintf(ak, sizeof(ak), "alive/%s", ns->name);
        for (size_t j = 0; j < kvs.n; j++) {
            if (strcmp(kvs.kvs[j].key + pl, ak) != 0)
                continue;
            ns->healthy = 1;
            json_t *al = NULL;
            if (dhaf_json_parse_object(kvs.kvs[j].value, kvs.kvs[j].value_len, ak, &al, err) == 0) {
                ns->grpc_endpoint = a_str(&a, dhaf_json_str(al, "grpc"));
                ns->rest_endpoint = a_str(&a, dhaf_json_str(al, "rest"));
                ns->started_at_ms = jint(al, "started_at");
                const char *v = dhaf_json_str(al, "version");
                if (v)
                    ns->version = a_str(&a, v);
                json_decref(al);
            }
        }
        ns->role = strcmp(ns->name, st.leader) == 0 ? DHAF__V1__NODE_ROLE__NODE_ROLE_LEADER
                                                    : DHAF__V1__NODE_ROLE__NODE_ROLE_FOLLOWER;
        nodes[st.n_nodes++] = ns;
    }
    st.nodes = nodes;
    /* probers: the configured ones, healthy while their relayed record exists */
    const struct dhaf_config *cfg = env->cfg;
    Dhaf__V1__ProberStatus **probers = a_alloc(&a, (cfg->n_probers + 1) * sizeof(*probers));
    for (size_t p = 0; p < cfg->n_probers; p++) {
        Dhaf__V1__ProberStatus *ps = a_alloc(&a, sizeof(*ps));
        dhaf__v1__prober_status__init(ps);
        ps->name = cfg->probers[p].name;
        ps->location = cfg->probers[p].location ? cfg->probers[p].location : "";
        ps->version = ps->relayed_by = "";
        char pk[200];
        snprintf(pk, sizeof(pk), "probers/%s", ps->name);
        for (size_t j = 0; j < kvs.n; j++) {
            if (strcmp(kvs.kvs[j].key + pl, pk) != 0)
                continue;
            json_t *pj = NULL;
            if (dhaf_json_parse_object(kvs.kvs[j].value, kvs.kvs[j].value_len, pk, &pj, err) == 0) {
                ps->healthy = 1;
                ps->version = a_str(&a, dhaf_json_str(pj, "version"));
                ps->relayed_by = a_str(&a, dhaf_json_str(pj, "relayed_by"));
                ps->last_report_ms = jint(pj, "last_report");
                const char *loc = dhaf_json_str(pj, "location");
                if (loc && *loc)
                    ps->location = a_str(&a, loc);
                json_decref(pj);
            }
        }
        probers[st.n_probers++] = ps;
    }
    st.probers = probers;
    *out = (Dhaf__V1__ClusterStatus *)a_finish(&a, &st.base);
    dhaf_kvs_release(&kvs);
    return 0;
}

/* ------------------------------------------------------------------ services */

/* Fills one ServiceStatus from the config and etcd. */
static int service_status(const struct svc_env *env, const struct dhaf_service *svc,
                          struct arena *a, Dhaf__V1__ServiceStatus *ss, struct dhaf_err *err)
{
    dhaf__v1__service_status__init(ss);
    ss->name = svc->name;
    ss->domain = svc->domain;
    ss->current_entry_point = ss->switchover_requirement = ss->switching_to = "";
    char path[200];
    snprintf(path, sizeof(path), "services/%s/state", svc->name);
    int rc;
    json_t *st = get_json(env->c, path, err, &rc);
    if (rc)
        return rc;
    snprintf(path, sizeof(path), "services/%s/switchover", svc->name);
    json_t *req = get_json(env->c, path, err, &rc);
    if (rc) {
        json_decref(st);
        return rc;
    }
    const char *cur = st ? dhaf_json_str(st, "current") : NULL;
    if (cur)
        ss->current_entry_point = a_str(a, cur);
    ss->panic = st && json_is_true(json_object_get(st, "panic"));
    ss->quorum = st && json_is_true(json_object_get(st, "quorum"));
    ss->current_since_ms = st ? jint(st, "since") : 0;
    const char *pin = req ? dhaf_json_str(req, "ep") : NULL;
    if (pin)
        ss->switchover_requirement = a_str(a, pin);
    const json_t *sw = st ? json_object_get(st, "switching") : NULL;
    if (json_is_object(sw) && dhaf_json_str(sw, "to"))
        ss->switching_to = a_str(a, dhaf_json_str(sw, "to"));
    const json_t *ls = st ? json_object_get(st, "last_switch") : NULL;
    if (json_is_object(ls)) {
        Dhaf__V1__SwitchEvent *se = a_alloc(a, sizeof(*se));
        dhaf__v1__switch_event__init(se);
        se->kind = a_str(a, dhaf_json_str(ls, "kind"));
        se->from = a_str(a, dhaf_json_str(ls, "from"));
        se->to = a_str(a, dhaf_json_str(ls, "to"));
        se->at_ms = jint(ls, "at");
        ss->last_switch = se;
    }
    const json_t *eps = st ? json_object_get(st, "eps") : NULL;
    const json_t *votes = st ? json_object_get(st, "votes") : NULL;
    ss->entry_points = a_alloc(a, (svc->n_eps + 1) * sizeof(*ss->entry_points));
    for (size_t e = 0; e < svc->n_eps; e++) {
        Dhaf__V1__EntryPointStatus *es = a_alloc(a, sizeof(*es));
        dhaf__v1__entry_point_status__init(es);
        es->name = svc->eps[e].name;
        es->ip = svc->eps[e].ip;
        es->priority = (uint32_t)e + 1;
        const char *h = eps ? dhaf_json_str(eps, es->name) : NULL;
        bool known = h && strcmp(h, "unknown") != 0;
        es->healthy = h && strcmp(h, "up") == 0;
        if (cur && strcmp(cur, es->name) == 0)
            es->state = DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_CURRENT;
        else if (!known)
            es->state = DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_UNKNOWN;
        else
            es->state = es->healthy ? DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_READY
                                    : DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_DISABLED;
        const json_t *v = votes ? json_object_get(votes, es->name) : NULL;
        if (json_is_object(v)) {
            es->votes_healthy = (uint32_t)jint(v, "healthy");
            es->votes_unhealthy = (uint32_t)jint(v, "unhealthy");
            es->voters = (uint32_t)jint(v, "voters");
            const char *r = dhaf_json_str(v, "reasons");
            if (r && *r) {
                es->reasons = a_alloc(a, sizeof(char *));
                es->reasons[0] = a_str(a, r);
                es->n_reasons = 1;
            }
        }
        if (es->healthy)
            ss->up = 1;
        ss->entry_points[ss->n_entry_points++] = es;
    }
    json_decref(st);
    json_decref(req);
    return 0;
}

static const struct dhaf_service *find_service(const struct svc_env *env, const char *name,
                                               struct dhaf_err *err)
{
    const struct dhaf_service *s = name ? dhaf_config_service(env->cfg, name) : NULL;
    if (!s)
        dhaf_err_set(err, DHAF_ENOTFOUND, "there is no service named \"%.64s\"", name ? name : "");
    return s;
}

int svc_list_services(const struct svc_env *env, Dhaf__V1__ListServicesResponse **out,
                      struct dhaf_err *err)
{
    struct arena a = {0};
    Dhaf__V1__ListServicesResponse r = DHAF__V1__LIST_SERVICES_RESPONSE__INIT;
    r.services = a_alloc(&a, (env->cfg->n_services + 1) * sizeof(*r.services));
    for (size_t i = 0; i < env->cfg->n_services; i++) {
        Dhaf__V1__ServiceStatus *ss = a_alloc(&a, sizeof(*ss));
        int rc = service_status(env, &env->cfg->services[i], &a, ss, err);
        if (rc) {
            a_free(&a);
            return rc;
        }
        r.services[r.n_services++] = ss;
    }
    *out = (Dhaf__V1__ListServicesResponse *)a_finish(&a, &r.base);
    return 0;
}

int svc_get_service(const struct svc_env *env, const char *service, Dhaf__V1__ServiceStatus **out,
                    struct dhaf_err *err)
{
    const struct dhaf_service *svc = find_service(env, service, err);
    if (!svc)
        return DHAF_ENOTFOUND;
    struct arena a = {0};
    Dhaf__V1__ServiceStatus ss;
    int rc = service_status(env, svc, &a, &ss, err);
    if (rc) {
        a_free(&a);
        return rc;
    }
    *out = (Dhaf__V1__ServiceStatus *)a_finish(&a, &ss.base);
    return 0;
}

int svc_candidates(const struct svc_env *env, const char *service,
                   Dhaf__V1__SwitchoverCandidates **out, struct dhaf_err *err)
{
    Dhaf__V1__ServiceStatus *ss = NULL;
    int rc = svc_get_service(env, service, &ss, err);
    if (rc)
        return rc;
    struct arena a = {0};
    Dhaf__V1__SwitchoverCandidates r = DHAF__V1__SWITCHOVER_CANDIDATES__INIT;
    r.candidates = a_alloc(&a, (ss->n_entry_points + 1) * sizeof(*r.candidates));
    for (size_t e = 0; e < ss->n_entry_points; e++) {
        if (!ss->entry_points[e]->healthy)
            continue;
        Dhaf__V1__Candidate *cd = a_alloc(&a, sizeof(*cd));
        dhaf__v1__candidate__init(cd);
        cd->name = a_str(&a, ss->entry_points[e]->name);
        cd->priority = ss->entry_points[e]->priority;
        r.candidates[r.n_candidates++] = cd;
    }
    *out = (Dhaf__V1__SwitchoverCandidates *)a_finish(&a, &r.base);
    dhaf__v1__service_status__free_unpacked(ss, NULL);
    return 0;
}

int svc_switchover(const struct svc_env *env, const char *service, const char *ep, const char *by,
                   Dhaf__V1__SwitchoverResponse **out, struct dhaf_err *err)
{
    Dhaf__V1__ServiceStatus *ss = NULL;
    int rc = svc_get_service(env, service, &ss, err);
    if (rc)
        return rc;
    const Dhaf__V1__EntryPointStatus *target = NULL;
    for (size_t e = 0; e < ss->n_entry_points; e++)
        if (ep && strcmp(ss->entry_points[e]->name, ep) == 0)
            target = ss->entry_points[e];
    if (!target)
        rc = dhaf_err_set(err, DHAF_ENOTFOUND, "service %s has no entry point \"%.64s\"", service,
                          ep ? ep : "");
    else if (!target->healthy)
        rc = dhaf_err_set(err, DHAF_ECONFLICT,
                          "entry point %s of %s is not healthy; a switchover needs a healthy one",
                          ep, service);
    dhaf__v1__service_status__free_unpacked(ss, NULL);
    if (rc)
        return rc;
    rc = leader_request_switchover(env->c, env->cfg, service, ep, by, err);
    if (rc)
        return rc;
    DHAF_LOG(DHAF_LOG_INFO, "event=switchover-requested service=%s to=%s by=\"%.64s\"", service, ep,
             by ? by : "");
    struct arena a = {0};
    Dhaf__V1__SwitchoverResponse r = DHAF__V1__SWITCHOVER_RESPONSE__INIT;
    char msg[300];
    snprintf(msg, sizeof(msg), "A switchover of %s to %s has been requested.", service, ep);
    r.message = a_str(&a, msg);
    *out = (Dhaf__V1__SwitchoverResponse *)a_finish(&a, &r.base);
    return 0;
}

int svc_purge(const struct svc_env *env, const char *service,
              Dhaf__V1__PurgeSwitchoverResponse **out, struct dhaf_err *err)
{
    char was[80];
    int rc = leader_purge_switchover(env->c, env->cfg, service, was, sizeof(was), err);
    if (rc)
        return rc;
    struct arena a = {0};
    Dhaf__V1__PurgeSwitchoverResponse r = DHAF__V1__PURGE_SWITCHOVER_RESPONSE__INIT;
    char msg[300];
    snprintf(msg, sizeof(msg), "The switchover requirement of %s has been purged.", service);
    r.message = a_str(&a, msg);
    r.purged_entry_point = a_str(&a, was);
    *out = (Dhaf__V1__PurgeSwitchoverResponse *)a_finish(&a, &r.base);
    return 0;
}

int svc_decommission(const struct svc_env *env, const char *node,
                     Dhaf__V1__DecommissionNodeResponse **out, struct dhaf_err *err)
{
    int rc = cluster_decommission(env->c, node ? node : "", err);
    if (rc)
        return rc;
    struct arena a = {0};
    Dhaf__V1__DecommissionNodeResponse r = DHAF__V1__DECOMMISSION_NODE_RESPONSE__INIT;
    char msg[200];
    snprintf(msg, sizeof(msg), "The dhaf node %s has been decommissioned.", node);
    r.message = a_str(&a, msg);
    *out = (Dhaf__V1__DecommissionNodeResponse *)a_finish(&a, &r.base);
    return 0;
}

static int by_revision_desc(const void *x, const void *y)
{
    const struct dhaf_kv *a = x, *b = y;
    return a->create_rev < b->create_rev ? 1 : a->create_rev > b->create_rev ? -1 : 0;
}

int svc_events(const struct svc_env *env, const char *service, uint32_t limit,
               Dhaf__V1__ListEventsResponse **out, struct dhaf_err *err)
{
    if (service && *service && !find_service(env, service, err))
        return DHAF_ENOTFOUND;
    if (limit == 0)
        limit = 50;
    if (limit > 1000)
        limit = 1000;
    char path[200], key[300];
    snprintf(path, sizeof(path), "events/%s/", service && *service ? service : "@cluster");
    cluster_key(env->c, key, sizeof(key), path);
    struct dhaf_kvs kvs;
    int rc = dhaf_etcd_get_prefix(cluster_etcd(env->c), key, 0, &kvs, err);
    if (rc)
        return rc;
    qsort(kvs.kvs, kvs.n, sizeof(*kvs.kvs), by_revision_desc); /* newest first */
    struct arena a = {0};
    Dhaf__V1__ListEventsResponse r = DHAF__V1__LIST_EVENTS_RESPONSE__INIT;
    r.events = a_alloc(&a, (limit + 1) * sizeof(*r.events));
    for (size_t i = 0; i < kvs.n && r.n_events < limit; i++) {
        json_t *j = NULL;
        struct dhaf_err perr;
        if (dhaf_json_parse_object(kvs.kvs[i].value, kvs.kvs[i].value_len, kvs.kvs[i].key, &j,
                                   &perr) != 0)
            continue;
        Dhaf__V1__Event *ev = a_alloc(&a, sizeof(*ev));
        dhaf__v1__event__init(ev);
        ev->seq = (uint64_t)kvs.kvs[i].create_rev;
        ev->kind = a_str(&a, dhaf_json_str(j, "kind"));
        const char *lv = dhaf_json_str(j, "level");
        ev->level = lv && !strcmp(lv, "critical")  ? DHAF__V1__EVENT_LEVEL__EVENT_LEVEL_CRITICAL
                    : lv && !strcmp(lv, "warning") ? DHAF__V1__EVENT_LEVEL__EVENT_LEVEL_WARNING
                                                   : DHAF__V1__EVENT_LEVEL__EVENT_LEVEL_INFO;
        ev->service = a_str(&a, dhaf_json_str(j, "service"));
        ev->from = a_str(&a, dhaf_json_str(j, "from"));
        ev->to = a_str(&a, dhaf_json_str(j, "to"));
        ev->node = a_str(&a, dhaf_json_str(j, "node"));
        ev->message = a_str(&a, dhaf_json_str(j, "message"));
        ev->at_ms = jint(j, "at");
        const json_t *rs = json_object_get(j, "reasons");
        if (json_is_array(rs) && json_array_size(rs)) {
            ev->reasons = a_alloc(&a, json_array_size(rs) * sizeof(char *));
            for (size_t k = 0; k < json_array_size(rs); k++)
                if (json_is_string(json_array_get(rs, k)))
                    ev->reasons[ev->n_reasons++] =
                        a_str(&a, json_string_value(json_array_get(rs, k)));
        }
        json_decref(j);
        r.events[r.n_events++] = ev;
    }
    dhaf_kvs_release(&kvs);
    *out = (Dhaf__V1__ListEventsResponse *)a_finish(&a, &r.base);
    return 0;
}

int svc_version(const struct svc_env *env, Dhaf__V1__VersionInfo **out, struct dhaf_err *err)
{
    (void)err;
    struct arena a = {0};
    Dhaf__V1__VersionInfo v = DHAF__V1__VERSION_INFO__INIT;
    v.version = DHAF_VERSION;
    v.git_commit = DHAF_GIT_COMMIT;
    v.node = (char *)cluster_node(env->c);
    v.cluster = env->cfg->cluster_name;
    *out = (Dhaf__V1__VersionInfo *)a_finish(&a, &v.base);
    return 0;
}
