/* SPDX-License-Identifier: MIT */
/* The probe engine on real loopback sockets and real child processes: stable offsets per voter,
 * checks spread over the round, a hung check that delays no other start, the bound on checks in
 * flight, stop in the middle of a round, the results callback with rise/fall, a plugin checker
 * never called on two threads at once, and every built-in checker on the engine's small thread
 * stacks. Built a second time with PROBE_TEST_PLUGIN: the plugin checker "probe-test". */

#ifdef PROBE_TEST_PLUGIN

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include "dhaf/provider.h"

/* Holds each call for hold-ms and says how many calls of it were running at its start. */
struct pt_config {
    int hold_ms;
};

/* clang-format off */
static const struct dhaf_cfgkey pt_keys[] = {
    {"hold-ms", DHAF_CFG_INT, offsetof(struct pt_config, hold_ms), false, "80", 0, 10000, NULL,
     NULL, NULL, "Milliseconds each check() call takes."},
    DHAF_KEY_END,
};
/* clang-format on */

static const struct dhaf_reason pt_reasons[] = {{"ok", "checked"}, {NULL, NULL}};

static atomic_int pt_running;

static void pt_check(struct dhaf_check_target *t, size_t n)
{
    int at_once = atomic_fetch_add(&pt_running, 1) + 1;
    const struct pt_config *c = n ? t[0].conf : NULL;
    int ms = c ? c->hold_ms : 0;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* the check's work */
    for (size_t i = 0; i < n; i++) {
        t[i].result->healthy = true;
        t[i].result->reason = pt_reasons[0].code;
        snprintf(t[i].result->text, sizeof(t[i].result->text), "calls at once: %d", at_once);
    }
    atomic_fetch_sub(&pt_running, 1);
}

static const struct dhaf_provider pt_checker = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_CHECKER,
    .type = "probe-test",
    .summary = "unit_probe's plugin: counts its calls at once.",
    .keys = pt_keys,
    .config_size = sizeof(struct pt_config),
    .check = pt_check,
    .reasons = pt_reasons,
};

const struct dhaf_provider *const dhaf_provider_entry[] = {&pt_checker, NULL};

#else /* the test */

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dhaf/cancel.h"
#include "dhaf/clock.h"
#include "dhaf/config.h"
#include "dhaf/plugins.h"
#include "dhaf/probe.h"
#include "config_load.h"
#include "fake_proc.h"

#define LISTEN_IP "127.0.0.52" /* one listener per service */
#define SILENT_IP "127.0.0.53" /* accepts (in the kernel) and never answers */
#define N_LISTEN  40
#define LATE_MS   250 /* how late a start may be on a busy 2-core machine (ASan included) */
#define MAX_SLOTS 64  /* providers/probe.c's PROBE_MAX_SLOTS */

/* ---- listeners that record when each one accepted ------------------------------------------ */

static struct {
    int fd[N_LISTEN], port[N_LISTEN];
    int silent_fd, silent_port;
    int stop[2];
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* an accept was recorded */
    int64_t first_ms[N_LISTEN]; /* first accept since the last reset */
    int count[N_LISTEN];
    int total;
} S;

static void *accept_main(void *arg)
{
    (void)arg;
    struct pollfd p[N_LISTEN + 1];
    for (;;) {
        p[0] = (struct pollfd){S.stop[0], POLLIN, 0};
        for (int i = 0; i < N_LISTEN; i++)
            p[i + 1] = (struct pollfd){S.fd[i], POLLIN, 0};
        if (poll(p, N_LISTEN + 1, -1) < 0)
            continue;
        if (p[0].revents)
            return NULL;
        for (int i = 0; i < N_LISTEN; i++) {
            if (!p[i + 1].revents)
                continue;
            int c = accept4(S.fd[i], NULL, NULL, SOCK_CLOEXEC);
            if (c < 0)
                continue;
            int64_t now = dhaf_mono_ms();
            close(c);
            pthread_mutex_lock(&S.mu);
            if (S.count[i]++ == 0)
                S.first_ms[i] = now;
            S.total++;
            pthread_cond_broadcast(&S.cv);
            pthread_mutex_unlock(&S.mu);
        }
    }
}

static void accepts_reset(void)
{
    pthread_mutex_lock(&S.mu);
    memset(S.first_ms, 0, sizeof(S.first_ms));
    memset(S.count, 0, sizeof(S.count));
    S.total = 0;
    pthread_mutex_unlock(&S.mu);
}

/* Waits (up to 5 s) until at least want accepts were recorded; returns how many were. */
static int accepts_wait(int want)
{
    int64_t deadline = dhaf_mono_ms() + 5000;
    pthread_mutex_lock(&S.mu);
    while (S.total < want && dhaf_cond_wait_until(&S.cv, &S.mu, deadline))
        ;
    int got = S.total;
    pthread_mutex_unlock(&S.mu);
    return got;
}

static int group_setup(void **state)
{
    (void)state;
    pthread_mutex_init(&S.mu, NULL);
    dhaf_cond_init_mono(&S.cv);
    for (int i = 0; i < N_LISTEN; i++)
        if ((S.fd[i] = test_bind(LISTEN_IP, 64, &S.port[i])) < 0)
            return -1;
    S.silent_fd = test_bind(SILENT_IP, 64, &S.silent_port);
    if (S.silent_fd < 0 || pipe(S.stop) != 0)
        return -1;
    return pthread_create(&S.th, NULL, accept_main, NULL) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    ssize_t w = write(S.stop[1], "x", 1);
    (void)w;
    pthread_join(S.th, NULL);
    for (int i = 0; i < N_LISTEN; i++)
        close(S.fd[i]);
    close(S.silent_fd);
    close(S.stop[0]);
    close(S.stop[1]);
    pthread_mutex_destroy(&S.mu);
    pthread_cond_destroy(&S.cv);
    return 0;
}

/* ---- services from YAML -------------------------------------------------------------------- */

struct yaml {
    char buf[1 << 16];
    size_t len;
};

__attribute__((format(printf, 2, 3))) static void yadd(struct yaml *y, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(y->buf + y->len, sizeof(y->buf) - y->len, fmt, ap);
    va_end(ap);
    assert_true(k >= 0 && (size_t)k < sizeof(y->buf) - y->len);
    y->len += (size_t)k;
}

static void yaml_begin(struct yaml *y)
{
    y->len = 0;
    yadd(y, "dhaf: {cluster-name: c1, node-name: n1}\n"
            "etcd: {hosts: \"127.0.0.1:2379\"}\nservices:\n");
}

