/* SPDX-License-Identifier: MIT */
/* dhaf-bench-api-grpc: calls a gRPC method of one dhaf node (default
 * /dhaf.v1.Dhaf/ListServices) with N calls in flight for S seconds and prints one line of
 * figures: calls, errors, calls/s and latency. bench/api.py starts the node and prints the
 * table.
 *
 * The default client is light, so that the node, not the load generator, is what a run
 * measures on a small machine: --loops threads (default 1) each drive one completion queue
 * with their share of the N calls in flight through gRPC core's async API directly (one batch
 * of six ops per call, so one completion per call; a registered method; the request encoded
 * once; the token's metadata built once), over --channels channels (default N: one HTTP/2
 * connection per call in flight, as each of wrk's connections is its own TCP connection; fewer
 * channels multiplex the calls over fewer connections). --sync is the previous client: N
 * threads, each with its own channel, one blocking dhaf_rpc_call (lib/rpc, the client dhafctl
 * uses) at a time; it costs the client about as much CPU per call as the node.
 *
 * A call that ends with a status other than OK, or an OK without a reply (or, for the first
 * reply of each call slot, one that does not decode), is an error: the run then exits 1. */
#include "dhaf/valid.h"
#include "bench_util.h"
#include <getopt.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
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

#define MAX_CALLS       1024 /* calls in flight */
#define MAX_CHANNELS    256
#define MAX_LOOPS       16
#define CALL_TIMEOUT_MS 5000
#define WARMUP_MS       500
#define MAX_ERRORS      1000 /* a thread (sync) or a call slot (async) stops after this many */

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
    const char *bearer;       /* "Bearer <token>", or NULL */
    int64_t start_ns, end_ns; /* the measured window */
    atomic_int failed_start;
};

/* What one thread measured: latencies of the calls that finished inside the window. */
struct tally {
    uint32_t *lat_us;
    size_t n, cap;
    long calls;  /* inside the window */
    long errors; /* inside the window */
    long errors_outside;
    char first_error[DHAF_ERR_MSG_MAX + 64];
};

