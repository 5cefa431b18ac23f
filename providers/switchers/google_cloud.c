/* SPDX-License-Identifier: MIT */
/* Google Cloud metadata switcher: config keys, a service-account OAuth2 client (JWT bearer
 * signed RS256 with OpenSSL) and the Compute Engine calls: read the project metadata key, set
 * it with the fingerprint (re-read on conflicts) and wait until the operation is DONE. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/http.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "fence.h"
#include "google_cloud.h"
#include "replies.h"

#define GCP(field) offsetof(struct gcp_config, field)

#define GCP_SCOPE          "https://www.googleapis.com/auth/compute"
#define GCP_GRANT          "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
#define GCP_KEY_FILE_MAX   (64 * 1024)       /* a service-account key is about 2.4 KB */
#define GCP_MAX_RESPONSE   (2 * 1024 * 1024) /* metadata is capped at 512 KB by Google */
#define GCP_REQ_MS         15000             /* one HTTP request */
#define GCP_INIT_TOKEN_MS  10000             /* the fail-fast token request at init */
#define GCP_READ_MS        30000             /* current() as a whole */
#define GCP_SWITCH_MS      120000            /* switch_to() as a whole, operation included */
#define GCP_OP_WAIT_MS     60000             /* waiting for one operation to be DONE */
#define GCP_OP_POLL_MS     500
#define GCP_ATTEMPTS       4   /* one call: the first try and retries on 429/5xx/transport */
#define GCP_BACKOFF_MS     250 /* doubled per retry; Retry-After is honoured up to ... */
#define GCP_RETRY_AFTER_MS 5000
#define GCP_CONFLICT_TRIES 5    /* read-modify-write rounds on a fingerprint conflict */
#define GCP_JWT_LIFETIME_S 3600 /* Google's maximum */
#define GCP_TOKEN_EARLY_S  60   /* a cached token is renewed this long before it expires */
#define GCP_TOKEN_MAX      4096
#define GCP_TEXT_MAX       200 /* untrusted text quoted in errors */

/* Metadata keys: letters, digits, '-' and '_', at most 128 characters (Compute Engine rule). */
static int check_metadata_key(const char *v, char *why, size_t wl)
{
    size_t n = 0;
    for (; v[n]; n++)
        if (!isalnum((unsigned char)v[n]) && v[n] != '-' && v[n] != '_')
            break;
    if (v[n] || n > 128) {
        snprintf(why, wl,
                 "\"%.60s\" is not a metadata key (letters, digits, '-', '_'; at most 128)", v);
        return -1;
    }
    return 0;
}

/* clang-format off */
static const struct dhaf_cfgkey gcp_keys[] = {
    {"project", DHAF_CFG_STR, GCP(project), true, NULL, 0, 0, NULL, NULL, NULL,
     "Google Cloud project ID."},
    {"metadata-key", DHAF_CFG_STR, GCP(metadata_key), true, NULL, 0, 0, NULL, check_metadata_key,
     NULL, "Project metadata key the gateway reads the entry point address from."},
    {"credentials-path", DHAF_CFG_PATH, GCP(credentials_path), true, NULL, 0, 0, NULL, NULL, NULL,
     "Service-account JSON key file (relative to the config file's directory)."},
    {"api-url", DHAF_CFG_URL, GCP(api_url), false, "https://compute.googleapis.com/compute/v1", 0,
     0, NULL, NULL, NULL, "Base URL of the Compute Engine API (for proxies and tests)."},
    DHAF_KEY_END,
};
/* clang-format on */

/* One switcher instance: the key, the token cache and where the project lives. */
struct gcp {
    const struct gcp_config *conf; /* borrowed */
    const struct dhaf_ep *eps;     /* borrowed (ctx) */
    size_t n_eps;
    const char *service; /* borrowed (ctx); for logs */

    char *client_email;
    char *token_uri;
    char *key_id; /* private_key_id; NULL when the file has none */
    EVP_PKEY *pkey;
    char *project_url; /* {api-url}/projects/{project} */

    pthread_mutex_t lock;           /* one call at a time: the token cache, read-modify-write */
    char *token;                    /* cached access token (secret); NULL when none */
    int64_t token_until_ms;         /* monotonic time from which it is renewed */
    const struct dhaf_fence *fence; /* of the operation in progress (under lock); NULL: none */
};

/* ---- small helpers ------------------------------------------------------------------------ */

/* Frees a string that held a secret, overwriting it first. */
static void free_secret(char **p)
{
    if (*p)
        OPENSSL_cleanse(*p, strlen(*p));
    DHAF_FREE(*p);
}

/* Copies untrusted text for an error message: control characters become '?', cut at n-1. */
static const char *clean(char *buf, size_t n, const char *s)
{
    size_t j = 0;
    for (; s && *s && j + 1 < n; s++)
        buf[j++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
    buf[j] = '\0';
    return buf;
}

/* The dhaf code for an HTTP status of a Google reply that is not 2xx. */
static int status_code(long status)
{
    if (status == 400)
        return DHAF_EINVAL;
    if (status == 401 || status == 403)
        return DHAF_EAUTH;
    if (status == 404)
        return DHAF_ECONFIG; /* a project that does not exist (or a wrong api-url) */
    if (status == 409 || status == 412)
        return DHAF_ECONFLICT;
    if (status == 408 || status == 429 || status >= 500)
        return DHAF_EUNAVAILABLE;
    return DHAF_EPROTO;
}

/* Failures worth another try of the same request. */
static bool transient(int rc)
{
    return rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT;
}

/* Percent-encodes s for one URL path segment (a project ID is plain, but nothing is assumed). */
static char *path_escape(const char *s)
{
    char *out = dhaf_xmalloc(strlen(s) * 3 + 1), *o = out;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || strchr("-._~:", c))
            *o++ = (char)c;
        else
            o += sprintf(o, "%%%02X", c);
    }
    *o = '\0';
    return out;
}

