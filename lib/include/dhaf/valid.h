/* SPDX-License-Identifier: MIT */
/* Validators for values that come from outside: names, addresses, URLs, HTTP code patterns. */
#ifndef DHAF_VALID_H
#define DHAF_VALID_H

#include <stdbool.h>
#include <stddef.h>

#define DHAF_NAME_MAX 64

/** True when s matches ^[A-Za-z0-9_-]{1,64}$ (cluster, node, service, EP, notifier names). */
bool dhaf_valid_name(const char *s);

/** True when s is a literal IPv4 or IPv6 address; *family (may be NULL) gets AF_INET/AF_INET6. */
bool dhaf_valid_ip(const char *s, int *family);

/** True when s is a DNS name: dot-separated labels of [A-Za-z0-9-], 1-63 each, 253 in all. */
bool dhaf_valid_hostname(const char *s);

#define DHAF_COMMENT_MAX 128

/** True when s is a caller's free-text comment fit for events, logs and mails: at most
 *  DHAF_COMMENT_MAX bytes of well-formed UTF-8 without control characters. */
bool dhaf_valid_comment(const char *s);

/** Copies text src into dst (len bytes, NUL included) as well-formed UTF-8 without control
 *  characters: a byte that is no part of a valid character, or a control character, becomes
 *  '?'; the copy ends before a character that does not fit. Returns the length copied. */
size_t dhaf_utf8_clean(char *dst, size_t len, const char *src);

/** True when ip is a loopback address or s is "localhost". */
bool dhaf_is_loopback_host(const char *s);

/**
 * Splits an endpoint `http(s)://host:port`, `host:port` or `[v6]:port` (no path). On success
 * returns 0 and fills host (caller frees), *port and *tls (https). Otherwise non-zero with the
 * reason in why.
 */
int dhaf_parse_endpoint(const char *s, char **host, int *port, bool *tls, char *why, size_t wl);

/** True when s is a whole decimal integer in min..max (stored in *out); for command-line options.
 */
bool dhaf_parse_long(const char *s, long min, long max, long *out);

/* HTTP status code patterns such as "200,3XX": X is a wildcard digit. */
struct dhaf_codes {
    size_t n;
    char (*pat)[4]; /* each three characters of [0-9X] plus NUL */
};

/** Parses a comma-separated pattern list. Returns 0, or non-zero with the reason in why. */
int dhaf_codes_parse(const char *s, struct dhaf_codes *out, char *why, size_t wl);
/** True when code matches one of the patterns. */
bool dhaf_codes_match(const struct dhaf_codes *c, long code);
/** Frees the patterns. */
void dhaf_codes_release(struct dhaf_codes *c);

#endif
