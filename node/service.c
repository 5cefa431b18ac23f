/* SPDX-License-Identifier: MIT */
/* dhaf.v1.Dhaf operations: reads from the node's view, changes to etcd; shared by the gRPC API
 * and the REST gateway.
 * Messages are built in an arena and handed out as one packed-and-unpacked copy, so the
 * caller frees them with protobuf_c_message_free_unpacked like any received message. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfgdrift.h"
#include "cluster.h"
#include "decide.h"
#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "etcdmon.h"
#include "events.h"
#include "leader.h"
#include "service.h"
#include "view.h"

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

static int64_t jint(const json_t *o, const char *k)
{
    int64_t v = 0;
    if (o)
        dhaf_json_int(o, k, &v);
    return v;
}

static const char *jstr(const json_t *o, const char *k)
{
    return o ? dhaf_json_str(o, k) : NULL;
}

/* The view's freshness as a message (view read-locked). NULL with an error when the view was
 * never loaded: there is nothing to answer with. */
static Dhaf__V1__ViewState *view_state(struct view *v, struct arena *a, struct dhaf_err *err)
{
    struct view_sync s = view_sync(v);
    if (!s.loaded) {
        dhaf_err_set(err, DHAF_EUNAVAILABLE,
                     "this node has not been able to read etcd yet; ask another node");
        return NULL;
    }
    Dhaf__V1__ViewState *vs = a_alloc(a, sizeof(*vs));
    dhaf__v1__view_state__init(vs);
    vs->stale = !s.synced;
    vs->age_ms = s.age_ms;
    vs->revision = s.revision;
    return vs;
}

/* Takes the view's read lock for a reply: its state, or (never loaded) NULL with the lock
 * released and the arena freed. */
static Dhaf__V1__ViewState *read_begin(struct view *v, struct arena *a, struct dhaf_err *err)
{
    view_rdlock(v);
    Dhaf__V1__ViewState *vs = view_state(v, a, err);
    if (!vs) {
        view_unlock(v);
        a_free(a);
    }
    return vs;
}

_Static_assert((int)EV_INFO == (int)DHAF__V1__EVENT_LEVEL__EVENT_LEVEL_INFO &&
                   (int)EV_WARNING == (int)DHAF__V1__EVENT_LEVEL__EVENT_LEVEL_WARNING &&
                   (int)EV_CRITICAL == (int)DHAF__V1__EVENT_LEVEL__EVENT_LEVEL_CRITICAL,
               "event levels are numbered as the API's EventLevel");

/* ------------------------------------------------------------------ cluster */

/* The etcd monitor's state (memory only), NULL when the node runs none. */
static Dhaf__V1__EtcdHealth *etcd_health(struct etcdmon *m, struct arena *a)
{
    if (!m)
        return NULL;
    struct etcdmon_state es;
    etcdmon_state(m, &es);
    Dhaf__V1__EtcdHealth *h = a_alloc(a, sizeof(*h));
    dhaf__v1__etcd_health__init(h);
    h->writable = es.writable;
    h->problem = a_str(a, es.problem);
    h->since_ms = es.since_wall_ms;
    h->db_size = es.db_size;
    h->alarms = a_alloc(a, (es.alarms.n + 1) * sizeof(*h->alarms));
    for (size_t i = 0; i < es.alarms.n; i++) {
        Dhaf__V1__EtcdAlarm *al = a_alloc(a, sizeof(*al));
        dhaf__v1__etcd_alarm__init(al);
        char member[24];
        snprintf(member, sizeof(member), "%" PRIx64, es.alarms.v[i].member);
        al->alarm = a_str(a, dhaf_etcd_alarm_name(es.alarms.v[i].type));
        al->member = a_str(a, member);
        h->alarms[h->n_alarms++] = al;
    }
    return h;
}

/* The alive nodes' config hashes compared (view read-locked): each node's hash goes into its
 * NodeStatus, the verdict into a ConfigDrift. */
