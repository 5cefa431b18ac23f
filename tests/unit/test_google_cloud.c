/* SPDX-License-Identifier: MIT */
/* google-cloud switcher tests against tests/fakes/google.py (OAuth2 token endpoint that checks
 * the RS256 JWT with the key's public half, Compute project metadata with enforced
 * fingerprints, operations): key files, current(), switch_to() with its operation wait,
 * fingerprint races, token caching and refresh, retries, failed operations, bad replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "dhaf/alloc.h"
#include "dhaf/config.h"
#include "dhaf/http.h"
#include "dhaf/provider.h"
#include "switch_call.h"
#include "dhaf/registry.h"
#include "config_load.h"
#include "fake_proc.h"

extern const struct dhaf_provider dhaf_switcher_google_cloud;

#define PROJECT "proj-1"
#define EMAIL   "dhaf-switcher@proj-1.iam.gserviceaccount.com"
#define KEY_ID  "0123456789abcdef0123456789abcdef01234567"
#define MKEY    "dhaf-web"

static const struct dhaf_provider *const P = &dhaf_switcher_google_cloud;

/* ---- the fake ------------------------------------------------------------------------------ */

static struct {
    char dir[64];
    char script[4096];
    char pem[128], pub[128], other_pem[128], log[128];
    /* service-account key files */
    char good[128], unknown[128], notjson[128], nopk[128], wrongtype[128], badpem[128], closed[128];
    struct fake_proc fake;
} G;

/* Starts google.py and waits (with a deadline) for its LISTENING line. */
static int fake_start(void)
{
    const char *const argv[] = {FAKE_PYTHON,      G.script,
                                "--port",         "0",
                                "--project",      PROJECT,
                                "--pubkey",       G.pub,
                                "--client-email", EMAIL,
                                "--metadata",     "startup-script=#!/bin/sh\necho hi",
                                "--metadata",     MKEY "=10.0.0.1",
                                "--metadata",     "zz-last=keep me",
                                "--log",          G.log,
                                "--watch-stdin",  NULL};
    return fake_proc_start(&G.fake, argv, NULL, FAKE_START_TIMEOUT_MS);
}

/* One request to the fake's test controls (not the code under test's path). Returns the
 * reply body (caller frees). */
static char *fake_call(const char *method, const char *what, const char *body)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_fake/%s", G.fake.port, what);
    const char *hdrs[] = {"Content-Type: application/json", NULL};
    struct dhaf_http_req req = {.method = method,
                                .url = url,
                                .headers = hdrs,
                                .body = body,
                                .body_len = body ? strlen(body) : 0,
                                .timeout_ms = 10000};
    struct dhaf_http_resp resp;
    struct dhaf_err err = {0};
    int rc = dhaf_http_do(&req, &resp, &err);
    if (rc != 0)
        fail_msg("fake control %s: %s", what, err.msg);
    if (resp.status != 200)
        fail_msg("fake control %s: HTTP %ld %s", what, resp.status, resp.body);
    return resp.body; /* taken from resp */
}

static void fake_post(const char *what, const char *body)
{
    free(fake_call("POST", what, body ? body : "{}"));
}

/* The fake's state (caller decrefs). */
static json_t *fake_state(void)
{
    char *text = fake_call("GET", "state", NULL);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(j);
    return j;
}

static long long counter(const char *name)
{
    json_t *s = fake_state();
    json_t *v = json_object_get(json_object_get(s, "counters"), name);
    assert_true(json_is_integer(v));
    long long n = (long long)json_integer_value(v);
    json_decref(s);
    return n;
}

/* The fake's current value of metadata key (caller frees); NULL when absent. */
static char *fake_value(const char *key)
{
    json_t *s = fake_state();
    char *out = NULL;
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(s, "items"), i, it)
    {
        if (strcmp(json_string_value(json_object_get(it, "key")), key) == 0)
            out = dhaf_xstrdup(json_string_value(json_object_get(it, "value")));
    }
    json_decref(s);
    return out;
}

