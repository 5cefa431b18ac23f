/* SPDX-License-Identifier: MIT */
/* dhaf-sim's engine (sim.h): a discrete-event loop per rule over the same world. */
#include "sim.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "decide.h"
#include "dhaf/alloc.h"
#include "dhaf/probe.h"
#include "votes.h"

#define SLOW_MS         100 /* the probe engine's slow-check suspicion (providers/probe.c) */
#define BURST_GAP_MS    250 /* one burst check of an entry point per voter per this long */
#define ORIG_HB_MS      5000
#define ORIG_ALIVE_MS   30000
#define ORIG_ATTEMPTS   2 /* the original web checker's `retries`: total attempts */
#define LOCAL_RISE      2
#define MAX_RUN_TARGETS 2

const char *sim_rule_name(enum sim_rule r)
{
    static const char *const names[SIM_N_RULES] = {"dhaf", "original", "local"};
    return r < SIM_N_RULES ? names[r] : "?";
}

/* ------------------------------------------------------------------ random draws */

uint64_t sim_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double sim_random_unit(uint64_t *state)
{
    return (double)(sim_random(state) >> 11) / 9007199254740992.0;
}

int sim_option_long(const char *prog, const char *opt, const char *value, long lo, long hi,
                    long *out)
{
    char *end;
    errno = 0;
    *out = strtol(value, &end, 10);
    if (errno || end == value || *end || *out < lo || *out > hi) {
        fprintf(stderr, "%s: %s wants a whole number from %ld to %ld, not \"%s\"\n", prog, opt, lo,
                hi, value);
        return 2;
    }
    return 0;
}

