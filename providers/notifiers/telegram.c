/* SPDX-License-Identifier: MIT */
/* Telegram notifier: a bot that chats join with /start <join-code> and that posts every event to
 * each subscriber in MarkdownV2. Long polling runs on the leader only (a thread from init to
 * destroy); subscribers and the update offset live in the instance's store, so a new leader
 * neither loses nor replays them. The bot token only ever appears inside request URLs. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/http.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "replies.h"
#include "telegram.h"

#define TG(field) offsetof(struct tg_config, field)

/* Bot tokens look like 123456789:AAE...: digits, a colon, then [A-Za-z0-9_-]. The message
 * never repeats the token. */
static int check_token(const char *v, char *why, size_t wl)
{
    const char *p = v;
    while (isdigit((unsigned char)*p))
        p++;
    bool ok = p > v && *p == ':' && p[1];
    for (p = ok ? p + 1 : p; ok && *p; p++)
        ok = isalnum((unsigned char)*p) || *p == '_' || *p == '-';
    if (!ok) {
        snprintf(why, wl,
                 "is not a Telegram bot token (expected digits:letters, as @BotFather "
                 "gives it)");
        return -1;
    }
    return 0;
}

/* clang-format off */
static const struct dhaf_cfgkey tg_keys[] = {
    {"token", DHAF_CFG_SECRET, TG(token), true, NULL, 0, 0, NULL, check_token, NULL,
     "Bot API token from @BotFather (also token-file or ${ENV})."},
    {"join-code", DHAF_CFG_SECRET, TG(join_code), true, NULL, 0, 0, NULL, NULL, NULL,
     "Code a chat sends as /start <join-code> to subscribe."},
    {"api-url", DHAF_CFG_URL, TG(api_url), false, "https://api.telegram.org", 0, 0, NULL, NULL,
     NULL, "Base URL of the Telegram Bot API (for proxies and tests)."},
    DHAF_KEY_END,
};
/* clang-format on */

#define TG_POLL_TIMEOUT_S     25    /* getUpdates long-poll seconds */
#define TG_POLL_SLACK_MS      10000 /* the HTTP deadline of a poll is its timeout plus this */
#define TG_REQ_TIMEOUT_MS     10000 /* getMe, sendMessage */
#define TG_CONFLICT_WAIT_MS   5000  /* after a 409: another poller or a webhook has the bot */
#define TG_BACKOFF_FIRST_MS   1000  /* after a failed poll; doubles up to the max */
#define TG_BACKOFF_MAX_MS     30000
#define TG_RETRY_AFTER_CAP_MS 10000 /* longest 429 wait for one message */
#define TG_SEND_ATTEMPTS      3     /* per chat and notify call */
#define TG_NOTIFY_BUDGET_MS   30000 /* one notify call, every chat: the leader waits for it */
#define TG_TEXT_MAX           1000  /* bytes of one piece of event text in a message */
#define TG_REMEMBERED_EVENTS  16    /* events whose reached chats are remembered for retries */
#define TG_MAX_RESPONSE       (1024 * 1024)

/* The 18 characters MarkdownV2 reserves outside entities; the backslash escapes them (and
 * itself). */
static const char md_special[] = "_*[]()~`>#+-=|{}.!\\";

struct tg_sub {
    int64_t chat;
    char type[16]; /* "private", "group", "supergroup" */
};

/* The chats one event already reached: a retried notify skips them. */
struct tg_reached {
    bool used;
    uint64_t seq;
    uint64_t stamp; /* for reuse of the oldest slot */
    int64_t *chats;
    size_t n, cap;
};

struct tg_state {
    const struct dhaf_kv_store *store; /* borrowed from ctx for the instance's life */
    char *instance;                    /* notifier name: logs and message footers */
    char *cluster;
    char *token;     /* secret: only inside request URLs */
    char *join_code; /* secret: never logged */
    char *base;      /* api-url without a trailing '/' */
    int64_t bot_id;  /* from getMe; 0 until it answered (the poller asks again) */
    char *bot_username;

    pthread_mutex_t subs_lock; /* subs and the store's subs/ keys */
    struct tg_sub *subs;
    size_t n_subs, cap_subs;

    int64_t offset; /* next update id; the poller's after init */

    pthread_mutex_t ctl_lock; /* stop, wake */
    pthread_cond_t wake;
    atomic_bool stop;
    struct dhaf_cancel http_cancel; /* cuts the poller's long poll short */
    pthread_t poller;
    bool poller_started;

    struct tg_reached reached[TG_REMEMBERED_EVENTS]; /* the delivery thread's only */
    uint64_t reached_clock;
};

/* struct tg_reply (what a Bot API call came back with) is in replies.h. */

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Compares secrets without an early exit, so timing tells nothing about the join code. */
static bool secret_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = la != lb;
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[lb ? i % lb : 0]);
    return diff == 0;
}

/* ---- text --------------------------------------------------------------------------------- */

