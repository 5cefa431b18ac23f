/* SPDX-License-Identifier: MIT */
/* One HTTP(S) request to a third-party API (Cloudflare, Google, Telegram) with a hard deadline
 * and a size-capped response; libcurl's multi interface underneath. */
#ifndef DHAF_HTTP_H
#define DHAF_HTTP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "dhaf/cancel.h"
#include "dhaf/err.h"

struct dhaf_http_req {
    const char *method;         /* "GET", "POST", "PATCH", "PUT", "DELETE" */
    const char *url;            /* may carry a secret (Telegram): never printed */
    const char *shown_url;      /* what errors show instead of url; NULL = url */
    const char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
    const char *body;           /* may be NULL */
    size_t body_len;
    int timeout_ms;             /* the whole request, connect included (required, > 0) */
    const char *ca_file;        /* extra CA bundle (a test fake's certificate); NULL = system */
    size_t max_response;        /* bytes; 0 = 1 MiB */
    struct dhaf_cancel *cancel; /* another thread cuts the request short (a notifier that stops
                                   during a long poll, a term that closes); NULL = runs to its
                                   answer or deadline */
};

struct dhaf_http_resp {
    long status; /* HTTP status */
    char *body;  /* NUL-terminated; caller frees with dhaf_http_resp_release */
    size_t body_len;
    long retry_after; /* seconds from a Retry-After header; -1 when absent */
};

/**
 * Performs req. Returns 0 when an HTTP response arrived (any status: the caller judges it),
 * DHAF_ETIMEOUT past the deadline, DHAF_EUNAVAILABLE when no connection could be made,
 * DHAF_ETOOBIG when the response exceeds max_response, DHAF_ECANCELLED when req->cancel fired,
 * DHAF_EINVAL for a bad request; err says
 * what happened and where (shown_url).
 */
int dhaf_http_do(const struct dhaf_http_req *req, struct dhaf_http_resp *resp,
                 struct dhaf_err *err);

void dhaf_http_resp_release(struct dhaf_http_resp *resp);

/* Copies untrusted API text (an error message in a reply) for an error or log line: control
 * characters become spaces, and text longer than len is cut with "...". Returns buf. */
const char *dhaf_http_safe_text(char *buf, size_t len, const char *s);

#endif
