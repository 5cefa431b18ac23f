/* SPDX-License-Identifier: MIT */
/* The leader's decision duty and fenced switching.
 *
 * At the start of a term, and whenever a write's outcome is unknown, each service's state is
 * read from etcd (never from memory). Then the switcher is asked where traffic really goes -
 * at the start of a term, after every switch, and after anything that leaves it unsure - so
 * an interrupted switch, a deposed leader's late write or a manual change is seen and etcd is
 * corrected. Until that read succeeds (retried with back-off), `switching` stays in etcd and
 * the service gets no decision. Then every round decides for every service from the view's
 * tally and switchover requests - only once the view is complete, so a fresh term never
 * decides on the first voter to speak. State changes and the events that report them are one
 * fenced transaction (outbox.h); the switcher's own requests are fenced by the term's lease
 * (struct dhaf_fence: sent only while the lease is surely valid, cancelled when it closes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decide.h"
#include "dhaf/alloc.h"
#include "dhaf/hash.h"
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
    /* where the provider really points: read at the start of a term and after each switch */
    bool confirmed;           /* read since the state was last unsure: decisions may be made */
    int pending_to;           /* the switch etcd shows in progress (state.switching): -1 none */
    int pending_from;         /* ... its from */
    const char *pending_kind; /* ... its kind (static) */
    bool pending_inherited;   /* found in etcd: a previous leader's (or our unread) switch */
    int read_fails;           /* provider reads failed in a row */
    int64_t next_read;        /* when to read the provider again (monotonic ms) */
    int64_t unread_since;     /* first failed read (wall ms; status) */
    char read_error[DHAF_ERR_MSG_MAX]; /* the last failed read's error (status) */
    struct decide_state st;
    long long since; /* current since (wall ms) */
    json_t *last_switch;
    struct {
        uint16_t healthy, unhealthy, voters;
    } shown[DECIDE_MAX_EPS]; /* the counts last logged (not whole tallies: 1,000 services x 64
                                entry points of reasons would be 34 MB) */
    bool shown_valid;
    struct decide_memory mem; /* damping: this leader's memory */
    int64_t next_check;       /* the next read for drift (monotonic ms; 0: not scheduled yet) */
    bool drift_said;          /* a provider-drift event said the provider sends traffic to ... */
    int drift_to;             /* ... this entry point (-1: none of them) */
    int switch_fails;         /* switch calls failed in a row: one switch-failed event per streak */
    int64_t next_switch;      /* when a failed switch is tried again (monotonic ms) */
};

struct decider {
    struct cluster *c;
    struct term *t;
    struct dhaf_fence fence; /* the term's lease, for every switcher call */
    struct svc_run **runs;   /* one allocation each: a switcher keeps a pointer to its ctx */
    size_t n;
    uint64_t gen;                /* snapshot generation the runs were made for */
    bool waiting;                /* "the view is not complete yet" said */
    struct dhaf_rate check_rate; /* the provider drift reads' rate limit (monotonic) */
};

int64_t leader_fresh_ms(const struct dhaf_config *cfg)
{
    return (int64_t)VOTE_LEASE_TACTS * cfg->tact_interval * 1000;
}

static void svc_key(struct cluster *c, const char *svc, const char *leaf, char *buf, size_t len)
{
    char path[400];
    snprintf(path, sizeof(path), "services/%.64s/%.300s", svc, leaf);
    cluster_key(c, buf, len, path);
}

/* A failure of a leader's step. Each repeats every round while its cause lasts (etcd refusing
 * writes: state-not-written on every tact), so at most one line per kind per 10 s says it,
 * with the count held back (repeated=N). */