/* base64url without padding (RFC 7515). Caller frees. */
static char *b64url(const unsigned char *data, size_t len)
{
    char *out = dhaf_xmalloc(4 * ((len + 2) / 3) + 1);
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    size_t j = 0;
    for (int i = 0; i < n && out[i] != '='; i++)
        out[j++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[j] = '\0';
    return out;
}

/* A random version-4 UUID for requestId; false when no randomness is available. */
static bool request_id(char out[37])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) {
        ERR_clear_error();
        return false;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return true;
}

/* The last OpenSSL error as text (never key material); clears the queue, which libcurl's
 * TLS shares with us. */
static const char *ssl_error(char *buf, size_t n)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, n, "%s", r ? r : "unknown OpenSSL error");
    ERR_clear_error();
    return buf;
}

/* True when text is ip (of family) in any spelling inet_pton accepts. */
static bool same_ip(const char *text, const struct dhaf_ep *ep)
{
    unsigned char a[16], b[16];
    if (!text || inet_pton(ep->family, text, a) != 1 || inet_pton(ep->family, ep->ip, b) != 1)
        return false;
    return memcmp(a, b, ep->family == AF_INET6 ? 16 : 4) == 0;
}

static int ep_of(const struct gcp *g, const char *text)
{
    for (size_t i = 0; i < g->n_eps; i++)
        if (same_ip(text, &g->eps[i]))
            return (int)i;
    return -1;
}

/* ---- the service-account key -------------------------------------------------------------- */

/* Reads at most max bytes of path into *out (NUL-terminated; holds a secret: the caller
 * cleanses and frees it). */
