/* SPDX-License-Identifier: MIT */
/* Cloudflare switcher tests against the local fake of the API v4 (tests/fakes/cloudflare.py),
 * one fake per test: init checks, current() with 0/1/2 records, switch_to creating, editing or
 * leaving the record, manual changes, rate limits, 5xx and transport retries, refusals, the
 * operation deadline, malformed replies, AAAA records, and the token kept out of every text. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "dhaf/alloc.h"
#include "dhaf/cancel.h"
#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "switch_call.h"
#include "dhaf/registry.h"
#include "config_load.h"
#include "fake_proc.h"

extern const struct dhaf_provider dhaf_switcher_cloudflare;

#define TOKEN  "cf-TEST-token-7f3a9c1e55d2"
#define ZONE   "foo.com"
#define DOMAIN "www.foo.com"
#define EPS4                                                                                       \
    "[{name: ep-1, ip: 192.0.2.1}, {name: ep-2, ip: 192.0.2.2}, "                                  \
    "{name: ep-3, ip: 192.0.2.3}]"

static char script[4096];
static char tmpdir[64];

/* ---- the fake ------------------------------------------------------------------------------ */

struct fake {
    struct fake_proc proc;
    char log[128];
};

/* Starts the fake with token and the NULL-terminated extra arguments; waits (with a deadline)
 * for its LISTENING line. */
static void fake_start_v(struct fake *f, const char *token, const char *const *extra)
{
    static int seq;
    snprintf(f->log, sizeof(f->log), "%s/changes-%d.jsonl", tmpdir, ++seq);
    unlink(f->log);
    const char *const argv[] = {FAKE_PYTHON, script, "--port", "0",    "--token",       token,
                                "--zone",    ZONE,   "--log",  f->log, "--watch-stdin", NULL};
    if (fake_proc_start(&f->proc, argv, extra, FAKE_START_TIMEOUT_MS) != 0)
        fail_msg("the Cloudflare fake did not start");
}

#define fake_start(f, ...)                                                                         \
    do {                                                                                           \
        const char *const fake_extra_[] = {__VA_ARGS__, NULL};                                     \
        fake_start_v((f), TOKEN, fake_extra_);                                                     \
    } while (0)

static void fake_stop(struct fake *f)
{
    if (f->proc.pid <= 0)
        return;
    fake_proc_stop(&f->proc);
    unlink(f->log);
}

/* One HTTP/1.0 request to the fake, independent of the code under test. Returns the body
 * (caller frees); *status (may be NULL) gets the HTTP status. */
static char *fake_http(const struct fake *f, const char *method, const char *path, const char *body,
                       int *status)
{
    char *out = test_http("127.0.0.1", f->proc.port, method, path, body, status);
    assert_non_null(out);
    return out;
}

/* POSTs a test control; asserts it was accepted. */
__attribute__((format(printf, 3, 4))) static void fake_ctl(const struct fake *f, const char *path,
                                                           const char *fmt, ...)
{
    char body[4096];
    int status = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    free(fake_http(f, "POST", path, body, &status));
    assert_int_equal(status, 200);
}

/* The fake's records of name and type (NULL type = any) as a JSON array (caller decrefs). */
static json_t *fake_records(const struct fake *f, const char *name, const char *type)
{
    char *text = fake_http(f, "GET", "/_fake/records", NULL, NULL);
    json_t *all = json_loads(text, 0, NULL), *out = json_array(), *r;
    size_t i;
    free(text);
    assert_non_null(all);
    json_array_foreach(json_object_get(all, "records"), i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "name")), name) == 0 &&
            (!type || strcmp(json_string_value(json_object_get(r, "type")), type) == 0))
            json_array_append(out, r);
    }
    json_decref(all);
    return out;
}

/* The change log file (--log) as a JSON array of its lines (caller decrefs). */
static json_t *fake_changes(const struct fake *f)
{
    json_t *out = json_array();
    FILE *fp = fopen(f->log, "r");
    char line[16384];
    if (!fp)
        return out; /* no change yet */
    while (fgets(line, sizeof(line), fp)) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j)
            fail_msg("bad change log line: %s (%s)", line, je.text);
        json_array_append_new(out, j);
    }
    fclose(fp);
    return out;
}

/* How many logged changes have method (NULL = any) and HTTP status (0 = any). */
static size_t count_changes(const json_t *changes, const char *method, int status)
{
    size_t n = 0, i;
    const json_t *c;
    json_array_foreach(changes, i, c)
    {
        if ((!method || strcmp(json_string_value(json_object_get(c, "method")), method) == 0) &&
            (!status || json_integer_value(json_object_get(c, "status")) == status))
            n++;
    }
    return n;
}

