/* SPDX-License-Identifier: MIT */
/* Small pieces every C benchmark of bench/ needs. */
#ifndef DHAF_BENCH_UTIL_H
#define DHAF_BENCH_UTIL_H

#include <signal.h>
#include <stdint.h>

/* Set by SIGINT/SIGTERM once bench_catch_signals() ran: measurements stop early, the figures
 * so far are printed and everything started is cleaned up. */
extern volatile sig_atomic_t bench_interrupted;

void bench_catch_signals(void);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t bench_now_ns(void);

#endif