/* ---- key files ----------------------------------------------------------------------------- */

/* A service-account key file: type, with the PEM of pem_path (or pem_text), token_uri. */
static int write_key(const char *path, const char *type, const char *pem_path, const char *pem_text,
                     const char *token_uri)
{
    char *pem = pem_path ? test_read_file(pem_path) : NULL;
    if (pem_path && !pem)
        return -1;
    json_t *k = json_object();
    json_object_set_new(k, "type", json_string(type));
    json_object_set_new(k, "project_id", json_string(PROJECT));
    json_object_set_new(k, "private_key_id", json_string(KEY_ID));
    if (pem || pem_text)
        json_object_set_new(k, "private_key", json_string(pem ? pem : pem_text));
    json_object_set_new(k, "client_email", json_string(EMAIL));
    json_object_set_new(k, "client_id", json_string("104242424242424242424"));
    json_object_set_new(k, "auth_uri", json_string("https://accounts.google.com/o/oauth2/auth"));
    json_object_set_new(k, "token_uri", json_string(token_uri));
    json_object_set_new(k, "universe_domain", json_string("googleapis.com"));
    int rc = json_dump_file(k, path, JSON_INDENT(2));
    json_decref(k);
    free(pem);
    return rc;
}

static int genkey(const char *out)
{
    const char *const argv[] = {"openssl", "genpkey",  "-algorithm",
                                "RSA",     "-pkeyopt", "rsa_keygen_bits:2048",
                                "-out",    out,        NULL};
    return test_run(argv, NULL, 0);
}

static int group_setup(void **st)
{
    (void)st;
    fake_script(G.script, sizeof(G.script), "DHAF_TEST_GOOGLE", "google.py");
    if (test_tmpdir(G.dir, sizeof(G.dir), "gcp-test") != 0)
        return -1;
#define PATHOF(field, name) snprintf(G.field, sizeof(G.field), "%s/" name, G.dir)
    PATHOF(pem, "sa.pem");
    PATHOF(pub, "sa.pub.pem");
    PATHOF(other_pem, "other.pem");
    PATHOF(log, "fake.log");
    PATHOF(good, "good.json");
    PATHOF(unknown, "unknown.json");
    PATHOF(notjson, "notjson.json");
    PATHOF(nopk, "nopk.json");
    PATHOF(wrongtype, "wrongtype.json");
    PATHOF(badpem, "badpem.json");
    PATHOF(closed, "closed.json");
#undef PATHOF
    const char *const pubout[] = {"openssl", "pkey", "-in", G.pem, "-pubout", "-out", G.pub, NULL};
    if (genkey(G.pem) != 0 || genkey(G.other_pem) != 0 || test_run(pubout, NULL, 0) != 0) {
        fprintf(stderr, "openssl could not make the RSA keys\n");
        return -1;
    }
    if (fake_start() != 0)
        return -1;

    char token_uri[128];
    snprintf(token_uri, sizeof(token_uri), "http://127.0.0.1:%d/token", G.fake.port);
    /* a port where nothing listens: the fake's, once the test is done with it, is not
     * usable; port 1 on loopback is refused */
    if (write_key(G.good, "service_account", G.pem, NULL, token_uri) != 0 ||
        write_key(G.unknown, "service_account", G.other_pem, NULL, token_uri) != 0 ||
        write_key(G.nopk, "service_account", NULL, NULL, token_uri) != 0 ||
        write_key(G.wrongtype, "authorized_user", G.pem, NULL, token_uri) != 0 ||
        write_key(G.badpem, "service_account", NULL,
                  "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
                  token_uri) != 0 ||
        write_key(G.closed, "service_account", G.pem, NULL, "http://127.0.0.1:1/token") != 0)
        return -1;
    FILE *f = fopen(G.notjson, "w");
    if (!f)
        return -1;
    fputs("type = service_account\n", f);
    fclose(f);
    return 0;
}

static int group_teardown(void **st)
{
    (void)st;
    fake_proc_stop(&G.fake);
    test_rmrf(G.dir);
    return 0;
}

