/* SPDX-License-Identifier: MIT */
/* The leader's decision duty and fenced switching.
 *
 * At the start of a term, and whenever a write's outcome is unknown, each service's state is
 * read from etcd (never from memory) and the switcher is asked where traffic really goes, so
 * an interrupted switch or a manual change is seen. Then every round decides for every
 * service from the view's tally and switchover requests - only once the view is complete, so
 * a fresh term never decides on the first voter to speak. State changes and the events that
 * report them are one fenced transaction (outbox.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decide.h"
#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"
#include "leader.h"
#include "metrics.h"
#include "outbox.h"
#include "worker.h"

struct svc_run {
    char *name;
    char *fingerprint;                 /* switcher config, domain and EPs, to notice changes */
    struct snap *sw_snap;              /* the snapshot the switcher instance points into */
    const struct dhaf_service *sw_svc; /* the service in sw_snap */
    const struct dhaf_provider *sw;
    void *sw_state;
    struct dhaf_provider_ctx ctx;
    bool ready;  /* the switcher is initialised */
    bool warned; /* "cannot switch" said once */
    bool known;  /* the state was read from etcd in this term */
    struct decide_state st;
    long long since; /* current since (wall ms) */
    json_t *last_switch;
    struct ep_tally shown[DECIDE_MAX_EPS]; /* the counts last logged */
    bool shown_valid;
};

struct decider {
    struct cluster *c;
    struct term *t;
    struct svc_run **runs; /* one allocation each: a switcher keeps a pointer to its ctx */
    size_t n;
    uint64_t gen; /* snapshot generation the runs were made for */
    bool waiting; /* "the view is not complete yet" said */
};

int64_t leader_fresh_ms(const struct dhaf_config *cfg)
{
    return (int64_t)FRESH_TACTS * cfg->tact_interval * 1000;
}

static void svc_key(struct cluster *c, const char *svc, const char *leaf, char *buf, size_t len)
{
    char path[200];
    snprintf(path, sizeof(path), "services/%s/%s", svc, leaf);
    cluster_key(c, buf, len, path);
}

static void log_err(const char *event, const char *svc, const struct dhaf_err *err)
{
    char q[400];
    DHAF_LOG(DHAF_LOG_WARN, "event=%s service=%s reason=\"%s\"", event, svc,
             dhaf_log_quote(q, sizeof(q), err->msg));
}

static const char *ep_name(const struct dhaf_service *svc, int e)
{
    return e >= 0 && (size_t)e < svc->n_eps ? svc->eps[e].name : "";
}

/* ------------------------------------------------------------------ switchers */

static char *fingerprint(const struct dhaf_service *svc)
{
    char *sw = dhaf_section_to_json(&svc->switcher);
    json_t *eps = json_array();
    for (size_t e = 0; e < svc->n_eps; e++)
        json_array_append_new(eps, json_pack("[s,s]", svc->eps[e].name, svc->eps[e].ip));
    json_t *j = json_pack("{s:s, s:s, s:o}", "switcher", sw ? sw : "", "domain",
                          svc->domain ? svc->domain : "", "eps", eps);
    free(sw);
    char *text = dhaf_json_dump(j);
    json_decref(j);
    return text;
}

static void switcher_destroy(struct svc_run *r)
{
    if (r->ready && r->sw && r->sw->destroy)
        r->sw->destroy(r->sw_state);
    r->ready = false;
    r->sw_state = NULL;
    snap_put(r->sw_snap);
    r->sw_snap = NULL;
}

static void run_free(struct svc_run *r)
{
    if (!r)
        return;
    switcher_destroy(r);
    if (r->last_switch)
        json_decref(r->last_switch);
    free(r->name);
    free(r->fingerprint);
    free(r);
}

