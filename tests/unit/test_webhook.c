/* SPDX-License-Identifier: MIT */
/* The webhook notifier against the local receiver (tests/fakes/webhook.py): the signed JSON
 * body and its headers, retries on 500 with the same delivery id, the retries running out, a
 * 4xx and a redirect refused at once (not followed), a receiver that does not answer in time,
 * nobody listening, Slack's {"text"} with &, <, > escaped, the signature against known values,
 * and neither the secret nor the URL's path in any error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "dhaf/config.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"
#include "fake_proc.h"
#include "notifiers/webhook.h"

#define SECRET "wh-unit-secret-5f1e"

static char script[512];

struct world {
    struct fake_proc f;
    struct dhaf_section sec;
    void *state;
    const struct dhaf_provider *p;
};

static json_t *fake_get(const struct world *w, const char *path)
{
    char *text = test_http("127.0.0.1", w->f.port, "GET", path, NULL, NULL);
    assert_non_null(text);
    json_t *j = json_loads(text, 0, NULL);
    if (!j)
        fail_msg("the fake's %s is not JSON: %s", path, text);
    free(text);
    return j;
}

static void fake_fail(const struct world *w, const char *rule)
{
    int status = 0;
    char *reply = test_http("127.0.0.1", w->f.port, "POST", "/_fake/fail", rule, &status);
    assert_non_null(reply);
    free(reply);
    assert_int_equal(status, 200);
}

/* The requests the receiver got at path (a new reference). */
static json_t *received(const struct world *w, const char *path)
{
    char target[128];
    snprintf(target, sizeof(target), "/_fake/received?path=%s", path);
    json_t *all = fake_get(w, target);
    json_t *reqs = json_incref(json_object_get(all, "requests"));
    json_decref(all);
    return reqs;
}

/* Loads the notifier section yaml (a flow mapping; "PORT" stands for the fake's port) and
 * makes an instance. */
static void instance(struct world *w, const char *yaml)
{
    char text[1024], port[16];
    snprintf(port, sizeof(port), "%d", w->f.port);
    const char *at = strstr(yaml, "PORT");
    if (at)
        snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - yaml), yaml, port, at + 4);
    else
        snprintf(text, sizeof(text), "%s", yaml);
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, "t");
    int rc = dhaf_section_load_mem(DHAF_PKIND_NOTIFIER, text, strlen(text), "notifiers[0]",
                                   dhaf_registry_catalog(), &w->sec, &rep);
    if (rc)
        dhaf_cfg_report_print(&rep, stderr);
    assert_int_equal(rc, 0);
    dhaf_cfg_report_release(&rep);
    w->p = dhaf_registry_find(DHAF_PKIND_NOTIFIER, "webhook");
    assert_non_null(w->p);
    struct dhaf_provider_ctx ctx = {.cluster = "c1", .instance = "hook-1", .node = "node-1"};
    struct dhaf_err err;
    assert_int_equal(w->p->init(w->sec.conf, &ctx, &w->state, &err), 0);
}

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    const char *const argv[] = {FAKE_PYTHON, script, "--port",        "0",
                                "--secret",  SECRET, "--watch-stdin", NULL};
    if (fake_proc_start(&w->f, argv, NULL, FAKE_START_TIMEOUT_MS) != 0)
        fail_msg("the webhook receiver did not start");
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    if (w->p && w->state)
        w->p->destroy(w->state);
    dhaf_section_release(&w->sec);
    fake_proc_stop(&w->f);
    free(w);
    return 0;
}

static const char *const reasons[] = {"ep-1: connection refused", "ep-1: timeout"};

static struct dhaf_event_view event(uint64_t seq, const char *message)
{
    return (struct dhaf_event_view){.seq = seq,
                                    .kind = "failover",
                                    .level = "warning",
                                    .cluster = "c1",
                                    .service = "web",
                                    .from = "ep-1",
                                    .to = "ep-2",
                                    .reasons = reasons,
                                    .n_reasons = 2,
                                    .message = message,
                                    .at_ms = 1796655845123};
}

