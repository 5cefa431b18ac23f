/* SPDX-License-Identifier: MIT */
/* Cloudflare DNS switcher: config keys and the API v4 client that reads and points the
 * service's one A/AAAA record (zone lookup at init, no DNS change before the first switch). */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>

#include "cloudflare.h"
#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/http.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "fence.h"
#include "replies.h"
#include "dhaf/valid.h"

#define CF(field) offsetof(struct cf_config, field)

/* clang-format off */
static const struct dhaf_cfgkey cf_keys[] = {
    {"api-token", DHAF_CFG_SECRET, CF(api_token), true, NULL, 0, 0, NULL, NULL, NULL,
     "API token allowed to edit the zone's DNS records (also api-token-file or ${ENV})."},
    {"zone", DHAF_CFG_HOST, CF(zone), true, NULL, 0, 0, NULL, NULL, NULL,
     "Zone (domain) whose records dhaf manages, e.g. foo.com."},
    {"api-url", DHAF_CFG_URL, CF(api_url), false, "https://api.cloudflare.com/client/v4", 0, 0,
     NULL, NULL, NULL, "Base URL of the Cloudflare API v4 (for proxies and tests)."},
    DHAF_KEY_END,
};
/* clang-format on */

/* Budgets of one provider operation (init, current, switch_to): every request and every
 * wait between retries fit in CF_OP_DEADLINE_MS, so the leader is never held longer. */
#define CF_OP_DEADLINE_MS     15000
#define CF_REQ_TIMEOUT_MS     10000
#define CF_BACKOFF_FIRST_MS   500
#define CF_BACKOFF_MAX_MS     4000
#define CF_RETRY_AFTER_CAP_MS 10000
#define CF_PER_PAGE           100
#define CF_MAX_PAGES          50
#define CF_ID_MAX             64  /* Cloudflare ids are 32 hex digits; accept a little more */
#define CF_TEXT_MAX           160 /* of one API message quoted in an error */
#define CF_SWITCH_ROUNDS      3   /* find-and-write rounds of one switch_to */

/* One instance: one service's record in one zone. */
struct cf_state {
    struct dhaf_provider_ctx ctx; /* a copy; what it points to is borrowed */
    unsigned char (*addr)[16];    /* ctx.eps[i].ip parsed with inet_pton */
    int family;                   /* of every entry point */
    const char *rtype;            /* "A" or "AAAA" */
    char *base;                   /* api-url without a trailing '/' */
    char *auth;                   /* "Authorization: Bearer ..." (secret: never shown) */
    char *who;                    /* "X-Dhaf-Leader: <node> epoch <n>": an audit trail */
    char *zone;                   /* lower case, no trailing dot */
    char *domain;                 /* lower case, no trailing dot */
    char *zone_id;
    char *record_id;                /* of the record last seen or written; NULL when unknown */
    bool warned_proxied;            /* "not proxied" is logged once */
    int64_t deadline;               /* end of the operation in progress (monotonic ms) */
    const struct dhaf_fence *fence; /* of the operation in progress; NULL = none (init) */
};

/* struct cf_reply and enum cf_shape are in replies.h (the fuzz targets use them). */

