/* SPDX-License-Identifier: MIT */
/* E-mail notifier tests against a local SMTP sink (tests/fakes/smtp_sink.py, aiosmtpd), one
 * sink per test: headers and MIME parts as Python's email package decodes them, STARTTLS
 * offered/required/missing, implicit TLS with a private CA, AUTH, refusals and retries, a
 * server down then back, a silent server, header injection, every kind's subject, and the
 * password kept out of every text. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "dhaf/alloc.h"
#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"
#include "config_load.h"
#include "fake_proc.h"

extern const struct dhaf_provider dhaf_notifier_email;

#define USER     "mailer"
#define PASSWORD "pw-TEST-9d41b7e3c2"
#define FROM     "dhaf@foo.com"
#define TO       "ops@foo.com"
#define AT_MS    1714564800123LL /* 2024-05-01 12:00:00.123 UTC */
#define ARROW    "\xe2\x86\x92"  /* → */

static char script[4096];
static char tmpdir[64];
static char cert[128], key[128];

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *hay_ = (hay);                                                                  \
        if (!hay_ || !strstr(hay_, (needle)))                                                      \
            fail_msg("\"%s\" does not contain \"%s\"", hay_ ? hay_ : "(null)", (needle));          \
    } while (0)

#define assert_not_contains(hay, needle)                                                           \
    do {                                                                                           \
        if (strstr((hay), (needle)))                                                               \
            fail_msg("\"%s\" contains \"%s\"", (hay), (needle));                                   \
    } while (0)

/* ---- the sink ------------------------------------------------------------------------------ */

struct sink {
    struct fake_proc proc;
    char dir[128];
};

/* Starts the sink with the NULL-terminated extra arguments; waits (with a deadline) for its
 * LISTENING line. */
static void sink_start_v(struct sink *s, const char *const *extra)
{
    static int seq;
    snprintf(s->dir, sizeof(s->dir), "%s/sink-%d", tmpdir, ++seq);
    const char *const argv[] = {FAKE_PYTHON, script, "--port",        "0",
                                "--dir",     s->dir, "--watch-stdin", NULL};
    if (fake_proc_start(&s->proc, argv, extra, FAKE_START_TIMEOUT_MS) != 0)
        fail_msg("the SMTP sink did not start");
}

#define sink_start(s, ...)                                                                         \
    do {                                                                                           \
        const char *const sink_extra_[] = {__VA_ARGS__, NULL};                                     \
        sink_start_v((s), sink_extra_);                                                            \
    } while (0)

static void sink_stop(struct sink *s)
{
    if (s->proc.pid <= 0)
        return;
    fake_proc_stop(&s->proc);
    test_rmrf(s->dir);
}

/* The sink's messages.jsonl as a JSON array (caller decrefs); empty when no mail came. */
static json_t *sink_messages(const struct sink *s)
{
    char path[256], line[1 << 16];
    json_t *out = json_array();
    snprintf(path, sizeof(path), "%s/messages.jsonl", s->dir);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return out;
    while (fgets(line, sizeof(line), fp)) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j)
            fail_msg("bad messages.jsonl line: %s (%s)", line, je.text);
        json_array_append_new(out, j);
    }
    fclose(fp);
    return out;
}

/* The raw bytes of message n (caller frees). */
static char *sink_raw(const struct sink *s, int n)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%d.eml", s->dir, n);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = dhaf_xcalloc(1, (size_t)len + 1);
    assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    return buf;
}

static size_t sink_count(const struct sink *s)
{
    json_t *m = sink_messages(s);
    size_t n = json_array_size(m);
    json_decref(m);
    return n;
}

static const char *str_of(const json_t *obj, const char *k)
{
    const char *v = json_string_value(json_object_get(obj, k));
    return v ? v : "";
}

/* Part i of a message record: its decoded body, after checking type, charset and encoding. */
static const char *part_body(const json_t *msg, size_t i, const char *type)
{
    const json_t *p = json_array_get(json_object_get(msg, "parts"), i);
    assert_non_null(p);
    assert_string_equal(str_of(p, "type"), type);
    assert_string_equal(str_of(p, "charset"), "utf-8");
    assert_string_equal(str_of(p, "cte"), "quoted-printable");
    return str_of(p, "body");
}

