/* SPDX-License-Identifier: MIT */
/* The built-in switchers' side of struct dhaf_fence (dhaf/provider.h): one way to ask the
 * leader's lease before a request, to bound the request by it, and to wait between retries
 * without outliving it. */
#ifndef DHAF_SWITCHER_FENCE_H
#define DHAF_SWITCHER_FENCE_H

#include <stdint.h>

#include "dhaf/err.h"
#include "dhaf/http.h"
#include "dhaf/provider.h"

/** How long the leader may still act: fence->left_ms(), or INT64_MAX without a fence. */
int64_t sw_fence_left(const struct dhaf_fence *f);

/** Waits ms, or less once the fence says the leader may no longer act. */
void sw_fence_sleep(const struct dhaf_fence *f, int64_t ms);

/**
 * dhaf_http_do under the fence: nothing is sent once the lease is over (DHAF_EFENCED, "not
 * sent"); req->timeout_ms is cut to what is left of it; the term's cancel token ends the
 * request at once when the term closes (DHAF_EFENCED, "cut short"). Otherwise as
 * dhaf_http_do. f may be NULL (a plain request).
 */
int sw_fenced_http(const struct dhaf_fence *f, struct dhaf_http_req *req,
                   struct dhaf_http_resp *resp, struct dhaf_err *err);

#endif
