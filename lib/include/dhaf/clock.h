/* SPDX-License-Identifier: MIT */
/* Time and thread helpers every part uses: the monotonic clock (for deadlines and freshness:
 * never compared between machines), the wall clock (for records shown to people), and a
 * thread join with a deadline. */
#ifndef DHAF_CLOCK_H
#define DHAF_CLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/** Milliseconds of CLOCK_MONOTONIC. */
int64_t dhaf_mono_ms(void);

/** Unix time in milliseconds (CLOCK_REALTIME). */
int64_t dhaf_wall_ms(void);

/** Joins t, waiting at most ms; true when it ended (false: it is still running). */
bool dhaf_join_within(pthread_t t, int64_t ms);

#endif
