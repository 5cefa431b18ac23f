/* SPDX-License-Identifier: MIT */
/* dhaf-bench-probe: HTTP checks/s and CPU-seconds per 10,000 checks of the web checker against
 * many local targets, or of a blackbox_exporter driven by a libcurl client (bench/probe.sh). */
#include "dhaf/valid.h"
#include "bench_util.h"
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "dhaf/alloc.h"
#include "dhaf/config.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"

#define MAX_TARGETS     60000
#define MAX_CONCURRENCY 1024
#define BB_BODY_MAX     (32 * 1024) /* a probe's metrics page is about 2 KiB */
#define BB_READY_MS     15000       /* how long the exporter may take to answer /-/healthy */
#define WARMUP_MS       30000       /* the untimed first pass over the targets, at most */
#define DRAIN_MS        15000       /* checks in flight at the deadline, at most */
#define FAILURE_TEXT    300

/* CPU-seconds of a process, every thread included. */
struct cpu {
    double user, sys;
};

static void self_cpu(struct cpu *out)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    out->user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    out->sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Another process's utime and stime from /proc/<pid>/stat. Returns 0, or -1 when the
 * process is gone. */
static int proc_cpu(pid_t pid, struct cpu *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: fields count from its end. */
    const char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    double tck = (double)sysconf(_SC_CLK_TCK);
    out->user = (double)ut / tck;
    out->sys = (double)st / tck;
    return 0;
}

/* b - a, into the figures' user and system CPU. */
static void cpu_delta(const struct cpu *a, const struct cpu *b, double *user, double *sys)
{
    *user = b->user - a->user;
    *sys = b->sys - a->sys;
}

/* ------------------------------------------------------------------ options */

struct probe_opts {
    int port; /* the targets' port (dhaf-bench-httpd) */
    uint32_t first;
    long targets;
    double seconds;
    bool forwarding;      /* the web checker's domain-forwarding (Host: the domain) */
    long batch;           /* targets per check() call; 0: all in one */
    const char *blackbox; /* host:port of a blackbox_exporter: drive it instead */
    pid_t blackbox_pid;   /* its process, whose CPU is measured */
    const char *module;   /* its module */
    int concurrency;      /* probes in flight at the exporter */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dhaf-bench-probe --port P [--first IP] [--targets N] [--seconds N]\n"
            "                        [--domain-forwarding] [--batch N]\n"
            "       dhaf-bench-probe --port P --blackbox HOST:PORT --blackbox-pid PID\n"
            "                        [--module NAME] [--concurrency N] [--first IP]\n"
            "                        [--targets N] [--seconds N]\n"
            "\n"
            "Prints figures, never pass/fail. The first form loads a config with one service\n"
            "whose N entry points are consecutive addresses from IP, with a web health\n"
            "checker on port P (path /, timeout 5, retries 0), and runs the checker's check()\n"
            "over all of them, round after round, for the given seconds: checks/s and the\n"
            "CPU-seconds of this process per 10,000 checks. The second form drives a\n"
            "blackbox_exporter: /probe?target=http://IP:P/&module=NAME for every target in\n"
            "turn, with N requests in flight, and measures the exporter's CPU from\n"
            "/proc/PID/stat; this client's own CPU is reported apart (client_cpu_s).\n"
            "Both first make one untimed pass over the targets. Targets are served by\n"
            "dhaf-bench-httpd (bench/probe.sh starts it).\n"
            "\n"
            "  --port P              the targets' port\n"
            "  --first IP            first target address (default 127.0.1.1)\n"
            "  --targets N           number of targets (default 1000)\n"
            "  --seconds N           length of the measurement (default 10)\n"
            "  --domain-forwarding   send the service domain as Host (the checker's default);\n"
            "                        off by default, so the request is the exporter's\n"
            "  --batch N             diagnostic: hand the targets to check() N at a time, one\n"
            "                        call after the other (default: all in one call)\n"
            "  --blackbox HOST:PORT  measure that exporter instead of the web checker\n"
            "  --blackbox-pid PID    the exporter's process\n"
            "  --module NAME         its module (default http_2xx)\n"
            "  --concurrency N       requests in flight at the exporter (default 128)\n"
            "  -h, --help            this help\n"
            "\n"
            "Output: one line of key=value on stdout: side, targets, seconds, checks (healthy\n"
            "ones), failures, checks_per_s, cpu_s, cpu_s_per_10k, cpu_user_s, cpu_sys_s,\n"
            "client_cpu_s.\n"
            "Exit 0: figures printed; 1: the measurement could not run; 2: usage.\n");
}