static Dhaf__V1__ConfigDrift *config_drift(const struct view *v, struct arena *a,
                                           Dhaf__V1__NodeStatus **nodes, size_t n_nodes)
{
    struct cfgdrift d;
    cfgdrift_read(v, &d);
    Dhaf__V1__ConfigDrift *cd = a_alloc(a, sizeof(*cd));
    dhaf__v1__config_drift__init(cd);
    cd->drift = d.drift;
    cd->hash = a_str(a, d.ref);
    char summary[600];
    cd->summary = a_str(a, cfgdrift_summary(&d, summary, sizeof(summary)));
    cd->differing = a_alloc(a, (d.n_differ + 1) * sizeof(*cd->differing));
    for (size_t i = 0; i < n_nodes; i++)
        nodes[i]->config_hash = nodes[i]->config_parts = "";
    for (size_t k = 0; k < d.n; k++) {
        const struct cfgdrift_node *nd = &d.nodes[k];
        if (nd->differs)
            cd->differing[cd->n_differing++] = a_str(a, nd->name);
        for (size_t i = 0; i < n_nodes; i++)
            if (strcmp(nodes[i]->name, nd->name) == 0) {
                nodes[i]->config_hash = a_str(a, nd->hash);
                nodes[i]->config_differs = nd->differs;
                nodes[i]->config_parts = a_str(a, nd->parts);
            }
    }
    cfgdrift_release(&d);
    return cd;
}

int svc_cluster_status(const struct svc_env *env, Dhaf__V1__ClusterStatus **out,
                       struct dhaf_err *err)
{
    struct cluster *c = env->c;
    struct view *v = cluster_view(c);
    const struct dhaf_config *cfg = env->cfg;
    struct arena a = {0};
    Dhaf__V1__ClusterStatus st = DHAF__V1__CLUSTER_STATUS__INIT;
    st.cluster = cfg->cluster_name;
    st.answered_by = (char *)cluster_node(c);
    st.leader = "";
    if (!(st.view = read_begin(v, &a, err)))
        return DHAF_EUNAVAILABLE;
    const struct view_rec *lk = view_leader(v);
    if (lk) {
        st.leader = a_str(&a, jstr(lk->j, "node"));
        st.leader_since_ms = jint(lk->j, "since");
        st.epoch = lk->create_rev;
    }
    st.paused = view_find(v, VS_CONTROL, "pause") != NULL;
    size_t n_members = view_count(v, VS_MEMBERS);
    Dhaf__V1__NodeStatus **nodes = a_alloc(&a, (n_members + 1) * sizeof(*nodes));
    for (size_t i = 0; i < n_members; i++) {
        const struct view_rec *m = view_at(v, VS_MEMBERS, i);
        Dhaf__V1__NodeStatus *ns = a_alloc(&a, sizeof(*ns));
        dhaf__v1__node_status__init(ns);
        ns->name = a_str(&a, m->name);
        ns->first_seen_ms = jint(m->j, "first_seen");
        ns->version = a_str(&a, jstr(m->j, "version"));
        ns->grpc_endpoint = ns->rest_endpoint = "";
        const struct view_rec *al = view_find(v, VS_ALIVE, m->name);
        if (al) {
            ns->healthy = 1;
            ns->grpc_endpoint = a_str(&a, jstr(al->j, "grpc"));
            ns->rest_endpoint = a_str(&a, jstr(al->j, "rest"));
            ns->started_at_ms = jint(al->j, "started_at");
            if (jstr(al->j, "version"))
                ns->version = a_str(&a, jstr(al->j, "version"));
        }
        ns->role = strcmp(ns->name, st.leader) == 0 ? DHAF__V1__NODE_ROLE__NODE_ROLE_LEADER
                                                    : DHAF__V1__NODE_ROLE__NODE_ROLE_FOLLOWER;
        nodes[st.n_nodes++] = ns;
    }
    st.nodes = nodes;
    st.config = config_drift(v, &a, nodes, st.n_nodes);
    /* probers: the configured ones, healthy while their relayed record exists */
    Dhaf__V1__ProberStatus **probers = a_alloc(&a, (cfg->n_probers + 1) * sizeof(*probers));
    for (size_t p = 0; p < cfg->n_probers; p++) {
        Dhaf__V1__ProberStatus *ps = a_alloc(&a, sizeof(*ps));
        dhaf__v1__prober_status__init(ps);
        ps->name = cfg->probers[p].name;
        ps->location = cfg->probers[p].location ? cfg->probers[p].location : "";
        ps->version = ps->relayed_by = "";
        const struct view_rec *pr = view_find(v, VS_PROBERS, ps->name);
        if (pr && pr->j) {
            ps->healthy = 1;
            ps->version = a_str(&a, jstr(pr->j, "version"));
            ps->relayed_by = a_str(&a, jstr(pr->j, "relayed_by"));
            ps->last_report_ms = jint(pr->j, "last_report");
            const char *loc = jstr(pr->j, "location");
            if (loc && *loc)
                ps->location = a_str(&a, loc);
        }
        probers[st.n_probers++] = ps;
    }
    st.probers = probers;
    view_unlock(v);
    st.etcd = etcd_health(cluster_etcdmon(c), &a);
    *out = (Dhaf__V1__ClusterStatus *)a_finish(&a, &st.base);
    return 0;
}

