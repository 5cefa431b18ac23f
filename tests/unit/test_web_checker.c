/* SPDX-License-Identifier: MIT */
/* Web checker tests against real HTTP(S) backends (tests/fakes/backend.py) on 127.0.0.21-24
 * and ::1: codes, redirects, timeouts and retries, refused connections, TLS, body matching,
 * Host and SNI forwarding, methods, bad inputs, and 50 checks at once in one check() call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../providers/checkers/web.h"
#include "dhaf/alloc.h"
#include "dhaf/config.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"
#include "config_load.h"
#include "fake_proc.h"

extern const struct dhaf_provider dhaf_checker_web;

#define DOMAIN "svc.example.test"

/* ---- backends ------------------------------------------------------------------------------ */

struct backend {
    struct fake_proc proc;
    const char *host;
};

static struct {
    char dir[64]; /* temp dir with the certificate */
    char cert[128], key[128];
    char script[4096];
    struct backend http;  /* 127.0.0.21 */
    struct backend https; /* 127.0.0.22, self-signed for DOMAIN */
    int closed_port;      /* on 127.0.0.23: nothing listens */
    struct backend http2; /* 127.0.0.24, for the concurrency tests */
    struct backend v6;    /* ::1; pid 0 when IPv6 is not available */
} W;

/* Starts backend.py on host and waits (with a deadline) for its LISTENING line. */
static int backend_start(struct backend *b, const char *host, bool tls)
{
    const char *const argv[] = {FAKE_PYTHON, W.script, "--host",        host,
                                "--port",    "0",      "--watch-stdin", NULL};
    const char *const tls_args[] = {"--tls-cert", W.cert, "--tls-key", W.key, NULL};
    b->host = host;
    return fake_proc_start(&b->proc, argv, tls ? tls_args : NULL, FAKE_START_TIMEOUT_MS);
}

/* Plain HTTP/1.0 GET (independent of the code under test); returns the body (caller frees). */
static char *http_get(const struct backend *b, const char *target)
{
    char *body = test_http(b->host, b->proc.port, "GET", target, NULL, NULL);
    return body ? body : dhaf_xstrdup("");
}

/* The JSON the backend keeps about requests tagged tag. */
static char *seen(const struct backend *b, const char *tag)
{
    char target[128];
    snprintf(target, sizeof(target), "/seen?tag=%s", tag);
    return http_get(b, target);
}

static int seen_count(const struct backend *b, const char *tag)
{
    char *s = seen(b, tag);
    int count = -1;
    const char *p = strstr(s, "\"count\": ");
    if (p)
        count = atoi(p + 9);
    free(s);
    return count;
}

static int group_setup(void **st)
{
    (void)st;
    fake_script(W.script, sizeof(W.script), "DHAF_TEST_BACKEND", "backend.py");
    if (test_tmpdir(W.dir, sizeof(W.dir), "web-test") != 0)
        return -1;
    snprintf(W.cert, sizeof(W.cert), "%s/cert.pem", W.dir);
    snprintf(W.key, sizeof(W.key), "%s/key.pem", W.dir);
    if (test_make_cert(W.cert, W.key, DOMAIN, "DNS:" DOMAIN) != 0)
        return -1;
    if (backend_start(&W.http, "127.0.0.21", false) != 0 ||
        backend_start(&W.https, "127.0.0.22", true) != 0 ||
        backend_start(&W.http2, "127.0.0.24", false) != 0)
        return -1;
    W.closed_port = test_free_port("127.0.0.23");
    if (W.closed_port <= 0)
        return -1;
    if (backend_start(&W.v6, "::1", false) != 0)
        fprintf(stderr, "no IPv6 loopback: the IPv6 test will be skipped\n");
    return 0;
}

static int group_teardown(void **st)
{
    (void)st;
    fake_proc_stop(&W.http.proc);
    fake_proc_stop(&W.https.proc);
    fake_proc_stop(&W.http2.proc);
    fake_proc_stop(&W.v6.proc);
    test_rmrf(W.dir);
    return 0;
}

/* ---- checker runs -------------------------------------------------------------------------- */