/* One service with one entry point (named ep-<service>); hc = the health-checker's body. */
static void yaml_service(struct yaml *y, const char *name, const char *ip, const char *hc)
{
    yadd(y,
         "- name: %s\n"
         "  domain: %s.test\n"
         "  entry-points: [{name: ep-%s, ip: \"%s\"}]\n"
         "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
         "  health-checker: {%s}\n",
         name, name, name, ip, hc);
}

static void yaml_load(const struct yaml *y, struct dhaf_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    assert_int_equal(test_config_load(y->buf, "probe.dhaf", ".", cfg), 0);
}

/* N_LISTEN services s00..s39, one per listener (result i is listener i). */
static void listeners_config(struct dhaf_config *cfg)
{
    static struct yaml y;
    yaml_begin(&y);
    for (int i = 0; i < N_LISTEN; i++) {
        char name[16], hc[128];
        snprintf(name, sizeof(name), "s%02d", i);
        snprintf(hc, sizeof(hc), "type: tcp, port: %d, timeout: 2", S.port[i]);
        yaml_service(&y, name, LISTEN_IP, hc);
    }
    yaml_load(&y, cfg);
}

static struct dhaf_probe *engine(const struct dhaf_config *cfg, const char *voter, int max)
{
    struct dhaf_err err = {0};
    struct dhaf_probe_opts o = {.voter = voter, .max_inflight = max};
    struct dhaf_probe *p = dhaf_probe_new(cfg->services, cfg->n_services, &o, &err);
    if (!p)
        fail_msg("dhaf_probe_new: %s", err.msg);
    return p;
}

/* ---- what the callback saw ----------------------------------------------------------------- */

struct seen {
    size_t calls;
    size_t n;                 /* as the last call said */
    bool fresh[64];           /* any call showed the entry point fresh */
    int64_t fresh_ms[64];     /* when a call first did */
    bool bad_n;               /* a call's n differed from the first */
    struct dhaf_cancel *stop; /* fired by the first call that has a fresh result (may be NULL) */
    int64_t fired_ms;
    /* a helper thread that fires stop after the first call (instead of the call itself) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool go;
};

static void on_results(void *ud, const struct dhaf_probe_result *all, size_t n)
{
    struct seen *s = ud;
    int64_t now = dhaf_mono_ms();
    if (s->calls++ && n != s->n)
        s->bad_n = true;
    s->n = n;
    for (size_t k = 0; k < n && k < 64; k++)
        if (all[k].fresh && !s->fresh[k]) {
            s->fresh[k] = true;
            s->fresh_ms[k] = now;
        }
    pthread_mutex_lock(&s->mu);
    s->go = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    dhaf_cond_init_mono(&s->cv);
}

static void seen_release(struct seen *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

/* ---- tests --------------------------------------------------------------------------------- */

/* The test's own 64-bit FNV-1a of voter "\0" service "\0" ep, xor-folded. */
static uint64_t fnv_ep(const char *voter, const char *svc, const char *ep)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    const char *parts[3] = {voter, svc, ep};
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(parts[i]) + (i < 2); /* the NUL separators */
        for (size_t j = 0; j < len; j++)
            h = (h ^ (unsigned char)parts[i][j]) * 0x100000001b3ULL;
    }
    return h ^ (h >> 32);
}

/* The offsets of a round of spread_ms, taken from a round stopped before it began. */
static void offsets_of(struct dhaf_probe *p, int spread_ms, uint32_t *off, size_t n)
{
    struct dhaf_cancel stop;
    dhaf_cancel_init(&stop);
    dhaf_cancel_fire(&stop);
    struct seen s;
    seen_init(&s);
    const struct dhaf_probe_result *r;
    size_t got;
    int64_t t0 = dhaf_mono_ms();
    dhaf_probe_round(p, spread_ms, &stop, on_results, &s, &r, &got);
    assert_true(dhaf_mono_ms() - t0 < 100);
    assert_int_equal(got, n);
    assert_int_equal(s.calls, 0); /* nothing ran */
    for (size_t k = 0; k < n; k++) {
        assert_false(r[k].fresh);
        off[k] = r[k].offset_ms;
    }
    seen_release(&s);
    dhaf_cancel_destroy(&stop);
}

static void test_offsets_stable(void **state)
{
    (void)state;
    struct dhaf_config cfg;
    listeners_config(&cfg);
    struct dhaf_probe *a = engine(&cfg, "node-1", 0);
    struct dhaf_probe *a2 = engine(&cfg, "node-1", 0);
    struct dhaf_probe *b = engine(&cfg, "node-2", 0);
    uint32_t oa[N_LISTEN], oa_again[N_LISTEN], oa2[N_LISTEN], ob[N_LISTEN], big[N_LISTEN];
    offsets_of(a, 400, oa, N_LISTEN);
    offsets_of(a, 400, oa_again, N_LISTEN);
    offsets_of(a2, 400, oa2, N_LISTEN);
    offsets_of(b, 400, ob, N_LISTEN);
    assert_memory_equal(oa, oa_again, sizeof(oa));
    assert_memory_equal(oa, oa2, sizeof(oa));
    assert_memory_not_equal(oa, ob, sizeof(oa));
    bool slot_used[8] = {false};
    int slots = 0;
    for (int k = 0; k < N_LISTEN; k++) {
        assert_true(oa[k] < 400 && ob[k] < 400);
        /* 400 ms: 8 slots of 50 ms, picked by the hash */
        char svc[16], ep[24];
        snprintf(svc, sizeof(svc), "s%02d", k);
        snprintf(ep, sizeof(ep), "ep-%s", svc);
        assert_int_equal(oa[k], fnv_ep("node-1", svc, ep) % 8 * 50);
        assert_int_equal(ob[k], fnv_ep("node-2", svc, ep) % 8 * 50);
        slots += !slot_used[oa[k] / 50];
        slot_used[oa[k] / 50] = true;
    }
    assert_true(slots >= 6);
    /* a long round has at most 64 slots; no spread: every offset is 0 */
    offsets_of(a, 10000, big, N_LISTEN);
    for (int k = 0; k < N_LISTEN; k++) {
        char svc[16], ep[24];
        snprintf(svc, sizeof(svc), "s%02d", k);
        snprintf(ep, sizeof(ep), "ep-%s", svc);
        assert_int_equal(big[k], fnv_ep("node-1", svc, ep) % MAX_SLOTS * 10000 / MAX_SLOTS);
    }
    offsets_of(a, 0, big, N_LISTEN);
    for (int k = 0; k < N_LISTEN; k++)
        assert_int_equal(big[k], 0);
    /* before its first check an entry point has no opinion */
    const struct dhaf_probe_result *r;
    size_t n;
    struct dhaf_cancel stop;
    dhaf_cancel_init(&stop);
    dhaf_cancel_fire(&stop);
    dhaf_probe_round(b, 400, &stop, NULL, NULL, &r, &n);
    assert_false(r[0].known);
    assert_false(r[0].healthy);
    assert_string_equal(r[0].reason, "internal");
    assert_string_equal(r[0].text, "not checked yet");
    assert_string_equal(r[0].service, "s00");
    assert_string_equal(r[0].ep, "ep-s00");
    dhaf_cancel_destroy(&stop);
    /* a negative bound is refused */
    struct dhaf_err err = {0};
    struct dhaf_probe_opts bad = {.voter = "x", .max_inflight = -1};
    assert_null(dhaf_probe_new(cfg.services, cfg.n_services, &bad, &err));
    assert_int_equal(err.code, DHAF_EINVAL);
    dhaf_probe_free(a);
    dhaf_probe_free(a2);
    dhaf_probe_free(b);
    dhaf_config_release(&cfg);
}