static void tally_call(struct tally *t, const struct run *r, int64_t t0, int64_t t1, bool ok,
                       const char *why)
{
    bool inside = t0 >= r->start_ns && t1 <= r->end_ns;
    if (!ok) {
        if (t->errors + t->errors_outside == 0)
            snprintf(t->first_error, sizeof(t->first_error), "%s", why);
        if (inside)
            t->errors++;
        else
            t->errors_outside++;
    }
    if (!inside)
        return; /* warm-up, or a call the window's end cut through */
    t->calls++;
    if (!ok)
        return;
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 4096;
        t->lat_us = dhaf_xreallocarray(t->lat_us, t->cap, sizeof(*t->lat_us));
    }
    int64_t us = (t1 - t0) / 1000;
    t->lat_us[t->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* ------------------------------------------------------------------ --sync: lib/rpc */

struct worker {
    struct run *run;
    pthread_t t;
    struct tally tally;
};

static void *sync_work(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    struct dhaf_err err;
    struct dhaf_rpc_channel *ch = dhaf_rpc_channel_new(r->target, NULL, &err);
    if (!ch) {
        snprintf(w->tally.first_error, sizeof(w->tally.first_error), "%s", err.msg);
        atomic_store(&r->failed_start, 1);
        return NULL;
    }
    struct dhaf_rpc_md md[1] = {{"authorization", r->bearer}};
    /* Every method here takes an empty request: its encoding (zero bytes) is the same. */
    Dhaf__V1__ListServicesRequest req = DHAF__V1__LIST_SERVICES_REQUEST__INIT;
    for (;;) {
        int64_t t0 = bench_now_ns();
        if (t0 >= r->end_ns || bench_interrupted)
            break;
        ProtobufCMessage *resp = NULL;
        int rc = dhaf_rpc_call(ch, r->path, &req.base, r->m->resp, &resp, CALL_TIMEOUT_MS, md,
                               r->bearer ? 1 : 0, NULL, &err);
        int64_t t1 = bench_now_ns();
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
        char why[DHAF_ERR_MSG_MAX + 64] = "";
        if (rc != 0)
            snprintf(why, sizeof(why), "%.32s: %s", dhaf_rpc_status_name(err.status), err.msg);
        tally_call(&w->tally, r, t0, t1, rc == 0, why);
        if (w->tally.errors + w->tally.errors_outside >= MAX_ERRORS)
            break;
    }
    dhaf_rpc_channel_free(ch);
    return NULL;
}

/* ------------------------------------------------------------------ async: gRPC core */

struct loop;

/* One call in flight at a time; started again as soon as it completes. */
struct slot {
    struct loop *loop;
    grpc_channel *ch;
    void *method; /* the registered method on ch */
    grpc_call *call;
    grpc_byte_buffer *send_bb;
    grpc_byte_buffer *recv_bb;
    grpc_metadata_array initial, trailing;
    grpc_status_code status;
    grpc_slice details;
    int64_t t0;
    long errors;
    bool checked; /* its first reply was decoded */
};

struct loop {
    struct run *run;
    pthread_t t;
    grpc_completion_queue *cq;
    struct slot *slots;
    size_t n_slots;
    grpc_metadata *md; /* shared by every call: read only */
    size_t n_md;
    grpc_slice request; /* the encoded request, referenced by each call's byte buffer */
    struct tally tally;
};

/* Starts the next call of s; false when it could not start (counted as an error). */
static bool slot_start(struct slot *s)
{
    struct loop *l = s->loop;
    s->t0 = bench_now_ns();
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(CALL_TIMEOUT_MS, GPR_TIMESPAN));
    s->call = grpc_channel_create_registered_call(s->ch, NULL, GRPC_PROPAGATE_DEFAULTS, l->cq,
                                                  s->method, deadline, NULL);
    s->send_bb = grpc_raw_byte_buffer_create(&l->request, 1);
    s->recv_bb = NULL;
    grpc_metadata_array_init(&s->initial);
    grpc_metadata_array_init(&s->trailing);
    s->status = GRPC_STATUS_UNKNOWN;
    s->details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = l->n_md;
    ops[0].data.send_initial_metadata.metadata = l->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    /* in the same batch as the rest, so one completion ends the call (facts, pitfall 1) */
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->trailing;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    grpc_call_error ce = grpc_call_start_batch(s->call, ops, 6, s, NULL);
    if (ce == GRPC_CALL_OK)
        return true;
    char why[64];
    snprintf(why, sizeof(why), "cannot start a call (grpc_call_error %d)", (int)ce);
    tally_call(&l->tally, l->run, s->t0, bench_now_ns(), false, why);
    s->errors++;
    grpc_byte_buffer_destroy(s->send_bb);
    grpc_metadata_array_destroy(&s->initial);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_call_unref(s->call);
    s->call = NULL;
    return false;
}

/* The call of s completed: counts it and releases what it held. */
static void slot_done(struct slot *s, bool success)
{
    struct loop *l = s->loop;
    int64_t t1 = bench_now_ns();
    char why[DHAF_ERR_MSG_MAX + 64] = "";
    bool ok = false;
    if (!success) {
        snprintf(why, sizeof(why), "the call's batch failed");
    } else if (s->status != GRPC_STATUS_OK) {
        char *d = grpc_slice_to_c_string(s->details);
        snprintf(why, sizeof(why), "%.32s: %.400s", dhaf_rpc_status_name(s->status), d);
        gpr_free(d);
    } else if (!s->recv_bb) {
        snprintf(why, sizeof(why), "OK without a reply");
    } else if (!s->checked) {
        /* the first reply of each slot is decoded: the method answers what it should */
        grpc_byte_buffer_reader rd;
        ProtobufCMessage *m = NULL;
        if (grpc_byte_buffer_reader_init(&rd, s->recv_bb)) {
            grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
            m = protobuf_c_message_unpack(l->run->m->resp, NULL, GRPC_SLICE_LENGTH(all),
                                          GRPC_SLICE_START_PTR(all));
            grpc_slice_unref(all);
        }
        if (m) {
            protobuf_c_message_free_unpacked(m, NULL);
            s->checked = true;
            ok = true;
        } else {
            snprintf(why, sizeof(why), "cannot decode the reply as %s", l->run->m->resp->name);
        }
    } else {
        ok = true;
    }
    tally_call(&l->tally, l->run, s->t0, t1, ok, why);
    if (!ok)
        s->errors++;
    grpc_byte_buffer_destroy(s->send_bb);
    if (s->recv_bb)
        grpc_byte_buffer_destroy(s->recv_bb);
    grpc_metadata_array_destroy(&s->initial);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
    s->call = NULL;
}