static int read_capped(const char *path, size_t max, char **out, size_t *len, struct dhaf_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return dhaf_err_set(err, DHAF_ECONFIG, "credentials-path %s: cannot open: %s", path,
                            strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return dhaf_err_set(err, DHAF_ECONFIG, "credentials-path %s: not a regular file", path);
    }
    char *buf = dhaf_xmalloc(max + 2);
    size_t got = 0;
    while (got <= max) {
        ssize_t n = read(fd, buf + got, max + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            OPENSSL_cleanse(buf, got);
            free(buf);
            return dhaf_err_set(err, DHAF_ECONFIG, "credentials-path %s: read error: %s", path,
                                strerror(e));
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got > max) {
        OPENSSL_cleanse(buf, got);
        free(buf);
        return dhaf_err_set(err, DHAF_ECONFIG,
                            "credentials-path %s: larger than %zu bytes; not a service-account "
                            "JSON key",
                            path, max);
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return 0;
}

/* A required non-empty string member of the key file, or an error naming file and field. */
static int key_field(const json_t *key, const char *path, const char *field, const char **out,
                     struct dhaf_err *err)
{
    const json_t *v = json_object_get(key, field);
    *out = json_is_string(v) ? json_string_value(v) : NULL;
    if (!*out || !**out)
        return dhaf_err_set(err, DHAF_ECONFIG,
                            "credentials file %s: %s \"%s\" (a service-account JSON key has "
                            "type, client_email, private_key and token_uri)",
                            path, v ? "bad" : "no", field);
    return 0;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1; /* never prompt on a terminal: an encrypted key is an error */
}

static int key_load(struct gcp *g, struct dhaf_err *err)
{
    const char *path = g->conf->credentials_path;
    char *text = NULL, why[256];
    size_t len = 0;
    json_t *key = NULL;
    json_error_t je;
    int rc = read_capped(path, GCP_KEY_FILE_MAX, &text, &len, err);
    if (rc != 0)
        return rc;
    key = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!key || !json_is_object(key)) {
        rc = key ? dhaf_err_set(err, DHAF_ECONFIG,
                                "credentials file %s: not a JSON object (a service-account "
                                "JSON key is expected)",
                                path)
                 : dhaf_err_set(err, DHAF_ECONFIG,
                                "credentials file %s: not JSON (line %d column %d: %s); a "
                                "service-account JSON key is expected",
                                path, je.line, je.column, clean(why, 100, je.text));
        goto out;
    }
    const char *type, *email, *pem, *uri;
    if ((rc = key_field(key, path, "type", &type, err)) != 0)
        goto out;
    if (strcmp(type, "service_account") != 0) {
        rc = dhaf_err_set(err, DHAF_ECONFIG,
                          "credentials file %s: a \"%s\" key; the google-cloud switcher needs a "
                          "\"service_account\" JSON key",
                          path, clean(why, 64, type));
        goto out;
    }
    if ((rc = key_field(key, path, "client_email", &email, err)) != 0 ||
        (rc = key_field(key, path, "private_key", &pem, err)) != 0 ||
        (rc = key_field(key, path, "token_uri", &uri, err)) != 0)
        goto out;
    if (strncasecmp(uri, "https://", 8) != 0 && strncasecmp(uri, "http://", 7) != 0) {
        rc = dhaf_err_set(err, DHAF_ECONFIG,
                          "credentials file %s: token_uri \"%s\" is not an http(s) URL", path,
                          clean(why, 100, uri));
        goto out;
    }
    const json_t *kid = json_object_get(key, "private_key_id");
    if (kid && !json_is_string(kid)) {
        rc = dhaf_err_set(err, DHAF_ECONFIG, "credentials file %s: bad \"private_key_id\"", path);
        goto out;
    }

    BIO *bio = BIO_new_mem_buf(pem, -1);
    g->pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
    BIO_free(bio);
    if (!g->pkey) {
        rc = dhaf_err_set(err, DHAF_ECONFIG,
                          "credentials file %s: private_key is not a usable PEM private key (%s)",
                          path, ssl_error(why, sizeof(why)));
        goto out;
    }
    if (!EVP_PKEY_is_a(g->pkey, "RSA")) {
        rc = dhaf_err_set(err, DHAF_ECONFIG,
                          "credentials file %s: private_key is not an RSA key (RS256 needs one)",
                          path);
        goto out;
    }
    g->client_email = dhaf_xstrdup(email);
    g->token_uri = dhaf_xstrdup(uri);
    if (kid && json_string_length(kid) > 0)
        g->key_id = dhaf_xstrdup(json_string_value(kid));

out:
    if (key) {
        /* The decoded PEM lives in jansson's heap copy: wipe it before it is freed. */
        json_t *pk = json_object_get(key, "private_key");
        if (json_is_string(pk))
            OPENSSL_cleanse((char *)json_string_value(pk), json_string_length(pk));
        json_decref(key);
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return rc;
}

/* ---- OAuth2: JWT bearer -------------------------------------------------------------------- */

/* The signed assertion: base64url(header).base64url(claims).base64url(RS256). Caller frees. */
static int jwt_make(const struct gcp *g, char **out, struct dhaf_err *err)
{
    *out = NULL;
    time_t now = time(NULL);
    json_t *hdr = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");
    json_t *cl = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", g->client_email, "scope", GCP_SCOPE,
                           "aud", g->token_uri, "iat", (json_int_t)now, "exp",
                           (json_int_t)now + GCP_JWT_LIFETIME_S);
    if (hdr && g->key_id)
        json_object_set_new(hdr, "kid", json_string(g->key_id));
    if (!hdr || !cl) {
        json_decref(hdr);
        json_decref(cl);
        return dhaf_err_set(err, DHAF_EINTERNAL, "cannot build the JWT for %s", g->client_email);
    }
    char *hs = dhaf_json_dump(hdr), *cs = dhaf_json_dump(cl);
    char *h64 = b64url((const unsigned char *)hs, strlen(hs));
    char *c64 = b64url((const unsigned char *)cs, strlen(cs));
    char *input = dhaf_xasprintf("%s.%s", h64, c64);
    json_decref(hdr);
    json_decref(cl);
    free(hs);
    free(cs);
    free(h64);
    free(c64);

    int rc = 0;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    char why[160];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, g->pkey) == 1 &&
              EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)input, strlen(input)) == 1;
    if (ok) {
        sig = dhaf_xmalloc(siglen);
        ok = EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) == 1;
    }
    EVP_MD_CTX_free(md);
    if (!ok) {
        rc = dhaf_err_set(err, DHAF_EINTERNAL, "cannot sign the JWT for %s: %s", g->client_email,
                          ssl_error(why, sizeof(why)));
    } else {
        char *s64 = b64url(sig, siglen);
        *out = dhaf_xasprintf("%s.%s", input, s64);
        free(s64);
    }
    free(sig);
    free(input);
    return rc;
}

/* Explains a token endpoint reply that is not a token. */
static int token_refused(const struct gcp *g, const struct dhaf_http_resp *r, struct dhaf_err *err)
{
    char what[96] = "", desc[GCP_TEXT_MAX + 1] = "";
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    const json_t *ej = json_is_object(j) ? json_object_get(j, "error") : NULL;
    const char *e = json_is_string(ej) ? json_string_value(ej) : NULL;
    const char *d = json_is_object(j) ? dhaf_json_str(j, "error_description") : NULL;
    if (json_is_object(ej)) { /* a Google API-style error from a proxy or front end */
        e = dhaf_json_str(ej, "status");
        d = dhaf_json_str(ej, "message");
    }
    if (e)
        clean(what, sizeof(what), e);
    if (d || !e)
        clean(desc, sizeof(desc), d ? d : r->body);
    json_decref(j);
    bool refused = r->status >= 400 && r->status < 500 && r->status != 408 && r->status != 429;
    int code = refused ? DHAF_EAUTH : status_code(r->status);
    int rc =
        dhaf_err_set(err, code, "POST %s: HTTP %ld: the token request for %s %s: %s%s%s",
                     g->token_uri, r->status, g->client_email, refused ? "was refused" : "failed",
                     what, *what && *desc ? ": " : "", desc);
    err->status = (int)r->status;
    return rc;
}