struct tg_buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct tg_buf *b, const char *s, size_t n)
{
    DHAF_GROW(b->p, b->len + n + 1, b->cap);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_raw(struct tg_buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* Appends s as MarkdownV2 plain text: a backslash before every reserved character and before
 * the backslash itself, control characters as spaces, at most TG_TEXT_MAX bytes (cut on a
 * UTF-8 character boundary). */
static void buf_esc(struct tg_buf *b, const char *s)
{
    size_t n = 0;
    for (; *s; s++, n++) {
        unsigned char c = (unsigned char)*s;
        if (n >= TG_TEXT_MAX && (c & 0xC0) != 0x80) {
            buf_raw(b, "\xE2\x80\xA6"); /* an ellipsis */
            return;
        }
        char out[2] = {'\\', (char)c};
        if (c < 0x20 || c == 0x7f)
            buf_add(b, " ", 1);
        else if (strchr(md_special, (int)c))
            buf_add(b, out, 2);
        else
            buf_add(b, out + 1, 1);
    }
}

/*
 * Appends fmt, which is MarkdownV2 markup, with its conversions filled in from const char *
 * arguments: %s as escaped text, %b as escaped text in bold. A NULL argument shows as "?".
 */
static void buf_md(struct tg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (const char *p = fmt; *p; p++) {
        if (p[0] != '%' || (p[1] != 's' && p[1] != 'b')) {
            buf_add(b, p, 1);
            continue;
        }
        const char *arg = va_arg(ap, const char *);
        if (p[1] == 'b')
            buf_raw(b, "*");
        buf_esc(b, arg ? arg : "?");
        if (p[1] == 'b')
            buf_raw(b, "*");
        p++;
    }
    va_end(ap);
}

static bool is_switch(const char *kind)
{
    return !strcmp(kind, "failover") || !strcmp(kind, "switchover") || !strcmp(kind, "switching");
}

/* The message for one event (caller frees): level, a sentence for the event's kind, the
 * cluster, the UTC time and the notifier's name. */
static char *render(const struct tg_state *tg, const struct dhaf_event_view *ev)
{
    struct tg_buf b = {0};
    const char *kind = ev->kind ? ev->kind : "event";
    const char *msg = ev->message && *ev->message ? ev->message : NULL;
    char level[32];
    size_t i;

    for (i = 0; ev->level && ev->level[i] && i < sizeof(level) - 1; i++)
        level[i] = (char)toupper((unsigned char)ev->level[i]);
    level[i] = '\0';
    buf_md(&b, "%b:\n", i ? level : "INFO");

    bool details = true;
    if (is_switch(kind)) {
        if (ev->from)
            buf_md(&b, "Entry point switched from %b to %b in service %b \\(%s\\)\\.", ev->from,
                   ev->to, ev->service, kind);
        else
            buf_md(&b, "Entry point switched to %b in service %b \\(%s\\)\\.", ev->to, ev->service,
                   kind);
    } else if (!strcmp(kind, "ep-down")) {
        buf_md(&b, "Entry point %b of service %b is *DOWN*\\.", ev->from, ev->service);
        for (i = 0; i < ev->n_reasons; i++)
            buf_md(&b, i ? "; %s" : "\nReasons: %s", ev->reasons[i]);
    } else if (!strcmp(kind, "ep-up")) {
        buf_md(&b, "Entry point %b of service %b is *UP*\\.", ev->from, ev->service);
    } else if (!strcmp(kind, "service-down")) {
        buf_md(&b, "Service %b is *DOWN*: no entry point is healthy\\.", ev->service);
        details = false;
    } else if (!strcmp(kind, "service-up")) {
        buf_md(&b, "Service %b is *UP* again\\.", ev->service);
        details = false;
    } else if (!strcmp(kind, "new-leader")) {
        buf_md(&b, "Node %b is now the *LEADER* of cluster %b\\.", ev->node,
               ev->cluster ? ev->cluster : tg->cluster);
        details = false;
    } else if (!strcmp(kind, "node-up") || !strcmp(kind, "node-down")) {
        buf_md(&b, kind[5] == 'u' ? "Node %b is *UP*\\." : "Node %b is *DOWN*\\.", ev->node);
        details = false;
    } else if (!strcmp(kind, "switchover-purged")) {
        if (ev->to)
            buf_md(&b, "The switchover request to %b in service %b was purged\\.", ev->to,
                   ev->service);
        else
            buf_md(&b, "The switchover request in service %b was purged\\.", ev->service);
    } else {
        buf_md(&b, "%s", msg ? msg : kind);
        if (ev->service)
            buf_md(&b, "\nService: %b", ev->service);
        details = false;
    }
    if (details && msg)
        buf_md(&b, "\n%s", msg);

    char when[64];
    struct tm tm;
    time_t t = ev->at_ms > 0 ? (time_t)(ev->at_ms / 1000) : time(NULL);
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
    if (ev->cluster || tg->cluster)
        buf_md(&b, "\n\nCluster: %b", ev->cluster ? ev->cluster : tg->cluster);
    buf_md(&b, "\nTime \\(UTC\\): %b", when);
    buf_md(&b, "\n\n_dhaf notifier %s_", tg->instance);
    return b.p;
}

/* ---- one Bot API call ------------------------------------------------------------------------ */

static void tg_reply_release(struct tg_reply *rep)
{
    json_decref(rep->root);
    rep->root = NULL;
    rep->result = NULL;
}

/* The reply half of tg_call (declared in replies.h). */
int tg_parse_reply(const struct dhaf_http_resp *resp, const char *shown, struct tg_reply *rep,
                   struct dhaf_err *err)
{
    struct dhaf_err jerr = {0};
    json_t *root = NULL;
    int rc;

    rep->status = resp->status;
    if (dhaf_json_parse_object(resp->body, resp->body_len, "reply", &root, &jerr) != 0) {
        rc = dhaf_err_set(err, resp->status >= 500 ? DHAF_EUNAVAILABLE : DHAF_EPROTO,
                          "POST %s: HTTP %ld: not a Bot API reply (%s)", shown, resp->status,
                          jerr.msg);
        goto out;
    }
    if (json_is_true(json_object_get(root, "ok")) && resp->status >= 200 && resp->status < 300) {
        rep->root = root;
        rep->result = json_object_get(root, "result");
        root = NULL;
        rc = 0;
        goto out;
    }
    if (dhaf_json_int(root, "error_code", &rep->code) != 0)
        rep->code = resp->status;
    dhaf_http_safe_text(rep->desc, sizeof(rep->desc), dhaf_json_str(root, "description"));
    const json_t *par = json_object_get(root, "parameters");
    dhaf_json_int(par, "retry_after", &rep->retry_after);
    dhaf_json_int(par, "migrate_to_chat_id", &rep->migrate_to);
    long st = resp->status;
    const char *hint = "";
    if (st == 401 || st == 404) {
        rc = DHAF_EAUTH;
        hint = " (the bot token is wrong or revoked)";
    } else if (st == 409) {
        rc = DHAF_ECONFLICT;
    } else if (st == 429 || st >= 500) {
        rc = DHAF_EUNAVAILABLE;
    } else {
        rc = DHAF_EPROTO;
    }
    rc = dhaf_err_set(err, rc, "POST %s: HTTP %ld: error %lld \"%s\"%s", shown, st,
                      (long long)rep->code, rep->desc, hint);
out:
    json_decref(root);
    return rc;
}

/*
 * Calls method with params (a JSON object, borrowed) within timeout_ms; cancellable (the
 * poller's calls) lets destroy cut it short with DHAF_ECANCELLED. Returns 0 with rep->result
 * (release rep), or an error in err (never NULL) with rep->status, code, desc, retry_after and
 * migrate_to set: DHAF_EAUTH for 401/404 (a wrong or revoked token), DHAF_ECONFLICT for 409,
 * DHAF_EUNAVAILABLE for 429 and 5xx, DHAF_EPROTO for other refusals, or the transport's code.
 * Errors name the method's URL with the token replaced by <redacted>.
 */
static int tg_call(struct tg_state *tg, const char *method, const json_t *params, int timeout_ms,
                   bool cancellable, struct tg_reply *rep, struct dhaf_err *err)
{
    char *url = dhaf_xasprintf("%s/bot%s/%s", tg->base, tg->token, method);
    char *shown = dhaf_xasprintf("%s/bot<redacted>/%s", tg->base, method);
    char *body = dhaf_json_dump(params);
    const char *headers[] = {"Content-Type: application/json", NULL};
    struct dhaf_http_resp resp = {0};
    int rc;

    memset(rep, 0, sizeof(*rep));
    rep->retry_after = -1;
    struct dhaf_http_req req = {.method = "POST",
                                .url = url,
                                .shown_url = shown,
                                .headers = headers,
                                .body = body,
                                .body_len = strlen(body),
                                .timeout_ms = timeout_ms,
                                .max_response = TG_MAX_RESPONSE,
                                .cancel = cancellable ? &tg->http_cancel : NULL};
    rc = dhaf_http_do(&req, &resp, err);
    if (rc == 0)
        rc = tg_parse_reply(&resp, shown, rep, err);
    if (rc != 0 && err)
        err->status = (int)rep->status;
    dhaf_http_resp_release(&resp);
    free(body);
    free(shown);
    free(url);
    return rc;
}

/* getMe: who the bot is (its id tells a left_chat_member about us from one about others). */
static int whoami(struct tg_state *tg, bool cancellable, struct dhaf_err *err)
{
    struct tg_reply rep;
    json_t *params = json_object();
    int rc = tg_call(tg, "getMe", params, TG_REQ_TIMEOUT_MS, cancellable, &rep, err);
    json_decref(params);
    if (rc != 0)
        return rc;
    int64_t id = 0;
    const char *user = dhaf_json_str(rep.result, "username");
    if (dhaf_json_int(rep.result, "id", &id) != 0 || id <= 0) {
        rc = dhaf_err_set(err, DHAF_EPROTO, "POST %s/bot<redacted>/getMe: no bot id in the reply",
                          tg->base);
    } else {
        free(tg->bot_username);
        tg->bot_username = user ? dhaf_xstrdup(user) : NULL;
        tg->bot_id = id;
    }
    tg_reply_release(&rep);
    return rc;
}

/* ---- subscribers ---------------------------------------------------------------------------- */

static void sub_key(char *buf, size_t len, int64_t chat)
{
    snprintf(buf, len, "subs/%lld", (long long)chat);
}

/* Index of chat in tg->subs, or -1. Call with subs_lock held. */
static long sub_find(const struct tg_state *tg, int64_t chat)
{
    for (size_t i = 0; i < tg->n_subs; i++)
        if (tg->subs[i].chat == chat)
            return (long)i;
    return -1;
}

static void sub_push(struct tg_state *tg, int64_t chat, const char *type)
{
    DHAF_GROW(tg->subs, tg->n_subs + 1, tg->cap_subs);
    struct tg_sub *s = &tg->subs[tg->n_subs++];
    s->chat = chat;
    snprintf(s->type, sizeof(s->type), "%s", type && *type ? type : "private");
}

static bool sub_has(struct tg_state *tg, int64_t chat)
{
    pthread_mutex_lock(&tg->subs_lock);
    bool has = sub_find(tg, chat) >= 0;
    pthread_mutex_unlock(&tg->subs_lock);
    return has;
}

/* Stores chat as a subscriber. Returns 0, DHAF_EEXISTS, or the store's error. */
static int sub_add(struct tg_state *tg, int64_t chat, const char *type, struct dhaf_err *err)
{
    char key[48];
    int rc = DHAF_EEXISTS;
    sub_key(key, sizeof(key), chat);
    pthread_mutex_lock(&tg->subs_lock);
    if (sub_find(tg, chat) < 0) {
        rc = tg->store->put(tg->store->ud, key, type, err);
        if (rc == 0)
            sub_push(tg, chat, type);
    }
    pthread_mutex_unlock(&tg->subs_lock);
    return rc;
}

/* Forgets chat (memory and store); why goes to the log. Returns whether it was subscribed. A
 * failed store delete is logged: the next leader meets the chat again and drops it then. */
static bool sub_remove(struct tg_state *tg, int64_t chat, const char *why)
{
    char key[48], q[DHAF_ERR_MSG_MAX];
    struct dhaf_err err = {0};
    sub_key(key, sizeof(key), chat);
    pthread_mutex_lock(&tg->subs_lock);
    long i = sub_find(tg, chat);
    if (i >= 0) {
        tg->subs[i] = tg->subs[--tg->n_subs];
        if (tg->store->del(tg->store->ud, key, &err) != 0)
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=tg-unsubscribe-not-saved notifier=%s chat=%lld reason=\"%s\"",
                     tg->instance, (long long)chat, dhaf_log_quote(q, sizeof(q), err.msg));
    }
    pthread_mutex_unlock(&tg->subs_lock);
    if (i >= 0)
        DHAF_LOG(DHAF_LOG_INFO, "event=tg-unsubscribed notifier=%s chat=%lld why=\"%s\"",
                 tg->instance, (long long)chat, dhaf_log_quote(q, sizeof(q), why));
    return i >= 0;
}

/* A group became a supergroup (a new chat id): the subscription moves along. */
static void sub_move(struct tg_state *tg, int64_t from, int64_t to)
{
    char kf[48], kt[48], q[DHAF_ERR_MSG_MAX];
    struct dhaf_err err = {0};
    bool moved = false;
    if (from == to || from == 0 || to == 0)
        return;
    sub_key(kf, sizeof(kf), from);
    sub_key(kt, sizeof(kt), to);
    pthread_mutex_lock(&tg->subs_lock);
    long i = sub_find(tg, from);
    if (i >= 0) {
        int rc = sub_find(tg, to) >= 0 ? 0 : tg->store->put(tg->store->ud, kt, "supergroup", &err);
        if (rc == 0 && tg->store->del(tg->store->ud, kf, &err) == 0) {
            moved = true;
        } else {
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=tg-migration-not-saved notifier=%s chat=%lld to=%lld reason=\"%s\"",
                     tg->instance, (long long)from, (long long)to,
                     dhaf_log_quote(q, sizeof(q), err.msg));
        }
        if (rc == 0) {
            tg->subs[i] = tg->subs[--tg->n_subs];
            if (sub_find(tg, to) < 0)
                sub_push(tg, to, "supergroup");
        }
    }
    pthread_mutex_unlock(&tg->subs_lock);
    if (moved)
        DHAF_LOG(DHAF_LOG_INFO, "event=tg-chat-migrated notifier=%s chat=%lld to=%lld",
                 tg->instance, (long long)from, (long long)to);
}

