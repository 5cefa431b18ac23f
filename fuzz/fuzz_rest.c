/* SPDX-License-Identifier: MIT */
/* libFuzzer target: REST request handling that needs no connection (node/rest_req.c): the raw
 * request target (control bytes), its path against the gateway's route patterns, its query
 * parameters %-decoded as libmicrohttpd does, the cross-site checks of a state-changing request
 * (Host, Origin, Sec-Fetch-Site), and the JSON body of a switchover.
 * Input: one flags byte, then fields separated by '\n': target, Host, Origin, Sec-Fetch-Site,
 * the connection's local address; the rest is the body. Flags: 1 TLS, 2 token-authenticated,
 * 4/8/16 no Host/Origin/Sec-Fetch-Site header. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dhaf/log.h"
#include "dhaf/valid.h"
#include "rest_req.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The gateway's route patterns (node/rest.c routes[]). */
static const char *const patterns[] = {
    "/api/v1/cluster",
    "/api/v1/services",
    "/api/v1/services/*",
    "/api/v1/services/*/candidates",
    "/api/v1/services/*/switchover",
    "/api/v1/services/*/events",
    "/api/v1/events",
    "/api/v1/nodes/*",
    "/api/v1/version",
    "/ping",
    "/dhaf/status",
    "/services/status",
    "/service/status",
    "/switchover",
    "/switchover/purge",
    "/switchover/candidates",
    "/dhaf/node/decommission",
    "/healthz",
    "/readyz",
    "/metrics",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dhaf_log_setup(DHAF_LOG_ERROR, DHAF_LOG_TEXT);
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* %-decodes s[0..n) in place as libmicrohttpd does ('+' is a space in the query); new length. */
static size_t unescape(char *s, size_t n, bool plus)
{
    size_t w = 0;
    for (size_t r = 0; r < n; r++) {
        if (s[r] == '%' && r + 2 < n && hexval(s[r + 1]) >= 0 && hexval(s[r + 2]) >= 0) {
            s[w++] = (char)(hexval(s[r + 1]) * 16 + hexval(s[r + 2]));
            r += 2;
        } else {
            s[w++] = plus && s[r] == '+' ? ' ' : s[r];
        }
    }
    return w;
}

/* The reference for rest_bytes_clean. */
static bool has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
            return true;
    return false;
}

/* A field up to '\n' (or the end) as a NUL-terminated copy; *p moves past it. */
static char *field(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
    size_t n = (size_t)((nl ? nl : end) - *p);
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, *p, n);
    s[n] = '\0';
    *p = nl ? nl + 1 : end;
    return s;
}

static void check_path(const char *target)
{
    size_t tl = strcspn(target, "?");
    char *path = malloc(tl + 1);
    if (!path)
        abort();
    memcpy(path, target, tl);
    path[unescape(path, tl, false)] = '\0';
    char buf[514], *seg[REST_SEGMENTS_MAX];
    size_t n = 0;
    if (rest_path_split(path, buf, sizeof(buf), seg, &n)) {
        if (n < 1 || n > REST_SEGMENTS_MAX)
            abort();
        for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
            const char *caps[2] = {NULL, NULL};
            if (!rest_path_match(patterns[i], seg, n, caps))
                continue;
            for (int k = 0; k < 2; k++)
                if (caps[k] && (caps[k] < buf || caps[k] >= buf + sizeof(buf) || !caps[k][0]))
                    abort();
            if (strchr(patterns[i], '*') && !caps[0])
                abort();
        }
    }
    free(path);
}

static void check_query(const char *target)
{
    const char *q = strchr(target, '?');
    if (!q)
        return;
    char *copy = strdup(q + 1);
    if (!copy)
        abort();
    char *save = NULL;
    for (char *kv = strtok_r(copy, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        size_t kn = eq ? (size_t)(eq - kv) : strlen(kv);
        kn = unescape(kv, kn, true);
        if (rest_bytes_clean(kv, kn) == has_ctl(kv, kn))
            abort();
        if (eq) {
            size_t vn = unescape(eq + 1, strlen(eq + 1), true);
            if (rest_bytes_clean(eq + 1, vn) == has_ctl(eq + 1, vn))
                abort();
        }
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    const uint8_t *p = data + 1, *end = data + size;
    char *target = field(&p, end), *host = field(&p, end), *origin = field(&p, end);
    char *fetch = field(&p, end), *local = field(&p, end);

    (void)rest_target_clean(target);
    check_path(target);
    check_query(target);

    static const char *const names[] = {"dhaf-1.example", "node-a"};
    struct rest_site site = {
        .host = flags & 4 ? NULL : host,
        .origin = flags & 8 ? NULL : origin,
        .fetch_site = flags & 16 ? NULL : fetch,
        .local_ip = local,
        .names = names,
        .n_names = 2,
        .tls = flags & 1,
        .port = 8128,
        .any_host = flags & 2,
    };
    const char *why = rest_cross_site(&site);
    if (!why && site.fetch_site && strcasecmp(site.fetch_site, "same-origin") != 0 &&
        strcasecmp(site.fetch_site, "none") != 0)
        abort(); /* a cross-site fetch passed */
    if (!why && site.origin && strncasecmp(site.origin, "http", 4) != 0)
        abort(); /* an Origin that is no origin passed */

    char ep[DHAF_NAME_MAX + 1], by[REST_BY_MAX + 1];
    struct dhaf_err err;
    if (rest_switchover_body((const char *)p, (size_t)(end - p), ep, by, &err) == 0) {
        if (ep[0] && !dhaf_valid_name(ep))
            abort();
        if (strlen(by) > REST_BY_MAX || has_ctl(by, strlen(by)))
            abort();
    } else if (ep[0] || by[0] || !err.msg[0]) {
        abort();
    }
    free(target);
    free(host);
    free(origin);
    free(fetch);
    free(local);
    return 0;
}