/* Gets a new access token from token_uri (one request) into the cache. */
static int token_fetch(struct gcp *g, int64_t deadline, struct dhaf_err *err)
{
    char *jwt = NULL;
    int rc = jwt_make(g, &jwt, err);
    if (rc != 0)
        return rc;
    int64_t left = deadline - dhaf_mono_ms();
    if (left <= 0) {
        free(jwt);
        return dhaf_err_set(err, DHAF_ETIMEOUT, "POST %s: no time left for a token request",
                            g->token_uri);
    }
    char *body = dhaf_xasprintf("grant_type=%s&assertion=%s", GCP_GRANT, jwt);
    free(jwt);
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
                                       "Accept: application/json", NULL};
    struct dhaf_http_req req = {
        .method = "POST",
        .url = g->token_uri,
        .headers = hdrs,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = (int)(left < GCP_REQ_MS ? left : GCP_REQ_MS),
        .max_response = 64 * 1024,
    };
    struct dhaf_http_resp resp;
    int64_t t0 = dhaf_mono_ms();
    rc = sw_fenced_http(g->fence, &req, &resp, err);
    free(body);
    if (rc != 0)
        return rc;
    if (resp.status != 200) {
        rc = token_refused(g, &resp, err);
        dhaf_http_resp_release(&resp);
        return rc;
    }
    json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
    const char *tok = json_is_object(j) ? dhaf_json_str(j, "access_token") : NULL;
    const char *type = json_is_object(j) ? dhaf_json_str(j, "token_type") : NULL;
    int64_t ttl = 0;
    bool tok_ok = tok && *tok && strlen(tok) <= GCP_TOKEN_MAX;
    for (const char *p = tok; tok_ok && *p; p++)
        tok_ok = *p > ' ' && *p < 0x7f; /* it goes into a header line */
    if (!tok_ok || dhaf_json_int(j, "expires_in", &ttl) != 0 || ttl <= 0 ||
        (type && strcasecmp(type, "Bearer") != 0)) {
        rc = dhaf_err_set(err, DHAF_EPROTO,
                          "POST %s: HTTP 200 without a usable access_token, expires_in and "
                          "token_type Bearer",
                          g->token_uri);
        err->status = 200;
    } else {
        free_secret(&g->token);
        g->token = dhaf_xstrdup(tok);
        /* Counted from when the request was sent; renewed GCP_TOKEN_EARLY_S early. A token
         * shorter-lived than that is used for this call only. */
        int64_t keep = ttl > GCP_TOKEN_EARLY_S ? ttl - GCP_TOKEN_EARLY_S : 0;
        g->token_until_ms = t0 + keep * 1000;
        DHAF_LOG(DHAF_LOG_DEBUG, "event=gcp-token service=%s account=%s expires_in=%lld",
                 g->service, g->client_email, (long long)ttl);
    }
    if (json_is_string(json_object_get(j, "access_token")))
        OPENSSL_cleanse((char *)json_string_value(json_object_get(j, "access_token")),
                        json_string_length(json_object_get(j, "access_token")));
    json_decref(j);
    OPENSSL_cleanse(resp.body, resp.body_len);
    dhaf_http_resp_release(&resp);
    return rc;
}

/* ---- Compute Engine calls ------------------------------------------------------------------ */

/* Explains a Google error reply: its error.code, status, errors[0].reason and message. */
int gcp_api_error(const char *method, const char *url, const struct dhaf_http_resp *r,
                  struct dhaf_err *err)
{
    char detail[160] = "", msg[GCP_TEXT_MAX + 1] = "", t1[64], t2[64];
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    const json_t *e = json_is_object(j) ? json_object_get(j, "error") : NULL;
    if (json_is_object(e)) {
        int64_t code = 0;
        const char *status = dhaf_json_str(e, "status"), *m = dhaf_json_str(e, "message");
        const char *reason = NULL;
        const json_t *errs = json_object_get(e, "errors");
        if (json_is_array(errs) && json_array_size(errs) > 0)
            reason = dhaf_json_str(json_array_get(errs, 0), "reason");
        size_t o = 0;
        if (dhaf_json_int(e, "code", &code) == 0)
            o += (size_t)snprintf(detail + o, sizeof(detail) - o, "code %lld", (long long)code);
        if (status && o < sizeof(detail))
            o += (size_t)snprintf(detail + o, sizeof(detail) - o, "%s%s", o ? ", " : "",
                                  clean(t1, sizeof(t1), status));
        if (reason && o < sizeof(detail))
            snprintf(detail + o, sizeof(detail) - o, "%sreason %s", o ? ", " : "",
                     clean(t2, sizeof(t2), reason));
        clean(msg, sizeof(msg), m ? m : "(no message)");
    } else if (json_is_string(e)) { /* OAuth style: {"error":"...","error_description":...} */
        const char *d = dhaf_json_str(j, "error_description");
        clean(detail, sizeof(detail), json_string_value(e));
        clean(msg, sizeof(msg), d ? d : "(no description)");
    } else {
        clean(msg, sizeof(msg), r->body_len ? r->body : "(empty body)");
    }
    json_decref(j);
    int rc = dhaf_err_set(err, status_code(r->status), "%s %s: HTTP %ld%s%s%s: %s", method, url,
                          r->status, *detail ? " (" : "", detail, *detail ? ")" : "", msg);
    err->status = (int)r->status;
    return rc;
}