/* Lower case copy without a trailing dot. Caller frees. */
static char *dns_name_norm(const char *s)
{
    char *n = dhaf_xstrdup(s);
    size_t len = strlen(n);
    if (len > 0 && n[len - 1] == '.')
        n[--len] = '\0';
    for (char *p = n; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return n;
}

/* Percent-encodes s for a query value (names are [A-Za-z0-9.-_]; this is belt and braces). */
static void url_escape(char *out, size_t outlen, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '.' || c == '-' || c == '_' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

/* A Cloudflare id: letters and digits only, so it is safe inside a URL path. */
static bool id_ok(const char *id)
{
    size_t n = 0;
    for (; id[n]; n++)
        if (!isalnum((unsigned char)id[n]))
            return false;
    return n > 0 && n <= CF_ID_MAX;
}

__attribute__((format(printf, 2, 3))) static void err_append(struct dhaf_err *err, const char *fmt,
                                                             ...)
{
    size_t l = strlen(err->msg);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + l, sizeof(err->msg) - l, fmt, ap);
    va_end(ap);
}

static const char *svc_name(const struct cf_state *st)
{
    return st->ctx.service ? st->ctx.service : "-";
}

/* ---- one API call ------------------------------------------------------------------------ */

/* Describes a refusal from the envelope's errors[0] (and its error_chain) into out. */
static void describe_errors(const json_t *root, char *out, size_t len, int64_t *code)
{
    const json_t *errs = json_object_get(root, "errors");
    const json_t *e0 = json_is_array(errs) ? json_array_get(errs, 0) : NULL;
    char t[CF_TEXT_MAX];
    *code = 0;
    if (!json_is_object(e0)) {
        snprintf(out, len, "no error detail in the reply");
        return;
    }
    dhaf_json_int(e0, "code", code);
    size_t o = (size_t)snprintf(out, len, "Cloudflare error %lld \"%s\"", (long long)*code,
                                dhaf_http_safe_text(t, sizeof(t), dhaf_json_str(e0, "message")));
    const json_t *chain = json_object_get(e0, "error_chain");
    size_t n = json_is_array(chain) ? json_array_size(chain) : 0;
    for (size_t i = 0; i < n && i < 3 && o < len; i++) {
        const json_t *c = json_array_get(chain, i);
        int64_t cc = 0;
        if (json_is_object(c))
            dhaf_json_int(c, "code", &cc);
        o += (size_t)snprintf(
            out + o, len - o, "%s%lld \"%s\"", i ? ", " : " (error_chain: ", (long long)cc,
            dhaf_http_safe_text(t, sizeof(t),
                                json_is_object(c) ? dhaf_json_str(c, "message") : NULL));
    }
    if (n > 0 && o < len)
        snprintf(out + o, len - o, ")");
}

/* Judges one HTTP reply: OK only for HTTP 2xx with success:true and a result of the expected
 * shape. Returns 0 with rep->root and rep->result set, or an error in err (never NULL). */
int cf_judge(const char *method, const char *url, const struct dhaf_http_resp *resp,
             enum cf_shape shape, struct cf_reply *rep, struct dhaf_err *err)
{
    json_t *root = NULL;
    struct dhaf_err jerr = {0};
    char detail[DHAF_ERR_MSG_MAX];
    bool http_ok = resp->status >= 200 && resp->status < 300;
    int rc;

    rep->cf_code = 0;
    if (dhaf_json_parse_object(resp->body, resp->body_len, "body", &root, &jerr) != 0) {
        rc = dhaf_err_set(err, DHAF_EPROTO,
                          "cloudflare: %s %s: HTTP %ld: not a Cloudflare API reply (%s)", method,
                          url, resp->status, jerr.msg);
        goto out;
    }
    const json_t *success = json_object_get(root, "success");
    const json_t *errors = json_object_get(root, "errors");
    if (!json_is_boolean(success) || (errors && !json_is_array(errors))) {
        rc = dhaf_err_set(err, DHAF_EPROTO,
                          "cloudflare: %s %s: HTTP %ld: not a Cloudflare API reply (no boolean "
                          "\"success\", or \"errors\" is not an array)",
                          method, url, resp->status);
        goto out;
    }
    if (!http_ok || !json_is_true(success)) {
        describe_errors(root, detail, sizeof(detail), &rep->cf_code);
        rc = resp->status == 401 || resp->status == 403 ? DHAF_EAUTH : DHAF_EPROTO;
        rc = dhaf_err_set(err, rc, "cloudflare: %s %s: HTTP %ld: %s%s", method, url, resp->status,
                          detail, http_ok ? " (success is false)" : "");
        goto out;
    }
    json_t *result = json_object_get(root, "result");
    if (shape == CF_ARRAY ? !json_is_array(result) : !json_is_object(result)) {
        rc = dhaf_err_set(err, DHAF_EPROTO,
                          "cloudflare: %s %s: HTTP %ld: \"result\" is not a JSON %s", method, url,
                          resp->status, shape == CF_ARRAY ? "array" : "object");
        goto out;
    }
    rep->root = root;
    rep->result = result;
    root = NULL;
    rc = 0;
out:
    if (rc != 0)
        err->status = (int)resp->status;
    json_decref(root);
    return rc;
}

/*
 * One API call with retries inside the operation's deadline: 429 waits Retry-After (capped;
 * a wait past the deadline fails at once); 5xx and transport errors back off (0.5 s, 1 s,
 * 2 s, ...) when retry_unsure says a repeat cannot do harm (GET, PATCH; not POST, whose first
 * attempt may have created the record). Other replies are final. path starts with '/'; body
 * (borrowed, may be NULL) is sent as JSON. Returns 0 with rep filled (caller releases
 * rep->root with json_decref), or an error in err (never NULL) with rep->status, cf_code and
 * unsure set.
 */
static int cf_call(struct cf_state *st, const char *method, const char *path, const json_t *body,
                   enum cf_shape shape, bool retry_unsure, struct cf_reply *rep,
                   struct dhaf_err *err)
{
    char *url = dhaf_xasprintf("%s%s", st->base, path);
    char *text = body ? dhaf_json_dump(body) : NULL;
    const char *headers[] = {st->auth, st->who, "Accept: application/json",
                             body ? "Content-Type: application/json" : NULL, NULL};
    bool write = strcmp(method, "GET") != 0;
    int64_t backoff = CF_BACKOFF_FIRST_MS;
    int rc;

    memset(rep, 0, sizeof(*rep));
    for (int attempt = 1;; attempt++) {
        int64_t left = st->deadline - dhaf_mono_ms();
        if (left <= 0) {
            rc = dhaf_err_set(err, DHAF_ETIMEOUT,
                              "cloudflare: %s %s: no time left (%d s per operation)", method, url,
                              CF_OP_DEADLINE_MS / 1000);
            break;
        }
        struct dhaf_http_req req = {
            .method = method,
            .url = url,
            .headers = headers,
            .body = text,
            .body_len = text ? strlen(text) : 0,
            .timeout_ms = (int)(left < CF_REQ_TIMEOUT_MS ? left : CF_REQ_TIMEOUT_MS),
        };
        struct dhaf_http_resp resp;
        const char *why = "";
        int64_t wait = -1;

        rep->cf_code = 0;
        /* fenced: sent only while the lease lasts, cut at its end or when the term closes */
        rc = sw_fenced_http(st->fence, &req, &resp, err);
        if (rc == DHAF_EFENCED) {
            rep->status = 0;
            rep->unsure = write;
            break;
        }
        if (rc != 0) {
            rep->status = 0;
            rep->unsure = write; /* the request may have arrived */
            if ((rc == DHAF_ETIMEOUT || rc == DHAF_EUNAVAILABLE) && retry_unsure) {
                wait = backoff;
                why = "transport";
            }
        } else {
            rep->status = resp.status;
            rc = cf_judge(method, url, &resp, shape, rep, err);
            if (resp.status == 429) {
                /* Not processed: repeating is safe for every method. */
                rc = err->code = DHAF_EUNAVAILABLE;
                wait = resp.retry_after > 0 ? resp.retry_after * 1000 : backoff;
                why = "rate-limited";
                if (dhaf_mono_ms() + wait >= st->deadline) {
                    err_append(err,
                               " (rate limited: Retry-After %ld s is past this call's deadline)",
                               resp.retry_after);
                    wait = -1;
                } else if (wait > CF_RETRY_AFTER_CAP_MS) {
                    wait = CF_RETRY_AFTER_CAP_MS;
                }
            } else if (resp.status >= 500) {
                rc = err->code = DHAF_EUNAVAILABLE;
                rep->unsure = write;
                wait = retry_unsure ? backoff : -1;
                why = "server-error";
            }
            dhaf_http_resp_release(&resp);
        }
        if (rc == 0 || wait < 0)
            break;
        if (dhaf_mono_ms() + wait >= st->deadline) {
            err_append(err, " (gave up after %d attempts: %d s per operation)", attempt,
                       CF_OP_DEADLINE_MS / 1000);
            break;
        }
        DHAF_LOG(DHAF_LOG_INFO,
                 "event=cf-retry service=%s method=%s path=%s reason=%s status=%ld wait_ms=%lld "
                 "attempt=%d",
                 svc_name(st), method, path, why, rep->status, (long long)wait, attempt);
        sw_fence_sleep(st->fence, wait);
        if (backoff < CF_BACKOFF_MAX_MS)
            backoff *= 2;
    }
    free(url);
    free(text);
    return rc;
}

/* ---- the zone and the record ------------------------------------------------------------- */

/* One record of the service's name and type as the list showed it. */
struct cf_record {
    char id[CF_ID_MAX + 1];
    char content[64]; /* cut when longer: an address is shorter */
    bool proxied;
    int ep; /* index of the entry point it points at; -1 for none */
};

/* Index of the entry point whose address equals content (parsed, not compared as text). */
static int ep_of(const struct cf_state *st, const char *content)
{
    unsigned char a[16];
    if (inet_pton(st->family, content, a) != 1)
        return -1;
    for (size_t i = 0; i < st->ctx.n_eps; i++)
        if (memcmp(a, st->addr[i], st->family == AF_INET ? 4 : 16) == 0)
            return (int)i;
    return -1;
}

/* True when a DNS name from the API is norm (lower case, no trailing dot). */
static bool same_name(const char *name, const char *norm)
{
    size_t n = strlen(name), m = strlen(norm);
    if (n > 0 && name[n - 1] == '.')
        n--;
    return n == m && strncasecmp(name, norm, n) == 0;
}

/* Finds the zone by name: exactly one, active and not paused. Sets st->zone_id. */
static int find_zone(struct cf_state *st, struct dhaf_err *err)
{
    char q[512], t[CF_TEXT_MAX];
    struct cf_reply r;
    const json_t *zone = NULL, *item;
    size_t i, n = 0;
    int rc;

    url_escape(q, sizeof(q), st->zone);
    char *path = dhaf_xasprintf("/zones?name=%s", q);
    rc = cf_call(st, "GET", path, NULL, CF_ARRAY, true, &r, err);
    free(path);
    if (rc != 0) {
        err_append(err, "; looking up zone \"%s\"%s", st->zone,
                   rc == DHAF_EAUTH ? " (is api-token valid, with Zone Read and DNS Edit "
                                      "permissions on this zone?)"
                                    : "");
        return rc;
    }
    json_array_foreach(r.result, i, item)
    {
        const char *name = dhaf_json_str(item, "name");
        if (!name) {
            rc =
                dhaf_err_set(err, DHAF_EPROTO,
                             "cloudflare: zone lookup of \"%s\": item %zu of the reply has no name",
                             st->zone, i);
            goto out;
        }
        if (same_name(name, st->zone) && n++ == 0)
            zone = item;
    }
    if (n == 0) {
        rc = dhaf_err_set(err, DHAF_ENOTFOUND,
                          "cloudflare: zone \"%s\" not found (or the API token cannot see it)",
                          st->zone);
        goto out;
    }
    if (n > 1) {
        rc = dhaf_err_set(err, DHAF_ECONFLICT,
                          "cloudflare: %zu zones are named \"%s\"; exactly one expected", n,
                          st->zone);
        goto out;
    }
    const char *id = dhaf_json_str(zone, "id"), *status = dhaf_json_str(zone, "status");
    const json_t *paused = json_object_get(zone, "paused");
    if (!id || !id_ok(id) || !status || (paused && !json_is_boolean(paused))) {
        rc = dhaf_err_set(err, DHAF_EPROTO,
                          "cloudflare: zone \"%s\": the reply lacks a valid id, status or paused",
                          st->zone);
        goto out;
    }
    if (strcmp(status, "active") != 0) {
        rc = dhaf_err_set(err, DHAF_EUNAVAILABLE,
                          "cloudflare: zone \"%s\" is %s, not active: its DNS records are not "
                          "served by Cloudflare",
                          st->zone, dhaf_http_safe_text(t, sizeof(t), status));
        goto out;
    }
    if (json_is_true(paused)) {
        rc = dhaf_err_set(err, DHAF_EUNAVAILABLE,
                          "cloudflare: zone \"%s\" is paused (DNS only, no proxy): resume it in "
                          "the dashboard",
                          st->zone);
        goto out;
    }
    st->zone_id = dhaf_xstrdup(id);
out:
    json_decref(r.root);
    return rc;
}

/* Takes in one page of the record list (see list_records); *last says whether it was the
 * final page. Returns 0 or DHAF_EPROTO for a malformed page. */
static int scan_page(const struct cf_state *st, const struct cf_reply *r, int page,
                     struct cf_record *rec, size_t *n, bool *last, struct dhaf_err *err)
{
    const json_t *item;
    size_t i;

    json_array_foreach(r->result, i, item)
    {
        const char *id = dhaf_json_str(item, "id"), *type = dhaf_json_str(item, "type");
        const char *name = dhaf_json_str(item, "name");
        const char *content = dhaf_json_str(item, "content");
        if (!id || !type || !name || !content)
            return dhaf_err_set(err, DHAF_EPROTO,
                                "cloudflare: records of %s: item %zu of page %d lacks id, type, "
                                "name or content",
                                st->domain, i, page);
        if (strcasecmp(type, st->rtype) != 0 || !same_name(name, st->domain))
            continue;
        if (!id_ok(id))
            return dhaf_err_set(err, DHAF_EPROTO,
                                "cloudflare: records of %s: \"%.40s\" is not a record id",
                                st->domain, id);
        if ((*n)++ > 0)
            continue;
        snprintf(rec->id, sizeof(rec->id), "%s", id);
        snprintf(rec->content, sizeof(rec->content), "%s", content);
        rec->proxied = json_is_true(json_object_get(item, "proxied"));
        rec->ep = ep_of(st, rec->content);
    }
    /* Pages run until page >= total_pages (result_info comes with list replies). */
    const json_t *info = json_object_get(r->root, "result_info");
    const json_t *total_pages = json_is_object(info) ? json_object_get(info, "total_pages") : NULL;
    int64_t total = 1;
    if ((info && !json_is_object(info)) ||
        (total_pages && dhaf_json_int(info, "total_pages", &total) != 0))
        return dhaf_err_set(err, DHAF_EPROTO,
                            "cloudflare: records of %s: \"result_info\" is malformed", st->domain);
    *last = json_array_size(r->result) == 0 || page >= total;
    return 0;
}

/* Lists the records of the service's name and type, every page. *n gets how many there are;
 * the first one goes to *rec. Records of another name or type (a server that ignored the
 * filter) are skipped. */
static int list_records(struct cf_state *st, struct cf_record *rec, size_t *n, struct dhaf_err *err)
{
    char q[512];
    bool last = false;

    *n = 0;
    memset(rec, 0, sizeof(*rec));
    rec->ep = -1;
    url_escape(q, sizeof(q), st->domain);
    for (int page = 1; !last; page++) {
        struct cf_reply r;
        if (page > CF_MAX_PAGES)
            return dhaf_err_set(err, DHAF_EPROTO,
                                "cloudflare: the record list of %s goes past %d pages", st->domain,
                                CF_MAX_PAGES);
        char *path = dhaf_xasprintf("/zones/%s/dns_records?type=%s&name=%s&page=%d&per_page=%d",
                                    st->zone_id, st->rtype, q, page, CF_PER_PAGE);
        int rc = cf_call(st, "GET", path, NULL, CF_ARRAY, true, &r, err);
        free(path);
        if (rc == 0)
            rc = scan_page(st, &r, page, rec, n, &last, err);
        json_decref(r.root);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void remember(struct cf_state *st, const char *id)
{
    if (st->record_id && strcmp(st->record_id, id) == 0)
        return;
    if (st->record_id)
        DHAF_LOG(DHAF_LOG_INFO, "event=cf-record-replaced service=%s domain=%s old=%s new=%s",
                 svc_name(st), st->domain, st->record_id, id);
    free(st->record_id);
    st->record_id = dhaf_xstrdup(id);
}

/* ---- the provider ------------------------------------------------------------------------ */

static void cf_destroy(void *state)
{
    struct cf_state *st = state;
    if (!st)
        return;
    if (st->auth) {
        /* the token: do not leave it in freed memory */
        explicit_bzero(st->auth, strlen(st->auth));
        free(st->auth);
    }
    free(st->who);
    free(st->addr);
    free(st->base);
    free(st->zone);
    free(st->domain);
    free(st->zone_id);
    free(st->record_id);
    free(st);
}

/* Zones the API refuses to change (the former Freenom TLDs; error 1038). */
static bool restricted_tld(const char *zone)
{
    static const char *const tlds[] = {".cf", ".ga", ".gq", ".ml", ".tk", NULL};
    size_t n = strlen(zone);
    for (const char *const *t = tlds; *t; t++) {
        size_t l = strlen(*t);
        if (n > l && strcmp(zone + n - l, *t) == 0)
            return true;
    }
    return false;
}

/* Checks what needs no network: entry points of one family, a domain inside the zone, a
 * usable token. Fills the matching parts of st. */
static int check_local(struct cf_state *st, const struct cf_config *conf, struct dhaf_err *err)
{
    const struct dhaf_provider_ctx *ctx = &st->ctx;
    st->addr = dhaf_xcalloc(ctx->n_eps, sizeof(*st->addr));
    for (size_t i = 0; i < ctx->n_eps; i++) {
        const char *ip = ctx->eps[i].ip;
        int fam = AF_INET;
        if (!ip || inet_pton(AF_INET, ip, st->addr[i]) != 1) {
            fam = AF_INET6;
            if (!ip || inet_pton(AF_INET6, ip, st->addr[i]) != 1)
                return dhaf_err_set(err, DHAF_EINVAL,
                                    "cloudflare: entry point %s: \"%s\" is not an IP address",
                                    ctx->eps[i].name, ip ? ip : "");
        }
        if (i == 0)
            st->family = fam;
        else if (fam != st->family)
            return dhaf_err_set(err, DHAF_EINVAL,
                                "cloudflare: entry points mix IPv4 and IPv6 (%s is %s, %s is %s): "
                                "one record of one type (A or AAAA) must serve them all",
                                ctx->eps[0].name, ctx->eps[0].ip, ctx->eps[i].name, ip);
    }
    st->rtype = st->family == AF_INET ? "A" : "AAAA";

    st->domain = dns_name_norm(ctx->domain);
    st->zone = dns_name_norm(conf->zone);
    if (dhaf_valid_ip(st->domain, NULL) || dhaf_valid_ip(st->zone, NULL))
        return dhaf_err_set(err, DHAF_EINVAL,
                            "cloudflare: domain \"%s\" and zone \"%s\" must be DNS names",
                            st->domain, st->zone);
    size_t dl = strlen(st->domain), zl = strlen(st->zone);
    bool inside =
        strcmp(st->domain, st->zone) == 0 ||
        (dl > zl && st->domain[dl - zl - 1] == '.' && strcmp(st->domain + dl - zl, st->zone) == 0);
    if (!inside)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "cloudflare: service domain \"%s\" is not zone \"%s\" nor inside it",
                            st->domain, st->zone);

    const char *tok = conf->api_token;
    bool tok_ok = tok && *tok;
    for (const char *p = tok; tok_ok && *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            tok_ok = false;
    if (!tok_ok)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "cloudflare: api-token is empty or contains spaces or control "
                            "characters");
    st->auth = dhaf_xasprintf("Authorization: Bearer %s", tok);
    /* Cloudflare ignores unknown headers; a proxy log or a test fake can tell which leader
     * (and which epoch) made a change. */
    st->who = dhaf_xasprintf("X-Dhaf-Leader: %s epoch %lld", ctx->node ? ctx->node : "-",
                             (long long)ctx->epoch);

    st->base = dhaf_xstrdup(conf->api_url ? conf->api_url : "https://api.cloudflare.com/client/v4");
    for (size_t l = strlen(st->base); l > 0 && st->base[l - 1] == '/'; l--)
        st->base[l - 1] = '\0';
    return 0;
}

static int cf_init(const void *conf_, const struct dhaf_provider_ctx *ctx, void **state,
                   struct dhaf_err *err)
{
    const struct cf_config *conf = conf_;
    struct dhaf_err tmp;
    struct cf_record rec;
    size_t n = 0;
    int rc;

    if (!err)
        err = &tmp;
    *state = NULL;
    if (!ctx || !ctx->domain || !ctx->eps || ctx->n_eps == 0)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "cloudflare: the service needs a domain and at least one entry point");
    struct cf_state *st = dhaf_xcalloc(1, sizeof(*st));
    st->ctx = *ctx;
    rc = check_local(st, conf, err);
    if (rc != 0)
        goto out;
    if (restricted_tld(st->zone))
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=cf-restricted-tld service=%s zone=%s note=\"the Cloudflare API refuses "
                 "DNS changes for .cf, .ga, .gq, .ml and .tk zones (error 1038)\"",
                 svc_name(st), st->zone);

    /* Reads only: the zone, and the record (proves the token may read DNS). No change here:
     * only the leader's switch_to writes. */
    st->deadline = dhaf_mono_ms() + CF_OP_DEADLINE_MS;
    rc = find_zone(st, err);
    if (rc != 0)
        goto out;
    rc = list_records(st, &rec, &n, err);
    if (rc != 0) {
        err_append(err, "; reading the %s record of %s", st->rtype, st->domain);
        goto out;
    }
    if (n == 1)
        remember(st, rec.id);
    DHAF_LOG(DHAF_LOG_INFO,
             "event=cf-init service=%s domain=%s zone=%s zone_id=%s type=%s records=%zu "
             "current=%s",
             svc_name(st), st->domain, st->zone, st->zone_id, st->rtype, n,
             n != 1        ? "-"
             : rec.ep >= 0 ? st->ctx.eps[rec.ep].name
                           : "unknown");
out:
    if (rc != 0)
        cf_destroy(st);
    else
        *state = st;
    return rc;
}

