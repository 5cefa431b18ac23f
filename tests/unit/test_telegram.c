/* SPDX-License-Identifier: MIT */
/* Telegram notifier tests against the local fake of the Bot API (tests/fakes/telegram.py), one
 * fake per test and an in-memory key-value store in place of etcd: the token check at init,
 * joining with /start <code> (private chats and groups), /stop, help, the bot removed from a
 * group, group migrations, every event kind rendered as MarkdownV2 the fake accepts, blocked
 * and unknown chats removed, 429 retry_after, retries without duplicates, the update offset
 * kept across instances, 409 back-off, a prompt destroy, and the token in no text or log. */
#include <pthread.h>
#include <setjmp.h>
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
#include "dhaf/err.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "fake_proc.h"
#include "notifiers/telegram.h"

extern const struct dhaf_provider dhaf_notifier_tg;

#define BOT_ID      123456789
#define TOKEN       "123456789:AAEdhafTEST-token_x9Qz"
#define WRONG_TOKEN "123456789:AAEwrongTOKEN-zz77"
#define JOIN        "s3cret-Join.code"
#define WAIT_MS     15000

static char script[4096];

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        if (!strstr((hay), (needle)))                                                              \
            fail_msg("\"%s\" does not contain \"%s\"", (hay), (needle));                           \
    } while (0)

#define assert_no_secret(text)                                                                     \
    do {                                                                                           \
        assert_null(strstr((text), TOKEN));                                                        \
        assert_null(strstr((text), WRONG_TOKEN));                                                  \
        assert_null(strstr((text), "AAEdhafTEST"));                                                \
        assert_null(strstr((text), JOIN));                                                         \
    } while (0)

/* ---- the fake ------------------------------------------------------------------------------ */

static void fake_start(struct fake_proc *f)
{
    const char *const argv[] = {FAKE_PYTHON,      script,    "--port",        "0", "--token", TOKEN,
                                "--bot-username", "dhafbot", "--watch-stdin", NULL};
    if (fake_proc_start(f, argv, NULL, FAKE_START_TIMEOUT_MS) != 0)
        fail_msg("the Telegram fake did not start");
}

/* One HTTP/1.0 request to the fake, independent of the code under test. Returns the body
 * (caller frees); *status (may be NULL) gets the HTTP status. */
static char *fake_http(const struct fake_proc *f, const char *method, const char *path,
                       const char *body, int *status)
{
    char *out = test_http("127.0.0.1", f->port, method, path, body, status);
    assert_non_null(out);
    return out;
}

/* POSTs a test control (body: a JSON object, taken) and returns the reply (caller decrefs). */
static json_t *fake_ctl(const struct fake_proc *f, const char *path, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    int status = 0;
    char *reply = fake_http(f, "POST", path, text, &status);
    json_t *j = json_loads(reply, 0, NULL);
    free(text);
    free(reply);
    json_decref(body);
    assert_int_equal(status, 200);
    assert_non_null(j);
    return j;
}

static json_t *fake_get(const struct fake_proc *f, const char *path)
{
    char *text = fake_http(f, "GET", path, NULL, NULL);
    json_t *j = json_loads(text, 0, NULL);
    if (!j)
        fail_msg("the fake's %s is not JSON: %s", path, text);
    free(text);
    return j;
}

static json_t *user_json(int64_t id, const char *name)
{
    return json_pack("{s:I, s:b, s:s}", "id", (json_int_t)id, "is_bot", id == BOT_ID, "first_name",
                     name);
}

static json_t *chat_json(int64_t chat, const char *type)
{
    if (!strcmp(type, "private"))
        return json_pack("{s:I, s:s, s:s}", "id", (json_int_t)chat, "type", type, "first_name",
                         "Ann");
    return json_pack("{s:I, s:s, s:s}", "id", (json_int_t)chat, "type", type, "title", "ops");
}

/* Queues an update with one message (extra members added from `fields`, taken); returns its
 * update_id. */
static int64_t queue_message(const struct fake_proc *f, int64_t chat, const char *type,
                             json_t *fields)
{
    static int message_id;
    json_t *msg = json_pack("{s:i, s:I, s:o, s:o}", "message_id", ++message_id, "date",
                            (json_int_t)time(NULL), "chat", chat_json(chat, type), "from",
                            user_json(4242, "Ann"));
    json_object_update(msg, fields);
    json_decref(fields);
    json_t *r = fake_ctl(f, "/_fake/update", json_pack("{s:o}", "message", msg));
    int64_t id = json_integer_value(json_object_get(r, "update_id"));
    json_decref(r);
    return id;
}

static int64_t queue_text(const struct fake_proc *f, int64_t chat, const char *type,
                          const char *text)
{
    return queue_message(f, chat, type, json_pack("{s:s}", "text", text));
}