/* Loads the subscribers and the update offset from the store. */
static int load_store(struct tg_state *tg, struct dhaf_err *err)
{
    char *off = NULL, **keys = NULL, **values = NULL;
    size_t n = 0;
    int rc = tg->store->get(tg->store->ud, "offset", &off, err);
    if (rc != 0)
        return rc;
    if (off) {
        char *end = NULL;
        long long v = strtoll(off, &end, 10);
        if (end != off && *end == '\0' && v > 0)
            tg->offset = v;
        free(off);
    }
    rc = tg->store->list(tg->store->ud, "subs/", &keys, &values, &n, err);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const char *id = keys[i] + (strncmp(keys[i], "subs/", 5) == 0 ? 5 : 0);
        char *end = NULL;
        long long chat = strtoll(id, &end, 10);
        if (end != id && *end == '\0' && chat != 0)
            sub_push(tg, chat, values[i]);
        else
            DHAF_LOG(DHAF_LOG_WARN, "event=tg-bad-subscriber-key notifier=%s key=subs/...",
                     tg->instance);
        free(keys[i]);
        free(values[i]);
    }
    free(keys);
    free(values);
    return 0;
}

/* ---- the poller: updates from chats ------------------------------------------------------- */

/* Waits ms, or less when destroy begins; returns false when the poller must stop. */
static bool poller_nap(struct tg_state *tg, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&tg->ctl_lock);
    while (!atomic_load(&tg->stop) && pthread_cond_timedwait(&tg->wake, &tg->ctl_lock, &ts) == 0)
        ;
    pthread_mutex_unlock(&tg->ctl_lock);
    return !atomic_load(&tg->stop);
}

