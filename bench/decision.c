/* SPDX-License-Identifier: MIT */
/* bench/decision: how good the decisions are, not how fast the code is. Generates outages from
 * eight scenarios (the seven, the clean outage in its two kinds) and replays each with
 * dhaf-sim's engine (sim/sim.h) under dhaf's rule, the original dhaf's rule and one HAProxy-like
 * local checker, all on the same world:
 *
 *   refused    a clean outage: the current entry point refuses connections for 20-40 s
 *   hung       a clean outage: it accepts and never answers (SIGSTOP) for 20-40 s
 *   flapping   it goes down 1-5 s and up 2-8 s, again and again, for 60 s
 *   slow       it answers in 80% of the timeout, spread 10% (2% of attempts time out), 60 s:
 *              serving - no switch is right
 *   vantage    one voter's route to it hangs (half) or its whole network refuses (half),
 *              20-40 s; the backend is fine - no switch is right
 *   cut        one voter loses etcd for 20-40 s; in half of the outages the entry point
 *              refuses meanwhile (a switch is right), else nothing happens
 *   frozen     one voter frozen 10-40 s while the entry point goes down (switch right), or
 *              two frozen 35-60 s while the third's route to it breaks (no switch right), or
 *              two frozen 10-30 s while it goes down (a switch is right, from the thaw on)
 *   overload   every voter stalls now and then (mean gap 3 s, stalls up to 2.5 s), 60 s;
 *              the backends are fine - no switch is right
 *
 * For each scenario and rule it prints: false failovers (outages with a switch where none was
 * right, or before it was), missed failovers (no switch within 30 s of its becoming right),
 * time from the outage to the switch (p50, p99), and switches per outage (flapping shows
 * there). Figures only: it exits non-zero only when it cannot run. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/config.h"
#include "dhaf/registry.h"
#include "sim.h"

#define WARMUP_MS   10000
#define DEADLINE_MS 30000
#define TAIL_MS     30000
#define MAX_CHANGES 256

enum scenario {
    SC_CLEAN,
    SC_HUNG,
    SC_FLAPPING,
    SC_SLOW,
    SC_VANTAGE,
    SC_CUT,
    SC_FROZEN,
    SC_OVERLOAD,
    SC_N
};

static const char *const sc_names[SC_N] = {"refused", "hung", "flapping", "slow",
                                           "vantage", "cut",  "frozen",   "overload"};

struct outage {
    struct sim_change ch[MAX_CHANGES];
    size_t n;
    bool should;      /* a switch away from the first entry point is right ... */
    int64_t right_ms; /* ... from this time on */
    int64_t due_ms;   /* ... and missed when none came by this time */
    int64_t start_ms; /* when the trouble began */
    int64_t end_ms;
};

static uint64_t rng_state;

static double unit(void)
{
    return sim_random_unit(&rng_state);
}

static int64_t between(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(unit() * (double)(hi - lo));
}

static void add(struct outage *o, int64_t t, enum sim_change_kind kind, int voter, int ep,
                enum sim_backend b, double a, double c)
{
    if (o->n < MAX_CHANGES)
        o->ch[o->n++] = (struct sim_change){
            .at_ms = t, .kind = kind, .voter = voter, .ep = ep, .backend = b, .a = a, .b = c};
}

static void backend(struct outage *o, int64_t t, enum sim_backend b, double a, double c)
{
    add(o, t, SIM_BACKEND, 0, 0, b, a, c);
}

static int by_time(const void *a, const void *b)
{
    const struct sim_change *x = a, *y = b;
    return x->at_ms < y->at_ms ? -1 : x->at_ms > y->at_ms;
}