static void log_err(const char *event, const char *svc, const struct dhaf_err *err)
{
    char q[400];
    DHAF_LOG_LIMITED(event, DHAF_LOG_WARN, "event=%s service=%s reason=\"%s\"", event, svc,
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
    free(r->mem.flap);
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
        r->pending_to = r->pending_from = -1;
        r->mem.n_flap = svc->n_eps;
        r->mem.flap = dhaf_xcalloc(svc->n_eps ? svc->n_eps : 1, sizeof(*r->mem.flap));
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

/* Parses a services/<svc>/state value into r (NULL or broken: a fresh state), with the switch
 * it shows in progress (state.switching) as r's pending switch. */
static void parse_state(struct svc_run *r, const struct dhaf_service *svc, const struct dhaf_kv *kv)
{
    decide_state_from_json(svc, NULL, &r->st); /* nothing known, until the record says */
    r->since = 0;
    r->pending_to = r->pending_from = -1;
    r->pending_kind = NULL;
    r->pending_inherited = false;
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
    decide_state_from_json(svc, j, &r->st);
    int64_t since = 0;
    if (dhaf_json_int(j, "since", &since) == 0)
        r->since = since;
    json_t *ls = json_object_get(j, "last_switch");
    if (json_is_object(ls))
        r->last_switch = json_incref(ls);
    const json_t *sw = json_object_get(j, "switching");
    const char *to = json_is_object(sw) ? dhaf_json_str(sw, "to") : NULL;
    if (to && (r->pending_to = dhaf_service_ep_index(svc, to)) >= 0) {
        const char *from = dhaf_json_str(sw, "from"), *kind = dhaf_json_str(sw, "kind");
        r->pending_from = from ? dhaf_service_ep_index(svc, from) : -1;
        r->pending_kind = kind && !strcmp(kind, "failover")     ? "failover"
                          : kind && !strcmp(kind, "switchover") ? "switchover"
                                                                : "switching";
        r->pending_inherited = true;
    }
    json_decref(j);
}

/* The state record of r with st: r's pending switch as `switching`, a failing provider read
 * as `provider_error`. Caller frees. */
static char *state_text(struct decider *d, struct svc_run *r, const struct dhaf_service *svc,
                        const struct decide_state *st)
{
    json_t *j = json_object();
    json_object_set_new(j, "current",
                        st->current >= 0 ? json_string(ep_name(svc, st->current)) : json_null());
    json_object_set_new(j, "since", json_integer(r->since));
    json_object_set_new(j, "epoch", json_integer(term_epoch(d->t)));
    json_object_set_new(j, "panic", json_boolean(st->panic));
    json_object_set_new(j, "quorum", json_boolean(st->quorum));
    if (st->would_action != ACT_NONE && st->would_target >= 0)
        json_object_set_new(j, "would",
                            json_pack("{s:s, s:s}", "kind", action_name(st->would_action), "to",
                                      ep_name(svc, st->would_target)));
    json_t *eps = json_object();
    for (size_t e = 0; e < svc->n_eps && e < DECIDE_MAX_EPS; e++)
        json_object_set_new(eps, svc->eps[e].name, json_string(health_word(st->eps[e])));
    json_object_set_new(j, "eps", eps);
    if (r->last_switch)
        json_object_set(j, "last_switch", r->last_switch);
    if (r->pending_to >= 0)
        json_object_set_new(j, "switching",
                            json_pack("{s:s, s:s, s:s, s:I}", "kind",
                                      r->pending_kind ? r->pending_kind : "switching", "from",
                                      ep_name(svc, r->pending_from), "to",
                                      ep_name(svc, r->pending_to), "at",
                                      (json_int_t)dhaf_clock_wall(cluster_clock(d->c))));
    if (r->read_fails > 0)
        json_object_set_new(j, "provider_error",
                            json_pack("{s:s, s:I, s:i}", "error", r->read_error, "since",
                                      (json_int_t)r->unread_since, "attempts", r->read_fails));
    char *text = dhaf_json_dump(j);
    json_decref(j);
    return text;
}

/* What a commit of the state is about. */
struct state_change {
    const struct decide_state *st;
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
    char *text = state_text(d, r, svc, ch->st);
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

/* Reads the state of every service whose state is not known in this term. The provider is
 * read again for each of them before any decision (confirm_all). */
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
        parse_state(r, svc, kv);
        r->known = true;
        r->confirmed = false;
        r->next_read = 0;
    }
    dhaf_kvs_release(&kvs);
}

/* ------------------------------------------------------------------ the provider */

#define READ_BACKOFF_FIRST_MS   1000
#define READ_BACKOFF_MAX_MS     30000
#define SWITCH_BACKOFF_FIRST_MS 1000 /* a failed switch is tried again after 1 s, 2 s, ... */
#define SWITCH_BACKOFF_MAX_MS   60000
#define PROVIDER_CHECKS_PER_S   2 /* drift reads, all services together (providers' rate limits) */
#define RENEW_WAIT_MS           1000 /* for a lease renewal before a long switcher call */

static int64_t fence_left_ms(void *ud)
{
    return term_left_ms(ud);
}

/* A provider read failed: `switching` stays, no decision for the service; read again after a
 * back-off (1 s, 2 s, ... 30 s). The first failure (and a new kind of error) is recorded and
 * shown in status. */
static void read_failed(struct decider *d, struct svc_run *r, const struct dhaf_service *svc,
                        const struct dhaf_err *e)
{
    const struct dhaf_clock *clk = cluster_clock(d->c);
    bool news = r->read_fails == 0 || strcmp(r->read_error, e->msg) != 0;
    int64_t wait = dhaf_backoff_ms(r->read_fails + 1, READ_BACKOFF_FIRST_MS, READ_BACKOFF_MAX_MS);
    if (r->read_fails++ == 0)
        r->unread_since = dhaf_clock_wall(clk);
    r->next_read = dhaf_clock_mono(clk) + wait;
    char q[400];
    DHAF_LOG(DHAF_LOG_WARN,
             "event=provider-read-failed service=%s attempt=%d retry_in_ms=%lld reason=\"%s\"",
             svc->name, r->read_fails, (long long)wait, dhaf_log_quote(q, sizeof(q), e->msg));
    if (!news || !term_valid(d->t))
        return;
    snprintf(r->read_error, sizeof(r->read_error), "%s", e->msg);
    char detail[DHAF_ERR_MSG_MAX + 2];
    snprintf(detail, sizeof(detail), ": %s", e->msg);
    struct event ev = {.kind = EVK_PROVIDER_UNREAD, .service = svc->name, .detail = detail};
    struct state_change ch = {.st = &r->st, .evs = &ev, .n_evs = r->read_fails == 1 ? 1 : 0};
    struct dhaf_err err;
    if (commit_state(d, r, svc, &ch, &err) != 0 && err.code != DHAF_EFENCED)
        log_err("state-not-written", svc->name, &err);
}

/* Calls the switcher for ctx.eps[to] under the term's fence, after making sure the lease
 * covers the switcher's longest unfenced call. */
static int call_switch(struct decider *d, struct svc_run *r, int to, int expect_from,
                       struct dhaf_err *err)
{
    if (r->sw->max_call_ms) {
        const char *key = NULL;
        int64_t need = r->sw->max_call_ms(r->sw_svc->switcher.conf, &key);
        int64_t left = term_renew(d->t, need, RENEW_WAIT_MS);
        if (left < need)
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=switch-short-lease service=%s need_ms=%lld left_ms=%lld note=\"the "
                     "lease was not renewed in time: the call is cut at its end\"",
                     r->name, (long long)need, (long long)left);
    }
    if (!term_valid(d->t))
        return dhaf_err_set(err, DHAF_EFENCED, "the term ended before the switcher was called");
    struct dhaf_switch_req req = {.to = (size_t)to, .expect_from = expect_from, .fence = &d->fence};
    int rc = r->sw->switch_to(r->sw_state, &req, err);
    if (rc != 0 && rc != DHAF_EFENCED) /* fencing: leadership ended, not the provider */
        metrics_switch_failed(r->name, r->sw_svc->switcher.type);
    return rc;
}

