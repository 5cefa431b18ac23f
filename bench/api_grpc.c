/* SPDX-License-Identifier: MIT */
/* dhaf-bench-api-grpc: calls a gRPC method of one dhaf node (default
 * /dhaf.v1.Dhaf/ListServices) from N threads for S seconds through lib/rpc, the client
 * dhafctl uses, and prints one line of figures: calls, errors, calls/s and latency. Each
 * thread has its own channel (lib/rpc channels use a local subchannel pool, so that is its own
 * HTTP/2 connection, as each of wrk's connections is its own TCP connection) and makes one
 * call at a time. bench/api.py starts the node and prints the table. */
#include "dhaf/valid.h"
#include "bench_util.h"
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dhaf/alloc.h"
#include "dhaf/err.h"
#include "dhaf/log.h"
#include "dhaf/rpc.h"
#include "dhaf/v1/dhaf.pb-c.h"

#define MAX_THREADS     256
#define CALL_TIMEOUT_MS 5000
#define WARMUP_MS       500
#define MAX_ERRORS      1000 /* a thread stops after this many failed calls */

/* The methods this benchmark can call: all take an empty request. */
struct method {
    const char *name;
    const ProtobufCMessageDescriptor *resp;
};

static const struct method methods[] = {
    {"ListServices", &dhaf__v1__list_services_response__descriptor},
    {"GetClusterStatus", &dhaf__v1__cluster_status__descriptor},
    {"GetVersion", &dhaf__v1__version_info__descriptor},
};

struct run {
    const char *target;
    char path[96];
    const struct method *m;
    struct dhaf_rpc_md md[1];
    size_t n_md;
    int64_t start_ns, end_ns; /* the measured window */
    atomic_int failed_start;
};

struct worker {
    struct run *run;
    pthread_t t;
    uint32_t *lat_us; /* latencies of the calls that finished inside the window */
    size_t n, cap;
    long calls, errors;
    char first_error[DHAF_ERR_MSG_MAX + 64];
};