/* Makes the service's switcher instance (only the leader has them). Returns r->ready. */
static bool switcher_init(struct decider *d, struct svc_run *r, struct dhaf_err *err)
{
    if (r->ready)
        return true;
    const struct dhaf_service *svc = r->sw_svc;
    if (!r->sw || !r->sw->switch_to) {
        dhaf_err_set(err, DHAF_EINVAL, "switcher \"%s\" cannot switch", svc->switcher.type);
    } else {
        r->ctx = (struct dhaf_provider_ctx){.service = svc->name,
                                            .domain = svc->domain,
                                            .eps = svc->eps,
                                            .n_eps = svc->n_eps,
                                            .node = cluster_node(d->c),
                                            .epoch = term_epoch(d->t),
                                            .cluster = cluster_name(d->c)};
        if (!r->sw->init || r->sw->init(svc->switcher.conf, &r->ctx, &r->sw_state, err) == 0) {
            r->ready = true;
            return true;
        }
    }
    if (!r->warned)
        log_err("switcher-init-failed", svc->name, err);
    return false;
}

/* Makes the runs match snapshot s: services kept as they were keep their switcher and state;
 * changed or new ones start anew (their state is read again). */
static void sync_runs(struct decider *d, struct snap *s)
{
    if (d->runs && d->gen == s->generation)
        return;
    const struct dhaf_config *cfg = &s->cfg;
    struct svc_run **fresh = dhaf_xcalloc(cfg->n_services + 1, sizeof(*fresh));
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct dhaf_service *svc = &cfg->services[i];
        char *fp = fingerprint(svc);
        struct svc_run **old = NULL;
        for (size_t k = 0; k < d->n && !old; k++)
            if (d->runs[k] && strcmp(d->runs[k]->name, svc->name) == 0)
                old = &d->runs[k];
        if (old && strcmp((*old)->fingerprint, fp) == 0) {
            fresh[i] = *old; /* moved: its switcher and state go on */
            *old = NULL;
            free(fp);
            continue;
        }
        if (old) {
            run_free(*old);
            *old = NULL;
        }
        struct svc_run *r = fresh[i] = dhaf_xcalloc(1, sizeof(*r));
        r->name = dhaf_xstrdup(svc->name);
        r->fingerprint = fp;
        r->sw_snap = snap_hold(s);
        r->sw_svc = svc;
        r->sw = dhaf_registry_find(DHAF_PKIND_SWITCHER, svc->switcher.type);
        r->st.current = -1;
    }
    for (size_t k = 0; k < d->n; k++)
        run_free(d->runs[k]);
    free(d->runs);
    d->runs = fresh;
    d->n = cfg->n_services;
    d->gen = s->generation;
}

/* ------------------------------------------------------------------ state in etcd */

static const char *health_word(enum ep_health h)
{
    return h == EP_UP ? "up" : h == EP_DOWN ? "down" : "unknown";
}

/* Parses a services/<svc>/state value into r (NULL or broken: a fresh state). *switching_to
 * gets the target of an interrupted switch (-1 none). */
static void parse_state(struct svc_run *r, const struct dhaf_service *svc, const struct dhaf_kv *kv,
                        int *switching_to)
{
    memset(&r->st, 0, sizeof(r->st));
    r->st.current = -1;
    r->since = 0;
    *switching_to = -1;
    if (r->last_switch)
        json_decref(r->last_switch);
    r->last_switch = NULL;
    json_t *j = NULL;
    struct dhaf_err err;
    if (kv && dhaf_json_parse_object(kv->value, kv->value_len, kv->key, &j, &err)) {
        log_err("state-unreadable", svc->name, &err);
        j = NULL;
    }
    if (!j)
        return;
    const char *cur = dhaf_json_str(j, "current");
    r->st.current = cur ? dhaf_service_ep_index(svc, cur) : -1;
    r->st.panic = json_is_true(json_object_get(j, "panic"));
    r->st.quorum = json_is_true(json_object_get(j, "quorum"));
    int64_t since = 0;
    if (dhaf_json_int(j, "since", &since) == 0)
        r->since = since;
    const json_t *eps = json_object_get(j, "eps");
    for (size_t e = 0; e < svc->n_eps && e < DECIDE_MAX_EPS; e++) {
        const char *h = dhaf_json_str(eps, svc->eps[e].name);
        r->st.eps[e] = h && !strcmp(h, "up")     ? EP_UP
                       : h && !strcmp(h, "down") ? EP_DOWN
                                                 : EP_UNKNOWN;
    }
    json_t *ls = json_object_get(j, "last_switch");
    if (json_is_object(ls))
        r->last_switch = json_incref(ls);
    const json_t *sw = json_object_get(j, "switching");
    const char *to = json_is_object(sw) ? dhaf_json_str(sw, "to") : NULL;
    if (to)
        *switching_to = dhaf_service_ep_index(svc, to);
    json_decref(j);
}