/* Every test starts from the fake's initial metadata without controls armed. */
static int test_setup(void **st)
{
    (void)st;
    fake_post("reset", NULL);
    return 0;
}

/* ---- switcher instances -------------------------------------------------------------------- */

struct inst {
    struct dhaf_config cfg;
    void *state;
};

/* Loads a one-service config whose switcher uses key_path and project, then init().
 * Returns init's code (the config itself must load). */
static int inst_init(struct inst *in, const char *key_path, const char *project,
                     struct dhaf_err *err)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "dhaf: {cluster-name: c1, node-name: n1}\n"
             "etcd: {hosts: \"127.0.0.1:2379\"}\n"
             "services:\n"
             "- name: web\n"
             "  domain: web.example.test\n"
             "  entry-points:\n"
             "  - {name: ep-1, ip: 10.0.0.1}\n"
             "  - {name: ep-2, ip: 10.0.0.2}\n"
             "  - {name: ep-3, ip: \"2001:db8::3\"}\n"
             "  switcher:\n"
             "    type: google-cloud\n"
             "    project: %s\n"
             "    metadata-key: " MKEY "\n"
             "    credentials-path: %s\n"
             "    api-url: http://127.0.0.1:%d/\n"
             "  health-checker: {type: tcp, port: 80}\n",
             project, key_path, G.fake.port);
    memset(in, 0, sizeof(*in));
    int rc = test_config_load(yaml, "gcp.dhaf", G.dir, &in->cfg);
    assert_int_equal(rc, 0);
    const struct dhaf_service *svc = &in->cfg.services[0];
    struct dhaf_provider_ctx ctx = {
        .service = svc->name, .domain = svc->domain, .eps = svc->eps, .n_eps = svc->n_eps};
    memset(err, 0, sizeof(*err));
    rc = P->init(svc->switcher.conf, &ctx, &in->state, err);
    if (rc != 0)
        assert_null(in->state);
    return rc;
}

static void inst_release(struct inst *in)
{
    if (in->state)
        P->destroy(in->state);
    dhaf_config_release(&in->cfg);
}

/* An instance with the good key; init must succeed. */
static void inst_good(struct inst *in)
{
    struct dhaf_err err;
    int rc = inst_init(in, G.good, PROJECT, &err);
    if (rc != 0)
        fail_msg("init: %s", err.msg);
}

#define assert_msg_has(err, text)                                                                  \
    do {                                                                                           \
        if (!strstr((err).msg, (text)))                                                            \
            fail_msg("error \"%s\" does not mention \"%s\"", (err).msg, (text));                   \
    } while (0)

/* ---- key files ------------------------------------------------------------------------------ */