/* ---- the notifier ---------------------------------------------------------------------------- */

/* A notifier loaded through the real config loader, and its instance. */
struct mailer {
    struct dhaf_config cfg;
    struct dhaf_provider_ctx ctx;
    void *st;
};

/* Loads an email notifier for port with the extra flow-style smtp keys (", security: ssl"),
 * then runs init, which must succeed. */
static void mailer_open(struct mailer *m, int port, const char *smtp_extra)
{
    char yaml[4096];
    struct dhaf_err err = {0};
    snprintf(yaml, sizeof(yaml),
             "dhaf: {cluster-name: c1, node-name: n1}\n"
             "etcd: {hosts: \"127.0.0.1:2379\"}\n"
             "services:\n"
             "- name: web\n"
             "  domain: foo.com\n"
             "  entry-points: [{name: ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.2}]\n"
             "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
             "  health-checker: {type: tcp, port: 80}\n"
             "notifiers:\n"
             "- type: email\n"
             "  name: ops-mail\n"
             "  from: " FROM "\n"
             "  to: " TO "\n"
             "  smtp: {server: 127.0.0.1, port: %d%s}\n",
             port, smtp_extra ? smtp_extra : "");
    memset(m, 0, sizeof(*m));
    int rc = test_config_load(yaml, "email.dhaf", ".", &m->cfg);
    assert_int_equal(rc, 0);
    assert_int_equal(m->cfg.n_notifiers, 1);
    m->ctx = (struct dhaf_provider_ctx){
        .node = "n1", .cluster = "c1", .instance = m->cfg.notifiers[0].name};
    rc = dhaf_notifier_email.init(m->cfg.notifiers[0].conf, &m->ctx, &m->st, &err);
    if (rc != 0)
        fail_msg("init failed: %d %s", rc, err.msg);
    assert_non_null(m->st);
}

static void mailer_close(struct mailer *m)
{
    dhaf_notifier_email.destroy(m->st);
    m->st = NULL;
    dhaf_config_release(&m->cfg);
}

static const char *const failover_reasons[] = {"n1: timeout; n2: connection refused"};

/* A failover of web from ep-1 to ep-2. */
static struct dhaf_event_view failover_event(uint64_t seq)
{
    return (struct dhaf_event_view){
        .seq = seq,
        .kind = "failover",
        .level = "warning",
        .cluster = "c1",
        .service = "web",
        .from = "ep-1",
        .to = "ep-2",
        .reasons = failover_reasons,
        .n_reasons = 1,
        .message = "failover of web from ep-1 to ep-2 done in 12 ms; <b>checks</b> & \"votes\"",
        .at_ms = AT_MS,
    };
}

static int notify(struct mailer *m, const struct dhaf_event_view *ev, struct dhaf_err *err)
{
    memset(err, 0, sizeof(*err));
    int rc = dhaf_notifier_email.notify(m->st, ev, err);
    assert_null(strstr(err->msg, PASSWORD));
    return rc;
}

static void notify_ok(struct mailer *m, const struct dhaf_event_view *ev)
{
    struct dhaf_err err;
    int rc = notify(m, ev, &err);
    if (rc != 0)
        fail_msg("notify failed: %d %s", rc, err.msg);
}

/* Sends the failover event and returns the one mail's record (caller decrefs). */
static json_t *send_one(struct mailer *m, const struct sink *s)
{
    struct dhaf_event_view ev = failover_event(7);
    notify_ok(m, &ev);
    json_t *all = sink_messages(s);
    assert_int_equal(json_array_size(all), 1);
    json_t *one = json_incref(json_array_get(all, 0));
    json_decref(all);
    assert_string_equal(str_of(one, "mail_from"), FROM);
    assert_string_equal(json_string_value(json_array_get(json_object_get(one, "rcpt_tos"), 0)), TO);
    return one;
}

/* ---- message format ------------------------------------------------------------------------ */

