/* SPDX-License-Identifier: MIT */
/* Probe rounds. A round is cut into slots; each entry point's check starts in the slot picked
 * by a hash of (voter, service, entry point), so the same voter checks the same entry point at
 * the same point of every round and different voters are spread apart. The round's thread
 * starts the checks that are due, grouped by checker type into one check() call on a
 * short-lived thread, never more than max_inflight checks at once; when a call ends it
 * smooths each result with rise/fall and tells the caller. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/hash.h"
#include "dhaf/log.h"
#include "dhaf/plugins.h"
#include "dhaf/probe.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"

#define PROBE_MAX_INFLIGHT 256 /* default bound on the checks in flight */
#define PROBE_SLOT_MS      50  /* a round is cut into slots about this long, */
#define PROBE_MAX_SLOTS    64  /* but never into more than this many */
/* Checkers run event loops (libcurl multi, poll, posix_spawn), not deep recursions. */
#define PROBE_STACK_SIZE (256 * 1024)
/* Another voter's suspicion re-checks an entry point at once, but not more often than this. */
#define PROBE_BURST_GAP_MS 250
/* A scheduled check still running after this long, and 3 times its entry point's usual time,
 * is suspect: other voters check at once rather than after its timeout (a hung backend). */
#define PROBE_SLOW_MS 100
/* More checks than this turning slow at once speak of the vantage point (its CPU, its network),
 * not of the entry points: none is suspected. */
#define PROBE_SLOW_MAX 4
/* Only calls of at most this many checks are watched for slow ones: a large deployment's
 * calls (hundreds of checks) would wake the round for each and buy little (measured at 1,000
 * services: start-up peaks of 55-65 MiB against 30-37 MiB unwatched). */
#define PROBE_SLOW_RUN_MAX 16

struct svc_state {
    const struct dhaf_service *svc;
    const struct dhaf_provider *prov;
    void *state;
};

struct ep_state {
    size_t svc;        /* index into the probe's services */
    uint64_t hash;     /* of voter, service and entry point: picks its slot */
    bool known;        /* an opinion exists */
    bool opinion;      /* healthy? */
    int streak;        /* results in a row against the opinion */
    bool held;         /* turned unhealthy, not yet witnessed by another's pass (see probe.h) */
    bool recheck;      /* held: its re-check beside a witness has not started yet */
    int64_t fail_at;   /* held: when the failing result came in (monotonic ms) */
    int64_t vouched;   /* held: when another entry point passed since (0: not yet) */
    int inflight;      /* checks of it that run (a witness may overlap its turn) */
    size_t type;       /* index into the probe's types */
    bool burst;        /* another voter suspects it: check it now, beside a witness */
    int64_t burst_at;  /* when its last burst check started (monotonic ms; 0: never) */
    uint32_t usual_ms; /* its passing checks' time, smoothed (0: none yet) */
};

/* An entry point in its type's queue, with its offset in the current round. */
struct queued {
    uint32_t at;
    size_t ep;
};

/* The entry points of one checker type, and during a round which of them have started. */
struct ptype {
    const struct dhaf_provider *prov;
    bool plugin;          /* its check() is never called from two threads at once */
    struct queued *queue; /* sorted by offset at the start of each round */
    size_t n;
    size_t next; /* queue[next..n) have not started in this round */
    int running; /* its calls in flight */
};

/* One check() call: targets of one type that were due together, on a thread of its own. */
struct run {
    struct dhaf_probe *p;
    struct ptype *type;                /* read by the round's thread only */
    const struct dhaf_provider *prov;  /* what the run's thread calls */
    struct dhaf_check_target *targets; /* copies, contiguous for check() */
    size_t *eps;                       /* the entry point of each target */
    size_t n;
    int64_t started; /* monotonic ms: a pass here vouches for the vantage point since then */
    struct dhaf_check_result *res; /* the run's own results: two runs may check one EP */
    bool threaded;   /* false: it ran on the round's thread (no thread could be made) */
    bool priority;   /* a re-check, witness or confirming check: every result is taken early */
    size_t burst;    /* a burst run: its first `burst` targets are the suspected entry points
                        (another voter asked), the rest their witness */
    int64_t slow_at; /* a scheduled run: when its checks still running turn suspect (0: done) */
    struct run *next_flying; /* the round's runs in flight (the round's thread's) */
    pthread_t thread;
    struct run *next_done;
    struct ready *ready; /* one per target: queued by dhaf_check_done (run is then set) */
    bool *taken;         /* the round's thread has taken the target's result */
    uint8_t *mark;       /* per target: MARK_FINISHED (its checker's thread, atomic), MARK_SLOW,
                            MARK_WEAK (weak_failure) */
};

enum { MARK_FINISHED = 1, MARK_SLOW = 2, MARK_WEAK = 4 };

/* A result its checker has finished before the rest of its call (dhaf_check_done). */
struct ready {
    struct run *run;
    size_t i;
    struct ready *next;
};

struct dhaf_probe {
    struct svc_state *svcs;
    size_t n_svcs;
    struct ptype *types;
    size_t n_types;
    struct dhaf_check_target *targets; /* one per entry point, what each run copies */
    struct ep_state *eps;
    struct dhaf_probe_result *out;
    size_t *pick; /* the entry points of a re-check run (start_rechecks) */
    size_t n;     /* entry points in all */
    int max_inflight;
    bool want_witness; /* a failure was held: check it again beside another now (probe.h) */
    bool want_confirm; /* a held failure was vouched for: check it again now */
    bool want_burst;   /* a suspected entry point waits for its burst check */

