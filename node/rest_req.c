/* SPDX-License-Identifier: MIT */
/* REST request handling that needs no connection: path segments and route patterns, the
 * switchover body, control bytes in the target and parameters, and the cross-site checks
 * (Host, Origin, Sec-Fetch-Site) of state-changing requests. */
#include "rest_req.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dhaf/json.h"

static bool is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

bool rest_path_split(const char *path, char *buf, size_t len, char **seg, size_t *n)
{
    *n = 0;
    if (!path || path[0] != '/' || strlen(path + 1) >= len)
        return false;
    memcpy(buf, path + 1, strlen(path + 1) + 1);
    char *p = buf;
    for (;;) {
        if (*n == REST_SEGMENTS_MAX)
            return false;
        seg[(*n)++] = p;
        char *slash = strchr(p, '/');
        if (!slash)
            return true;
        *slash = '\0';
        p = slash + 1;
    }
}

bool rest_path_match(const char *pattern, char *const *seg, size_t n, const char **caps)
{
    char pat[128], *ps[REST_SEGMENTS_MAX];
    size_t pn;
    if (!rest_path_split(pattern, pat, sizeof(pat), ps, &pn) || pn != n)
        return false;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ps[i], "*") == 0) {
            if (!seg[i][0])
                return false;
            if (k < 2)
                caps[k++] = seg[i];
        } else if (strcmp(ps[i], seg[i]) != 0) {
            return false;
        }
    }
    return true;
}