static int cf_current(void *state, const struct dhaf_fence *fence, int *ep, struct dhaf_err *err)
{
    struct cf_state *st = state;
    struct dhaf_err tmp;
    struct cf_record rec;
    size_t n;

    if (!err)
        err = &tmp;
    *ep = -1;
    st->deadline = dhaf_mono_ms() + CF_OP_DEADLINE_MS;
    st->fence = fence;
    int rc = list_records(st, &rec, &n, err);
    st->fence = NULL;
    if (rc != 0)
        return rc;
    if (n == 0) {
        DHAF_FREE(st->record_id);
        return dhaf_err_set(err, DHAF_ENOTFOUND, "cloudflare: no %s record named %s in zone %s",
                            st->rtype, st->domain, st->zone);
    }
    if (n > 1)
        return dhaf_err_set(err, DHAF_ECONFLICT,
                            "cloudflare: %zu %s records named %s in zone %s: exactly one record "
                            "expected (remove the others)",
                            n, st->rtype, st->domain, st->zone);
    remember(st, rec.id);
    if (!rec.proxied && !st->warned_proxied) {
        st->warned_proxied = true;
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=cf-record-not-proxied service=%s domain=%s record=%s note=\"DNS only: "
                 "resolvers keep the old address for the record's TTL after a switch\"",
                 svc_name(st), st->domain, rec.id);
    }
    *ep = rec.ep;
    char c[80];
    DHAF_LOG(DHAF_LOG_DEBUG, "event=cf-current service=%s domain=%s record=%s content=\"%s\" ep=%s",
             svc_name(st), st->domain, rec.id, dhaf_log_quote(c, sizeof(c), rec.content),
             rec.ep >= 0 ? st->ctx.eps[rec.ep].name : "-");
    return 0;
}