static json_t *send_params(int64_t chat, const char *md_text)
{
    return json_pack("{s:I, s:s, s:s}", "chat_id", (json_int_t)chat, "text", md_text, "parse_mode",
                     "MarkdownV2");
}

/* Whether a refused sendMessage means the chat is gone for good (blocked, kicked, deleted). */
static bool chat_gone(const struct tg_reply *rep)
{
    return rep->status == 403 || (rep->status == 400 && strstr(rep->desc, "chat not found"));
}

/* Replies plain text (escaped here) to a chat from the poller; one retry after a 429. */
static void say(struct tg_state *tg, int64_t chat, const char *plain)
{
    struct tg_buf b = {0};
    struct dhaf_err err = {0};
    struct tg_reply rep;
    char q[DHAF_ERR_MSG_MAX];
    buf_esc(&b, plain);
    json_t *params = send_params(chat, b.p);
    for (int attempt = 1; attempt <= 2; attempt++) {
        int rc = tg_call(tg, "sendMessage", params, TG_REQ_TIMEOUT_MS, true, &rep, &err);
        tg_reply_release(&rep);
        if (rc == 0 || rc == DHAF_ECANCELLED)
            break;
        if (rep.status == 429 && attempt == 1) {
            int64_t wait = rep.retry_after > 0 ? rep.retry_after * 1000 : 1000;
            if (poller_nap(tg, wait > TG_RETRY_AFTER_CAP_MS ? TG_RETRY_AFTER_CAP_MS : wait))
                continue;
            break;
        }
        if (chat_gone(&rep))
            sub_remove(tg, chat, "the chat refused the bot's reply");
        DHAF_LOG(DHAF_LOG_WARN, "event=tg-reply-failed notifier=%s chat=%lld reason=\"%s\"",
                 tg->instance, (long long)chat, dhaf_log_quote(q, sizeof(q), err.msg));
        break;
    }
    json_decref(params);
    free(b.p);
}

