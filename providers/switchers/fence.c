/* SPDX-License-Identifier: MIT */
/* Fenced requests and waits for the built-in switchers. */
#include <poll.h>

#include "dhaf/clock.h"
#include "fence.h"

int64_t sw_fence_left(const struct dhaf_fence *f)
{
    return f ? f->left_ms(f->ud) : INT64_MAX;
}

void sw_fence_sleep(const struct dhaf_fence *f, int64_t ms)
{
    int64_t end = dhaf_mono_ms() + ms;
    for (int64_t left = ms; left > 0 && sw_fence_left(f) > 0; left = end - dhaf_mono_ms())
        poll(NULL, 0, left > 100 ? 100 : (int)left);
}

int sw_fenced_http(const struct dhaf_fence *f, struct dhaf_http_req *req,
                   struct dhaf_http_resp *resp, struct dhaf_err *err)
{
    int64_t lease = sw_fence_left(f);
    if (lease <= 0)
        return dhaf_err_set(err, DHAF_EFENCED,
                            "%s %s: not sent: this node's leadership ended (its lease is no "
                            "longer surely valid)",
                            req->method, req->url);
    if (lease < req->timeout_ms)
        req->timeout_ms = (int)lease;
    req->cancel = f ? f->cancel : NULL;
    int rc = dhaf_http_do(req, resp, err);
    if (rc == DHAF_ECANCELLED)
        rc = dhaf_err_set(err, DHAF_EFENCED, "%s %s: cut short: this node's leadership ended",
                          req->method, req->url);
    return rc;
}