/* Messages the fake accepted for chat whose plain text contains needle (NULL = any). */
static size_t count_sent(const struct fake_proc *f, int64_t chat, const char *needle)
{
    json_t *all = fake_get(f, "/_fake/sent"), *m;
    size_t n = 0, i;
    json_array_foreach(json_object_get(all, "messages"), i, m)
    {
        const char *plain = json_string_value(json_object_get(m, "plain"));
        if (json_integer_value(json_object_get(m, "chat_id")) == chat &&
            (!needle || (plain && strstr(plain, needle))))
            n++;
    }
    json_decref(all);
    return n;
}

static void wait_sent(const struct fake_proc *f, int64_t chat, const char *needle, size_t n)
{
    int64_t deadline = test_now_ms() + WAIT_MS;
    size_t got;
    while ((got = count_sent(f, chat, needle)) < n) {
        if (test_now_ms() > deadline)
            fail_msg("chat %lld got %zu messages with \"%s\" (expected %zu)", (long long)chat, got,
                     needle ? needle : "", n);
        test_sleep_ms(20);
    }
}

/* The last accepted message to chat (caller frees), or NULL. */
static char *last_sent(const struct fake_proc *f, int64_t chat, const char *member)
{
    json_t *all = fake_get(f, "/_fake/sent"), *m;
    char *out = NULL;
    size_t i;
    json_array_foreach(json_object_get(all, "messages"), i, m)
    {
        if (json_integer_value(json_object_get(m, "chat_id")) == chat) {
            free(out);
            out = dhaf_xstrdup(json_string_value(json_object_get(m, member)));
        }
    }
    json_decref(all);
    return out;
}

/* ---- an in-memory dhaf_kv_store ------------------------------------------------------------- */

struct mem_store {
    pthread_mutex_t lock;
    char **keys, **vals;
    size_t n, cap;
};

static long ms_find(const struct mem_store *m, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i], key))
            return (long)i;
    return -1;
}