/* A text message: "/command[@bot] args" is split into cmd ("start") and args (trimmed).
 * Returns false for a command addressed to another bot. */
static bool parse_command(const struct tg_state *tg, const char *text, char *cmd, size_t cl,
                          char *args, size_t al)
{
    cmd[0] = args[0] = '\0';
    if (text[0] != '/') {
        snprintf(args, al, "%s", text);
        return true;
    }
    size_t n = strcspn(text + 1, " \t\r\n@");
    snprintf(cmd, cl, "%.*s", (int)n, text + 1);
    const char *p = text + 1 + n;
    if (*p == '@') {
        size_t ul = strcspn(p + 1, " \t\r\n");
        if (tg->bot_username &&
            (ul != strlen(tg->bot_username) || strncasecmp(p + 1, tg->bot_username, ul) != 0))
            return false;
        p += 1 + ul;
    }
    while (isspace((unsigned char)*p))
        p++;
    snprintf(args, al, "%s", p);
    for (size_t l = strlen(args); l > 0 && isspace((unsigned char)args[l - 1]); l--)
        args[l - 1] = '\0';
    return true;
}

static void on_start(struct tg_state *tg, int64_t chat, const char *type, const char *code)
{
    struct dhaf_err err = {0};
    char q[DHAF_ERR_MSG_MAX];
    if (sub_has(tg, chat)) {
        say(tg, chat, "This chat is already subscribed to dhaf notifications.");
        return;
    }
    if (!*code || strpbrk(code, " \t\r\n")) {
        say(tg, chat, "To subscribe this chat to dhaf notifications, send: /start <join-code>");
        return;
    }
    if (!secret_equal(code, tg->join_code)) {
        DHAF_LOG(DHAF_LOG_INFO, "event=tg-join-refused notifier=%s chat=%lld why=incorrect-code",
                 tg->instance, (long long)chat);
        say(tg, chat, "The join code is incorrect. Try again: /start <join-code>");
        return;
    }
    int rc = sub_add(tg, chat, type, &err);
    if (rc == 0) {
        DHAF_LOG(DHAF_LOG_INFO, "event=tg-subscribed notifier=%s chat=%lld type=%s", tg->instance,
                 (long long)chat, type);
        say(tg, chat,
            "The join code is correct. This chat will now receive dhaf notifications "
            "(/stop ends them).");
    } else if (rc == DHAF_EEXISTS) {
        say(tg, chat, "This chat is already subscribed to dhaf notifications.");
    } else {
        DHAF_LOG(DHAF_LOG_WARN, "event=tg-subscribe-not-saved notifier=%s chat=%lld reason=\"%s\"",
                 tg->instance, (long long)chat, dhaf_log_quote(q, sizeof(q), err.msg));
        say(tg, chat, "The subscription could not be saved right now. Please try again later.");
    }
}

static void on_text(struct tg_state *tg, int64_t chat, const char *type, const char *text)
{
    char cmd[33], args[512];
    bool group = strcmp(type, "private") != 0;
    if (!parse_command(tg, text, cmd, sizeof(cmd), args, sizeof(args)))
        return; /* a command for another bot in the group */
    if (!strcmp(cmd, "start")) {
        on_start(tg, chat, type, args);
    } else if (!strcmp(cmd, "stop")) {
        if (sub_remove(tg, chat, "/stop"))
            say(tg, chat,
                "Unsubscribed: this chat gets no more dhaf notifications "
                "(/start <join-code> subscribes it again).");
        else
            say(tg, chat, "This chat is not subscribed to dhaf notifications.");
    } else if (!group || !strcmp(cmd, "help")) {
        if (sub_has(tg, chat))
            say(tg, chat,
                "I don't understand you. This chat is subscribed to dhaf notifications; "
                "/stop ends them.");
        else
            say(tg, chat,
                "I don't understand you. To receive dhaf notifications here, send: "
                "/start <join-code>");
    }
    /* Other chatter in groups gets no answer. */
}