static const char *str_of(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

/* ---- the switcher ---------------------------------------------------------------------------- */

/* A service loaded through the real config loader, and its switcher instance. */
struct svc {
    struct dhaf_config cfg;
    struct dhaf_provider_ctx ctx;
    void *st;
    struct dhaf_err err;
    int rc; /* of init */
};

/* Loads a service with the switcher section and entry points given, then runs init. */
static void svc_open_full(struct svc *s, const struct fake *f, const char *zone, const char *domain,
                          const char *eps, const char *token)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "dhaf: {cluster-name: c1, node-name: n1}\n"
             "etcd: {hosts: \"127.0.0.1:2379\"}\n"
             "services:\n"
             "- name: web\n"
             "  domain: \"%s\"\n"
             "  entry-points: %s\n"
             "  switcher:\n"
             "    type: cloudflare\n"
             "    api-token: \"%s\"\n"
             "    zone: \"%s\"\n"
             "    api-url: \"http://127.0.0.1:%d/\"\n"
             "  health-checker: {type: tcp, port: 80}\n",
             domain, eps, token, zone, f->proc.port);
    memset(s, 0, sizeof(*s));
    int rc = test_config_load(yaml, "cf.dhaf", ".", &s->cfg);
    assert_int_equal(rc, 0);
    const struct dhaf_service *v = &s->cfg.services[0];
    s->ctx = (struct dhaf_provider_ctx){.service = v->name,
                                        .domain = v->domain,
                                        .eps = v->eps,
                                        .n_eps = v->n_eps,
                                        .node = "n1",
                                        .epoch = 42};
    s->rc = dhaf_switcher_cloudflare.init(v->switcher.conf, &s->ctx, &s->st, &s->err);
    if (s->rc == 0)
        assert_non_null(s->st);
    else
        assert_null(s->st);
    assert_null(strstr(s->err.msg, TOKEN));
}

static void svc_open(struct svc *s, const struct fake *f)
{
    svc_open_full(s, f, ZONE, DOMAIN, EPS4, TOKEN);
    if (s->rc != 0)
        fail_msg("init failed: %d %s", s->rc, s->err.msg);
}

static void svc_close(struct svc *s)
{
    if (s->st)
        dhaf_switcher_cloudflare.destroy(s->st);
    dhaf_config_release(&s->cfg);
}

/* current() that must succeed; returns the entry point index. */
static int current_ok(struct svc *s)
{
    int ep = -7;
    struct dhaf_err err = {0};
    int rc = sw_current(&dhaf_switcher_cloudflare, s->st, &ep, &err);
    if (rc != 0)
        fail_msg("current() failed: %d %s", rc, err.msg);
    return ep;
}

static void switch_ok(struct svc *s, size_t ep)
{
    struct dhaf_err err = {0};
    int rc = sw_to(&dhaf_switcher_cloudflare, s->st, ep, &err);
    if (rc != 0)
        fail_msg("switch_to(%zu) failed: %d %s", ep, rc, err.msg);
}

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        if (!strstr((hay), (needle)))                                                              \
            fail_msg("\"%s\" does not contain \"%s\"", (hay), (needle));                           \
    } while (0)

/* ---- init ---------------------------------------------------------------------------------- */

static void test_init_ok(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1");
    svc_open(&s, &f);
    svc_close(&s);

    /* A missing record is not created at init either: init never changes DNS. */
    fake_stop(&f);
    fake_start(&f, "--record", "other.foo.com:A:198.51.100.1");
    svc_open(&s, &f);
    json_t *ch = fake_changes(&f), *recs = fake_records(&f, DOMAIN, NULL);
    assert_int_equal(json_array_size(ch), 0);
    assert_int_equal(json_array_size(recs), 0);
    json_decref(ch);
    json_decref(recs);
    svc_close(&s);

    /* The zone apex, and names in another case with a trailing dot. */
    svc_open_full(&s, &f, ZONE, ZONE, EPS4, TOKEN);
    assert_int_equal(s.rc, 0);
    svc_close(&s);
    svc_open_full(&s, &f, "Foo.COM.", "WWW.foo.com.", EPS4, TOKEN);
    assert_int_equal(s.rc, 0);
    svc_close(&s);
    fake_stop(&f);
}