/* Returns 0, 1 after --help, or 2 on a usage error. */
static int parse_opts(int argc, char **argv, struct probe_opts *o)
{
    enum {
        OPT_PORT = 256,
        OPT_FIRST,
        OPT_TARGETS,
        OPT_SECONDS,
        OPT_FORWARDING,
        OPT_BATCH,
        OPT_BLACKBOX,
        OPT_BB_PID,
        OPT_MODULE,
        OPT_CONCURRENCY
    };
    static const struct option opts[] = {
        {"port", required_argument, NULL, OPT_PORT},
        {"first", required_argument, NULL, OPT_FIRST},
        {"targets", required_argument, NULL, OPT_TARGETS},
        {"seconds", required_argument, NULL, OPT_SECONDS},
        {"domain-forwarding", no_argument, NULL, OPT_FORWARDING},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"blackbox", required_argument, NULL, OPT_BLACKBOX},
        {"blackbox-pid", required_argument, NULL, OPT_BB_PID},
        {"module", required_argument, NULL, OPT_MODULE},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct probe_opts){.first = 0x7f000101u,
                             .targets = 1000,
                             .seconds = 10,
                             .module = "http_2xx",
                             .concurrency = 128};
    struct in_addr a;
    long v;
    int c, idx = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, &idx)) != -1) {
        switch (c) {
        case OPT_PORT:
            if (!dhaf_parse_long(optarg, 1, 65535, &v))
                goto bad_value;
            o->port = (int)v;
            break;
        case OPT_FIRST:
            if (inet_pton(AF_INET, optarg, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127)
                goto bad_value;
            o->first = ntohl(a.s_addr);
            break;
        case OPT_TARGETS:
            if (!dhaf_parse_long(optarg, 1, MAX_TARGETS, &v))
                goto bad_value;
            o->targets = v;
            break;
        case OPT_SECONDS:
            if (!dhaf_parse_long(optarg, 1, 3600, &v))
                goto bad_value;
            o->seconds = (double)v;
            break;
        case OPT_FORWARDING:
            o->forwarding = true;
            break;
        case OPT_BATCH:
            if (!dhaf_parse_long(optarg, 1, MAX_TARGETS, &v))
                goto bad_value;
            o->batch = v;
            break;
        case OPT_BLACKBOX:
            o->blackbox = optarg;
            break;
        case OPT_BB_PID:
            if (!dhaf_parse_long(optarg, 1, INT_MAX, &v))
                goto bad_value;
            o->blackbox_pid = (pid_t)v;
            break;
        case OPT_MODULE:
            o->module = optarg;
            break;
        case OPT_CONCURRENCY:
            if (!dhaf_parse_long(optarg, 1, MAX_CONCURRENCY, &v))
                goto bad_value;
            o->concurrency = (int)v;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            fprintf(stderr, "dhaf-bench-probe: %s needs a value\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "dhaf-bench-probe: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    const char *why = NULL;
    if (optind < argc)
        why = "unexpected argument";
    else if (o->port == 0)
        why = "--port is required";
    else if (o->blackbox && o->blackbox_pid == 0)
        why = "--blackbox needs --blackbox-pid";
    else if (((o->first + (uint32_t)o->targets - 1) >> 24) != 127)
        why = "the target addresses leave 127.0.0.0/8";
    if (why) {
        fprintf(stderr, "dhaf-bench-probe: %s\n", why);
        usage(stderr);
        return 2;
    }
    return 0;
bad_value:
    fprintf(stderr, "dhaf-bench-probe: bad value \"%s\" for --%s\n", optarg, opts[idx].name);
    usage(stderr);
    return 2;
}

static void target_ip(const struct probe_opts *o, long i, char *buf, size_t len)
{
    struct in_addr a = {.s_addr = htonl(o->first + (uint32_t)i)};
    inet_ntop(AF_INET, &a, buf, (socklen_t)len);
}

/* ------------------------------------------------------------------ figures */

struct figures {
    const char *side;
    double seconds;
    long checks; /* healthy ones */
    long failures;
    double cpu_s; /* of the measured process: user + system */
    double cpu_user_s, cpu_sys_s;
    double client_cpu_s; /* of the driving client, when it is another process */
    char first_failure[FAILURE_TEXT];
};

static void figures_print(const struct probe_opts *o, const struct figures *f)
{
    double rate = f->seconds > 0 ? (double)f->checks / f->seconds : 0;
    double per10k = f->checks > 0 ? f->cpu_s / (double)f->checks * 10000.0 : 0;
    printf("side=%s targets=%ld seconds=%.3f checks=%ld failures=%ld checks_per_s=%.1f "
           "cpu_s=%.3f cpu_s_per_10k=%.4f cpu_user_s=%.3f cpu_sys_s=%.3f client_cpu_s=%.3f\n",
           f->side, o->targets, f->seconds, f->checks, f->failures, rate, f->cpu_s, per10k,
           f->cpu_user_s, f->cpu_sys_s, f->client_cpu_s);
    fflush(stdout);
    if (f->failures)
        fprintf(stderr, "dhaf-bench-probe: %s: %ld failed checks; the first: %s\n", f->side,
                f->failures, f->first_failure);
}

__attribute__((format(printf, 2, 3))) static void note_failure(struct figures *f, const char *fmt,
                                                               ...)
{
    va_list ap;
    if (f->failures++ > 0)
        return;
    va_start(ap, fmt);
    vsnprintf(f->first_failure, sizeof(f->first_failure), fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ dhaf's web checker */

/* The config: one service whose entry points are the targets, checked by the web checker. */
static char *dhaf_yaml(const struct probe_opts *o)
{
    char *y = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&y, &len);
    if (!f)
        return NULL;
    fprintf(f,
            "dhaf: {cluster-name: bench, node-name: n1}\n"
            "etcd: {hosts: \"127.0.0.1:2379\"}\n"
            "services:\n"
            "- name: probe-bench\n"
            "  domain: probe-bench.test\n"
            "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
            "  health-checker: {type: web, port: %d, path: /, timeout: 5, retries: 0,\n"
            "                   domain-forwarding: %s}\n"
            "  entry-points:\n",
            o->port, o->forwarding ? "true" : "false");
    for (long i = 0; i < o->targets; i++) {
        char ip[INET_ADDRSTRLEN];
        target_ip(o, i, ip, sizeof(ip));
        fprintf(f, "  - {name: ep-%05ld, ip: \"%s\"}\n", i + 1, ip);
    }
    fclose(f);
    return y;
}

struct dhaf_side {
    size_t batch; /* targets per check() call */
    struct dhaf_config cfg;
    const struct dhaf_provider *web;
    void *state;
    struct dhaf_check_target *targets;
    struct dhaf_check_result *results;
    size_t n;
};

/* Loads the config through the real loader and makes the checker instance and targets.
 * Returns 0, or -1 after a message. */
static int dhaf_side_init(struct dhaf_side *d, const struct probe_opts *o)
{
    struct dhaf_cfg_report rep;
    struct dhaf_err err = {0};
    memset(d, 0, sizeof(*d));
    char *yaml = dhaf_yaml(o);
    if (!yaml) {
        fprintf(stderr, "dhaf-bench-probe: cannot build the config\n");
        return -1;
    }
    dhaf_cfg_report_init(&rep, "probe-bench.dhaf");
    int rc = dhaf_config_load_mem(yaml, strlen(yaml), "probe-bench.dhaf", ".",
                                  dhaf_registry_catalog(), &d->cfg, &rep);
    if (rc != 0) {
        fprintf(stderr, "dhaf-bench-probe: the generated config was refused:\n");
        dhaf_cfg_report_print(&rep, stderr);
    }
    dhaf_cfg_report_release(&rep);
    free(yaml);
    if (rc != 0)
        return -1;

    const struct dhaf_service *svc = &d->cfg.services[0];
    d->web = dhaf_registry_find(DHAF_PKIND_CHECKER, "web");
    struct dhaf_provider_ctx ctx = {
        .service = svc->name, .domain = svc->domain, .eps = svc->eps, .n_eps = svc->n_eps};
    if (!d->web || d->web->init(svc->checker.conf, &ctx, &d->state, &err) != 0) {
        fprintf(stderr, "dhaf-bench-probe: web checker init: %s\n",
                d->web ? err.msg : "no web checker in the registry");
        return -1;
    }
    d->n = svc->n_eps;
    d->batch = o->batch > 0 && (size_t)o->batch < d->n ? (size_t)o->batch : d->n;
    d->targets = dhaf_xcalloc(d->n, sizeof(*d->targets));
    d->results = dhaf_xcalloc(d->n, sizeof(*d->results));
    for (size_t i = 0; i < d->n; i++)
        d->targets[i] = (struct dhaf_check_target){
            .conf = svc->checker.conf,
            .state = d->state,
            .service = svc->name,
            .domain = svc->domain,
            .ep_name = svc->eps[i].name,
            .ep_ip = svc->eps[i].ip,
            .family = svc->eps[i].family,
            .result = &d->results[i],
        };
    return 0;
}

static void dhaf_side_release(struct dhaf_side *d)
{
    if (d->web && d->web->destroy)
        d->web->destroy(d->state);
    free(d->targets);
    free(d->results);
    dhaf_config_release(&d->cfg);
}

/* Checks every target once (one check() call, or one per batch); counts into f. */
static void dhaf_round(struct dhaf_side *d, struct figures *f)
{
    for (size_t i = 0; i < d->n; i += d->batch)
        d->web->check(d->targets + i, d->n - i < d->batch ? d->n - i : d->batch);
    for (size_t i = 0; i < d->n; i++) {
        const struct dhaf_check_result *r = &d->results[i];
        if (r->healthy)
            f->checks++;
        else
            note_failure(f, "%s: %s", d->targets[i].ep_ip, r->text);
    }
}

static int run_dhaf(const struct probe_opts *o)
{
    struct dhaf_side d;
    if (dhaf_side_init(&d, o) != 0) {
        dhaf_side_release(&d);
        return 1;
    }
    struct figures warm = {.side = "dhaf-warmup"};
    dhaf_round(&d, &warm);
    if (warm.failures)
        fprintf(stderr, "dhaf-bench-probe: warm-up: %ld of %zu checks failed; the first: %s\n",
                warm.failures, d.n, warm.first_failure);

    struct figures f = {.side = "dhaf"};
    long rounds = 0;
    struct cpu c0, c1;
    self_cpu(&c0);
    int64_t t0 = bench_now_ns(), deadline = t0 + (int64_t)(o->seconds * 1e9);
    while (!bench_interrupted && bench_now_ns() < deadline) {
        dhaf_round(&d, &f);
        rounds++;
    }
    f.seconds = (double)(bench_now_ns() - t0) / 1e9;
    self_cpu(&c1);
    cpu_delta(&c0, &c1, &f.cpu_user_s, &f.cpu_sys_s);
    f.cpu_s = f.cpu_user_s + f.cpu_sys_s;
    fprintf(stderr,
            "dhaf-bench-probe: dhaf: %ld rounds of %zu checks (%zu a check() call) in %.2f s "
            "(%.1f ms a round), %.2f CPU-s\n",
            rounds, d.n, d.batch, f.seconds, rounds ? f.seconds * 1000.0 / (double)rounds : 0.0,
            f.cpu_s);
    figures_print(o, &f);
    dhaf_side_release(&d);
    return 0;
}

/* ------------------------------------------------------------------ blackbox_exporter */

/* One request slot of the client: an easy handle kept (with its connection) across probes. */
struct bb_slot {
    CURL *easy;
    long target;
    size_t len;
    char body[BB_BODY_MAX];
};

struct bb_client {
    const struct probe_opts *o;
    CURLM *multi;
    struct bb_slot *slots;
    int n_slots;
    char **urls; /* one per target */
    long next;   /* the target of the next probe, round robin */
};

static size_t bb_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct bb_slot *s = arg;
    size_t n = size * nmemb;
    size_t take = n < BB_BODY_MAX - s->len ? n : BB_BODY_MAX - s->len;
    memcpy(s->body + s->len, data, take);
    s->len += take;
    return n;
}

static void bb_client_release(struct bb_client *c)
{
    for (int i = 0; c->slots && i < c->n_slots; i++) {
        if (!c->slots[i].easy)
            continue;
        curl_multi_remove_handle(c->multi, c->slots[i].easy);
        curl_easy_cleanup(c->slots[i].easy);
    }
    if (c->multi)
        curl_multi_cleanup(c->multi);
    for (long i = 0; c->urls && i < c->o->targets; i++)
        free(c->urls[i]);
    free(c->urls);
    free(c->slots);
}

static int bb_client_init(struct bb_client *c, const struct probe_opts *o)
{
    memset(c, 0, sizeof(*c));
    c->o = o;
    c->multi = curl_multi_init();
    if (!c->multi)
        return -1;
    c->urls = dhaf_xcalloc((size_t)o->targets, sizeof(*c->urls));
    for (long i = 0; i < o->targets; i++) {
        char ip[INET_ADDRSTRLEN];
        target_ip(o, i, ip, sizeof(ip));
        c->urls[i] = dhaf_xasprintf("http://%s/probe?target=http%%3A%%2F%%2F%s%%3A%d%%2F&module=%s",
                                    o->blackbox, ip, o->port, o->module);
    }
    c->n_slots = o->concurrency;
    c->slots = dhaf_xcalloc((size_t)c->n_slots, sizeof(*c->slots));
    for (int i = 0; i < c->n_slots; i++) {
        CURL *e = curl_easy_init();
        if (!e)
            return -1;
        c->slots[i].easy = e;
        curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)&c->slots[i]);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, bb_on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)&c->slots[i]);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    }
    return 0;
}