    /* Between the round's thread, the runs' threads and the stop hook. */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a run ended, a result is ready, or stop fired */
    struct run *done;    /* ended runs the round's thread has not taken yet */
    struct ready *ready; /* finished results of runs still going, not taken yet */
    bool stopping;
    bool *asked;      /* per entry point: dhaf_probe_suspect asked for a check of it */
    size_t n_asked;   /* how many are asked and not taken by the round's thread yet */
    bool woken;       /* dhaf_probe_wake: an idle wait ends */
    size_t n_held;    /* entry points held (the round's thread's) */
    size_t n_suspect; /* results flagged suspect since the callback last saw them */
};

/* The run whose check() this thread is in (dhaf_check_done finds it here). */
static __thread struct run *this_run;

/* 64-bit FNV-1a of voter "\0" service "\0" ep, the same on every machine and in every run,
 * xor-folded: FNV's low bits depend on the low bits of the input bytes only, and the slot is
 * taken modulo a small number (often a power of two). */
static uint64_t ep_hash(const char *voter, const char *service, const char *ep)
{
    uint64_t h = dhaf_fnv1a_str(dhaf_fnv1a_str(DHAF_FNV_OFFSET, voter), service);
    h = dhaf_fnv1a(h, ep, strlen(ep));
    return h ^ (h >> 32);
}

/* A plugin's check() keeps the threading it was promised: one call of its type at a time. */
static bool is_plugin(const struct dhaf_provider *prov)
{
    for (size_t i = 0; i < dhaf_plugins_count(); i++)
        if (dhaf_plugins_at(i) == prov)
            return true;
    return false;
}

/* The type of prov in p->types, added when new. */
static struct ptype *type_of(struct dhaf_probe *p, const struct dhaf_provider *prov)
{
    for (size_t i = 0; i < p->n_types; i++)
        if (p->types[i].prov == prov)
            return &p->types[i];
    struct ptype *t = &p->types[p->n_types++];
    t->prov = prov;
    t->plugin = is_plugin(prov);
    return t;
}

struct dhaf_probe *dhaf_probe_new(const struct dhaf_service *svcs, size_t n,
                                  const struct dhaf_probe_opts *o, struct dhaf_err *err)
{
    struct dhaf_probe *p = dhaf_xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    dhaf_cond_init_mono(&p->cond);
    p->svcs = dhaf_xcalloc(n ? n : 1, sizeof(*p->svcs));
    p->n_svcs = n;
    p->types = dhaf_xcalloc(n ? n : 1, sizeof(*p->types));
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += svcs[i].n_eps;
    p->n = total;
    p->targets = dhaf_xcalloc(total ? total : 1, sizeof(*p->targets));
    p->eps = dhaf_xcalloc(total ? total : 1, sizeof(*p->eps));
    p->out = dhaf_xcalloc(total ? total : 1, sizeof(*p->out));
    p->pick = dhaf_xcalloc(total + 1, sizeof(*p->pick));
    p->asked = dhaf_xcalloc(total ? total : 1, sizeof(*p->asked));
    p->max_inflight = o && o->max_inflight ? o->max_inflight : PROBE_MAX_INFLIGHT;
    if (p->max_inflight < 0) {
        dhaf_err_set(err, DHAF_EINVAL, "probe: max-inflight %d is negative", p->max_inflight);
        dhaf_probe_free(p);
        return NULL;
    }
    const char *voter = o && o->voter ? o->voter : "";
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct svc_state *s = &p->svcs[i];
        s->svc = &svcs[i];
        s->prov = dhaf_registry_find(DHAF_PKIND_CHECKER, svcs[i].checker.type);
        if (!s->prov || !s->prov->check) {
            dhaf_err_set(err, DHAF_EINVAL, "service %s: no health checker \"%s\"", svcs[i].name,
                         svcs[i].checker.type);
            s->prov = NULL;
            dhaf_probe_free(p);
            return NULL;
        }
        struct dhaf_provider_ctx ctx = {.service = svcs[i].name,
                                        .domain = svcs[i].domain,
                                        .eps = svcs[i].eps,
                                        .n_eps = svcs[i].n_eps};
        if (s->prov->init && s->prov->init(svcs[i].checker.conf, &ctx, &s->state, err) != 0) {
            char msg[DHAF_ERR_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            dhaf_err_set(err, err->code, "service %s: %s checker: %s", svcs[i].name, s->prov->type,
                         msg);
            s->prov = NULL; /* not initialised: nothing to destroy */
            dhaf_probe_free(p);
            return NULL;
        }
        type_of(p, s->prov)->n += svcs[i].n_eps;
        for (size_t e = 0; e < svcs[i].n_eps; e++, k++) {
            struct dhaf_check_target *t = &p->targets[k];
            t->conf = svcs[i].checker.conf;
            t->state = s->state;
            t->service = svcs[i].name;
            t->domain = svcs[i].domain;
            t->ep_name = svcs[i].eps[e].name;
            t->ep_ip = svcs[i].eps[e].ip;
            t->family = svcs[i].eps[e].family;
            t->result = NULL; /* each run has its own results (start_run) */
            p->eps[k].svc = i;
            p->eps[k].hash = ep_hash(voter, svcs[i].name, svcs[i].eps[e].name);
            struct dhaf_probe_result *r = &p->out[k];
            r->service = svcs[i].name;
            r->ep = svcs[i].eps[e].name;
            r->reason = "internal";
            snprintf(r->text, sizeof(r->text), "not checked yet");
        }
    }
    for (size_t i = 0; i < p->n_types; i++) {
        p->types[i].queue = dhaf_xcalloc(p->types[i].n, sizeof(*p->types[i].queue));
        p->types[i].n = 0; /* refilled below */
    }
    for (k = 0; k < total; k++) {
        struct ptype *t = type_of(p, p->svcs[p->eps[k].svc].prov);
        t->queue[t->n++].ep = k;
        p->eps[k].type = (size_t)(t - p->types);
    }
    return p;
}