/* Makes sure a token is cached, fetching one when needed. */
static int token_get(struct gcp *g, int64_t deadline, struct dhaf_err *err)
{
    if (g->token && dhaf_mono_ms() < g->token_until_ms)
        return 0;
    return token_fetch(g, deadline, err);
}

/* One attempt of one API call. *unauthorized is set on HTTP 401, *retry_after from the reply. */
static int call_once(struct gcp *g, const char *method, const char *url, const char *body,
                     int64_t deadline, json_t **out, bool *unauthorized, long *retry_after,
                     struct dhaf_err *err)
{
    int rc = token_get(g, deadline, err);
    if (rc != 0)
        return rc;
    int64_t left = deadline - dhaf_mono_ms();
    if (left <= 0)
        return dhaf_err_set(err, DHAF_ETIMEOUT, "%s %s: no time left", method, url);
    char *auth = dhaf_xasprintf("Authorization: Bearer %s", g->token);
    const char *hdrs[] = {auth, "Accept: application/json",
                          body ? "Content-Type: application/json" : NULL, NULL};
    struct dhaf_http_req req = {
        .method = method,
        .url = url,
        .headers = hdrs,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = (int)(left < GCP_REQ_MS ? left : GCP_REQ_MS),
        .max_response = GCP_MAX_RESPONSE,
    };
    struct dhaf_http_resp resp;
    rc = sw_fenced_http(g->fence, &req, &resp, err);
    free_secret(&auth);
    if (rc != 0)
        return rc;
    *retry_after = resp.retry_after;
    if (resp.status >= 200 && resp.status < 300) {
        json_error_t je;
        *out = json_loadb(resp.body, resp.body_len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(*out)) {
            char t[100];
            json_decref(*out);
            *out = NULL;
            rc = dhaf_err_set(err, DHAF_EPROTO,
                              "%s %s: HTTP %ld but the reply is not a JSON "
                              "object (line %d: %s)",
                              method, url, resp.status, je.line, clean(t, sizeof(t), je.text));
            err->status = (int)resp.status;
        }
    } else {
        *unauthorized = resp.status == 401;
        rc = gcp_api_error(method, url, &resp, err);
    }
    dhaf_http_resp_release(&resp);
    return rc;
}

/**
 * One API call with retries: a 401 drops the cached token and tries once more with a new one;
 * 429, 5xx and transport failures are retried with backoff (Retry-After honoured) while
 * attempts and the deadline last. Returns 0 with the reply object in *out (caller decrefs).
 */
static int gcp_call(struct gcp *g, const char *method, const char *url, const char *body,
                    int64_t deadline, json_t **out, struct dhaf_err *err)
{
    bool refreshed = false;
    int64_t backoff = GCP_BACKOFF_MS;
    *out = NULL;
    for (int attempt = 1;; attempt++) {
        bool unauthorized = false;
        long retry_after = -1;
        int rc = call_once(g, method, url, body, deadline, out, &unauthorized, &retry_after, err);
        if (rc == 0)
            return 0;
        if (unauthorized && !refreshed) {
            /* The token expired early or was revoked: one more try with a fresh one. */
            refreshed = true;
            free_secret(&g->token);
            attempt--;
            DHAF_LOG(DHAF_LOG_INFO, "event=gcp-token-refresh service=%s reason=http-401",
                     g->service);
            continue;
        }
        if (!transient(rc) || attempt >= GCP_ATTEMPTS)
            return rc;
        int64_t wait = retry_after >= 0 ? retry_after * 1000 : backoff;
        if (wait > GCP_RETRY_AFTER_MS)
            wait = GCP_RETRY_AFTER_MS;
        backoff *= 2;
        if (dhaf_mono_ms() + wait >= deadline)
            return rc;
        char why[256];
        DHAF_LOG(DHAF_LOG_WARN, "event=gcp-retry service=%s attempt=%d wait_ms=%lld reason=\"%s\"",
                 g->service, attempt, (long long)wait, dhaf_log_quote(why, sizeof(why), err->msg));
        sw_fence_sleep(g->fence, wait);
    }
}

/* The project's metadata as read by projects.get. */
struct gcp_meta {
    json_t *reply;           /* owned */
    const char *fingerprint; /* borrowed from reply; NULL when absent */
    json_t *items;           /* borrowed; NULL when absent */
    const char *value;       /* our key's value; NULL when the key is absent */
};

static void meta_release(struct gcp_meta *m)
{
    json_decref(m->reply);
    memset(m, 0, sizeof(*m));
}

