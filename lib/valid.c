/* SPDX-License-Identifier: MIT */
/* Validators for names, addresses, endpoints and HTTP code patterns. */
#include <arpa/inet.h>
#include <errno.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "dhaf/alloc.h"
#include "dhaf/valid.h"

bool dhaf_valid_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!isalnum(c) && c != '-' && c != '_')
            return false;
        if (!(c < 0x80))
            return false;
    }
    return n >= 1 && n <= DHAF_NAME_MAX;
}

bool dhaf_valid_ip(const char *s, int *family)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, s, buf) == 1) {
        if (family)
            *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, buf) == 1) {
        if (family)
            *family = AF_INET6;
        return true;
    }
    return false;
}

bool dhaf_valid_hostname(const char *s)
{
    size_t total = strlen(s);
    if (total == 0 || total > 253)
        return false;
    if (s[total - 1] == '.')
        total--; /* a fully qualified name may end with a dot */
    size_t label = 0;
    for (size_t i = 0; i < total; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!(isalnum(c) && c < 0x80) && c != '-' && c != '_')
            return false;
        if (label == 0 && c == '-')
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[total - 1] != '-';
}

bool dhaf_is_loopback_host(const char *s)
{
    if (strcasecmp(s, "localhost") == 0)
        return true;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, s, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, s, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

int dhaf_parse_endpoint(const char *s, char **host, int *port, bool *tls, char *why, size_t wl)
{
    const char *p = s;
    *tls = false;
    *host = NULL;
    if (strncasecmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strncasecmp(p, "https://", 8) == 0) {
        p += 8;
        *tls = true;
    } else if (strstr(p, "://")) {
        snprintf(why, wl, "only http:// and https:// endpoints are supported");
        return -1;
    }
    const char *h, *hend, *colon;
    if (*p == '[') {
        h = p + 1;
        hend = strchr(h, ']');
        if (!hend) {
            snprintf(why, wl, "missing ']' after an IPv6 address");
            return -1;
        }
        colon = hend + 1;
    } else {
        h = p;
        colon = strrchr(p, ':');
        hend = colon ? colon : p + strlen(p);
    }
    if (!colon || *colon != ':') {
        snprintf(why, wl, "missing :port");
        return -1;
    }
    char *name = dhaf_xstrndup(h, (size_t)(hend - h));
    bool ok = *p == '[' ? dhaf_valid_ip(name, NULL) && strchr(name, ':')
                        : dhaf_valid_ip(name, NULL) || dhaf_valid_hostname(name);
    if (!ok) {
        snprintf(why, wl, "\"%s\" is not a host name or IP address", name);
        free(name);
        return -1;
    }
    const char *ps = colon + 1;
    size_t plen = strlen(ps);
    if (plen > 0 && ps[plen - 1] == '/')
        plen--; /* tolerate http://host:2379/ */
    char *end = NULL;
    long v = plen ? strtol(ps, &end, 10) : -1;
    if (!plen || end != ps + plen || v < 1 || v > 65535) {
        snprintf(why, wl, "the port must be a number from 1 to 65535");
        free(name);
        return -1;
    }
    *host = name;
    *port = (int)v;
    return 0;
}

int dhaf_codes_parse(const char *s, struct dhaf_codes *out, char *why, size_t wl)
{
    memset(out, 0, sizeof(*out));
    size_t cap = 0;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *t = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > t && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        size_t n = (size_t)(e - t);
        bool ok = n == 3;
        for (size_t i = 0; ok && i < 3; i++) {
            char c = (char)toupper((unsigned char)t[i]);
            ok = (i == 0) ? ((c >= '1' && c <= '5') || c == 'X')
                          : (isdigit((unsigned char)c) || c == 'X');
        }
        if (!ok) {
            snprintf(why, wl, "\"%.*s\" is not a code or code range (expected e.g. 200,3XX)",
                     (int)(n > 40 ? 40 : n), t);
            dhaf_codes_release(out);
            return -1;
        }
        DHAF_GROW(out->pat, out->n + 1, cap);
        for (size_t i = 0; i < 3; i++)
            out->pat[out->n][i] = (char)toupper((unsigned char)t[i]);
        out->pat[out->n][3] = '\0';
        out->n++;
        if (!*p)
            break;
        p++;
    }
    return 0;
}

bool dhaf_codes_match(const struct dhaf_codes *c, long code)
{
    if (code < 100 || code > 999)
        return false;
    char d[4];
    snprintf(d, sizeof(d), "%03ld", code);
    for (size_t i = 0; i < c->n; i++) {
        bool m = true;
        for (int j = 0; j < 3 && m; j++)
            m = c->pat[i][j] == 'X' || c->pat[i][j] == d[j];
        if (m)
            return true;
    }
    return false;
}

void dhaf_codes_release(struct dhaf_codes *c)
{
    DHAF_FREE(c->pat);
    c->n = 0;
}

bool dhaf_parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* The length (1-4) of the well-formed UTF-8 character at p, or 0 when the bytes there are
 * none (a stray continuation byte, an overlong form, a surrogate, beyond U+10FFFF, cut). */
static size_t utf8_char(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t more = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 0;
    if (!more || c < 0xc2 || c > 0xf4)
        return 0;
    for (size_t i = 1; i <= more; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) || (c == 0xf0 && p[1] < 0x90) ||
        (c == 0xf4 && p[1] > 0x8f))
        return 0;
    return more + 1;
}

/* A control character: C0, DEL, or C1 (U+0080-U+009F, written c2 80-9f). */
static bool utf8_control(const unsigned char *p, size_t n)
{
    return (n == 1 && (p[0] < 0x20 || p[0] == 0x7f)) || (n == 2 && p[0] == 0xc2 && p[1] < 0xa0);
}

bool dhaf_valid_comment(const char *s)
{
    if (strlen(s) > DHAF_COMMENT_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_char(p);
        if (!n || utf8_control(p, n))
            return false;
        p += n;
    }
    return true;
}

size_t dhaf_utf8_clean(char *dst, size_t len, const char *src)
{
    size_t at = 0;
    if (!len)
        return 0;
    for (const unsigned char *p = (const unsigned char *)src; *p;) {
        size_t n = utf8_char(p);
        bool bad = !n || utf8_control(p, n);
        size_t put = bad ? 1 : n;
        if (at + put >= len)
            break; /* never half a character */
        if (bad)
            dst[at] = '?';
        else
            memcpy(dst + at, p, n);
        at += put;
        p += bad ? 1 : n;
    }
    dst[at] = '\0';
    return at;
}