/* Reads where the provider really points (under the fence): *ep = an index, -1 for an address
 * of no entry point, or unset when the provider says nothing is set. Returns 0 or the read's
 * error. */
static int read_provider(struct decider *d, struct svc_run *r, int unset, int *ep,
                         struct dhaf_err *err)
{
    *ep = -1;
    int rc = r->sw->current(r->sw_state, &d->fence, ep, err);
    if (rc == DHAF_ENOTFOUND) {
        *ep = unset;
        rc = 0;
    }
    return rc;
}

/* Records that r's switch (kind, from -> to) landed: last_switch, since, the metric, and the
 * failover/switchover/switching event (detail borrowed) in *ev. */
static void switch_landed(struct decider *d, struct svc_run *r, const struct dhaf_service *svc,
                          const char *kind, int from, int to, const char *detail, struct event *ev)
{
    int64_t now = dhaf_clock_wall(cluster_clock(d->c));
    metrics_switch(svc->name, kind);
    if (r->last_switch)
        json_decref(r->last_switch);
    r->last_switch = json_pack("{s:s, s:s, s:s, s:I}", "kind", kind, "from", ep_name(svc, from),
                               "to", ep_name(svc, to), "at", (json_int_t)now);
    r->since = now;
    *ev = (struct event){.kind = !strcmp(kind, "failover")     ? EVK_FAILOVER
                                 : !strcmp(kind, "switchover") ? EVK_SWITCHOVER
                                                               : EVK_SWITCHING,
                         .service = svc->name,
                         .from = ep_name(svc, from),
                         .to = ep_name(svc, to),
                         .detail = detail};
}

/* Makes etcd agree with the provider: reads its real target, clears `switching`, corrects
 * `current` (events say so), and lets decisions resume. A switcher that cannot be read is
 * trusted with etcd's state; an interrupted switch is then done again (switchers are
 * idempotent). */
static void confirm(struct decider *d, struct svc_run *r, const struct dhaf_service *svc)
{
    struct dhaf_err err = {0};
    if (!switcher_init(d, r, &err)) {
        r->warned = true;
        read_failed(d, r, svc, &err);
        return;
    }
    int stored = r->st.current, real;
    if (r->sw->current) {
        if (read_provider(d, r, -1, &real, &err) != 0) {
            read_failed(d, r, svc, &err);
            return;
        }
    } else if (r->pending_to >= 0) {
        if (call_switch(d, r, r->pending_to, -1, &err) != 0) {
            read_failed(d, r, svc, &err);
            return;
        }
        real = r->pending_to;
    } else {
        real = stored;
    }
    if (!term_valid(d->t))
        return;
    struct event evs[3];
    size_t n_evs = 0;
    char again[160] = "";
    if (r->read_fails > 0) {
        snprintf(again, sizeof(again), " (after %d failed reads)", r->read_fails);
        evs[n_evs++] = (struct event){.kind = EVK_PROVIDER_READ,
                                      .service = svc->name,
                                      .to = real >= 0 ? ep_name(svc, real) : "(none)",
                                      .detail = again};
    }
    /* a switch found in etcd (a previous leader's, or one whose write's answer was lost);
     * our own failed switch was reported as switch-failed already */
    if (r->pending_to >= 0 && r->pending_inherited)
        evs[n_evs++] = (struct event){.kind = EVK_SWITCH_INTERRUPTED,
                                      .service = svc->name,
                                      .from = ep_name(svc, real),
                                      .to = ep_name(svc, r->pending_to)};
    if (r->pending_to >= 0 && !r->pending_inherited && real == r->pending_to && real != stored)
        /* our own switch, whose read-back failed at first: it landed */
        switch_landed(d, r, svc, r->pending_kind ? r->pending_kind : "switching", r->pending_from,
                      real, " (read back later)", &evs[n_evs++]);
    else if (real != stored) {
        r->since = dhaf_clock_wall(cluster_clock(d->c));
        evs[n_evs++] = (struct event){.kind = EVK_CURRENT_CORRECTED,
                                      .service = svc->name,
                                      .from = ep_name(svc, stored),
                                      .to = ep_name(svc, real)};
    }
    bool write = n_evs > 0 || r->pending_to >= 0;
    int was_pending = r->pending_to;
    r->st.current = real;
    r->pending_to = r->pending_from = -1;
    r->pending_inherited = false;
    r->read_fails = 0;
    r->read_error[0] = '\0';
    r->confirmed = true;
    DHAF_LOG(DHAF_LOG_DEBUG, "event=provider-read service=%s current=%s pending=%s", svc->name,
             real >= 0 ? ep_name(svc, real) : "-",
             was_pending >= 0 ? ep_name(svc, was_pending) : "-");
    if (!write)
        return;
    struct state_change ch = {.st = &r->st, .evs = evs, .n_evs = n_evs};
    if (commit_state(d, r, svc, &ch, &err) != 0) {
        if (err.code != DHAF_EFENCED)
            log_err("state-not-written", svc->name, &err);
        r->confirmed = false; /* `switching` may still be in etcd: read and write again */
    }
}