/* projects.get, validated: commonInstanceMetadata{fingerprint, items[{key, value}]}. */
static int meta_get(struct gcp *g, int64_t deadline, struct gcp_meta *m, struct dhaf_err *err)
{
    memset(m, 0, sizeof(*m));
    char *url = dhaf_xasprintf("%s?fields=commonInstanceMetadata", g->project_url);
    int rc = gcp_call(g, "GET", url, NULL, deadline, &m->reply, err);
    if (rc != 0)
        goto out;
    const char *bad = NULL;
    json_t *cim = json_object_get(m->reply, "commonInstanceMetadata");
    if (cim && !json_is_object(cim)) {
        bad = "commonInstanceMetadata is not an object";
    } else if (cim) {
        json_t *fp = json_object_get(cim, "fingerprint");
        m->items = json_object_get(cim, "items");
        if (fp && !json_is_string(fp))
            bad = "commonInstanceMetadata.fingerprint is not a string";
        else if (m->items && !json_is_array(m->items))
            bad = "commonInstanceMetadata.items is not an array";
        m->fingerprint = fp ? json_string_value(fp) : NULL;
    }
    size_t i;
    json_t *it;
    if (!bad && m->items)
        json_array_foreach(m->items, i, it)
        {
            const char *k = json_is_object(it) ? dhaf_json_str(it, "key") : NULL;
            json_t *v = json_is_object(it) ? json_object_get(it, "value") : NULL;
            if (!k) {
                bad = "a metadata item without a string key";
                break;
            }
            if (strcmp(k, g->conf->metadata_key) != 0)
                continue;
            if (v && !json_is_string(v)) {
                bad = "our metadata item's value is not a string";
                break;
            }
            if (!m->value) /* an absent value is an empty one */
                m->value = v ? json_string_value(v) : "";
        }
    if (bad) {
        rc = dhaf_err_set(err, DHAF_EPROTO, "GET %s: malformed reply: %s", url, bad);
        err->status = 200;
    }
out:
    if (rc != 0)
        meta_release(m);
    free(url);
    return rc;
}

/* The operation's name and status, checked. */
int gcp_op_parse(const json_t *op, const char *where, const char **name, const char **status,
                 struct dhaf_err *err)
{
    *name = dhaf_json_str(op, "name");
    *status = dhaf_json_str(op, "status");
    bool ok = *name && **name && strlen(*name) <= 200;
    for (const char *p = *name; ok && *p; p++)
        ok = isalnum((unsigned char)*p) || *p == '-' || *p == '_';
    if (!ok)
        return dhaf_err_set(err, DHAF_EPROTO, "%s: the reply is not an operation (no usable name)",
                            where);
    if (!*status || (strcmp(*status, "PENDING") != 0 && strcmp(*status, "RUNNING") != 0 &&
                     strcmp(*status, "DONE") != 0))
        return dhaf_err_set(err, DHAF_EPROTO,
                            "%s: operation %s has no status PENDING, RUNNING "
                            "or DONE",
                            where, *name);
    return 0;
}

/* A DONE operation: 0 without `error`, else its errors[].code/message and httpErrorStatusCode. */
int gcp_op_result(const json_t *op, const char *name, struct dhaf_err *err)
{
    const json_t *e = json_object_get(op, "error");
    if (!e)
        return 0;
    int64_t http = 0;
    dhaf_json_int(op, "httpErrorStatusCode", &http);
    const json_t *errs = json_is_object(e) ? json_object_get(e, "errors") : NULL;
    char msg[400] = "", t1[64], t2[GCP_TEXT_MAX + 1];
    size_t o = 0, i;
    const json_t *it;
    if (json_is_array(errs))
        json_array_foreach(errs, i, it)
        {
            const char *c = dhaf_json_str(it, "code"), *m = dhaf_json_str(it, "message");
            if (o < sizeof(msg))
                o += (size_t)snprintf(msg + o, sizeof(msg) - o, "%s%s: %s", o ? "; " : "",
                                      clean(t1, sizeof(t1), c ? c : "(no code)"),
                                      clean(t2, sizeof(t2), m ? m : "(no message)"));
        }
    if (!*msg) {
        const char *hm = dhaf_json_str(op, "httpErrorMessage");
        snprintf(msg, sizeof(msg), "%s", clean(t2, sizeof(t2), hm ? hm : "(no detail)"));
    }
    int rc = dhaf_err_set(err, http >= 400 ? status_code((long)http) : DHAF_EIO,
                          "operation %s failed (HTTP %lld): %s", name, (long long)http, msg);
    err->status = (int)http;
    return rc;
}

/* Polls the operation (GET .../global/operations/{name}) until DONE or the deadline. op is
 * the reply of the call that started it (taken). */
static int op_wait(struct gcp *g, json_t *op, int64_t deadline, struct dhaf_err *err)
{
    int64_t t0 = dhaf_mono_ms(),
            until = t0 + GCP_OP_WAIT_MS < deadline ? t0 + GCP_OP_WAIT_MS : deadline;
    const char *name, *status;
    char *url = NULL, *where = dhaf_xasprintf("POST %s/setCommonInstanceMetadata", g->project_url);
    int rc, polls = 0;
    for (;;) {
        if ((rc = gcp_op_parse(op, where, &name, &status, err)) != 0)
            break;
        if (strcmp(status, "DONE") == 0) {
            rc = gcp_op_result(op, name, err);
            DHAF_LOG(DHAF_LOG_DEBUG,
                     "event=gcp-operation-done service=%s operation=%s polls=%d "
                     "ms=%lld ok=%d",
                     g->service, name, polls, (long long)(dhaf_mono_ms() - t0), rc == 0);
            break;
        }
        if (!url) {
            char *esc = path_escape(name);
            url = dhaf_xasprintf("%s/global/operations/%s", g->project_url, esc);
            free(esc);
            free(where);
            where = dhaf_xasprintf("GET %s", url);
        }
        if (dhaf_mono_ms() + GCP_OP_POLL_MS >= until) {
            rc = dhaf_err_set(err, DHAF_EUNKNOWN_OUTCOME,
                              "operation %s still %s after %lld ms (%d polls); the metadata "
                              "change may yet happen",
                              name, status, (long long)(dhaf_mono_ms() - t0), polls);
            break;
        }
        sw_fence_sleep(g->fence, GCP_OP_POLL_MS);
        json_t *next = NULL;
        polls++;
        if ((rc = gcp_call(g, "GET", url, NULL, until, &next, err)) != 0) {
            char was[DHAF_ERR_MSG_MAX];
            int st = err->status;
            memcpy(was, err->msg, sizeof(was));
            rc = dhaf_err_set(err, rc, "waiting for the operation: %s", was);
            err->status = st;
            break;
        }
        json_decref(op);
        op = next;
    }
    json_decref(op);
    free(url);
    free(where);
    return rc;
}