static double rnd_normal(uint64_t *s, double mean, double sd)
{
    double u = sim_random_unit(s), v = sim_random_unit(s);
    if (u < 1e-12)
        u = 1e-12;
    return mean + sd * sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* ------------------------------------------------------------------ the event queue */

enum ev_type {
    EV_CHANGE,   /* aux: the world change's index */
    EV_TACT,     /* the leader's tact (local: the checker's) */
    EV_ROUND,    /* a voter's scheduled round */
    EV_CHECK,    /* aux: a run, ep: its slot - a check ended */
    EV_SLOW,     /* aux: a run, ep: its slot - a check has run long */
    EV_BURST,    /* ep: a suspicion heard by voter */
    EV_VOTE,     /* voter's vote reaches the leader */
    EV_EXPIRE,   /* voter's vote lease may have ended */
    EV_SWITCHED, /* the switch in flight landed */
    EV_BEAT,     /* original: voter's heartbeat */
};

struct ev {
    int64_t t;
    uint64_t seq;
    enum ev_type type;
    int voter, ep, aux;
    uint64_t run; /* EV_CHECK, EV_SLOW: the run's serial (a slot is reused by later runs) */
};

struct heap {
    struct ev *v;
    size_t n, cap;
    uint64_t seq;
};

static bool ev_before(const struct ev *a, const struct ev *b)
{
    return a->t != b->t ? a->t < b->t : a->seq < b->seq;
}

static void heap_push(struct heap *h, struct ev e)
{
    DHAF_GROW(h->v, h->n + 1, h->cap);
    e.seq = h->seq++;
    size_t i = h->n++;
    while (i > 0 && ev_before(&e, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = e;
}

static struct ev heap_pop(struct heap *h)
{
    struct ev top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && ev_before(&h->v[c + 1], &h->v[c]))
            c++;
        if (!ev_before(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

/* ------------------------------------------------------------------ the world's state */

struct stall {
    int64_t from, to;
};

struct voter_env {
    bool frozen, cut;
    int64_t thawed_at;
    enum sim_backend net[SIM_MAX_EPS]; /* SIM_UP: the route works */
    double net_a[SIM_MAX_EPS], net_b[SIM_MAX_EPS];
    struct stall *stalls; /* overloaded: when the voter stalls (sorted) */
    size_t n_stalls;
};

/* A group of checks started together by one voter (a round, a burst, a re-check). */
enum run_kind { RUN_ROUND, RUN_BURST, RUN_RECHECK, RUN_CONFIRM };

struct run {
    enum run_kind kind;
    int voter;
    unsigned gen; /* the voter's generation when it started (a freeze loses the run) */
    int64_t started;
    int n, pending;
    int eps[SIM_MAX_EPS];
    bool ok[SIM_MAX_EPS], done[SIM_MAX_EPS];
    bool timed_out[SIM_MAX_EPS];
    bool weak[SIM_MAX_EPS]; /* a burst failure that is weak evidence: held, not confirmed */
    int64_t ends[SIM_MAX_EPS];
    int suspected; /* RUN_BURST / RUN_RECHECK: the entry point checked again (-1: none) */
    int raise;     /* RUN_ROUND: its scheduled check of the current entry point failed - a
                      suspicion once the checks ending with it are taken (-1: none) */
    uint64_t serial;
    bool used;
};

/* dhaf's voter: the probe engine's opinion of each entry point, and its vote. */
struct dv_ep {
    bool known, opinion, held, vouched;
    int64_t fail_at, usual_ms, last_burst;
    int busy; /* its checks in flight */
};

struct voter {
    unsigned gen;
    /* dhaf */
    struct dv_ep e[SIM_MAX_EPS];
    uint64_t seq;
    char *sent;          /* the vote last written (JSON) */
    uint64_t sent_sig;   /* ... what it says (vote_sig) */
    bool round_pending;  /* an EV_ROUND is queued */
    bool round_running;  /* a scheduled round has checks in flight */
    int64_t lease_until; /* the vote lease's end as etcd sees it (0: no vote) */
    bool expire_queued;  /* an EV_EXPIRE is queued (one at a time) */
    struct vote seen;    /* the leader's copy */
    bool has_seen;
    char *in_flight; /* written, not yet at the leader */
    bool recorded;   /* replayed from SIM_VOTE changes, not modelled */
    bool rec_alive;  /* ... its vote key exists */
    /* original */
    bool op_known[SIM_MAX_EPS], op_ok[SIM_MAX_EPS];
    int64_t beat; /* last heartbeat (0: never) */
};

struct sim {
    const struct sim_opts *o;
    const struct sim_world *w;
    enum sim_rule rule;
    struct sim_outcome *out;
    uint64_t rng;
    struct heap h;
    int64_t now;
    size_t n_eps;
    struct voter_env env[SIM_MAX_VOTERS];
    struct voter v[SIM_MAX_VOTERS];
    struct {
        enum sim_backend b;
        double a, c;
    } backend[SIM_MAX_EPS];
    struct run **runs; /* each allocated on its own: a run in use never moves */
    uint64_t serials;
    size_t n_runs, runs_cap;
    int64_t tact_ms;
    /* the leader */
    struct decide_state st;
    struct decide_memory mem;
    struct flap flap[SIM_MAX_EPS];
    bool complete;  /* every voter had voted once (or a vote lease passed): decisions */
    bool switching; /* a switch in flight */
    int switch_to;
    const char *switch_kind;
    /* local */
    int rises[SIM_MAX_EPS];
    bool up[SIM_MAX_EPS];
};

static void at(struct sim *s, int64_t t, enum ev_type type, int voter, int ep, int aux)
{
    heap_push(&s->h, (struct ev){.t = t, .type = type, .voter = voter, .ep = ep, .aux = aux});
}

__attribute__((format(printf, 2, 3))) static void trace(struct sim *s, const char *fmt, ...)
{
    if (!s->o->trace)
        return;
    fprintf(s->o->trace, "t=%lld.%03llds rule=%s ", (long long)(s->now / 1000),
            (long long)(s->now % 1000), sim_rule_name(s->rule));
    va_list ap;
    va_start(ap, fmt);
    vfprintf(s->o->trace, fmt, ap);
    va_end(ap);
    fputc('\n', s->o->trace);
}

static void sched_round(struct sim *s, int vi, int64_t t)
{
    s->v[vi].round_pending = true;
    at(s, t, EV_ROUND, vi, -1, 0);
}

static const char *vname(const struct sim *s, int i)
{
    static char names[SIM_MAX_VOTERS][24];
    if (s->o->voter_names)
        return s->o->voter_names[i];
    snprintf(names[i], sizeof(names[i]), "node-%d", i + 1);
    return names[i];
}

static const char *ename(const struct sim *s, int e)
{
    return e >= 0 ? s->o->svc->eps[e].name : "(none)";
}

/* How long a stalled voter is held up in [from, from + d) (stalls inside push the end out). */
static int64_t stalled(const struct voter_env *env, int64_t from, int64_t d)
{
    int64_t end = from + d;
    for (size_t i = 0; i < env->n_stalls; i++) {
        const struct stall *st = &env->stalls[i];
        if (st->from >= end)
            break;
        if (st->to <= from)
            continue;
        int64_t lo = st->from > from ? st->from : from;
        end += st->to - lo;
    }
    return end - from;
}

/* When a voter can next act at or after t (not inside a stall). */
static int64_t awake(const struct voter_env *env, int64_t t)
{
    for (size_t i = 0; i < env->n_stalls; i++)
        if (env->stalls[i].from <= t && t < env->stalls[i].to)
            t = env->stalls[i].to;
    return t;
}

/* One attempt at entry point e from voter vi started at t: whether it passed, and its time. */
static bool attempt(struct sim *s, int vi, int e, int64_t t, int64_t *took, bool *timed_out)
{
    const struct voter_env *env = &s->env[vi];
    int timeout = s->o->timeout_ms;
    enum sim_backend b = env->net[e] != SIM_UP ? env->net[e] : s->backend[e].b;
    double a = env->net[e] != SIM_UP ? env->net_a[e] : s->backend[e].a;
    double c = env->net[e] != SIM_UP ? env->net_b[e] : s->backend[e].c;
    int64_t d;
    bool ok;
    switch (b) {
    case SIM_REFUSED:
        d = 1, ok = false;
        break;
    case SIM_HUNG:
        d = timeout, ok = false;
        break;
    case SIM_SLOW: {
        double x = rnd_normal(&s->rng, a, c);
        d = x < 1 ? 1 : (int64_t)x;
        ok = true;
        break;
    }
    case SIM_FLAKY:
        ok = sim_random_unit(&s->rng) >= a;
        d = ok ? 5 + (int64_t)(sim_random_unit(&s->rng) * 25) : 1;
        break;
    default:
        d = 5 + (int64_t)(sim_random_unit(&s->rng) * 25), ok = true;
        break;
    }
    *timed_out = false;
    if (d >= timeout) {
        d = timeout;
        ok = false;
        *timed_out = true;
    }
    int64_t late = stalled(env, t, d); /* a stalled process reads its timer late */
    if (late > d && late >= timeout) {
        *timed_out |= ok;
        ok = false;
    }
    d = late;
    *took = d;
    return ok;
}

/* A whole check (attempts one after the other until one passes); *timed_out: its last
 * attempt failed by the timeout (the checkers' reason "timeout"). */
static bool check(struct sim *s, int vi, int e, int64_t t, int attempts, int64_t *took,
                  bool *timed_out)
{
    int64_t total = 0;
    bool ok = false;
    for (int k = 0; k < attempts && !ok; k++) {
        int64_t d;
        ok = attempt(s, vi, e, t + total, &d, timed_out);
        total += d;
    }
    *took = total;
    return ok;
}

/* ------------------------------------------------------------------ switching */

static void switch_start(struct sim *s, int to, const char *kind)
{
    s->switching = true;
    s->switch_to = to;
    s->switch_kind = kind;
    at(s, s->now + (s->o->switch_ms > 0 ? s->o->switch_ms : 5), EV_SWITCHED, -1, -1, 0);
}

static void switch_landed(struct sim *s)
{
    struct sim_outcome *o = s->out;
    if (o->n_sw < SIM_MAX_SWITCHES)
        o->sw[o->n_sw] = (struct sim_switch){s->now, s->st.current, s->switch_to, s->switch_kind};
    o->n_sw++;
    trace(s, "event=%s from=%s to=%s", s->switch_kind, ename(s, s->st.current),
          ename(s, s->switch_to));
    s->st.current = s->switch_to;
    s->switching = false;
}

/* ------------------------------------------------------------------ dhaf: the leader */

static int64_t lease_ms(const struct sim *s)
{
    return (int64_t)VOTE_LEASE_TACTS * s->tact_ms;
}

static void dhaf_decide(struct sim *s)
{
    if (s->switching)
        return;
    const struct vote *fresh[SIM_MAX_VOTERS];
    size_t n = 0;
    for (size_t i = 0; i < s->o->n_voters; i++)
        if (s->v[i].has_seen && s->now < s->v[i].lease_until)
            fresh[n++] = &s->v[i].seen;
    /* as a new term: decisions once every voter has a vote, or a vote lease after the start */
    if (!s->complete && n < s->o->n_voters && s->now < lease_ms(s))
        return;
    s->complete = true;
    struct ep_tally t[SIM_MAX_EPS];
    struct quorum q;
    tally_votes(s->o->cfg, s->o->svc, fresh, n, (unsigned)s->o->n_voters, t, &q);
    struct decide_request req = {0};
    struct decide_output out;
    bool changed[DECIDE_MAX_EPS];
    decide_round(s->o->cfg, s->o->svc, t, &q, &s->st, &req, false, s->now, &s->mem, &out, changed);
    s->out->n_decisions++;
    for (size_t k = 0; k < out.n_events; k++) {
        const struct decide_event *de = &out.events[k];
        trace(s, "event=%s%s%s fresh=%u impaired=%u need=%u", event_kind_info(de->kind)->name,
              de->ep >= 0 ? " ep=" : "", de->ep >= 0 ? ename(s, de->ep) : "", q.fresh, q.impaired,
              q.need);
    }
    for (size_t e = 0; e < s->n_eps; e++)
        if (changed[e])
            trace(s, "event=%s ep=%s", s->flap[e].held ? "ep-flapping" : "ep-calm",
                  ename(s, (int)e));
    int current = s->st.current;
    s->st = out.next;
    s->st.current = current;
    if (out.action != ACT_NONE && out.target >= 0)
        switch_start(s, out.target, action_name(out.action));
}

/* ------------------------------------------------------------------ dhaf: a voter */

/* What a vote says (known, healthy, held of each entry point): a vote is written when it
 * changes, as vote_same decides in dhaf-node. */
static uint64_t vote_sig(const struct voter *v, size_t n)
{
    uint64_t sig = 1;
    for (size_t e = 0; e < n; e++)
        sig = sig << 3 | (uint64_t)v->e[e].known |
              (uint64_t)(v->e[e].opinion || v->e[e].held) << 1 | (uint64_t)v->e[e].held << 2;
    return sig;
}

/* Writes the voter's vote when what it says changed or its lease ended, and renews the lease
 * (renew: a round ended); the leader hears it one etcd latency later. */
static void dv_publish(struct sim *s, int vi, bool renew)
{
    struct voter *v = &s->v[vi];
    if (s->env[vi].cut || s->env[vi].frozen)
        return;
    int64_t etcd = s->o->etcd_ms > 0 ? s->o->etcd_ms : 5;
    uint64_t sig = vote_sig(v, s->n_eps);
    if (v->sent && v->sent_sig == sig && v->lease_until > s->now) {
        if (renew)
            v->lease_until = s->now + lease_ms(s); /* (the queued EV_EXPIRE looks again) */
        return;
    }
    struct dhaf_probe_result r[SIM_MAX_EPS];
    memset(r, 0, sizeof(r));
    for (size_t e = 0; e < s->n_eps; e++) {
        r[e].service = s->o->svc->name;
        r[e].ep = s->o->svc->eps[e].name;
        r[e].known = v->e[e].known;
        r[e].healthy = v->e[e].opinion || v->e[e].held;
        r[e].raw_healthy = r[e].healthy;
        r[e].held = v->e[e].held;
        r[e].reason = r[e].healthy ? "" : "timeout";
    }
    free(v->sent);
    v->sent = vote_encode(vname(s, vi), "node", ++v->seq, r, s->n_eps);
    v->sent_sig = sig;
    free(v->in_flight);
    v->in_flight = dhaf_xstrdup(v->sent);
    v->lease_until = s->now + etcd + lease_ms(s);
    at(s, s->now + etcd, EV_VOTE, vi, -1, 0);
    if (!v->expire_queued) {
        v->expire_queued = true;
        at(s, v->lease_until, EV_EXPIRE, vi, -1, 0);
    }
}

static void run_at(struct sim *s, int64_t t, enum ev_type type, const struct run *r, int slot,
                   int ri)
{
    heap_push(
        &s->h,
        (struct ev){
            .t = t, .type = type, .voter = r->voter, .ep = slot, .aux = ri, .run = r->serial});
}

static int new_run(struct sim *s, enum run_kind kind, int vi)
{
    size_t i = 0;
    while (i < s->n_runs && s->runs[i]->used)
        i++;
    if (i == s->n_runs) {
        DHAF_GROW(s->runs, s->n_runs + 1, s->runs_cap);
        s->runs[s->n_runs++] = dhaf_xcalloc(1, sizeof(struct run));
    }
    struct run *r = s->runs[i];
    *r = (struct run){.serial = ++s->serials,
                      .kind = kind,
                      .voter = vi,
                      .gen = s->v[vi].gen,
                      .started = s->now,
                      .suspected = -1,
                      .raise = -1,
                      .used = true};
    return (int)i;
}

static int64_t usual(const struct dv_ep *e)
{
    return e->usual_ms > 0 ? e->usual_ms : 20;
}

/* Starts the checks of run ri (targets already in it). */
static void run_start(struct sim *s, int ri)
{
    struct run *r = s->runs[ri];
    int attempts = s->rule == SIM_ORIGINAL ? ORIG_ATTEMPTS
                   : s->rule == SIM_LOCAL  ? 1
                                           : 1 + s->o->retries;
    bool slow_ok = r->kind == RUN_ROUND;
    for (int k = 0; k < r->n; k++) {
        int64_t took;
        if (s->rule == SIM_DHAF)
            s->v[r->voter].e[r->eps[k]].busy++;
        r->ok[k] = check(s, r->voter, r->eps[k], s->now, attempts, &took, &r->timed_out[k]);
        r->ends[k] = s->now + took;
        r->pending++;
        run_at(s, r->ends[k], EV_CHECK, r, k, ri);
        const struct dv_ep *st = &s->v[r->voter].e[r->eps[k]];
        int64_t slow = 3 * usual(st) > SLOW_MS ? 3 * usual(st) : SLOW_MS;
        if (s->rule == SIM_DHAF && slow_ok && r->eps[k] == s->st.current && took > slow &&
            st->opinion && !st->held && r->n <= 16)
            run_at(s, s->now + slow, EV_SLOW, r, k, ri);
    }
}

/* A healthy entry point of the voter to check beside e (-1: none). */
static int witness(const struct sim *s, int vi, int e)
{
    for (size_t x = 0; x < s->n_eps; x++)
        if ((int)x != e && s->v[vi].e[x].known && s->v[vi].e[x].opinion && !s->v[vi].e[x].held)
            return (int)x;
    return -1;
}

static void start_pair(struct sim *s, enum run_kind kind, int vi, int e)
{
    int ri = new_run(s, kind, vi);
    struct run *r = s->runs[ri];
    r->suspected = e;
    r->eps[r->n++] = e;
    int w = witness(s, vi, e);
    if (w >= 0)
        r->eps[r->n++] = w;
    run_start(s, ri);
}

/* Every voter that reaches etcd hears vi's suspicion of e. */
static void suspect(struct sim *s, int vi, int e)
{
    if (s->env[vi].cut)
        return;
    int64_t etcd = s->o->etcd_ms > 0 ? s->o->etcd_ms : 5;
    trace(s, "event=suspect voter=%s ep=%s", vname(s, vi), ename(s, e));
    for (size_t u = 0; u < s->o->n_voters; u++)
        if ((int)u != vi)
            at(s, s->now + 2 * etcd, EV_BURST, (int)u, e, 0);
}

static void dv_burst(struct sim *s, int vi, int e)
{
    struct dv_ep *st = &s->v[vi].e[e];
    if (s->v[vi].recorded || s->env[vi].frozen || s->env[vi].cut || !st->opinion || st->held ||
        s->now - st->last_burst < BURST_GAP_MS)
        return;
    st->last_burst = s->now;
    start_pair(s, RUN_BURST, vi, e);
}

/* A held failure is vouched for when another entry point passes a check started after it
 * came: it is then checked again, and a failure there is confirmed. */
static void vouch(struct sim *s, int vi, int by, int64_t started)
{
    for (size_t x = 0; x < s->n_eps; x++) {
        struct dv_ep *st = &s->v[vi].e[x];
        if ((int)x == by || !st->held || st->vouched || st->fail_at > started || st->busy)
            continue;
        st->vouched = true;
        int ri = new_run(s, RUN_CONFIRM, vi);
        s->runs[ri]->eps[s->runs[ri]->n++] = (int)x;
        run_start(s, ri);
    }
}

static void dv_result(struct sim *s, struct run *r, int k)
{
    struct voter *v = &s->v[r->voter];
    int e = r->eps[k];
    struct dv_ep *st = &v->e[e];
    bool ok = r->ok[k];
    st->busy -= st->busy > 0;
    int64_t took = r->ends[k] - r->started;
    /* a burst check's timeout when the entry point usually takes half as long: the same slow
     * backend tipping over its timeout, weak evidence - held, as a first failure (probe.c) */
    bool weak = !ok && r->kind == RUN_BURST && r->suspected == e && r->timed_out[k] &&
                st->usual_ms > 0 && 2 * st->usual_ms >= took;
    if (ok)
        st->usual_ms = st->usual_ms ? (3 * st->usual_ms + took) / 4 : took;
    bool was_healthy = st->known && st->opinion && !st->held;
    if (ok) {
        st->known = st->opinion = true;
        st->held = st->vouched = false;
        vouch(s, r->voter, e, r->started);
        return;
    }
    if (!st->known || s->n_eps < 2) { /* nothing to hold against */
        st->known = true;
        st->opinion = false;
        st->held = false;
        return;
    }
    bool beside_pass = false;
    for (int j = 0; j < r->n; j++)
        beside_pass |= j != k && r->ok[j] && r->done[j];
    if (st->held && (st->vouched || (r->suspected == e && beside_pass))) {
        st->held = st->vouched = false; /* confirmed */
        st->opinion = false;
        return;
    }
    if (was_healthy && r->kind == RUN_BURST && r->suspected == e && beside_pass && !weak) {
        st->opinion = false; /* a suspicion confirmed beside a pass */
        return;
    }
    if (was_healthy) {
        st->held = true;
        st->vouched = false;
        st->fail_at = s->now;
        r->weak[k] = weak;
        if (r->kind == RUN_ROUND || weak) {
            if (r->kind == RUN_ROUND && e == s->st.current)
                r->raise = e; /* a suspicion, unless the round is impaired */
            start_pair(s, RUN_RECHECK, r->voter, e);
        }
    }
}

static void dv_round_end(struct sim *s, struct run *r)
{
    struct voter *v = &s->v[r->voter];
    v->round_running = false;
    dv_publish(s, r->voter, true);
}

/* Marks the checks of r that end now as done - taken together, as one engine callback: the
 * other EV_CHECKs of the same moment then find nothing new. Returns them as a bit mask. */
static unsigned take_ended(struct sim *s, struct run *r)
{
    unsigned taken = 0;
    for (int k = 0; k < r->n; k++)
        if (!r->done[k] && r->ends[k] == s->now) {
            r->done[k] = true;
            r->pending--;
            taken |= 1u << k;
        }
    return taken;
}

static void dv_check_end(struct sim *s, int ri)
{
    struct run *r = s->runs[ri];
    unsigned taken = take_ended(s, r);
    if (!taken)
        return;
    /* a pass first: a failure beside it reads as the entry point's */
    for (int pass = 1; pass >= 0; pass--)
        for (int k = 0; k < r->n; k++)
            if ((taken >> k & 1) && r->ok[k] == (bool)pass)
                dv_result(s, r, k);
    if (r->kind != RUN_ROUND) {
        /* a failure of a pair held for its witness's result: decided when the witness ends */
        for (int k = 0; k < r->n; k++) {
            int e = r->eps[k];
            struct dv_ep *st = &s->v[r->voter].e[e];
            if (r->done[k] && !r->ok[k] && r->ends[k] < s->now && st->held && r->suspected == e &&
                !r->weak[k]) {
                bool beside = false;
                for (int j = 0; j < r->n; j++)
                    beside |= j != k && r->done[j] && r->ok[j];
                if (beside) {
                    st->held = st->vouched = false;
                    st->opinion = false;
                }
            }
        }
    }
    if (r->raise >= 0) {
        int e = r->raise;
        r->raise = -1;
        /* none from an impaired round: every entry point failing */
        size_t failing = 0;
        for (size_t x = 0; x < s->n_eps; x++)
            failing += !s->v[r->voter].e[x].opinion || s->v[r->voter].e[x].held;
        if (failing < s->n_eps)
            suspect(s, r->voter, e);
    }
    dv_publish(s, r->voter, true); /* a change is written; checks ending renew the lease */
    if (r->pending == 0) {
        if (r->kind == RUN_ROUND)
            dv_round_end(s, r);
        r->used = false;
    }
}

static int64_t next_phase(const struct sim *s, int vi, int64_t after)
{
    int64_t off = s->tact_ms * vi / (int64_t)s->o->n_voters;
    int64_t k = (after - off) / s->tact_ms + 1;
    return k * s->tact_ms + off;
}

static void dv_round(struct sim *s, int vi)
{
    struct voter_env *env = &s->env[vi];
    if (env->frozen)
        return; /* the thaw starts one */
    int64_t wake = awake(env, s->now);
    if (wake > s->now) {
        sched_round(s, vi, wake);
        return;
    }
    if (s->v[vi].round_running) { /* overran: the next starts when it ends (next phase) */
        sched_round(s, vi, next_phase(s, vi, s->now));
        return;
    }
    int ri = new_run(s, RUN_ROUND, vi);
    struct run *r = s->runs[ri];
    for (size_t e = 0; e < s->n_eps; e++)
        if (!s->v[vi].e[e].busy)
            r->eps[r->n++] = (int)e;
    if (r->n == 0) {
        r->used = false;
    } else {
        s->v[vi].round_running = true;
        run_start(s, ri);
    }
    sched_round(s, vi, next_phase(s, vi, s->now));
}

/* ------------------------------------------------------------------ original */

static void orig_round(struct sim *s, int vi)
{
    if (s->env[vi].frozen)
        return;
    int64_t wake = awake(&s->env[vi], s->now);
    if (wake > s->now) {
        sched_round(s, vi, wake);
        return;
    }
    int ri = new_run(s, RUN_ROUND, vi);
    struct run *r = s->runs[ri];
    for (size_t e = 0; e < s->n_eps; e++)
        r->eps[r->n++] = (int)e;
    run_start(s, ri);
}

static void orig_check_end(struct sim *s, int ri)
{
    struct run *r = s->runs[ri];
    take_ended(s, r);
    if (r->pending)
        return;
    /* the tact's opinions are written together, then it sleeps a tact-interval */
    int vi = r->voter;
    if (!s->env[vi].cut)
        for (int k = 0; k < r->n; k++) {
            s->v[vi].op_known[r->eps[k]] = true;
            s->v[vi].op_ok[r->eps[k]] = r->ok[k];
        }
    r->used = false;
    sched_round(s, vi, s->now + s->tact_ms);
}

static void orig_decide(struct sim *s)
{
    if (s->switching)
        return;
    s->out->n_decisions++;
    unsigned alive = 0;
    bool live[SIM_MAX_VOTERS];
    for (size_t i = 0; i < s->o->n_voters; i++) {
        live[i] = s->v[i].recorded ? s->v[i].rec_alive
                                   : s->v[i].beat && s->now - s->v[i].beat <= ORIG_ALIVE_MS;
        alive += live[i];
    }
    unsigned threshold = alive / 2 + 1;
    int top = -1;
    bool healthy[SIM_MAX_EPS];
    for (size_t e = 0; e < s->n_eps; e++) {
        unsigned yes = 0;
        for (size_t i = 0; i < s->o->n_voters; i++)
            yes += live[i] && s->v[i].op_known[e] && s->v[i].op_ok[e];
        healthy[e] = alive > 0 && yes >= threshold;
        if (healthy[e] && top < 0)
            top = (int)e;
    }
    if (top < 0)
        return; /* panic: nothing is switched */
    int cur = s->st.current;
    if (cur >= 0 && !healthy[cur])
        switch_start(s, top, "failover");
    else if (top != cur)
        switch_start(s, top, "switching");
}

/* ------------------------------------------------------------------ local (HAProxy-like) */

/* Traffic goes to the first entry point the checker holds up (none up: it stays). */
static void local_follow(struct sim *s)
{
    int top = -1;
    for (size_t x = 0; x < s->n_eps && top < 0; x++)
        if (s->up[x])
            top = (int)x;
    if (top >= 0 && top != s->st.current && !s->switching)
        switch_start(s, top, s->up[s->st.current] ? "switching" : "failover");
}

static void local_check_end(struct sim *s, int ri)
{
    struct run *r = s->runs[ri];
    unsigned taken = take_ended(s, r);
    for (int k = 0; k < r->n; k++) {
        if (!(taken >> k & 1))
            continue;
        int e = r->eps[k];
        if (r->ok[k]) {
            if (!s->up[e] && ++s->rises[e] >= LOCAL_RISE) {
                s->up[e] = true;
                trace(s, "event=ep-up ep=%s", ename(s, e));
            }
        } else {
            s->rises[e] = 0;
            if (s->up[e]) { /* fall 1 */
                s->up[e] = false;
                trace(s, "event=ep-down ep=%s", ename(s, e));
            }
        }
        local_follow(s);
    }
    if (r->pending == 0)
        r->used = false;
}

static void local_tact(struct sim *s)
{
    if (s->v[0].recorded)
        return; /* what it saw is the first voter's recorded votes */
    if (awake(&s->env[0], s->now) > s->now)
        return; /* a stalled checker misses its turn */
    int ri = new_run(s, RUN_ROUND, 0);
    struct run *r = s->runs[ri];
    for (size_t e = 0; e < s->n_eps; e++)
        r->eps[r->n++] = (int)e;
    run_start(s, ri);
}

/* ------------------------------------------------------------------ the world's changes */

static void stalls_make(struct sim *s, struct voter_env *env, double gap, double longest)
{
    free(env->stalls);
    env->stalls = NULL;
    env->n_stalls = 0;
    size_t cap = 0;
    for (int64_t t = s->now;;) {
        t += (int64_t)(-log(1.0 - sim_random_unit(&s->rng)) * gap) + 1;
        if (t >= s->w->end_ms)
            break;
        int64_t len = (int64_t)(longest * (0.2 + 0.8 * sim_random_unit(&s->rng))) + 1;
        DHAF_GROW(env->stalls, env->n_stalls + 1, cap);
        env->stalls[env->n_stalls++] = (struct stall){t, t + len};
        t += len;
    }
}

/* A recorded vote of voter vi (NULL: its key went away), under each rule. */
static void replay(struct sim *s, int vi, const char *json)
{
    struct voter *v = &s->v[vi];
    struct vote nv;
    struct dhaf_err err;
    bool ok = json && vote_decode(json, strlen(json), vname(s, vi), s->o->cfg, &nv, &err) == 0;
    if (json && !ok)
        trace(s, "event=vote-unreadable voter=%s reason=\"%s\"", vname(s, vi), err.msg);
    v->rec_alive = ok;
    if (s->rule == SIM_DHAF) {
        if (v->has_seen)
            vote_release(&v->seen);
        v->has_seen = ok;
        if (ok) {
            v->seen = nv;
            v->lease_until = INT64_MAX;
        }
        dhaf_decide(s);
        return;
    }
    for (size_t e = 0; ok && e < s->n_eps; e++) {
        const struct vote_result *r = vote_find(&nv, s->o->svc->name, s->o->svc->eps[e].name);
        if (s->rule == SIM_ORIGINAL) {
            v->op_known[e] = r != NULL;
            v->op_ok[e] = r && r->healthy;
        } else if (vi == 0 && r) {
            s->up[e] = r->healthy;
        }
    }
    if (ok)
        vote_release(&nv);
    if (s->rule == SIM_LOCAL && vi == 0)
        local_follow(s);
}

static void apply(struct sim *s, const struct sim_change *c)
{
    bool process = c->kind == SIM_FROZEN || c->kind == SIM_THAWED || c->kind == SIM_CUT ||
                   c->kind == SIM_JOINED;
    if (process && s->rule == SIM_LOCAL)
        return; /* the local checker is no dhaf process */
    struct voter_env *env = c->kind == SIM_BACKEND ? NULL : &s->env[c->voter];
    switch (c->kind) {
    case SIM_BACKEND:
        s->backend[c->ep].b = c->backend;
        s->backend[c->ep].a = c->a;
        s->backend[c->ep].c = c->b;
        break;
    case SIM_FROZEN:
        if (env->frozen)
            break;
        env->frozen = true;
        s->v[c->voter].gen++; /* its checks in flight are lost */
        s->v[c->voter].round_running = false;
        for (size_t e = 0; e < SIM_MAX_EPS; e++)
            s->v[c->voter].e[e].busy = 0;
        break;
    case SIM_THAWED:
        if (!env->frozen)
            break;
        env->frozen = false;
        if (!s->v[c->voter].round_pending)
            sched_round(s, c->voter, s->now);
        break;
    case SIM_CUT:
        env->cut = true;
        break;
    case SIM_JOINED:
        if (!env->cut)
            break;
        env->cut = false;
        if (s->rule == SIM_DHAF)
            dv_publish(s, c->voter, true);
        break;
    case SIM_NET:
        for (size_t e = 0; e < s->n_eps; e++)
            if (c->ep < 0 || c->ep == (int)e) {
                env->net[e] = c->backend;
                env->net_a[e] = c->a;
                env->net_b[e] = c->b;
            }
        break;
    case SIM_OVERLOAD:
        stalls_make(s, env, c->a, c->b);
        break;
    case SIM_VOTE:
        replay(s, c->voter, c->vote);
        break;
    case SIM_CALM: {
        size_t k = 0;
        while (k < env->n_stalls && env->stalls[k].from < s->now)
            k++;
        env->n_stalls = k;
        if (k && env->stalls[k - 1].to > s->now)
            env->stalls[k - 1].to = s->now;
        break;
    }
    default:
        break;
    }
}

/* ------------------------------------------------------------------ the loop */

static void step(struct sim *s, const struct ev *e)
{
    switch (e->type) {
    case EV_CHANGE:
        apply(s, &s->w->changes[e->aux]);
        return;
    case EV_TACT:
        at(s, s->now + s->tact_ms, EV_TACT, -1, -1, 0);
        if (s->rule == SIM_DHAF)
            dhaf_decide(s);
        else if (s->rule == SIM_ORIGINAL)
            orig_decide(s);
        else
            local_tact(s);
        return;
    case EV_SWITCHED:
        switch_landed(s);
        if (s->rule == SIM_DHAF)
            dhaf_decide(s);
        return;
    default:
        break;
    }
    struct voter *v = &s->v[e->voter];
    switch (e->type) {
    case EV_ROUND:
        v->round_pending = false;
        if (s->rule == SIM_DHAF)
            dv_round(s, e->voter);
        else if (s->rule == SIM_ORIGINAL)
            orig_round(s, e->voter);
        break;
    case EV_CHECK:
    case EV_SLOW: {
        struct run *r = s->runs[e->aux];
        if (r->serial != e->run)
            break; /* its run ended long ago (dropped by a freeze) */
        if (!r->used || r->gen != s->v[r->voter].gen) {
            if (r->used && e->type == EV_CHECK && --r->pending == 0)
                r->used = false;
            break;
        }
        if (e->type == EV_SLOW) {
            int64_t held = awake(&s->env[e->voter], s->now);
            if (held == s->now && !s->env[e->voter].frozen)
                suspect(s, e->voter, r->eps[e->ep]);
            break;
        }
        if (s->env[e->voter].frozen)
            break;
        if (s->rule == SIM_DHAF)
            dv_check_end(s, e->aux);
        else if (s->rule == SIM_ORIGINAL)
            orig_check_end(s, e->aux);
        else
            local_check_end(s, e->aux);
        break;
    }
    case EV_BURST:
        dv_burst(s, e->voter, e->ep);
        break;
    case EV_VOTE: {
        if (!v->in_flight)
            break;
        struct vote nv;
        struct dhaf_err err;
        if (vote_decode(v->in_flight, strlen(v->in_flight), "sim", s->o->cfg, &nv, &err) != 0)
            break;
        if (v->has_seen)
            vote_release(&v->seen);
        v->seen = nv;
        v->has_seen = true;
        if (s->o->trace_votes)
            trace(s, "event=vote voter=%s vote=%s", vname(s, e->voter), v->in_flight);
        free(v->in_flight);
        v->in_flight = NULL;
        dhaf_decide(s);
        break;
    }
    case EV_EXPIRE:
        v->expire_queued = false;
        if (s->now < v->lease_until) { /* renewed meanwhile: look again when it may end */
            v->expire_queued = true;
            at(s, v->lease_until, EV_EXPIRE, e->voter, -1, 0);
        } else if (v->has_seen) {
            vote_release(&v->seen);
            v->has_seen = false;
            free(v->sent); /* the next vote is written whole */
            v->sent = NULL;
            trace(s, "event=vote-expired voter=%s", vname(s, e->voter));
            dhaf_decide(s);
        }
        break;
    case EV_BEAT:
        if (!s->env[e->voter].frozen && !s->env[e->voter].cut)
            v->beat = s->now;
        at(s, s->now + ORIG_HB_MS, EV_BEAT, e->voter, -1, 0);
        break;
    default:
        break;
    }
}

static void run_rule(struct sim *s)
{
    for (size_t i = 0; i < s->w->n_changes; i++)
        at(s, s->w->changes[i].at_ms, EV_CHANGE, -1, -1, (int)i);
    at(s, 0, EV_TACT, -1, -1, 0);
    for (size_t i = 0; i < s->w->n_changes; i++)
        if (s->w->changes[i].kind == SIM_VOTE)
            s->v[s->w->changes[i].voter].recorded = true;
    for (size_t i = 0; i < s->o->n_voters && s->rule != SIM_LOCAL; i++) {
        if (s->v[i].recorded)
            continue;
        sched_round(s, (int)i, s->rule == SIM_DHAF ? next_phase(s, (int)i, -1) : 0);
        if (s->rule == SIM_ORIGINAL)
            at(s, 0, EV_BEAT, (int)i, -1, 0);
    }
    while (s->h.n) {
        struct ev e = heap_pop(&s->h);
        if (e.t > s->w->end_ms)
            break;
        s->now = e.t;
        step(s, &e);
    }
    s->out->current = s->st.current;
}

int sim_run(const struct sim_opts *o, const struct sim_world *w,
            struct sim_outcome out[SIM_N_RULES], struct dhaf_err *err)
{
    if (!o->cfg || !o->svc || o->svc->n_eps < 1 || o->svc->n_eps > SIM_MAX_EPS)
        return dhaf_err_set(err, DHAF_EINVAL, "simulate: the service needs 1 to %d entry points",
                            SIM_MAX_EPS);
    if (o->n_voters < 1 || o->n_voters > SIM_MAX_VOTERS)
        return dhaf_err_set(err, DHAF_EINVAL, "simulate: 1 to %d voters, not %zu", SIM_MAX_VOTERS,
                            o->n_voters);
    if (o->timeout_ms < 1 || o->retries < 0 || o->cfg->tact_interval < 1)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "simulate: the check timeout, retries or tact is not usable");
    for (size_t i = 0; i < w->n_changes; i++) {
        const struct sim_change *c = &w->changes[i];
        const char *why = NULL;
        if (c->at_ms < 0 || (i && c->at_ms < w->changes[i - 1].at_ms))
            why = "is out of order (changes are sorted by time, from 0)";
        else if (c->kind >= SIM_N_CHANGES)
            why = "is of no known kind";
        else if (c->kind != SIM_BACKEND && (c->voter < 0 || (size_t)c->voter >= o->n_voters))
            why = "names no voter of the simulation";
        else if ((c->kind == SIM_BACKEND || c->kind == SIM_NET) &&
                 (c->ep < (c->kind == SIM_NET ? -1 : 0) || c->ep >= (int)o->svc->n_eps))
            why = "names no entry point of the service";
        if (why)
            return dhaf_err_set(err, DHAF_EINVAL, "simulate: change %zu %s", i + 1, why);
    }
    for (int rule = 0; rule < SIM_N_RULES; rule++) {
        struct sim *s = dhaf_xcalloc(1, sizeof(*s));
        s->o = o;
        s->w = w;
        s->rule = (enum sim_rule)rule;
        s->out = &out[rule];
        memset(s->out, 0, sizeof(*s->out));
        s->rng = w->seed * 0x2545f4914f6cdd1dULL + (uint64_t)rule + 1;
        s->n_eps = o->svc->n_eps;
        s->tact_ms = (int64_t)o->cfg->tact_interval * 1000;
        s->st.current = 0; /* a cluster running as usual: traffic on the first, quorum */
        s->st.quorum = true;
        s->st.would_target = -1;
        s->mem.flap = s->flap;
        s->mem.n_flap = s->n_eps;
        for (size_t e = 0; e < s->n_eps; e++)
            s->up[e] = true;
        run_rule(s);
        for (size_t i = 0; i < o->n_voters; i++) {
            if (s->v[i].has_seen)
                vote_release(&s->v[i].seen);
            free(s->v[i].sent);
            free(s->v[i].in_flight);
            free(s->env[i].stalls);
        }
        free(s->h.v);
        for (size_t i = 0; i < s->n_runs; i++)
            free(s->runs[i]);
        free(s->runs);
        free(s);
    }
    return 0;
}