static void test_init_refusals(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;

    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1");
    /* A zone the token cannot see (the fake has foo.com only). */
    svc_open_full(&s, &f, "bar.com", "www.bar.com", EPS4, TOKEN);
    assert_int_equal(s.rc, DHAF_ENOTFOUND);
    assert_contains(s.err.msg, "zone \"bar.com\" not found");
    svc_close(&s);

    /* The domain outside the zone: no request is needed to refuse it. */
    svc_open_full(&s, &f, ZONE, "www.bar.com", EPS4, TOKEN);
    assert_int_equal(s.rc, DHAF_EINVAL);
    assert_contains(s.err.msg, "\"www.bar.com\" is not zone \"foo.com\"");
    svc_close(&s);
    svc_open_full(&s, &f, ZONE, "xfoo.com", EPS4, TOKEN); /* a suffix is not a subdomain */
    assert_int_equal(s.rc, DHAF_EINVAL);
    assert_contains(s.err.msg, "\"xfoo.com\" is not zone");
    svc_close(&s);

    /* Entry points of two families cannot share one record. */
    svc_open_full(&s, &f, ZONE, DOMAIN,
                  "[{name: ep-1, ip: 192.0.2.1}, {name: ep-2, ip: \"2001:db8::1\"}]", TOKEN);
    assert_int_equal(s.rc, DHAF_EINVAL);
    assert_contains(s.err.msg, "mix IPv4 and IPv6");
    svc_close(&s);

    /* A wrong token: a clear message that does not show either token. */
    svc_open_full(&s, &f, ZONE, DOMAIN, EPS4, "wrong-token-123456");
    assert_int_equal(s.rc, DHAF_EAUTH);
    assert_int_equal(s.err.status, 403);
    assert_contains(s.err.msg, "HTTP 403");
    assert_contains(s.err.msg, "10000");
    assert_contains(s.err.msg, "zone \"foo.com\"");
    assert_null(strstr(s.err.msg, "wrong-token-123456"));
    svc_close(&s);
    fake_stop(&f);

    /* A zone that is not active, then a paused one. */
    fake_start(&f, "--zone-status", "pending");
    svc_open_full(&s, &f, ZONE, DOMAIN, EPS4, TOKEN);
    assert_int_not_equal(s.rc, 0);
    assert_contains(s.err.msg, "zone \"foo.com\" is pending, not active");
    svc_close(&s);
    fake_stop(&f);
    fake_start(&f, "--zone-paused");
    svc_open_full(&s, &f, ZONE, DOMAIN, EPS4, TOKEN);
    assert_int_not_equal(s.rc, 0);
    assert_contains(s.err.msg, "zone \"foo.com\" is paused");
    svc_close(&s);
    fake_stop(&f);
}

/* ---- current() ----------------------------------------------------------------------------- */

static void test_current(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    struct dhaf_err err = {0};
    int ep = 5;

    /* 0 records: DHAF_ENOTFOUND (nothing set yet). */
    fake_start(&f, "--record", "other.foo.com:A:192.0.2.2", "--record", DOMAIN ":AAAA:::1");
    svc_open(&s, &f);
    assert_int_equal(sw_current(&dhaf_switcher_cloudflare, s.st, &ep, &err), DHAF_ENOTFOUND);
    assert_int_equal(ep, -1);
    svc_close(&s);
    fake_stop(&f);

    /* 1 record: the index of the entry point it points at. */
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.2", "--record", "other.foo.com:A:192.0.2.1");
    svc_open(&s, &f);
    assert_int_equal(current_ok(&s), 1);
    svc_close(&s);
    fake_stop(&f);

    /* 1 record at an address no entry point has: -1. */
    fake_start(&f, "--record", DOMAIN ":A:198.51.100.7");
    svc_open(&s, &f);
    assert_int_equal(current_ok(&s), -1);
    svc_close(&s);
    fake_stop(&f);

    /* 2 records, one per page (the second is only seen by following the pages): an error. */
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1", "--record", DOMAIN ":A:192.0.2.2",
               "--max-per-page", "1");
    svc_open(&s, &f);
    err = (struct dhaf_err){0};
    int rc = sw_current(&dhaf_switcher_cloudflare, s.st, &ep, &err);
    assert_int_not_equal(rc, 0);
    assert_int_not_equal(rc, DHAF_ENOTFOUND);
    assert_contains(err.msg, "2 A records named www.foo.com");
    assert_contains(err.msg, "exactly one record expected");
    /* ... and switch_to refuses to pick one. */
    rc = sw_to(&dhaf_switcher_cloudflare, s.st, 2, &err);
    assert_int_not_equal(rc, 0);
    assert_contains(err.msg, "exactly one record expected");
    json_t *ch = fake_changes(&f);
    assert_int_equal(json_array_size(ch), 0);
    json_decref(ch);
    svc_close(&s);
    fake_stop(&f);
}

/* A change made in the dashboard is what current() reports next. */
static void test_manual_change(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1");
    svc_open(&s, &f);
    assert_int_equal(current_ok(&s), 0);
    fake_ctl(&f, "/_fake/set", "{\"name\": \"%s\", \"content\": \"192.0.2.3\"}", DOMAIN);
    assert_int_equal(current_ok(&s), 2);
    fake_ctl(&f, "/_fake/set", "{\"name\": \"%s\", \"content\": \"203.0.113.5\"}", DOMAIN);
    assert_int_equal(current_ok(&s), -1);
    /* Pointing back writes once; a record deleted by hand is created again. */
    switch_ok(&s, 0);
    assert_int_equal(current_ok(&s), 0);
    fake_ctl(&f, "/_fake/set", "{\"name\": \"%s\", \"delete\": true}", DOMAIN);
    switch_ok(&s, 1);
    assert_int_equal(current_ok(&s), 1);
    json_t *ch = fake_changes(&f);
    assert_int_equal(json_array_size(ch), 2);
    assert_int_equal(count_changes(ch, "PATCH", 200), 1);
    assert_int_equal(count_changes(ch, "POST", 200), 1);
    json_decref(ch);
    svc_close(&s);
    fake_stop(&f);
}