static void test_spread_over_window(void **state)
{
    (void)state;
    struct dhaf_config cfg;
    listeners_config(&cfg);
    struct dhaf_probe *p = engine(&cfg, "node-1", 0);
    struct seen s;
    seen_init(&s);
    accepts_reset();
    const struct dhaf_probe_result *r;
    size_t n;
    int64_t t0 = dhaf_mono_ms();
    dhaf_probe_round(p, 400, NULL, on_results, &s, &r, &n);
    int64_t took = dhaf_mono_ms() - t0;
    assert_int_equal(accepts_wait(N_LISTEN), N_LISTEN);
    int64_t lo = INT64_MAX, hi = 0;
    uint32_t last = 0;
    for (int k = 0; k < N_LISTEN; k++) {
        int64_t at = S.first_ms[k] - t0;
        print_message("%s offset %3u ms  accepted at %3lld ms\n", r[k].service, r[k].offset_ms,
                      (long long)at);
        assert_int_equal(S.count[k], 1);
        /* never before its offset, and on time */
        assert_true(at >= r[k].offset_ms);
        assert_true(at < r[k].offset_ms + LATE_MS);
        lo = at < lo ? at : lo;
        hi = at > hi ? at : hi;
        last = r[k].offset_ms > last ? r[k].offset_ms : last;
        assert_true(r[k].known && r[k].fresh && r[k].healthy);
        assert_string_equal(r[k].reason, "ok");
        assert_true(s.fresh[k]);
    }
    print_message("round: %lld ms, %zu callbacks, accepts from %lld to %lld ms\n", (long long)took,
                  s.calls, (long long)lo, (long long)hi);
    assert_true(hi - lo >= 250); /* over the window, not all at once */
    assert_true(took >= last);
    assert_true(took < 400 + LATE_MS);
    assert_true(s.calls >= 6); /* results came slot by slot */
    assert_false(s.bad_n);
    assert_int_equal(s.n, N_LISTEN);
    seen_release(&s);
    dhaf_probe_free(p);
    dhaf_config_release(&cfg);
}

/* A service name whose entry point lands in slot 0 of a 400 ms round for voter. */
static void slot0_name(const char *voter, const char *prefix, char *svc, size_t len)
{
    for (int i = 0; i < 1000; i++) {
        char ep[64];
        snprintf(svc, len, "%s%d", prefix, i);
        snprintf(ep, sizeof(ep), "ep-%s", svc);
        if (fnv_ep(voter, svc, ep) % 8 == 0)
            return;
    }
    fail_msg("no name of 1000 lands in slot 0");
}

/* A check that hangs to its timeout (in the first slot) delays no other start, and no failure
 * in its own check() call: that is taken as it comes (dhaf_check_done). */
static void test_hung_check_delays_nothing(void **state)
{
    (void)state;
    static struct yaml y;
    yaml_begin(&y);
    char hang[32];
    slot0_name("node-1", "hang", hang, sizeof(hang));
    char hc[160];
    snprintf(hc, sizeof(hc), "type: tcp, port: %d, expect: never, receive-timeout: 1",
             S.silent_port);
    yaml_service(&y, hang, SILENT_IP, hc);
    for (int i = 0; i < N_LISTEN; i++) {
        char name[16];
        snprintf(name, sizeof(name), "s%02d", i);
        snprintf(hc, sizeof(hc), "type: tcp, port: %d, timeout: 2", S.port[i]);
        yaml_service(&y, name, LISTEN_IP, hc);
    }
    char refused[32];
    slot0_name("node-1", "refused", refused, sizeof(refused));
    int refusing_port, refusing = test_bind(SILENT_IP, -1, &refusing_port);
    assert_true(refusing >= 0);
    snprintf(hc, sizeof(hc), "type: tcp, port: %d, timeout: 2", refusing_port);
    yaml_service(&y, refused, SILENT_IP, hc);
    struct dhaf_config cfg;
    yaml_load(&y, &cfg);
    struct dhaf_probe *p = engine(&cfg, "node-1", 0);
    struct seen s;
    seen_init(&s);
    accepts_reset();
    const struct dhaf_probe_result *r;
    size_t n;
    int64_t t0 = dhaf_mono_ms();
    dhaf_probe_round(p, 400, NULL, on_results, &s, &r, &n);
    int64_t took = dhaf_mono_ms() - t0;
    assert_int_equal(accepts_wait(N_LISTEN), N_LISTEN);
    assert_int_equal(r[0].offset_ms, 0);
    assert_false(r[0].raw_healthy);
    assert_string_equal(r[0].reason, "expect");
    for (int k = 0; k < N_LISTEN; k++) {
        int64_t at = S.first_ms[k] - t0;
        assert_true(at >= r[k + 1].offset_ms);
        assert_true(at < r[k + 1].offset_ms + LATE_MS);
        assert_true(r[k + 1].healthy);
        /* reported when its own check() call ended: the passes in the hung entry point's call
         * wait for it, the others do not */
        if (r[k + 1].offset_ms > 0)
            assert_true(s.fresh_ms[k + 1] - t0 < r[k + 1].offset_ms + LATE_MS);
    }
    const size_t last = N_LISTEN + 1; /* refused in the hung one's call: taken at once */
    assert_int_equal(r[last].offset_ms, 0);
    assert_false(r[last].raw_healthy);
    print_message("refused beside the hung check: taken after %lld ms\n",
                  (long long)(s.fresh_ms[last] - t0));
    assert_true(s.fresh_ms[last] - t0 < LATE_MS);
    print_message("round with a hung check: %lld ms\n", (long long)took);
    assert_true(took >= 950 && took < 1000 + LATE_MS);
    close(refusing);
    seen_release(&s);
    dhaf_probe_free(p);
    dhaf_config_release(&cfg);
}

