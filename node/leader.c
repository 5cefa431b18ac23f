/* SPDX-License-Identifier: MIT */
/* The leader's decision loop and fenced switching.
 *
 * Taking office (a new epoch): make each service's switcher, read services/<svc>/state from
 * etcd (never from memory), ask the switcher where traffic really goes (so an interrupted
 * switch or a manual change is seen), and read the switchover requests. Then decide for every
 * service on each tact and at once when the tally or a request changes. A switch is:
 * txn(epoch) state.switching -> switcher -> txn(epoch) state.current; a deposed leader's
 * txn is refused by etcd, and it stops. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decide.h"
#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"
#include "events.h"
#include "leader.h"
#include "metrics.h"

struct svc_run {
    const struct dhaf_service *svc;
    const struct dhaf_provider *sw;
    void *sw_state;
    struct dhaf_provider_ctx ctx;
    bool ready;  /* the switcher is initialised */
    bool warned; /* "cannot switch" said once */
    struct decide_state st;
    struct ep_tally shown[DECIDE_MAX_EPS]; /* the vote counts last written to the state */
    bool shown_valid;
    long long since; /* current since (wall ms) */
    json_t *last_switch;
    struct decide_request req;
};

struct leader {
    struct cluster *c;
    struct probing *p;
    pthread_mutex_t lock; /* guards cfg, reload and in_office */
    pthread_cond_t left;  /* signalled when the office (and its pointers into cfg) is gone */
    const struct dhaf_config *cfg;
    bool reload;
    bool in_office;
    unsigned long closed; /* offices closed so far: a reload waits for the next one */
    pthread_t t;
    struct svc_run *runs;
    size_t n;
    int64_t epoch; /* of the office held; 0 = none */
    struct dhaf_etcd_watch *requests;
    const struct dhaf_config *office_cfg; /* the config the office was taken with */
};

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

/* ------------------------------------------------------------------ state in etcd */

static const char *health_word(enum ep_health h)
{
    return h == EP_UP ? "up" : h == EP_DOWN ? "down" : "unknown";
}

/* Reads services/<svc>/state into r (missing or broken: a fresh state). *switching_to gets
 * the target of an interrupted switch (-1 none). */