/* The setCommonInstanceMetadata body: every item as read, ours set to ip (or added). */
static char *set_body(const struct gcp *g, const struct gcp_meta *m, const char *ip)
{
    json_t *items = json_array(),
           *mine = json_pack("{s:s, s:s}", "key", g->conf->metadata_key, "value", ip);
    bool placed = false;
    size_t i;
    json_t *it;
    if (m->items)
        json_array_foreach(m->items, i, it)
        {
            if (strcmp(dhaf_json_str(it, "key"), g->conf->metadata_key) != 0)
                json_array_append(items, it); /* unchanged, every field */
            else if (!placed)
                placed = json_array_append(items, mine) == 0; /* keeps its position */
        }
    if (!placed)
        json_array_append(items, mine);
    json_t *body = json_pack("{s:s, s:o}", "fingerprint", m->fingerprint, "items", items);
    char *text = dhaf_json_dump(body);
    json_decref(body);
    json_decref(mine);
    return text;
}

/* ---- the provider -------------------------------------------------------------------------- */

static void gcp_destroy(void *state)
{
    struct gcp *g = state;
    if (!g)
        return;
    free_secret(&g->token);
    EVP_PKEY_free(g->pkey);
    free(g->client_email);
    free(g->token_uri);
    free(g->key_id);
    free(g->project_url);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static void err_out(struct dhaf_err *err, const struct dhaf_err *e)
{
    if (err)
        *err = *e;
}

static int gcp_init(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                    struct dhaf_err *err)
{
    struct dhaf_err e = {0};
    struct gcp *g = dhaf_xcalloc(1, sizeof(*g));
    *state = NULL;
    g->conf = conf;
    g->eps = ctx->eps;
    g->n_eps = ctx->n_eps;
    g->service = ctx->service ? ctx->service : "-";
    pthread_mutex_init(&g->lock, NULL);
    char *project = path_escape(g->conf->project);
    g->project_url = dhaf_xasprintf("%s/projects/%s", g->conf->api_url, project);
    free(project);

    int rc = key_load(g, &e);
    if (rc != 0)
        goto out;
    /* Fail fast on a key Google refuses; an unreachable endpoint only delays the first token
     * (no remote change is made here either way). */
    rc = token_fetch(g, dhaf_mono_ms() + GCP_INIT_TOKEN_MS, &e);
    if (rc != 0 && transient(rc)) {
        char why[256];
        DHAF_LOG(DHAF_LOG_WARN, "event=gcp-token-deferred service=%s reason=\"%s\"", g->service,
                 dhaf_log_quote(why, sizeof(why), e.msg));
        rc = 0;
    } else if (rc != 0) {
        char was[DHAF_ERR_MSG_MAX];
        memcpy(was, e.msg, sizeof(was));
        int st = e.status;
        dhaf_err_set(&e, rc, "credentials file %s: %s", g->conf->credentials_path, was);
        e.status = st;
    }
out:
    if (rc != 0) {
        err_out(err, &e);
        gcp_destroy(g);
        return rc;
    }
    DHAF_LOG(DHAF_LOG_INFO, "event=gcp-init service=%s project=%s key=%s account=%s", g->service,
             g->conf->project, g->conf->metadata_key, g->client_email);
    *state = g;
    return 0;
}

static int gcp_current(void *state, const struct dhaf_fence *fence, int *ep, struct dhaf_err *err)
{
    struct gcp *g = state;
    struct dhaf_err e = {0};
    struct gcp_meta m;
    *ep = -1;
    pthread_mutex_lock(&g->lock);
    g->fence = fence;
    int rc = meta_get(g, dhaf_mono_ms() + GCP_READ_MS, &m, &e);
    if (rc == 0) {
        if (!m.value) {
            rc = dhaf_err_set(&e, DHAF_ENOTFOUND, "project %s has no metadata key %s",
                              g->conf->project, g->conf->metadata_key);
        } else {
            *ep = ep_of(g, m.value);
            if (*ep < 0) {
                char v[64];
                DHAF_LOG(DHAF_LOG_DEBUG, "event=gcp-current-unknown service=%s key=%s value=\"%s\"",
                         g->service, g->conf->metadata_key, dhaf_log_quote(v, sizeof(v), m.value));
            }
        }
        meta_release(&m);
    }
    g->fence = NULL;
    pthread_mutex_unlock(&g->lock);
    if (rc != 0)
        err_out(err, &e);
    return rc;
}

/* The value a conditional write expects: the expected entry point's address, or (when the
 * leader does not know) whatever the first read showed. */
static bool as_expected(const struct gcp *g, const struct dhaf_switch_req *req, const char *first,
                        const char *value)
{
    if (req->expect_from >= 0)
        return same_ip(value, &g->eps[req->expect_from]);
    return !first == !value && (!first || strcmp(first, value) == 0);
}

/* Read, compare, write under the fingerprint read: the write happens only while the metadata
 * is unchanged since a read that showed the expected value. A conflict (someone wrote in
 * between) is read again: an unrelated key's change is written over again, a change of our
 * key aborts. Called with g->lock held. */
static int switch_rounds(struct gcp *g, const struct dhaf_switch_req *req, int64_t deadline,
                         struct dhaf_err *e)
{
    const struct dhaf_ep *to = &g->eps[req->to];
    char *first = NULL;
    bool first_read = true;
    int rc;
    for (int round = 1;; round++) {
        struct gcp_meta m;
        if ((rc = meta_get(g, deadline, &m, e)) != 0)
            break;
        if (same_ip(m.value, to)) {
            meta_release(&m);
            DHAF_LOG(DHAF_LOG_INFO, "event=gcp-switch-noop service=%s key=%s ep=%s ip=%s",
                     g->service, g->conf->metadata_key, to->name, to->ip);
            break;
        }
        if (first_read)
            first = m.value ? dhaf_xstrdup(m.value) : NULL;
        first_read = false;
        if (!as_expected(g, req, first, m.value)) {
            char v[64];
            rc = dhaf_err_set(e, DHAF_ECONFLICT,
                              "metadata key %s of project %s holds \"%s\", not %s as this leader "
                              "expected: changed by someone else; not switching",
                              g->conf->metadata_key, g->conf->project,
                              clean(v, sizeof(v), m.value ? m.value : ""),
                              req->expect_from >= 0 ? g->eps[req->expect_from].ip
                                                    : "the value it read first");
            meta_release(&m);
            break;
        }
        if (!m.fingerprint) {
            meta_release(&m);
            rc = dhaf_err_set(e, DHAF_EPROTO,
                              "GET %s: malformed reply: no commonInstanceMetadata.fingerprint",
                              g->project_url);
            break;
        }
        char *body = set_body(g, &m, to->ip), rid[37];
        meta_release(&m);
        /* One requestId per round: a retried POST that already went through is not redone. */
        char *url =
            request_id(rid)
                ? dhaf_xasprintf("%s/setCommonInstanceMetadata?requestId=%s", g->project_url, rid)
                : dhaf_xasprintf("%s/setCommonInstanceMetadata", g->project_url);
        json_t *op = NULL;
        rc = gcp_call(g, "POST", url, body, deadline, &op, e);
        free(url);
        free(body);
        if (rc == 0)
            rc = op_wait(g, op, deadline, e); /* takes op */
        if (rc != DHAF_ECONFLICT)
            break;
        if (round >= GCP_CONFLICT_TRIES) {
            char was[DHAF_ERR_MSG_MAX];
            int st = e->status;
            memcpy(was, e->msg, sizeof(was));
            dhaf_err_set(e, rc, "still conflicting after %d read-compare-write rounds: %s",
                         GCP_CONFLICT_TRIES, was);
            e->status = st;
            break;
        }
        /* The fingerprint no longer matched: read again, and write only if our key still
         * holds the expected value. */
        char why[256];
        DHAF_LOG(DHAF_LOG_INFO, "event=gcp-fingerprint-conflict service=%s round=%d reason=\"%s\"",
                 g->service, round, dhaf_log_quote(why, sizeof(why), e->msg));
        sw_fence_sleep(g->fence, 50 * round);
    }
    free(first);
    return rc;
}

static int gcp_switch_to(void *state, const struct dhaf_switch_req *req, struct dhaf_err *err)
{
    struct gcp *g = state;
    struct dhaf_err e = {0};
    if (req->to >= g->n_eps || (req->expect_from >= 0 && (size_t)req->expect_from >= g->n_eps)) {
        dhaf_err_set(&e, DHAF_EINVAL, "no entry point %zu or %d (the service has %zu)", req->to,
                     req->expect_from, g->n_eps);
        err_out(err, &e);
        return DHAF_EINVAL;
    }
    const struct dhaf_ep *to = &g->eps[req->to];
    int64_t t0 = dhaf_mono_ms(), deadline = t0 + GCP_SWITCH_MS;
    pthread_mutex_lock(&g->lock);
    g->fence = req->fence;
    int rc = switch_rounds(g, req, deadline, &e);
    g->fence = NULL;
    pthread_mutex_unlock(&g->lock);
    if (rc == 0) {
        DHAF_LOG(DHAF_LOG_INFO, "event=gcp-switch service=%s project=%s key=%s ep=%s ip=%s ms=%lld",
                 g->service, g->conf->project, g->conf->metadata_key, to->name, to->ip,
                 (long long)(dhaf_mono_ms() - t0));
        return 0;
    }
    err_out(err, &e);
    return rc;
}

const struct dhaf_provider dhaf_switcher_google_cloud = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_SWITCHER,
    .type = "google-cloud",
    .summary = "Switches entry points through a Google Cloud gateway (project metadata).",
    .keys = gcp_keys,
    .config_size = sizeof(struct gcp_config),
    .init = gcp_init,
    .destroy = gcp_destroy,
    .switch_to = gcp_switch_to,
    .current = gcp_current,
};