static void test_plain_failover(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    sink_start(&s, "--host", "127.0.0.1");
    mailer_open(&m, s.proc.port, NULL);
    int64_t t0 = (int64_t)time(NULL);
    struct dhaf_event_view ev = failover_event(7);
    notify_ok(&m, &ev);

    json_t *all = sink_messages(&s), *msg = json_array_get(all, 0);
    assert_int_equal(json_array_size(all), 1);
    /* envelope: no TLS offered, none used; no login */
    assert_string_equal(str_of(msg, "mail_from"), FROM);
    json_t *rcpt = json_object_get(msg, "rcpt_tos");
    assert_int_equal(json_array_size(rcpt), 1);
    assert_string_equal(json_string_value(json_array_get(rcpt, 0)), TO);
    assert_true(json_is_false(json_object_get(msg, "tls")));
    assert_true(json_is_null(json_object_get(msg, "auth_user")));

    /* headers, decoded */
    assert_string_equal(str_of(msg, "from"), "dhaf <" FROM ">");
    assert_string_equal(str_of(msg, "to"), TO);
    assert_string_equal(str_of(msg, "subject"),
                        "dhaf WARNING: FAILOVER | c1 | web | ep-1 " ARROW " ep-2");
    double date = json_number_value(json_object_get(msg, "date_ts"));
    assert_true(date >= (double)(t0 - 2) && date <= (double)(time(NULL) + 2));
    assert_contains(str_of(msg, "date"), "+0000");
    const char *mid = str_of(msg, "message_id");
    assert_true(mid[0] == '<' && mid[strlen(mid) - 1] == '>');
    assert_contains(mid, "@dhaf.c1>");
    assert_contains(str_of(msg, "content_type"), "multipart/alternative");
    assert_int_equal(json_array_size(json_object_get(msg, "defects")), 0);
    assert_true(json_is_false(json_object_get(msg, "bare_lf")));
    assert_true(json_integer_value(json_object_get(msg, "max_line")) <= 78);

    /* the text part: what happened, when, where, the reasons one per line, the footer */
    assert_int_equal(json_array_size(json_object_get(msg, "parts")), 2);
    const char *text = part_body(msg, 0, "text/plain");
    assert_contains(text, "failover of web from ep-1 to ep-2 done in 12 ms; <b>checks</b> & "
                          "\"votes\"");
    assert_contains(text, "2024-05-01 12:00:00.123 UTC");
    assert_contains(text, "Cluster:");
    assert_contains(text, "c1");
    assert_contains(text, "Service:");
    assert_contains(text, "- n1: timeout");
    assert_contains(text, "- n2: connection refused");
    assert_not_contains(text, "timeout; n2");
    assert_contains(text, "dhaf notifier \"ops-mail\"");

    /* the HTML part: the same, escaped */
    const char *html = part_body(msg, 1, "text/html");
    assert_contains(html, "done in 12 ms; &lt;b&gt;checks&lt;/b&gt; &amp; &quot;votes&quot;");
    assert_not_contains(html, "<b>checks");
    assert_contains(html, "2024-05-01 12:00:00.123 UTC");
    assert_contains(html, "<li>n1: timeout</li>");
    assert_contains(html, "<li>n2: connection refused</li>");
    assert_contains(html, "&quot;ops-mail&quot;");

    /* the raw message: an encoded-word for the arrow, MIME 1.0, CRLF only */
    char *raw = sink_raw(&s, 1);
    assert_contains(raw, "\r\nSubject: =?UTF-8?B?");
    assert_contains(raw, "\r\nMIME-Version: 1.0\r\n");
    assert_contains(raw, "Content-Transfer-Encoding: quoted-printable");
    assert_true(strncmp(raw, "Date: ", 6) == 0 || strstr(raw, "\r\nDate: "));
    free(raw);

    /* another event, another Message-ID; the same event again, the same one */
    char first_id[256];
    snprintf(first_id, sizeof(first_id), "%s", mid);
    json_decref(all);
    ev.seq = 8;
    notify_ok(&m, &ev);
    ev.seq = 7;
    notify_ok(&m, &ev);
    all = sink_messages(&s);
    assert_int_equal(json_array_size(all), 3);
    assert_string_not_equal(str_of(json_array_get(all, 1), "message_id"), first_id);
    assert_string_equal(str_of(json_array_get(all, 2), "message_id"), first_id);
    json_decref(all);

    mailer_close(&m);
    sink_stop(&s);
}