/* Reads the provider of every service not confirmed yet whose retry time has come. */
static void confirm_all(struct decider *d, struct snap *s)
{
    int64_t now = dhaf_clock_mono(cluster_clock(d->c));
    for (size_t i = 0; i < d->n && term_valid(d->t); i++) {
        struct svc_run *r = d->runs[i];
        if (r->known && !r->confirmed && now >= r->next_read)
            confirm(d, r, &s->cfg.services[i]);
    }
}

/* ------------------------------------------------------------------ provider drift */

/* r's next drift read: an interval from now, plus up to a quarter of one that depends on the
 * service (the services' reads spread out). */
static void schedule_check(struct decider *d, struct svc_run *r, const struct dhaf_config *cfg)
{
    int64_t iv = (int64_t)cfg->provider_check_interval * 1000;
    uint64_t h = dhaf_fnv1a_str(DHAF_FNV_OFFSET, r->name);
    r->next_check =
        dhaf_clock_mono(cluster_clock(d->c)) + iv + (int64_t)(h % (uint64_t)(iv / 4 + 1));
}

/* Reads where r's provider sends traffic; when it is not the decided entry point (changed by
 * hand, by another tool, or by a switch we do not know of), says so (provider-drift, once per
 * drift) and sets it back - unless decisions are paused: then it only says so. */
static void check_drift(struct decider *d, struct svc_run *r, const struct dhaf_service *svc,
                        bool paused)
{
    struct dhaf_err err = {0};
    int real, cur = r->st.current;
    if (read_provider(d, r, -1, &real, &err) != 0) {
        char q[400];
        DHAF_LOG_LIMITED("provider-check-failed", DHAF_LOG_WARN,
                         "event=provider-check-failed service=%s reason=\"%s\" note=\"read again "
                         "in dhaf.provider-check-interval; decisions go on\"",
                         svc->name, dhaf_log_quote(q, sizeof(q), err.msg));
        return;
    }
    if (!term_valid(d->t))
        return;
    if (real == cur) {
        if (r->drift_said)
            DHAF_LOG(DHAF_LOG_INFO, "event=provider-drift-gone service=%s current=%s", svc->name,
                     ep_name(svc, cur));
        r->drift_said = false;
        return;
    }
    bool news = !r->drift_said || r->drift_to != real;
    const char *seen = real >= 0 ? ep_name(svc, real) : "(none)";
    char detail[DHAF_ERR_MSG_MAX + 96];
    bool back = false;
    if (paused) {
        snprintf(detail, sizeof(detail), " (decisions are paused: not set back)");
    } else {
        int64_t t0 = dhaf_clock_mono(cluster_clock(d->c));
        back = call_switch(d, r, cur, real, &err) == 0;
        if (back)
            snprintf(detail, sizeof(detail), "; set back to %s in %lld ms", ep_name(svc, cur),
                     (long long)(dhaf_clock_mono(cluster_clock(d->c)) - t0));
        else
            snprintf(detail, sizeof(detail),
                     "; setting it back failed (tried again in dhaf.provider-check-interval): %s",
                     err.msg);
    }
    char q[DHAF_ERR_MSG_MAX + 200];
    DHAF_LOG(DHAF_LOG_WARN, "event=provider-drift service=%s points_to=%s decided=%s detail=\"%s\"",
             svc->name, seen, ep_name(svc, cur), dhaf_log_quote(q, sizeof(q), detail));
    r->drift_said = !back; /* set back: a later drift is news again */
    r->drift_to = real;
    if (!(news || back) || !term_valid(d->t))
        return;
    struct event ev = {.kind = EVK_PROVIDER_DRIFT,
                       .service = svc->name,
                       .from = seen,
                       .to = ep_name(svc, cur),
                       .detail = detail};
    struct dhaf_err e2;
    if (outbox_commit(d->t, NULL, 0, NULL, 0, &ev, 1, &e2) != 0 && e2.code != DHAF_EFENCED)
        log_err("event-not-recorded", svc->name, &e2);
}