/* After a failed write: is the record worth finding again? It went away or changed id
 * (404, 81044, 7003/7000), it appeared meanwhile (81057/81053), or a create may have happened
 * without our seeing the reply. */
static bool worth_refind(const struct cf_reply *r, bool creating)
{
    switch (r->cf_code) {
    case 7000:
    case 7003:
    case 81044:
    case 81053:
    case 81057:
        return true;
    }
    return r->status == 404 || (creating && r->unsure);
}

/* The name of entry point ep for messages ("none" for no record, "unknown" for an address
 * of no entry point). */
static const char *ep_label(const struct cf_state *st, bool exists, int ep)
{
    return !exists ? "none" : ep >= 0 ? st->ctx.eps[ep].name : "unknown";
}

/* Refuses to write when the record is not where the leader believes traffic goes: someone
 * (an operator, a former leader) changed it, and overwriting would undo that blindly. */
static int expect_check(const struct cf_state *st, const struct dhaf_switch_req *req, bool exists,
                        int ep, const char *when, struct dhaf_err *err)
{
    if (req->expect_from < 0 || (exists && ep == req->expect_from))
        return 0;
    return dhaf_err_set(err, DHAF_ECONFLICT,
                        "cloudflare: %s the %s record of %s points at %s, not at %s as this "
                        "leader expected: changed by someone else; not switching",
                        when, st->rtype, st->domain, ep_label(st, exists, ep),
                        st->ctx.eps[req->expect_from].name);
}

