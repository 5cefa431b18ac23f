/* SPDX-License-Identifier: MIT */
/* Web health checker: config keys and their rules, and the checks: one HTTP(S) request per
 * entry point (plus retries), all on one libcurl multi handle, judged by status code and body. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "dhaf/probe.h"
#include "dhaf/provider.h"
#include "dhaf/valid.h"
#include "web.h"

#define WEB(field) offsetof(struct web_config, field)

static const char *const web_schemas[] = {"http", "https", NULL};
const char *const web_methods[] = {"GET", "POST", "HEAD", NULL};

static int check_codes(const char *v, char *why, size_t wl)
{
    struct dhaf_codes c;
    if (dhaf_codes_parse(v, &c, why, wl) != 0)
        return -1;
    dhaf_codes_release(&c);
    return 0;
}

/* An HTTP header name: a token of RFC 9110. Shared by the config rules and the checks. */
static bool header_name_ok(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return false;
    return true;
}

/* A request path without spaces, control characters or a fragment. */
static bool path_ok(const char *path)
{
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '#')
            return false;
    return true;
}

static int check_path(const char *v, char *why, size_t wl)
{
    if (!path_ok(v)) {
        snprintf(why, wl, "the path may not contain spaces, control characters or '#'");
        return -1;
    }
    return 0;
}

/* clang-format off */
static const struct dhaf_cfgkey web_keys[] = {
    {"schema", DHAF_CFG_ENUM, WEB(schema), false, "http", 0, 0, web_schemas, NULL, NULL,
     "URI schema: http or https."},
    {"method", DHAF_CFG_ENUM, WEB(method), false, "GET", 0, 0, web_methods, NULL, NULL,
     "HTTP method: GET, POST or HEAD."},
    {"port", DHAF_CFG_INT, WEB(port), false, NULL, 1, 65535, NULL, NULL, NULL,
     "Port to check; 80 for http, 443 for https when not given."},
    {"path", DHAF_CFG_STR, WEB(path), false, "/", 0, 0, NULL, check_path, NULL,
     "Path to request."},
    {"headers", DHAF_CFG_STRMAP, WEB(headers), false, NULL, 0, 0, NULL, NULL, NULL,
     "Extra request headers (name: value)."},
    {"follow-redirects", DHAF_CFG_BOOL, WEB(follow_redirects), false, "false", 0, 0, NULL, NULL,
     NULL, "Follow HTTP redirects."},
    {"timeout", DHAF_CFG_INT, WEB(timeout), false, "5", 1, 86400, NULL, NULL, NULL,
     "Seconds one attempt may take."},
    {"retries", DHAF_CFG_INT, WEB(retries), false, "2", 0, 100, NULL, NULL, NULL,
     "Retries after a failed first attempt, made at once."},
    {"expected-codes", DHAF_CFG_STR, WEB(expected_codes), false, "200", 0, 0, NULL, check_codes,
     NULL, "Healthy response codes, e.g. 200,3XX (X = any digit)."},
    {"expected-response-body", DHAF_CFG_STR, WEB(expected_body), false, NULL, 0, 0, NULL, NULL,
     NULL, "Text the body must contain (case-insensitive)."},
    {"domain-forwarding", DHAF_CFG_BOOL, WEB(domain_forwarding), false, "true", 0, 0, NULL, NULL,
     NULL, "Send the service domain as Host (and SNI) unless headers set Host."},
    {"ignore-ssl-errors", DHAF_CFG_BOOL, WEB(ignore_ssl_errors), false, "false", 0, 0, NULL,
     NULL, NULL, "Accept any TLS certificate (https only)."},
    DHAF_KEY_END,
};
/* clang-format on */

static void web_finish(void *conf, struct dhaf_cfg_ctx *ctx)
{
    struct web_config *w = conf;
    if (w->port == 0)
        w->port = w->schema == WEB_HTTPS ? 443 : 80;
    if (w->path && w->path[0] != '/') {
        char *p = dhaf_xasprintf("/%s", w->path);
        free(w->path);
        w->path = p;
    }
    for (size_t i = 0; i < w->headers.n; i++) {
        const char *name = w->headers.keys[i], *val = w->headers.vals[i];
        if (!header_name_ok(name)) {
            dhaf_cfg_fail(ctx, "headers", "\"%.60s\" is not a valid HTTP header name", name);
            continue;
        }
        if (strpbrk(val, "\r\n")) {
            dhaf_cfg_fail(ctx, "headers", "the value of header \"%s\" contains a line break", name);
        }
    }
    if (w->ignore_ssl_errors && w->schema != WEB_HTTPS)
        dhaf_cfg_fail(ctx, "ignore-ssl-errors", "applies to https only; schema is http");
}