/* ---- switch_to() --------------------------------------------------------------------------- */

static void test_switch_creates(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    fake_start(&f, "--record", "other.foo.com:A:192.0.2.1");
    svc_open(&s, &f);
    switch_ok(&s, 1);

    json_t *recs = fake_records(&f, DOMAIN, NULL), *ch = fake_changes(&f);
    assert_int_equal(json_array_size(recs), 1);
    const json_t *r = json_array_get(recs, 0);
    assert_string_equal(str_of(r, "type"), "A");
    assert_string_equal(str_of(r, "content"), "192.0.2.2");
    assert_true(json_is_true(json_object_get(r, "proxied")));
    assert_int_equal(json_integer_value(json_object_get(r, "ttl")), 1);
    assert_int_equal(json_array_size(ch), 1);
    const json_t *c = json_array_get(ch, 0);
    assert_string_equal(str_of(c, "method"), "POST");
    assert_int_equal(json_integer_value(json_object_get(c, "status")), 200);
    const json_t *body = json_object_get(c, "body");
    assert_string_equal(str_of(body, "name"), DOMAIN);
    assert_true(json_is_true(json_object_get(body, "proxied")));
    assert_int_equal(json_integer_value(json_object_get(body, "ttl")), 1);
    const json_t *h = json_object_get(c, "headers");
    assert_string_equal(str_of(h, "Content-Type"), "application/json");
    assert_string_equal(str_of(h, "Authorization"), "Bearer <redacted>");
    json_decref(recs);
    json_decref(ch);

    assert_int_equal(current_ok(&s), 1);
    svc_close(&s);
    fake_stop(&f);
}

static void test_switch_patches(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    /* A DNS-only record: proxied must stay false after the edit. */
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1:false");
    svc_open(&s, &f);
    assert_int_equal(current_ok(&s), 0);
    switch_ok(&s, 2);

    json_t *ch = fake_changes(&f), *recs = fake_records(&f, DOMAIN, NULL);
    assert_int_equal(json_array_size(ch), 1);
    assert_int_equal(count_changes(ch, "PATCH", 200), 1);
    const json_t *c = json_array_get(ch, 0);
    assert_string_equal(str_of(c, "content"), "192.0.2.3");
    assert_true(json_is_false(json_object_get(c, "proxied")));
    assert_null(json_object_get(json_object_get(c, "body"), "proxied"));
    assert_null(json_object_get(json_object_get(c, "body"), "ttl"));
    assert_string_equal(str_of(json_object_get(c, "headers"), "Content-Type"), "application/json");
    assert_int_equal(json_array_size(recs), 1);
    assert_string_equal(str_of(json_array_get(recs, 0), "content"), "192.0.2.3");
    assert_true(json_is_false(json_object_get(json_array_get(recs, 0), "proxied")));
    json_decref(ch);
    json_decref(recs);
    assert_int_equal(current_ok(&s), 2);

    /* Out of range. */
    struct dhaf_err err = {0};
    assert_int_equal(sw_to(&dhaf_switcher_cloudflare, s.st, 3, &err), DHAF_EINVAL);
    svc_close(&s);
    fake_stop(&f);
}

static void test_switch_unneeded(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    /* Already there: no write (the fake logs every write, refused ones included). */
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.2");
    svc_open(&s, &f);
    switch_ok(&s, 1);
    switch_ok(&s, 1);
    json_t *ch = fake_changes(&f);
    assert_int_equal(json_array_size(ch), 0);
    json_decref(ch);
    svc_close(&s);
    fake_stop(&f);
}

/* A record that went away between the read and the write is found again. */
static void test_switch_refind(void **state)
{
    (void)state;
    static const struct {
        int status, code;
    } cases[] = {{404, 81044}, {400, 7003}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake f;
        struct svc s;
        fake_start(&f, "--record", DOMAIN ":A:192.0.2.1");
        svc_open(&s, &f);
        fake_ctl(&f, "/_fake/fail", "{\"status\": %d, \"code\": %d, \"method\": \"PATCH\"}",
                 cases[i].status, cases[i].code);
        switch_ok(&s, 1);
        json_t *ch = fake_changes(&f);
        assert_int_equal(count_changes(ch, "PATCH", cases[i].status), 1);
        assert_int_equal(count_changes(ch, "PATCH", 200), 1);
        assert_int_equal(json_array_size(ch), 2);
        json_decref(ch);
        assert_int_equal(current_ok(&s), 1);
        svc_close(&s);
        fake_stop(&f);
    }
}

/* A create whose reply was lost (the record exists, the client saw a 500) is not repeated
 * blindly: the record is read again and found in place; one record, one create. */