static void *async_work(void *arg)
{
    struct loop *l = arg;
    struct run *r = l->run;
    size_t pending = 0;
    for (size_t i = 0; i < l->n_slots; i++)
        pending += slot_start(&l->slots[i]);
    while (pending > 0) {
        /* the calls' own deadlines bound this loop; the timeout only notices a signal */
        grpc_event ev = grpc_completion_queue_next(
            l->cq,
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN)),
            NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct slot *s = ev.tag;
        slot_done(s, ev.success != 0);
        pending--;
        /* a slot whose calls keep failing stops; so does every slot at the window's end */
        while (!bench_interrupted && bench_now_ns() < r->end_ns && s->errors < MAX_ERRORS) {
            if (slot_start(s)) {
                pending++;
                break;
            }
        }
    }
    grpc_completion_queue_shutdown(l->cq);
    while (grpc_completion_queue_next(l->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(l->cq);
    return NULL;
}

/* Channels as lib/rpc makes them, so each is its own connection. */
static grpc_channel *channel_new(const char *target)
{
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1},
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = 64 * 1024 * 1024},
    };
    grpc_channel_args cargs = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    return ch;
}

/* ------------------------------------------------------------------ main */

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
    fprintf(out,
            "usage: dhaf-bench-api-grpc --target HOST:PORT [--token T] [--threads N]\n"
            "                           [--channels C] [--loops L] [--sync]\n"
            "                           [--seconds S] [--method NAME]\n"
            "\n"
            "Calls /dhaf.v1.Dhaf/NAME (ListServices, GetClusterStatus or GetVersion; default\n"
            "ListServices) with N calls in flight (default 32, at most %d) for S seconds\n"
            "(default 10) after a 0.5 s warm-up, and prints one line:\n"
            "  RESULT method=... threads=N calls=C errors=E seconds=S rps=R avg_ms=...\n"
            "         p50_ms=... p90_ms=... p99_ms=... max_ms=... mode=... channels=C loops=L\n"
            "The N calls go over C channels (default N, at most %d; each its own HTTP/2\n"
            "connection), driven by L threads (default 1, at most %d) with one completion\n"
            "queue each (gRPC core's async API). --sync: N threads, each with its own\n"
            "channel, one blocking lib/rpc call at a time (the previous client; --channels\n"
            "and --loops do not apply).\n"
            "Exit 0; 1 when any call failed (non-OK status, no reply, undecodable reply) or\n"
            "none was measured; 2 usage. The token may also come from DHAF_TOKEN.\n",
            MAX_CALLS, MAX_CHANNELS, MAX_LOOPS);
}

