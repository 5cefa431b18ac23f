/* SPDX-License-Identifier: MIT */
/* Webhook notifier: config keys, the two body formats (dhaf's JSON and Slack/Mattermost's
 * {"text"}), the HMAC-SHA256 signature, and one POST per event through lib/http (libcurl, a
 * hard deadline, redirects not followed) with retries on transient failures. The URL and the
 * secret never appear in logs or errors: errors show the URL cut after its host. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/http.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "webhook.h"

#define WH(field) offsetof(struct webhook_config, field)

#define WH_BACKOFF_FIRST_MS 1000  /* before the second attempt; doubled for each further one */
#define WH_BACKOFF_MAX_MS   8000  /* the longest wait between two attempts (Retry-After too) */
#define WH_CALL_BUDGET_MS   60000 /* one notify call, every attempt and wait included */
#define WH_MAX_RESPONSE     (1024 * 1024)
#define WH_TEXT_MAX         2000 /* bytes of the message in a body */

static const char *const formats[] = {"json", "slack", "text", NULL};

/* An http:// or https:// URL with a host; the message never repeats the URL (Slack's and
 * Mattermost's carry their credential in the path). */
static int check_url(const char *v, char *why, size_t wl)
{
    size_t skip = strncasecmp(v, "https://", 8) == 0  ? 8
                  : strncasecmp(v, "http://", 7) == 0 ? 7
                                                      : 0;
    bool ok = skip && v[skip] && v[skip] != '/' && v[skip] != ':';
    for (const char *p = v; ok && *p; p++)
        ok = (unsigned char)*p > 0x20 && *p != 0x7f;
    if (!ok)
        snprintf(why, wl, "is not an http:// or https:// URL with a host (without spaces)");
    return ok ? 0 : -1;
}

/* clang-format off */
static const struct dhaf_cfgkey webhook_keys[] = {
    {"url", DHAF_CFG_SECRET, WH(url), true, NULL, 0, 0, NULL, check_url, NULL,
     "http:// or https:// URL events are POSTed to (also url-file or ${ENV}: a Slack or "
     "Mattermost URL is a credential). Redirects are not followed."},
    {"secret", DHAF_CFG_SECRET, WH(secret), false, NULL, 0, 0, NULL, NULL, NULL,
     "Key of the X-Dhaf-Signature HMAC-SHA256 header (also secret-file or ${ENV}); absent: "
     "unsigned."},
    {"format", DHAF_CFG_ENUM, WH(format), false, "json", 0, 0, formats, NULL, NULL,
     "json (dhaf's event object) or slack (alias text): {\"text\": ...} as Slack and "
     "Mattermost incoming webhooks take it."},
    {"timeout", DHAF_CFG_INT, WH(timeout), false, "10", 1, 60, NULL, NULL, NULL,
     "Seconds one request may take, connecting included."},
    {"retries", DHAF_CFG_INT, WH(retries), false, "3", 0, 10, NULL, NULL, NULL,
     "Further attempts after a failed one (no answer, HTTP 408, 425, 429 or 5xx), 1 s apart "
     "and doubling up to 8 s, within 60 s; then the event waits in the outbox and is tried "
     "again later."},
    {"ca-file", DHAF_CFG_PATH, WH(ca_file), false, NULL, 0, 0, NULL, NULL, NULL,
     "PEM CA bundle to verify an https:// receiver with (a private CA); absent: the system's "
     "CAs."},
    DHAF_KEY_END,
};
/* clang-format on */

struct wh_state {
    char *url;    /* secret */
    char *shown;  /* scheme://host[:port]/... for errors */
    char *secret; /* secret; NULL = unsigned */
    int format;
    int timeout_ms;
    int retries;
    char *ca_file;
    char *cluster;
    char *instance;
};

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Overwrites and frees a secret. */
static void wipe(char *s)
{
    if (!s)
        return;
    volatile char *p = s;
    while (*p)
        *p++ = '\0';
    free(s);
}

/* "https://hooks.slack.com/..." from the URL: scheme and host (user info dropped), no path
 * and no query: they may carry the credential. Caller frees. */