/* No error text may carry the secret or the URL's path (a Slack URL's credential). */
static void assert_clean(const struct dhaf_err *err)
{
    assert_null(strstr(err->msg, SECRET));
    assert_null(strstr(err->msg, "/hooks/"));
    assert_non_null(strstr(err->msg, "hook-1")); /* names the notifier */
}

static void test_signed_json(void **state)
{
    struct world *w = *state;
    instance(w,
             "{type: webhook, url: \"http://127.0.0.1:PORT/hooks/a?token=x\", secret: " SECRET "}");
    struct dhaf_event_view ev = event(42, "failover of web from ep-1 to ep-2");
    struct dhaf_err err;
    assert_int_equal(w->p->notify(w->state, &ev, &err), 0);
    json_t *reqs = received(w, "/hooks/a");
    assert_int_equal(json_array_size(reqs), 1);
    const json_t *r = json_array_get(reqs, 0);
    assert_string_equal(json_string_value(json_object_get(r, "sig")), "ok");
    const json_t *h = json_object_get(r, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "x-dhaf-delivery")), "c1-42");
    assert_string_equal(json_string_value(json_object_get(h, "x-dhaf-event")), "failover");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/json");
    const json_t *b = json_object_get(r, "json");
    assert_string_equal(json_string_value(json_object_get(b, "id")), "c1-42");
    assert_string_equal(json_string_value(json_object_get(b, "severity")), "warning");
    assert_string_equal(json_string_value(json_object_get(b, "from")), "ep-1");
    assert_string_equal(json_string_value(json_object_get(b, "to")), "ep-2");
    assert_string_equal(json_string_value(json_object_get(b, "time")), "2026-12-07T15:04:05Z");
    assert_int_equal(json_integer_value(json_object_get(b, "at_ms")), 1796655845123);
    assert_int_equal(json_array_size(json_object_get(b, "reasons")), 2);
    assert_null(json_object_get(b, "node")); /* absent fields are left out */
    json_decref(reqs);
}

static void test_retries_then_success(void **state)
{
    struct world *w = *state;
    instance(w, "{type: webhook, url: \"http://127.0.0.1:PORT/hooks/r\", secret: " SECRET "}");
    fake_fail(w, "{\"path\": \"/hooks/r\", \"status\": 503, \"count\": 2}");
    struct dhaf_event_view ev = event(7, "m");
    struct dhaf_err err;
    int64_t t0 = test_now_ms();
    assert_int_equal(w->p->notify(w->state, &ev, &err), 0);
    int64_t took = test_now_ms() - t0;
    assert_true(took >= 3000 && took < 6000); /* waited 1 s, then 2 s */
    json_t *reqs = received(w, "/hooks/r");
    assert_int_equal(json_array_size(reqs), 3);
    for (size_t i = 0; i < 3; i++) {
        const json_t *r = json_array_get(reqs, i);
        assert_int_equal(json_integer_value(json_object_get(r, "status")), i < 2 ? 503 : 200);
        assert_string_equal(json_string_value(json_object_get(r, "sig")), "ok");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(r, "headers"), "x-dhaf-delivery")),
            "c1-7");
    }
    json_decref(reqs);
}

static void test_retries_run_out(void **state)
{
    struct world *w = *state;
    instance(w, "{type: webhook, url: \"http://127.0.0.1:PORT/hooks/o\", retries: 1}");
    fake_fail(w, "{\"path\": \"/hooks/o\", \"status\": 500, \"count\": 5}");
    struct dhaf_event_view ev = event(8, "m");
    struct dhaf_err err;
    assert_int_equal(w->p->notify(w->state, &ev, &err), DHAF_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "HTTP 500"));
    assert_int_equal(err.status, 500);
    assert_clean(&err);
    json_t *reqs = received(w, "/hooks/o");
    assert_int_equal(json_array_size(reqs), 2); /* the first and one retry */
    json_decref(reqs);
}