/* Writes an executable program at path. */
static void write_program(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, 0755), 0);
}

/* The end of a test of an engine on a config in a temporary directory. */
static void far_end(struct dhaf_probe *p, struct dhaf_config *cfg, const char *dir)
{
    dhaf_probe_free(p);
    dhaf_config_release(cfg);
    test_rmrf(dir);
}

/* The bound: an exec check that records its start and end; 16 of them with max_inflight 4. */
static void test_max_inflight(void **state)
{
    (void)state;
    enum { N = 16, MAX = 4 };
    char dir[64], script[128], sh[512];
    assert_int_equal(test_tmpdir(dir, sizeof(dir), "probe-test"), 0);
    snprintf(script, sizeof(script), "%s/check.sh", dir);
    snprintf(sh, sizeof(sh),
             "#!/bin/sh\n"
             "s=$(date +%%s%%N)\n"
             "sleep 0.15\n"
             "echo \"$s $(date +%%s%%N)\" > %s/times-$1\n",
             dir);
    write_program(script, sh);
    static struct yaml y;
    yaml_begin(&y);
    for (int i = 0; i < N; i++) {
        char name[16], hc[256];
        snprintf(name, sizeof(name), "x%02d", i);
        snprintf(hc, sizeof(hc), "type: exec, init: /bin/true, check: %s, timeout: 10", script);
        yaml_service(&y, name, "127.0.0.1", hc);
    }
    struct dhaf_config cfg;
    yaml_load(&y, &cfg);
    struct dhaf_probe *p = engine(&cfg, "node-1", MAX);
    const struct dhaf_probe_result *r;
    size_t n;
    dhaf_probe_round(p, 0, NULL, NULL, NULL, &r, &n);
    /* The programs' own intervals lie within the engine's: their overlap cannot exceed it. */
    long long start[N], end[N];
    for (int i = 0; i < N; i++) {
        assert_true(r[i].healthy);
        char path[160];
        snprintf(path, sizeof(path), "%s/times-ep-x%02d", dir, i);
        char *t = test_read_file(path);
        assert_non_null(t);
        assert_int_equal(sscanf(t, "%lld %lld", &start[i], &end[i]), 2);
        free(t);
    }
    int most = 0;
    for (int i = 0; i < N; i++) {
        int at_once = 0;
        for (int j = 0; j < N; j++)
            at_once += start[j] <= start[i] && end[j] > start[i];
        most = at_once > most ? at_once : most;
    }
    print_message("at most %d checks at once (bound %d)\n", most, MAX);
    assert_true(most <= MAX);
    assert_true(most >= 2); /* and they did run side by side */
    far_end(p, &cfg, dir);
}

static void *fire_after_first(void *arg)
{
    struct seen *s = arg;
    int64_t deadline = dhaf_mono_ms() + 10000;
    pthread_mutex_lock(&s->mu);
    while (!s->go && dhaf_cond_wait_until(&s->cv, &s->mu, deadline))
        ;
    pthread_mutex_unlock(&s->mu);
    s->fired_ms = dhaf_mono_ms();
    dhaf_cancel_fire(s->stop);
    return NULL;
}

/* Stop fired by another thread while the round waits for its next slot. */
static void test_stop_mid_round(void **state)
{
    (void)state;
    struct dhaf_config cfg;
    listeners_config(&cfg);
    struct dhaf_probe *p = engine(&cfg, "node-1", 0);
    struct dhaf_cancel stop;
    dhaf_cancel_init(&stop);
    struct seen s;
    seen_init(&s);
    s.stop = &stop;
    accepts_reset();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fire_after_first, &s), 0);
    const struct dhaf_probe_result *r;
    size_t n;
    int64_t t0 = dhaf_mono_ms();
    dhaf_probe_round(p, 2000, &stop, on_results, &s, &r, &n);
    int64_t end = dhaf_mono_ms();
    pthread_join(th, NULL);
    print_message("stopped %lld ms into the round, returned %lld ms later\n",
                  (long long)(s.fired_ms - t0), (long long)(end - s.fired_ms));
    assert_true(end - s.fired_ms < 100);
    assert_true(end - t0 < 1000);
    int fresh = 0;
    for (int k = 0; k < N_LISTEN; k++) {
        fresh += r[k].fresh;
        /* none started after the stop */
        if (r[k].fresh)
            assert_true(t0 + r[k].offset_ms <= s.fired_ms);
        else
            assert_false(r[k].known);
    }
    assert_true(fresh >= 1 && fresh < N_LISTEN);
    /* what was not checked was not connected to either */
    assert_int_equal(accepts_wait(fresh), fresh);
    for (int k = 0; k < N_LISTEN; k++)
        assert_int_equal(S.count[k], r[k].fresh ? 1 : 0);
    /* the engine runs whole rounds again afterwards */
    dhaf_probe_round(p, 0, NULL, NULL, NULL, &r, &n);
    for (int k = 0; k < N_LISTEN; k++)
        assert_true(r[k].fresh && r[k].healthy);
    seen_release(&s);
    dhaf_cancel_destroy(&stop);
    dhaf_probe_free(p);
    dhaf_config_release(&cfg);
}

/* Two tcp services in y: one listening on ip_up (then closed by the test: *up), one refusing
 * on ip_down (then listening: *down), with the checker options extra. */
static void two_services(struct yaml *y, const char *names[2], const char *ip_up,
                         const char *ip_down, const char *extra, int *up, int *down)
{
    int up_port, down_port;
    *up = test_bind(ip_up, 16, &up_port);
    *down = test_bind(ip_down, -1, &down_port);
    assert_true(*up >= 0 && *down >= 0);
    char hc[160];
    snprintf(hc, sizeof(hc), "type: tcp, port: %d, timeout: 2%s", up_port, extra);
    yaml_service(y, names[0], ip_up, hc);
    snprintf(hc, sizeof(hc), "type: tcp, port: %d, timeout: 2%s", down_port, extra);
    yaml_service(y, names[1], ip_down, hc);
}