/* The state record of r with st; a switch in progress when kind is set. Caller frees. */
static char *state_text(struct decider *d, struct svc_run *r, const struct dhaf_service *svc,
                        const struct decide_state *st, const char *kind, int from, int to)
{
    json_t *j = json_object();
    json_object_set_new(j, "current",
                        st->current >= 0 ? json_string(ep_name(svc, st->current)) : json_null());
    json_object_set_new(j, "since", json_integer(r->since));
    json_object_set_new(j, "epoch", json_integer(term_epoch(d->t)));
    json_object_set_new(j, "panic", json_boolean(st->panic));
    json_object_set_new(j, "quorum", json_boolean(st->quorum));
    json_t *eps = json_object();
    for (size_t e = 0; e < svc->n_eps && e < DECIDE_MAX_EPS; e++)
        json_object_set_new(eps, svc->eps[e].name, json_string(health_word(st->eps[e])));
    json_object_set_new(j, "eps", eps);
    if (r->last_switch)
        json_object_set(j, "last_switch", r->last_switch);
    if (kind)
        json_object_set_new(j, "switching",
                            json_pack("{s:s, s:s, s:s, s:I}", "kind", kind, "from",
                                      ep_name(svc, from), "to", ep_name(svc, to), "at",
                                      (json_int_t)dhaf_clock_wall(cluster_clock(d->c))));
    char *text = dhaf_json_dump(j);
    json_decref(j);
    return text;
}

/* What a commit of the state is about. */
struct state_change {
    const struct decide_state *st;
    const char *kind; /* a switch in progress (state.switching), or NULL */
    int from, to;
    bool purge;          /* delete the switchover request ... */
    int64_t request_rev; /* ... if it is still the one decided on (its mod revision) */
    const struct event *evs;
    size_t n_evs;
};

/* Writes the state and its events in one fenced transaction. A failure whose outcome is not
 * known makes the next round read the state again. */
static int commit_state(struct decider *d, struct svc_run *r, const struct dhaf_service *svc,
                        const struct state_change *ch, struct dhaf_err *err)
{
    char *text = state_text(d, r, svc, ch->st, ch->kind, ch->from, ch->to);
    char skey[300], rkey[300];
    svc_key(d->c, svc->name, "state", skey, sizeof(skey));
    svc_key(d->c, svc->name, "switchover", rkey, sizeof(rkey));
    struct dhaf_etcd_op ops[2] = {{.type = DHAF_ETCD_OP_PUT, .key = skey, .value = text},
                                  {.type = DHAF_ETCD_OP_DELETE, .key = rkey}};
    struct dhaf_etcd_cmp cmp = {
        .key = rkey, .target = DHAF_ETCD_MOD_REV, .result = DHAF_ETCD_EQ, .num = ch->request_rev};
    int rc = outbox_commit(d->t, &cmp, ch->purge ? 1 : 0, ops, ch->purge ? 2 : 1, ch->evs,
                           ch->n_evs, err);
    free(text);
    if (rc != 0 && rc != DHAF_ECONFLICT && rc != DHAF_EFENCED)
        r->known = false; /* maybe applied, maybe not: read it again before deciding */
    return rc;
}

/* Reads the state of every service whose state is not known in this term, and asks each
 * switcher where traffic really goes (an interrupted switch, a change by hand). */