/* The drift reads that are due, at most PROVIDER_CHECKS_PER_S a second. */
static void check_all(struct decider *d, struct snap *s, bool paused)
{
    const struct dhaf_config *cfg = &s->cfg;
    if (cfg->provider_check_interval <= 0)
        return;
    for (size_t i = 0; i < d->n && term_valid(d->t); i++) {
        struct svc_run *r = d->runs[i];
        if (!r->known || !r->confirmed || r->pending_to >= 0 || !r->ready || !r->sw->current ||
            r->st.current < 0)
            continue;
        int64_t now = dhaf_clock_mono(cluster_clock(d->c));
        if (!r->next_check) {
            schedule_check(d, r, cfg);
            continue;
        }
        if (now < r->next_check)
            continue;
        if (!dhaf_rate_take(&d->check_rate, now, PROVIDER_CHECKS_PER_S))
            break; /* the others in the next second */
        schedule_check(d, r, cfg);
        check_drift(d, r, &cfg->services[i], paused);
    }
}

/* ------------------------------------------------------------------ deciding */

/* The events decide() asked for, with their details (details[] holds their text). */
static size_t events_of(const struct dhaf_service *svc, const struct decide_state *st,
                        const struct decide_output *out, const struct ep_tally *t,
                        const struct quorum *q, struct event *evs, char (*details)[160])
{
    const char *cur_name = st->current >= 0 ? ep_name(svc, st->current) : NULL;
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
        case EVK_WOULD_SWITCH:
            ev->from = cur_name;
            ev->to = ep_name(svc, de->ep);
            snprintf(details[n], sizeof(details[n]), " (a %s; decisions are paused)", de->why);
            break;
        case EVK_NO_QUORUM:
        case EVK_QUORUM:
            snprintf(details[n], sizeof(details[n]),
                     " (%u fresh voter%s of %u expected%s%.0u%s; %u needed)", q->fresh,
                     q->fresh == 1 ? "" : "s", q->expected, q->impaired ? ", " : "", q->impaired,
                     q->impaired ? " impaired" : "", q->need);
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

/* Whether the view holds every vote etcd holds now. A switch is decided on the view's votes;
 * a view behind etcd (its watch stalled on a member cut off from the others, until the view's
 * own check reloads it) would switch on votes that have changed since - found by the fault
 * campaign: a switch back to an entry point four of five voters already saw down. So before
 * each switch, one read of the newest vote's revision: when the view has not reached it, the
 * switch waits, and the watch (or the reload) brings the votes and a new decision. A vote
 * deleted (its lease expired) is not seen this way; it makes a voter stale, and the view
 * learns it from the same watch. */
static bool votes_seen(struct decider *d, const struct dhaf_service *svc)
{
    char prefix[256];
    cluster_key(d->c, prefix, sizeof(prefix), "votes/");
    const struct store *s = cluster_store(d->c);
    int64_t newest = 0;
    struct dhaf_err err;
    if (s->ops->latest_mod(s->ud, prefix, &newest, &err) != 0) {
        log_err("switch-deferred", svc->name, &err);
        return false;
    }
    struct view *v = cluster_view(d->c);
    view_rdlock(v);
    struct view_sync vs = view_sync(v);
    view_unlock(v);
    if (newest <= vs.revision)
        return true;
    DHAF_LOG_LIMITED("switch-deferred", DHAF_LOG_WARN,
                     "event=switch-deferred service=%s reason=\"the view has not seen the newest "
                     "votes (a vote at etcd revision %lld, the view at %lld): decided again when "
                     "it has\"",
                     svc->name, (long long)newest, (long long)vs.revision);
    return false;
}

/* Carries out out->action for r: fenced mark (`switching`), the switcher's call under the
 * lease, a read-back of the provider, fenced commit. Whatever leaves the outcome unsure keeps
 * `switching` and makes the service wait for a successful read of the provider. */
static void do_switch(struct decider *d, struct svc_run *r, const struct dhaf_service *svc,
                      const struct decide_output *out, const struct ep_tally *t, int64_t req_rev,
                      const struct event *evs, size_t n_evs)
{
    struct dhaf_err err;
    const char *kind = action_name(out->action);
    if (!votes_seen(d, svc))
        return;
    struct state_change ch = {.st = &out->next,
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
    r->pending_to = out->target;
    r->pending_from = from;
    r->pending_kind = kind;
    r->pending_inherited = false;
    if (commit_state(d, r, svc, &ch, &err) != 0) {
        r->pending_to = r->pending_from = -1;
        log_err("switch-not-started", svc->name, &err);
        return;
    }
    r->st = out->next;
    r->st.current = from; /* until the provider says otherwise */
    if (!term_valid(d->t))
        return; /* the term ended meanwhile: the next leader reads the provider */
    const struct dhaf_clock *clk = cluster_clock(d->c);
    int64_t t0 = dhaf_clock_mono(clk);
    int rc = call_switch(d, r, out->target, from, &err);
    int64_t took = dhaf_clock_mono(clk) - t0;
    char detail[700];
    if (rc != 0) {
        /* Maybe applied, maybe not (or refused because the provider changed): the provider
         * is read before the next decision; `switching` stays until then. The switch is tried
         * again after a back-off, and said once per streak of failures. */
        r->confirmed = false;
        int64_t wait =
            dhaf_backoff_ms(r->switch_fails + 1, SWITCH_BACKOFF_FIRST_MS, SWITCH_BACKOFF_MAX_MS);
        r->next_switch = dhaf_clock_mono(clk) + wait;
        /* read at once - unless the switcher cannot be read: then confirm() would call it
         * again, and that waits for the back-off too */
        r->next_read = r->sw->current ? 0 : r->next_switch;
        if (r->switch_fails++ > 0 || err.code == DHAF_EFENCED) {
            char q[600];
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=switch-failed-again service=%s to=%s attempt=%d retry_in_ms=%lld "
                     "reason=\"%s\"",
                     svc->name, ep_name(svc, out->target), r->switch_fails, (long long)wait,
                     dhaf_log_quote(q, sizeof(q), err.msg));
            return;
        }
        snprintf(detail, sizeof(detail), ": %s", err.msg);
        struct event ev = {.kind = EVK_SWITCH_FAILED,
                           .service = svc->name,
                           .to = ep_name(svc, out->target),
                           .detail = detail};
        struct dhaf_err e2;
        outbox_commit(d->t, NULL, 0, NULL, 0, &ev, 1, &e2);
        return;
    }
    /* Read back: what the provider really does now, not what its reply said. "Nothing set"
     * right after a successful switch is a switcher that cannot tell (an exec init that
     * prints nothing): its switch is trusted. */
    int real = out->target;
    if (r->sw->current && read_provider(d, r, out->target, &real, &err) != 0) {
        log_err("switch-not-read-back", svc->name, &err);
        r->confirmed = false; /* `switching` stays: read again before the next decision */
        r->next_read = 0;
        return;
    }
    if (!term_valid(d->t))
        return;
    struct event ev;
    if (real != out->target) {
        snprintf(detail, sizeof(detail), " (read back after a switch to %s)",
                 ep_name(svc, out->target));
        ev = (struct event){.kind = EVK_CURRENT_CORRECTED,
                            .service = svc->name,
                            .from = ep_name(svc, out->target),
                            .to = real >= 0 ? ep_name(svc, real) : "(none)",
                            .detail = detail};
        r->since = dhaf_clock_wall(clk);
    } else {
        bool why = from >= 0 && t[from].unhealthy;
        char tries[64] = "";
        if (r->switch_fails > 0)
            snprintf(tries, sizeof(tries), " after %d failed attempts", r->switch_fails);
        snprintf(detail, sizeof(detail), " done in %lld ms%s%s%s", (long long)took, tries,
                 why ? "; " : "", why ? t[from].reasons : "");
        switch_landed(d, r, svc, kind, from, out->target, detail, &ev);
    }
    r->st.current = real;
    r->pending_to = r->pending_from = -1;
    r->switch_fails = 0;
    struct state_change done = {.st = &r->st, .evs = &ev, .n_evs = 1};
    if (commit_state(d, r, svc, &done, &err) != 0) {
        log_err("switch-not-recorded", svc->name, &err);
        r->confirmed = false;
    }
}

/* Logs the entry points whose counts changed since the last round (event=ep-votes). */
static void log_counts(struct svc_run *r, const struct dhaf_service *svc, const struct ep_tally *t)
{
    for (size_t e = 0; e < svc->n_eps; e++) {
        const struct ep_tally *b = &t[e];
        if (r->shown_valid && r->shown[e].healthy == b->healthy &&
            r->shown[e].unhealthy == b->unhealthy && r->shown[e].voters == b->voters)
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
    for (size_t e = 0; e < svc->n_eps; e++) {
        r->shown[e].healthy = (uint16_t)t[e].healthy;
        r->shown[e].unhealthy = (uint16_t)t[e].unhealthy;
        r->shown[e].voters = (uint16_t)t[e].voters;
    }
    r->shown_valid = true;
}

/* An ep-flapping / ep-calm event for each entry point whose hold changed (returns their
 * number; evs and details have room for one per entry point). */
static size_t flap_events(const struct svc_run *r, const struct dhaf_service *svc,
                          const struct dhaf_config *cfg, const bool *changed, struct event *evs,
                          char (*details)[160])
{
    size_t n = 0;
    for (size_t e = 0; e < r->mem.n_flap && e < DECIDE_MAX_EPS; e++) {
        if (!changed[e])
            continue;
        const struct flap *f = &r->mem.flap[e];
        snprintf(details[n], sizeof(details[n]), " (penalty %.1f; %s at %d%s)", (double)f->penalty,
                 f->held ? "held down" : "released below",
                 f->held ? cfg->flap_threshold : cfg->flap_threshold / 2,
                 f->held ? ", halving every dhaf.flap-half-life" : "");
        evs[n] = (struct event){.kind = f->held ? EVK_EP_FLAPPING : EVK_EP_CALM,
                                .service = svc->name,
                                .from = ep_name(svc, (int)e),
                                .detail = details[n]};
        n++;
    }
    return n;
}

/* Decides for every service; returns true when a switch happened. */
static bool decide_all(struct decider *d, struct snap *s, bool paused)
{
    struct view *v = cluster_view(d->c);
    int64_t fresh = leader_fresh_ms(&s->cfg);
    view_rdlock(v);
    /* a new term decides once every voter has a vote, or a vote lease's TTL after it began */
    int64_t since = term_opened_ms(d->t);
    bool complete = view_tally_complete(v, fresh, since);
    view_unlock(v);
    if (!complete) {
        if (!d->waiting)
            DHAF_LOG(DHAF_LOG_INFO,
                     "event=decisions-wait epoch=%lld note=\"not every voter has a vote in the "
                     "view since it (re)synced with etcd; no decision on a partial tally\"",
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
        if (!r->known || !r->confirmed || svc->n_eps > DECIDE_MAX_EPS)
            continue;
        struct ep_tally t[DECIDE_MAX_EPS];
        struct quorum q;
        struct decide_request req;
        int64_t req_rev;
        view_rdlock(v);
        view_tally(v, &s->cfg, svc, t, &q);
        view_request(v, svc, &req, &req_rev);
        view_unlock(v);
        log_counts(r, svc, t);
        struct decide_output out;
        int64_t now = dhaf_clock_mono(cluster_clock(d->c));
        bool flap_changed[DECIDE_MAX_EPS];
        decide_round(&s->cfg, svc, t, &q, &r->st, &req, paused, now, &r->mem, &out, flap_changed);
        struct event evs[DECIDE_MAX_EVENTS + DECIDE_MAX_EPS];
        char details[DECIDE_MAX_EVENTS + DECIDE_MAX_EPS][160];
        size_t n_evs = events_of(svc, &r->st, &out, t, &q, evs, details);
        n_evs += flap_events(r, svc, &s->cfg, flap_changed, evs + n_evs, details + n_evs);
        if (out.action == ACT_NONE)
            r->switch_fails = 0; /* a streak of failed switches ends with the need for one */
        if (out.action != ACT_NONE && out.target >= 0 && r->switch_fails > 0 &&
            now < r->next_switch) {
            /* a failed switch waits for its back-off (do_switch); what else the round found
             * (events, health) is recorded meanwhile, and the switch is decided again later */
            out.action = ACT_NONE;
            out.target = -1;
        }
        if (out.action != ACT_NONE && out.target >= 0) {
            do_switch(d, r, svc, &out, t, req_rev, evs, n_evs);
            switched = true;
        } else if (n_evs || out.purge_request || memcmp(&out.next, &r->st, sizeof(r->st)) != 0) {
            struct dhaf_err err;
            struct state_change ch = {.st = &out.next,
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
    d->fence = (struct dhaf_fence){.ud = t, .left_ms = fence_left_ms, .cancel = term_cancel(t)};
    return d;
}

bool leader_decider_round(struct decider *d)
{
    struct snap *s = snap_get(cluster_snaps(d->c));
    sync_runs(d, s);
    load_states(d, s);
    confirm_all(d, s);
    /* paused (control/pause, or dhaf.dry-run): decisions and drift are shown, not acted on */
    struct view *v = cluster_view(d->c);
    view_rdlock(v);
    bool paused = s->cfg.dry_run || view_find(v, VS_CONTROL, "pause") != NULL;
    view_unlock(v);
    bool switched = decide_all(d, s, paused);
    check_all(d, s, paused);
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
                              const char *ep, const struct event_actor *actor, struct dhaf_err *err)
{
    const struct dhaf_service *svc = dhaf_config_service(cfg, service);
    if (!svc)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "there is no service named \"%.64s\"", service);
    if (dhaf_service_ep_index(svc, ep) < 0)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "service %s has no entry point \"%.64s\"", service,
                            ep);
    /* requested_by keeps the caller's own words when given (the original's field), else who
     * it authenticated as; actor is always the authenticated identity */
    const char *by = actor->comment && *actor->comment ? actor->comment : actor->name;
    json_t *j = json_pack("{s:s, s:s, s:s, s:I}", "ep", ep, "requested_by", by ? by : "", "actor",
                          actor->name ? actor->name : "", "at",
                          (json_int_t)dhaf_clock_wall(cluster_clock(c)));
    char *text = dhaf_json_dump(j);
    json_decref(j);
    char key[300], detail[400];
    svc_key(c, service, "switchover", key, sizeof(key));
    event_actor_text(actor, detail, sizeof(detail));
    struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = text};
    struct event ev = {.kind = EVK_SWITCHOVER_REQUESTED,
                       .service = service,
                       .to = ep,
                       .detail = detail,
                       .actor = actor};
    int rc = outbox_record_ops(c, NULL, 0, &put, 1, &ev, 1, err);
    free(text);
    return rc;
}

/* The record an operator's change leaves: who, from where, their words, when. */
static char *actor_record(struct cluster *c, const struct event_actor *actor)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:I}", "actor", actor->name ? actor->name : "", "role",
                          actor->role ? actor->role : "", "peer", actor->peer ? actor->peer : "",
                          "at", (json_int_t)dhaf_clock_wall(cluster_clock(c)));
    if (actor->comment && *actor->comment)
        json_object_set_new(j, "comment", json_string(actor->comment));
    char *text = dhaf_json_dump(j);
    json_decref(j);
    return text;
}