/* A long subject with many non-ASCII characters is folded into encoded-words of whole
 * characters; lines stay short and it decodes to the same text. */
static void test_long_utf8_subject(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    sink_start(&s, "--host", "127.0.0.1");
    mailer_open(&m, s.proc.port, NULL);
    static const char *const why[] = {"n1: délai dépassé → réponse reçue trop tard über "
                                      "alles ünïcödé ✓✓✓ 日本語のテキスト"};
    struct dhaf_event_view ev = {.seq = 1,
                                 .kind = "ep-down",
                                 .level = "warning",
                                 .cluster = "c1",
                                 .service = "web",
                                 .from = "ep-1",
                                 .reasons = why,
                                 .n_reasons = 1,
                                 .message = "entry point ep-1 of web is DOWN (2 of 3 voters)",
                                 .at_ms = AT_MS};
    notify_ok(&m, &ev);
    json_t *all = sink_messages(&s), *msg = json_array_get(all, 0);
    char want[512];
    snprintf(want, sizeof(want), "dhaf WARNING: DOWN | c1 | web | ep-1 | %s", why[0]);
    assert_string_equal(str_of(msg, "subject"), want);
    assert_true(json_integer_value(json_object_get(msg, "max_line")) <= 78);
    assert_int_equal(json_array_size(json_object_get(msg, "defects")), 0);
    assert_contains(part_body(msg, 0, "text/plain"), why[0]);
    assert_contains(part_body(msg, 1, "text/html"), "✓✓✓ 日本語のテキスト");
    json_decref(all);
    mailer_close(&m);
    sink_stop(&s);
}

/* CR and LF in event text never make a header line: a service name with a Bcc stays in the
 * subject and adds no recipient. */
static void test_header_injection(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    sink_start(&s, "--host", "127.0.0.1");
    mailer_open(&m, s.proc.port, NULL);
    struct dhaf_event_view ev = {.seq = 1,
                                 .kind = "service-down",
                                 .level = "critical",
                                 .cluster = "c1",
                                 .service = "web\r\nBcc: evil@x.y",
                                 .message = "service is DOWN\r\nX-Evil: 1",
                                 .at_ms = AT_MS};
    notify_ok(&m, &ev);
    json_t *all = sink_messages(&s), *msg = json_array_get(all, 0);
    json_t *rcpt = json_object_get(msg, "rcpt_tos");
    assert_int_equal(json_array_size(rcpt), 1);
    assert_string_equal(json_string_value(json_array_get(rcpt, 0)), TO);
    assert_string_equal(str_of(msg, "subject"),
                        "dhaf CRITICAL: SERVICE DOWN | c1 | web  Bcc: evil@x.y");
    char *raw = sink_raw(&s, 1);
    assert_not_contains(raw, "\r\nBcc:");
    assert_not_contains(raw, "\r\nX-Evil:");
    free(raw);
    json_decref(all);
    mailer_close(&m);
    sink_stop(&s);
}

/* Every kind gets its subject (table-driven). */
static const char *const down_why[] = {"n1: timeout; n2: http-code"};