static void test_refused_and_redirect(void **state)
{
    struct world *w = *state;
    instance(w, "{type: webhook, url: \"http://127.0.0.1:PORT/hooks/x\"}");
    fake_fail(w, "{\"path\": \"/hooks/x\", \"status\": 404, \"count\": 1}");
    struct dhaf_event_view ev = event(9, "m");
    struct dhaf_err err;
    assert_int_equal(w->p->notify(w->state, &ev, &err), DHAF_EPROTO);
    assert_non_null(strstr(err.msg, "HTTP 404"));
    assert_clean(&err);
    char rule[256];
    snprintf(rule, sizeof(rule),
             "{\"path\": \"/hooks/x\", \"status\": 301, \"count\": 1, \"location\": "
             "\"http://127.0.0.1:%d/hooks/moved\"}",
             w->f.port);
    fake_fail(w, rule);
    assert_int_equal(w->p->notify(w->state, &ev, &err), DHAF_EPROTO);
    assert_non_null(strstr(err.msg, "HTTP 301, a redirect (not followed"));
    assert_clean(&err);
    json_t *reqs = received(w, "/hooks/x");
    assert_int_equal(json_array_size(reqs), 2); /* each once: a refusal is not retried */
    json_decref(reqs);
    reqs = received(w, "/hooks/moved");
    assert_int_equal(json_array_size(reqs), 0);
    json_decref(reqs);
}

static void test_deadlines(void **state)
{
    struct world *w = *state;
    instance(w, "{type: webhook, url: \"http://127.0.0.1:PORT/hooks/slow\", timeout: 1, "
                "retries: 0}");
    fake_fail(w, "{\"path\": \"/hooks/slow\", \"status\": 200, \"count\": 1, \"delay\": 3}");
    struct dhaf_event_view ev = event(10, "m");
    struct dhaf_err err;
    int64_t t0 = test_now_ms();
    assert_int_equal(w->p->notify(w->state, &ev, &err), DHAF_ETIMEOUT);
    assert_true(test_now_ms() - t0 < 2500);
    assert_clean(&err);
    /* nobody listening */
    w->p->destroy(w->state);
    w->state = NULL;
    dhaf_section_release(&w->sec);
    char yaml[256];
    snprintf(yaml, sizeof(yaml),
             "{type: webhook, url: \"http://127.0.0.1:%d/hooks/none\", retries: 0, secret: " SECRET
             "}",
             test_free_port("127.0.0.1"));
    instance(w, yaml);
    assert_int_equal(w->p->notify(w->state, &ev, &err), DHAF_EUNAVAILABLE);
    assert_clean(&err);
}

static void test_slack_text(void **state)
{
    struct world *w = *state;
    instance(w, "{type: webhook, url: \"http://127.0.0.1:PORT/hooks/s\", format: slack}");
    struct dhaf_event_view ev = event(11, "failover of <web> & co");
    struct dhaf_err err;
    assert_int_equal(w->p->notify(w->state, &ev, &err), 0);
    json_t *reqs = received(w, "/hooks/s");
    assert_int_equal(json_array_size(reqs), 1);
    const json_t *r = json_array_get(reqs, 0);
    const json_t *b = json_object_get(r, "json");
    assert_int_equal(json_object_size(b), 1);
    assert_string_equal(json_string_value(json_object_get(b, "text")),
                        "*WARNING* failover | c1 | web\nfailover of &lt;web&gt; &amp; co\n"
                        "Reasons: ep-1: connection refused; ep-1: timeout\n"
                        "_2026-12-07T15:04:05Z, dhaf notifier hook-1_");
    assert_string_equal(json_string_value(json_object_get(r, "sig")), "none");
    json_decref(reqs);
}

/* The scheme as documented: HMAC-SHA256(secret, "<timestamp>.<body>"), as Python computes it
 * (hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()). */
static void test_signature_known_value(void **state)
{
    (void)state;
    char buf[80];
    webhook_signature("key", 1700000000, "{}", 2, buf, sizeof(buf));
    assert_string_equal(buf,
                        "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae");
}

int main(void)
{
    fake_script(script, sizeof(script), "DHAF_FAKE_WEBHOOK", "webhook.py");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_signed_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_run_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_and_redirect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadlines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slack_text, setup, teardown),
        cmocka_unit_test(test_signature_known_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