static void test_create_reply_lost(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    fake_start(&f, "--record", "other.foo.com:A:192.0.2.1");
    svc_open(&s, &f);
    fake_ctl(&f, "/_fake/fail", "{\"status\": 500, \"method\": \"POST\", \"apply\": true}");
    switch_ok(&s, 0);
    json_t *recs = fake_records(&f, DOMAIN, NULL), *ch = fake_changes(&f);
    assert_int_equal(json_array_size(recs), 1);
    assert_int_equal(count_changes(ch, "POST", 0), 1);
    assert_int_equal(json_array_size(ch), 1);
    json_decref(recs);
    json_decref(ch);

    /* A create refused with a 500 (not applied) is made again after a fresh read. */
    fake_ctl(&f, "/_fake/set", "{\"name\": \"%s\", \"delete\": true}", DOMAIN);
    fake_ctl(&f, "/_fake/fail", "{\"status\": 500, \"method\": \"POST\"}");
    switch_ok(&s, 1);
    recs = fake_records(&f, DOMAIN, NULL);
    ch = fake_changes(&f);
    assert_int_equal(json_array_size(recs), 1);
    assert_string_equal(str_of(json_array_get(recs, 0), "content"), "192.0.2.2");
    assert_int_equal(count_changes(ch, "POST", 500), 1);
    assert_int_equal(count_changes(ch, "POST", 200), 2);
    json_decref(recs);
    json_decref(ch);
    svc_close(&s);
    fake_stop(&f);
}

/* ---- retries, refusals, deadlines ----------------------------------------------------------- */

static void test_rate_limited(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1");
    svc_open(&s, &f);
    fake_ctl(&f, "/_fake/fail", "{\"status\": 429, \"retry_after\": 1, \"count\": 2}");
    int64_t t0 = test_now_ms();
    switch_ok(&s, 1);
    int64_t took = test_now_ms() - t0;
    assert_true(took >= 2000);
    assert_true(took < 8000);
    assert_int_equal(current_ok(&s), 1);

    /* A Retry-After past the operation's deadline fails at once, saying why. */
    fake_ctl(&f, "/_fake/fail", "{\"status\": 429, \"retry_after\": 300}");
    struct dhaf_err err = {0};
    int ep;
    t0 = test_now_ms();
    assert_int_equal(sw_current(&dhaf_switcher_cloudflare, s.st, &ep, &err), DHAF_EUNAVAILABLE);
    assert_true(test_now_ms() - t0 < 3000);
    assert_int_equal(err.status, 429);
    assert_contains(err.msg, "HTTP 429");
    assert_contains(err.msg, "Retry-After 300 s");
    svc_close(&s);
    fake_stop(&f);
}

static void test_server_errors_retried(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1");
    svc_open(&s, &f);

    /* 500 twice, then an answer: backoff 0.5 s + 1 s. */
    fake_ctl(&f, "/_fake/fail", "{\"status\": 500, \"count\": 2}");
    int64_t t0 = test_now_ms();
    assert_int_equal(current_ok(&s), 0);
    assert_true(test_now_ms() - t0 >= 1500);

    /* A 502 with an HTML body, and connections closed without a reply. */
    fake_ctl(&f, "/_fake/fail", "{\"status\": 502, \"body\": \"<html>bad gateway</html>\"}");
    fake_ctl(&f, "/_fake/fail", "{\"drop\": true, \"count\": 2}");
    assert_int_equal(current_ok(&s), 0);

    /* A PATCH answered by a 503 is repeated (it is idempotent). */
    fake_ctl(&f, "/_fake/fail", "{\"status\": 503, \"method\": \"PATCH\"}");
    switch_ok(&s, 1);
    json_t *ch = fake_changes(&f);
    assert_int_equal(count_changes(ch, "PATCH", 503), 1);
    assert_int_equal(count_changes(ch, "PATCH", 200), 1);
    json_decref(ch);

    /* Failing every time: an error within the operation's deadline (15 s). */
    fake_ctl(&f, "/_fake/fail", "{\"status\": 500, \"count\": 1000}");
    struct dhaf_err err = {0};
    int ep;
    t0 = test_now_ms();
    assert_int_equal(sw_current(&dhaf_switcher_cloudflare, s.st, &ep, &err), DHAF_EUNAVAILABLE);
    int64_t took = test_now_ms() - t0;
    assert_true(took < 16000);
    assert_true(took >= 3500);
    assert_contains(err.msg, "HTTP 500");
    assert_contains(err.msg, "gave up after");
    svc_close(&s);
    fake_stop(&f);
}

/* A 4xx other than 429 is final: one attempt, and the text carries the code, the message, the
 * error chain and the HTTP status. */