static const struct subject_case {
    const char *kind, *level, *service, *node, *from, *to;
    const char *const *reasons;
    const char *want;
} subject_cases[] = {
    {"failover", "warning", "web", NULL, "ep-1", "ep-2", NULL,
     "dhaf WARNING: FAILOVER | c1 | web | ep-1 " ARROW " ep-2"},
    {"switchover", "info", "web", NULL, "ep-2", "ep-1", NULL,
     "dhaf INFO: SWITCHOVER | c1 | web | ep-2 " ARROW " ep-1"},
    {"switching", "info", "web", NULL, NULL, "ep-2", NULL,
     "dhaf INFO: SWITCHING | c1 | web | " ARROW " ep-2"},
    {"switch-failed", "warning", "web", NULL, NULL, "ep-2", NULL,
     "dhaf WARNING: SWITCH FAILED | c1 | web | " ARROW " ep-2"},
    {"service-down", "critical", "web", NULL, NULL, NULL, NULL,
     "dhaf CRITICAL: SERVICE DOWN | c1 | web"},
    {"service-up", "info", "web", NULL, NULL, NULL, NULL, "dhaf INFO: SERVICE UP | c1 | web"},
    {"ep-up", "info", "web", NULL, "ep-1", NULL, NULL, "dhaf INFO: UP | c1 | web | ep-1"},
    {"ep-down", "warning", "web", NULL, "ep-1", NULL, down_why,
     "dhaf WARNING: DOWN | c1 | web | ep-1 | n1: timeout"},
    {"no-quorum", "warning", "web", NULL, NULL, NULL, NULL, "dhaf WARNING: NO QUORUM | c1 | web"},
    {"quorum", "info", "web", NULL, NULL, NULL, NULL, "dhaf INFO: QUORUM | c1 | web"},
    {"switchover-purged", "info", "web", NULL, NULL, "ep-2", NULL,
     "dhaf INFO: SWITCHOVER PURGED | c1 | web"},
    {"new-leader", "info", NULL, "n2", NULL, NULL, NULL, "dhaf INFO: NEW DHAF LEADER | c1"},
    {"leader-lost", "warning", "@cluster", "n1", NULL, NULL, NULL,
     "dhaf WARNING: DHAF LEADER LOST | c1 | dhaf node n1"},
    {"node-up", "info", "@cluster", "n3", NULL, NULL, NULL, "dhaf INFO: UP | c1 | dhaf node n3"},
    {"node-down", "warning", NULL, "n3", NULL, NULL, NULL,
     "dhaf WARNING: DOWN | c1 | dhaf node n3"},
    {"lease-renewed", "info", "web", NULL, NULL, NULL, NULL, "dhaf INFO: LEASE RENEWED | c1 | web"},
    {"config-reloaded", NULL, NULL, "n1", NULL, NULL, NULL, "dhaf INFO: CONFIG RELOADED | c1"},
};

static void test_subjects(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    size_t n = sizeof(subject_cases) / sizeof(subject_cases[0]);
    sink_start(&s, "--host", "127.0.0.1");
    mailer_open(&m, s.proc.port, NULL);
    for (size_t i = 0; i < n; i++) {
        const struct subject_case *c = &subject_cases[i];
        struct dhaf_event_view ev = {.seq = 100 + i,
                                     .kind = c->kind,
                                     .level = c->level,
                                     .cluster = "c1",
                                     .service = c->service,
                                     .node = c->node,
                                     .from = c->from,
                                     .to = c->to,
                                     .reasons = c->reasons,
                                     .n_reasons = c->reasons ? 1 : 0,
                                     .message = "what happened",
                                     .at_ms = AT_MS};
        notify_ok(&m, &ev);
    }
    json_t *all = sink_messages(&s);
    assert_int_equal(json_array_size(all), n);
    for (size_t i = 0; i < n; i++) {
        const json_t *msg = json_array_get(all, i);
        if (strcmp(str_of(msg, "subject"), subject_cases[i].want) != 0)
            fail_msg("%s: subject \"%s\", expected \"%s\"", subject_cases[i].kind,
                     str_of(msg, "subject"), subject_cases[i].want);
        assert_int_equal(json_array_size(json_object_get(msg, "defects")), 0);
        assert_contains(part_body(msg, 0, "text/plain"), "what happened");
        assert_contains(part_body(msg, 1, "text/html"), "what happened");
    }
    json_decref(all);
    mailer_close(&m);
    sink_stop(&s);
}

/* ---- TLS ----------------------------------------------------------------------------------- */

static char ca_extra[256];

/* STARTTLS offered and security absent: used. */
static void test_starttls_offered(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    sink_start(&s, "--starttls", cert, key);
    mailer_open(&m, s.proc.port, ca_extra);
    json_t *msg = send_one(&m, &s);
    assert_true(json_is_true(json_object_get(msg, "tls")));
    assert_string_equal(str_of(msg, "tls_mode"), "starttls");
    json_decref(msg);
    mailer_close(&m);
    sink_stop(&s);
}