/* ---- checks ------------------------------------------------------------------------------ */

/* The check keeps at most this much of a response body and then stops reading: a body is
 * judged on its first 64 KiB, and an endless body cannot hold the check until its timeout. */
#define WEB_BODY_MAX (64 * 1024)
/* libcurl's receive buffer per check (its default is 16 KiB): a health answer is short, and
 * at 1,000 services some hundred checks are in flight at once. A longer body takes more reads. */
#define WEB_RECV_BUFFER 4096L
#define WEB_MAX_REDIRS  5L

enum web_reason {
    WR_OK,
    WR_TIMEOUT,
    WR_CONNECT,
    WR_TLS,
    WR_HTTP_CODE,
    WR_BODY,
    WR_NETWORK,
    WR_INTERNAL,
};

/* The status table: every result's reason is one of these codes. */
static const struct dhaf_reason web_reasons[] = {
    [WR_OK] = {"ok", "an expected HTTP code (and the expected body text) came back"},
    [WR_TIMEOUT] = {"timeout", "no complete response within the timeout"},
    [WR_CONNECT] = {"connect", "the connection was refused or the address was unreachable"},
    [WR_TLS] = {"tls", "the TLS handshake or the certificate check failed"},
    [WR_HTTP_CODE] = {"http-code", "the HTTP status code was not an expected one"},
    [WR_BODY] = {"body", "the response body did not contain the expected text"},
    [WR_NETWORK] = {"network", "another transport or protocol error (reset, bad reply, redirects)"},
    [WR_INTERNAL] = {"internal", "the check could not run (bad input or a local failure)"},
    {NULL, NULL},
};

/* One service's instance: its expected-codes, parsed once. */
struct web_state {
    struct dhaf_codes codes;
};

