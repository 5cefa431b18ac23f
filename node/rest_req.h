/* SPDX-License-Identifier: MIT */
/* Checks of a REST request that need no connection, so they can be fuzzed alone
 * (fuzz/fuzz_rest.c): the bytes of the request target and of query parameters, and the
 * cross-site checks of a state-changing request (Host, Origin, Sec-Fetch-Site). */
#ifndef DHAF_NODE_REST_REQ_H
#define DHAF_NODE_REST_REQ_H

#include <stdbool.h>
#include <stddef.h>

#include "dhaf/err.h"
#include "dhaf/valid.h"

#define REST_SEGMENTS_MAX 8                /* path segments; more: no route */
#define REST_BY_MAX       DHAF_COMMENT_MAX /* requested_by: dhaf_valid_comment */

/**
 * Splits path ("/a/b") into its segments: copied into buf (len bytes), seg[] (at least
 * REST_SEGMENTS_MAX) points into it, *n counts them. False (and no route matches) when path
 * does not start with '/', does not fit buf, or has more than REST_SEGMENTS_MAX segments.
 */
bool rest_path_split(const char *path, char *buf, size_t len, char **seg, size_t *n);

/**
 * True when the segments match pattern ("/api/v1/services/ *"; '*' is one non-empty
 * segment); caps[0..1] get the first two '*' segments (pointers into seg's buffer).
 */
bool rest_path_match(const char *pattern, char *const *seg, size_t n, const char **caps);

/**
 * Parses the JSON body of POST /api/v1/services/{svc}/switchover: an object with only
 * "entry_point" (a valid name) and "requested_by" (dhaf_valid_comment: UTF-8 text, at most
 * REST_BY_MAX bytes), both strings, no duplicate keys. ep (DHAF_NAME_MAX + 1 bytes) and by
 * (REST_BY_MAX + 1) get them ("" when absent). Returns 0, or DHAF_EINVAL with err's message fit for
 * a 400.
 */
int rest_switchover_body(const char *body, size_t len, char *ep, char *by, struct dhaf_err *err);

/** Printable ASCII of untrusted s (others become '?'), cut at 64 characters, in buf of len
 * bytes, for messages; returns buf. */
const char *rest_printable(char *buf, size_t len, const char *s);

/**
 * True when s[0..len) holds no NUL and no other control byte (0x00-0x1f, 0x7f): a query
 * parameter's name or value after %-decoding, with the length libmicrohttpd decoded (a %00
 * would otherwise cut the C string short and pass). s is borrowed; NULL is clean.
 */
bool rest_bytes_clean(const char *s, size_t len);

/**
 * True when the path of the raw request target (as received, before %-decoding; the query
 * after '?' is not looked at) encodes no control byte (%00-%1F, %7F) and holds none raw.
 * uri is borrowed; NULL is clean.
 */
bool rest_target_clean(const char *uri);

/* What the cross-site check of a state-changing request looks at; all strings borrowed. */
struct rest_site {
    const char *host;         /* the Host header; NULL when absent (HTTP/1.0: not a browser) */
    const char *origin;       /* the Origin header, NULL when absent */
    const char *fetch_site;   /* the Sec-Fetch-Site header, NULL when absent */
    const char *local_ip;     /* the connection's own address, numeric (IPv6 without []) */
    const char *const *names; /* host names that are ours (case-insensitive) */
    size_t n_names;
    bool tls;      /* the request came over HTTPS (for Origin's default port) */
    int port;      /* the port the server listens on (for a Host without a port) */
    bool any_host; /* the caller proved a bearer token: a page cannot, so any Host is fine */
};

/**
 * Decides whether a request that changes state may proceed: refused when Sec-Fetch-Site is
 * anything but "same-origin" or "none", when Origin is present and is not the origin the
 * request was sent to (the Host's scheme, name and port), or when the Host (unless any_host)
 * names neither "localhost", nor the connection's own address, nor one of names (DNS
 * rebinding). Returns NULL when it may proceed, else the reason (static text).
 */
const char *rest_cross_site(const struct rest_site *s);

#endif