static int load_state(struct leader *l, struct svc_run *r, int *switching_to, struct dhaf_err *err)
{
    memset(&r->st, 0, sizeof(r->st));
    r->st.current = -1;
    r->since = 0;
    *switching_to = -1;
    if (r->last_switch)
        json_decref(r->last_switch);
    r->last_switch = NULL;
    char key[300];
    svc_key(l->c, r->svc->name, "state", key, sizeof(key));
    struct dhaf_kvs kvs;
    int rc = dhaf_etcd_get(cluster_etcd(l->c), key, &kvs, err);
    if (rc)
        return rc;
    json_t *j = NULL;
    if (kvs.n && dhaf_json_parse_object(kvs.kvs[0].value, kvs.kvs[0].value_len, key, &j, err)) {
        log_err("state-unreadable", r->svc->name, err);
        j = NULL;
    }
    dhaf_kvs_release(&kvs);
    if (!j)
        return 0;
    const char *cur = dhaf_json_str(j, "current");
    r->st.current = cur ? dhaf_service_ep_index(r->svc, cur) : -1;
    r->st.panic = json_is_true(json_object_get(j, "panic"));
    r->st.quorum = json_is_true(json_object_get(j, "quorum"));
    int64_t since = 0;
    if (dhaf_json_int(j, "since", &since) == 0)
        r->since = since;
    const json_t *eps = json_object_get(j, "eps");
    for (size_t e = 0; e < r->svc->n_eps && e < DECIDE_MAX_EPS; e++) {
        const char *h = dhaf_json_str(eps, r->svc->eps[e].name);
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
        *switching_to = dhaf_service_ep_index(r->svc, to);
    json_decref(j);
    return 0;
}

/* Writes state (fenced), with a switch in progress when switching_to >= 0, deleting the
 * switchover request when purge. */
static int write_state(struct leader *l, struct svc_run *r, const struct decide_state *st,
                       const char *kind, int switching_from, int switching_to, bool purge,
                       struct dhaf_err *err)
{
    const struct dhaf_service *svc = r->svc;
    int64_t epoch = 0;
    cluster_is_leader(l->c, &epoch);
    json_t *j = json_object();
    json_object_set_new(j, "current",
                        st->current >= 0 ? json_string(svc->eps[st->current].name) : json_null());
    json_object_set_new(j, "since", json_integer(r->since));
    json_object_set_new(j, "epoch", json_integer(epoch));
    json_object_set_new(j, "panic", json_boolean(st->panic));
    json_object_set_new(j, "quorum", json_boolean(st->quorum));
    json_t *eps = json_object();
    for (size_t e = 0; e < svc->n_eps && e < DECIDE_MAX_EPS; e++)
        json_object_set_new(eps, svc->eps[e].name, json_string(health_word(st->eps[e])));
    json_object_set_new(j, "eps", eps);
    if (r->shown_valid) {
        /* the leader's tally, so that every node's status API gives the same answer */
        json_t *votes = json_object();
        for (size_t e = 0; e < svc->n_eps && e < DECIDE_MAX_EPS; e++) {
            const struct ep_tally *t = &r->shown[e];
            json_object_set_new(votes, svc->eps[e].name,
                                json_pack("{s:i, s:i, s:i, s:s}", "healthy", (int)t->healthy,
                                          "unhealthy", (int)t->unhealthy, "voters", (int)t->voters,
                                          "reasons", t->reasons));
        }
        json_object_set_new(j, "votes", votes);
    }
    if (r->last_switch)
        json_object_set(j, "last_switch", r->last_switch);
    if (switching_to >= 0)
        json_object_set_new(j, "switching",
                            json_pack("{s:s, s:s, s:s, s:I}", "kind", kind, "from",
                                      switching_from >= 0 ? svc->eps[switching_from].name : "",
                                      "to", svc->eps[switching_to].name, "at",
                                      (json_int_t)dhaf_wall_ms()));
    char *text = dhaf_json_dump(j);
    json_decref(j);
    char skey[300], rkey[300];
    svc_key(l->c, svc->name, "state", skey, sizeof(skey));
    svc_key(l->c, svc->name, "switchover", rkey, sizeof(rkey));
    struct dhaf_etcd_op ops[2] = {{.type = DHAF_ETCD_OP_PUT, .key = skey, .value = text},
                                  {.type = DHAF_ETCD_OP_DELETE, .key = rkey}};
    struct dhaf_etcd_txn_result res;
    int rc = cluster_txn_as_leader(l->c, NULL, 0, ops, purge ? 2 : 1, &res, err);
    free(text);
    if (rc == 0) {
        dhaf_etcd_txn_result_release(&res);
        if (purge)
            r->req = (struct decide_request){REQ_NONE, -1};
    }
    return rc;
}

/* ------------------------------------------------------------------ requests */

static void parse_request(const struct dhaf_service *svc, const char *value, size_t len,
                          struct decide_request *req)
{
    struct dhaf_err err;
    json_t *j = NULL;
    *req = (struct decide_request){REQ_UNKNOWN_EP, -1};
    if (dhaf_json_parse_object(value, len, "switchover", &j, &err) != 0)
        return;
    const char *ep = dhaf_json_str(j, "ep");
    int idx = ep ? dhaf_service_ep_index(svc, ep) : -1;
    if (idx >= 0)
        *req = (struct decide_request){REQ_EP, idx};
    json_decref(j);
}

static struct svc_run *run_of(struct leader *l, const char *svc)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->runs[i].svc->name, svc) == 0)
            return &l->runs[i];
    return NULL;
}

/* Applies a change of services/<svc>/switchover seen by the watch. Returns true if it was. */
static bool absorb_request(struct leader *l, const struct dhaf_etcd_event *ev)
{
    char prefix[256];
    cluster_key(l->c, prefix, sizeof(prefix), "services/");
    const char *k = ev->kv.key;
    size_t pl = strlen(prefix);
    if (strncmp(k, prefix, pl) != 0)
        return false;
    const char *slash = strchr(k + pl, '/');
    if (!slash || strcmp(slash, "/switchover") != 0)
        return false;
    char svc[80];
    snprintf(svc, sizeof(svc), "%.*s", (int)(slash - (k + pl)), k + pl);
    struct svc_run *r = run_of(l, svc);
    if (!r)
        return false;
    if (ev->type == DHAF_ETCD_EV_DELETE)
        r->req = (struct decide_request){REQ_NONE, -1};
    else
        parse_request(r->svc, ev->kv.value, ev->kv.value_len, &r->req);
    return true;
}