static void test_key_files(void **st)
{
    (void)st;
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/no-such-key.json", G.dir);
    const struct {
        const char *path;
        const char *want;
    } cases[] = {
        {missing, "cannot open"},
        {G.notjson, "not JSON"},
        {G.nopk, "no \"private_key\""},
        {G.wrongtype, "\"authorized_user\" key"},
        {G.badpem, "not a usable PEM private key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct inst in;
        struct dhaf_err err;
        int rc = inst_init(&in, cases[i].path, PROJECT, &err);
        assert_int_equal(rc, DHAF_ECONFIG);
        assert_int_equal(err.code, DHAF_ECONFIG);
        assert_msg_has(err, cases[i].path);
        assert_msg_has(err, cases[i].want);
        assert_null(strstr(err.msg, "BEGIN PRIVATE KEY"));
        inst_release(&in);
    }
    /* none of them reached the network */
    assert_int_equal(counter("token_requests"), 0);
}

/* A key Google does not know: init fails fast with the token endpoint's own reason. */
static void test_key_unknown(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err;
    assert_int_equal(inst_init(&in, G.unknown, PROJECT, &err), DHAF_EAUTH);
    assert_msg_has(err, G.unknown);
    assert_msg_has(err, EMAIL);
    assert_msg_has(err, "invalid_grant");
    assert_msg_has(err, "Invalid JWT Signature.");
    assert_int_equal(err.status, 400);
    inst_release(&in);
    assert_int_equal(counter("tokens_refused"), 1);
    assert_int_equal(counter("api_requests"), 0);
}

/* The token endpoint unreachable at init: init succeeds (no remote change either way), the
 * first call reports it. */
static void test_token_endpoint_down(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err;
    assert_int_equal(inst_init(&in, G.closed, PROJECT, &err), 0);
    int ep = 7;
    int rc = sw_current(P, in.state, &ep, &err);
    assert_int_equal(rc, DHAF_EUNAVAILABLE);
    assert_int_equal(ep, -1);
    assert_msg_has(err, "127.0.0.1:1/token");
    inst_release(&in);
}

/* init fetches one token with the right JWT and changes nothing remotely. */
static void test_init_jwt(void **st)
{
    (void)st;
    struct inst in;
    inst_good(&in);
    json_t *s = fake_state();
    json_t *c = json_object_get(s, "counters");
    assert_int_equal(json_integer_value(json_object_get(c, "tokens_issued")), 1);
    assert_int_equal(json_integer_value(json_object_get(c, "api_requests")), 0);
    assert_int_equal(json_integer_value(json_object_get(c, "set_requests")), 0);
    json_t *jwt = json_object_get(s, "last_jwt");
    json_t *h = json_object_get(jwt, "header"), *cl = json_object_get(jwt, "claims");
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "RS256");
    assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
    assert_string_equal(json_string_value(json_object_get(h, "kid")), KEY_ID);
    assert_string_equal(json_string_value(json_object_get(cl, "iss")), EMAIL);
    assert_string_equal(json_string_value(json_object_get(cl, "scope")),
                        "https://www.googleapis.com/auth/compute");
    char aud[128];
    snprintf(aud, sizeof(aud), "http://127.0.0.1:%d/token", G.fake.port);
    assert_string_equal(json_string_value(json_object_get(cl, "aud")), aud);
    json_int_t iat = json_integer_value(json_object_get(cl, "iat"));
    assert_int_equal(json_integer_value(json_object_get(cl, "exp")) - iat, 3600);
    assert_true(llabs((long long)(iat - time(NULL))) < 60);
    assert_null(json_object_get(cl, "sub"));
    json_decref(s);
    inst_release(&in);
}

/* ---- current() ------------------------------------------------------------------------------ */

static void test_current(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err = {0};
    int ep = -5;
    inst_good(&in);
    assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(ep, 0);

    fake_post("set", "{\"key\":\"" MKEY "\",\"value\":\"10.0.0.2\"}");
    assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(ep, 1);

    /* another spelling of ep-3's IPv6 address */
    fake_post("set", "{\"key\":\"" MKEY "\",\"value\":\"2001:0db8:0:0::3\"}");
    assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(ep, 2);

    fake_post("set", "{\"key\":\"" MKEY "\",\"value\":\"192.0.2.99\"}");
    assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(ep, -1);

    fake_post("set", "{\"key\":\"" MKEY "\",\"value\":\"not an address\"}");
    assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(ep, -1);

    fake_post("set", "{\"key\":\"" MKEY "\",\"value\":null}");
    ep = 3;
    assert_int_equal(sw_current(P, in.state, &ep, &err), DHAF_ENOTFOUND);
    assert_int_equal(ep, -1);
    assert_msg_has(err, MKEY);
    inst_release(&in);
}

/* A project that does not exist: Google's 404 with its code, status and message. */
static void test_project_not_found(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err;
    int ep;
    assert_int_equal(inst_init(&in, G.good, "no-such-project", &err), 0);
    int rc = sw_current(P, in.state, &ep, &err);
    assert_int_equal(rc, DHAF_ECONFIG);
    assert_int_equal(err.status, 404);
    assert_msg_has(err, "/projects/no-such-project");
    assert_msg_has(err, "HTTP 404");
    assert_msg_has(err, "NOT_FOUND");
    assert_msg_has(err, "reason notFound");
    assert_msg_has(err, "was not found");
    rc = sw_to(P, in.state, 1, &err);
    assert_int_equal(rc, DHAF_ECONFIG);
    inst_release(&in);
}