static void *work(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    struct dhaf_err err;
    struct dhaf_rpc_channel *ch = dhaf_rpc_channel_new(r->target, NULL, &err);
    if (!ch) {
        snprintf(w->first_error, sizeof(w->first_error), "%s", err.msg);
        atomic_store(&r->failed_start, 1);
        return NULL;
    }
    /* Every method here takes an empty request: its encoding (zero bytes) is the same. */
    Dhaf__V1__ListServicesRequest req = DHAF__V1__LIST_SERVICES_REQUEST__INIT;
    for (;;) {
        int64_t t0 = bench_now_ns();
        if (t0 >= r->end_ns || bench_interrupted)
            break;
        ProtobufCMessage *resp = NULL;
        int rc = dhaf_rpc_call(ch, r->path, &req.base, r->m->resp, &resp, CALL_TIMEOUT_MS, r->md,
                               r->n_md, NULL, &err);
        int64_t t1 = bench_now_ns();
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
        if (t0 < r->start_ns || t1 > r->end_ns)
            continue; /* warm-up, or a call the window's end cut through */
        w->calls++;
        if (rc != 0) {
            if (w->errors++ == 0)
                snprintf(w->first_error, sizeof(w->first_error), "%.32s: %s",
                         dhaf_rpc_status_name(err.status), err.msg);
            if (w->errors >= MAX_ERRORS)
                break;
            continue;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat_us = dhaf_xreallocarray(w->lat_us, w->cap, sizeof(*w->lat_us));
        }
        int64_t us = (t1 - t0) / 1000;
        w->lat_us[w->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    }
    dhaf_rpc_channel_free(ch);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v. */
static double pct_ms(const uint32_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1] / 1000.0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dhaf-bench-api-grpc --target HOST:PORT [--token T] [--threads N]\n"
                 "                           [--seconds S] [--method NAME]\n"
                 "\n"
                 "Calls /dhaf.v1.Dhaf/NAME (ListServices, GetClusterStatus or GetVersion; default\n"
                 "ListServices) from N threads (default 32), one call at a time each, for S\n"
                 "seconds (default 10) after a 0.5 s warm-up, and prints one line:\n"
                 "  RESULT method=... threads=N calls=C errors=E seconds=S rps=R avg_ms=...\n"
                 "         p50_ms=... p90_ms=... p99_ms=... max_ms=...\n"
                 "Exit 0, 1 when every call failed or no channel could be opened, 2 usage.\n"
                 "The token may also come from DHAF_TOKEN.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"target", required_argument, NULL, 'e'},
        {"token", required_argument, NULL, 't'},
        {"threads", required_argument, NULL, 'n'},
        {"seconds", required_argument, NULL, 's'},
        {"method", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *target = NULL, *token = getenv("DHAF_TOKEN"), *mname = "ListServices";
    int threads = 32;
    double seconds = 10;
    int c;
    while ((c = getopt_long(argc, argv, "e:t:n:s:m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'e':
            target = optarg;
            break;
        case 't':
            token = optarg;
            break;
        case 'n': {
            long n;
            if (!dhaf_parse_long(optarg, 1, MAX_THREADS, &n)) {
                fprintf(stderr, "dhaf-bench-api-grpc: --threads takes 1..%d\n", MAX_THREADS);
                return 2;
            }
            threads = (int)n;
            break;
        }
        case 's':
            seconds = atof(optarg);
            break;
        case 'm':
            mname = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    const struct method *m = NULL;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].name, mname) == 0)
            m = &methods[i];
    if (!target || !m || threads < 1 || threads > MAX_THREADS || !(seconds > 0) || optind < argc) {
        usage(stderr);
        return 2;
    }
    dhaf_log_setup(DHAF_LOG_WARN, DHAF_LOG_TEXT);
    dhaf_rpc_init();
    bench_catch_signals();

    struct run run;
    memset(&run, 0, sizeof(run));
    run.target = target;
    run.m = m;
    snprintf(run.path, sizeof(run.path), "/dhaf.v1.Dhaf/%s", m->name);
    char *bearer = NULL;
    if (token && *token) {
        bearer = dhaf_xasprintf("Bearer %s", token);
        run.md[0] = (struct dhaf_rpc_md){"authorization", bearer};
        run.n_md = 1;
    }
    atomic_init(&run.failed_start, 0);
    run.start_ns = bench_now_ns() + (int64_t)WARMUP_MS * 1000000;
    run.end_ns = run.start_ns + (int64_t)(seconds * 1e9);

    struct worker *ws = dhaf_xcalloc((size_t)threads, sizeof(*ws));
    int started = 0;
    for (int i = 0; i < threads; i++) {
        ws[i].run = &run;
        if (pthread_create(&ws[i].t, NULL, work, &ws[i]) != 0)
            break;
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].t, NULL);
    double window = (double)(run.end_ns - run.start_ns) / 1e9;
    if (bench_interrupted) {
        int64_t stop = bench_now_ns();
        if (stop < run.end_ns)
            window = (double)(stop - run.start_ns) / 1e9;
    }

    long calls = 0, errors = 0;
    size_t n = 0;
    const char *first_error = NULL;
    for (int i = 0; i < started; i++) {
        calls += ws[i].calls;
        errors += ws[i].errors;
        n += ws[i].n;
        if (!first_error && ws[i].first_error[0])
            first_error = ws[i].first_error;
    }
    uint32_t *all = dhaf_xcalloc(n ? n : 1, sizeof(*all));
    double sum = 0;
    size_t k = 0;
    for (int i = 0; i < started; i++) {
        for (size_t j = 0; j < ws[i].n; j++) {
            all[k++] = ws[i].lat_us[j];
            sum += ws[i].lat_us[j];
        }
        free(ws[i].lat_us);
    }
    qsort(all, n, sizeof(*all), cmp_u32);
    long ok = calls - errors;
    printf("RESULT method=%s threads=%d calls=%ld errors=%ld seconds=%.2f rps=%.1f avg_ms=%.3f "
           "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
           m->name, started, calls, errors, window, window > 0 ? (double)ok / window : 0.0,
           n ? sum / (double)n / 1000.0 : 0.0, pct_ms(all, n, 50), pct_ms(all, n, 90),
           pct_ms(all, n, 99), n ? all[n - 1] / 1000.0 : 0.0);
    if (first_error)
        fprintf(stderr, "dhaf-bench-api-grpc: first error: %s\n", first_error);
    free(all);
    free(ws);
    free(bearer);
    return (ok > 0 && !atomic_load(&run.failed_start)) ? 0 : 1;
}