int leader_drain(struct cluster *c, const struct dhaf_config *cfg, const char *service,
                 const char *ep, bool drain, const struct event_actor *actor, struct dhaf_err *err)
{
    const struct dhaf_service *svc = dhaf_config_service(cfg, service);
    if (!svc)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "there is no service named \"%.64s\"", service);
    int idx = dhaf_service_ep_index(svc, ep);
    if (idx < 0)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "service %s has no entry point \"%.64s\"", service,
                            ep);
    char path[100], key[512], detail[400];
    snprintf(path, sizeof(path), "drained/%.64s", ep);
    svc_key(c, service, path, key, sizeof(key));
    event_actor_text(actor, detail, sizeof(detail));
    struct event ev = {.kind = drain ? EVK_EP_DRAINED : EVK_EP_UNDRAINED,
                       .service = service,
                       .to = ep,
                       .detail = detail,
                       .actor = actor};
    if (!drain) { /* only a drained one: the compare says it still is */
        struct dhaf_etcd_cmp cmp = {
            .key = key, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_GT, .num = 0};
        struct dhaf_etcd_op del = {.type = DHAF_ETCD_OP_DELETE, .key = key};
        int rc = outbox_record_ops(c, &cmp, 1, &del, 1, &ev, 1, err);
        if (rc == DHAF_ECONFLICT)
            return dhaf_err_set(err, DHAF_ENOTFOUND, "entry point %s of %s is not drained", ep,
                                service);
        return rc;
    }
    /* Draining every entry point would leave traffic nowhere to go: the last one is kept. */
    struct dhaf_etcd_cmp cmps[DECIDE_MAX_EPS];
    size_t n = 0;
    for (size_t e = 0; e < svc->n_eps && e < DECIDE_MAX_EPS; e++) {
        if ((int)e == idx)
            continue;
        char p2[100], *k = dhaf_xcalloc(1, 512);
        snprintf(p2, sizeof(p2), "drained/%.64s", svc->eps[e].name);
        svc_key(c, service, p2, k, 512);
        cmps[n++] = (struct dhaf_etcd_cmp){
            .key = k, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_EQ, .num = 0};
    }
    /* at least one other entry point undrained: any compare of "not drained" that holds */
    int rc = DHAF_ECONFLICT;
    char *text = actor_record(c, actor);
    struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = text};
    for (size_t k = 0; k < n && rc == DHAF_ECONFLICT; k++)
        rc = outbox_record_ops(c, &cmps[k], 1, &put, 1, &ev, 1, err);
    free(text);
    for (size_t k = 0; k < n; k++)
        free((char *)cmps[k].key);
    if (rc == DHAF_ECONFLICT)
        return dhaf_err_set(err, DHAF_ECONFLICT,
                            "every other entry point of %s is drained: draining %s too would "
                            "leave traffic nowhere to go; undrain one first",
                            service, ep);
    return rc;
}