static void load_states(struct decider *d, struct snap *s)
{
    bool need = false;
    for (size_t i = 0; i < d->n; i++)
        need |= !d->runs[i]->known;
    if (!need)
        return;
    char prefix[256];
    cluster_key(d->c, prefix, sizeof(prefix), "services/");
    struct dhaf_kvs kvs;
    struct dhaf_err err;
    if (store_get_prefix(cluster_store(d->c), prefix, 0, &kvs, &err) != 0) {
        log_err("state-not-read", "*", &err);
        return;
    }
    for (size_t i = 0; i < d->n; i++) {
        struct svc_run *r = d->runs[i];
        const struct dhaf_service *svc = &s->cfg.services[i];
        if (r->known)
            continue;
        char key[300];
        svc_key(d->c, svc->name, "state", key, sizeof(key));
        const struct dhaf_kv *kv = NULL;
        for (size_t k = 0; k < kvs.n && !kv; k++)
            if (strcmp(kvs.kvs[k].key, key) == 0)
                kv = &kvs.kvs[k];
        int switching_to = -1;
        parse_state(r, svc, kv, &switching_to);
        int stored = r->st.current;
        switcher_init(d, r, &err);
        if (r->ready && r->sw->current) {
            int real = -1;
            int rc = r->sw->current(r->sw_state, &real, &err);
            if (rc == 0 || rc == DHAF_ENOTFOUND) {
                if (rc == DHAF_ENOTFOUND)
                    real = -1;
                r->st.current = real;
            } else {
                log_err("switcher-current-failed", svc->name, &err);
            }
        } else if (switching_to >= 0 && r->ready) {
            /* Cannot ask the provider: redo the interrupted switch (switchers are idempotent). */
            if (r->sw->switch_to(r->sw_state, (size_t)switching_to, &err) == 0)
                r->st.current = switching_to;
        }
        struct event evs[2];
        size_t n_evs = 0;
        if (switching_to >= 0)
            evs[n_evs++] = (struct event){.kind = EVK_SWITCH_INTERRUPTED,
                                          .service = svc->name,
                                          .from = ep_name(svc, r->st.current),
                                          .to = ep_name(svc, switching_to)};
        if (r->st.current != stored) {
            r->since = dhaf_clock_wall(cluster_clock(d->c));
            evs[n_evs++] = (struct event){.kind = EVK_CURRENT_CORRECTED,
                                          .service = svc->name,
                                          .from = ep_name(svc, stored),
                                          .to = ep_name(svc, r->st.current)};
        }
        r->known = true;
        if (n_evs) {
            struct state_change ch = {
                .st = &r->st, .from = -1, .to = -1, .evs = evs, .n_evs = n_evs};
            if (commit_state(d, r, svc, &ch, &err) != 0)
                log_err("state-not-written", svc->name, &err);
        }
    }
    dhaf_kvs_release(&kvs);
}

/* ------------------------------------------------------------------ deciding */

/* The switchover request of svc as the view has it. */
static void request_of(struct view *v, const struct dhaf_service *svc, struct decide_request *req,
                       int64_t *mod_rev)
{
    *req = (struct decide_request){REQ_NONE, -1};
    *mod_rev = 0;
    const struct view_rec *rec = view_find(v, VS_REQUEST, svc->name);
    if (!rec)
        return;
    *mod_rev = rec->mod_rev;
    const char *ep = rec->j ? dhaf_json_str(rec->j, "ep") : NULL;
    int idx = ep ? dhaf_service_ep_index(svc, ep) : -1;
    *req = idx >= 0 ? (struct decide_request){REQ_EP, idx}
                    : (struct decide_request){REQ_UNKNOWN_EP, -1};
}