/* The callback sees every entry point each time; rise and fall still smooth opinions. */
static void test_callback_and_smoothing(void **state)
{
    (void)state;
    int up, down;
    static struct yaml y;
    yaml_begin(&y);
    char hc[160];
    two_services(&y, (const char *[2]){"up", "down"}, "127.0.0.54", "127.0.0.55",
                 ", rise: 2, fall: 2", &up, &down);
    for (int i = 0; i < 6; i++) {
        char name[16];
        snprintf(name, sizeof(name), "s%02d", i);
        snprintf(hc, sizeof(hc), "type: tcp, port: %d", S.port[i]);
        yaml_service(&y, name, LISTEN_IP, hc);
    }
    struct dhaf_config cfg;
    yaml_load(&y, &cfg);
    struct dhaf_probe *p = engine(&cfg, "node-1", 0);
    const struct dhaf_probe_result *r;
    size_t n;
    static const struct {
        bool up_raw, up_opinion, down_raw, down_opinion;
    } want[] = {
        {true, true, false, false}, /* first check: the opinion is the result */
        {false, true, true, false}, /* one result against it: kept */
        {false, false, true, true}, /* two in a row: changed */
    };
    for (int round = 0; round < 3; round++) {
        struct seen s;
        seen_init(&s);
        dhaf_probe_round(p, 200, NULL, on_results, &s, &r, &n);
        assert_int_equal(n, 8);
        assert_true(s.calls >= 1);
        assert_false(s.bad_n);
        for (size_t k = 0; k < n; k++)
            assert_true(s.fresh[k] && r[k].fresh && r[k].known);
        assert_int_equal(r[0].raw_healthy, want[round].up_raw);
        assert_int_equal(r[0].healthy, want[round].up_opinion);
        assert_int_equal(r[1].raw_healthy, want[round].down_raw);
        assert_int_equal(r[1].healthy, want[round].down_opinion);
        if (!want[round].up_raw)
            assert_string_equal(r[0].reason, "refused");
        seen_release(&s);
        if (round == 0) {
            close(up);
            assert_int_equal(listen(down, 16), 0);
        }
    }
    close(down);
    dhaf_probe_free(p);
    dhaf_config_release(&cfg);
}

/* An opinion that turns unhealthy is held (published healthy) until another entry point
 * passes a check started since: a vantage point whose network breaks must not see its first
 * failing checks as the entry points' failure. With nothing passing, every failure stays held
 * and the round reads as impaired; a pass elsewhere releases it. */
static void test_failure_held_until_witnessed(void **state)
{
    (void)state;
    int a, b; /* a listening, then closed; b refusing, then listening */
    static struct yaml y;
    yaml_begin(&y);
    two_services(&y, (const char *[2]){"a", "b"}, "127.0.0.56", "127.0.0.57", "", &a, &b);
    struct dhaf_config cfg;
    yaml_load(&y, &cfg);
    struct dhaf_probe *p = engine(&cfg, "node-1", 0);
    const struct dhaf_probe_result *r;
    size_t n;
    dhaf_probe_round(p, 100, NULL, NULL, NULL, &r, &n);
    assert_true(r[0].healthy && !r[0].held && !r[1].healthy && !r[1].held);
    close(a); /* a fails now, and nothing passes: held, published healthy */
    dhaf_probe_round(p, 100, NULL, NULL, NULL, &r, &n);
    assert_false(r[0].raw_healthy);
    assert_true(r[0].healthy && r[0].held);
    assert_false(r[1].healthy);
    for (size_t k = 0; k < n; k++) /* every one failing or held: a vote of it is impaired */
        assert_true(!r[k].healthy || r[k].held);
    assert_int_equal(listen(b, 16), 0); /* b passes: a's failure is a's own */
    dhaf_probe_round(p, 100, NULL, NULL, NULL, &r, &n);
    assert_true(r[1].healthy && !r[1].held);
    assert_false(r[0].healthy);
    assert_false(r[0].held);
    close(b);
    dhaf_probe_free(p);
    dhaf_config_release(&cfg);
}

/* Lines in a file (0 when there is none). */
static int count_lines(const char *path)
{
    char *t = test_read_file(path);
    int n = 0;
    for (const char *c = t; c && *c; c++)
        n += *c == '\n';
    free(t);
    return n;
}

/* What the re-check test's callback saw of entry point 0. */
struct recheck_seen {
    int64_t t0;
    const char *calls; /* the file where entry point 0's check program writes a line per run */
    bool held;         /* a callback showed it held */
    int confirmed_at;  /* its checks (lines) when a callback first showed it failing, not held */
    int64_t confirmed_ms;
    int suspects; /* callbacks that flagged it suspect */
    bool burst;   /* a burst check: confirmed without a callback showing it held first */
};

static void on_recheck(void *ud, const struct dhaf_probe_result *all, size_t n)
{
    struct recheck_seen *s = ud;
    (void)n;
    s->held |= all[0].held;
    s->suspects += all[0].suspect;
    if ((s->held || s->burst) && !s->confirmed_at && !all[0].healthy && !all[0].held) {
        s->confirmed_at = count_lines(s->calls);
        s->confirmed_ms = dhaf_mono_ms() - s->t0;
    }
}

/* The [start, end) of the i-th run of a check program that wrote "start end" lines. */
static void nth_run(const char *path, int i, long long *start, long long *end)
{
    char *t = test_read_file(path);
    assert_non_null(t);
    const char *c = t;
    for (int k = 0; k < i && c; k++) {
        c = strchr(c, '\n');
        c = c ? c + 1 : NULL;
    }
    assert_non_null(c);
    assert_int_equal(sscanf(c, "%lld %lld", start, end), 2);
    free(t);
}

enum { SPREAD = 1000, SLOTS = SPREAD / 50 };

/* Creates the empty file path (a flag the check program looks at). */
static void touch(const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
}

/* Two exec-checked services whose turns in a round of SPREAD ms are far apart (names[0] early,
 * names[1] late); their check program sleeps `sleep` s (timeout `timeout` s), appends
 * "start end" (ns) to dir/calls-<ep> and fails while dir/down-<ep> exists (and sleeps 2 s more
 * while dir/hang-<ep> does). An engine of node-1 after a first round (all healthy). */