static char *shown_of(const char *url)
{
    const char *sep = strstr(url, "://");
    const char *host = sep ? sep + 3 : url;
    int scheme = sep ? (int)(sep - url) : 0;
    size_t hl = strcspn(host, "/?#");
    const char *at = memchr(host, '@', hl);
    if (at) {
        hl -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    return dhaf_xasprintf("%.*s://%.*s/...", scheme, url, (int)hl, host);
}

char *webhook_signature(const char *secret, long long timestamp, const char *body, size_t len,
                        char *buf, size_t buflen)
{
    char ts[32];
    int tl = snprintf(ts, sizeof(ts), "%lld.", timestamp);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    /* HMAC over "<timestamp>.<body>" in two updates: the body is never copied */
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t outl = 0;
    if (c && EVP_MAC_init(c, (const unsigned char *)secret, strlen(secret), params) &&
        EVP_MAC_update(c, (const unsigned char *)ts, (size_t)tl) &&
        EVP_MAC_update(c, (const unsigned char *)body, len) &&
        EVP_MAC_final(c, mac, &outl, sizeof(mac)))
        ml = (unsigned int)outl;
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(m);
    size_t o = (size_t)snprintf(buf, buflen, "sha256=");
    for (unsigned int i = 0; i < ml && o + 3 <= buflen; i++)
        o += (size_t)snprintf(buf + o, buflen - o, "%02x", mac[i]);
    return buf;
}

/* ---- bodies ---------------------------------------------------------------------------------- */

static void set_str(json_t *o, const char *key, const char *v)
{
    if (v && *v)
        json_object_set_new(o, key, json_string(v));
}

static void iso_time(int64_t at_ms, char *buf, size_t len)
{
    time_t t = at_ms > 0 ? (time_t)(at_ms / 1000) : (time_t)(dhaf_wall_ms() / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The message, cut at WH_TEXT_MAX bytes on a UTF-8 boundary (caller frees). */
static char *message_of(const struct dhaf_event_view *ev)
{
    const char *m = ev->message && *ev->message ? ev->message : (ev->kind ? ev->kind : "event");
    size_t n = strlen(m);
    if (n <= WH_TEXT_MAX)
        return dhaf_xstrdup(m);
    n = WH_TEXT_MAX;
    while (n && ((unsigned char)m[n] & 0xC0) == 0x80)
        n--;
    return dhaf_xasprintf("%.*s...", (int)n, m);
}

/* dhaf's own JSON: one object per event (docs/config.md, "Notifier webhook"). */
static char *json_body(const struct wh_state *st, const struct dhaf_event_view *ev)
{
    const char *cluster = ev->cluster ? ev->cluster : st->cluster;
    char when[32], id[160];
    iso_time(ev->at_ms, when, sizeof(when));
    snprintf(id, sizeof(id), "%s-%llu", cluster, (unsigned long long)ev->seq);
    char *msg = message_of(ev);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "seq", json_integer((json_int_t)ev->seq));
    set_str(o, "kind", ev->kind ? ev->kind : "event");
    set_str(o, "severity", ev->level ? ev->level : "info");
    set_str(o, "cluster", cluster);
    set_str(o, "service", ev->service);
    set_str(o, "node", ev->node);
    set_str(o, "from", ev->from);
    set_str(o, "to", ev->to);
    json_t *r = json_array();
    for (size_t i = 0; i < ev->n_reasons; i++)
        if (ev->reasons[i])
            json_array_append_new(r, json_string(ev->reasons[i]));
    json_object_set_new(o, "reasons", r);
    json_object_set_new(o, "message", json_string(msg));
    json_object_set_new(o, "time", json_string(when));
    json_object_set_new(o, "at_ms", json_integer(ev->at_ms));
    set_str(o, "notifier", st->instance);
    char *text = dhaf_json_dump(o);
    json_decref(o);
    free(msg);
    return text;
}

/* Slack's mrkdwn needs &, < and > escaped (they start links and mentions); caller frees. */
static char *slack_escape(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += *p == '&' ? 5 : (*p == '<' || *p == '>') ? 4 : 1;
    char *out = dhaf_xmalloc(n + 1), *o = out;
    for (const char *p = s; *p; p++) {
        const char *rep = *p == '&' ? "&amp;" : *p == '<' ? "&lt;" : *p == '>' ? "&gt;" : NULL;
        if (rep) {
            memcpy(o, rep, strlen(rep));
            o += strlen(rep);
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

/* {"text": "*WARNING* failover | c1 | web\n<message>\nReasons: ...\n<time> UTC"} */
static char *text_body(const struct wh_state *st, const struct dhaf_event_view *ev)
{
    char level[16] = "INFO", when[32];
    for (size_t i = 0; ev->level && ev->level[i] && i < sizeof(level) - 1; i++) {
        level[i] =
            (char)(ev->level[i] >= 'a' && ev->level[i] <= 'z' ? ev->level[i] - 32 : ev->level[i]);
        level[i + 1] = '\0';
    }
    iso_time(ev->at_ms, when, sizeof(when));
    char *msg = message_of(ev);
    char *reasons = dhaf_xstrdup("");
    for (size_t i = 0; i < ev->n_reasons && i < 8; i++) {
        char *next = dhaf_xasprintf("%s%s%.200s", reasons,
                                    i ? "; " : "\nReasons: ", ev->reasons[i] ? ev->reasons[i] : "");
        free(reasons);
        reasons = next;
    }
    char *raw = dhaf_xasprintf("*%s* %s | %s%s%s\n%s%s\n_%s, dhaf notifier %s_", level,
                               ev->kind ? ev->kind : "event",
                               ev->cluster ? ev->cluster : st->cluster, ev->service ? " | " : "",
                               ev->service ? ev->service : "", msg, reasons, when, st->instance);
    char *text = slack_escape(raw);
    json_t *o = json_object();
    json_object_set_new(o, "text", json_string(text));
    char *body = dhaf_json_dump(o);
    json_decref(o);
    free(raw);
    free(text);
    free(reasons);
    free(msg);
    return body;
}

/* ---- the instance ---------------------------------------------------------------------------- */

static void webhook_destroy(void *state)
{
    struct wh_state *st = state;
    if (!st)
        return;
    wipe(st->url);
    wipe(st->secret);
    free(st->shown);
    free(st->ca_file);
    free(st->cluster);
    free(st->instance);
    free(st);
}

static int webhook_init(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                        struct dhaf_err *err)
{
    const struct webhook_config *c = conf;
    char why[128];
    if (!c || !c->url || check_url(c->url, why, sizeof(why)) != 0)
        return dhaf_err_set(err, DHAF_EINVAL, "webhook: url is missing or malformed");
    if (c->format < WEBHOOK_JSON || c->format > WEBHOOK_TEXT)
        return dhaf_err_set(err, DHAF_EINVAL, "webhook: unknown format %d", c->format);
    struct wh_state *st = dhaf_xcalloc(1, sizeof(*st));
    st->url = dhaf_xstrdup(c->url);
    st->shown = shown_of(c->url);
    st->secret = c->secret && *c->secret ? dhaf_xstrdup(c->secret) : NULL;
    st->format = c->format;
    st->timeout_ms = (c->timeout > 0 ? c->timeout : 10) * 1000;
    st->retries = c->retries >= 0 ? c->retries : 0;
    st->ca_file = c->ca_file ? dhaf_xstrdup(c->ca_file) : NULL;
    st->cluster = dhaf_xstrdup(ctx && ctx->cluster ? ctx->cluster : "dhaf");
    st->instance = dhaf_xstrdup(ctx && ctx->instance ? ctx->instance : "webhook-anon");
    *state = st;
    return 0;
}

/* Transient answers: worth another attempt. */
static bool transient_status(long st)
{
    return st == 408 || st == 425 || st == 429 || st >= 500;
}

/* One POST of body. Returns 0 (2xx), DHAF_EUNAVAILABLE / DHAF_ETIMEOUT (transient: no answer,
 * 408, 425, 429, 5xx; *retry_after_ms from Retry-After or -1), or DHAF_EPROTO (refused: a
 * redirect or another 4xx). err names the notifier, the shown URL and the status. */
static int post_once(const struct wh_state *st, const struct dhaf_event_view *ev, const char *body,
                     int64_t *retry_after_ms, struct dhaf_err *err)
{
    char ts_h[64], sig_h[128], ev_h[96], id_h[200], sig[80];
    long long ts = (long long)(dhaf_wall_ms() / 1000);
    snprintf(ts_h, sizeof(ts_h), "X-Dhaf-Timestamp: %lld", ts);
    snprintf(ev_h, sizeof(ev_h), "X-Dhaf-Event: %.64s", ev->kind ? ev->kind : "event");
    snprintf(id_h, sizeof(id_h), "X-Dhaf-Delivery: %.120s-%llu",
             ev->cluster ? ev->cluster : st->cluster, (unsigned long long)ev->seq);
    const char *headers[8] = {"Content-Type: application/json", ts_h, ev_h, id_h};
    size_t nh = 4;
    if (st->secret) {
        webhook_signature(st->secret, ts, body, strlen(body), sig, sizeof(sig));
        snprintf(sig_h, sizeof(sig_h), "X-Dhaf-Signature: %s", sig);
        headers[nh++] = sig_h;
    }
    headers[nh] = NULL;
    struct dhaf_http_req req = {.method = "POST",
                                .url = st->url,
                                .shown_url = st->shown,
                                .headers = headers,
                                .body = body,
                                .body_len = strlen(body),
                                .timeout_ms = st->timeout_ms,
                                .ca_file = st->ca_file,
                                .max_response = WH_MAX_RESPONSE};
    struct dhaf_http_resp resp = {0};
    struct dhaf_err herr;
    *retry_after_ms = -1;
    int rc = dhaf_http_do(&req, &resp, &herr);
    if (rc == DHAF_ETOOBIG) /* not a webhook receiver's answer: trying again would not help */
        return dhaf_err_set(err, DHAF_EPROTO, "webhook %s: %s", st->instance, herr.msg);
    if (rc != 0) {
        return dhaf_err_set(err, rc == DHAF_ETIMEOUT ? DHAF_ETIMEOUT : DHAF_EUNAVAILABLE,
                            "webhook %s: %s", st->instance, herr.msg);
    }
    long status = resp.status;
    char text[160];
    dhaf_http_safe_text(text, sizeof(text), resp.body ? resp.body : "");
    if (resp.retry_after >= 0)
        *retry_after_ms = resp.retry_after * 1000;
    dhaf_http_resp_release(&resp);
    if (status >= 200 && status < 300)
        return 0;
    if (status >= 300 && status < 400) {
        dhaf_err_set(err, DHAF_EPROTO,
                     "webhook %s: POST %s: HTTP %ld, a redirect (not followed: set url to the "
                     "final address)",
                     st->instance, st->shown, status);
        if (err)
            err->status = (int)status;
        return DHAF_EPROTO;
    }
    rc = transient_status(status) ? DHAF_EUNAVAILABLE : DHAF_EPROTO;
    dhaf_err_set(err, rc, "webhook %s: POST %s: HTTP %ld%s%s%s%s", st->instance, st->shown, status,
                 text[0] ? " \"" : "", text, text[0] ? "\"" : "",
                 rc == DHAF_EPROTO ? " (refused: the event is not sent again)" : "");
    if (err)
        err->status = (int)status;
    return rc;
}

static int webhook_notify(void *state, const struct dhaf_event_view *ev, struct dhaf_err *err)
{
    struct wh_state *st = state;
    if (!st || !ev)
        return dhaf_err_set(err, DHAF_EINVAL, "webhook: no instance or no event");
    char *body = st->format == WEBHOOK_JSON ? json_body(st, ev) : text_body(st, ev);
    int64_t start = dhaf_mono_ms();
    int rc = 0;
    for (int attempt = 1;; attempt++) {
        int64_t retry_after = -1;
        rc = post_once(st, ev, body, &retry_after, err);
        if (rc == 0 || rc == DHAF_EPROTO || attempt > st->retries)
            break;
        int64_t wait = dhaf_backoff_ms(attempt, WH_BACKOFF_FIRST_MS, WH_BACKOFF_MAX_MS);
        if (retry_after > wait)
            wait = retry_after < WH_BACKOFF_MAX_MS ? retry_after : WH_BACKOFF_MAX_MS;
        if (dhaf_mono_ms() - start + wait + st->timeout_ms > WH_CALL_BUDGET_MS)
            break;
        DHAF_LOG(DHAF_LOG_DEBUG, "event=webhook-retry notifier=%s attempt=%d wait_ms=%lld",
                 st->instance, attempt, (long long)wait);
        sleep_ms(wait);
    }
    if (rc == 0)
        DHAF_LOG(DHAF_LOG_DEBUG, "event=webhook-sent notifier=%s seq=%llu kind=%s", st->instance,
                 (unsigned long long)ev->seq, ev->kind ? ev->kind : "?");
    free(body);
    return rc;
}

const struct dhaf_provider dhaf_notifier_webhook = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_NOTIFIER,
    .type = "webhook",
    .summary = "HTTP POST of every event: dhaf's JSON signed with HMAC-SHA256, or Slack and "
               "Mattermost's {\"text\"}.",
    .keys = webhook_keys,
    .config_size = sizeof(struct webhook_config),
    .init = webhook_init,
    .destroy = webhook_destroy,
    .notify = webhook_notify,
};
