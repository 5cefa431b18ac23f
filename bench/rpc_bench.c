/* SPDX-License-Identifier: MIT */
/* dhaf-bench-rpc: prints unary round trips/s through lib/rpc and etcd puts/gets/s through
 * lib/etcd beside a Python grpcio client and etcdctl driving the same servers in the same run. */
#define _GNU_SOURCE /* pipe2 */
#include "dhaf/valid.h"
#include "bench_util.h"
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dhaf/alloc.h"
#include "dhaf/err.h"
#include "dhaf/etcd.h"
#include "dhaf/log.h"
#include "dhaf/rpc.h"
#include "dhaftest/v1/echo.pb-c.h"
#include "etcd_harness.h"

#ifndef DHAF_SOURCE_DIR
#define DHAF_SOURCE_DIR "."
#endif

#define SAY_METHOD      "/dhaftest.v1.Echo/Say"
#define SAY_TEXT        "hello dhaf bench" /* same payloads as bench/py_peer.py */
#define PUT_VALUE_LEN   64
#define KEY_SPACE       1000
#define GET_KEY         "/bench/get"
#define CALL_TIMEOUT_MS 5000
#define WARMUP_CALLS    50
#define MAX_ERRORS      100 /* a measurement gives up after this many failed calls */
#define MAX_THREADS     64
#define PEER_LINE_MAX   256
#define PEER_RESULTS    32
#define PEER_GRACE_MS   2000

extern char **environ;

/* ------------------------------------------------------------------ options */

struct bench_opts {
    double seconds;   /* per measurement */
    long calls;       /* at most, per measurement */
    int threads;      /* client threads of the parallel runs */
    bool peer;        /* run bench/py_peer.py */
    int etcdctl_puts; /* at most this many etcdctl processes */
    const char *source_dir;
    const char *python;
    const char *etcdctl;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dhaf-bench-rpc [--seconds N] [--calls N] [--threads N] [--no-peer]\n"
            "                      [--etcdctl-puts N] [--source-dir DIR] [--python PATH]\n"
            "                      [--etcdctl PATH]\n"
            "\n"
            "Prints figures, never pass/fail: unary round trips/s from a lib/rpc client to an\n"
            "in-process lib/rpc server over loopback, and etcd puts/gets/s through lib/etcd\n"
            "against one real etcd, beside the same figures from a Python grpcio client\n"
            "(bench/py_peer.py) and an etcdctl process-per-put loop hitting the same servers.\n"
            "\n"
            "  --seconds N       length of each measurement (default 3)\n"
            "  --calls N         at most N calls per measurement (default 100000)\n"
            "  --threads N       client threads of the parallel runs (default 4)\n"
            "  --no-peer         C figures only\n"
            "  --etcdctl-puts N  at most N etcdctl processes (default 200; 0 skips them)\n"
            "  --source-dir DIR  dhaf source tree with bench/py_peer.py and the protos\n"
            "                    (default %s)\n"
            "  --python PATH     interpreter with grpcio (default /usr/bin/python3)\n"
            "  --etcdctl PATH    default /usr/bin/etcdctl\n"
            "  -h, --help        this help\n"
            "\n"
            "etcd runs in a temp dir under $TMPDIR (or /tmp); puts/s depend on its fsync speed.\n"
            "Exit 0: figures printed; 1: a server could not be started; 2: usage.\n",
            DHAF_SOURCE_DIR);
}