/* ---- switch_to() ---------------------------------------------------------------------------- */

/* The value changes, every other item stays as it was (order included), and switch_to
 * returns only once it has seen the operation DONE. */
static void test_switch(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err = {0};
    inst_good(&in);
    json_t *before = fake_state();
    /* the next operation stays RUNNING for 3 polls and has no time-based end */
    fake_post("op", "{\"running_polls\":3}");
    uint64_t t0 = test_now_ms();
    int rc = sw_to(P, in.state, 1, &err);
    uint64_t took = test_now_ms() - t0;
    if (rc != 0)
        fail_msg("switch_to: %s", err.msg);
    json_t *after = fake_state();

    const char *op = json_string_value(json_object_get(after, "last_op"));
    assert_non_null(op);
    json_t *o = json_object_get(json_object_get(after, "ops"), op);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "DONE");
    assert_true(json_is_true(json_object_get(o, "done_served")));
    assert_int_equal(json_integer_value(json_object_get(o, "polls")), 4);
    assert_true(took >= 3 * 400);

    json_t *ib = json_object_get(before, "items"), *ia = json_object_get(after, "items");
    assert_int_equal(json_array_size(ia), json_array_size(ib));
    for (size_t i = 0; i < json_array_size(ib); i++) {
        json_t *b = json_array_get(ib, i), *a = json_array_get(ia, i);
        const char *key = json_string_value(json_object_get(b, "key"));
        assert_string_equal(json_string_value(json_object_get(a, "key")), key);
        if (strcmp(key, MKEY) == 0)
            assert_string_equal(json_string_value(json_object_get(a, "value")), "10.0.0.2");
        else
            assert_true(json_equal(a, b));
    }
    assert_string_not_equal(json_string_value(json_object_get(before, "fingerprint")),
                            json_string_value(json_object_get(after, "fingerprint")));
    json_decref(before);
    json_decref(after);

    int ep = -1;
    assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(ep, 1);

    /* idempotent: already there, nothing written */
    long long sets = counter("set_requests");
    assert_int_equal(sw_to(P, in.state, 1, &err), 0);
    assert_int_equal(counter("set_requests"), sets);

    /* IPv6, with the default operation (RUNNING at the first poll, DONE at the second) */
    assert_int_equal(sw_to(P, in.state, 2, &err), 0);
    char *v = fake_value(MKEY);
    assert_string_equal(v, "2001:db8::3");
    free(v);

    /* the fake logged the changes */
    char *log = test_read_file(G.log);
    assert_non_null(log);
    assert_non_null(strstr(log, "\"event\": \"metadata-set\""));
    assert_non_null(strstr(log, "\"event\": \"op-done\""));
    free(log);

    assert_int_equal(sw_to(P, in.state, 3, &err), DHAF_EINVAL);
    inst_release(&in);
}

/* The key absent: it is added after the other items. */
static void test_switch_adds_key(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err = {0};
    inst_good(&in);
    fake_post("set", "{\"key\":\"" MKEY "\",\"value\":null}");
    if (sw_to(P, in.state, 0, &err) != 0)
        fail_msg("switch_to: %s", err.msg);
    json_t *s = fake_state();
    json_t *items = json_object_get(s, "items");
    assert_int_equal(json_array_size(items), 3);
    json_t *last = json_array_get(items, 2);
    assert_string_equal(json_string_value(json_object_get(last, "key")), MKEY);
    assert_string_equal(json_string_value(json_object_get(last, "value")), "10.0.0.1");
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "value")),
                        "#!/bin/sh\necho hi");
    json_decref(s);
    inst_release(&in);
}