/* Services loaded through the real config loader, with their checker instances. */
struct services {
    struct dhaf_config cfg;
    void *state[4];
};

/* Loads a config with one service per health-checker flow mapping body in hcs (NULL-ended),
 * e.g. "port: 80, path: /ok", all with domain DOMAIN and one entry point at ip. */
static void services_load(struct services *s, const char *ip, const char *const *hcs)
{
    char yaml[8192];
    size_t o = (size_t)snprintf(yaml, sizeof(yaml),
                                "dhaf: {cluster-name: c1, node-name: n1}\n"
                                "etcd: {hosts: \"127.0.0.1:2379\"}\nservices:\n");
    for (size_t i = 0; hcs[i]; i++) {
        o += (size_t)snprintf(yaml + o, sizeof(yaml) - o,
                              "- name: svc%zu\n"
                              "  domain: " DOMAIN "\n"
                              "  entry-points: [{name: ep-1, ip: \"%s\"}]\n"
                              "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
                              "  health-checker: {type: web, %s}\n",
                              i, ip, hcs[i]);
        assert_true(o < sizeof(yaml));
    }
    memset(s, 0, sizeof(*s));
    int rc = test_config_load(yaml, "web.dhaf", ".", &s->cfg);
    assert_int_equal(rc, 0);
    assert_true(s->cfg.n_services <= 4);
    for (size_t i = 0; i < s->cfg.n_services; i++) {
        const struct dhaf_service *svc = &s->cfg.services[i];
        struct dhaf_provider_ctx ctx = {
            .service = svc->name, .domain = svc->domain, .eps = svc->eps, .n_eps = svc->n_eps};
        struct dhaf_err err = {0};
        assert_int_equal(dhaf_checker_web.init(svc->checker.conf, &ctx, &s->state[i], &err), 0);
    }
}

static void services_release(struct services *s)
{
    for (size_t i = 0; i < s->cfg.n_services; i++)
        dhaf_checker_web.destroy(s->state[i]);
    dhaf_config_release(&s->cfg);
}

static void target_of(struct dhaf_check_target *t, const struct services *s, size_t svc,
                      struct dhaf_check_result *res)
{
    const struct dhaf_service *v = &s->cfg.services[svc];
    *t = (struct dhaf_check_target){
        .conf = v->checker.conf,
        .state = s->state[svc],
        .service = v->name,
        .domain = v->domain,
        .ep_name = v->eps[0].name,
        .ep_ip = v->eps[0].ip,
        .family = v->eps[0].family,
        .result = res,
    };
}

/* True when code is a row of the checker's status table. */
static bool reason_known(const char *code)
{
    for (const struct dhaf_reason *r = dhaf_checker_web.reasons; r->code; r++)
        if (code && strcmp(r->code, code) == 0)
            return true;
    return false;
}

/* One check of one entry point at ip; hc is the checker's YAML (printf format). Returns the
 * result; *elapsed_ms (may be NULL) gets the duration of check(). */
__attribute__((format(printf, 3, 4))) static struct dhaf_check_result
check1(const char *ip, uint64_t *elapsed_ms, const char *hc_fmt, ...)
{
    char hc[1024];
    va_list ap;
    va_start(ap, hc_fmt);
    vsnprintf(hc, sizeof(hc), hc_fmt, ap);
    va_end(ap);
    const char *hcs[] = {hc, NULL};
    struct services s;
    struct dhaf_check_result res;
    struct dhaf_check_target t;
    services_load(&s, ip, hcs);
    target_of(&t, &s, 0, &res);
    memset(&res, 0xa5, sizeof(res)); /* check() must fill everything */
    uint64_t t0 = test_now_ms();
    dhaf_checker_web.check(&t, 1);
    if (elapsed_ms)
        *elapsed_ms = test_now_ms() - t0;
    services_release(&s);
    assert_true(reason_known(res.reason));
    assert_non_null(memchr(res.text, '\0', sizeof(res.text)));
    assert_int_equal(res.healthy, strcmp(res.reason, "ok") == 0);
    return res;
}