static bool parse_int(const char *opt, const char *s, long max, int *out)
{
    long n;
    if (!dhaf_parse_long(s, 1, max, &n)) {
        fprintf(stderr, "dhaf-bench-api-grpc: --%s takes 1..%ld\n", opt, max);
        return false;
    }
    *out = (int)n;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"target", required_argument, NULL, 'e'},  {"token", required_argument, NULL, 't'},
        {"threads", required_argument, NULL, 'n'}, {"channels", required_argument, NULL, 'c'},
        {"loops", required_argument, NULL, 'l'},   {"sync", no_argument, NULL, 'S'},
        {"seconds", required_argument, NULL, 's'}, {"method", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *target = NULL, *token = getenv("DHAF_TOKEN"), *mname = "ListServices";
    int threads = 32, channels = 0, loops = 1;
    bool sync = false;
    double seconds = 10;
    int c;
    while ((c = getopt_long(argc, argv, "e:t:n:c:l:Ss:m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'e':
            target = optarg;
            break;
        case 't':
            token = optarg;
            break;
        case 'n':
            if (!parse_int("threads", optarg, MAX_CALLS, &threads))
                return 2;
            break;
        case 'c':
            if (!parse_int("channels", optarg, MAX_CHANNELS, &channels))
                return 2;
            break;
        case 'l':
            if (!parse_int("loops", optarg, MAX_LOOPS, &loops))
                return 2;
            break;
        case 'S':
            sync = true;
            break;
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
    if (!target || !m || !(seconds > 0) || optind < argc) {
        usage(stderr);
        return 2;
    }
    if (sync && threads > 256) {
        fprintf(stderr, "dhaf-bench-api-grpc: --sync takes at most 256 threads\n");
        return 2;
    }
    if (channels == 0)
        channels = threads < MAX_CHANNELS ? threads : MAX_CHANNELS;
    if (channels > threads)
        channels = threads;
    if (loops > threads)
        loops = threads;
    dhaf_log_setup(DHAF_LOG_WARN, DHAF_LOG_TEXT);
    dhaf_rpc_init();
    bench_catch_signals();

    struct run run;
    memset(&run, 0, sizeof(run));
    run.target = target;
    run.m = m;
    snprintf(run.path, sizeof(run.path), "/dhaf.v1.Dhaf/%s", m->name);
    char *bearer = NULL;
    if (token && *token)
        run.bearer = bearer = dhaf_xasprintf("Bearer %s", token);
    atomic_init(&run.failed_start, 0);

    int n_tallies = sync ? threads : loops;
    struct tally **tallies = dhaf_xcalloc((size_t)n_tallies, sizeof(*tallies));
    struct worker *ws = NULL;
    struct loop *ls = NULL;
    grpc_channel **chs = NULL;
    struct slot *slots = NULL;
    grpc_metadata md[1];
    int started = 0;
    if (sync) {
        run.start_ns = bench_now_ns() + (int64_t)WARMUP_MS * 1000000;
        run.end_ns = run.start_ns + (int64_t)(seconds * 1e9);
        ws = dhaf_xcalloc((size_t)threads, sizeof(*ws));
        for (int i = 0; i < threads; i++) {
            ws[i].run = &run;
            tallies[i] = &ws[i].tally;
            if (pthread_create(&ws[i].t, NULL, sync_work, &ws[i]) != 0)
                break;
            started++;
        }
        for (int i = 0; i < started; i++)
            pthread_join(ws[i].t, NULL);
    } else {
        memset(md, 0, sizeof(md));
        if (bearer) {
            md[0].key = grpc_slice_from_static_string("authorization");
            md[0].value = grpc_slice_from_static_string(bearer);
        }
        chs = dhaf_xcalloc((size_t)channels, sizeof(*chs));
        void **regs = dhaf_xcalloc((size_t)channels, sizeof(*regs));
        for (int i = 0; i < channels; i++) {
            if (!(chs[i] = channel_new(target))) {
                fprintf(stderr, "dhaf-bench-api-grpc: cannot create a channel to \"%s\"\n", target);
                return 1;
            }
            regs[i] = grpc_channel_register_call(chs[i], run.path, NULL, NULL);
        }
        /* Every method here takes an empty request: its encoding (zero bytes) is the same. */
        Dhaf__V1__ListServicesRequest req = DHAF__V1__LIST_SERVICES_REQUEST__INIT;
        size_t req_len = protobuf_c_message_get_packed_size(&req.base);
        grpc_slice request = grpc_slice_malloc(req_len);
        protobuf_c_message_pack(&req.base, GRPC_SLICE_START_PTR(request));
        ls = dhaf_xcalloc((size_t)loops, sizeof(*ls));
        slots = dhaf_xcalloc((size_t)threads, sizeof(*slots));
        for (int i = 0; i < loops; i++) {
            ls[i].run = &run;
            ls[i].cq = grpc_completion_queue_create_for_next(NULL);
            ls[i].md = md;
            ls[i].n_md = bearer ? 1 : 0;
            ls[i].request = request;
            tallies[i] = &ls[i].tally;
        }
        /* slot i: loop i % L, channel i % C (a loop's calls spread over the channels) */
        struct slot *next = slots;
        for (int li = 0; li < loops; li++) {
            ls[li].slots = next;
            for (int i = li; i < threads; i += loops) {
                next->loop = &ls[li];
                next->ch = chs[i % channels];
                next->method = regs[i % channels];
                next++;
                ls[li].n_slots++;
            }
        }
        free(regs);
        run.start_ns = bench_now_ns() + (int64_t)WARMUP_MS * 1000000;
        run.end_ns = run.start_ns + (int64_t)(seconds * 1e9);
        for (int i = 0; i < loops; i++) {
            if (pthread_create(&ls[i].t, NULL, async_work, &ls[i]) != 0)
                break;
            started++;
        }
        for (int i = 0; i < started; i++)
            pthread_join(ls[i].t, NULL);
        for (int i = started; i < loops; i++) {
            grpc_completion_queue_shutdown(ls[i].cq);
            while (grpc_completion_queue_next(ls[i].cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                       .type != GRPC_QUEUE_SHUTDOWN)
                ;
            grpc_completion_queue_destroy(ls[i].cq);
        }
        for (int i = 0; i < channels; i++)
            grpc_channel_destroy(chs[i]);
        grpc_slice_unref(request);
        n_tallies = started;
    }
    double window = (double)(run.end_ns - run.start_ns) / 1e9;
    if (bench_interrupted) {
        int64_t stop = bench_now_ns();
        if (stop < run.end_ns)
            window = (double)(stop - run.start_ns) / 1e9;
    }

    long calls = 0, errors = 0, errors_outside = 0;
    size_t n = 0;
    const char *first_error = NULL;
    for (int i = 0; i < n_tallies; i++) {
        calls += tallies[i]->calls;
        errors += tallies[i]->errors;
        errors_outside += tallies[i]->errors_outside;
        n += tallies[i]->n;
        if (!first_error && tallies[i]->first_error[0])
            first_error = tallies[i]->first_error;
    }
    uint32_t *all = dhaf_xcalloc(n ? n : 1, sizeof(*all));
    double sum = 0;
    size_t k = 0;
    for (int i = 0; i < n_tallies; i++) {
        for (size_t j = 0; j < tallies[i]->n; j++) {
            all[k++] = tallies[i]->lat_us[j];
            sum += tallies[i]->lat_us[j];
        }
        free(tallies[i]->lat_us);
    }
    qsort(all, n, sizeof(*all), cmp_u32);
    long ok = calls - errors;
    printf("RESULT method=%s threads=%d calls=%ld errors=%ld seconds=%.2f rps=%.1f avg_ms=%.3f "
           "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f mode=%s channels=%d loops=%d\n",
           m->name, sync ? started : threads, calls, errors, window,
           window > 0 ? (double)ok / window : 0.0, n ? sum / (double)n / 1000.0 : 0.0,
           pct_ms(all, n, 50), pct_ms(all, n, 90), pct_ms(all, n, 99),
           n ? all[n - 1] / 1000.0 : 0.0, sync ? "sync" : "async", sync ? started : channels,
           sync ? started : loops);
    if (errors_outside)
        fprintf(stderr, "dhaf-bench-api-grpc: %ld failed calls outside the window\n",
                errors_outside);
    if (first_error)
        fprintf(stderr, "dhaf-bench-api-grpc: first error: %s\n", first_error);
    free(all);
    free(ws);
    free(ls);
    free(slots);
    free(chs);
    free(tallies);
    free(bearer);
    bool failed = errors > 0 || errors_outside > 0 || ok <= 0 || atomic_load(&run.failed_start) ||
                  started < (sync ? threads : loops);
    return failed ? 1 : 0;
}