/* security: starttls against a server that requires it, and one that does not offer it. */
static void test_starttls_required(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    char extra[512];
    struct dhaf_err err;
    snprintf(extra, sizeof(extra), ", security: starttls%s", ca_extra);

    sink_start(&s, "--starttls", cert, key, "--require-starttls");
    mailer_open(&m, s.proc.port, extra);
    json_t *msg = send_one(&m, &s);
    assert_string_equal(str_of(msg, "tls_mode"), "starttls");
    json_decref(msg);
    mailer_close(&m);
    sink_stop(&s);

    /* no STARTTLS: nothing is sent in clear text */
    sink_start(&s, "--host", "127.0.0.1");
    mailer_open(&m, s.proc.port, extra);
    struct dhaf_event_view ev = failover_event(1);
    assert_int_equal(notify(&m, &ev, &err), DHAF_EUNAVAILABLE);
    assert_contains(err.msg, "STARTTLS");
    assert_contains(err.msg, "smtp://127.0.0.1:");
    assert_int_equal(sink_count(&s), 0);
    mailer_close(&m);
    sink_stop(&s);
}

/* security: ssl is TLS from the first byte, verified with the private CA; without it the
 * self-signed certificate is refused (and retried: it is a transport failure). */
static void test_implicit_tls(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    char extra[512];
    struct dhaf_err err;
    snprintf(extra, sizeof(extra), ", security: ssl%s", ca_extra);

    sink_start(&s, "--implicit-tls", cert, key);
    mailer_open(&m, s.proc.port, extra);
    json_t *msg = send_one(&m, &s);
    assert_true(json_is_true(json_object_get(msg, "tls")));
    assert_string_equal(str_of(msg, "tls_mode"), "implicit");
    json_decref(msg);
    mailer_close(&m);

    mailer_open(&m, s.proc.port, ", security: ssl");
    struct dhaf_event_view ev = failover_event(1);
    assert_int_equal(notify(&m, &ev, &err), DHAF_EUNAVAILABLE);
    assert_contains(err.msg, "smtps://127.0.0.1:");
    assert_int_equal(sink_count(&s), 1);
    mailer_close(&m);
    sink_stop(&s);
}

/* ---- AUTH ---------------------------------------------------------------------------------- */

static void test_auth(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    char extra[512];
    struct dhaf_err err;
    sink_start(&s, "--starttls", cert, key, "--auth", USER ":" PASSWORD);

    /* the right password: delivered as that user, over TLS */
    snprintf(extra, sizeof(extra), ", username: " USER ", password: \"" PASSWORD "\"%s", ca_extra);
    mailer_open(&m, s.proc.port, extra);
    json_t *msg = send_one(&m, &s);
    assert_string_equal(str_of(msg, "auth_user"), USER);
    assert_string_equal(str_of(msg, "tls_mode"), "starttls");
    json_decref(msg);
    mailer_close(&m);

    /* a wrong one: given up (not retried), with the server's reply, no mail */
    snprintf(extra, sizeof(extra), ", username: " USER ", password: \"wrong-" PASSWORD "\"%s",
             ca_extra);
    mailer_open(&m, s.proc.port, extra);
    struct dhaf_event_view ev = failover_event(2);
    assert_int_equal(notify(&m, &ev, &err), DHAF_EAUTH);
    assert_contains(err.msg, "535");
    assert_contains(err.msg, "user \"" USER "\"");
    assert_int_equal(err.status, 535);
    assert_int_equal(sink_count(&s), 1);
    mailer_close(&m);

    /* no login at all where the server requires one: refused before MAIL, not retried */
    mailer_open(&m, s.proc.port, ca_extra);
    assert_int_equal(notify(&m, &ev, &err), DHAF_EAUTH);
    assert_contains(err.msg, "530");
    assert_contains(err.msg, "set smtp.username");
    assert_int_equal(sink_count(&s), 1);
    mailer_close(&m);
    sink_stop(&s);

    /* a server without STARTTLS never sees the password: security absent requires TLS once
     * a password is set */
    sink_start(&s, "--auth", USER ":" PASSWORD);
    snprintf(extra, sizeof(extra), ", username: " USER ", password: \"" PASSWORD "\"");
    mailer_open(&m, s.proc.port, extra);
    assert_int_equal(notify(&m, &ev, &err), DHAF_EUNAVAILABLE);
    assert_contains(err.msg, "STARTTLS");
    assert_int_equal(sink_count(&s), 0);
    mailer_close(&m);
    sink_stop(&s);
}