static int ms_get(void *ud, const char *key, char **value, struct dhaf_err *err)
{
    struct mem_store *m = ud;
    (void)err;
    pthread_mutex_lock(&m->lock);
    long i = ms_find(m, key);
    *value = i >= 0 ? dhaf_xstrdup(m->vals[i]) : NULL;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int ms_put(void *ud, const char *key, const char *value, struct dhaf_err *err)
{
    struct mem_store *m = ud;
    (void)err;
    pthread_mutex_lock(&m->lock);
    long i = ms_find(m, key);
    if (i >= 0) {
        free(m->vals[i]);
        m->vals[i] = dhaf_xstrdup(value);
    } else {
        DHAF_GROW(m->keys, m->n + 1, m->cap);
        m->vals = dhaf_xreallocarray(m->vals, m->cap, sizeof(*m->vals));
        m->keys[m->n] = dhaf_xstrdup(key);
        m->vals[m->n++] = dhaf_xstrdup(value);
    }
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int ms_del(void *ud, const char *key, struct dhaf_err *err)
{
    struct mem_store *m = ud;
    (void)err;
    pthread_mutex_lock(&m->lock);
    long i = ms_find(m, key);
    if (i >= 0) {
        free(m->keys[i]);
        free(m->vals[i]);
        m->keys[i] = m->keys[m->n - 1];
        m->vals[i] = m->vals[m->n - 1];
        m->n--;
    }
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int ms_list(void *ud, const char *prefix, char ***keys, char ***values, size_t *n,
                   struct dhaf_err *err)
{
    struct mem_store *m = ud;
    (void)err;
    pthread_mutex_lock(&m->lock);
    *keys = dhaf_xcalloc(m->n + 1, sizeof(char *));
    *values = dhaf_xcalloc(m->n + 1, sizeof(char *));
    *n = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (strncmp(m->keys[i], prefix, strlen(prefix)) != 0)
            continue;
        (*keys)[*n] = dhaf_xstrdup(m->keys[i]);
        (*values)[(*n)++] = dhaf_xstrdup(m->vals[i]);
    }
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* The value of key (caller frees), or NULL. */
static char *ms_value(struct mem_store *m, const char *key)
{
    char *v = NULL;
    ms_get(m, key, &v, NULL);
    return v;
}

static bool ms_has(struct mem_store *m, const char *key)
{
    char *v = ms_value(m, key);
    free(v);
    return v != NULL;
}

static void ms_release(struct mem_store *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->keys[i]);
        free(m->vals[i]);
    }
    free(m->keys);
    free(m->vals);
    pthread_mutex_destroy(&m->lock);
}

/* ---- one test's world: the fake, the store, the notifier, the captured log ----------------- */

struct world {
    struct fake_proc f;
    struct mem_store ms;
    struct dhaf_kv_store store;
    struct tg_config conf;
    struct dhaf_provider_ctx ctx;
    char url[64];
    void *st;
    struct test_stderr log; /* what the notifier logs */
};

static int setup(void **state)
{
    static int seq;
    struct world *w = dhaf_xcalloc(1, sizeof(*w));
    /* Everything the notifier logs goes to a file that teardown searches for secrets. */
    char path[64];
    snprintf(path, sizeof(path), "/tmp/dhaf-test-tg-%d-%d.log", (int)getpid(), ++seq);
    assert_int_equal(test_stderr_begin(&w->log, path), 0);
    dhaf_log_setup(DHAF_LOG_DEBUG, DHAF_LOG_TEXT);

    pthread_mutex_init(&w->ms.lock, NULL);
    w->store = (struct dhaf_kv_store){&w->ms, ms_get, ms_put, ms_del, ms_list};
    fake_start(&w->f);
    snprintf(w->url, sizeof(w->url), "http://127.0.0.1:%d/", w->f.port);
    w->conf = (struct tg_config){.token = TOKEN, .join_code = JOIN, .api_url = w->url};
    w->ctx = (struct dhaf_provider_ctx){
        .node = "n1", .cluster = "c1.prod", .instance = "tg-test", .store = &w->store};
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    if (w->st)
        dhaf_notifier_tg.destroy(w->st);
    fake_proc_stop(&w->f);
    ms_release(&w->ms);
    char *log = test_stderr_end(&w->log);
    fputs(log, stderr); /* for the ctest log */
    bool leaked = strstr(log, TOKEN) || strstr(log, "AAEdhafTEST") || strstr(log, JOIN);
    free(log);
    free(w);
    if (leaked) {
        fprintf(stderr, "a secret appears in the log above\n");
        return -1;
    }
    return 0;
}

static void tg_open(struct world *w)
{
    struct dhaf_err err = {0};
    int rc = dhaf_notifier_tg.init(&w->conf, &w->ctx, &w->st, &err);
    if (rc != 0)
        fail_msg("init failed: %d %s", rc, err.msg);
    assert_non_null(w->st);
}

static void tg_close(struct world *w)
{
    dhaf_notifier_tg.destroy(w->st);
    w->st = NULL;
}

/* A chat joins with the right code; returns the update id of its /start. */
static int64_t subscribe(struct world *w, int64_t chat, const char *type)
{
    char key[48];
    int64_t id = queue_text(&w->f, chat, type,
                            strcmp(type, "private") ? "/start@dhafbot " JOIN : "/start " JOIN);
    wait_sent(&w->f, chat, "join code is correct", 1);
    snprintf(key, sizeof(key), "subs/%lld", (long long)chat);
    char *v = ms_value(&w->ms, key);
    assert_non_null(v);
    assert_string_equal(v, type);
    free(v);
    return id;
}

static void wait_store(struct world *w, const char *key, bool present)
{
    int64_t deadline = test_now_ms() + WAIT_MS;
    while (ms_has(&w->ms, key) != present) {
        if (test_now_ms() > deadline)
            fail_msg("store key %s is still %s", key, present ? "absent" : "present");
        test_sleep_ms(20);
    }
}

static int notify(struct world *w, const struct dhaf_event_view *ev, struct dhaf_err *err)
{
    memset(err, 0, sizeof(*err));
    int rc = dhaf_notifier_tg.notify(w->st, ev, err);
    assert_no_secret(err->msg);
    return rc;
}

/* The getUpdates calls the fake saw (caller decrefs the array it returns). */
static json_t *polls(const struct fake_proc *f, json_int_t *in_flight)
{
    json_t *all = fake_get(f, "/_fake/polls");
    json_t *p = json_incref(json_object_get(all, "polls"));
    if (in_flight)
        *in_flight = json_integer_value(json_object_get(all, "in_flight"));
    json_decref(all);
    return p;
}

/* Waits until the fake holds a long poll with index >= from; returns that poll's index. */
static size_t wait_held_poll(const struct fake_proc *f, size_t from)
{
    int64_t deadline = test_now_ms() + WAIT_MS;
    for (;;) {
        json_t *p = polls(f, NULL);
        for (size_t i = from; i < json_array_size(p); i++) {
            if (json_is_null(json_object_get(json_array_get(p, i), "status"))) {
                json_decref(p);
                return i;
            }
        }
        json_decref(p);
        if (test_now_ms() > deadline)
            fail_msg("no long poll held by the fake");
        test_sleep_ms(20);
    }
}

/* ---- init ---------------------------------------------------------------------------------- */

static void test_init_wrong_token(void **state)
{
    struct world *w = *state;
    struct dhaf_err err = {0};
    w->conf.token = WRONG_TOKEN;
    int rc = dhaf_notifier_tg.init(&w->conf, &w->ctx, &w->st, &err);
    assert_int_equal(rc, DHAF_EAUTH);
    assert_null(w->st);
    assert_no_secret(err.msg);
    assert_contains(err.msg, "HTTP 401");
    assert_contains(err.msg, "Unauthorized");
    assert_contains(err.msg, "bot<redacted>/getMe");
    assert_contains(err.msg, "token is wrong or revoked");

    /* The right token works, and the bot then polls with long polling for both update types. */
    w->conf.token = TOKEN;
    tg_open(w);
    size_t i = wait_held_poll(&w->f, 0);
    json_t *p = polls(&w->f, NULL), *first = json_array_get(p, i);
    assert_int_equal(json_integer_value(json_object_get(first, "timeout")), 25);
    json_t *allowed = json_object_get(first, "allowed_updates");
    assert_int_equal(json_array_size(allowed), 2);
    assert_string_equal(json_string_value(json_array_get(allowed, 0)), "message");
    assert_string_equal(json_string_value(json_array_get(allowed, 1)), "my_chat_member");
    json_decref(p);
}

/* Telegram out of reach at init is not fatal: the poller asks getMe later. */
static void test_init_unreachable(void **state)
{
    struct world *w = *state;
    struct dhaf_err err = {0};
    int port = test_free_port("127.0.0.1"); /* nothing listens there */
    assert_true(port > 0);
    snprintf(w->url, sizeof(w->url), "http://127.0.0.1:%d", port);
    int rc = dhaf_notifier_tg.init(&w->conf, &w->ctx, &w->st, &err);
    assert_int_equal(rc, 0);
    assert_no_secret(err.msg);
    int64_t t0 = test_now_ms();
    tg_close(w);
    assert_true(test_now_ms() - t0 < 3000);
}

/* ---- chats joining and leaving -------------------------------------------------------------- */

static void test_join_flow(void **state)
{
    struct world *w = *state;
    tg_open(w);

    /* The right code subscribes a private chat. */
    subscribe(w, 111, "private");
    /* Again: already subscribed. */
    queue_text(&w->f, 111, "private", "/start " JOIN);
    wait_sent(&w->f, 111, "already subscribed", 1);

    /* A wrong code is refused and nothing is stored. */
    queue_text(&w->f, 222, "private", "/start not-the-code");
    wait_sent(&w->f, 222, "join code is incorrect", 1);
    assert_false(ms_has(&w->ms, "subs/222"));
    /* /start alone: the usage. */
    queue_text(&w->f, 222, "private", "/start");
    wait_sent(&w->f, 222, "/start <join-code>", 2);
    assert_false(ms_has(&w->ms, "subs/222"));
    /* Other text in a private chat: a short help. */
    queue_text(&w->f, 222, "private", "hello bot");
    wait_sent(&w->f, 222, "I don't understand you", 1);

    /* /stop unsubscribes and confirms; a second /stop says so. */
    queue_text(&w->f, 111, "private", "/stop");
    wait_sent(&w->f, 111, "Unsubscribed", 1);
    assert_false(ms_has(&w->ms, "subs/111"));
    queue_text(&w->f, 111, "private", "/stop");
    wait_sent(&w->f, 111, "not subscribed", 1);

    /* Groups: /start@dhafbot <code>; chatter and commands for other bots get no answer. */
    subscribe(w, -100, "group");
    queue_text(&w->f, -100, "group", "good morning everyone");
    queue_text(&w->f, -100, "group", "/start@otherbot " JOIN);
    queue_text(&w->f, -100, "group", "/stop@DhafBot");
    wait_sent(&w->f, -100, "Unsubscribed", 1);
    assert_int_equal(count_sent(&w->f, -100, NULL), 2); /* the confirmation and the /stop */
    assert_false(ms_has(&w->ms, "subs/-100"));
    /* A supergroup joins with a plain /start <code> too. */
    queue_text(&w->f, -1001234, "supergroup", "/start " JOIN);
    wait_sent(&w->f, -1001234, "join code is correct", 1);
    wait_store(w, "subs/-1001234", true);
    char *type = ms_value(&w->ms, "subs/-1001234");
    assert_string_equal(type, "supergroup");
    free(type);
}

static void test_removed_from_group(void **state)
{
    struct world *w = *state;
    tg_open(w);
    subscribe(w, -100, "group");
    subscribe(w, -200, "group");
    subscribe(w, -300, "group");
    subscribe(w, -400, "group");

    /* my_chat_member: the bot's status became "left". */
    json_t *bot = user_json(BOT_ID, "dhaf");
    json_t *mcm = json_pack("{s:o, s:o, s:I, s:{s:O, s:s}, s:{s:O, s:s}}", "chat",
                            chat_json(-100, "group"), "from", user_json(4242, "Ann"), "date",
                            (json_int_t)time(NULL), "old_chat_member", "user", bot, "status",
                            "member", "new_chat_member", "user", bot, "status", "left");
    json_decref(fake_ctl(&w->f, "/_fake/update", json_pack("{s:o}", "my_chat_member", mcm)));
    /* Someone else leaving a group changes nothing; the bot leaving does. */
    queue_message(&w->f, -300, "group",
                  json_pack("{s:o}", "left_chat_member", user_json(777, "Bob")));
    queue_message(&w->f, -200, "group", json_pack("{s:O}", "left_chat_member", bot));
    /* A group upgraded to a supergroup: the subscription moves to the new id. */
    queue_message(&w->f, -400, "group",
                  json_pack("{s:I}", "migrate_to_chat_id", (json_int_t)-1000400));
    json_decref(bot);

    wait_store(w, "subs/-100", false);
    wait_store(w, "subs/-200", false);
    wait_store(w, "subs/-1000400", true);
    wait_store(w, "subs/-400", false);
    assert_true(ms_has(&w->ms, "subs/-300"));
    char *type = ms_value(&w->ms, "subs/-1000400");
    assert_string_equal(type, "supergroup");
    free(type);

    /* Events now reach the supergroup, and the group that stayed. */
    struct dhaf_err err;
    struct dhaf_event_view ev = {.seq = 5,
                                 .kind = "node-down",
                                 .level = "warning",
                                 .node = "n2",
                                 .message = "dhaf node n2 is DOWN"};
    assert_int_equal(notify(w, &ev, &err), 0);
    assert_int_equal(count_sent(&w->f, -1000400, "Node n2 is DOWN"), 1);
    assert_int_equal(count_sent(&w->f, -300, "Node n2 is DOWN"), 1);
    assert_int_equal(count_sent(&w->f, -100, "Node n2 is DOWN"), 0);
}

/* ---- notify -----------------------------------------------------------------------------------
 */

static void test_notify_markdown(void **state)
{
    struct world *w = *state;
    struct dhaf_err err;
    tg_open(w);
    subscribe(w, 111, "private");

    const char *reasons[] = {"timeout (no answer in 5 s)", "http-code [500] {x} | y"};
    struct dhaf_event_view ev = {
        .seq = 1,
        .kind = "failover",
        .level = "warning",
        .cluster = "c1.prod",
        .service = "web-1",
        .from = "ep-1 (primary).",
        .to = "ep_2*[x]",
        .message = "failover of web-1 done in 12 ms; #1 > {a|b} ~ `c` = d + e! C:\\tmp",
        .at_ms = 1700000000000LL,
    };
    assert_int_equal(notify(w, &ev, &err), 0);
    char *plain = last_sent(&w->f, 111, "plain"), *raw = last_sent(&w->f, 111, "text");
    assert_contains(plain, "WARNING:\n");
    assert_contains(plain, "Entry point switched from ep-1 (primary). to ep_2*[x] in service web-1 "
                           "(failover).");
    assert_contains(plain, ev.message);
    assert_contains(plain, "Cluster: c1.prod");
    assert_contains(plain, "Time (UTC): 2023-11-14 22:13:20");
    assert_contains(plain, "dhaf notifier tg-test");
    assert_true(strncmp(raw, "*WARNING*:\n", 11) == 0);
    assert_contains(raw, "*ep\\-1 \\(primary\\)\\.*");
    assert_contains(raw, "C:\\\\tmp");
    assert_contains(raw, "_dhaf notifier tg\\-test_");
    free(plain);
    free(raw);

    /* Every kind and level renders into text Telegram parses. */
    struct {
        struct dhaf_event_view ev;
        const char *expect;
    } cases[] = {
        {{.kind = "switchover",
          .level = "info",
          .service = "s_1",
          .from = "a.b",
          .to = "c-d",
          .message = "switchover of s_1"},
         "Entry point switched from a.b to c-d in service s_1 (switchover)."},
        {{.kind = "switching", .level = "info", .service = "s", .to = "e!p", .message = "m"},
         "Entry point switched to e!p in service s (switching)."},
        {{.kind = "ep-down",
          .level = "warning",
          .service = "s",
          .from = "ep.1",
          .reasons = reasons,
          .n_reasons = 2,
          .message = "entry point ep.1 of s is DOWN (2 of 3)"},
         "Reasons: timeout (no answer in 5 s); http-code [500] {x} | y"},
        {{.kind = "ep-up", .level = "info", .service = "s", .from = "ep.1", .message = "up"},
         "Entry point ep.1 of service s is UP."},
        {{.kind = "service-down", .level = "critical", .service = "web.prod", .message = "x"},
         "CRITICAL:\nService web.prod is DOWN: no entry point is healthy."},
        {{.kind = "service-up", .level = "info", .service = "web.prod", .message = "x"},
         "INFO:\nService web.prod is UP again."},
        {{.kind = "new-leader", .level = "info", .node = "node-2", .message = "x"},
         "Node node-2 is now the LEADER of cluster c1.prod."},
        {{.kind = "node-up", .level = "info", .node = "n(3)", .message = "x"}, "Node n(3) is UP."},
        {{.kind = "switchover-purged",
          .level = "info",
          .service = "s",
          .to = "ep=2",
          .message = "switchover request to ep=2 of s purged: a failover took precedence"},
         "The switchover request to ep=2 in service s was purged."},
        {{.kind = "switch-failed",
          .level = "warning",
          .service = "s",
          .message = "failover of s to ep-2 failed (will retry): HTTP 500 [x] > y"},
         "failover of s to ep-2 failed (will retry): HTTP 500 [x] > y"},
        {{.kind = "leader-lost", .level = "weird", .node = "n1", .message = "*_~`|#+-=.!\\"},
         "WEIRD:\n*_~`|#+-=.!\\"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cases[i].ev.seq = 100 + i;
        cases[i].ev.at_ms = 1700000000000LL;
        cases[i].ev.cluster = "c1.prod";
        int rc = notify(w, &cases[i].ev, &err);
        if (rc != 0)
            fail_msg("case %zu (%s): %d %s", i, cases[i].ev.kind, rc, err.msg);
        plain = last_sent(&w->f, 111, "plain");
        if (!strstr(plain, cases[i].expect))
            fail_msg("case %zu (%s): \"%s\" lacks \"%s\"", i, cases[i].ev.kind, plain,
                     cases[i].expect);
        free(plain);
    }
    /* Text too long for one message is cut, not refused. */
    char *big = dhaf_xmalloc(8001);
    memset(big, '.', 8000);
    big[8000] = '\0';
    struct dhaf_event_view huge = {.seq = 999, .kind = "x", .level = "info", .message = big};
    assert_int_equal(notify(w, &huge, &err), 0);
    free(big);
    /* No subscriber: nothing to do. */
    queue_text(&w->f, 111, "private", "/stop");
    wait_sent(&w->f, 111, "Unsubscribed", 1);
    assert_int_equal(notify(w, &ev, &err), 0);
}

static void test_notify_removes_gone_chats(void **state)
{
    struct world *w = *state;
    struct dhaf_err err;
    /* A subscriber from the store that Telegram does not know (chat not found). */
    ms_put(&w->ms, "subs/999", "private", NULL);
    tg_open(w);
    subscribe(w, 111, "private");
    subscribe(w, 222, "private");
    subscribe(w, -300, "group");
    json_decref(fake_ctl(&w->f, "/_fake/block", json_pack("{s:i}", "chat_id", 222)));
    json_decref(fake_ctl(&w->f, "/_fake/block", json_pack("{s:i}", "chat_id", -300)));

    struct dhaf_event_view ev = {.seq = 3,
                                 .kind = "service-up",
                                 .level = "info",
                                 .service = "web",
                                 .message = "service web is UP again"};
    assert_int_equal(notify(w, &ev, &err), 0);
    assert_int_equal(count_sent(&w->f, 111, "Service web is UP again."), 1);
    assert_false(ms_has(&w->ms, "subs/222"));
    assert_false(ms_has(&w->ms, "subs/-300"));
    assert_false(ms_has(&w->ms, "subs/999"));
    assert_true(ms_has(&w->ms, "subs/111"));

    /* The next event goes to the one chat left only. */
    json_t *before = fake_get(&w->f, "/_fake/sent");
    size_t attempts = json_array_size(json_object_get(before, "attempts"));
    json_decref(before);
    ev.seq = 4;
    assert_int_equal(notify(w, &ev, &err), 0);
    json_t *after = fake_get(&w->f, "/_fake/sent");
    assert_int_equal(json_array_size(json_object_get(after, "attempts")), attempts + 1);
    json_decref(after);

    /* A group upgraded to a supergroup while nobody saw the service message. */
    subscribe(w, -500, "group");
    json_decref(fake_ctl(&w->f, "/_fake/migrate",
                         json_pack("{s:i, s:I}", "chat_id", -500, "to", (json_int_t)-1000500)));
    ev.seq = 5;
    assert_int_equal(notify(w, &ev, &err), 0);
    assert_int_equal(count_sent(&w->f, -1000500, "Service web is UP again."), 1);
    assert_true(ms_has(&w->ms, "subs/-1000500"));
    assert_false(ms_has(&w->ms, "subs/-500"));
}

static void test_notify_rate_limited(void **state)
{
    struct world *w = *state;
    struct dhaf_err err;
    tg_open(w);
    subscribe(w, 111, "private");
    json_decref(
        fake_ctl(&w->f, "/_fake/ratelimit",
                 json_pack("{s:i, s:i, s:i}", "chat_id", 111, "retry_after", 1, "count", 1)));
    struct dhaf_event_view ev = {.seq = 9,
                                 .kind = "ep-up",
                                 .level = "info",
                                 .service = "web",
                                 .from = "ep-2",
                                 .message = "up"};
    int64_t t0 = test_now_ms();
    assert_int_equal(notify(w, &ev, &err), 0);
    assert_true(test_now_ms() - t0 >= 1000);
    assert_int_equal(count_sent(&w->f, 111, "Entry point ep-2"), 1);

    /* The fake's clock: the second attempt came at least retry_after after the 429. */
    json_t *sent = fake_get(&w->f, "/_fake/sent"), *a;
    double t429 = -1, tok = -1;
    size_t i;
    json_array_foreach(json_object_get(sent, "attempts"), i, a)
    {
        if (json_integer_value(json_object_get(a, "chat_id")) != 111)
            continue;
        json_int_t st = json_integer_value(json_object_get(a, "status"));
        if (st == 429)
            t429 = json_real_value(json_object_get(a, "t"));
        else if (st == 200 && t429 >= 0 && tok < 0)
            tok = json_real_value(json_object_get(a, "t"));
    }
    json_decref(sent);
    assert_true(t429 >= 0 && tok >= 0);
    if (tok - t429 < 1.0)
        fail_msg("retried %.3f s after the 429 (retry_after 1 s)", tok - t429);

    /* A retry_after longer than one notification may wait: a retry later, not a long block. */
    json_decref(
        fake_ctl(&w->f, "/_fake/ratelimit",
                 json_pack("{s:i, s:i, s:i}", "chat_id", 111, "retry_after", 120, "count", 1)));
    ev.seq = 10;
    t0 = test_now_ms();
    assert_int_equal(notify(w, &ev, &err), DHAF_EUNAVAILABLE);
    assert_true(test_now_ms() - t0 < 5000);
    assert_contains(err.msg, "HTTP 429");
    assert_int_equal(notify(w, &ev, &err), 0);
}

/* A transient failure for one chat: the event is retried, and the chats it already reached do
 * not get it twice. */
static void test_notify_retry_no_duplicates(void **state)
{
    struct world *w = *state;
    struct dhaf_err err;
    tg_open(w);
    subscribe(w, 111, "private");
    subscribe(w, 222, "private");
    json_decref(fake_ctl(&w->f, "/_fake/fail",
                         json_pack("{s:s, s:i, s:i, s:i}", "method", "sendMessage", "status", 502,
                                   "count", 1, "chat_id", 222)));
    struct dhaf_event_view ev = {
        .seq = 7, .kind = "new-leader", .level = "info", .node = "n3", .message = "n3 leads"};
    assert_int_equal(notify(w, &ev, &err), DHAF_EUNAVAILABLE);
    assert_contains(err.msg, "1 of 2 chats");
    assert_contains(err.msg, "HTTP 502");
    assert_int_equal(count_sent(&w->f, 111, "Node n3"), 1);
    assert_int_equal(count_sent(&w->f, 222, "Node n3"), 0);

    assert_int_equal(notify(w, &ev, &err), 0);
    assert_int_equal(count_sent(&w->f, 111, "Node n3"), 1);
    assert_int_equal(count_sent(&w->f, 222, "Node n3"), 1);

    /* A dropped connection is transient too. */
    json_decref(
        fake_ctl(&w->f, "/_fake/fail",
                 json_pack("{s:s, s:b, s:i}", "method", "sendMessage", "drop", 1, "chat_id", 111)));
    ev.seq = 8;
    assert_int_equal(notify(w, &ev, &err), DHAF_EUNAVAILABLE);
    assert_int_equal(notify(w, &ev, &err), 0);
    assert_int_equal(count_sent(&w->f, 111, "Node n3"), 2);
    assert_int_equal(count_sent(&w->f, 222, "Node n3"), 2);

    /* A refusal no repeat can fix is logged and not retried. */
    json_decref(
        fake_ctl(&w->f, "/_fake/fail",
                 json_pack("{s:s, s:i, s:s, s:i}", "method", "sendMessage", "status", 400,
                           "description", "Bad Request: message is too long", "chat_id", 111)));
    ev.seq = 9;
    assert_int_equal(notify(w, &ev, &err), 0);
    assert_int_equal(count_sent(&w->f, 111, "Node n3"), 2);
    assert_int_equal(count_sent(&w->f, 222, "Node n3"), 3);
    assert_true(ms_has(&w->ms, "subs/111"));
}

/* ---- polling ----------------------------------------------------------------------------------
 */

static void test_offset_persisted(void **state)
{
    struct world *w = *state;
    char want[32];
    tg_open(w);
    int64_t id = subscribe(w, 111, "private");
    snprintf(want, sizeof(want), "%lld", (long long)id + 1);
    int64_t deadline = test_now_ms() + WAIT_MS;
    for (;;) {
        char *off = ms_value(&w->ms, "offset");
        bool ok = off && !strcmp(off, want);
        free(off);
        if (ok)
            break;
        if (test_now_ms() > deadline)
            fail_msg("the offset %s was not stored", want);
        test_sleep_ms(20);
    }
    /* Its next long poll is held (so it is counted below). */
    json_t *p = polls(&w->f, NULL);
    size_t i = json_array_size(p);
    json_decref(p);
    i = wait_held_poll(&w->f, i > 0 ? i - 1 : 0);
    p = polls(&w->f, NULL);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(p, i), "offset")), id + 1);
    json_decref(p);
    tg_close(w);

    /* A new instance (a new leader) starts from the stored offset: nothing is handled twice. */
    p = polls(&w->f, NULL);
    size_t before = json_array_size(p);
    json_decref(p);
    tg_open(w);
    i = wait_held_poll(&w->f, before);
    assert_int_equal(i, before); /* its first poll */
    p = polls(&w->f, NULL);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(p, i), "offset")), id + 1);
    json_decref(p);
    queue_text(&w->f, 111, "private", "/start " JOIN);
    wait_sent(&w->f, 111, "already subscribed", 1);
    assert_int_equal(count_sent(&w->f, 111, "join code is correct"), 1);
}