static struct dhaf_probe *two_far_apart_ex(struct dhaf_config *cfg, char *dir, size_t dir_len,
                                           char names[2][8], const char *sleep, int timeout)
{
    names[0][0] = names[1][0] = 0;
    for (int i = 0; i < 100 && !names[0][0]; i++) {
        char svc[8], ep[12];
        snprintf(svc, sizeof(svc), "a%d", i);
        snprintf(ep, sizeof(ep), "ep-%s", svc);
        if (fnv_ep("node-1", svc, ep) % SLOTS <= 1)
            snprintf(names[0], sizeof(names[0]), "%s", svc);
    }
    for (int i = 0; i < 100 && !names[1][0]; i++) {
        char svc[8], ep[12];
        snprintf(svc, sizeof(svc), "b%d", i);
        snprintf(ep, sizeof(ep), "ep-%s", svc);
        if (fnv_ep("node-1", svc, ep) % SLOTS >= 14)
            snprintf(names[1], sizeof(names[1]), "%s", svc);
    }
    assert_true(names[0][0] && names[1][0]);
    char script[128], sh[512];
    assert_int_equal(test_tmpdir(dir, dir_len, "probe-recheck"), 0);
    snprintf(script, sizeof(script), "%s/check.sh", dir);
    snprintf(sh, sizeof(sh),
             "#!/bin/sh\n"
             "s=$(date +%%s%%N)\n"
             "sleep %s\n"
             "[ -e %s/hang-$1 ] && sleep 2\n"
             "rc=0; [ -e %s/down-$1 ] && rc=1\n"
             "echo \"$s $(date +%%s%%N)\" >> %s/calls-$1\n"
             "exit $rc\n",
             sleep, dir, dir, dir);
    write_program(script, sh);
    static struct yaml y;
    yaml_begin(&y);
    for (int i = 0; i < 2; i++) {
        char hc[256];
        snprintf(hc, sizeof(hc), "type: exec, init: /bin/true, check: %s, timeout: %d", script,
                 timeout);
        yaml_service(&y, names[i], "127.0.0.1", hc);
    }
    yaml_load(&y, cfg);
    struct dhaf_probe *p = engine(cfg, "node-1", 0);
    const struct dhaf_probe_result *r;
    size_t n;
    dhaf_probe_round(p, 0, NULL, NULL, NULL, &r, &n);
    assert_true(r[0].healthy && r[1].healthy);
    return p;
}

static struct dhaf_probe *two_far_apart(struct dhaf_config *cfg, char *dir, size_t dir_len,
                                        char names[2][8])
{
    return two_far_apart_ex(cfg, dir, dir_len, names, "0.2", 5);
}

/* dir/<kind>-ep-<name>: a file of two_far_apart's check program (calls-, down-, hang-). */
static void far_file(char *buf, size_t len, const char *dir, const char *kind, const char *name)
{
    snprintf(buf, len, "%s/%s-ep-%s", dir, kind, name);
}

/* A failure just held is checked again at once beside a witness of its type, in one call: the
 * witness's pass there confirms it at its second check, the two side by side and long before
 * the witness's own turn in the round (a witness's check, then a confirming one, took two
 * checks' time one after the other). */
static void test_failure_rechecked_beside_witness(void **state)
{
    (void)state;
    char names[2][8], dir[64], calls[160], down[160];
    struct dhaf_config cfg;
    struct dhaf_probe *p = two_far_apart(&cfg, dir, sizeof(dir), names);
    const struct dhaf_probe_result *r;
    size_t n;
    far_file(calls, sizeof(calls), dir, "calls", names[0]);
    far_file(down, sizeof(down), dir, "down", names[0]);
    assert_int_equal(count_lines(calls), 1);
    touch(down); /* the first entry point fails from now on */
    struct recheck_seen s = {.t0 = dhaf_mono_ms(), .calls = calls};
    dhaf_probe_round(p, SPREAD, NULL, on_recheck, &s, &r, &n);
    print_message("turns %u and %u ms; confirmed after %d checks of it (%lld ms)\n", r[0].offset_ms,
                  r[1].offset_ms, s.confirmed_at - 1, (long long)s.confirmed_ms);
    assert_true(r[0].offset_ms <= 100 && r[1].offset_ms >= 700);
    assert_true(s.held);                      /* its own turn's check failed: held */
    assert_int_equal(s.suspects, 1);          /* and other voters were asked, once */
    assert_int_equal(s.confirmed_at, 1 + 2);  /* the re-check beside the witness confirmed it */
    long long a_start, a_end, b_start, b_end; /* its re-check and the witness's check: at once */
    nth_run(calls, 2, &a_start, &a_end);
    far_file(down, sizeof(down), dir, "calls", names[1]);
    nth_run(down, 1, &b_start, &b_end);
    print_message("re-check 0..%lld ms, witness %lld..%lld ms\n", (a_end - a_start) / 1000000,
                  (b_start - a_start) / 1000000, (b_end - a_start) / 1000000);
    assert_true(b_start < a_end && a_start < b_end);
    assert_true(s.confirmed_ms < r[1].offset_ms); /* before the witness's own turn */
    assert_false(r[0].healthy);
    assert_false(r[0].held);
    assert_true(r[1].healthy);
    far_end(p, &cfg, dir);
}

/* Another voter's suspicion (dhaf_probe_suspect) checks the entry point at once between rounds
 * (dhaf_probe_idle), beside a witness: its failure there is confirmed by that one check - not held
 * for a re-check, and not flagged suspect again (no echo between voters); one already failing
 * is not checked, one asked twice is checked once; the wait lasts until its end, and
 * dhaf_probe_wake ends the next one at once. */
static void test_suspect_checked_at_once(void **state)
{
    (void)state;
    char names[2][8], dir[64], calls[160], other[160], down[160], ep[16];
    struct dhaf_config cfg;
    struct dhaf_probe *p = two_far_apart(&cfg, dir, sizeof(dir), names);
    far_file(calls, sizeof(calls), dir, "calls", names[0]);
    far_file(other, sizeof(other), dir, "calls", names[1]);
    far_file(down, sizeof(down), dir, "down", names[0]);
    touch(down);
    snprintf(ep, sizeof(ep), "ep-%s", names[0]);
    assert_false(dhaf_probe_suspect(p, names[0], "ep-nope"));
    assert_false(dhaf_probe_suspect(p, "nope", ep));
    assert_true(dhaf_probe_suspect(p, names[0], ep)); /* asked before the wait: it starts at once */
    struct recheck_seen s = {.t0 = dhaf_mono_ms(), .calls = calls, .burst = true};
    dhaf_probe_idle(p, s.t0 + 600, NULL, on_recheck, &s);
    int64_t waited = dhaf_mono_ms() - s.t0;
    print_message("confirmed after %d checks of it (%lld ms); waited %lld ms\n", s.confirmed_at - 1,
                  (long long)s.confirmed_ms, (long long)waited);
    assert_int_equal(s.confirmed_at, 1 + 1); /* the burst check alone confirmed it */
    assert_true(s.confirmed_ms < 500);
    assert_false(s.held);
    assert_int_equal(s.suspects, 0);
    assert_true(waited >= 600 && waited < 1500);
    long long a_start, a_end, b_start, b_end; /* the check and its witness: side by side */
    nth_run(calls, 1, &a_start, &a_end);
    nth_run(other, 1, &b_start, &b_end);
    assert_true(b_start < a_end && a_start < b_end);
    /* asked twice before it starts: checked once (alone: the other one is down, no witness) */
    char ep1[16];
    snprintf(ep1, sizeof(ep1), "ep-%s", names[1]);
    int before = count_lines(other);
    assert_true(dhaf_probe_suspect(p, names[1], ep1));
    assert_true(dhaf_probe_suspect(p, names[1], ep1));
    dhaf_probe_idle(p, dhaf_mono_ms() + 1, NULL, NULL, NULL); /* returns once it has ended */
    assert_int_equal(count_lines(other), before + 1);
    assert_int_equal(count_lines(calls), 2); /* and the failing one was not checked again */
    dhaf_probe_wake(p);                      /* before the wait: it ends at once */
    int64_t t1 = dhaf_mono_ms();
    dhaf_probe_idle(p, t1 + 5000, NULL, NULL, NULL);
    assert_true(dhaf_mono_ms() - t1 < 1000);
    const struct dhaf_probe_result *r;
    size_t n;
    dhaf_probe_round(p, 0, NULL, NULL, NULL, &r, &n);
    assert_false(r[0].healthy); /* it stays down */
    assert_true(r[1].healthy);
    far_end(p, &cfg, dir);
}