static int bb_start(struct bb_client *c, struct bb_slot *s)
{
    s->target = c->next;
    c->next = (c->next + 1) % c->o->targets;
    s->len = 0;
    curl_easy_setopt(s->easy, CURLOPT_URL, c->urls[s->target]);
    return curl_multi_add_handle(c->multi, s->easy) == CURLM_OK ? 0 : -1;
}

/* Runs probes, at most `limit` of them, starting none after deadline, and waits for those in
 * flight (at most DRAIN_MS past the deadline). Counts into f. Returns 0, or -1 when the
 * client itself broke. */
static int bb_run(struct bb_client *c, long limit, int64_t deadline, struct figures *f)
{
    long started = 0;
    int inflight = 0;
    for (int i = 0; i < c->n_slots && started < limit; i++, started++, inflight++)
        if (bb_start(c, &c->slots[i]) != 0)
            return -1;
    int64_t hard = deadline + (int64_t)DRAIN_MS * 1000000;
    while (inflight > 0) {
        int running, left;
        CURLMsg *msg;
        if (curl_multi_perform(c->multi, &running) != CURLM_OK)
            return -1;
        while ((msg = curl_multi_info_read(c->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *e = msg->easy_handle;
            CURLcode res = msg->data.result;
            struct bb_slot *s = NULL;
            long code = 0;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (void **)&s);
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            curl_multi_remove_handle(c->multi, e);
            inflight--;
            if (res != CURLE_OK)
                note_failure(f, "%s: %s", c->urls[s->target], curl_easy_strerror(res));
            else if (code != 200)
                note_failure(f, "%s: HTTP %ld", c->urls[s->target], code);
            else if (!memmem(s->body, s->len, "\nprobe_success 1\n", 17))
                note_failure(f, "%s: probe_success is not 1", c->urls[s->target]);
            else
                f->checks++;
            if (!bench_interrupted && started < limit && bench_now_ns() < deadline) {
                if (bb_start(c, s) != 0)
                    return -1;
                started++;
                inflight++;
            }
        }
        if (inflight > 0 && bench_now_ns() > hard) {
            fprintf(stderr, "dhaf-bench-probe: blackbox: %d requests still open; left\n", inflight);
            return -1;
        }
        if (inflight > 0 && curl_multi_poll(c->multi, NULL, 0, 100, NULL) != CURLM_OK)
            return -1;
    }
    return 0;
}

/* Waits for the exporter's /-/healthy. Returns 0, or -1 after a message. */
static int bb_wait_ready(const struct probe_opts *o)
{
    char *url = dhaf_xasprintf("http://%s/-/healthy", o->blackbox);
    CURL *e = curl_easy_init();
    int rc = -1;
    int64_t deadline = bench_now_ns() + (int64_t)BB_READY_MS * 1000000;
    if (!e)
        goto out;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 1000L);
    while (!bench_interrupted && bench_now_ns() < deadline) {
        long code = 0;
        if (kill(o->blackbox_pid, 0) != 0) {
            fprintf(stderr, "dhaf-bench-probe: the exporter (pid %d) is not running\n",
                    (int)o->blackbox_pid);
            goto out;
        }
        if (curl_easy_perform(e) == CURLE_OK &&
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200) {
            rc = 0;
            goto out;
        }
        nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
    }
    fprintf(stderr, "dhaf-bench-probe: %s did not answer 200 within %d s\n", url,
            BB_READY_MS / 1000);
out:
    if (e)
        curl_easy_cleanup(e);
    free(url);
    return rc;
}