/* One target's check while check() runs. */
struct web_job {
    struct dhaf_check_target *t; /* borrowed */
    const struct web_config *conf;
    const struct dhaf_codes *codes; /* the state's, or own_codes */
    struct dhaf_codes own_codes;    /* parsed here when the target came without state */
    CURL *easy;
    struct curl_slist *headers;
    struct curl_slist *connect_to;
    char *url;
    int port;
    char *body; /* the first WEB_BODY_MAX bytes, when a body text is expected */
    size_t body_len, body_cap;
    size_t body_seen; /* bytes received in this attempt (kept or not) */
    bool keep_body;
    bool cut; /* this attempt stopped reading at WEB_BODY_MAX */
    int attempts;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t web_curl_once = PTHREAD_ONCE_INIT;
static CURLcode web_curl_status = CURLE_FAILED_INIT;

static void web_curl_global_init(void)
{
    web_curl_status = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static const char *web_codes_text(const struct web_config *c)
{
    return c && c->expected_codes ? c->expected_codes : "200";
}

/** Parses expected-codes into the instance. conf is borrowed; *state is freed by web_destroy. */
static int web_init(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                    struct dhaf_err *err)
{
    const struct web_config *c = conf;
    char why[160];
    (void)ctx;
    if (!state)
        return dhaf_err_set(err, DHAF_EINVAL, "web checker: no place for the instance");
    *state = NULL;
    if (!c)
        return dhaf_err_set(err, DHAF_EINVAL, "web checker: no config");
    struct web_state *s = dhaf_xcalloc(1, sizeof(*s));
    if (dhaf_codes_parse(web_codes_text(c), &s->codes, why, sizeof(why)) != 0) {
        free(s);
        return dhaf_err_set(err, DHAF_ECONFIG, "web checker: expected-codes: %s", why);
    }
    *state = s;
    return 0;
}

static void web_destroy(void *state)
{
    struct web_state *s = state;
    if (!s)
        return;
    dhaf_codes_release(&s->codes);
    free(s);
}

/* Writes the final result of a job (text printf-style). */
__attribute__((format(printf, 3, 4))) static void job_result(struct web_job *j, enum web_reason r,
                                                             const char *fmt, ...)
{
    struct dhaf_check_result *res = j->t->result;
    va_list ap;
    res->healthy = r == WR_OK;
    res->reason = web_reasons[r].code;
    va_start(ap, fmt);
    vsnprintf(res->text, sizeof(res->text), fmt, ap);
    va_end(ap);
}

/* curl's write callback: keeps the first WEB_BODY_MAX bytes (when a body text is expected)
 * and stops the transfer there; the judge takes such a stop as a complete read. */
static size_t job_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct web_job *j = arg;
    size_t n = size * nmemb;
    size_t room = WEB_BODY_MAX - j->body_seen;
    size_t take = n < room ? n : room;
    if (j->keep_body && take > 0) {
        DHAF_GROW(j->body, j->body_len + take, j->body_cap);
        memcpy(j->body + j->body_len, data, take);
        j->body_len += take;
    }
    j->body_seen += take;
    if (take < n) {
        j->cut = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    return n;
}

/* Case-insensitive (ASCII) search of needle in the first hn bytes of hay, which may hold NULs. */
static bool body_contains(const char *hay, size_t hn, const char *needle)
{
    size_t nn = strlen(needle);
    if (nn == 0)
        return true;
    for (size_t i = 0; hay && i + nn <= hn; i++) {
        size_t k = 0;
        while (k < nn && tolower((unsigned char)hay[i + k]) == tolower((unsigned char)needle[k]))
            k++;
        if (k == nn)
            return true;
    }
    return false;
}

/* Builds the request of one target. Returns 0, or -1 after writing an internal result. */
static int job_prepare(struct web_job *j)
{
    const struct dhaf_check_target *t = j->t;
    const struct web_config *c = t->conf;
    char why[160];
    int family = 0;
    CURLcode rc = CURLE_OK;

    j->conf = c;
    if (!c) {
        job_result(j, WR_INTERNAL, "no checker config for this target");
        return -1;
    }
    if (c->schema != WEB_HTTP && c->schema != WEB_HTTPS) {
        job_result(j, WR_INTERNAL, "schema must be http or https");
        return -1;
    }
    if (c->method < 0 || c->method > 2) {
        job_result(j, WR_INTERNAL, "method must be GET, POST or HEAD");
        return -1;
    }
    j->port = c->port ? c->port : c->schema == WEB_HTTPS ? 443 : 80;
    if (j->port < 1 || j->port > 65535) {
        job_result(j, WR_INTERNAL, "port %d is out of range 1-65535", c->port);
        return -1;
    }
    if (c->timeout < 1 || c->timeout > 86400 || c->retries < 0 || c->retries > 100) {
        job_result(j, WR_INTERNAL, "timeout must be 1-86400 s and retries 0-100");
        return -1;
    }
    const char *path = c->path && *c->path ? c->path : "/";
    if (!path_ok(path)) {
        job_result(j, WR_INTERNAL, "the path contains spaces, control characters or '#'");
        return -1;
    }
    if (!t->ep_ip || !dhaf_valid_ip(t->ep_ip, &family)) {
        job_result(j, WR_INTERNAL, "entry point \"%.64s\" has no valid IP address",
                   t->ep_name ? t->ep_name : "?");
        return -1;
    }
    if (t->state) {
        j->codes = &((const struct web_state *)t->state)->codes;
    } else {
        if (dhaf_codes_parse(web_codes_text(c), &j->own_codes, why, sizeof(why)) != 0) {
            job_result(j, WR_INTERNAL, "expected-codes: %s", why);
            return -1;
        }
        j->codes = &j->own_codes;
    }

    /* Headers. Values are never logged or echoed: they may carry tokens. */
    bool has_host = false;
    for (size_t i = 0; i < c->headers.n; i++) {
        const char *name = c->headers.keys[i], *val = c->headers.vals[i];
        if (!header_name_ok(name) || !val || strpbrk(val, "\r\n")) {
            job_result(j, WR_INTERNAL, "header %zu is not a valid HTTP header", i + 1);
            return -1;
        }
        has_host = has_host || strcasecmp(name, "Host") == 0;
        /* "Name;" is curl's way to send a header with an empty value. */
        char *line = *val ? dhaf_xasprintf("%s: %s", name, val) : dhaf_xasprintf("%s;", name);
        struct curl_slist *l = curl_slist_append(j->headers, line);
        free(line);
        if (!l) {
            job_result(j, WR_INTERNAL, "out of memory for the request headers");
            return -1;
        }
        j->headers = l;
    }

    /* Domain forwarding: the URL names the domain, so Host and SNI (and certificate checks)
     * use it, and CONNECT_TO sends the connection to this entry point. CONNECT_TO rather than
     * RESOLVE: a resolve entry would sit in the multi handle's shared DNS cache, where the
     * other entry points of the same domain would pick it up. Host is then "domain", or
     * "domain:port" on a port that is not the schema's default, as a browser sends it. A Host
     * in headers turns forwarding off: the URL names the IP, so no SNI is sent. Redirects to
     * the same domain and port stay on this entry point; others are resolved normally. */
    const char *scheme = c->schema == WEB_HTTPS ? "https" : "http";
    const char *lb = family == AF_INET6 ? "[" : "", *rb = family == AF_INET6 ? "]" : "";
    bool forward = c->domain_forwarding && !has_host && t->domain && *t->domain;
    if (forward) {
        if (!dhaf_valid_hostname(t->domain)) {
            job_result(j, WR_INTERNAL, "the service domain is not a valid host name");
            return -1;
        }
        char *ct = dhaf_xasprintf("%s:%d:%s%s%s:%d", t->domain, j->port, lb, t->ep_ip, rb, j->port);
        j->connect_to = curl_slist_append(NULL, ct);
        free(ct);
        if (!j->connect_to) {
            job_result(j, WR_INTERNAL, "out of memory for the connect-to entry");
            return -1;
        }
        j->url = dhaf_xasprintf("%s://%s:%d%s%s", scheme, t->domain, j->port,
                                path[0] == '/' ? "" : "/", path);
    } else {
        j->url = dhaf_xasprintf("%s://%s%s%s:%d%s%s", scheme, lb, t->ep_ip, rb, j->port,
                                path[0] == '/' ? "" : "/", path);
    }
    j->keep_body = c->expected_body && *c->expected_body;

    j->easy = curl_easy_init();
    if (!j->easy) {
        job_result(j, WR_INTERNAL, "curl_easy_init failed");
        return -1;
    }
    CURL *e = j->easy;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(e, opt, val);                                                    \
    } while (0)
    SET(CURLOPT_URL, j->url);
    SET(CURLOPT_PRIVATE, (void *)j);
    SET(CURLOPT_ERRORBUFFER, j->errbuf);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROXY, ""); /* never through a proxy from the environment */
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, c->follow_redirects ? 1L : 0L);
    SET(CURLOPT_MAXREDIRS, WEB_MAX_REDIRS);
    /* Each check measures a connection of its own. */
    SET(CURLOPT_FRESH_CONNECT, 1L);
    SET(CURLOPT_FORBID_REUSE, 1L);
    SET(CURLOPT_TIMEOUT_MS, (long)c->timeout * 1000L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout * 1000L);
    SET(CURLOPT_USERAGENT, "dhaf-web-checker");
    SET(CURLOPT_SSL_VERIFYPEER, c->ignore_ssl_errors ? 0L : 1L);
    SET(CURLOPT_SSL_VERIFYHOST, c->ignore_ssl_errors ? 0L : 2L);
    SET(CURLOPT_BUFFERSIZE, WEB_RECV_BUFFER);
    SET(CURLOPT_WRITEFUNCTION, job_on_body);
    SET(CURLOPT_WRITEDATA, (void *)j);
    if (j->headers)
        SET(CURLOPT_HTTPHEADER, j->headers);
    if (j->connect_to)
        SET(CURLOPT_CONNECT_TO, j->connect_to);
    if (strcmp(web_methods[c->method], "POST") == 0) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDS, "");
        SET(CURLOPT_POSTFIELDSIZE, 0L);
    } else if (strcmp(web_methods[c->method], "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    }
#undef SET
    if (rc != CURLE_OK) {
        job_result(j, WR_INTERNAL, "libcurl: %s", curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

/* Starts one attempt. Returns true when it runs; otherwise the job has its result. */
static bool job_start(CURLM *multi, struct web_job *j)
{
    j->errbuf[0] = '\0';
    j->body_len = 0;
    j->body_seen = 0;
    j->cut = false;
    j->attempts++;
    CURLMcode mc = curl_multi_add_handle(multi, j->easy);
    if (mc != CURLM_OK) {
        job_result(j, WR_INTERNAL, "libcurl: %s", curl_multi_strerror(mc));
        return false;
    }
    return true;
}

static const char *job_errtext(const struct web_job *j, CURLcode res)
{
    return j->errbuf[0] ? j->errbuf : curl_easy_strerror(res);
}

/* Judges a finished attempt: the reason, with its text in text. */
static enum web_reason job_judge(struct web_job *j, CURLcode res, char *text, size_t tl)
{
    const struct web_config *c = j->conf;
    long os_errno = 0;
    char eb[128];

    switch (res) {
    case CURLE_OK:
        break;
    case CURLE_WRITE_ERROR:
        if (j->cut)
            break; /* stopped at WEB_BODY_MAX: judge what came */
        snprintf(text, tl, "libcurl: %.200s", job_errtext(j, res));
        return WR_INTERNAL;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(text, tl, "timed out after %d s: %.200s", c->timeout, job_errtext(j, res));
        return WR_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(j->easy, CURLINFO_OS_ERRNO, &os_errno);
        if (os_errno == ECONNREFUSED)
            snprintf(text, tl, "connection refused");
        else if (os_errno != 0)
            snprintf(text, tl, "cannot connect: %.200s", strerror_r((int)os_errno, eb, sizeof(eb)));
        else
            snprintf(text, tl, "cannot connect: %.200s", job_errtext(j, res));
        return WR_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
        snprintf(text, tl, "TLS: %.200s", job_errtext(j, res));
        return WR_TLS;
    case CURLE_TOO_MANY_REDIRECTS:
        snprintf(text, tl, "more than %ld redirects", WEB_MAX_REDIRS);
        return WR_NETWORK;
    case CURLE_UNSUPPORTED_PROTOCOL:
        /* our own URL is http(s): this is a redirect elsewhere */
        snprintf(text, tl, "redirect to a protocol other than http/https: %.200s",
                 job_errtext(j, res));
        return WR_NETWORK;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_FAILED_INIT:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_UNKNOWN_OPTION:
        snprintf(text, tl, "libcurl: %.200s", job_errtext(j, res));
        return WR_INTERNAL;
    default:
        snprintf(text, tl, "%.200s", job_errtext(j, res));
        return WR_NETWORK;
    }

    long code = 0;
    curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &code);
    if (!dhaf_codes_match(j->codes, code)) {
        snprintf(text, tl, "unexpected HTTP code %ld (expected %.100s)", code, web_codes_text(c));
        return WR_HTTP_CODE;
    }
    if (c->expected_body && *c->expected_body &&
        !body_contains(j->body, j->body_len, c->expected_body)) {
        bool head = strcmp(web_methods[c->method], "HEAD") == 0;
        snprintf(text, tl, "body does not contain \"%.100s\"%s", c->expected_body,
                 head     ? " (a HEAD response has no body)"
                 : j->cut ? " (in its first 64 KiB)"
                          : "");
        return WR_BODY;
    }
    snprintf(text, tl, "HTTP %ld", code);
    return WR_OK;
}

/* Handles a finished attempt: retries at once after a failure while retries remain, else
 * writes the result. Returns true when the job is done. */
static bool job_attempt_done(CURLM *multi, struct web_job *j, CURLcode res)
{
    char text[sizeof(j->t->result->text)];
    enum web_reason r = job_judge(j, res, text, sizeof(text));
    curl_off_t total_us = 0;
    curl_easy_getinfo(j->easy, CURLINFO_TOTAL_TIME_T, &total_us);
    curl_multi_remove_handle(multi, j->easy);
    uint64_t ms = total_us > 0 ? (uint64_t)total_us / 1000 : 0;
    j->t->result->latency_ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;

    /* retries follow any failed attempt at once; an internal failure would only repeat */
    if (r != WR_OK && r != WR_INTERNAL && j->attempts <= j->conf->retries) {
        DHAF_LOG(DHAF_LOG_DEBUG, "event=web-check-retry service=%s ep=%s attempt=%d reason=%s",
                 j->t->service ? j->t->service : "-", j->t->ep_name ? j->t->ep_name : "-",
                 j->attempts, web_reasons[r].code);
        return !job_start(multi, j);
    }
    if (j->attempts > 1)
        job_result(j, r, "%.200s (attempt %d of %d)", text, j->attempts, j->conf->retries + 1);
    else
        job_result(j, r, "%s", text);
    return true;
}

static void job_log(const struct web_job *j)
{
    const struct dhaf_check_target *t = j->t;
    char q[300];
    DHAF_LOG(DHAF_LOG_DEBUG,
             "event=web-check service=%s ep=%s healthy=%s reason=%s latency_ms=%u text=\"%s\"",
             t->service ? t->service : "-", t->ep_name ? t->ep_name : "-",
             t->result->healthy ? "true" : "false", t->result->reason, t->result->latency_ms,
             dhaf_log_quote(q, sizeof(q), t->result->text));
}

static void job_release(CURLM *multi, struct web_job *j)
{
    if (j->easy) {
        if (multi)
            curl_multi_remove_handle(multi, j->easy);
        curl_easy_cleanup(j->easy);
        j->easy = NULL;
    }
    curl_slist_free_all(j->headers);
    curl_slist_free_all(j->connect_to);
    j->headers = j->connect_to = NULL;
    DHAF_FREE(j->url);
    DHAF_FREE(j->body);
    dhaf_codes_release(&j->own_codes);
}

/**
 * Checks every target at once on one curl multi handle and returns when all have a result.
 * Each attempt is bounded by its own conf's timeout, so this returns after at most the
 * longest (retries + 1) * timeout among the targets. targets is borrowed; results written.
 */
static void web_check(struct dhaf_check_target *targets, size_t n)
{
    if (!targets || n == 0)
        return;
    struct web_job *jobs = dhaf_xcalloc(n, sizeof(*jobs));
    size_t active = 0;
    CURLM *multi = NULL;

    pthread_once(&web_curl_once, web_curl_global_init);
    if (web_curl_status == CURLE_OK)
        multi = curl_multi_init();
    for (size_t i = 0; i < n; i++) {
        struct web_job *j = &jobs[i];
        j->t = &targets[i];
        if (!j->t->result)
            continue; /* nowhere to report */
        memset(j->t->result, 0, sizeof(*j->t->result));
        if (!multi) {
            job_result(j, WR_INTERNAL, "libcurl could not be initialised");
            continue;
        }
        if (job_prepare(j) == 0 && job_start(multi, j))
            active++;
    }

    while (active > 0) {
        int running = 0, left = 0;
        CURLMcode mc = curl_multi_perform(multi, &running);
        CURLMsg *msg;
        while (mc == CURLM_OK && (msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            void *priv = NULL;
            CURLcode res = msg->data.result; /* msg dies with the handle's removal */
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            struct web_job *j = priv;
            if (job_attempt_done(multi, j, res)) {
                job_log(j);
                dhaf_check_done(j->t); /* taken now, not with the slowest of the batch */
                job_release(multi, j); /* its buffers go now, not with the last of the batch */
                active--;
            }
        }
        if (mc == CURLM_OK && active > 0)
            mc = curl_multi_poll(multi, NULL, 0, 1000, NULL);
        if (mc != CURLM_OK) {
            /* The loop itself broke: every check still running gets an internal result. */
            for (size_t i = 0; i < n; i++) {
                struct web_job *j = &jobs[i];
                if (j->easy && j->t->result && !j->t->result->reason)
                    job_result(j, WR_INTERNAL, "libcurl: %s", curl_multi_strerror(mc));
            }
            break;
        }
    }

    for (size_t i = 0; i < n; i++)
        job_release(multi, &jobs[i]);
    if (multi)
        curl_multi_cleanup(multi);
    free(jobs);
}

const struct dhaf_provider dhaf_checker_web = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_CHECKER,
    .type = "web",
    .summary = "Checks the health of an http(s) service.",
    .keys = web_keys,
    .config_size = sizeof(struct web_config),
    .finish = web_finish,
    .init = web_init,
    .destroy = web_destroy,
    .check = web_check,
    .reasons = web_reasons,
};