const char *rest_printable(char *buf, size_t len, const char *s)
{
    size_t n = 0;
    for (; s && *s && n + 1 < len && n < 64; s++)
        buf[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    buf[n] = '\0';
    return buf;
}

int rest_switchover_body(const char *body, size_t len, char *ep, char *by, struct dhaf_err *err)
{
    ep[0] = by[0] = '\0';
    json_t *j = NULL;
    int rc = dhaf_json_parse_object(body, len, "request body", &j, err);
    if (rc != 0)
        return DHAF_EINVAL;
    const char *k;
    json_t *v;
    char q[80];
    json_object_foreach(j, k, v)
    {
        bool is_ep = strcmp(k, "entry_point") == 0, is_by = strcmp(k, "requested_by") == 0;
        if (!is_ep && !is_by) {
            rc = dhaf_err_set(err, DHAF_EINVAL,
                              "request body: unknown field \"%s\" (expected entry_point, "
                              "requested_by)",
                              rest_printable(q, sizeof(q), k));
            break;
        }
        if (!json_is_string(v)) {
            rc = dhaf_err_set(err, DHAF_EINVAL, "request body: %s must be a string", k);
            break;
        }
        const char *s = json_string_value(v);
        if (is_ep && !dhaf_valid_name(s)) {
            rc = dhaf_err_set(err, DHAF_EINVAL,
                              "\"%s\" is not a valid entry point name (1-64 of A-Z a-z 0-9 _ -)",
                              rest_printable(q, sizeof(q), s));
            break;
        }
        if (is_by && !dhaf_valid_comment(s)) {
            rc = dhaf_err_set(err, DHAF_EINVAL,
                              "request body: requested_by must be UTF-8 text of at most %d bytes "
                              "without control characters",
                              REST_BY_MAX);
            break;
        }
        snprintf(is_ep ? ep : by, is_ep ? DHAF_NAME_MAX + 1 : REST_BY_MAX + 1, "%s", s);
    }
    json_decref(j);
    if (rc)
        ep[0] = by[0] = '\0';
    return rc;
}

bool rest_bytes_clean(const char *s, size_t len)
{
    for (size_t i = 0; s && i < len; i++)
        if (is_ctl((unsigned char)s[i]))
            return false;
    return true;
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

bool rest_target_clean(const char *uri)
{
    for (const char *p = uri; p && *p && *p != '?'; p++) {
        if (is_ctl((unsigned char)*p))
            return false;
        if (*p == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (hi >= 0 && lo >= 0 && is_ctl((unsigned char)(hi * 16 + lo)))
                return false;
        }
    }
    return true;
}

/* An authority ("name", "name:port", "[v6]", "[v6]:port") split into a lower-case host
 * (brackets and one trailing dot removed) and a port (-1 when absent). False when it is not
 * one. */
static bool split_authority(const char *a, size_t len, char *host, size_t hlen, int *port)
{
    *port = -1;
    if (len == 0)
        return false;
    const char *end = a + len, *hend;
    const char *h = a;
    if (*a == '[') {
        const char *close = memchr(a, ']', len);
        if (!close)
            return false;
        h = a + 1;
        hend = close;
        a = close + 1;
        if (a < end && *a != ':')
            return false;
    } else {
        const char *colon = memchr(a, ':', len);
        hend = colon ? colon : end;
        a = hend;
    }
    if (a < end) { /* ":port" */
        a++;
        if (a == end || end - a > 5)
            return false;
        int v = 0;
        for (; a < end; a++) {
            if (*a < '0' || *a > '9')
                return false;
            v = v * 10 + (*a - '0');
        }
        if (v < 1 || v > 65535)
            return false;
        *port = v;
    }
    size_t n = (size_t)(hend - h);
    if (n && h[n - 1] == '.')
        n--;
    if (n == 0 || n >= hlen)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (is_ctl(c) || c == ' ' || c == '/' || c == '@' || c >= 0x80)
            return false;
        host[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    host[n] = '\0';
    return true;
}

/* An IP literal as 16 bytes (IPv4 as IPv4-mapped IPv6); false when s is not one. */
static bool ip_bytes(const char *s, unsigned char out[16])
{
    struct in_addr v4;
    if (inet_pton(AF_INET, s, &v4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &v4, 4);
        return true;
    }
    return inet_pton(AF_INET6, s, out) == 1;
}

static bool host_is_ours(const struct rest_site *s, const char *host)
{
    if (strcmp(host, "localhost") == 0)
        return true;
    unsigned char a[16], b[16];
    if (ip_bytes(host, a))
        return s->local_ip && ip_bytes(s->local_ip, b) && memcmp(a, b, 16) == 0;
    for (size_t i = 0; i < s->n_names; i++)
        if (s->names[i] && strcasecmp(host, s->names[i]) == 0)
            return true;
    return false;
}

static bool same_host(const char *a, const char *b)
{
    unsigned char x[16], y[16];
    if (ip_bytes(a, x) && ip_bytes(b, y))
        return memcmp(x, y, 16) == 0;
    return strcmp(a, b) == 0;
}

const char *rest_cross_site(const struct rest_site *s)
{
    if (s->fetch_site && strcasecmp(s->fetch_site, "same-origin") != 0 &&
        strcasecmp(s->fetch_site, "none") != 0)
        return "a request that changes state must not come from another site (Sec-Fetch-Site)";
    char host[256];
    int host_port = -1;
    if (s->host) {
        if (!split_authority(s->host, strlen(s->host), host, sizeof(host), &host_port))
            return "the Host header is not a host name or address";
        if (!s->any_host && !host_is_ours(s, host))
            return "the Host header names neither localhost, this node's address nor its "
                   "configured name (DNS rebinding?): send a token, or use the address";
    }
    if (!s->origin)
        return NULL;
    const char *o = s->origin;
    bool https;
    if (strncasecmp(o, "https://", 8) == 0) {
        https = true;
        o += 8;
    } else if (strncasecmp(o, "http://", 7) == 0) {
        https = false;
        o += 7;
    } else {
        return "the Origin header is not this server's origin";
    }
    size_t n = strlen(o);
    if (n && o[n - 1] == '/') /* not sent by browsers, but harmless */
        n--;
    char ohost[256];
    int oport;
    if (memchr(o, '/', n) || !split_authority(o, n, ohost, sizeof(ohost), &oport))
        return "the Origin header is not this server's origin";
    if (oport < 0)
        oport = https ? 443 : 80;
    if (https != s->tls)
        return "the Origin header is not this server's origin (scheme)";
    if (s->host) {
        if (host_port < 0)
            host_port = s->tls ? 443 : 80;
        if (!same_host(ohost, host) || oport != host_port)
            return "the Origin header is not this server's origin";
    } else if (!host_is_ours(s, ohost) || oport != s->port) {
        return "the Origin header is not this server's origin";
    }
    return NULL;
}