static bool removal_status(const char *status)
{
    return status && (!strcmp(status, "left") || !strcmp(status, "kicked"));
}

static void on_update(struct tg_state *tg, const json_t *u)
{
    const json_t *mcm = json_object_get(u, "my_chat_member");
    const json_t *msg = json_object_get(u, "message");
    int64_t chat = 0, other = 0;

    if (json_is_object(mcm)) {
        /* The bot's own membership changed: removed from a group, or blocked in private. */
        const json_t *nm = json_object_get(mcm, "new_chat_member");
        int64_t uid = 0;
        dhaf_json_int(json_object_get(nm, "user"), "id", &uid);
        if (dhaf_json_int(json_object_get(mcm, "chat"), "id", &chat) == 0 &&
            removal_status(dhaf_json_str(nm, "status")) && (!tg->bot_id || uid == tg->bot_id))
            sub_remove(tg, chat, "the bot was removed from the chat or blocked");
        return;
    }
    if (!json_is_object(msg) || dhaf_json_int(json_object_get(msg, "chat"), "id", &chat) != 0)
        return;
    const char *type = dhaf_json_str(json_object_get(msg, "chat"), "type");
    if (!type)
        type = "private";
    if (dhaf_json_int(msg, "migrate_to_chat_id", &other) == 0) {
        sub_move(tg, chat, other);
        return;
    }
    if (dhaf_json_int(msg, "migrate_from_chat_id", &other) == 0) {
        sub_move(tg, other, chat);
        return;
    }
    const json_t *left = json_object_get(msg, "left_chat_member");
    if (json_is_object(left)) {
        if (tg->bot_id && dhaf_json_int(left, "id", &other) == 0 && other == tg->bot_id)
            sub_remove(tg, chat, "the bot was removed from the group");
        return;
    }
    const char *text = dhaf_json_str(msg, "text");
    if (!text || json_is_true(json_object_get(json_object_get(msg, "from"), "is_bot")))
        return;
    if (strcmp(type, "channel") != 0)
        on_text(tg, chat, type, text);
}

/* Handles one getUpdates batch, then stores the next offset (max update_id + 1). */
static void on_batch(struct tg_state *tg, const json_t *updates)
{
    int64_t next = tg->offset;
    size_t i;
    const json_t *u;
    char buf[32], q[DHAF_ERR_MSG_MAX];
    struct dhaf_err err = {0};

    if (!json_is_array(updates)) {
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=tg-bad-updates notifier=%s reason=\"result is not an array\"",
                 tg->instance);
        return;
    }
    json_array_foreach(updates, i, u)
    {
        int64_t id;
        if (atomic_load(&tg->stop))
            break; /* the next leader goes on from the last update handled */
        if (dhaf_json_int(u, "update_id", &id) != 0)
            continue;
        if (id >= tg->offset)
            on_update(tg, u);
        if (id + 1 > next)
            next = id + 1;
    }
    if (next == tg->offset)
        return;
    tg->offset = next;
    snprintf(buf, sizeof(buf), "%lld", (long long)next);
    if (tg->store->put(tg->store->ud, "offset", buf, &err) != 0)
        DHAF_LOG(DHAF_LOG_WARN, "event=tg-offset-not-saved notifier=%s offset=%s reason=\"%s\"",
                 tg->instance, buf, dhaf_log_quote(q, sizeof(q), err.msg));
}

static void *poller_main(void *arg)
{
    struct tg_state *tg = arg;
    int64_t backoff = TG_BACKOFF_FIRST_MS;
    bool conflicted = false;
    char q[DHAF_ERR_MSG_MAX];

    while (!atomic_load(&tg->stop)) {
        struct dhaf_err err = {0};
        struct tg_reply rep = {0};
        int64_t wait;
        int rc;

        if (!tg->bot_id) {
            rc = whoami(tg, true, &err); /* init could not ask: Telegram was out of reach */
        } else {
            json_t *params = json_pack("{s:i, s:[s, s]}", "timeout", TG_POLL_TIMEOUT_S,
                                       "allowed_updates", "message", "my_chat_member");
            if (tg->offset > 0)
                json_object_set_new(params, "offset", json_integer(tg->offset));
            rc = tg_call(tg, "getUpdates", params, TG_POLL_TIMEOUT_S * 1000 + TG_POLL_SLACK_MS,
                         true, &rep, &err);
            json_decref(params);
            if (rc == 0)
                on_batch(tg, rep.result);
            tg_reply_release(&rep);
        }
        if (rc == 0) {
            backoff = TG_BACKOFF_FIRST_MS;
            conflicted = false;
            continue;
        }
        if (rc == DHAF_ECANCELLED || atomic_load(&tg->stop))
            break;
        if (rep.status == 409) {
            /* Another poller or a webhook: wait instead of fighting over the bot. */
            DHAF_LOG(conflicted ? DHAF_LOG_DEBUG : DHAF_LOG_WARN,
                     "event=tg-poll-conflict notifier=%s retry_ms=%d reason=\"%s\"", tg->instance,
                     TG_CONFLICT_WAIT_MS, dhaf_log_quote(q, sizeof(q), err.msg));
            conflicted = true;
            wait = TG_CONFLICT_WAIT_MS;
        } else {
            wait = backoff;
            if (rep.status == 429 && rep.retry_after > 0)
                wait = rep.retry_after * 1000;
            if (wait > TG_BACKOFF_MAX_MS)
                wait = TG_BACKOFF_MAX_MS;
            backoff = backoff * 2 > TG_BACKOFF_MAX_MS ? TG_BACKOFF_MAX_MS : backoff * 2;
            DHAF_LOG(DHAF_LOG_WARN, "event=tg-poll-failed notifier=%s retry_ms=%lld reason=\"%s\"",
                     tg->instance, (long long)wait, dhaf_log_quote(q, sizeof(q), err.msg));
        }
        if (!poller_nap(tg, wait))
            break;
    }
    return NULL;
}