/* ------------------------------------------------------------------ office */

static void leave_office(struct leader *l)
{
    for (size_t i = 0; i < l->n; i++) {
        struct svc_run *r = &l->runs[i];
        if (r->ready && r->sw->destroy)
            r->sw->destroy(r->sw_state);
        if (r->last_switch)
            json_decref(r->last_switch);
    }
    free(l->runs);
    l->runs = NULL;
    l->n = 0;
    dhaf_etcd_watch_free(l->requests);
    l->requests = NULL;
    if (l->epoch)
        DHAF_LOG(DHAF_LOG_INFO, "event=leader-office-closed epoch=%lld", (long long)l->epoch);
    l->epoch = 0;
    pthread_mutex_lock(&l->lock);
    l->in_office = false;
    l->closed++;
    pthread_cond_broadcast(&l->left);
    pthread_mutex_unlock(&l->lock);
}

/* Completes the picture of one service at the start of an office. */
static void reconcile(struct leader *l, struct svc_run *r)
{
    struct dhaf_err err;
    int switching_to = -1;
    if (load_state(l, r, &switching_to, &err) != 0) {
        log_err("state-not-read", r->svc->name, &err);
        return;
    }
    int stored = r->st.current;
    if (r->ready && r->sw->current) {
        int real = -1;
        int rc = r->sw->current(r->sw_state, &real, &err);
        if (rc == 0 || rc == DHAF_ENOTFOUND) {
            if (rc == DHAF_ENOTFOUND)
                real = -1;
            if (real != stored) {
                DHAF_LOG(DHAF_LOG_WARN,
                         "event=current-corrected service=%s stored=%s actual=%s "
                         "note=\"the switcher reports where traffic goes; it wins\"",
                         r->svc->name, stored >= 0 ? r->svc->eps[stored].name : "none",
                         real >= 0 ? r->svc->eps[real].name : "none");
                r->st.current = real;
                r->since = dhaf_wall_ms();
            }
        } else {
            log_err("switcher-current-failed", r->svc->name, &err);
        }
    } else if (switching_to >= 0 && r->ready) {
        /* Cannot ask the provider: redo the interrupted switch (switchers are idempotent). */
        if (r->sw->switch_to(r->sw_state, (size_t)switching_to, &err) == 0) {
            r->st.current = switching_to;
            r->since = dhaf_wall_ms();
        }
    }
    if (switching_to >= 0)
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=switch-interrupted service=%s to=%s now=%s note=\"a previous leader "
                 "stopped mid-switch; deciding again from where traffic really goes\"",
                 r->svc->name, r->svc->eps[switching_to].name,
                 r->st.current >= 0 ? r->svc->eps[r->st.current].name : "none");
    if (switching_to >= 0 || r->st.current != stored)
        if (write_state(l, r, &r->st, "", -1, -1, false, &err) != 0)
            log_err("state-not-written", r->svc->name, &err);
}

/* Makes the service's switcher instance (only the leader has them). Returns r->ready. */
static bool switcher_init(struct leader *l, struct svc_run *r, struct dhaf_err *err)
{
    (void)l;
    if (r->ready)
        return true;
    if (!r->sw || !r->sw->switch_to) {
        dhaf_err_set(err, DHAF_EINVAL, "switcher \"%s\" cannot switch", r->svc->switcher.type);
    } else if (!r->sw->init ||
               r->sw->init(r->svc->switcher.conf, &r->ctx, &r->sw_state, err) == 0) {
        r->ready = true;
        return true;
    }
    if (!r->warned)
        log_err("switcher-init-failed", r->svc->name, err);
    return false;
}