static void test_refusals_not_retried(void **state)
{
    (void)state;
    static const struct {
        int status, code;
        const char *chain, *want1, *want2;
        int rc;
    } cases[] = {
        {400, 1004,
         "[{\"code\": 9005, \"message\": \"Content for A record must be a valid IPv4\"}]",
         "Cloudflare error 1004 \"DNS Validation Error\"",
         "error_chain: 9005 \"Content for A record must be a valid IPv4\"", DHAF_EPROTO},
        {400, 1038, "null", "Cloudflare error 1038", ".tk TLD", DHAF_EPROTO},
        {403, 10000, "null", "HTTP 403", "Cloudflare error 10000", DHAF_EAUTH},
    };
    struct fake f;
    struct svc s;
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1");
    svc_open(&s, &f);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dhaf_err err = {0};
        fake_ctl(&f, "/_fake/reset", "{}");
        fake_ctl(&f, "/_fake/fail",
                 "{\"status\": %d, \"code\": %d, \"error_chain\": %s, \"method\": \"PATCH\"}",
                 cases[i].status, cases[i].code, cases[i].chain);
        int rc = sw_to(&dhaf_switcher_cloudflare, s.st, 1, &err);
        assert_int_equal(rc, cases[i].rc);
        assert_int_equal(err.status, cases[i].status);
        char want[32];
        snprintf(want, sizeof(want), "HTTP %d", cases[i].status);
        assert_contains(err.msg, want);
        assert_contains(err.msg, cases[i].want1);
        assert_contains(err.msg, cases[i].want2);
        assert_contains(err.msg, "PATCH http://127.0.0.1:");
        /* One attempt each (the log file keeps the earlier cases' lines). */
        json_t *ch = fake_changes(&f);
        assert_int_equal(count_changes(ch, "PATCH", 0), i + 1);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(ch, i), "status")),
                         cases[i].status);
        json_decref(ch);
    }
    assert_int_equal(current_ok(&s), 0);
    svc_close(&s);
    fake_stop(&f);
}

/* How many API calls the fake has seen with method and a path containing part (NULL: any);
 * held = only those still unanswered. */
static size_t count_requests(const struct fake *f, const char *method, const char *part, bool held)
{
    char *text = fake_http(f, "GET", "/_fake/requests", NULL, NULL);
    json_t *all = json_loads(text, 0, NULL), *r;
    free(text);
    assert_non_null(all);
    size_t n = 0, i;
    json_array_foreach(all, i, r)
    {
        if ((!method || strcmp(str_of(r, "method"), method) == 0) &&
            (!part || strstr(str_of(r, "path"), part)) &&
            (!held || json_is_null(json_object_get(r, "answered"))))
            n++;
    }
    json_decref(all);
    return n;
}

struct canceller {
    const struct fake *f;
    struct dhaf_cancel *cancel;
};

/* Fires the cancel token once the fake holds a PATCH (a term closing mid-request). */
static void *cancel_when_held(void *arg)
{
    struct canceller *c = arg;
    int64_t until = test_now_ms() + 10000;
    while (test_now_ms() < until && count_requests(c->f, "PATCH", NULL, true) == 0)
        usleep(10000);
    dhaf_cancel_fire(c->cancel);
    return NULL;
}

/* Fenced writes: nothing is sent once the lease is over, a request in flight ends when the term
 * closes, and the record is changed only while it still points where the leader believes
 * (checked on the list and again by id right before the edit). */
static void test_fenced(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    struct dhaf_err err = {0};
    struct test_fence tf;
    struct dhaf_cancel cancel;
    dhaf_cancel_init(&cancel);
    const struct dhaf_fence *fence = test_fence_init(&tf, 60000, &cancel);
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1");
    svc_open(&s, &f);

    /* the leader believes ep-2, the record says ep-1: someone else moved it */
    assert_int_equal(sw_to_from(&dhaf_switcher_cloudflare, s.st, 2, 1, fence, &err),
                     DHAF_ECONFLICT);
    assert_contains(err.msg, "points at ep-1, not at ep-2 as this leader expected");
    assert_int_equal(count_requests(&f, "PATCH", NULL, false), 0);

    /* the lease is over: not one request */
    size_t before = count_requests(&f, NULL, NULL, false);
    tf.left = 0;
    assert_int_equal(sw_to_from(&dhaf_switcher_cloudflare, s.st, 2, 0, fence, &err), DHAF_EFENCED);
    assert_contains(err.msg, "leadership ended");
    assert_int_equal(count_requests(&f, NULL, NULL, false), before);
    tf.left = 60000;

    /* as expected: list, the record by id, then the edit */
    fake_ctl(&f, "/_fake/reset", "{}");
    if (sw_to_from(&dhaf_switcher_cloudflare, s.st, 1, 0, fence, &err) != 0)
        fail_msg("switch_to: %s", err.msg);
    assert_int_equal(count_requests(&f, "GET", "/dns_records/", false), 1);
    assert_int_equal(count_requests(&f, "PATCH", NULL, false), 1);
    assert_int_equal(current_ok(&s), 1);

    /* a request is cut at the end of the lease (400 ms), not at its own 10 s: the held GET is
     * given up and sent again */
    fake_ctl(&f, "/_fake/reset", "{}");
    fake_ctl(&f, "/_fake/fail", "{\"method\": \"GET\", \"delay_ms\": 3000}");
    tf.left = 400;
    int64_t t1 = test_now_ms();
    if (sw_to_from(&dhaf_switcher_cloudflare, s.st, 2, 1, fence, &err) != 0)
        fail_msg("switch_to: %s", err.msg);
    assert_true(test_now_ms() - t1 < 2500);
    assert_int_equal(count_requests(&f, "GET", "/dns_records", false), 3); /* 2 lists, by id */
    assert_int_equal(current_ok(&s), 2);
    tf.left = 60000;

    /* the term closes while the PATCH is held: the call ends at once */
    fake_ctl(&f, "/_fake/fail", "{\"method\": \"PATCH\", \"delay_ms\": 5000}");
    struct canceller c = {&f, &cancel};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_when_held, &c), 0);
    int64_t t0 = test_now_ms();
    int rc = sw_to_from(&dhaf_switcher_cloudflare, s.st, 1, 2, fence, &err);
    int64_t took = test_now_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(rc, DHAF_EFENCED);
    assert_contains(err.msg, "cut short");
    assert_true(took < 4000);
    /* and a fired token sends nothing more */
    before = count_requests(&f, NULL, NULL, false);
    assert_int_equal(sw_to_from(&dhaf_switcher_cloudflare, s.st, 2, -1, fence, &err), DHAF_EFENCED);
    assert_int_equal(count_requests(&f, NULL, NULL, false), before);

    svc_close(&s);
    fake_stop(&f);
    dhaf_cancel_destroy(&cancel);
}