static void test_destroy_prompt(void **state)
{
    struct world *w = *state;
    tg_open(w);
    wait_held_poll(&w->f, 0);
    int64_t t0 = test_now_ms();
    tg_close(w);
    int64_t took = test_now_ms() - t0;
    if (took > 1000)
        fail_msg("destroy took %lld ms with a long poll in flight", (long long)took);

    /* Also while a reply to a chat is in flight (the fake holds it for 30 s). */
    json_decref(fake_ctl(
        &w->f, "/_fake/fail",
        json_pack("{s:s, s:i, s:i}", "method", "sendMessage", "delay", 30, "chat_id", 4444)));
    tg_open(w);
    queue_text(&w->f, 4444, "private", "hi");
    int64_t deadline = test_now_ms() + WAIT_MS;
    for (bool held = false; !held;) {
        json_t *sent = fake_get(&w->f, "/_fake/sent"), *a;
        size_t i;
        json_array_foreach(json_object_get(sent, "attempts"), i, a)
        {
            held |= json_integer_value(json_object_get(a, "chat_id")) == 4444 &&
                    json_is_true(json_object_get(a, "held"));
        }
        json_decref(sent);
        if (!held && test_now_ms() > deadline)
            fail_msg("the reply to chat 4444 never reached the fake");
        test_sleep_ms(20);
    }
    t0 = test_now_ms();
    tg_close(w);
    took = test_now_ms() - t0;
    if (took > 1000)
        fail_msg("destroy took %lld ms with a reply in flight", (long long)took);
}