/* The events decide() asked for, with their details (details[] holds their text). */
static size_t events_of(const struct dhaf_service *svc, const struct decide_output *out,
                        const struct ep_tally *t, struct event *evs, char (*details)[160])
{
    size_t n = 0;
    for (size_t k = 0; k < out->n_events; k++) {
        const struct decide_event *de = &out->events[k];
        struct event *ev = &evs[n];
        *ev = (struct event){.kind = de->kind, .service = svc->name};
        details[n][0] = '\0';
        switch (de->kind) {
        case EVK_EP_DOWN:
            ev->from = ep_name(svc, de->ep);
            snprintf(details[n], sizeof(details[n]), " (%u of %u voters)", t[de->ep].unhealthy,
                     t[de->ep].voters);
            ev->reasons[ev->n_reasons++] = t[de->ep].reasons;
            break;
        case EVK_EP_UP:
            ev->from = ep_name(svc, de->ep);
            snprintf(details[n], sizeof(details[n]), " (%u of %u voters)", t[de->ep].healthy,
                     t[de->ep].voters);
            break;
        case EVK_SWITCHOVER_PURGED:
            ev->to = de->ep >= 0 ? ep_name(svc, de->ep) : NULL;
            if (ev->to)
                snprintf(details[n], sizeof(details[n]), " (to %s): %s", ev->to,
                         de->why ? de->why : "");
            else
                snprintf(details[n], sizeof(details[n]), ": %s", de->why ? de->why : "");
            break;
        default:
            break;
        }
        ev->detail = details[n];
        n++;
    }
    return n;
}

/* Carries out out->action for r: fenced mark, switch, fenced commit. */
static void do_switch(struct decider *d, struct svc_run *r, const struct dhaf_service *svc,
                      const struct decide_output *out, const struct ep_tally *t, int64_t req_rev,
                      const struct event *evs, size_t n_evs)
{
    struct dhaf_err err;
    const char *kind = action_name(out->action);
    struct state_change ch = {.st = &out->next,
                              .from = -1,
                              .to = -1,
                              .purge = out->purge_request,
                              .request_rev = req_rev,
                              .evs = evs,
                              .n_evs = n_evs};
    if (!r->ready && !switcher_init(d, r, &err)) {
        if (!r->warned)
            DHAF_LOG(DHAF_LOG_ERROR,
                     "event=switch-impossible service=%s action=%s to=%s "
                     "reason=\"the switcher cannot be initialised (retried on every "
                     "decision)\"",
                     svc->name, kind, ep_name(svc, out->target));
        r->warned = true;
        /* what was announced is recorded all the same */
        if (commit_state(d, r, svc, &ch, &err) == 0)
            r->st = out->next;
        return;
    }
    r->warned = false;
    int from = r->st.current;
    ch.kind = kind;
    ch.from = from;
    ch.to = out->target;
    if (commit_state(d, r, svc, &ch, &err) != 0) {
        log_err("switch-not-started", svc->name, &err);
        return;
    }
    r->st = out->next;
    if (!term_valid(d->t))
        return; /* the term ended meanwhile: the next leader finishes the switch */
    const struct dhaf_clock *clk = cluster_clock(d->c);
    int64_t t0 = dhaf_clock_mono(clk);
    int rc = r->sw->switch_to(r->sw_state, (size_t)out->target, &err);
    int64_t took = dhaf_clock_mono(clk) - t0;
    char detail[700];
    if (rc != 0) {
        snprintf(detail, sizeof(detail), ": %s", err.msg);
        struct event ev = {.kind = EVK_SWITCH_FAILED,
                           .service = svc->name,
                           .to = ep_name(svc, out->target),
                           .detail = detail};
        struct dhaf_err e2;
        outbox_commit(d->t, NULL, 0, NULL, 0, &ev, 1, &e2);
        return;
    }
    r->st.current = out->target;
    metrics_switch(svc->name, kind);
    r->since = dhaf_clock_wall(clk);
    if (r->last_switch)
        json_decref(r->last_switch);
    r->last_switch = json_pack("{s:s, s:s, s:s, s:I}", "kind", kind, "from", ep_name(svc, from),
                               "to", ep_name(svc, out->target), "at", (json_int_t)r->since);
    bool why = from >= 0 && t[from].unhealthy;
    snprintf(detail, sizeof(detail), " done in %lld ms%s%s", (long long)took, why ? "; " : "",
             why ? t[from].reasons : "");
    enum event_kind ek = out->action == ACT_FAILOVER     ? EVK_FAILOVER
                         : out->action == ACT_SWITCHOVER ? EVK_SWITCHOVER
                                                         : EVK_SWITCHING;
    struct event ev = {.kind = ek,
                       .service = svc->name,
                       .from = ep_name(svc, from),
                       .to = ep_name(svc, out->target),
                       .detail = detail};
    struct state_change done = {.st = &r->st, .from = -1, .to = -1, .evs = &ev, .n_evs = 1};
    if (commit_state(d, r, svc, &done, &err) != 0)
        log_err("switch-not-recorded", svc->name, &err);
}