/* Right before an edit: the record by id once more (the list may have taken a while), still
 * the expected content. Returns 0 to go on, 1 when it already points at `to`, or an error. */
static int recheck(struct cf_state *st, const struct dhaf_switch_req *req,
                   const struct cf_record *rec, struct dhaf_err *err)
{
    struct cf_reply r;
    char *path = dhaf_xasprintf("/zones/%s/dns_records/%s", st->zone_id, rec->id);
    int rc = cf_call(st, "GET", path, NULL, CF_OBJECT, true, &r, err);
    free(path);
    if (rc != 0)
        return rc;
    const char *content = dhaf_json_str(r.result, "content");
    int ep = content ? ep_of(st, content) : -1;
    if (!content)
        rc = dhaf_err_set(err, DHAF_EPROTO, "cloudflare: record %s of %s: the reply has no content",
                          rec->id, st->domain);
    else if (ep == (int)req->to)
        rc = 1;
    else
        rc = expect_check(st, req, true, ep, "right before the edit,", err);
    json_decref(r.root);
    return rc;
}

static int switch_rounds(struct cf_state *st, const struct dhaf_switch_req *req,
                         struct dhaf_err *err)
{
    const struct dhaf_ep *to = &st->ctx.eps[req->to];
    int rc = 0;
    for (int round = 1;; round++) {
        struct cf_record rec;
        struct cf_reply r;
        size_t n;
        json_t *body;
        char *path;
        char c[80];

        /* Read the record fresh: a manual change or a deletion since the last look must not
         * make us skip a needed write or edit a record that is gone. */
        rc = list_records(st, &rec, &n, err);
        if (rc != 0)
            return rc;
        if (n > 1)
            return dhaf_err_set(err, DHAF_ECONFLICT,
                                "cloudflare: %zu %s records named %s in zone %s: exactly one "
                                "record expected; not switching (remove the others)",
                                n, st->rtype, st->domain, st->zone);
        if (n == 1) {
            remember(st, rec.id);
            if (rec.ep == (int)req->to) {
                DHAF_LOG(DHAF_LOG_DEBUG,
                         "event=cf-switch-unneeded service=%s domain=%s to=%s record=%s",
                         svc_name(st), st->domain, to->name, rec.id);
                return 0;
            }
        }
        /* Only the first round compares: later rounds follow our own unsure writes. */
        if (round == 1 && (rc = expect_check(st, req, n == 1, rec.ep, "", err)) != 0)
            return rc;
        const char *from = ep_label(st, n == 1, rec.ep);
        if (n == 0) {
            body = json_pack("{s:s, s:s, s:s, s:b, s:i}", "type", st->rtype, "name", st->domain,
                             "content", to->ip, "proxied", 1, "ttl", 1);
            path = dhaf_xasprintf("/zones/%s/dns_records", st->zone_id);
            rc = cf_call(st, "POST", path, body, CF_OBJECT, false, &r, err);
        } else {
            if (round == 1 && (rc = recheck(st, req, &rec, err)) != 0)
                return rc == 1 ? 0 : rc;
            /* A partial edit: proxied and ttl stay as the zone's owner set them. */
            body = json_pack("{s:s, s:s, s:s}", "type", st->rtype, "name", st->domain, "content",
                             to->ip);
            path = dhaf_xasprintf("/zones/%s/dns_records/%s", st->zone_id, rec.id);
            rc = cf_call(st, "PATCH", path, body, CF_OBJECT, true, &r, err);
        }
        json_decref(body);
        free(path);
        if (rc == 0) {
            const char *id = dhaf_json_str(r.result, "id");
            const char *content = dhaf_json_str(r.result, "content");
            if (!id || !id_ok(id) || !content || ep_of(st, content) != (int)req->to) {
                rc = dhaf_err_set(err, DHAF_EPROTO,
                                  "cloudflare: %s of the %s record of %s: the reply does not "
                                  "show the record with content %s",
                                  n == 0 ? "creation" : "update", st->rtype, st->domain, to->ip);
                json_decref(r.root);
                return rc;
            }
            remember(st, id);
            DHAF_LOG(DHAF_LOG_INFO,
                     "event=cf-switch service=%s domain=%s type=%s from=%s from_ip=\"%s\" to=%s "
                     "to_ip=%s action=%s record=%s node=%s epoch=%lld",
                     svc_name(st), st->domain, st->rtype, from,
                     dhaf_log_quote(c, sizeof(c), n ? rec.content : ""), to->name, to->ip,
                     n == 0 ? "create" : "update", id, st->ctx.node ? st->ctx.node : "-",
                     (long long)st->ctx.epoch);
            json_decref(r.root);
            return 0;
        }
        if (rc == DHAF_EFENCED || round >= CF_SWITCH_ROUNDS || !worth_refind(&r, n == 0))
            return rc;
        char m[DHAF_ERR_MSG_MAX];
        DHAF_LOG(DHAF_LOG_WARN, "event=cf-refind service=%s domain=%s round=%d reason=\"%s\"",
                 svc_name(st), st->domain, round, dhaf_log_quote(m, sizeof(m), err->msg));
        DHAF_FREE(st->record_id);
        if (r.unsure) {
            int64_t wait = CF_BACKOFF_FIRST_MS * round;
            if (dhaf_mono_ms() + wait >= st->deadline)
                return rc;
            sw_fence_sleep(st->fence, wait);
        }
    }
}

static int cf_switch_to(void *state, const struct dhaf_switch_req *req, struct dhaf_err *err)
{
    struct cf_state *st = state;
    struct dhaf_err tmp;

    if (!err)
        err = &tmp;
    if (req->to >= st->ctx.n_eps ||
        (req->expect_from >= 0 && (size_t)req->expect_from >= st->ctx.n_eps))
        return dhaf_err_set(err, DHAF_EINVAL,
                            "cloudflare: no entry point #%zu or #%d (%zu configured)", req->to,
                            req->expect_from, st->ctx.n_eps);
    st->deadline = dhaf_mono_ms() + CF_OP_DEADLINE_MS;
    st->fence = req->fence;
    int rc = switch_rounds(st, req, err);
    st->fence = NULL;
    return rc;
}

const struct dhaf_provider dhaf_switcher_cloudflare = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_SWITCHER,
    .type = "cloudflare",
    .summary = "Switches entry points by changing the Cloudflare DNS record.",
    .keys = cf_keys,
    .config_size = sizeof(struct cf_config),
    .init = cf_init,
    .destroy = cf_destroy,
    .switch_to = cf_switch_to,
    .current = cf_current,
};