static void test_conflict_backs_off(void **state)
{
    struct world *w = *state;
    tg_open(w);
    size_t held = wait_held_poll(&w->f, 0);
    /* A webhook takes the bot over: the held poll and the next ones get 409. */
    json_decref(fake_ctl(&w->f, "/_fake/webhook", json_pack("{s:s}", "url", "https://x.test/")));
    int64_t deadline = test_now_ms() + WAIT_MS;
    double conflict_t = -1;
    while (conflict_t < 0) {
        json_t *p = polls(&w->f, NULL), *c = json_array_get(p, held);
        if (json_integer_value(json_object_get(c, "status")) == 409)
            conflict_t = json_real_value(json_object_get(c, "done_t"));
        json_decref(p);
        if (conflict_t < 0 && test_now_ms() > deadline)
            fail_msg("the held poll did not end in 409");
        test_sleep_ms(20);
    }
    json_decref(fake_ctl(&w->f, "/_fake/webhook", json_pack("{s:s}", "url", "")));
    /* The next poll comes after the back-off, not at once. */
    size_t next = wait_held_poll(&w->f, held + 1);
    json_t *p = polls(&w->f, NULL);
    assert_int_equal(next, held + 1);
    double gap = json_real_value(json_object_get(json_array_get(p, next), "t")) - conflict_t;
    json_decref(p);
    if (gap < 4.9)
        fail_msg("polled again %.3f s after a 409 (expected a 5 s back-off)", gap);
}

int main(void)
{
    fake_script(script, sizeof(script), "DHAF_TEST_TG_FAKE", "telegram.py");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_wrong_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_unreachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_flow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removed_from_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_markdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_removes_gone_chats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_rate_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_retry_no_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offset_persisted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_prompt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_backs_off, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