/* ------------------------------------------------------------------ services */

/* The voters' opinions of one entry point, as VoteDetail messages (fresh votes only). */
static void vote_details(struct view *v, const struct dhaf_service *svc, size_t e, struct arena *a,
                         Dhaf__V1__EntryPointStatus *es)
{
    size_t n = view_voters(v);
    es->votes = a_alloc(a, (n + 1) * sizeof(*es->votes));
    for (size_t i = 0; i < n; i++) {
        const struct view_vote *vv = view_voter_at(v, i);
        if (!vv->ok)
            continue;
        const struct vote_result *r = vote_find(&vv->vote, svc->name, svc->eps[e].name);
        if (!r)
            continue;
        Dhaf__V1__VoteDetail *vd = a_alloc(a, sizeof(*vd));
        dhaf__v1__vote_detail__init(vd);
        vd->voter = a_str(a, vv->vote.voter);
        vd->healthy = r->healthy;
        vd->reason = a_str(a, r->reason);
        vd->reason_text = a_str(a, r->text);
        vd->impaired = vv->vote.impaired;
        vd->kind = a_str(a, vv->vote.kind);
        vd->at_ms = vv->vote.at_ms;
        es->votes[es->n_votes++] = vd;
    }
}

/* What the leader's rules make of the view now (decide() on this node's tally): the rule and
 * the switch it leads to. The leader decides the same from the same etcd state, unless its
 * view is ahead or behind by a watch event. */
static void explain(struct view *v, const struct dhaf_config *cfg, const struct dhaf_service *svc,
                    const json_t *st, const struct ep_tally *t, const struct quorum *q,
                    struct arena *a, Dhaf__V1__ServiceStatus *ss)
{
    if (svc->n_eps > DECIDE_MAX_EPS) {
        ss->decision_rule = ss->next_action = ss->next_target = "";
        return;
    }
    struct decide_state ds;
    decide_state_from_json(svc, st, &ds);
    /* The leader's clock of how long each entry point has been healthy is its own: here a
     * switch back reads as waiting until the leader makes it. */
    struct decide_request req;
    int64_t req_rev;
    view_request(v, svc, &req, &req_rev);
    decide_damping(cfg, &req);
    for (size_t e = 0; e < svc->n_eps; e++)
        req.strict_up_ms[e] = req.switch_back_ms ? -1 : 0;
    struct decide_output out;
    decide(svc, t, q, &ds, &req, &out);
    bool paused = view_find(v, VS_CONTROL, "pause") != NULL;
    char rule[300];
    snprintf(rule, sizeof(rule), "%s%s", out.rule ? out.rule : "",
             paused && out.action != ACT_NONE ? " (paused: not carried out)" : "");
    ss->decision_rule = a_str(a, rule);
    ss->next_action = a_str(a, action_name(out.action));
    ss->next_target = a_str(a, out.target >= 0 ? svc->eps[out.target].name : "");
}