static int take_office(struct leader *l, int64_t epoch)
{
    pthread_mutex_lock(&l->lock);
    const struct dhaf_config *cfg = l->cfg;
    l->reload = false;
    l->in_office = true;
    pthread_mutex_unlock(&l->lock);
    struct dhaf_err err;
    l->n = cfg->n_services;
    l->runs = dhaf_xcalloc(l->n + 1, sizeof(*l->runs));
    l->epoch = epoch;
    l->office_cfg = cfg;
    for (size_t i = 0; i < l->n; i++) {
        struct svc_run *r = &l->runs[i];
        r->svc = &cfg->services[i];
        r->req = (struct decide_request){REQ_NONE, -1};
        r->sw = dhaf_registry_find(DHAF_PKIND_SWITCHER, r->svc->switcher.type);
        r->ctx = (struct dhaf_provider_ctx){.service = r->svc->name,
                                            .domain = r->svc->domain,
                                            .eps = r->svc->eps,
                                            .n_eps = r->svc->n_eps,
                                            .node = cluster_node(l->c),
                                            .epoch = epoch};
        switcher_init(l, r, &err);
        reconcile(l, r);
    }
    /* Requests: read them all, then follow every change of services/. */
    char prefix[256];
    cluster_key(l->c, prefix, sizeof(prefix), "services/");
    struct dhaf_kvs kvs;
    if (dhaf_etcd_get_prefix(cluster_etcd(l->c), prefix, 0, &kvs, &err) != 0) {
        log_err("requests-not-read", "*", &err);
        return err.code ? err.code : DHAF_EUNAVAILABLE;
    }
    for (size_t i = 0; i < kvs.n; i++) {
        struct dhaf_etcd_event ev = {.type = DHAF_ETCD_EV_PUT, .kv = kvs.kvs[i]};
        absorb_request(l, &ev);
    }
    l->requests = dhaf_etcd_watch_new(cluster_etcd(l->c), prefix, true, kvs.revision + 1, &err);
    dhaf_kvs_release(&kvs);
    DHAF_LOG(DHAF_LOG_INFO, "event=leader-office-open epoch=%lld services=%zu", (long long)epoch,
             l->n);
    return 0;
}

/* ------------------------------------------------------------------ deciding */

static void announce(struct leader *l, struct svc_run *r, const struct decide_event *de,
                     const struct ep_tally *t)
{
    const struct dhaf_service *svc = r->svc;
    const char *ep = de->ep >= 0 ? svc->eps[de->ep].name : NULL;
    char msg[600];
    struct event ev = {.kind = de->kind, .level = EV_INFO, .service = svc->name};
    if (!strcmp(de->kind, "ep-down")) {
        ev.level = EV_WARNING;
        ev.node = NULL;
        ev.from = ep;
        snprintf(msg, sizeof(msg), "entry point %s of %s is DOWN (%u of %u voters)", ep, svc->name,
                 t[de->ep].unhealthy, t[de->ep].voters);
        ev.reasons[ev.n_reasons++] = t[de->ep].reasons;
    } else if (!strcmp(de->kind, "ep-up")) {
        ev.from = ep;
        snprintf(msg, sizeof(msg), "entry point %s of %s is UP (%u of %u voters)", ep, svc->name,
                 t[de->ep].healthy, t[de->ep].voters);
    } else if (!strcmp(de->kind, "service-down")) {
        ev.level = EV_CRITICAL;
        snprintf(msg, sizeof(msg),
                 "service %s is DOWN: no entry point is healthy; nothing is "
                 "switched until one recovers",
                 svc->name);
    } else if (!strcmp(de->kind, "service-up")) {
        snprintf(msg, sizeof(msg), "service %s is UP again", svc->name);
    } else if (!strcmp(de->kind, "no-quorum")) {
        ev.level = EV_WARNING;
        snprintf(msg, sizeof(msg), "no fresh vote for %s: decisions are suspended", svc->name);
    } else if (!strcmp(de->kind, "quorum")) {
        snprintf(msg, sizeof(msg), "fresh votes for %s again: decisions resume", svc->name);
    } else {
        ev.to = ep;
        snprintf(msg, sizeof(msg), "switchover request%s%s of %s purged: %s", ep ? " to " : "",
                 ep ? ep : "", svc->name, de->why ? de->why : "");
    }
    ev.message = msg;
    event_emit(l->c, &ev);
}