/* Someone changes the metadata between our read and our write: read again, write again. */
static void test_fingerprint_race(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err = {0};
    inst_good(&in);
    fake_post("race", "{\"count\":1}");
    if (sw_to(P, in.state, 1, &err) != 0)
        fail_msg("switch_to: %s", err.msg);
    assert_int_equal(counter("conflicts"), 1);
    assert_int_equal(counter("set_requests"), 2);
    assert_int_equal(counter("get_requests"), 2);
    char *v = fake_value(MKEY);
    assert_string_equal(v, "10.0.0.2");
    free(v);

    /* a change behind our back right before the switch is kept */
    fake_post("set", "{\"key\":\"zz-last\",\"value\":\"changed by an operator\"}");
    assert_int_equal(sw_to(P, in.state, 0, &err), 0);
    v = fake_value("zz-last");
    assert_string_equal(v, "changed by an operator");
    free(v);

    /* a conflict that never ends: bounded, with Google's reason */
    fake_post("race", "{\"count\":100}");
    int rc = sw_to(P, in.state, 1, &err);
    assert_int_equal(rc, DHAF_ECONFLICT);
    assert_int_equal(err.status, 412);
    assert_msg_has(err, "conditionNotMet");
    assert_msg_has(err, "Supplied fingerprint does not match");
    assert_msg_has(err, "rounds");
    inst_release(&in);
}

/* Conditional writes: only while our key still holds the expected `from` (under the
 * fingerprint of that read), never after the fence closed; a conflict on our key aborts. */
static void test_conditional_write(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err = {0};
    struct test_fence f;
    const struct dhaf_fence *open = test_fence_init(&f, 60000, NULL);
    inst_good(&in);
    char *v = fake_value(MKEY);
    assert_string_equal(v, "10.0.0.1"); /* ep 0 */
    free(v);

    /* the leader believes traffic is on ep 1: someone else moved it; nothing is written */
    long long sets = counter("set_requests");
    assert_int_equal(sw_to_from(P, in.state, 2, 1, open, &err), DHAF_ECONFLICT);
    assert_msg_has(err, "not 10.0.0.2 as this leader expected");
    assert_int_equal(counter("set_requests"), sets);
    v = fake_value(MKEY);
    assert_string_equal(v, "10.0.0.1");
    free(v);

    /* our key changes between our read and our write: the 412 is read again and aborts */
    fake_post("race", "{\"count\":1,\"key\":\"" MKEY "\",\"value\":\"192.0.2.99\"}");
    assert_int_equal(sw_to_from(P, in.state, 1, 0, open, &err), DHAF_ECONFLICT);
    assert_msg_has(err, "holds \"192.0.2.99\"");
    assert_int_equal(counter("set_requests"), sets + 1);
    v = fake_value(MKEY);
    assert_string_equal(v, "192.0.2.99");
    free(v);

    /* the leadership ended: no request at all */
    long long gets = counter("get_requests");
    f.left = 0;
    assert_int_equal(sw_to_from(P, in.state, 1, -1, open, &err), DHAF_EFENCED);
    assert_msg_has(err, "leadership ended");
    assert_int_equal(counter("get_requests"), gets);
    assert_int_equal(counter("set_requests"), sets + 1);

    /* as expected: written */
    f.left = 60000;
    fake_post("set", "{\"key\":\"" MKEY "\",\"value\":\"10.0.0.1\"}");
    if (sw_to_from(P, in.state, 1, 0, open, &err) != 0)
        fail_msg("switch_to: %s", err.msg);
    v = fake_value(MKEY);
    assert_string_equal(v, "10.0.0.2");
    free(v);
    inst_release(&in);
}