/* Builds outage number i of scenario sc. */
static void make(struct outage *o, enum scenario sc, int n_voters, int tact_ms, int timeout_ms)
{
    memset(o, 0, sizeof(*o));
    int64_t t0 = WARMUP_MS + between(0, tact_ms);
    int64_t len = between(20000, 40000);
    o->start_ms = t0;
    o->should = false;
    switch (sc) {
    case SC_CLEAN:
    case SC_HUNG:
        backend(o, t0, sc == SC_CLEAN ? SIM_REFUSED : SIM_HUNG, 0, 0);
        backend(o, t0 + len, SIM_UP, 0, 0);
        o->should = true;
        break;
    case SC_FLAPPING: {
        int64_t t = t0;
        while (t < t0 + 60000) {
            backend(o, t, SIM_REFUSED, 0, 0);
            t += between(1000, 5000);
            backend(o, t, SIM_UP, 0, 0);
            t += between(2000, 8000);
        }
        len = t - t0;
        o->should = true;
        break;
    }
    case SC_SLOW:
        len = 60000;
        backend(o, t0, SIM_SLOW, 0.8 * timeout_ms, 0.1 * timeout_ms);
        backend(o, t0 + len, SIM_UP, 0, 0);
        break;
    case SC_VANTAGE: {
        int v = (int)between(0, n_voters);
        bool route = unit() < 0.5;
        add(o, t0, SIM_NET, v, route ? 0 : -1, route ? SIM_HUNG : SIM_REFUSED, 0, 0);
        add(o, t0 + len, SIM_NET, v, -1, SIM_UP, 0, 0);
        break;
    }
    case SC_CUT: {
        int v = (int)between(0, n_voters);
        add(o, t0 - 5000, SIM_CUT, v, -1, SIM_UP, 0, 0);
        add(o, t0 - 5000 + len, SIM_JOINED, v, -1, SIM_UP, 0, 0);
        if (unit() < 0.5) {
            int64_t at = t0 + between(0, 5000);
            backend(o, at, SIM_REFUSED, 0, 0);
            backend(o, at + 20000, SIM_UP, 0, 0);
            o->start_ms = at;
            o->should = true;
        }
        break;
    }
    case SC_FROZEN: {
        double pick = unit();
        int a = (int)between(0, n_voters);
        if (pick < 0.5 || n_voters < 3) { /* a minority frozen, a real outage */
            int64_t frozen = between(10000, 40000);
            add(o, t0 - 5000, SIM_FROZEN, a, -1, SIM_UP, 0, 0);
            add(o, t0 - 5000 + frozen, SIM_THAWED, a, -1, SIM_UP, 0, 0);
            backend(o, t0, SIM_REFUSED, 0, 0);
            backend(o, t0 + 20000, SIM_UP, 0, 0);
            o->should = true;
            break;
        }
        /* a majority frozen: all but voter a */
        bool real = pick >= 0.75;
        int64_t frozen = real ? between(10000, 30000) : between(35000, 60000);
        for (int v = 0; v < n_voters; v++)
            if (v != a) {
                add(o, t0 - 5000, SIM_FROZEN, v, -1, SIM_UP, 0, 0);
                add(o, t0 - 5000 + frozen, SIM_THAWED, v, -1, SIM_UP, 0, 0);
            }
        int64_t thaw = t0 - 5000 + frozen;
        if (real) {
            backend(o, t0, SIM_REFUSED, 0, 0);
            backend(o, thaw + DEADLINE_MS + 10000, SIM_UP, 0, 0);
            o->should = true;
            o->due_ms = thaw + DEADLINE_MS;
        } else {
            add(o, t0 + 31000, SIM_NET, a, 0, SIM_REFUSED, 0, 0);
            add(o, thaw + 5000, SIM_NET, a, 0, SIM_UP, 0, 0);
        }
        len = thaw + 10000 - t0;
        break;
    }
    case SC_OVERLOAD:
        len = 60000;
        for (int v = 0; v < n_voters; v++) {
            add(o, t0, SIM_OVERLOAD, v, -1, SIM_UP, 3000, 2500);
            add(o, t0 + len, SIM_CALM, v, -1, SIM_UP, 0, 0);
        }
        break;
    default:
        break;
    }
    qsort(o->ch, o->n, sizeof(o->ch[0]), by_time);
    o->right_ms = o->start_ms;
    if (!o->due_ms)
        o->due_ms = o->right_ms + DEADLINE_MS;
    int64_t last = o->ch[o->n - 1].at_ms;
    o->end_ms = (last > t0 + len ? last : t0 + len) + TAIL_MS;
}

struct tally {
    size_t n, should, false_sw, missed, switches;
    int64_t *took;
    size_t n_took;
};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void judge(const struct outage *o, const struct sim_outcome *r, struct tally *t)
{
    t->n++;
    t->should += o->should;
    t->switches += r->n_sw;
    bool wrong = false;
    int64_t first = -1;
    for (size_t k = 0; k < r->n_sw && k < SIM_MAX_SWITCHES; k++) {
        const struct sim_switch *s = &r->sw[k];
        bool away = s->from == 0;
        if (away && (!o->should || s->at_ms < o->right_ms))
            wrong = true;
        if (away && o->should && s->at_ms >= o->right_ms && first < 0)
            first = s->at_ms;
    }
    t->false_sw += wrong;
    if (o->should && (first < 0 || first > o->due_ms))
        t->missed++;
    if (o->should && first >= 0)
        t->took[t->n_took++] = first - o->start_ms;
}