void dhaf_probe_free(struct dhaf_probe *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_svcs; i++)
        if (p->svcs[i].prov && p->svcs[i].prov->destroy)
            p->svcs[i].prov->destroy(p->svcs[i].state);
    for (size_t i = 0; i < p->n_types; i++)
        free(p->types[i].queue);
    free(p->types);
    free(p->svcs);
    free(p->targets);
    free(p->eps);
    free(p->out);
    free(p->pick);
    free(p->asked);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

static int by_offset(const void *a, const void *b)
{
    const struct queued *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->ep < y->ep ? -1 : x->ep > y->ep;
}

/* Gives every entry point its offset in a round of spread_ms and sorts the queues by it. */
static void plan_round(struct dhaf_probe *p, int spread_ms)
{
    uint64_t n_slots = 1;
    if (spread_ms > 0) {
        n_slots = (uint64_t)spread_ms / PROBE_SLOT_MS;
        n_slots = n_slots < 1 ? 1 : n_slots > PROBE_MAX_SLOTS ? PROBE_MAX_SLOTS : n_slots;
    }
    for (size_t k = 0; k < p->n; k++) {
        uint64_t slot = p->eps[k].hash % n_slots;
        p->out[k].offset_ms = spread_ms > 0 ? (uint32_t)(slot * (uint64_t)spread_ms / n_slots) : 0;
        p->out[k].fresh = false;
    }
    for (size_t i = 0; i < p->n_types; i++) {
        struct ptype *t = &p->types[i];
        for (size_t j = 0; j < t->n; j++)
            t->queue[j].at = p->out[t->queue[j].ep].offset_ms;
        qsort(t->queue, t->n, sizeof(*t->queue), by_offset);
        t->next = 0;
        t->running = 0;
    }
}

/* Applies rise/fall to one fresh result. */
static void smooth(struct ep_state *st, bool raw, int rise, int fall)
{
    if (!st->known) {
        st->known = true;
        st->opinion = raw;
        st->streak = 0;
        return;
    }
    if (raw == st->opinion) {
        st->streak = 0;
        return;
    }
    if (++st->streak >= (raw ? rise : fall)) {
        st->opinion = raw;
        st->streak = 0;
    }
}

static void *run_main(void *arg)
{
    struct run *r = arg;
    struct dhaf_probe *p = r->p;
    struct run *outer = this_run; /* (a run on the round's thread) */
    this_run = r;
    r->prov->check(r->targets, r->n);
    this_run = outer;
    pthread_mutex_lock(&p->lock);
    r->next_done = p->done;
    p->done = r;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* The state of one round, kept by the round's thread. */
struct round {
    int64_t t0;         /* when it started (monotonic ms) */
    int inflight;       /* checks in flight */
    size_t runs;        /* check() calls in flight */
    struct run *flying; /* those calls */
    size_t slow;        /* its checks that turned slow (mark_slow) */
};

/* Starts the next n entry points of t's queue in one check() call (eps NULL), or the n
 * entry points eps (a re-check, witness, confirming or burst check). */
static void start_run(struct dhaf_probe *p, struct round *rd, struct ptype *t, size_t n,
                      const size_t *eps, size_t burst)
{
    struct run *r = dhaf_xcalloc(1, sizeof(*r));
    r->p = p;
    r->type = t;
    r->prov = t->prov;
    r->n = n;
    r->started = dhaf_mono_ms();
    r->targets = dhaf_xcalloc(n, sizeof(*r->targets));
    r->eps = dhaf_xcalloc(n, sizeof(*r->eps));
    r->res = dhaf_xcalloc(n, sizeof(*r->res));
    r->ready = dhaf_xcalloc(n, sizeof(*r->ready));
    r->taken = dhaf_xcalloc(n, sizeof(*r->taken));
    r->mark = dhaf_xcalloc(n, sizeof(*r->mark));
    for (size_t i = 0; i < n; i++) {
        size_t k = eps ? eps[i] : t->queue[t->next + i].ep;
        p->eps[k].inflight++;
        r->eps[i] = k;
        r->targets[i] = p->targets[k];
        r->targets[i].result = &r->res[i];
        r->res[i].reason = "internal";
        snprintf(r->res[i].text, sizeof(r->res[i].text), "the checker gave no result");
    }
    r->priority = eps != NULL;
    r->burst = burst;
    if (!r->priority && n <= PROBE_SLOW_RUN_MAX) /* when a check may turn slow (mark_slow) */
        r->slow_at = r->started + PROBE_SLOW_MS;
    r->next_flying = rd->flying;
    rd->flying = r;
    if (!eps)
        t->next += n;
    t->running++;
    rd->inflight += (int)n;
    rd->runs++;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, PROBE_STACK_SIZE);
    r->threaded = pthread_create(&r->thread, &attr, run_main, r) == 0;
    pthread_attr_destroy(&attr);
    if (!r->threaded) {
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=probe-thread-failed type=%s checks=%zu note=\"run on the round's thread\"",
                 t->prov->type, n);
        run_main(r);
    }
}