/* ---- notify -----------------------------------------------------------------------------------
 */

/* The record of chats reached for event seq: found, or the oldest slot reused. */
static struct tg_reached *reached_for(struct tg_state *tg, uint64_t seq)
{
    struct tg_reached *r = NULL;
    for (size_t i = 0; i < TG_REMEMBERED_EVENTS; i++) {
        struct tg_reached *c = &tg->reached[i];
        if (c->used && c->seq == seq) {
            r = c;
            break;
        }
        if (!r || (r->used && (!c->used || c->stamp < r->stamp)))
            r = c;
    }
    if (!r->used || r->seq != seq) {
        r->used = true;
        r->seq = seq;
        r->n = 0;
    }
    r->stamp = ++tg->reached_clock;
    return r;
}

static bool reached_has(const struct tg_reached *r, int64_t chat)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->chats[i] == chat)
            return true;
    return false;
}

static void reached_add(struct tg_reached *r, int64_t chat)
{
    DHAF_GROW(r->chats, r->n + 1, r->cap);
    r->chats[r->n++] = chat;
}

enum tg_outcome {
    TG_SENT,    /* delivered */
    TG_GONE,    /* the chat is gone; the subscriber was removed */
    TG_REFUSED, /* a refusal a repeat cannot fix (logged) */
    TG_RETRY,   /* a transient failure: the event should be tried again */
    TG_AUTH,    /* the token no longer works */
};

/* Sends text to one chat within the notify budget: 429 waits retry_after (bounded), a group
 * upgraded to a supergroup is followed to its new id (*chat changes). */
static enum tg_outcome send_one(struct tg_state *tg, int64_t *chat, const char *text,
                                int64_t deadline, struct dhaf_err *err)
{
    for (int attempt = 1;; attempt++) {
        int64_t left = deadline - dhaf_mono_ms();
        if (left <= 0) {
            dhaf_err_set(err, DHAF_ETIMEOUT,
                         "sendMessage to chat %lld: no time left in this "
                         "notification (%d s)",
                         (long long)*chat, TG_NOTIFY_BUDGET_MS / 1000);
            return TG_RETRY;
        }
        struct tg_reply rep;
        json_t *params = send_params(*chat, text);
        int rc =
            tg_call(tg, "sendMessage", params,
                    (int)(left < TG_REQ_TIMEOUT_MS ? left : TG_REQ_TIMEOUT_MS), false, &rep, err);
        json_decref(params);
        tg_reply_release(&rep);
        if (rc == 0)
            return TG_SENT;
        if (rep.status == 429) {
            int64_t wait = rep.retry_after > 0 ? rep.retry_after * 1000 : 1000;
            if (attempt >= TG_SEND_ATTEMPTS || wait > TG_RETRY_AFTER_CAP_MS ||
                dhaf_mono_ms() + wait >= deadline)
                return TG_RETRY;
            DHAF_LOG(DHAF_LOG_INFO, "event=tg-rate-limited notifier=%s chat=%lld retry_ms=%lld",
                     tg->instance, (long long)*chat, (long long)wait);
            sleep_ms(wait);
            continue;
        }
        if (rep.status == 400 && rep.migrate_to != 0 && attempt < TG_SEND_ATTEMPTS) {
            sub_move(tg, *chat, rep.migrate_to);
            *chat = rep.migrate_to;
            continue;
        }
        if (chat_gone(&rep)) {
            sub_remove(tg, *chat, rep.desc);
            return TG_GONE;
        }
        if (rc == DHAF_EAUTH)
            return TG_AUTH;
        if (rep.status == 0 || rc == DHAF_EUNAVAILABLE)
            return TG_RETRY;
        return TG_REFUSED;
    }
}