static int run_blackbox(const struct probe_opts *o)
{
    struct bb_client c;
    int ret = 1;
    if (bb_wait_ready(o) != 0)
        return 1;
    if (bb_client_init(&c, o) != 0) {
        fprintf(stderr, "dhaf-bench-probe: cannot set up the libcurl client\n");
        goto out;
    }
    struct figures warm = {.side = "blackbox-warmup"};
    if (bb_run(&c, o->targets, bench_now_ns() + (int64_t)WARMUP_MS * 1000000, &warm) != 0) {
        fprintf(stderr, "dhaf-bench-probe: blackbox: the warm-up pass broke\n");
        goto out;
    }
    if (warm.failures)
        fprintf(stderr, "dhaf-bench-probe: warm-up: %ld of %ld probes failed; the first: %s\n",
                warm.failures, o->targets, warm.first_failure);

    struct figures f = {.side = "blackbox"};
    struct cpu bb0, bb1, c0, c1;
    double cu, cs;
    if (proc_cpu(o->blackbox_pid, &bb0) != 0) {
        fprintf(stderr, "dhaf-bench-probe: cannot read /proc/%d/stat\n", (int)o->blackbox_pid);
        goto out;
    }
    self_cpu(&c0);
    int64_t t0 = bench_now_ns();
    int rc = bb_run(&c, LONG_MAX, t0 + (int64_t)(o->seconds * 1e9), &f);
    f.seconds = (double)(bench_now_ns() - t0) / 1e9;
    self_cpu(&c1);
    cpu_delta(&c0, &c1, &cu, &cs);
    f.client_cpu_s = cu + cs;
    if (proc_cpu(o->blackbox_pid, &bb1) != 0) {
        fprintf(stderr, "dhaf-bench-probe: the exporter exited during the measurement\n");
        goto out;
    }
    cpu_delta(&bb0, &bb1, &f.cpu_user_s, &f.cpu_sys_s);
    f.cpu_s = f.cpu_user_s + f.cpu_sys_s;
    if (rc != 0)
        fprintf(stderr, "dhaf-bench-probe: blackbox: the client broke; figures so far\n");
    fprintf(stderr,
            "dhaf-bench-probe: blackbox: %ld probes in %.2f s with %d in flight; exporter "
            "%.2f CPU-s, this client %.2f CPU-s (%.0f%% of one core)\n",
            f.checks + f.failures, f.seconds, o->concurrency, f.cpu_s, f.client_cpu_s,
            f.seconds > 0 ? 100.0 * f.client_cpu_s / f.seconds : 0.0);
    figures_print(o, &f);
    ret = 0;
out:
    bb_client_release(&c);
    return ret;
}

int main(int argc, char **argv)
{
    struct probe_opts o;
    int prc = parse_opts(argc, argv, &o);
    if (prc != 0)
        return prc == 1 ? 0 : 2;

    bench_catch_signals();
    signal(SIGPIPE, SIG_IGN);
    dhaf_log_setup(DHAF_LOG_WARN, DHAF_LOG_TEXT);
    /* One fd per check in flight: 1,000 targets need more than the usual soft limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "dhaf-bench-probe: curl_global_init failed\n");
        return 1;
    }
    int ret = o.blackbox ? run_blackbox(&o) : run_dhaf(&o);
    curl_global_cleanup();
    return ret;
}