#define assert_result(res, want_healthy, want_reason, want_text)                                   \
    do {                                                                                           \
        if ((res).healthy != (want_healthy) || strcmp((res).reason, (want_reason)) != 0 ||         \
            !strstr((res).text, (want_text)))                                                      \
            fail_msg("got healthy=%d reason=%s text=\"%s\"; want %d %s \"%s\"", (res).healthy,     \
                     (res).reason, (res).text, (want_healthy), (want_reason), (want_text));        \
    } while (0)

/* ---- tests --------------------------------------------------------------------------------- */

static void test_ok(void **st)
{
    (void)st;
    struct dhaf_check_result r =
        check1("127.0.0.21", NULL, "port: %d, path: /ok", W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    assert_true(r.latency_ms < 2000);
    /* a path without the leading slash is fixed up by the config */
    r = check1("127.0.0.21", NULL, "port: %d, path: ok", W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
}

static void test_http_code(void **st)
{
    (void)st;
    struct dhaf_check_result r =
        check1("127.0.0.21", NULL, "port: %d, path: /500, retries: 0", W.http.proc.port);
    assert_result(r, false, "http-code", "unexpected HTTP code 500 (expected 200)");
    r = check1("127.0.0.21", NULL, "port: %d, path: /500, expected-codes: 5XX", W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 500");
    r = check1("127.0.0.21", NULL,
               "port: %d, path: \"/status?code=503\", expected-codes: \"200,503\"",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 503");
    r = check1("127.0.0.21", NULL,
               "port: %d, path: \"/status?code=404\", expected-codes: 2XX, retries: 0",
               W.http.proc.port);
    assert_result(r, false, "http-code", "unexpected HTTP code 404 (expected 2XX)");
    r = check1("127.0.0.21", NULL,
               "port: %d, path: \"/status?code=101\", expected-codes: 1XX, timeout: 1, retries: 0",
               W.http.proc.port);
    /* HTTP has no final 1XX response: curl waits for the real one after an interim 101 */
    assert_false(r.healthy);
    assert_true(reason_known(r.reason));
}

static void test_redirects(void **st)
{
    (void)st;
    struct dhaf_check_result r =
        check1("127.0.0.21", NULL, "port: %d, path: /redirect, retries: 0", W.http.proc.port);
    assert_result(r, false, "http-code", "unexpected HTTP code 302 (expected 200)");
    r = check1("127.0.0.21", NULL, "port: %d, path: /redirect, expected-codes: 3XX",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 302");
    r = check1("127.0.0.21", NULL, "port: %d, path: /redirect, follow-redirects: true",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    /* the redirect stays on the entry point with domain forwarding (CONNECT_TO matches) */
    r = check1(
        "127.0.0.21", NULL,
        "port: %d, path: /redirect, follow-redirects: true, expected-response-body: \"all ok\"",
        W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    r = check1("127.0.0.21", NULL, "port: %d, path: /loop, follow-redirects: true, retries: 0",
               W.http.proc.port);
    assert_result(r, false, "network", "more than 5 redirects");
    /* redirects to other protocols are refused */
    r = check1("127.0.0.21", NULL,
               "port: %d, path: \"/redirect?to=ftp://127.0.0.21/x\", follow-redirects: true, "
               "retries: 0",
               W.http.proc.port);
    assert_result(r, false, "network", "redirect to a protocol other than http/https");
}

static void test_timeout(void **st)
{
    (void)st;
    uint64_t el;
    struct dhaf_check_result r = check1(
        "127.0.0.21", &el, "port: %d, path: \"/slow?ms=3000&tag=t0\", timeout: 1, retries: 0",
        W.http.proc.port);
    assert_result(r, false, "timeout", "timed out after 1 s");
    fprintf(stderr, "timeout: latency %u ms, check() %llu ms\n", r.latency_ms,
            (unsigned long long)el);
    /* Bounds only separate "gave up after 1 s" from "waited for the 3 s reply";
     * speed is measured in bench/, not here. */
    assert_in_range(r.latency_ms, 900, 2900);
    assert_in_range(el, 900, 2900);
    assert_int_equal(seen_count(&W.http, "t0"), 1);
}

static void test_retries(void **st)
{
    (void)st;
    uint64_t el;
    struct dhaf_check_result r = check1(
        "127.0.0.21", &el, "port: %d, path: \"/slow?ms=5000&tag=t2\", timeout: 1, retries: 2",
        W.http.proc.port);
    assert_result(r, false, "timeout", "(attempt 3 of 3)");
    fprintf(stderr, "retries 2: latency %u ms, check() %llu ms\n", r.latency_ms,
            (unsigned long long)el);
    assert_in_range(r.latency_ms, 900, 2500); /* the last attempt only */
    assert_in_range(el, 2800, 4900);
    assert_int_equal(seen_count(&W.http, "t2"), 3);

    /* any failure is retried at once, not only timeouts */
    r = check1("127.0.0.21", &el, "port: %d, path: \"/status?code=500&tag=r5\", retries: 2",
               W.http.proc.port);
    assert_result(r, false, "http-code",
                  "unexpected HTTP code 500 (expected 200) (attempt 3 of 3)");
    assert_true(el < 1500);
    assert_int_equal(seen_count(&W.http, "r5"), 3);

    /* a success ends the attempts */
    r = check1("127.0.0.21", NULL, "port: %d, path: \"/ok?tag=r0\", retries: 5", W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    assert_int_equal(seen_count(&W.http, "r0"), 1);
}

static void test_connect_refused(void **st)
{
    (void)st;
    uint64_t el;
    struct dhaf_check_result r =
        check1("127.0.0.23", &el, "port: %d, path: /ok, retries: 1", W.closed_port);
    assert_result(r, false, "connect", "connection refused");
    assert_true(el < 1000);
    r = check1("127.0.0.23", NULL, "port: %d, path: /ok, domain-forwarding: false, retries: 0",
               W.closed_port);
    assert_result(r, false, "connect", "connection refused");
}

static void test_tls(void **st)
{
    (void)st;
    struct dhaf_check_result r = check1(
        "127.0.0.22", NULL, "schema: https, port: %d, path: /ok, retries: 0", W.https.proc.port);
    assert_result(r, false, "tls", "TLS: ");
    fprintf(stderr, "self-signed: %s\n", r.text);
    r = check1("127.0.0.22", NULL,
               "schema: https, port: %d, path: /ok, retries: 0, domain-forwarding: false",
               W.https.proc.port);
    assert_result(r, false, "tls", "TLS: ");
    r = check1("127.0.0.22", NULL, "schema: https, port: %d, path: /ok, ignore-ssl-errors: true",
               W.https.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    /* plain HTTP to a TLS port is a protocol error, not a crash */
    r = check1("127.0.0.22", NULL, "port: %d, path: /ok, retries: 0, timeout: 2",
               W.https.proc.port);
    assert_false(r.healthy);
}

static void test_body(void **st)
{
    (void)st;
    struct dhaf_check_result r =
        check1("127.0.0.21", NULL, "port: %d, path: /body, expected-response-body: healthy",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    r = check1("127.0.0.21", NULL,
               "port: %d, path: /body, expected-response-body: \"STATUS: healthy\"",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    r = check1("127.0.0.21", NULL, "port: %d, path: /body, expected-response-body: ok, retries: 0",
               W.http.proc.port);
    assert_result(r, false, "body", "body does not contain \"ok\"");
    /* the code is judged first */
    r = check1("127.0.0.21", NULL,
               "port: %d, path: /500, expected-response-body: error, retries: 0", W.http.proc.port);
    assert_result(r, false, "http-code", "unexpected HTTP code 500");
}

static void test_body_bound(void **st)
{
    (void)st;
    uint64_t el;
    /* only the first 64 KiB are read */
    struct dhaf_check_result r = check1("127.0.0.21", NULL,
                                        "port: %d, path: \"/big?kb=100&marker=needle&at=start\", "
                                        "expected-response-body: needle",
                                        W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    r = check1("127.0.0.21", NULL,
               "port: %d, path: \"/big?kb=100&marker=needle&at=end\", "
               "expected-response-body: needle, retries: 0",
               W.http.proc.port);
    assert_result(r, false, "body", "(in its first 64 KiB)");
    r = check1(
        "127.0.0.21", NULL,
        "port: %d, path: \"/big?kb=60&marker=needle&at=end\", expected-response-body: needle",
        W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    /* a huge body without a body check: stopped at 64 KiB, judged by its code */
    r = check1("127.0.0.21", &el, "port: %d, path: \"/big?kb=50000\", timeout: 10",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    assert_true(el < 5000);
}

static void test_host_forwarding(void **st)
{
    (void)st;
    char want[128];
    /* default: Host is the service domain (with the port, as a browser sends it) */
    struct dhaf_check_result r =
        check1("127.0.0.21", NULL,
               "port: %d, path: \"/host?tag=h1\", expected-response-body: \"" DOMAIN "\"",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    char *s = seen(&W.http, "h1");
    snprintf(want, sizeof(want), "\"host\": \"" DOMAIN ":%d\"", W.http.proc.port);
    if (!strstr(s, want))
        fail_msg("seen: %s; want %s", s, want);
    free(s);

    /* a Host header in headers wins; header values never reach the log (debug level here,
     * stderr captured in a file) */
    char logf[128];
    struct test_stderr cap;
    snprintf(logf, sizeof(logf), "%s/log.txt", W.dir);
    assert_int_equal(test_stderr_begin(&cap, logf), 0);
    enum dhaf_log_level old_level = dhaf_log_threshold;
    dhaf_log_setup(DHAF_LOG_DEBUG, DHAF_LOG_TEXT);
    r = check1("127.0.0.21", NULL,
               "port: %d, path: \"/host?tag=h2\", headers: {host: other.example, X-Token: s3cret}",
               W.http.proc.port);
    struct dhaf_check_result r2 = check1(
        "127.0.0.21", NULL,
        "port: %d, path: \"/status?code=500\", retries: 1, headers: {Authorization: Bearer s3cret}",
        W.http.proc.port);
    dhaf_log_setup(old_level, DHAF_LOG_TEXT);
    char *log = test_stderr_end(&cap);
    if (!strstr(log, "event=web-check ") || !strstr(log, "event=web-check-retry") ||
        strstr(log, "s3cret"))
        fail_msg("log: %s", log);
    free(log);
    assert_result(r, true, "ok", "HTTP 200");
    assert_result(r2, false, "http-code", "unexpected HTTP code 500");
    assert_null(strstr(r.text, "s3cret"));
    s = seen(&W.http, "h2");
    if (!strstr(s, "\"host\": \"other.example\""))
        fail_msg("seen: %s", s);
    free(s);

    /* no forwarding: Host is the entry point's address */
    r = check1("127.0.0.21", NULL, "port: %d, path: \"/host?tag=h3\", domain-forwarding: false",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    s = seen(&W.http, "h3");
    snprintf(want, sizeof(want), "\"host\": \"127.0.0.21:%d\"", W.http.proc.port);
    if (!strstr(s, want))
        fail_msg("seen: %s; want %s", s, want);
    free(s);
}

static void test_sni(void **st)
{
    (void)st;
    struct dhaf_check_result r =
        check1("127.0.0.22", NULL,
               "schema: https, port: %d, path: /sni, ignore-ssl-errors: true, "
               "expected-response-body: \"" DOMAIN "\"",
               W.https.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    /* without forwarding the URL names an IP: no SNI */
    r = check1("127.0.0.22", NULL,
               "schema: https, port: %d, path: /sni, ignore-ssl-errors: true, "
               "domain-forwarding: false, expected-response-body: \"(none)\"",
               W.https.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    /* Host from headers turns forwarding off, SNI included */
    r = check1("127.0.0.22", NULL,
               "schema: https, port: %d, path: /sni, ignore-ssl-errors: true, "
               "headers: {Host: other.example}, expected-response-body: \"(none)\"",
               W.https.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
}

static void test_methods(void **st)
{
    (void)st;
    struct dhaf_check_result r = check1(
        "127.0.0.21", NULL, "port: %d, method: HEAD, path: \"/method?tag=m1\"", W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    char *s = seen(&W.http, "m1");
    if (!strstr(s, "\"method\": \"HEAD\""))
        fail_msg("seen: %s", s);
    free(s);
    r = check1("127.0.0.21", NULL,
               "port: %d, method: post, path: \"/method?tag=m2\", expected-response-body: POST",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    r = check1("127.0.0.21", NULL, "port: %d, path: /method, expected-response-body: GET",
               W.http.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    r = check1("127.0.0.21", NULL,
               "port: %d, method: HEAD, path: /ok, expected-response-body: ok, retries: 0",
               W.http.proc.port);
    assert_result(r, false, "body", "(a HEAD response has no body)");
}

static void test_ipv6(void **st)
{
    (void)st;
    if (W.v6.proc.pid <= 0)
        skip();
    struct dhaf_check_result r = check1(
        "::1", NULL, "port: %d, path: \"/host?tag=v1\", domain-forwarding: false", W.v6.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    r = check1("::1", NULL, "port: %d, path: /host, expected-response-body: \"" DOMAIN "\"",
               W.v6.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
    r = check1("::1", NULL,
               "port: %d, path: /host, domain-forwarding: false, "
               "expected-response-body: \"[::1]\"",
               W.v6.proc.port);
    assert_result(r, true, "ok", "HTTP 200");
}

/* 50 checks in one call take about one timeout, not fifty. */
static void test_concurrency(void **st)
{
    (void)st;
    enum { N = 50 };
    char hc[2][256];
    snprintf(hc[0], sizeof(hc[0]),
             "port: %d, path: \"/slow?ms=4000&tag=c0\", timeout: 1, retries: 0", W.http2.proc.port);
    snprintf(hc[1], sizeof(hc[1]), "port: %d, path: \"/slow?ms=500&tag=c1\", timeout: 5",
             W.http2.proc.port);
    const char *hcs[] = {hc[0], hc[1], NULL};
    struct services s;
    struct dhaf_check_target t[N];
    struct dhaf_check_result res[N];
    services_load(&s, "127.0.0.24", hcs);

    /* all timing out */
    for (size_t i = 0; i < N; i++)
        target_of(&t[i], &s, 0, &res[i]);
    uint64_t t0 = test_now_ms();
    dhaf_checker_web.check(t, N);
    uint64_t el = test_now_ms() - t0;
    fprintf(stderr, "50 timeouts (timeout 1 s) in %llu ms\n", (unsigned long long)el);
    for (size_t i = 0; i < N; i++)
        assert_result(res[i], false, "timeout", "timed out after 1 s");
    assert_in_range(el, 900, 10000); /* one by one would take 50 s */

    /* all healthy after 500 ms */
    for (size_t i = 0; i < N; i++)
        target_of(&t[i], &s, 1, &res[i]);
    t0 = test_now_ms();
    dhaf_checker_web.check(t, N);
    el = test_now_ms() - t0;
    fprintf(stderr, "50 healthy (500 ms each) in %llu ms\n", (unsigned long long)el);
    for (size_t i = 0; i < N; i++)
        assert_result(res[i], true, "ok", "HTTP 200");
    assert_in_range(el, 450, 10000); /* one by one would take 25 s */
    assert_int_equal(seen_count(&W.http2, "c1"), N);
    services_release(&s);
}

/* Targets of several services in one call each keep their own conf's timeout. */
static void test_per_target_conf(void **st)
{
    (void)st;
    char hc[3][256];
    snprintf(hc[0], sizeof(hc[0]), "port: %d, path: \"/slow?ms=2000\", timeout: 1, retries: 0",
             W.http2.proc.port);
    snprintf(hc[1], sizeof(hc[1]), "port: %d, path: \"/slow?ms=2000\", timeout: 4, retries: 0",
             W.http2.proc.port);
    snprintf(hc[2], sizeof(hc[2]), "port: %d, path: /ok, retries: 0", W.closed_port);
    const char *hcs[] = {hc[0], hc[1], hc[2], NULL};
    struct services s;
    struct dhaf_check_target t[3];
    struct dhaf_check_result res[3];
    services_load(&s, "127.0.0.24", hcs);
    for (size_t i = 0; i < 3; i++)
        target_of(&t[i], &s, i, &res[i]);
    t[2].ep_ip = "127.0.0.23";
    uint64_t t0 = test_now_ms();
    dhaf_checker_web.check(t, 3);
    uint64_t el = test_now_ms() - t0;
    assert_result(res[0], false, "timeout", "timed out after 1 s");
    assert_in_range(res[0].latency_ms, 900, 3900);
    assert_result(res[1], true, "ok", "HTTP 200");
    assert_in_range(res[1].latency_ms, 1900, 3999); /* its own 4 s timeout */
    assert_result(res[2], false, "connect", "connection refused");
    assert_in_range(el, 1900, 6000);
    services_release(&s);
}

static void test_bad_inputs(void **st)
{
    (void)st;
    struct web_config c = {.schema = WEB_HTTP,
                           .port = W.http.proc.port,
                           .path = "/ok",
                           .timeout = 2,
                           .retries = 0,
                           .expected_codes = "200",
                           .domain_forwarding = true};
    struct dhaf_check_result res[8];
    struct dhaf_check_target t[8];
    for (size_t i = 0; i < 8; i++)
        t[i] = (struct dhaf_check_target){.conf = &c,
                                          .ep_name = "ep",
                                          .ep_ip = "127.0.0.21",
                                          .domain = DOMAIN,
                                          .result = &res[i]};
    struct web_config bad_codes = c, bad_method = c, bad_path = c, bad_header = c;
    bad_codes.expected_codes = "2000";
    bad_method.method = 7;
    bad_path.path = "/a b";
    char *hk[] = {"X-Token"}, *hv[] = {"secret\r\nX-Evil: 1"};
    bad_header.headers = (struct dhaf_strmap){1, hk, hv};
    t[0].conf = NULL;
    t[1].ep_ip = "not-an-ip";
    t[2].conf = &bad_codes; /* no state: parsed at check time */
    t[3].conf = &bad_method;
    t[4].conf = &bad_path;
    t[5].conf = &bad_header;
    t[6].domain = "bad domain/x";
    t[7].domain = NULL; /* no domain: the IP is used; no state, codes parsed here */
    dhaf_checker_web.check(t, 8);
    for (size_t i = 0; i < 7; i++) {
        if (res[i].healthy || strcmp(res[i].reason, "internal") != 0)
            fail_msg("target %zu: %d %s %s", i, res[i].healthy, res[i].reason, res[i].text);
    }
    assert_null(strstr(res[5].text, "secret"));
    assert_result(res[7], true, "ok", "HTTP 200");

    /* targets without a result are skipped, no targets is a no-op */
    t[0].result = NULL;
    dhaf_checker_web.check(t, 1);
    dhaf_checker_web.check(NULL, 0);

    /* init refuses bad codes and missing config */
    void *state = (void *)1;
    struct dhaf_err err = {0};
    assert_int_not_equal(dhaf_checker_web.init(&bad_codes, NULL, &state, &err), 0);
    assert_null(state);
    assert_non_null(strstr(err.msg, "expected-codes"));
    assert_int_not_equal(dhaf_checker_web.init(NULL, NULL, &state, &err), 0);
    assert_int_equal(dhaf_checker_web.init(&c, NULL, &state, &err), 0);
    dhaf_checker_web.destroy(state);
    dhaf_checker_web.destroy(NULL);
}

static void test_reason_table(void **st)
{
    (void)st;
    static const char *const want[] = {"ok",        "timeout", "connect", "tls",
                                       "http-code", "body",    "network", "internal"};
    size_t n = 0;
    for (const struct dhaf_reason *r = dhaf_checker_web.reasons; r->code; r++, n++)
        assert_non_null(r->description);
    assert_int_equal(n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < n; i++)
        assert_true(reason_known(want[i]));
    assert_int_equal(dhaf_checker_web.abi_version, DHAF_PROVIDER_ABI_VERSION);
    assert_non_null(dhaf_checker_web.check);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_table),
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_http_code),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_retries),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_body_bound),
        cmocka_unit_test(test_host_forwarding),
        cmocka_unit_test(test_sni),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_per_target_conf),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