void dhaf_check_done(const struct dhaf_check_target *t)
{
    struct run *r = this_run;
    if (!r || !t || t < r->targets || t >= r->targets + r->n)
        return; /* not a target of this thread's run */
    size_t i = (size_t)(t - r->targets);
    __atomic_or_fetch(&r->mark[i], MARK_FINISHED, __ATOMIC_RELAXED); /* (not slow: done) */
    if (!r->priority && t->result && t->result->healthy)
        return; /* a pass of a scheduled check changes nothing urgent: taken at the call's end
                   (a wake-up of the round's thread per check cost more than it gave) */
    struct dhaf_probe *p = r->p;
    pthread_mutex_lock(&p->lock);
    if (!r->ready[i].run) {
        r->ready[i] = (struct ready){.run = r, .i = i, .next = p->ready};
        p->ready = &r->ready[i];
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
}

/* Publishes k's opinion: healthy while it is held. */
static void show(struct dhaf_probe *p, size_t k)
{
    p->out[k].healthy = p->eps[k].opinion || p->eps[k].held;
    p->out[k].held = p->eps[k].held;
}

static void set_held(struct dhaf_probe *p, struct ep_state *st, bool held)
{
    if (held != st->held)
        p->n_held += held ? 1 : (size_t)-1;
    st->held = held;
    if (!held)
        st->recheck = false;
}

/* A held failure is the entry point's own: failing again while the vantage point works. */
static void confirm(struct dhaf_probe *p, size_t k)
{
    set_held(p, &p->eps[k], false);
    show(p, k);
    DHAF_LOG(DHAF_LOG_DEBUG, "event=probe-confirmed service=%s ep=%s", p->out[k].service,
             p->out[k].ep);
}

/* Another entry point than the i-th target's passed in run r (a result taken). */
static bool other_passed(const struct run *r, size_t i)
{
    for (size_t j = 0; j < r->n; j++)
        if (r->taken[j] && r->eps[j] != r->eps[i] && r->res[j].healthy)
            return true;
    return false;
}

/* The i-th target of run r passed: the vantage point worked when r started. Held failures
 * re-checked in r and failing there are confirmed (then true); those that came in before r
 * started and are not vouched for yet are vouched for now - a confirming check of each
 * follows. */
static bool witnessed(struct dhaf_probe *p, const struct run *r, size_t i)
{
    size_t by = r->eps[i];
    bool confirmed = false;
    for (size_t j = 0; j < r->n; j++) {
        size_t k = r->eps[j];
        bool burst = j < r->burst && !(r->mark[j] & MARK_WEAK);
        if (r->taken[j] && k != by && !r->res[j].healthy && p->eps[k].held &&
            (burst || r->started >= p->eps[k].fail_at)) {
            confirm(p, k);
            confirmed = true;
        }
    }
    for (size_t k = 0; p->n_held && k < p->n; k++) {
        struct ep_state *st = &p->eps[k];
        if (k == by || !st->held || st->vouched || st->fail_at > r->started)
            continue;
        st->vouched = dhaf_mono_ms();
        st->recheck = false; /* the confirming check follows */
        p->want_confirm = true;
        DHAF_LOG(DHAF_LOG_DEBUG, "event=probe-witnessed service=%s ep=%s", p->out[k].service,
                 p->out[k].ep);
    }
    return confirmed;
}

/* Whether a burst check's failure is weak evidence: a timeout of an entry point whose usual
 * time is at least half of what this check took - the same slow backend tipping over its
 * timeout now and then, not a backend that changed (bench/decision's "slow" scenario). It is
 * held and checked again, as a first failure; a hung backend that answered fast before is
 * still confirmed by its burst check. */
static bool weak_failure(const struct ep_state *st, const struct dhaf_check_result *raw,
                         int64_t took_ms)
{
    return !raw->healthy && raw->reason && strcmp(raw->reason, "timeout") == 0 &&
           st->usual_ms > 0 && 2 * (int64_t)st->usual_ms >= took_ms;
}

/* Takes the i-th result of run r into the opinions (once). True when what is published of its
 * entry point changed. */
static bool take_result(struct dhaf_probe *p, struct round *rd, struct run *r, size_t i)
{
    if (r->taken[i])
        return false;
    r->taken[i] = true;
    size_t k = r->eps[i];
    const struct dhaf_section *hc = &p->svcs[p->eps[k].svc].svc->checker;
    const struct dhaf_check_result *raw = &r->res[i];
    struct ep_state *st = &p->eps[k];
    struct dhaf_probe_result *o = &p->out[k];
    st->inflight--;
    rd->inflight--;
    bool pub_healthy = o->healthy, pub_held = o->held, pub_known = o->known;
    const char *pub_reason = o->reason;
    bool was = st->known && st->opinion;
    smooth(st, raw->healthy, hc->rise > 0 ? hc->rise : 1, hc->fall > 0 ? hc->fall : 1);
    bool burst_confirmed = false;
    bool suspected = i < r->burst; /* a burst check of it (not its witness's check) */
    bool weak = suspected && weak_failure(st, raw, dhaf_mono_ms() - r->started);
    if (weak)
        __atomic_or_fetch(&r->mark[i], MARK_WEAK, __ATOMIC_RELAXED);
    if (was && !st->opinion && p->n >= 2) { /* turned unhealthy: held until witnessed */
        set_held(p, st, true);
        st->vouched = 0;
        if (suspected && !weak) {
            /* its witness runs beside it: a pass there (taken already, or later in witnessed)
             * confirms it; without one, finish_run asks for a re-check */
            st->fail_at = r->started;
            st->recheck = false;
            burst_confirmed = other_passed(r, i);
        } else {
            st->fail_at = dhaf_mono_ms(); /* the failure may have come at any time of the check */
            st->recheck = true;
            p->want_witness = true;
            if (!suspected && !(r->mark[i] & MARK_SLOW)) { /* (not suspected already) */
                o->suspect = true; /* other voters may check it at once (probe.h) */
                p->n_suspect++;
            }
        }
        DHAF_LOG(DHAF_LOG_DEBUG, "event=probe-held service=%s ep=%s%s", o->service, o->ep,
                 weak        ? " burst=1 weak=1"
                 : suspected ? " burst=1"
                             : "");
        if (burst_confirmed)
            confirm(p, k);
    } else if (st->opinion) {
        set_held(p, st, false);
    } else if (st->held && !raw->healthy &&
               (suspected
                    ? other_passed(r, i)
                    : r->started >= st->fail_at &&
                          ((st->vouched && r->started >= st->vouched) || other_passed(r, i)))) {
        /* failing again while the vantage point is known to work - a pass elsewhere came
         * before this check started, or in the same run (a burst check may have started
         * beside the check that failed first: a second failing check all the same) */
        confirm(p, k);
    }
    show(p, k);
    o->raw_healthy = raw->healthy;
    o->reason = raw->reason ? raw->reason : "internal";
    snprintf(o->text, sizeof(o->text), "%s", raw->text);
    o->latency_ms = raw->latency_ms;
    if (raw->healthy) /* (a quarter of each new pass: one slow pass moves it a little) */
        st->usual_ms = st->usual_ms ? (3 * st->usual_ms + raw->latency_ms) / 4 : raw->latency_ms;
    o->known = true;
    o->fresh = true;
    bool others = raw->healthy && witnessed(p, r, i);
    return others || o->healthy != pub_healthy || o->held != pub_held || !pub_known ||
           (!o->healthy && strcmp(o->reason, pub_reason) != 0);
}

/* An ended run: takes the results not taken yet, and frees it. A failure held in a burst run
 * that its witness did not confirm (it failed too, or there was none) is re-checked as any
 * other held failure. */
static void finish_run(struct dhaf_probe *p, struct round *rd, struct run *r)
{
    if (r->threaded)
        pthread_join(r->thread, NULL);
    for (size_t i = 0; i < r->n; i++)
        take_result(p, rd, r, i);
    for (size_t i = 0; i < r->burst; i++) {
        struct ep_state *st = &p->eps[r->eps[i]];
        if (st->held && !st->vouched && !st->recheck && st->fail_at == r->started) {
            st->recheck = true;
            p->want_witness = true;
        }
    }
    r->type->running--;
    rd->runs--;
    for (struct run **q = &rd->flying; *q; q = &(*q)->next_flying)
        if (*q == r) {
            *q = r->next_flying;
            break;
        }
    free(r->targets);
    free(r->eps);
    free(r->res);
    free(r->ready);
    free(r->taken);
    free(r->mark);
    free(r);
}

/*
 * Starts what is due and fits under the bound, the longest-waiting type first; a plugin's type
 * waits while a call of it runs. Returns when the next entry point not due yet is due
 * (monotonic ms; 0 when none is).
 */
static int64_t start_due(struct dhaf_probe *p, struct round *rd)
{
    /* A part of what is due starts alone only when it is worth a thread; the rest waits for
     * room (never a thread per check). */
    size_t min_part = p->max_inflight / 8 > 1 ? (size_t)p->max_inflight / 8 : 1;
    int64_t now = dhaf_mono_ms();
    for (;;) {
        struct ptype *first = NULL;
        for (size_t i = 0; i < p->n_types; i++) {
            struct ptype *t = &p->types[i];
            if (t->next == t->n || (t->plugin && t->running > 0) ||
                rd->t0 + t->queue[t->next].at > now)
                continue;
            if (!first || t->queue[t->next].at < first->queue[first->next].at)
                first = t;
        }
        if (!first)
            break;
        size_t due = 0;
        while (first->next + due < first->n && rd->t0 + first->queue[first->next + due].at <= now)
            due++;
        size_t room = (size_t)(p->max_inflight - rd->inflight);
        size_t n = due < room ? due : room;
        if (n == 0 || (n < due && n < min_part))
            break; /* wait for room: whoever waited longest goes first */
        pthread_mutex_lock(&p->lock);
        bool stopping = p->stopping; /* fired since the round last looked */
        pthread_mutex_unlock(&p->lock);
        if (stopping)
            break;
        start_run(p, rd, first, n, NULL, 0);
    }
    int64_t next = 0;
    for (size_t i = 0; i < p->n_types; i++) {
        const struct ptype *t = &p->types[i];
        if (t->next == t->n)
            continue;
        int64_t at = rd->t0 + t->queue[t->next].at;
        if (at > now && (next == 0 || at < next))
            next = at;
    }
    return next;
}

/* Witness, re-check and confirming checks are what a failover waits for: they start before
 * the scheduled ones, and may pass max_inflight by a quarter of it. Room left for them: */
static int priority_room(const struct dhaf_probe *p, const struct round *rd)
{
    int reserve = p->max_inflight / 4 > 4 ? p->max_inflight / 4 : 4;
    return p->max_inflight + reserve - rd->inflight;
}

/* Whether st may witness for another entry point of its type: healthy, not held, idle. */
static bool can_witness(const struct ep_state *st)
{
    return st->known && st->opinion && !st->held && !st->inflight;
}

/* Checks another entry point now (of any type), one that is healthy, not held and not in
 * flight (a plugin's type only when no call of it runs): for held failures whose own type has
 * no such entry point to re-check them beside. */
static void start_witness(struct dhaf_probe *p, struct round *rd)
{
    if (priority_room(p, rd) <= 0) {
        p->want_witness = true; /* when a check ends */
        return;
    }
    for (size_t k = 0; k < p->n; k++) {
        const struct ep_state *st = &p->eps[k];
        struct ptype *t = &p->types[st->type];
        if (!can_witness(st) || (t->plugin && t->running > 0))
            continue;
        DHAF_LOG(DHAF_LOG_DEBUG, "event=probe-witness service=%s ep=%s", p->out[k].service,
                 p->out[k].ep);
        start_run(p, rd, t, 1, &k, 0);
        return;
    }
}

/* What pick_of_type does with an entry point: check it now (> 0), not now (< 0; the function
 * may ask for a later look), or it is not wanted at all (0: a witness, maybe). full: the run
 * has no room left. */
typedef int (*want_fn)(struct dhaf_probe *p, struct ep_state *st, const struct ptype *t, bool full);

/* A held failure waiting for its re-check. */
static int want_recheck(struct dhaf_probe *p, struct ep_state *st, const struct ptype *t, bool full)
{
    if (!st->held || !st->recheck)
        return 0;
    if (st->inflight || (t->plugin && t->running > 0) || full) {
        p->want_witness = true; /* when a check ends */
        return -1;
    }
    return 1;
}

/* A suspected entry point (start_bursts). */
static int want_burst(struct dhaf_probe *p, struct ep_state *st, const struct ptype *t, bool full)
{
    if (!st->burst)
        return 0;
    if (!st->known || !st->opinion || st->held ||
        (st->burst_at && dhaf_mono_ms() - st->burst_at < PROBE_BURST_GAP_MS)) {
        st->burst = false; /* nothing to learn from a check now */
        return -1;
    }
    if ((t->plugin && t->running > 0) || full) {
        p->want_burst = true; /* when a check ends */
        return -1;
    }
    return 1;
}

/* Fills p->pick with the entry points of type ti that want says to check now (as many as fit
 * under priority_room, one place kept for a witness); *witness: an entry point of the type
 * that can witness for them (SIZE_MAX: none). Returns how many were picked. */
static size_t pick_of_type(struct dhaf_probe *p, struct round *rd, size_t ti, want_fn want,
                           size_t *witness)
{
    const struct ptype *t = &p->types[ti];
    int room = priority_room(p, rd) - 1; /* (the witness's) */
    size_t n = 0;
    *witness = SIZE_MAX;
    for (size_t k = 0; k < p->n; k++) {
        struct ep_state *st = &p->eps[k];
        if (st->type != ti)
            continue;
        int w = want(p, st, t, (int)n >= room);
        if (w > 0)
            p->pick[n++] = k;
        else if (w == 0 && *witness == SIZE_MAX && can_witness(st))
            *witness = k;
    }
    return n;
}

/*
 * Failures just held are checked again at once, each type's in one run beside a witness: an
 * entry point of that type that is healthy, not held and not in flight. A pass of the witness
 * in the same run shows the vantage point working while they fail again: they are confirmed
 * (finish_run) within one check's time, not a witness's and then a confirming check's; a
 * failure of the witness holds it in turn. A type without a witness gets one from another
 * type (its pass then vouches, and a confirming check follows). An entry point in flight, a
 * plugin's type while a call of it runs, and what finds no room wait for a check to end.
 */
static void start_rechecks(struct dhaf_probe *p, struct round *rd)
{
    p->want_witness = false;
    bool lone = false; /* a type had held failures and no witness */
    for (size_t ti = 0; ti < p->n_types; ti++) {
        const struct ptype *t = &p->types[ti];
        size_t witness, n = pick_of_type(p, rd, ti, want_recheck, &witness);
        if (n == 0)
            continue;
        for (size_t i = 0; i < n; i++)
            p->eps[p->pick[i]].recheck = false;
        if (witness != SIZE_MAX) {
            DHAF_LOG(DHAF_LOG_DEBUG, "event=probe-recheck type=%s checks=%zu witness=%s/%s",
                     t->prov->type, n, p->out[witness].service, p->out[witness].ep);
            p->pick[n++] = witness;
        } else {
            lone = true;
        }
        start_run(p, rd, &p->types[ti], n, p->pick, 0);
    }
    if (lone)
        start_witness(p, rd);
}

/* Held failures vouched for by a pass elsewhere: each is checked again now (not while a
 * check of it runs: its result is taken when it ends). */
static void start_confirms(struct dhaf_probe *p, struct round *rd)
{
    p->want_confirm = false;
    for (size_t k = 0; k < p->n; k++) {
        struct ep_state *st = &p->eps[k];
        struct ptype *t = &p->types[st->type];
        if (!st->held || !st->vouched)
            continue;
        if (st->inflight || priority_room(p, rd) <= 0 || (t->plugin && t->running > 0)) {
            p->want_confirm = true; /* later, when it can */
            continue;
        }
        st->vouched = dhaf_mono_ms(); /* the confirming check starts now */
        start_run(p, rd, t, 1, &k, 0);
    }
}

/*
 * Entry points another voter suspects (dhaf_probe_suspect) are checked at once, each type's in
 * one run beside a witness (as start_rechecks does): a failure there beside a witness's pass is
 * confirmed in one check's time (take_result). One that this voter already sees failing, or
 * checked in a burst less than PROBE_BURST_GAP_MS ago, is not checked again. One whose scheduled
 * check is in flight is checked beside it: that check may have started before the trouble (or
 * hang to its timeout), and either failing check beside a witness's pass confirms.
 */
static void start_bursts(struct dhaf_probe *p, struct round *rd)
{
    pthread_mutex_lock(&p->lock);
    for (size_t k = 0; p->n_asked && k < p->n; k++) {
        if (p->asked[k]) {
            p->asked[k] = false;
            p->n_asked--;
            p->eps[k].burst = true;
            p->want_burst = true;
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (!p->want_burst)
        return;
    p->want_burst = false;
    int64_t now = dhaf_mono_ms();
    for (size_t ti = 0; ti < p->n_types; ti++) {
        size_t witness, n = pick_of_type(p, rd, ti, want_burst, &witness);
        if (n == 0)
            continue;
        for (size_t i = 0; i < n; i++) {
            p->eps[p->pick[i]].burst = false;
            p->eps[p->pick[i]].burst_at = now;
            DHAF_LOG(DHAF_LOG_DEBUG, "event=probe-burst service=%s ep=%s",
                     p->out[p->pick[i]].service, p->out[p->pick[i]].ep);
        }
        size_t suspected = n;
        if (witness != SIZE_MAX)
            p->pick[n++] = witness;
        start_run(p, rd, &p->types[ti], n, p->pick, suspected);
    }
}

/* Starts the burst checks, re-checks and confirming checks that are wanted. */
static void start_priority(struct dhaf_probe *p, struct round *rd)
{
    start_bursts(p, rd);
    if (p->want_witness)
        start_rechecks(p, rd);
    if (p->want_confirm)
        start_confirms(p, rd);
}

static bool all_started(const struct dhaf_probe *p)
{
    for (size_t i = 0; i < p->n_types; i++)
        if (p->types[i].next < p->types[i].n)
            return false;
    return true;
}

/* The stop token's hook (called with the token's lock held: it only wakes the round). */
static void wake_stop(void *arg)
{
    struct dhaf_probe *p = arg;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static int64_t slow_after(const struct ep_state *st)
{
    return 3 * (int64_t)st->usual_ms > PROBE_SLOW_MS ? 3 * (int64_t)st->usual_ms : PROBE_SLOW_MS;
}

/* Whether the i-th check of run r is running past its entry point's slow time at now (and not
 * flagged yet); else *next gets the time it would be, when later. */
static bool is_slow(const struct dhaf_probe *p, const struct run *r, size_t i, int64_t now,
                    int64_t *next)
{
    const struct ep_state *st = &p->eps[r->eps[i]];
    uint8_t mark = __atomic_load_n(&r->mark[i], __ATOMIC_RELAXED);
    if (r->taken[i] || (mark & (MARK_FINISHED | MARK_SLOW)) || !st->known || !st->opinion ||
        st->held)
        return false;
    int64_t at = r->started + slow_after(st);
    if (at <= now)
        return true;
    *next = !*next || at < *next ? at : *next;
    return false;
}

/* Scheduled checks running past their slow time (PROBE_SLOW_MS, or 3 times their entry
 * point's usual time) are flagged suspect, once each - a hung backend is suspected long before
 * its check's timeout - until more than PROBE_SLOW_MAX have turned slow in the round: then
 * none (more is the vantage point's own load or network, and suspicions would only add to
 * it). True when one was flagged. *next: the earliest slow time still ahead (0: none). */
static bool mark_slow(struct dhaf_probe *p, struct round *rd, int64_t *next)
{
    int64_t now = dhaf_mono_ms(), unused = 0;
    size_t slow = 0;
    for (struct run *r = rd->flying; r; r = r->next_flying)
        if (r->slow_at && r->slow_at <= now)
            for (size_t i = 0; i < r->n; i++)
                slow += is_slow(p, r, i, now, &unused);
    rd->slow += slow;
    *next = 0;
    for (struct run *r = rd->flying; r; r = r->next_flying) {
        if (!r->slow_at)
            continue;
        if (r->slow_at > now) {
            *next = !*next || r->slow_at < *next ? r->slow_at : *next;
            continue;
        }
        int64_t later = 0;
        for (size_t i = 0; i < r->n; i++) {
            if (!is_slow(p, r, i, now, &later))
                continue;
            __atomic_or_fetch(&r->mark[i], MARK_SLOW, __ATOMIC_RELAXED);
            size_t k = r->eps[i];
            if (rd->slow > PROBE_SLOW_MAX || p->out[k].suspect)
                continue;
            p->out[k].suspect = true;
            p->n_suspect++;
            DHAF_LOG(DHAF_LOG_DEBUG, "event=probe-slow service=%s ep=%s after_ms=%lld",
                     p->out[k].service, p->out[k].ep, (long long)(now - r->started));
        }
        r->slow_at = later;
        if (later)
            *next = !*next || later < *next ? later : *next;
    }
    if (slow && rd->slow > PROBE_SLOW_MAX && rd->slow - slow <= PROBE_SLOW_MAX)
        DHAF_LOG(DHAF_LOG_DEBUG,
                 "event=probe-slow-many checks=%zu note=\"no more suspected in this round: the "
                 "vantage point's own load or network, more likely\"",
                 rd->slow);
    return slow > 0 && rd->slow <= PROBE_SLOW_MAX;
}

/* The results flagged suspect have been seen by the callback. */
static void clear_suspects(struct dhaf_probe *p)
{
    for (size_t k = 0; p->n_suspect && k < p->n; k++)
        if (p->out[k].suspect) {
            p->out[k].suspect = false;
            p->n_suspect--;
        }
}

/*
 * The loop of a round (scheduled: the round's checks are started as they are due; it ends when
 * all have started and ended) or of an idle wait (only burst checks and what they lead to; it
 * ends at until_ms, or on dhaf_probe_wake, once no check is in flight).
 */
static void run_loop(struct dhaf_probe *p, struct round *rd, bool scheduled, int64_t until_ms,
                     struct dhaf_cancel *stop, dhaf_probe_cb cb, void *ud)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = false;
    p->done = NULL;
    p->ready = NULL;
    pthread_mutex_unlock(&p->lock);
    /* The hook wakes the wait below. Without one (the token's hook slots are all taken) a
     * fired stop is still seen, when the next check ends or is due. The token's lock is never
     * taken with p->lock held: the hook takes them in that order. */
    bool hooked = dhaf_cancel_hook(stop, wake_stop, p);
    bool stopped = !hooked && dhaf_cancel_fired(stop);
    bool woken = false;
    for (;;) {
        if (!stopped)
            start_priority(p, rd);
        int64_t wake_at = stopped                     ? 0
                          : scheduled                 ? start_due(p, rd)
                          : dhaf_mono_ms() < until_ms ? until_ms
                                                      : 0; /* (past: wait for the runs) */
        int64_t slow_at = 0;
        bool slow = !stopped && mark_slow(p, rd, &slow_at);
        if (slow_at && (!wake_at || slow_at < wake_at))
            wake_at = slow_at;
        if (slow) {
            if (cb) /* a suspicion to send (no result changed) */
                cb(ud, p->out, p->n);
            clear_suspects(p);
        }
        if (rd->runs == 0 &&
            (stopped || (scheduled ? all_started(p) : woken || dhaf_mono_ms() >= until_ms)))
            break;
        pthread_mutex_lock(&p->lock);
        while (!p->done && !p->ready && !p->stopping && !p->n_asked && (scheduled || !p->woken))
            if (!dhaf_cond_wait_until(&p->cond, &p->lock, wake_at))
                break; /* the next check is due */
        struct run *done = p->done;
        struct ready *ready = p->ready;
        p->done = NULL;
        p->ready = NULL;
        if (p->stopping) {
            stopped = true;
            p->stopping = false; /* seen: from now on only the runs' ends wake the wait */
        }
        if (!scheduled && p->woken) {
            woken = true;
            p->woken = false;
        }
        pthread_mutex_unlock(&p->lock);
        if (!hooked && !stopped)
            stopped = dhaf_cancel_fired(stop);
        /* A run's ready results were queued before it ended: they are taken first. */
        bool changed = false;
        for (; ready; ready = ready->next)
            changed |= take_result(p, rd, ready->run, ready->i);
        if (!done && !changed)
            continue; /* (the published opinions are as the callback last saw them) */
        while (done) {
            struct run *next = done->next_done;
            finish_run(p, rd, done);
            done = next;
        }
        if (!stopped) /* before cb, which may write a vote */
            start_priority(p, rd);
        if (cb)
            cb(ud, p->out, p->n);
        clear_suspects(p);
    }
    if (hooked)
        dhaf_cancel_unhook(stop, wake_stop, p);
    if (stopped)
        DHAF_LOG(DHAF_LOG_DEBUG, "event=probe-%s-stopped after_ms=%lld",
                 scheduled ? "round" : "idle", (long long)(dhaf_mono_ms() - rd->t0));
}

void dhaf_probe_round(struct dhaf_probe *p, int spread_ms, struct dhaf_cancel *stop,
                      dhaf_probe_cb cb, void *ud, const struct dhaf_probe_result **out,
                      size_t *n_out)
{
    struct round rd = {.t0 = dhaf_mono_ms()};
    plan_round(p, spread_ms);
    p->want_witness = true; /* a re-check left over from a stopped round starts first */
    run_loop(p, &rd, true, 0, stop, cb, ud);
    *out = p->out;
    *n_out = p->n;
}

void dhaf_probe_idle(struct dhaf_probe *p, int64_t until_ms, struct dhaf_cancel *stop,
                     dhaf_probe_cb cb, void *ud)
{
    struct round rd = {.t0 = dhaf_mono_ms()};
    run_loop(p, &rd, false, until_ms, stop, cb, ud);
}

bool dhaf_probe_suspect(struct dhaf_probe *p, const char *service, const char *ep)
{
    for (size_t k = 0; k < p->n; k++) {
        if (strcmp(p->targets[k].service, service) != 0 || strcmp(p->targets[k].ep_name, ep) != 0)
            continue;
        pthread_mutex_lock(&p->lock);
        if (!p->asked[k]) {
            p->asked[k] = true;
            p->n_asked++;
            pthread_cond_signal(&p->cond);
        }
        pthread_mutex_unlock(&p->lock);
        return true;
    }
    return false;
}

void dhaf_probe_wake(struct dhaf_probe *p)
{
    pthread_mutex_lock(&p->lock);
    p->woken = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

uint64_t dhaf_probe_digest(const struct dhaf_probe_result *r, size_t n)
{
    uint64_t h = DHAF_FNV_OFFSET;
    for (size_t i = 0; i < n; i++) {
        if (!r[i].known)
            continue;
        h = dhaf_fnv1a_str(h, r[i].service);
        h = dhaf_fnv1a_str(h, r[i].ep);
        h = dhaf_fnv1a_str(h, r[i].healthy ? (r[i].held ? "held" : "h") : "u");
        h = dhaf_fnv1a_str(h, r[i].healthy || !r[i].reason ? "" : r[i].reason);
    }
    return h;
}