/* One token for many calls; a 401 drops it, and one new token fixes the call. */
static void test_token_cache(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err = {0};
    int ep;
    inst_good(&in);
    assert_int_equal(counter("token_requests"), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(sw_to(P, in.state, 1, &err), 0);
    assert_int_equal(counter("token_requests"), 1);

    fake_post("revoke", NULL);
    assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(ep, 1);
    assert_int_equal(counter("token_requests"), 2);
    assert_int_equal(counter("unauthorized"), 1);
    assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(counter("token_requests"), 2);

    /* a 401 that a new token does not cure: one refresh only, then Google's error */
    fake_post("fail", "{\"status\":401,\"count\":10,\"body\":"
                      "\"{\\\"error\\\":{\\\"code\\\":401,\\\"message\\\":\\\"Invalid "
                      "Credentials\\\",\\\"status\\\":\\\"UNAUTHENTICATED\\\"}}\"}");
    int rc = sw_current(P, in.state, &ep, &err);
    assert_int_equal(rc, DHAF_EAUTH);
    assert_int_equal(err.status, 401);
    assert_msg_has(err, "UNAUTHENTICATED");
    assert_msg_has(err, "Invalid Credentials");
    assert_int_equal(counter("token_requests"), 3);
    assert_int_equal(counter("failures"), 2);
    inst_release(&in);
}

/* 503s are retried (token endpoint too); too many become an error with Google's detail. */
static void test_unavailable(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err = {0};
    int ep;
    inst_good(&in);
    fake_post("fail", "{\"status\":503,\"count\":2}");
    if (sw_to(P, in.state, 1, &err) != 0)
        fail_msg("switch_to: %s", err.msg);
    assert_int_equal(counter("failures"), 2);
    char *v = fake_value(MKEY);
    assert_string_equal(v, "10.0.0.2");
    free(v);

    /* the token endpoint failing once after a 401 */
    fake_post("revoke", NULL);
    fake_post("fail", "{\"status\":503,\"count\":1,\"what\":\"token\"}");
    assert_int_equal(sw_current(P, in.state, &ep, &err), 0);
    assert_int_equal(ep, 1);

    fake_post("fail", "{\"status\":503,\"count\":100}");
    int rc = sw_current(P, in.state, &ep, &err);
    assert_int_equal(rc, DHAF_EUNAVAILABLE);
    assert_int_equal(err.status, 503);
    assert_msg_has(err, "HTTP 503");
    assert_msg_has(err, "UNAVAILABLE");
    assert_msg_has(err, "reason backendError");
    assert_msg_has(err, "The service is currently unavailable.");

    /* a non-JSON error body is quoted, cleaned */
    fake_post("fail", "{\"status\":502,\"count\":100,\"body\":\"<html>bad\\ngateway</html>\"}");
    rc = sw_current(P, in.state, &ep, &err);
    assert_int_equal(rc, DHAF_EUNAVAILABLE);
    assert_msg_has(err, "HTTP 502");
    assert_msg_has(err, "<html>bad?gateway</html>");
    inst_release(&in);
}

/* An operation that ends DONE with an error is a failed switch with its message. */
static void test_operation_error(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err = {0};
    inst_good(&in);
    fake_post("op", "{\"running_polls\":1,\"http_status\":400,\"error\":{\"code\":"
                    "\"QUOTA_EXCEEDED\",\"message\":\"Quota 'METADATA' exceeded.\"}}");
    int rc = sw_to(P, in.state, 1, &err);
    assert_int_equal(rc, DHAF_EINVAL);
    assert_int_equal(err.status, 400);
    assert_msg_has(err, "QUOTA_EXCEEDED");
    assert_msg_has(err, "Quota 'METADATA' exceeded.");
    assert_msg_has(err, "operation operation-");
    char *v = fake_value(MKEY);
    assert_string_equal(v, "10.0.0.1"); /* the fake did not apply it */
    free(v);

    /* a conflict reported inside the operation is retried like a 412 */
    fake_post("op", "{\"running_polls\":0,\"http_status\":412,\"error\":{\"code\":"
                    "\"CONDITION_NOT_MET\",\"message\":\"Invalid fingerprint.\"}}");
    if (sw_to(P, in.state, 1, &err) != 0)
        fail_msg("switch_to: %s", err.msg);
    v = fake_value(MKEY);
    assert_string_equal(v, "10.0.0.2");
    free(v);
    inst_release(&in);
}

/* Malformed replies are errors, never crashes. */
static void test_malformed(void **st)
{
    (void)st;
    struct inst in;
    struct dhaf_err err = {0};
    int ep;
    inst_good(&in);
    const struct {
        const char *fail; /* /_fake/fail body */
        bool on_switch;
        const char *want;
    } cases[] = {
        {"{\"status\":200,\"body\":\"not json\"}", false, "not a JSON object"},
        {"{\"status\":200,\"body\":\"[1,2]\"}", false, "not a JSON object"},
        {"{\"status\":200,\"body\":\"{\\\"commonInstanceMetadata\\\":7}\"}", false,
         "commonInstanceMetadata is not an object"},
        {"{\"status\":200,\"body\":\"{\\\"commonInstanceMetadata\\\":{\\\"items\\\":{}}}\"}", false,
         "items is not an array"},
        {"{\"status\":200,\"body\":\"{\\\"commonInstanceMetadata\\\":{\\\"items\\\":[1]}}\"}",
         false, "without a string key"},
        {"{\"status\":200,\"body\":\"{\\\"commonInstanceMetadata\\\":{\\\"items\\\":"
         "[{\\\"key\\\":\\\"" MKEY "\\\",\\\"value\\\":5}]}}\"}",
         false, "value is not a string"},
        {"{\"status\":200,\"body\":\"{\\\"commonInstanceMetadata\\\":{\\\"items\\\":[]}}\"}", true,
         "no commonInstanceMetadata.fingerprint"},
        /* the POST's reply (the GET before it passes) */
        {"{\"status\":200,\"skip\":1,\"body\":\"{\\\"kind\\\":\\\"compute#operation\\\"}\"}", true,
         "not an operation"},
        {"{\"status\":200,\"skip\":1,\"body\":\"{\\\"name\\\":\\\"op/../x\\\",\\\"status\\\":"
         "\\\"DONE\\\"}\"}",
         true, "not an operation"},
        {"{\"status\":200,\"skip\":1,\"body\":\"{\\\"name\\\":\\\"op-1\\\",\\\"status\\\":"
         "\\\"WAITING\\\"}\"}",
         true, "no status PENDING"},
        {"{\"status\":200,\"skip\":1,\"body\":\"{\\\"name\\\":\\\"op-1\\\",\\\"status\\\":"
         "\\\"DONE\\\",\\\"error\\\":7}\"}",
         true, "failed"},
        /* a poll's reply */
        {"{\"status\":200,\"skip\":2,\"body\":\"{}\"}", true, "not an operation"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake_post("reset", NULL);
        fake_post("fail", cases[i].fail);
        int rc =
            cases[i].on_switch ? sw_to(P, in.state, 1, &err) : sw_current(P, in.state, &ep, &err);
        if (rc == 0 || !strstr(err.msg, cases[i].want))
            fail_msg("case %zu: rc %d \"%s\", want \"%s\"", i, rc, err.msg, cases[i].want);
    }
    inst_release(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_key_files, test_setup),
        cmocka_unit_test_setup(test_key_unknown, test_setup),
        cmocka_unit_test_setup(test_token_endpoint_down, test_setup),
        cmocka_unit_test_setup(test_init_jwt, test_setup),
        cmocka_unit_test_setup(test_current, test_setup),
        cmocka_unit_test_setup(test_project_not_found, test_setup),
        cmocka_unit_test_setup(test_switch, test_setup),
        cmocka_unit_test_setup(test_switch_adds_key, test_setup),
        cmocka_unit_test_setup(test_fingerprint_race, test_setup),
        cmocka_unit_test_setup(test_conditional_write, test_setup),
        cmocka_unit_test_setup(test_token_cache, test_setup),
        cmocka_unit_test_setup(test_unavailable, test_setup),
        cmocka_unit_test_setup(test_operation_error, test_setup),
        cmocka_unit_test_setup(test_malformed, test_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