struct slow_seen {
    int64_t t0;
    int64_t suspect_ms; /* when a callback first flagged entry point 0 suspect (0: never) */
    int flagged;        /* callbacks that did */
};

static void on_slow(void *ud, const struct dhaf_probe_result *all, size_t n)
{
    struct slow_seen *s = ud;
    (void)n;
    if (all[0].suspect && !s->flagged++)
        s->suspect_ms = dhaf_mono_ms() - s->t0;
}

/* A scheduled check still running at 3 times its entry point's usual time (here 3 x ~0.2 s) is
 * flagged suspect once, long before it ends (a hung backend: other voters check it at once);
 * it starts no other check of this voter's. */
static void test_slow_check_suspected(void **state)
{
    (void)state;
    char names[2][8], dir[64], calls[160], hang[160];
    struct dhaf_config cfg;
    struct dhaf_probe *p = two_far_apart(&cfg, dir, sizeof(dir), names);
    const struct dhaf_probe_result *r;
    size_t n;
    dhaf_probe_round(p, 0, NULL, NULL, NULL, &r, &n); /* a second pass: its usual time known */
    far_file(calls, sizeof(calls), dir, "calls", names[0]);
    far_file(hang, sizeof(hang), dir, "hang", names[0]);
    touch(hang);
    struct slow_seen s = {.t0 = dhaf_mono_ms()};
    dhaf_probe_round(p, 0, NULL, on_slow, &s, &r, &n);
    int64_t took = dhaf_mono_ms() - s.t0;
    print_message("flagged suspect after %lld ms; the round took %lld ms\n",
                  (long long)s.suspect_ms, (long long)took);
    assert_int_equal(s.flagged, 1);
    assert_true(s.suspect_ms >= 400 && s.suspect_ms < 1500); /* 3 x usual, before its end */
    assert_true(took >= 2000);
    assert_true(r[0].healthy && r[1].healthy);   /* slow, not failing: nothing changed */
    assert_int_equal(count_lines(calls), 2 + 1); /* its scheduled check only */
    far_end(p, &cfg, dir);
}

static void on_witness(void *ud, const struct dhaf_probe_result *all, size_t n)
{
    bool *held = ud;
    (void)n;
    *held |= all[1].held;
}

/* The witness of a burst check is not suspected itself: when it fails there (beside the
 * suspected entry point's pass) its failure is held and checked again like any first failure -
 * one failing check does not confirm it. */
static void test_burst_witness_failure_held(void **state)
{
    (void)state;
    char names[2][8], dir[64], other[160], down[160], ep[16];
    struct dhaf_config cfg;
    struct dhaf_probe *p = two_far_apart(&cfg, dir, sizeof(dir), names);
    far_file(other, sizeof(other), dir, "calls", names[1]);
    far_file(down, sizeof(down), dir, "down", names[1]);
    touch(down); /* the witness-to-be fails from now on */
    int before = count_lines(other);
    snprintf(ep, sizeof(ep), "ep-%s", names[0]);
    assert_true(dhaf_probe_suspect(p, names[0], ep)); /* it passes; names[1] is its witness */
    bool held = false;
    dhaf_probe_idle(p, dhaf_mono_ms() + 1, NULL, on_witness, &held);
    const struct dhaf_probe_result *r;
    size_t n;
    dhaf_probe_round(p, 0, NULL, NULL, NULL, &r, &n);
    print_message("witness checked %d times; held first: %s\n", count_lines(other) - before,
                  held ? "yes" : "no");
    assert_true(held);
    assert_true(count_lines(other) - before >= 2);
    assert_false(r[1].healthy); /* confirmed by the checks that followed */
    assert_true(r[0].healthy);
    far_end(p, &cfg, dir);
}

/* A burst check that times out is weak evidence when the entry point usually takes at least
 * half of that time (here 0.6 s of a 1 s timeout: a slow backend tipping over its timeout now
 * and then): held, checked again beside a witness, and confirmed by that second failure only,
 * about two timeouts after the suspicion. When it usually answers in 0.2 s, the same hang is
 * confirmed by the burst check alone, one timeout after. */
static void test_burst_timeout_weak_when_usually_slow(void **state)
{
    (void)state;
    for (int slow = 0; slow < 2; slow++) {
        char names[2][8], dir[64], calls[160], hang[160], ep[16];
        struct dhaf_config cfg;
        struct dhaf_probe *p =
            two_far_apart_ex(&cfg, dir, sizeof(dir), names, slow ? "0.6" : "0.2", 1);
        const struct dhaf_probe_result *r;
        size_t n;
        dhaf_probe_round(p, 0, NULL, NULL, NULL, &r, &n); /* a second pass: its usual time */
        far_file(calls, sizeof(calls), dir, "calls", names[0]);
        far_file(hang, sizeof(hang), dir, "hang", names[0]);
        touch(hang);
        snprintf(ep, sizeof(ep), "ep-%s", names[0]);
        assert_true(dhaf_probe_suspect(p, names[0], ep));
        struct recheck_seen s = {.t0 = dhaf_mono_ms(), .calls = calls, .burst = true};
        dhaf_probe_idle(p, s.t0 + 3500, NULL, on_recheck, &s);
        print_message("usually %s s: held first %s, confirmed after %lld ms\n",
                      slow ? "0.6" : "0.2", s.held ? "yes" : "no", (long long)s.confirmed_ms);
        assert_true(s.confirmed_ms > 0);
        if (slow) {
            assert_true(s.held);
            assert_true(s.confirmed_ms >= 1900); /* its burst and its re-check timed out */
        } else {
            assert_false(s.held);
            assert_true(s.confirmed_ms >= 900 && s.confirmed_ms < 1800);
        }
        assert_int_equal(s.suspects, 0); /* a burst check never flags suspect again */
        far_end(p, &cfg, dir);
    }
}