/* Replies that are not what the API promises: errors, never crashes or hangs. */
static void test_malformed_replies(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "garbage{{",
        "",
        "[]",
        "{}",
        "null",
        "{\"success\": \"yes\", \"result\": []}",
        "{\"success\": true}",
        "{\"success\": true, \"result\": {}}",
        "{\"success\": true, \"result\": [1]}",
        "{\"success\": true, \"result\": [{\"id\": 5}]}",
        "{\"success\": true, \"result\": [{\"id\": \"../x\", \"type\": \"A\", \"name\": "
        "\"www.foo.com\", \"content\": \"192.0.2.1\"}]}",
        "{\"success\": true, \"result\": [], \"result_info\": \"page 1\"}",
        "{\"success\": true, \"result\": [], \"result_info\": {\"total_pages\": \"2\"}}",
        "{\"success\": false}",
        "{\"success\": false, \"errors\": \"boom\"}",
        "{\"success\": false, \"errors\": [7, {\"code\": \"x\"}]}",
        "{\"success\": false, \"errors\": [{\"code\": 1, \"message\": 2, \"error_chain\": "
        "[3, {\"code\": {}}]}]}",
        "{\"success\": true, \"success\": true, \"result\": []}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    };
    struct fake f;
    struct svc s;
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1");
    svc_open(&s, &f);
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct dhaf_err err = {0};
        int ep = 9;
        json_t *b = json_string(bodies[i]);
        char *bj = json_dumps(b, JSON_ENCODE_ANY);
        fake_ctl(&f, "/_fake/reset", "{}");
        fake_ctl(&f, "/_fake/fail", "{\"body\": %s, \"count\": 1000}", bj);
        int rc = sw_current(&dhaf_switcher_cloudflare, s.st, &ep, &err);
        if (rc == 0 || rc == DHAF_ENOTFOUND)
            fail_msg("body %zu (%s): current() returned %d", i, bodies[i], rc);
        assert_int_equal(ep, -1);
        assert_true(err.msg[0] != '\0');
        rc = sw_to(&dhaf_switcher_cloudflare, s.st, 1, &err);
        assert_int_not_equal(rc, 0);
        free(bj);
        json_decref(b);
    }

    /* An oversized reply is refused by the size cap. */
    struct dhaf_err err = {0};
    int ep;
    fake_ctl(&f, "/_fake/reset", "{}");
    fake_ctl(&f, "/_fake/fail", "{\"body\": \"xxxxxxxxxxxxxxxx\", \"repeat\": 131072}");
    assert_int_equal(sw_current(&dhaf_switcher_cloudflare, s.st, &ep, &err), DHAF_ETOOBIG);

    /* A garbage reply to the write itself. */
    fake_ctl(&f, "/_fake/reset", "{}");
    fake_ctl(&f, "/_fake/fail", "{\"body\": \"<html>\", \"method\": \"PATCH\"}");
    assert_int_equal(sw_to(&dhaf_switcher_cloudflare, s.st, 1, &err), DHAF_EPROTO);
    assert_contains(err.msg, "not a Cloudflare API reply");

    /* Back to normal. */
    fake_ctl(&f, "/_fake/reset", "{}");
    switch_ok(&s, 1);
    assert_int_equal(current_ok(&s), 1);
    svc_close(&s);
    fake_stop(&f);
}

/* ---- IPv6 ---------------------------------------------------------------------------------- */