/* Carries out out.action for r: fenced mark, switch, fenced commit. */
static void do_switch(struct leader *l, struct svc_run *r, const struct decide_output *out,
                      const struct ep_tally *t)
{
    const struct dhaf_service *svc = r->svc;
    struct dhaf_err err;
    if (!r->ready && !switcher_init(l, r, &err)) {
        if (!r->warned)
            DHAF_LOG(DHAF_LOG_ERROR,
                     "event=switch-impossible service=%s action=%s to=%s "
                     "reason=\"the switcher cannot be initialised (retried on every "
                     "decision)\"",
                     svc->name, action_name(out->action), svc->eps[out->target].name);
        r->warned = true;
        /* what was announced is recorded all the same */
        if (write_state(l, r, &out->next, "", -1, -1, out->purge_request, &err) == 0)
            r->st = out->next;
        return;
    }
    r->warned = false;
    const char *kind = action_name(out->action);
    int from = r->st.current;
    if (write_state(l, r, &out->next, kind, from, out->target, out->purge_request, &err) != 0) {
        log_err("switch-not-started", svc->name, &err);
        return;
    }
    r->st = out->next;
    long long t0 = dhaf_wall_ms();
    int rc = r->sw->switch_to(r->sw_state, (size_t)out->target, &err);
    char msg[600];
    if (rc != 0) {
        snprintf(msg, sizeof(msg), "%s of %s to %s failed (will retry): %s", kind, svc->name,
                 svc->eps[out->target].name, err.msg);
        struct event ev = {.kind = "switch-failed",
                           .level = EV_WARNING,
                           .service = svc->name,
                           .to = svc->eps[out->target].name,
                           .message = msg};
        event_emit(l->c, &ev);
        return;
    }
    r->st.current = out->target;
    metrics_switch(svc->name, kind);
    r->since = dhaf_wall_ms();
    if (r->last_switch)
        json_decref(r->last_switch);
    r->last_switch = json_pack("{s:s, s:s, s:s, s:I}", "kind", kind, "from",
                               from >= 0 ? svc->eps[from].name : "", "to",
                               svc->eps[out->target].name, "at", (json_int_t)r->since);
    if (write_state(l, r, &r->st, "", -1, -1, false, &err) != 0)
        log_err("switch-not-recorded", svc->name, &err);
    snprintf(msg, sizeof(msg), "%s of %s from %s to %s done in %lld ms%s%s", kind, svc->name,
             from >= 0 ? svc->eps[from].name : "(none)", svc->eps[out->target].name, r->since - t0,
             from >= 0 && t[from].unhealthy ? "; " : "",
             from >= 0 && t[from].unhealthy ? t[from].reasons : "");
    struct event ev = {.kind = kind,
                       .level = out->action == ACT_FAILOVER ? EV_WARNING : EV_INFO,
                       .service = svc->name,
                       .from = from >= 0 ? svc->eps[from].name : NULL,
                       .to = svc->eps[out->target].name,
                       .message = msg};
    event_emit(l->c, &ev);
}

/* Decides for every service with a tally; returns true when a switch happened. */
static bool decide_all(struct leader *l)
{
    bool switched = false;
    for (size_t i = 0; i < l->n && cluster_is_leader(l->c, NULL); i++) {
        struct svc_run *r = &l->runs[i];
        const struct dhaf_service *svc = r->svc;
        struct ep_tally t[DECIDE_MAX_EPS];
        if (svc->n_eps > DECIDE_MAX_EPS || !probing_tally(l->p, svc->name, t, DECIDE_MAX_EPS))
            continue; /* no tally yet (the office just opened) */
        /* Vote counts are published with the state when they change (status API). */
        bool counts_changed = !r->shown_valid;
        for (size_t e = 0; e < svc->n_eps && !counts_changed; e++)
            counts_changed =
                r->shown[e].healthy != t[e].healthy || r->shown[e].unhealthy != t[e].unhealthy ||
                r->shown[e].voters != t[e].voters || strcmp(r->shown[e].reasons, t[e].reasons) != 0;
        if (counts_changed) {
            memcpy(r->shown, t, svc->n_eps * sizeof(*t));
            r->shown_valid = true;
        }
        struct decide_output out;
        decide(svc, t, &r->st, &r->req, &out);
        for (size_t k = 0; k < out.n_events; k++)
            announce(l, r, &out.events[k], t);
        if (out.action != ACT_NONE && out.target >= 0) {
            do_switch(l, r, &out, t);
            switched = true;
        } else if (out.purge_request || counts_changed ||
                   memcmp(&out.next, &r->st, sizeof(r->st)) != 0) {
            struct dhaf_err err;
            if (write_state(l, r, &out.next, "", -1, -1, out.purge_request, &err) == 0)
                r->st = out.next;
            else
                log_err("state-not-written", svc->name, &err);
        }
    }
    return switched;
}