/* ---- failures and retries ------------------------------------------------------------------ */

/* A server down: refused at once (retry); after it comes back, the mail goes out. */
static void test_down_then_back(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    struct dhaf_err err;
    sink_start(&s, "--down-for", "1.5");
    mailer_open(&m, s.proc.port, NULL);
    struct dhaf_event_view ev = failover_event(3);
    int64_t t0 = test_now_ms();
    assert_int_equal(notify(&m, &ev, &err), DHAF_EUNAVAILABLE);
    assert_true(test_now_ms() - t0 < 1400); /* did not wait out the 1.5 s outage */
    assert_contains(err.msg, "smtp://127.0.0.1:");
    assert_int_equal(sink_count(&s), 0);

    /* what the leader's delivery thread does, with a short back-off */
    int64_t deadline = test_now_ms() + 15000;
    int rc;
    while ((rc = notify(&m, &ev, &err)) != 0 && test_now_ms() < deadline) {
        assert_int_equal(rc, DHAF_EUNAVAILABLE);
        test_sleep_ms(100);
    }
    if (rc != 0)
        fail_msg("the sink did not come back: %d %s", rc, err.msg);
    assert_int_equal(sink_count(&s), 1);
    mailer_close(&m);
    sink_stop(&s);
}

/* 4xx is "try again later" (retried), 5xx on RCPT a refusal (given up), both with the
 * server's words. */
static void test_refusals(void **state)
{
    (void)state;
    struct sink s;
    struct mailer m;
    struct dhaf_err err;
    struct dhaf_event_view ev = failover_event(4);

    sink_start(&s, "--greylist", "1");
    mailer_open(&m, s.proc.port, NULL);
    assert_int_equal(notify(&m, &ev, &err), DHAF_EUNAVAILABLE);
    assert_contains(err.msg, "RCPT");
    assert_contains(err.msg, "451 4.7.1 Greylisted");
    assert_int_equal(err.status, 451);
    notify_ok(&m, &ev);
    assert_int_equal(sink_count(&s), 1);
    mailer_close(&m);
    sink_stop(&s);

    sink_start(&s, "--reject-rcpt", TO);
    mailer_open(&m, s.proc.port, NULL);
    assert_int_equal(notify(&m, &ev, &err), DHAF_EINVAL);
    assert_contains(err.msg, "RCPT");
    assert_contains(err.msg, "550 5.1.1");
    assert_contains(err.msg, "Recipient address rejected");
    assert_int_equal(sink_count(&s), 0);
    mailer_close(&m);
    sink_stop(&s);
}

/* A server that accepts the connection but never greets: the deadline (smtp.timeout) ends
 * the attempt with DHAF_ETIMEOUT. */
static void test_silent_server(void **state)
{
    (void)state;
    struct mailer m;
    struct dhaf_err err;
    int port;
    int fd = test_bind("127.0.0.1", 8, &port); /* the kernel completes handshakes; nobody answers */
    assert_true(fd >= 0);
    mailer_open(&m, port, ", timeout: 1");
    struct dhaf_event_view ev = failover_event(5);
    int64_t t0 = test_now_ms();
    assert_int_equal(notify(&m, &ev, &err), DHAF_ETIMEOUT);
    int64_t took = test_now_ms() - t0;
    assert_true(took >= 900 && took < 5000);
    mailer_close(&m);
    close(fd);
}

/* ---- secrets ------------------------------------------------------------------------------- */