static void test_aaaa(void **state)
{
    (void)state;
    struct fake f;
    struct svc s;
    /* The AAAA record in a long spelling; an A record of the same name is not ours. */
    fake_start(&f, "--record", DOMAIN ":AAAA:0:0:0:0:0:0:0:1", "--record", DOMAIN ":A:192.0.2.9");
    svc_open_full(&s, &f, ZONE, DOMAIN, "[{name: ep-1, ip: \"::1\"}, {name: ep-2, ip: \"::2\"}]",
                  TOKEN);
    assert_int_equal(s.rc, 0);
    assert_int_equal(current_ok(&s), 0);
    switch_ok(&s, 1);
    json_t *aaaa = fake_records(&f, DOMAIN, "AAAA"), *a = fake_records(&f, DOMAIN, "A");
    assert_int_equal(json_array_size(aaaa), 1);
    assert_string_equal(str_of(json_array_get(aaaa, 0), "content"), "::2");
    assert_string_equal(str_of(json_array_get(a, 0), "content"), "192.0.2.9");
    json_decref(aaaa);
    json_decref(a);
    assert_int_equal(current_ok(&s), 1);

    /* Created as AAAA when missing. */
    fake_ctl(&f, "/_fake/set", "{\"name\": \"%s\", \"type\": \"AAAA\", \"delete\": true}", DOMAIN);
    switch_ok(&s, 0);
    aaaa = fake_records(&f, DOMAIN, "AAAA");
    assert_int_equal(json_array_size(aaaa), 1);
    assert_string_equal(str_of(json_array_get(aaaa, 0), "content"), "::1");
    assert_true(json_is_true(json_object_get(json_array_get(aaaa, 0), "proxied")));
    json_decref(aaaa);
    assert_int_equal(current_ok(&s), 0);
    svc_close(&s);
    fake_stop(&f);
}

/* ---- secrets ------------------------------------------------------------------------------- */

/* The token appears in no error and no log line (debug level included). */
static void test_token_never_shown(void **state)
{
    (void)state;
    char path[128];
    struct test_stderr cap;
    snprintf(path, sizeof(path), "%s/stderr.txt", tmpdir);
    assert_int_equal(test_stderr_begin(&cap, path), 0);
    dhaf_log_setup(DHAF_LOG_DEBUG, DHAF_LOG_TEXT);

    struct fake f;
    struct svc s;
    struct dhaf_err err = {0};
    int ep;
    fake_start(&f, "--record", DOMAIN ":A:192.0.2.1:false");
    svc_open(&s, &f);
    current_ok(&s);
    switch_ok(&s, 1);
    fake_ctl(&f, "/_fake/fail", "{\"status\": 500, \"count\": 1}");
    current_ok(&s);
    fake_ctl(&f, "/_fake/fail", "{\"status\": 403, \"code\": 10000, \"count\": 1}");
    assert_int_equal(sw_current(&dhaf_switcher_cloudflare, s.st, &ep, &err), DHAF_EAUTH);
    assert_null(strstr(err.msg, TOKEN));
    svc_close(&s);
    svc_open_full(&s, &f, ZONE, DOMAIN, EPS4, TOKEN "x");
    assert_int_equal(s.rc, DHAF_EAUTH);
    svc_close(&s);
    fake_stop(&f);

    dhaf_log_setup(DHAF_LOG_WARN, DHAF_LOG_TEXT);
    char *text = test_stderr_end(&cap);
    assert_contains(text, "event=cf-init");
    assert_contains(text, "event=cf-switch service=web domain=www.foo.com type=A from=ep-1");
    assert_contains(text, "to=ep-2 to_ip=192.0.2.2 action=update");
    assert_contains(text, "node=n1 epoch=42");
    assert_contains(text, "event=cf-retry");
    assert_contains(text, "event=cf-record-not-proxied");
    if (strstr(text, TOKEN))
        fail_msg("the token is in the log:\n%s", text);
    free(text);
}

static int group_setup(void **st)
{
    (void)st;
    fake_script(script, sizeof(script), "DHAF_TEST_CF_FAKE", "cloudflare.py");
    if (test_tmpdir(tmpdir, sizeof(tmpdir), "cf-test") != 0)
        return -1;
    dhaf_log_setup(DHAF_LOG_WARN, DHAF_LOG_TEXT);
    return 0;
}

static int group_teardown(void **st)
{
    (void)st;
    test_rmrf(tmpdir);
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_ok),
        cmocka_unit_test(test_init_refusals),
        cmocka_unit_test(test_current),
        cmocka_unit_test(test_manual_change),
        cmocka_unit_test(test_switch_creates),
        cmocka_unit_test(test_switch_patches),
        cmocka_unit_test(test_switch_unneeded),
        cmocka_unit_test(test_switch_refind),
        cmocka_unit_test(test_create_reply_lost),
        cmocka_unit_test(test_rate_limited),
        cmocka_unit_test(test_server_errors_retried),
        cmocka_unit_test(test_refusals_not_retried),
        cmocka_unit_test(test_fenced),
        cmocka_unit_test(test_malformed_replies),
        cmocka_unit_test(test_aaaa),
        cmocka_unit_test(test_token_never_shown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