static void count_suspects(void *ud, const struct dhaf_probe_result *all, size_t n)
{
    int *flagged = ud;
    for (size_t k = 0; k < n; k++)
        *flagged += all[k].suspect;
}

/* Six entry points slow in one round (here every check after the first round sleeps 2 s more):
 * the vantage point's own load, more likely - at most PROBE_SLOW_MAX (4) are flagged, and
 * none once more than that turned slow together. */
static void test_many_slow_checks_not_suspected(void **state)
{
    (void)state;
    char dir[64], script[128], sh[256], flag[128];
    assert_int_equal(test_tmpdir(dir, sizeof(dir), "probe-slow-many"), 0);
    snprintf(script, sizeof(script), "%s/check.sh", dir);
    snprintf(flag, sizeof(flag), "%s/hang", dir);
    snprintf(sh, sizeof(sh), "#!/bin/sh\n[ -e %s ] && sleep 2\nexit 0\n", flag);
    write_program(script, sh);
    static struct yaml y;
    yaml_begin(&y);
    for (int i = 0; i < 6; i++) {
        char name[8], hc[256];
        snprintf(name, sizeof(name), "m%d", i);
        snprintf(hc, sizeof(hc), "type: exec, init: /bin/true, check: %s, timeout: 5", script);
        yaml_service(&y, name, "127.0.0.1", hc);
    }
    struct dhaf_config cfg;
    yaml_load(&y, &cfg);
    struct dhaf_probe *p = engine(&cfg, "node-1", 0);
    const struct dhaf_probe_result *r;
    size_t n;
    dhaf_probe_round(p, 0, NULL, NULL, NULL, &r, &n);
    dhaf_probe_round(p, 0, NULL, NULL, NULL, &r, &n); /* usual times known */
    assert_int_equal(n, 6);
    FILE *f = fopen(flag, "w");
    assert_non_null(f);
    fclose(f);
    int flagged = 0;
    dhaf_probe_round(p, 0, NULL, count_suspects, &flagged, &r, &n);
    print_message("%d of 6 slow checks flagged suspect\n", flagged);
    assert_int_equal(flagged, 0);
    for (size_t k = 0; k < n; k++)
        assert_true(r[k].healthy);
    far_end(p, &cfg, dir);
}

/* A plugin's check() is called from one thread at a time, even when its calls of different
 * slots would overlap (each takes 80 ms; slots are 50 ms apart). */
static void test_plugin_one_call_at_a_time(void **state)
{
    (void)state;
    struct dhaf_err err = {0};
    if (dhaf_plugins_load(PROBE_PLUGIN_DIR, &err) != 0)
        fail_msg("plugins: %s", err.msg);
    static struct yaml y;
    yaml_begin(&y);
    for (int i = 0; i < 20; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%02d", i);
        yaml_service(&y, name, "127.0.0.1", "type: probe-test, hold-ms: 80");
    }
    struct dhaf_config cfg;
    yaml_load(&y, &cfg);
    struct dhaf_probe *p = engine(&cfg, "node-1", 0);
    const struct dhaf_probe_result *r;
    size_t n;
    dhaf_probe_round(p, 200, NULL, NULL, NULL, &r, &n);
    for (size_t k = 0; k < n; k++) {
        assert_true(r[k].fresh && r[k].healthy);
        assert_string_equal(r[k].text, "calls at once: 1");
    }
    dhaf_probe_free(p);
    dhaf_config_release(&cfg);
    dhaf_plugins_unload();
}

/* Every built-in checker on the engine's threads (256 KiB stacks): TLS with libcurl, a child
 * process, a connect. Under ASan too. */
static void test_checkers_on_small_stacks(void **state)
{
    (void)state;
    char dir[64], cert[128], key[128], script[4096];
    assert_int_equal(test_tmpdir(dir, sizeof(dir), "probe-tls"), 0);
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    assert_int_equal(test_make_cert(cert, key, "s.test", "DNS:s.test"), 0);
    fake_script(script, sizeof(script), "DHAF_TEST_BACKEND", "backend.py");
    const char *const argv[] = {FAKE_PYTHON, script, "--host",        "127.0.0.56",
                                "--port",    "0",    "--watch-stdin", NULL};
    const char *const tls[] = {"--tls-cert", cert, "--tls-key", key, NULL};
    struct fake_proc backend;
    assert_int_equal(fake_proc_start(&backend, argv, tls, FAKE_START_TIMEOUT_MS), 0);
    static struct yaml y;
    yaml_begin(&y);
    char hc[256];
    snprintf(hc, sizeof(hc),
             "type: web, schema: https, port: %d, path: /ok, ignore-ssl-errors: true, timeout: 5",
             backend.port);
    yaml_service(&y, "tls", "127.0.0.56", hc);
    yaml_service(&y, "prog", "127.0.0.1", "type: exec, init: /bin/true, check: /bin/true");
    snprintf(hc, sizeof(hc), "type: tcp, port: %d", S.port[0]);
    yaml_service(&y, "conn", LISTEN_IP, hc);
    struct dhaf_config cfg;
    yaml_load(&y, &cfg);
    struct dhaf_probe *p = engine(&cfg, "node-1", 0);
    const struct dhaf_probe_result *r;
    size_t n;
    dhaf_probe_round(p, 100, NULL, NULL, NULL, &r, &n);
    for (size_t k = 0; k < n; k++) {
        print_message("%s: %s %s\n", r[k].service, r[k].reason, r[k].text);
        assert_true(r[k].fresh && r[k].healthy);
    }
    dhaf_probe_free(p);
    dhaf_config_release(&cfg);
    fake_proc_stop(&backend);
    test_rmrf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offsets_stable),
        cmocka_unit_test(test_spread_over_window),
        cmocka_unit_test(test_hung_check_delays_nothing),
        cmocka_unit_test(test_max_inflight),
        cmocka_unit_test(test_stop_mid_round),
        cmocka_unit_test(test_callback_and_smoothing),
        cmocka_unit_test(test_failure_held_until_witnessed),
        cmocka_unit_test(test_failure_rechecked_beside_witness),
        cmocka_unit_test(test_suspect_checked_at_once),
        cmocka_unit_test(test_slow_check_suspected),
        cmocka_unit_test(test_burst_witness_failure_held),
        cmocka_unit_test(test_burst_timeout_weak_when_usually_slow),
        cmocka_unit_test(test_many_slow_checks_not_suspected),
        cmocka_unit_test(test_plugin_one_call_at_a_time),
        cmocka_unit_test(test_checkers_on_small_stacks),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

#endif
