/* SPDX-License-Identifier: MIT */
/* Clocks and a deadline-bounded thread join. */
#include <time.h>

#include "dhaf/clock.h"

int64_t dhaf_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dhaf_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool dhaf_join_within(pthread_t t, int64_t ms)
{
    /* pthread_timedjoin_np takes an absolute CLOCK_REALTIME time */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ms < 1)
        ms = 1;
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(t, NULL, &ts) == 0;
}