/* Logs the entry points whose counts changed since the last round (event=ep-votes). */
static void log_counts(struct svc_run *r, const struct dhaf_service *svc, const struct ep_tally *t)
{
    for (size_t e = 0; e < svc->n_eps; e++) {
        const struct ep_tally *a = &r->shown[e], *b = &t[e];
        if (r->shown_valid && a->healthy == b->healthy && a->unhealthy == b->unhealthy &&
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
    memcpy(r->shown, t, svc->n_eps * sizeof(*t));
    r->shown_valid = true;
}

/* Decides for every service; returns true when a switch happened. */
static bool decide_all(struct decider *d, struct snap *s)
{
    struct view *v = cluster_view(d->c);
    int64_t fresh = leader_fresh_ms(&s->cfg);
    view_rdlock(v);
    bool complete = view_tally_complete(v, fresh);
    view_unlock(v);
    if (!complete) {
        if (!d->waiting)
            DHAF_LOG(DHAF_LOG_INFO,
                     "event=decisions-wait epoch=%lld note=\"the view has not heard from every "
                     "voter since it (re)synced with etcd; no decision on a partial tally\"",
                     (long long)term_epoch(d->t));
        d->waiting = true;
        return false;
    }
    if (d->waiting)
        DHAF_LOG(DHAF_LOG_INFO, "event=decisions-resume epoch=%lld", (long long)term_epoch(d->t));
    d->waiting = false;
    bool switched = false;
    for (size_t i = 0; i < d->n && term_valid(d->t); i++) {
        struct svc_run *r = d->runs[i];
        const struct dhaf_service *svc = &s->cfg.services[i];
        if (!r->known || svc->n_eps > DECIDE_MAX_EPS)
            continue;
        struct ep_tally t[DECIDE_MAX_EPS];
        struct decide_request req;
        int64_t req_rev;
        view_rdlock(v);
        view_tally(v, svc, fresh, t);
        request_of(v, svc, &req, &req_rev);
        view_unlock(v);
        log_counts(r, svc, t);
        struct decide_output out;
        decide(svc, t, &r->st, &req, &out);
        struct event evs[DECIDE_MAX_EVENTS];
        char details[DECIDE_MAX_EVENTS][160];
        size_t n_evs = events_of(svc, &out, t, evs, details);
        if (out.action != ACT_NONE && out.target >= 0) {
            do_switch(d, r, svc, &out, t, req_rev, evs, n_evs);
            switched = true;
        } else if (n_evs || out.purge_request || memcmp(&out.next, &r->st, sizeof(r->st)) != 0) {
            struct dhaf_err err;
            struct state_change ch = {.st = &out.next,
                                      .from = -1,
                                      .to = -1,
                                      .purge = out.purge_request,
                                      .request_rev = req_rev,
                                      .evs = evs,
                                      .n_evs = n_evs};
            if (commit_state(d, r, svc, &ch, &err) == 0)
                r->st = out.next;
            else if (err.code != DHAF_EFENCED)
                log_err("state-not-written", svc->name, &err);
        }
    }
    return switched;
}

/* ------------------------------------------------------------------ the duty */

struct decider *leader_decider_new(struct term *t)
{
    struct decider *d = dhaf_xcalloc(1, sizeof(*d));
    d->c = term_cluster(t);
    d->t = t;
    term_hold(t);
    return d;
}

bool leader_decider_round(struct decider *d)
{
    struct snap *s = snap_get(cluster_snaps(d->c));
    sync_runs(d, s);
    load_states(d, s);
    bool switched = decide_all(d, s);
    snap_put(s);
    return switched;
}

void leader_decider_free(struct decider *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        run_free(d->runs[i]);
    free(d->runs);
    term_put(d->t);
    free(d);
}

static void decider_body(struct worker *w)
{
    struct decider *d = worker_ud(w);
    while (!worker_quit(w) && term_valid(d->t)) {
        bool switched = leader_decider_round(d);
        struct snap *s = snap_get(cluster_snaps(d->c));
        int64_t tact_ms = (int64_t)s->cfg.tact_interval * 1000;
        int64_t delay_ms = (int64_t)s->cfg.tact_post_switch_delay * 1000;
        snap_put(s);
        if (switched && delay_ms > 0) {
            /* tact-post-switch-delay, in seconds (the original slept milliseconds) */
            int64_t until = dhaf_mono_ms() + delay_ms;
            while (!worker_quit(w) && dhaf_mono_ms() < until)
                worker_wait(w, until);
        }
        worker_wait(w, dhaf_mono_ms() + tact_ms);
    }
}

static void decider_release(void *ud)
{
    leader_decider_free(ud);
}

static void *decider_start(struct term *t, void *ud)
{
    (void)ud;
    struct decider *d = leader_decider_new(t);
    struct dhaf_err err;
    struct worker *w = term_worker_start(t, "decisions", decider_body, decider_release, d,
                                         VIEW_VOTES | VIEW_SERVICES | VIEW_SYNC, true, &err);
    if (!w) {
        log_err("duty-not-started", "*", &err);
        return NULL;
    }
    DHAF_LOG(DHAF_LOG_INFO, "event=decisions-start epoch=%lld", (long long)term_epoch(t));
    return w;
}

static bool decider_stop(void *handle, int deadline_ms)
{
    return term_worker_stop(handle, deadline_ms);
}

struct duty leader_duty(struct cluster *c)
{
    return (struct duty){"decisions", decider_start, decider_stop, c};
}

/* ------------------------------------------------------------------ requests (any node) */

int leader_request_switchover(struct cluster *c, const struct dhaf_config *cfg, const char *service,
                              const char *ep, const char *by, struct dhaf_err *err)
{
    const struct dhaf_service *svc = dhaf_config_service(cfg, service);
    if (!svc)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "there is no service named \"%.64s\"", service);
    if (dhaf_service_ep_index(svc, ep) < 0)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "service %s has no entry point \"%.64s\"", service,
                            ep);
    json_t *j = json_pack("{s:s, s:s, s:I}", "ep", ep, "requested_by", by ? by : "", "at",
                          (json_int_t)dhaf_clock_wall(cluster_clock(c)));
    char *text = dhaf_json_dump(j);
    json_decref(j);
    char key[300];
    svc_key(c, service, "switchover", key, sizeof(key));
    int rc = store_put(cluster_store(c), key, text, 0, err);
    free(text);
    return rc;
}