static int tg_notify(void *state, const struct dhaf_event_view *ev, struct dhaf_err *err)
{
    struct tg_state *tg = state;
    char *text = render(tg, ev);
    struct tg_reached *r = reached_for(tg, ev->seq);
    struct dhaf_err e = {0}, last = {0};
    size_t n = 0, retry = 0, auth = 0;
    char q[DHAF_ERR_MSG_MAX];
    int rc = 0;

    pthread_mutex_lock(&tg->subs_lock);
    int64_t *chats = dhaf_xcalloc(tg->n_subs + 1, sizeof(*chats));
    for (size_t i = 0; i < tg->n_subs; i++)
        chats[n++] = tg->subs[i].chat;
    pthread_mutex_unlock(&tg->subs_lock);

    int64_t deadline = dhaf_mono_ms() + TG_NOTIFY_BUDGET_MS;
    for (size_t i = 0; i < n; i++) {
        int64_t chat = chats[i];
        if (reached_has(r, chat))
            continue;
        switch (send_one(tg, &chat, text, deadline, &e)) {
        case TG_SENT:
            reached_add(r, chat);
            break;
        case TG_GONE:
            break;
        case TG_REFUSED:
            DHAF_LOG(DHAF_LOG_ERROR, "event=tg-send-refused notifier=%s chat=%lld reason=\"%s\"",
                     tg->instance, (long long)chat, dhaf_log_quote(q, sizeof(q), e.msg));
            break;
        case TG_AUTH:
            auth++;
            last = e;
            break;
        case TG_RETRY:
            retry++;
            last = e;
            break;
        }
    }
    if (auth) {
        rc = dhaf_err_set(err, DHAF_EAUTH, "telegram: %s", last.msg);
    } else if (retry) {
        rc = dhaf_err_set(err, DHAF_EUNAVAILABLE,
                          "telegram: %zu of %zu chats not reached yet (retried later): %s", retry,
                          n, last.msg);
    } else {
        r->used = false; /* done: no retry will come */
        r->n = 0;
    }
    free(chats);
    free(text);
    return rc;
}

/* ---- lifecycle --------------------------------------------------------------------------------
 */

static void tg_destroy(void *state)
{
    struct tg_state *tg = state;
    if (!tg)
        return;
    pthread_mutex_lock(&tg->ctl_lock);
    atomic_store(&tg->stop, true);
    pthread_cond_broadcast(&tg->wake);
    pthread_mutex_unlock(&tg->ctl_lock);
    dhaf_cancel_fire(&tg->http_cancel);
    if (tg->poller_started)
        pthread_join(tg->poller, NULL);
    for (size_t i = 0; i < TG_REMEMBERED_EVENTS; i++)
        free(tg->reached[i].chats);
    pthread_mutex_destroy(&tg->subs_lock);
    pthread_mutex_destroy(&tg->ctl_lock);
    dhaf_cancel_destroy(&tg->http_cancel);
    pthread_cond_destroy(&tg->wake);
    free(tg->subs);
    free(tg->bot_username);
    free(tg->base);
    if (tg->token)
        explicit_bzero(tg->token, strlen(tg->token));
    if (tg->join_code)
        explicit_bzero(tg->join_code, strlen(tg->join_code));
    free(tg->token);
    free(tg->join_code);
    free(tg->instance);
    free(tg->cluster);
    free(tg);
}

static int tg_init(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                   struct dhaf_err *err)
{
    const struct tg_config *c = conf;
    struct dhaf_err e = {0};
    char q[DHAF_ERR_MSG_MAX];
    int rc;

    *state = NULL;
    if (!ctx || !ctx->store)
        return dhaf_err_set(err, DHAF_EINVAL, "telegram: no key-value store for the subscribers");
    if (!c->token || !c->join_code)
        return dhaf_err_set(err, DHAF_EINVAL, "telegram: token and join-code are required");

    struct tg_state *tg = dhaf_xcalloc(1, sizeof(*tg));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&tg->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&tg->subs_lock, NULL);
    pthread_mutex_init(&tg->ctl_lock, NULL);
    dhaf_cancel_init(&tg->http_cancel);
    atomic_init(&tg->stop, false);
    tg->store = ctx->store;
    tg->instance = dhaf_xstrdup(ctx->instance ? ctx->instance : "tg");
    tg->cluster = ctx->cluster ? dhaf_xstrdup(ctx->cluster) : NULL;
    tg->token = dhaf_xstrdup(c->token);
    tg->join_code = dhaf_xstrdup(c->join_code);
    tg->base = dhaf_xstrdup(c->api_url ? c->api_url : "https://api.telegram.org");
    for (size_t l = strlen(tg->base); l > 0 && tg->base[l - 1] == '/'; l--)
        tg->base[l - 1] = '\0';

    rc = whoami(tg, false, &e);
    if (rc == DHAF_EAUTH || rc == DHAF_EPROTO) {
        rc = dhaf_err_set(err, rc, "telegram: %s", e.msg);
        goto out;
    }
    if (rc != 0) /* out of reach for now: the poller asks again before it polls */
        DHAF_LOG(DHAF_LOG_WARN, "event=tg-getme-failed notifier=%s reason=\"%s\"", tg->instance,
                 dhaf_log_quote(q, sizeof(q), e.msg));
    rc = load_store(tg, &e);
    if (rc != 0) {
        rc = dhaf_err_set(err, rc, "telegram: cannot read the subscribers: %s", e.msg);
        goto out;
    }
    if (dhaf_thread_start(&tg->poller, false, poller_main, tg) != 0) {
        rc = dhaf_err_set(err, DHAF_EINTERNAL, "telegram: cannot start the polling thread");
        goto out;
    }
    tg->poller_started = true;
    DHAF_LOG(DHAF_LOG_INFO, "event=tg-ready notifier=%s bot=%s subscribers=%zu offset=%lld",
             tg->instance, tg->bot_username ? tg->bot_username : "?", tg->n_subs,
             (long long)tg->offset);
    *state = tg;
    return 0;
out:
    tg_destroy(tg);
    return rc;
}

const struct dhaf_provider dhaf_notifier_tg = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_NOTIFIER,
    .type = "tg",
    .summary = "Telegram messenger notifications from dhaf.",
    .keys = tg_keys,
    .config_size = sizeof(struct tg_config),
    .init = tg_init,
    .destroy = tg_destroy,
    .notify = tg_notify,
};