static int64_t pct(const struct tally *t, double p)
{
    if (!t->n_took)
        return -1;
    size_t k = (size_t)(p * (double)(t->n_took - 1) + 0.5);
    return t->took[k];
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dhaf-bench-decision [--outages N] [--voters N] [--seed N] [--tact S]\n"
                 "                           [--timeout MS] [--retries N]\n"
                 "Replays N outages (default 1000) of eight scenarios under dhaf's rule, the\n"
                 "original dhaf's rule and a local HAProxy-like checker; prints false and missed\n"
                 "failovers, time to switch and switches per outage (bench/decision.c).\n");
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"outages", required_argument, NULL, 'o'}, {"voters", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},    {"tact", required_argument, NULL, 't'},
        {"timeout", required_argument, NULL, 'T'}, {"retries", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    long outages = 1000, voters = 3, seed = 1, tact = 1, timeout = 1000, retries = 2;
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'o':
            rc = sim_option_long("dhaf-bench-decision", "--outages", optarg, 1, 1000000, &outages);
            break;
        case 'n':
            rc = sim_option_long("dhaf-bench-decision", "--voters", optarg, 1, SIM_MAX_VOTERS,
                                 &voters);
            break;
        case 's':
            rc = sim_option_long("dhaf-bench-decision", "--seed", optarg, 0, 2147483647, &seed);
            break;
        case 't':
            rc = sim_option_long("dhaf-bench-decision", "--tact", optarg, 1, 3600, &tact);
            break;
        case 'T':
            rc = sim_option_long("dhaf-bench-decision", "--timeout", optarg, 1, 3600000, &timeout);
            break;
        case 'r':
            rc = sim_option_long("dhaf-bench-decision", "--retries", optarg, 0, 100, &retries);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (rc)
            return rc;
    }
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "dhaf:\n  cluster-name: bench\n  node-name: node-1\n  tact-interval: %ld\n"
             "etcd:\n  hosts: 127.0.0.1:2379\n"
             "services:\n  - name: web\n    domain: example.com\n    entry-points:\n"
             "      - name: ep-1\n        ip: 192.0.2.1\n"
             "      - name: ep-2\n        ip: 192.0.2.2\n"
             "    switcher:\n      type: exec\n      init: /bin/true\n      switch: /bin/true\n"
             "    health-checker:\n      type: web\n      timeout: %ld\n      retries: %ld\n",
             tact, (timeout + 999) / 1000, retries);
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, "bench.yaml");
    int rc = dhaf_config_load_mem(yaml, strlen(yaml), "bench.yaml", "/", dhaf_registry_catalog(),
                                  &cfg, &rep);
    dhaf_cfg_report_print(&rep, stderr);
    dhaf_cfg_report_release(&rep);
    if (rc)
        return 1;
    rng_state = (uint64_t)seed;
    struct tally t[SC_N][SIM_N_RULES];
    memset(t, 0, sizeof(t));
    for (int s = 0; s < SC_N; s++)
        for (int r = 0; r < SIM_N_RULES; r++)
            t[s][r].took = dhaf_xcalloc((size_t)outages, sizeof(int64_t));
    struct sim_opts opts = {.cfg = &cfg,
                            .svc = &cfg.services[0],
                            .timeout_ms = (int)timeout,
                            .retries = (int)retries,
                            .n_voters = (size_t)voters};
    struct outage *o = dhaf_xcalloc(1, sizeof(*o));
    struct sim_outcome *out = dhaf_xcalloc(SIM_N_RULES, sizeof(*out));
    for (long i = 0; i < outages; i++) {
        enum scenario sc = (enum scenario)(i % SC_N);
        make(o, sc, (int)voters, (int)tact * 1000, (int)timeout);
        struct sim_world w = {
            .changes = o->ch, .n_changes = o->n, .end_ms = o->end_ms, .seed = (uint64_t)i + 1};
        struct dhaf_err err;
        if (sim_run(&opts, &w, out, &err) != 0) {
            fprintf(stderr, "dhaf-bench-decision: outage %ld: %s\n", i, err.msg);
            return 1;
        }
        for (int r = 0; r < SIM_N_RULES; r++)
            judge(o, &out[r], &t[sc][r]);
    }
    printf("bench/decision: %ld outages, %ld voters, tact %ld s, timeout %ld ms, retries %ld "
           "(original: 2 attempts, local: 1), seed %ld\n\n",
           outages, voters, tact, timeout, retries, seed);
    printf("%-9s %5s %6s  %-8s %6s %7s %9s %9s %10s\n", "scenario", "n", "switch", "rule", "false",
           "missed", "p50 ms", "p99 ms", "sw/outage");
    size_t total[SIM_N_RULES][2] = {{0}};
    for (int s = 0; s < SC_N; s++)
        for (int r = 0; r < SIM_N_RULES; r++) {
            struct tally *x = &t[s][r];
            qsort(x->took, x->n_took, sizeof(int64_t), cmp_i64);
            char p50[16] = "-", p99[16] = "-";
            if (x->n_took) {
                snprintf(p50, sizeof(p50), "%lld", (long long)pct(x, 0.50));
                snprintf(p99, sizeof(p99), "%lld", (long long)pct(x, 0.99));
            }
            printf("%-9s %5zu %6zu  %-8s %6zu %7zu %9s %9s %10.2f\n", r ? "" : sc_names[s], x->n,
                   x->should, sim_rule_name((enum sim_rule)r), x->false_sw, x->missed, p50, p99,
                   x->n ? (double)x->switches / (double)x->n : 0.0);
            total[r][0] += x->false_sw;
            total[r][1] += x->missed;
        }
    printf("\n");
    for (int r = 0; r < SIM_N_RULES; r++)
        printf("total %-8s false %zu, missed %zu\n", sim_rule_name((enum sim_rule)r), total[r][0],
               total[r][1]);
    for (int s = 0; s < SC_N; s++)
        for (int r = 0; r < SIM_N_RULES; r++)
            free(t[s][r].took);
    free(o);
    free(out);
    dhaf_config_release(&cfg);
    return 0;
}