int leader_pause(struct cluster *c, bool pause, const struct event_actor *actor,
                 struct dhaf_err *err)
{
    char key[300], detail[400];
    cluster_key(c, key, sizeof(key), "control/pause");
    event_actor_text(actor, detail, sizeof(detail));
    struct event ev = {.kind = pause ? EVK_PAUSED : EVK_RESUMED, .detail = detail, .actor = actor};
    if (!pause) {
        struct dhaf_etcd_cmp cmp = {
            .key = key, .target = DHAF_ETCD_CREATE_REV, .result = DHAF_ETCD_GT, .num = 0};
        struct dhaf_etcd_op del = {.type = DHAF_ETCD_OP_DELETE, .key = key};
        int rc = outbox_record_ops(c, &cmp, 1, &del, 1, &ev, 1, err);
        return rc == DHAF_ECONFLICT ? dhaf_err_set(err, DHAF_ENOTFOUND, "decisions are not paused")
                                    : rc;
    }
    char *text = actor_record(c, actor);
    struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = text};
    int rc = outbox_record_ops(c, NULL, 0, &put, 1, &ev, 1, err);
    free(text);
    return rc;
}

int leader_purge_switchover(struct cluster *c, const struct dhaf_config *cfg, const char *service,
                            const struct event_actor *actor, char *purged, size_t len,
                            struct dhaf_err *err)
{
    if (!dhaf_config_service(cfg, service))
        return dhaf_err_set(err, DHAF_ENOTFOUND, "there is no service named \"%.64s\"", service);
    char key[300];
    svc_key(c, service, "switchover", key, sizeof(key));
    purged[0] = '\0';
    /* The request read, then removed only if it is still that one, with the audit event in
     * the same transaction; a request written in between makes it read again. */
    for (int attempt = 0;; attempt++) {
        struct dhaf_kvs kvs;
        int rc = store_get(cluster_store(c), key, &kvs, err);
        if (rc)
            return rc;
        int64_t mod = kvs.n == 1 ? kvs.kvs[0].mod_rev : 0;
        purged[0] = '\0';
        json_t *j = NULL;
        struct dhaf_err perr;
        if (kvs.n == 1 &&
            dhaf_json_parse_object(kvs.kvs[0].value, kvs.kvs[0].value_len, key, &j, &perr) == 0) {
            const char *ep = dhaf_json_str(j, "ep");
            snprintf(purged, len, "%s", ep ? ep : "");
            json_decref(j);
        }
        dhaf_kvs_release(&kvs);
        char detail[500], who[400];
        event_actor_text(actor, who, sizeof(who));
        snprintf(detail, sizeof(detail), "%s%s", who,
                 mod ? "" : "; no switchover request was pending");
        struct dhaf_etcd_cmp cmp = {
            .key = key, .target = DHAF_ETCD_MOD_REV, .result = DHAF_ETCD_EQ, .num = mod};
        struct dhaf_etcd_op del = {.type = DHAF_ETCD_OP_DELETE, .key = key};
        struct event ev = {.kind = EVK_SWITCHOVER_PURGED,
                           .service = service,
                           .to = purged[0] ? purged : NULL,
                           .detail = detail,
                           .actor = actor};
        rc = outbox_record_ops(c, &cmp, 1, &del, 1, &ev, 1, err);
        if (rc != DHAF_ECONFLICT || attempt >= 4)
            return rc;
    }
}