/* Fills one ServiceStatus from the config and the view (read-locked). */
static void service_status(struct view *v, const struct dhaf_config *cfg,
                           const struct dhaf_service *svc, struct arena *a,
                           Dhaf__V1__ServiceStatus *ss)
{
    dhaf__v1__service_status__init(ss);
    ss->name = svc->name;
    ss->domain = svc->domain;
    ss->current_entry_point = ss->switchover_requirement = ss->switching_to = "";
    ss->provider_error = "";
    const struct view_rec *sr = view_find(v, VS_STATE, svc->name);
    const struct view_rec *rr = view_find(v, VS_REQUEST, svc->name);
    const json_t *st = sr ? sr->j : NULL;
    const json_t *req = rr ? rr->j : NULL;
    const char *cur = jstr(st, "current");
    if (cur)
        ss->current_entry_point = a_str(a, cur);
    ss->panic = st && json_is_true(json_object_get(st, "panic"));
    ss->quorum = st && json_is_true(json_object_get(st, "quorum"));
    ss->current_since_ms = jint(st, "since");
    const char *pin = jstr(req, "ep");
    if (pin)
        ss->switchover_requirement = a_str(a, pin);
    const json_t *sw = st ? json_object_get(st, "switching") : NULL;
    if (json_is_object(sw) && dhaf_json_str(sw, "to"))
        ss->switching_to = a_str(a, dhaf_json_str(sw, "to"));
    const json_t *pe = st ? json_object_get(st, "provider_error") : NULL;
    if (json_is_object(pe) && dhaf_json_str(pe, "error")) {
        ss->provider_error = a_str(a, dhaf_json_str(pe, "error"));
        ss->provider_error_since_ms = jint(pe, "since");
    }
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
    struct ep_tally *t = a_alloc(a, (svc->n_eps + 1) * sizeof(*t));
    struct quorum q;
    view_tally(v, cfg, svc, t, &q);
    ss->voters_fresh = q.fresh;
    ss->voters_expected = q.expected;
    ss->voters_needed = q.need;
    ss->voters_impaired = q.impaired;
    explain(v, cfg, svc, st, t, &q, a, ss);
    const json_t *would = st ? json_object_get(st, "would") : NULL;
    ss->would_switch_kind = a_str(a, json_is_object(would) ? jstr(would, "kind") : NULL);
    ss->would_switch_to = a_str(a, json_is_object(would) ? jstr(would, "to") : NULL);
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
        es->votes_healthy = t[e].healthy;
        es->votes_unhealthy = t[e].unhealthy;
        es->drained = view_drained(v, svc->name, svc->eps[e].name) != NULL;
        es->voters = t[e].voters;
        vote_details(v, svc, e, a, es);
        /* one reason a failing vote that counts: "node-2: timeout no answer in 1 s" */
        es->reasons = a_alloc(a, (es->n_votes + 1) * sizeof(char *));
        for (size_t k = 0; k < es->n_votes; k++) {
            const Dhaf__V1__VoteDetail *vd = es->votes[k];
            if (vd->healthy || (vd->impaired && !q.all_impaired))
                continue;
            char line[400];
            snprintf(line, sizeof(line), "%s: %s%s%s", vd->voter, vd->reason,
                     vd->reason_text[0] ? " " : "", vd->reason_text);
            es->reasons[es->n_reasons++] = a_str(a, line);
        }
        if (es->healthy)
            ss->up = 1;
        ss->entry_points[ss->n_entry_points++] = es;
    }
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
    struct view *v = cluster_view(env->c);
    struct arena a = {0};
    Dhaf__V1__ListServicesResponse r = DHAF__V1__LIST_SERVICES_RESPONSE__INIT;
    r.services = a_alloc(&a, (env->cfg->n_services + 1) * sizeof(*r.services));
    if (!(r.view = read_begin(v, &a, err)))
        return DHAF_EUNAVAILABLE;
    for (size_t i = 0; i < env->cfg->n_services; i++) {
        Dhaf__V1__ServiceStatus *ss = a_alloc(&a, sizeof(*ss));
        service_status(v, env->cfg, &env->cfg->services[i], &a, ss);
        r.services[r.n_services++] = ss;
    }
    view_unlock(v);
    *out = (Dhaf__V1__ListServicesResponse *)a_finish(&a, &r.base);
    return 0;
}