int leader_purge_switchover(struct cluster *c, const struct dhaf_config *cfg, const char *service,
                            char *purged, size_t len, struct dhaf_err *err)
{
    if (!dhaf_config_service(cfg, service))
        return dhaf_err_set(err, DHAF_ENOTFOUND, "there is no service named \"%.64s\"", service);
    char key[300];
    svc_key(c, service, "switchover", key, sizeof(key));
    struct dhaf_etcd_op ops[2] = {{.type = DHAF_ETCD_OP_GET, .key = key},
                                  {.type = DHAF_ETCD_OP_DELETE, .key = key}};
    struct dhaf_etcd_txn_result res;
    int rc = store_txn(cluster_store(c), NULL, 0, ops, 2, NULL, 0, &res, err);
    if (rc)
        return rc;
    purged[0] = '\0';
    if (res.n_gets == 1 && res.gets[0].n == 1) {
        json_t *j = NULL;
        if (dhaf_json_parse_object(res.gets[0].kvs[0].value, res.gets[0].kvs[0].value_len, key, &j,
                                   err) == 0) {
            const char *ep = dhaf_json_str(j, "ep");
            snprintf(purged, len, "%s", ep ? ep : "");
            json_decref(j);
        }
    }
    dhaf_etcd_txn_result_release(&res);
    return 0;
}