/* Returns 0, 1 after --help, or 2 on a usage error. */
static int parse_opts(int argc, char **argv, struct bench_opts *o)
{
    enum {
        OPT_SECONDS = 256,
        OPT_CALLS,
        OPT_THREADS,
        OPT_NO_PEER,
        OPT_CTL_PUTS,
        OPT_SRC,
        OPT_PYTHON,
        OPT_ETCDCTL
    };
    static const struct option opts[] = {
        {"seconds", required_argument, NULL, OPT_SECONDS},
        {"calls", required_argument, NULL, OPT_CALLS},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"no-peer", no_argument, NULL, OPT_NO_PEER},
        {"etcdctl-puts", required_argument, NULL, OPT_CTL_PUTS},
        {"source-dir", required_argument, NULL, OPT_SRC},
        {"python", required_argument, NULL, OPT_PYTHON},
        {"etcdctl", required_argument, NULL, OPT_ETCDCTL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct bench_opts){.seconds = 3,
                             .calls = 100000,
                             .threads = 4,
                             .peer = true,
                             .etcdctl_puts = 200,
                             .source_dir = DHAF_SOURCE_DIR,
                             .python = "/usr/bin/python3",
                             .etcdctl = "/usr/bin/etcdctl"};
    long v;
    int c, idx = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, &idx)) != -1) {
        switch (c) {
        case OPT_SECONDS:
            if (!dhaf_parse_long(optarg, 1, 3600, &v))
                goto bad_value;
            o->seconds = (double)v;
            break;
        case OPT_CALLS:
            if (!dhaf_parse_long(optarg, 1, 100000000, &v))
                goto bad_value;
            o->calls = v;
            break;
        case OPT_THREADS:
            if (!dhaf_parse_long(optarg, 1, MAX_THREADS, &v))
                goto bad_value;
            o->threads = (int)v;
            break;
        case OPT_NO_PEER:
            o->peer = false;
            break;
        case OPT_CTL_PUTS:
            if (!dhaf_parse_long(optarg, 0, 100000, &v))
                goto bad_value;
            o->etcdctl_puts = (int)v;
            break;
        case OPT_SRC:
            o->source_dir = optarg;
            break;
        case OPT_PYTHON:
            o->python = optarg;
            break;
        case OPT_ETCDCTL:
            o->etcdctl = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            fprintf(stderr, "dhaf-bench-rpc: %s needs a value\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "dhaf-bench-rpc: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dhaf-bench-rpc: unexpected argument %s\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return 0;
bad_value:
    fprintf(stderr, "dhaf-bench-rpc: bad value \"%s\" for --%s\n", optarg, opts[idx].name);
    usage(stderr);
    return 2;
}

/* ------------------------------------------------------------------ measurement */

/* One operation of a measurement: the i-th call. Returns 0 or a negative code with err. */
typedef int (*bench_op_fn)(void *ud, long i, struct dhaf_err *err);

struct measure {
    bench_op_fn op;
    void *ud;
    long max_calls;
    int64_t deadline;
    atomic_long issued;
    atomic_long done;
    atomic_long errors;
    int64_t *lat; /* per-call ns of the one-thread run (max_calls entries), else NULL */
    pthread_mutex_t lock;
    char first_error[DHAF_ERR_MSG_MAX];
};

struct figures {
    double rate; /* calls per second */
    double p50_us, p99_us;
    long done, errors;
};

static void *measure_worker(void *arg)
{
    struct measure *m = arg;
    struct dhaf_err err;
    while (!bench_interrupted && bench_now_ns() < m->deadline) {
        long i = atomic_fetch_add(&m->issued, 1);
        if (i >= m->max_calls)
            break;
        dhaf_err_clear(&err);
        int64_t t0 = bench_now_ns();
        if (m->op(m->ud, i, &err) != 0) {
            pthread_mutex_lock(&m->lock);
            if (!m->first_error[0])
                snprintf(m->first_error, sizeof(m->first_error), "%s", err.msg);
            pthread_mutex_unlock(&m->lock);
            if (atomic_fetch_add(&m->errors, 1) + 1 >= MAX_ERRORS)
                break;
            continue;
        }
        long k = atomic_fetch_add(&m->done, 1);
        if (m->lat)
            m->lat[k] = bench_now_ns() - t0;
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double percentile_us(const int64_t *sorted, long n, int p)
{
    if (n <= 0)
        return 0;
    long k = (long)((double)p / 100.0 * (double)n);
    return (double)sorted[k < n ? k : n - 1] / 1000.0;
}

/* Runs op from `threads` threads (the calling one when 1) until o->seconds pass or o->calls
 * calls were issued; a few untimed calls first connect and warm up. */
static void measure(const char *name, bench_op_fn op, void *ud, int threads,
                    const struct bench_opts *o, struct figures *out)
{
    memset(out, 0, sizeof(*out));
    if (bench_interrupted)
        return;
    fprintf(stderr, "dhaf-bench-rpc: %s, %d thread%s ...\n", name, threads, threads > 1 ? "s" : "");
    struct dhaf_err err;
    for (long i = 0; i < WARMUP_CALLS && !bench_interrupted; i++)
        if (op(ud, i, &err) != 0) {
            fprintf(stderr, "dhaf-bench-rpc: %s: warm-up call failed: %s\n", name, err.msg);
            break;
        }

    struct measure m = {.op = op, .ud = ud, .max_calls = o->calls};
    atomic_init(&m.issued, 0);
    atomic_init(&m.done, 0);
    atomic_init(&m.errors, 0);
    pthread_mutex_init(&m.lock, NULL);
    if (threads == 1)
        m.lat = dhaf_xcalloc((size_t)o->calls, sizeof(*m.lat));
    int64_t t0 = bench_now_ns();
    m.deadline = t0 + (int64_t)(o->seconds * 1e9);
    pthread_t tid[MAX_THREADS];
    int started = 0;
    if (threads == 1) {
        measure_worker(&m);
    } else {
        for (int t = 0; t < threads; t++)
            if (pthread_create(&tid[t], NULL, measure_worker, &m) == 0)
                started++;
        if (started < threads)
            fprintf(stderr, "dhaf-bench-rpc: %s: only %d of %d threads started\n", name, started,
                    threads);
        for (int t = 0; t < started; t++)
            pthread_join(tid[t], NULL);
    }
    double elapsed = (double)(bench_now_ns() - t0) / 1e9;

    out->done = atomic_load(&m.done);
    out->errors = atomic_load(&m.errors);
    out->rate = elapsed > 0 ? (double)out->done / elapsed : 0;
    if (m.lat) {
        qsort(m.lat, (size_t)out->done, sizeof(*m.lat), cmp_i64);
        out->p50_us = percentile_us(m.lat, out->done, 50);
        out->p99_us = percentile_us(m.lat, out->done, 99);
        free(m.lat);
    }
    fprintf(stderr,
            "dhaf-bench-rpc: %s, %d thread%s: %.0f/s (%ld calls in %.2f s, %ld errors%s%s)\n", name,
            threads, threads > 1 ? "s" : "", out->rate, out->done, elapsed, out->errors,
            out->errors ? ", first: " : "", m.first_error);
    pthread_mutex_destroy(&m.lock);
}

/* ------------------------------------------------------------------ operations */

static int echo_say(void *ud, long i, struct dhaf_err *err)
{
    (void)i;
    struct dhaf_rpc_channel *ch = ud;
    Dhaftest__V1__SayRequest req = DHAFTEST__V1__SAY_REQUEST__INIT;
    req.text = SAY_TEXT;
    ProtobufCMessage *resp = NULL;
    int rc = dhaf_rpc_call(ch, SAY_METHOD, &req.base, &dhaftest__v1__say_reply__descriptor, &resp,
                           CALL_TIMEOUT_MS, NULL, 0, NULL, err);
    if (rc != 0)
        return rc;
    const Dhaftest__V1__SayReply *rep = (const Dhaftest__V1__SayReply *)resp;
    if (strcmp(rep->text, SAY_TEXT) != 0)
        rc = dhaf_err_set(err, DHAF_EPROTO, "Say echoed \"%s\"", rep->text);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static char put_value[PUT_VALUE_LEN + 1];

static int etcd_put(void *ud, long i, struct dhaf_err *err)
{
    char key[64];
    snprintf(key, sizeof(key), "/bench/c/%ld", i % KEY_SPACE);
    return dhaf_etcd_put(ud, key, put_value, PUT_VALUE_LEN, 0, NULL, err);
}

static int etcd_get(void *ud, long i, struct dhaf_err *err)
{
    (void)i;
    struct dhaf_kvs kvs = {0};
    int rc = dhaf_etcd_get(ud, GET_KEY, &kvs, err);
    if (rc == 0 && kvs.n != 1)
        rc = dhaf_err_set(err, DHAF_ENOTFOUND, "%s: %zu keys", GET_KEY, kvs.n);
    dhaf_kvs_release(&kvs);
    return rc;
}

/* The echo service: Say answers with the text it got and the peer it saw. */
static int echo_handler(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
                        struct dhaf_err *err)
{
    (void)ud;
    const Dhaftest__V1__SayRequest *in = (const Dhaftest__V1__SayRequest *)req;
    Dhaftest__V1__SayReply out = DHAFTEST__V1__SAY_REPLY__INIT;
    /* protobuf-c packs string fields as they are; the casts only drop const. */
    out.text = (char *)in->text;
    out.peer = (char *)dhaf_rpc_call_peer(call);
    return dhaf_rpc_send(call, &out.base, err);
}

static const struct dhaf_rpc_method echo_methods[] = {
    {SAY_METHOD, &dhaftest__v1__say_request__descriptor, false, echo_handler, NULL, NULL},
};

/* ------------------------------------------------------------------ the peer */

struct peer_result {
    char key[64];
    char value[64];
};

struct peer {
    struct peer_result r[PEER_RESULTS];
    size_t n;
    int status; /* waitpid status; -1 when it could not run or was killed by us */
};

static const char *peer_get(const struct peer *p, const char *key)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->r[i].key, key) == 0)
            return p->r[i].value;
    return NULL;
}

static void peer_line(struct peer *p, const char *line)
{
    char key[64], value[64];
    if (p->n < PEER_RESULTS && sscanf(line, "RESULT %63s %63s", key, value) == 2) {
        snprintf(p->r[p->n].key, sizeof(p->r[p->n].key), "%s", key);
        snprintf(p->r[p->n].value, sizeof(p->r[p->n].value), "%s", value);
        p->n++;
    }
}

/* Waits up to ms for pid; returns true when it was reaped (status in *st). */
static bool reap_within(pid_t pid, int ms, int *st)
{
    int64_t end = bench_now_ns() + (int64_t)ms * 1000000;
    for (;;) {
        pid_t r = waitpid(pid, st, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return true;
        if (bench_now_ns() >= end)
            return false;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Ends a peer that overran or was bench_interrupted: SIGTERM (it kills its own etcdctl child and
 * cleans up), then SIGKILL. Always reaps. */
static void peer_kill(pid_t pid)
{
    int st;
    kill(pid, SIGTERM);
    if (!reap_within(pid, PEER_GRACE_MS, &st)) {
        kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
    }
}

/* Runs bench/py_peer.py against the same servers and collects its RESULT lines. Its stderr
 * (progress) goes to ours. */
static void peer_run(const struct bench_opts *o, int echo_port, const char *etcd_endpoint,
                     struct peer *p)
{
    memset(p, 0, sizeof(*p));
    p->status = -1;
    char script[1024], echo_addr[64], seconds[32], calls[32], threads[32], ctl_puts[32];
    snprintf(script, sizeof(script), "%s/bench/py_peer.py", o->source_dir);
    snprintf(echo_addr, sizeof(echo_addr), "127.0.0.1:%d", echo_port);
    snprintf(seconds, sizeof(seconds), "%g", o->seconds);
    snprintf(calls, sizeof(calls), "%ld", o->calls);
    snprintf(threads, sizeof(threads), "%d", o->threads);
    snprintf(ctl_puts, sizeof(ctl_puts), "%d", o->etcdctl_puts);
    /* One option and its value a line. */
    /* clang-format off */
    char *const argv[] = {(char *)o->python, "-u", script,
                          "--echo-addr", echo_addr,
                          "--etcd-endpoint", (char *)etcd_endpoint,
                          "--source-dir", (char *)o->source_dir,
                          "--seconds", seconds,
                          "--calls", calls,
                          "--threads", threads,
                          "--etcdctl", (char *)o->etcdctl,
                          "--etcdctl-puts", ctl_puts,
                          NULL};
    /* clang-format on */
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "dhaf-bench-rpc: no peer: cannot read %s (use --source-dir)\n", script);
        return;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        fprintf(stderr, "dhaf-bench-rpc: no peer: pipe: %s\n", strerror(errno));
        return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    /* The peer gets default signal dispositions, whatever ours are. */
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t def;
    sigemptyset(&def);
    sigaddset(&def, SIGINT);
    sigaddset(&def, SIGTERM);
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &def);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int rc = posix_spawn(&pid, o->python, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(fds[1]);
    if (rc != 0) {
        fprintf(stderr, "dhaf-bench-rpc: no peer: cannot run %s: %s\n", o->python, strerror(rc));
        close(fds[0]);
        return;
    }

    /* Its own measurements are bounded; this bound only catches a wedged peer. */
    int64_t budget_ms = (int64_t)(o->seconds * 1000) * 8 + (int64_t)o->etcdctl_puts * 100 + 60000;
    int64_t end = bench_now_ns() + budget_ms * 1000000;
    char buf[PEER_LINE_MAX];
    size_t len = 0;
    bool eof = false;
    while (!eof && !bench_interrupted && bench_now_ns() < end) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, 200);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr <= 0)
            continue;
        ssize_t n = read(fds[0], buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            eof = true;
            n = 0;
        }
        len += (size_t)n;
        buf[len] = '\0';
        char *nl;
        while ((nl = strchr(buf, '\n'))) {
            *nl = '\0';
            peer_line(p, buf);
            len -= (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, len + 1);
        }
        if (len == sizeof(buf) - 1)
            len = 0; /* an overlong line is not a RESULT line: drop it */
    }
    close(fds[0]);
    if (!eof) {
        fprintf(stderr, "dhaf-bench-rpc: %s; stopping the peer\n",
                bench_interrupted ? "bench_interrupted" : "the peer overran its time budget");
        peer_kill(pid);
        return;
    }
    int st;
    if (!reap_within(pid, PEER_GRACE_MS, &st)) {
        peer_kill(pid);
        return;
    }
    p->status = st;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "dhaf-bench-rpc: the peer ended with status %d\n",
                WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

/* ------------------------------------------------------------------ the table */

enum which { RATE, P50, P99 };

struct row {
    const char *label;
    const struct figures *c; /* NULL: no C figure */
    enum which what;
    const char *peer_name;
    const char *peer_key; /* RESULT key of the peer figure */
};

static void cell(char *buf, size_t len, double v, long errors)
{
    if (errors > 0)
        snprintf(buf, len, "%.0f (%ld err)", v, errors);
    else
        snprintf(buf, len, "%.0f", v);
}

static void print_row(const struct row *r, const struct peer *p)
{
    char c[48] = "-", pv[48] = "n/a";
    if (r->c && r->c->done + r->c->errors > 0) {
        double v = r->what == RATE ? r->c->rate : r->what == P50 ? r->c->p50_us : r->c->p99_us;
        cell(c, sizeof(c), v, r->what == RATE ? r->c->errors : 0);
    } else if (r->c) {
        snprintf(c, sizeof(c), "n/a");
    }
    const char *v = p ? peer_get(p, r->peer_key) : NULL;
    if (v) {
        char ekey[96];
        snprintf(ekey, sizeof(ekey), "%s_errors", r->peer_key);
        const char *e = r->what == RATE ? peer_get(p, ekey) : NULL;
        cell(pv, sizeof(pv), strtod(v, NULL), e ? strtol(e, NULL, 10) : 0);
    }
    printf("%-36s %-14s %-16s %s\n", r->label, c, r->peer_name, pv);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    struct bench_opts o;
    int prc = parse_opts(argc, argv, &o);
    if (prc != 0)
        return prc == 1 ? 0 : 2;

    bench_catch_signals();
    signal(SIGPIPE, SIG_IGN);
    dhaf_log_setup(DHAF_LOG_WARN, DHAF_LOG_TEXT);
    memset(put_value, 'v', PUT_VALUE_LEN);

    int ret = 1;
    struct etcd_cluster cluster;
    memset(&cluster, 0, sizeof(cluster));
    struct dhaf_rpc_server *srv = NULL;
    struct dhaf_rpc_channel *ch = NULL;
    struct dhaf_etcd *etcd = NULL;
    struct dhaf_err err;
    dhaf_err_clear(&err);

    /* etcd first, from the main thread: the harness ties the members' lives to this thread. */
    fprintf(stderr, "dhaf-bench-rpc: starting etcd ...\n");
    if (etcd_cluster_start(&cluster, 1) != 0) {
        fprintf(stderr, "dhaf-bench-rpc: cannot start etcd\n");
        goto out;
    }
    struct dhaf_rpc_server_opts so = {.addr = "127.0.0.1:0"};
    srv = dhaf_rpc_server_start(&so, echo_methods, 1, &err);
    if (!srv) {
        fprintf(stderr, "dhaf-bench-rpc: cannot start the echo server: %s\n", err.msg);
        goto out;
    }
    int port = dhaf_rpc_server_port(srv);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    ch = dhaf_rpc_channel_new(target, NULL, &err);
    const char *endpoints[] = {cluster.endpoints};
    struct dhaf_etcd_opts eo = {.endpoints = endpoints, .n_endpoints = 1};
    etcd = ch ? dhaf_etcd_new(&eo, &err) : NULL;
    if (!etcd) {
        fprintf(stderr, "dhaf-bench-rpc: cannot create the clients: %s\n", err.msg);
        goto out;
    }
    fprintf(stderr, "dhaf-bench-rpc: echo server on %s, etcd on %s (data in %s)\n", target,
            cluster.endpoints, cluster.dir);

    struct figures u1, un, p1, pn, g1;
    measure("unary Say", echo_say, ch, 1, &o, &u1);
    measure("unary Say", echo_say, ch, o.threads, &o, &un);
    measure("etcd put", etcd_put, etcd, 1, &o, &p1);
    measure("etcd put", etcd_put, etcd, o.threads, &o, &pn);
    if (dhaf_etcd_put(etcd, GET_KEY, put_value, PUT_VALUE_LEN, 0, NULL, &err) != 0)
        fprintf(stderr, "dhaf-bench-rpc: put %s: %s\n", GET_KEY, err.msg);
    measure("etcd get", etcd_get, etcd, 1, &o, &g1);

    /* The peer runs after the C figures so the two never compete for the CPUs. */
    struct peer peer;
    bool have_peer = false;
    if (o.peer && !bench_interrupted) {
        fprintf(stderr, "dhaf-bench-rpc: running the peer (%s bench/py_peer.py) ...\n", o.python);
        peer_run(&o, port, cluster.endpoints, &peer);
        have_peer = true;
    }

    char n_label[2][48];
    snprintf(n_label[0], sizeof(n_label[0]), "unary round trips/s (%d threads)", o.threads);
    snprintf(n_label[1], sizeof(n_label[1]), "etcd puts/s (%d threads)", o.threads);
    const struct row rows[] = {
        {"unary round trips/s (1 thread)", &u1, RATE, "python grpcio", "unary_1"},
        {n_label[0], &un, RATE, "python grpcio", "unary_n"},
        {"unary p50 latency us (1 thread)", &u1, P50, "python grpcio", "unary_1_p50_us"},
        {"unary p99 latency us (1 thread)", &u1, P99, "python grpcio", "unary_1_p99_us"},
        {"etcd puts/s (1 thread)", &p1, RATE, "python grpcio", "etcd_put_1"},
        {n_label[1], &pn, RATE, "python grpcio", "etcd_put_n"},
        {"etcd put p50 latency us (1 thread)", &p1, P50, "python grpcio", "etcd_put_1_p50_us"},
        {"etcd gets/s (1 thread)", &g1, RATE, "python grpcio", "etcd_get_1"},
        {"etcd puts/s (process per op)", NULL, RATE, "etcdctl", "etcdctl_put"},
        {"etcd put p50 latency us (proc/op)", NULL, P50, "etcdctl", "etcdctl_put_p50_us"},
    };
    const char *gv = have_peer ? peer_get(&peer, "grpcio_version") : NULL;
    printf("\n# dhaf-bench-rpc: %g s or %ld calls per measurement, loopback, %ld CPUs, "
           "etcd data in %s%s%s%s\n",
           o.seconds, o.calls, sysconf(_SC_NPROCESSORS_ONLN), cluster.dir, gv ? ", grpcio " : "",
           gv ? gv : "", bench_interrupted ? " (INTERRUPTED)" : "");
    printf("%-36s %-14s %-16s %s\n", "benchmark", "dhaf (C)", "peer", "peer value");
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        print_row(&rows[i], have_peer ? &peer : NULL);
    fflush(stdout);
    ret = 0;

out:
    dhaf_etcd_free(etcd);
    dhaf_rpc_channel_free(ch);
    dhaf_rpc_server_stop(srv);
    etcd_cluster_stop(&cluster);
    return ret;
}
