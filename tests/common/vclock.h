/* SPDX-License-Identifier: MIT */
/* A virtual clock for unit tests: a struct dhaf_clock whose time moves only when the test says. */
#ifndef DHAF_TESTS_VCLOCK_H
#define DHAF_TESTS_VCLOCK_H

#include <stdatomic.h>
#include <stdint.h>

#include "dhaf/clock.h"

/*
 * Usage:
 *
 *     struct vclock vc;
 *     vclock_init(&vc, 1000, 1700000000000);
 *     module_new(&vc.base, ...);    // the module reads time through vc.base
 *     vclock_advance(&vc, 500);     // 500 ms pass at once, for both clocks
 *
 * Thread-safe: the times are atomics, read by any thread and moved by any thread. The two clocks
 * move together; a reader may see one moved before the other, never a clock going back.
 */
struct vclock {
    struct dhaf_clock base; /* first member: a pointer to base is a pointer to the vclock */
    _Atomic int64_t mono, wall;
};

static inline int64_t vclock_mono_ms(const struct dhaf_clock *c)
{
    return atomic_load(&((struct vclock *)c)->mono);
}

static inline int64_t vclock_wall_ms(const struct dhaf_clock *c)
{
    return atomic_load(&((struct vclock *)c)->wall);
}

/** Sets up c (caller-owned) at mono_start (monotonic ms) and wall_start (Unix ms). */
static inline void vclock_init(struct vclock *c, int64_t mono_start, int64_t wall_start)
{
    c->base.mono_ms = vclock_mono_ms;
    c->base.wall_ms = vclock_wall_ms;
    atomic_init(&c->mono, mono_start);
    atomic_init(&c->wall, wall_start);
}

/** Moves both clocks forward by ms (ms >= 0). */
static inline void vclock_advance(struct vclock *c, int64_t ms)
{
    atomic_fetch_add(&c->mono, ms);
    atomic_fetch_add(&c->wall, ms);
}

/** Sets the monotonic clock to mono (not before its current time) and moves the wall clock by
 *  the same amount. */
static inline void vclock_set(struct vclock *c, int64_t mono)
{
    int64_t old = atomic_exchange(&c->mono, mono);
    atomic_fetch_add(&c->wall, mono - old);
}

#endif