/* Waits for a new tally, a request change, a reload or the next tact. */
static void wait_for_change(struct leader *l, uint64_t *gen, int tact_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t deadline = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + tact_ms;
    for (;;) {
        /* Mostly asleep on the tally (woken at once); a short look at the request watch. */
        uint64_t g = probing_wait(l->p, *gen, 45);
        if (g != *gen) {
            *gen = g;
            return;
        }
        if (l->requests) {
            struct dhaf_etcd_events ev;
            struct dhaf_err err;
            int rc = dhaf_etcd_watch_next(l->requests, &ev, 5, &err);
            bool hit = false;
            for (size_t i = 0; rc == 0 && i < ev.n; i++)
                hit |= absorb_request(l, &ev.v[i]);
            if (rc == 0)
                dhaf_etcd_events_release(&ev);
            if (hit)
                return;
        }
        pthread_mutex_lock(&l->lock);
        bool reload = l->reload;
        pthread_mutex_unlock(&l->lock);
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (reload || cluster_stopping(l->c) || !cluster_is_leader(l->c, NULL) ||
            (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 >= deadline)
            return;
    }
}

static void *leader_thread(void *arg)
{
    struct leader *l = arg;
    uint64_t gen = 0;
    while (!cluster_stopping(l->c)) {
        int64_t epoch = 0;
        if (!cluster_is_leader(l->c, &epoch)) {
            if (l->epoch)
                leave_office(l);
            cluster_nap(l->c, 100);
            continue;
        }
        pthread_mutex_lock(&l->lock);
        bool reload = l->reload;
        int tact_ms = l->cfg->tact_interval * 1000;
        int delay_ms = l->cfg->tact_post_switch_delay * 1000;
        pthread_mutex_unlock(&l->lock);
        if (l->epoch != epoch || reload) {
            leave_office(l);
            if (take_office(l, epoch) != 0) {
                leave_office(l);
                cluster_nap(l->c, 500);
                continue;
            }
        }
        if (decide_all(l) && delay_ms > 0) {
            /* tact-post-switch-delay, in seconds (the original slept milliseconds) */
            cluster_nap(l->c, delay_ms);
        }
        wait_for_change(l, &gen, tact_ms);
    }
    leave_office(l);
    return NULL;
}

/* ------------------------------------------------------------------ lifecycle */

struct leader *leader_start(struct cluster *c, struct probing *p, const struct dhaf_config *cfg,
                            struct dhaf_err *err)
{
    struct leader *l = dhaf_xcalloc(1, sizeof(*l));
    l->c = c;
    l->p = p;
    l->cfg = cfg;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->left, NULL);
    if (pthread_create(&l->t, NULL, leader_thread, l) != 0) {
        pthread_mutex_destroy(&l->lock);
        pthread_cond_destroy(&l->left);
        free(l);
        dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the leader thread");
        return NULL;
    }
    return l;
}

void leader_reload(struct leader *l, const struct dhaf_config *cfg)
{
    /* The office points into the old config, which the caller frees next: wait until the
     * thread has closed it (it reopens with cfg on its next turn). */
    pthread_mutex_lock(&l->lock);
    l->cfg = cfg;
    l->reload = true;
    /* Wait for the office that uses the old config to close; the thread may reopen one at
     * once (with the new config), so count closings rather than look at in_office. */
    unsigned long closed = l->closed;
    while (l->in_office && l->closed == closed && !cluster_stopping(l->c))
        pthread_cond_wait(&l->left, &l->lock);
    pthread_mutex_unlock(&l->lock);
}

bool leader_stop(struct leader *l, int deadline_ms)
{
    if (!l)
        return true;
    if (!dhaf_join_within(l->t, deadline_ms)) {
        DHAF_LOG(DHAF_LOG_WARN, "event=stop-slow note=\"a switch is still running; exiting "
                                "anyway\"");
        return false;
    }
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->left);
    free(l);
    return true;
}

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
                          (json_int_t)dhaf_wall_ms());
    char *text = dhaf_json_dump(j);
    json_decref(j);
    char key[300];
    svc_key(c, service, "switchover", key, sizeof(key));
    int rc = dhaf_etcd_put(cluster_etcd(c), key, text, SIZE_MAX, 0, NULL, err);
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
    struct dhaf_etcd_op get = {.type = DHAF_ETCD_OP_GET, .key = key};
    struct dhaf_etcd_op del = {.type = DHAF_ETCD_OP_DELETE, .key = key};
    struct dhaf_etcd_op ops[2] = {get, del};
    struct dhaf_etcd_txn_result res;
    int rc = dhaf_etcd_txn(cluster_etcd(c), NULL, 0, ops, 2, NULL, 0, &res, err);
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
