/* SPDX-License-Identifier: MIT */
/* Calling a switcher the way a leader does, in tests: a fence that always allows (or one a
 * test controls), no expectation of where traffic goes unless given. */
#ifndef DHAF_TEST_SWITCH_CALL_H
#define DHAF_TEST_SWITCH_CALL_H

#include <stdint.h>

#include "dhaf/cancel.h"
#include "dhaf/provider.h"

/* A fence a test controls: left is what left_ms() answers. */
struct test_fence {
    int64_t left;
    struct dhaf_cancel *cancel;
    struct dhaf_fence fence;
};

static inline int64_t test_fence_left(void *ud)
{
    return ((struct test_fence *)ud)->left;
}

static inline const struct dhaf_fence *test_fence_init(struct test_fence *f, int64_t left,
                                                       struct dhaf_cancel *cancel)
{
    f->left = left;
    f->cancel = cancel;
    f->fence = (struct dhaf_fence){.ud = f, .left_ms = test_fence_left, .cancel = cancel};
    return &f->fence;
}

/* switch_to(ep) with a fence that always allows and no expected `from`. */
static inline int sw_to(const struct dhaf_provider *p, void *state, size_t ep, struct dhaf_err *err)
{
    struct test_fence f;
    struct dhaf_switch_req req = {
        .to = ep, .expect_from = -1, .fence = test_fence_init(&f, INT64_MAX / 4, NULL)};
    return p->switch_to(state, &req, err);
}

/* switch_to(ep) expecting traffic on from (-1: unknown) under fence. */
static inline int sw_to_from(const struct dhaf_provider *p, void *state, size_t ep, int from,
                             const struct dhaf_fence *fence, struct dhaf_err *err)
{
    struct dhaf_switch_req req = {.to = ep, .expect_from = from, .fence = fence};
    return p->switch_to(state, &req, err);
}

/* current() without a fence. */
static inline int sw_current(const struct dhaf_provider *p, void *state, int *ep,
                             struct dhaf_err *err)
{
    return p->current(state, NULL, ep, err);
}

#endif