int svc_get_service(const struct svc_env *env, const char *service, Dhaf__V1__ServiceStatus **out,
                    struct dhaf_err *err)
{
    const struct dhaf_service *svc = find_service(env, service, err);
    if (!svc)
        return DHAF_ENOTFOUND;
    struct view *v = cluster_view(env->c);
    struct arena a = {0};
    Dhaf__V1__ServiceStatus ss;
    Dhaf__V1__ViewState *vs = read_begin(v, &a, err);
    if (!vs)
        return DHAF_EUNAVAILABLE;
    service_status(v, env->cfg, svc, &a, &ss);
    view_unlock(v);
    ss.view = vs;
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

int svc_switchover(const struct svc_env *env, const char *service, const char *ep,
                   Dhaf__V1__SwitchoverResponse **out, struct dhaf_err *err)
{
    if (!env->actor)
        return dhaf_err_set(err, DHAF_EINTERNAL, "a change without a caller");
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
    rc = leader_request_switchover(env->c, env->cfg, service, ep, env->actor, err);
    if (rc)
        return rc;
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
    if (!env->actor)
        return dhaf_err_set(err, DHAF_EINTERNAL, "a change without a caller");
    char was[80];
    int rc = leader_purge_switchover(env->c, env->cfg, service, env->actor, was, sizeof(was), err);
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
    if (!env->actor)
        return dhaf_err_set(err, DHAF_EINTERNAL, "a change without a caller");
    int rc = cluster_decommission(env->c, node ? node : "", env->actor, err);
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

int svc_drain(const struct svc_env *env, const char *service, const char *ep, bool drain,
              Dhaf__V1__DrainResponse **out, struct dhaf_err *err)
{
    if (!env->actor)
        return dhaf_err_set(err, DHAF_EINTERNAL, "a change without a caller");
    int rc = leader_drain(env->c, env->cfg, service ? service : "", ep ? ep : "", drain, env->actor,
                          err);
    if (rc)
        return rc;
    struct arena a = {0};
    Dhaf__V1__DrainResponse r = DHAF__V1__DRAIN_RESPONSE__INIT;
    char msg[300];
    snprintf(msg, sizeof(msg),
             drain ? "Entry point %s of %s is drained: it is no target; traffic on it moves to "
                     "the best other healthy one."
                   : "Entry point %s of %s is no longer drained.",
             ep, service);
    r.message = a_str(&a, msg);
    *out = (Dhaf__V1__DrainResponse *)a_finish(&a, &r.base);
    return 0;
}

int svc_pause(const struct svc_env *env, bool pause, Dhaf__V1__PauseResponse **out,
              struct dhaf_err *err)
{
    if (!env->actor)
        return dhaf_err_set(err, DHAF_EINTERNAL, "a change without a caller");
    int rc = leader_pause(env->c, pause, env->actor, err);
    if (rc)
        return rc;
    struct arena a = {0};
    Dhaf__V1__PauseResponse r = DHAF__V1__PAUSE_RESPONSE__INIT;
    r.message = a_str(&a, pause ? "Decisions are paused: the leader shows what it would switch "
                                  "(would-switch events) and carries nothing out."
                                : "Decisions are carried out again.");
    *out = (Dhaf__V1__PauseResponse *)a_finish(&a, &r.base);
    return 0;
}

int svc_events(const struct svc_env *env, const char *service, uint32_t limit,
               Dhaf__V1__ListEventsResponse **out, struct dhaf_err *err)
{
    bool of_service = service && *service;
    if (of_service && !find_service(env, service, err))
        return DHAF_ENOTFOUND;
    if (limit == 0)
        limit = 50;
    if (limit > 1000)
        limit = 1000;
    struct view *v = cluster_view(env->c);
    struct arena a = {0};
    Dhaf__V1__ListEventsResponse r = DHAF__V1__LIST_EVENTS_RESPONSE__INIT;
    r.events = a_alloc(&a, (limit + 1) * sizeof(*r.events));
    if (!(r.view = read_begin(v, &a, err)))
        return DHAF_EUNAVAILABLE;
    for (size_t i = view_events(v); i-- > 0 && r.n_events < limit;) { /* newest first */
        const struct view_event *ve = view_event_at(v, i);
        const char *svc = ve->service;
        if (of_service ? !svc || strcmp(svc, service) != 0 : svc != NULL)
            continue;
        json_t *j = view_event_json(ve);
        if (!j)
            continue;
        Dhaf__V1__Event *ev = a_alloc(&a, sizeof(*ev));
        dhaf__v1__event__init(ev);
        ev->seq = ve->seq;
        ev->kind = a_str(&a, dhaf_json_str(j, "kind"));
        /* the proto's levels are numbered as ours (info 1, warning 2, critical 3) */
        ev->level = (Dhaf__V1__EventLevel)event_level_named(dhaf_json_str(j, "level"));
        ev->service = a_str(&a, svc);
        ev->from = a_str(&a, dhaf_json_str(j, "from"));
        ev->to = a_str(&a, dhaf_json_str(j, "to"));
        ev->node = a_str(&a, dhaf_json_str(j, "node"));
        ev->message = a_str(&a, dhaf_json_str(j, "message"));
        ev->at_ms = jint(j, "at");
        ev->actor = a_str(&a, dhaf_json_str(j, "actor"));
        ev->role = a_str(&a, dhaf_json_str(j, "role"));
        ev->peer = a_str(&a, dhaf_json_str(j, "peer"));
        ev->comment = a_str(&a, dhaf_json_str(j, "comment"));
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
    view_unlock(v);
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