/* The password appears in no error and no log line (debug level included), whatever fails. */
static void test_password_never_shown(void **state)
{
    (void)state;
    char path[128], extra[512];
    struct sink s;
    struct mailer m;
    struct dhaf_err err;
    struct test_stderr cap;
    snprintf(path, sizeof(path), "%s/stderr.txt", tmpdir);
    assert_int_equal(test_stderr_begin(&cap, path), 0);
    dhaf_log_setup(DHAF_LOG_DEBUG, DHAF_LOG_TEXT);

    sink_start(&s, "--starttls", cert, key, "--auth", USER ":" PASSWORD);
    snprintf(extra, sizeof(extra), ", username: " USER ", password: \"" PASSWORD "\"%s", ca_extra);
    mailer_open(&m, s.proc.port, extra);
    struct dhaf_event_view ev = failover_event(6);
    notify_ok(&m, &ev);
    mailer_close(&m);
    snprintf(extra, sizeof(extra), ", username: " USER ", password: \"" PASSWORD "x\"%s", ca_extra);
    mailer_open(&m, s.proc.port, extra);
    assert_int_equal(notify(&m, &ev, &err), DHAF_EAUTH);
    assert_null(strstr(err.msg, PASSWORD));
    mailer_close(&m);
    int port = s.proc.port;
    sink_stop(&s);
    snprintf(extra, sizeof(extra), ", username: " USER ", password: \"" PASSWORD "\"%s", ca_extra);
    mailer_open(&m, port, extra); /* nobody listens there any more */
    assert_int_equal(notify(&m, &ev, &err), DHAF_EUNAVAILABLE);
    mailer_close(&m);

    dhaf_log_setup(DHAF_LOG_WARN, DHAF_LOG_TEXT);
    char *text = test_stderr_end(&cap);
    assert_contains(text, "event=email-sent notifier=ops-mail seq=6 kind=failover");
    if (strstr(text, PASSWORD))
        fail_msg("the password is in the log:\n%s", text);
    free(text);
}

/* ---- config -------------------------------------------------------------------------------- */

/* smtp.timeout and smtp.ca-file are keys of the table: defaults and a relative path. */
static void test_config_keys(void **state)
{
    (void)state;
    struct mailer m;
    mailer_open(&m, 2525, NULL);
    const struct dhaf_cfgkey *k = dhaf_notifier_email.keys;
    bool timeout = false, ca = false;
    for (; k->key; k++) {
        timeout |= strcmp(k->key, "smtp.timeout") == 0 && k->def && strcmp(k->def, "30") == 0;
        ca |= strcmp(k->key, "smtp.ca-file") == 0 && k->type == DHAF_CFG_PATH;
    }
    assert_true(timeout);
    assert_true(ca);
    mailer_close(&m);
}

static int group_setup(void **st)
{
    (void)st;
    fake_script(script, sizeof(script), "DHAF_TEST_SMTP_SINK", "smtp_sink.py");
    if (test_tmpdir(tmpdir, sizeof(tmpdir), "email-test") != 0)
        return -1;
    snprintf(cert, sizeof(cert), "%s/cert.pem", tmpdir);
    snprintf(key, sizeof(key), "%s/key.pem", tmpdir);
    /* a self-signed certificate for 127.0.0.1: the sink's, and the notifier's private CA */
    if (test_make_cert(cert, key, "dhaf-test-sink", "IP:127.0.0.1,DNS:localhost") != 0)
        return -1;
    snprintf(ca_extra, sizeof(ca_extra), ", ca-file: \"%s\"", cert);
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
        cmocka_unit_test(test_plain_failover),   cmocka_unit_test(test_long_utf8_subject),
        cmocka_unit_test(test_header_injection), cmocka_unit_test(test_subjects),
        cmocka_unit_test(test_starttls_offered), cmocka_unit_test(test_starttls_required),
        cmocka_unit_test(test_implicit_tls),     cmocka_unit_test(test_auth),
        cmocka_unit_test(test_down_then_back),   cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_silent_server),    cmocka_unit_test(test_password_never_shown),
        cmocka_unit_test(test_config_keys),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
