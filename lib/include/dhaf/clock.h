/* SPDX-License-Identifier: MIT */
/* Time from one place: the monotonic clock (deadlines and freshness, never compared between
 * machines), the wall clock (records shown to people), an injectable clock so that logic with
 * timeouts runs in virtual time in unit tests, condition variables on the monotonic clock, a
 * waker (a thread's inbox of "something changed" bits, kicked by others: push, not poll), and
 * a thread join with a deadline. Only this module reads the system clocks. */
#ifndef DHAF_CLOCK_H
#define DHAF_CLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/** Milliseconds of CLOCK_MONOTONIC. */
int64_t dhaf_mono_ms(void);

/** Unix time in milliseconds (CLOCK_REALTIME). */
int64_t dhaf_wall_ms(void);

/* A clock that a module is given instead of reading the system's: dhaf_clock_system in the
 * daemons, a virtual one in tests (tests/common/vclock.h). Both functions are thread-safe. */
struct dhaf_clock {
    int64_t (*mono_ms)(const struct dhaf_clock *c);
    int64_t (*wall_ms)(const struct dhaf_clock *c);
};

/** The system clocks (dhaf_mono_ms, dhaf_wall_ms). */
extern const struct dhaf_clock dhaf_clock_system;

static inline int64_t dhaf_clock_mono(const struct dhaf_clock *c)
{
    return c->mono_ms(c);
}

static inline int64_t dhaf_clock_wall(const struct dhaf_clock *c)
{
    return c->wall_ms(c);
}

/** Initialises cond to time its waits on CLOCK_MONOTONIC. */
void dhaf_cond_init_mono(pthread_cond_t *cond);

/**
 * Waits on cond (mutex held) until it is signalled or the monotonic time deadline_ms has
 * passed (deadline_ms <= 0: no deadline). Returns false when the deadline passed. Spurious
 * wake-ups return true: callers re-check their condition in a loop.
 */
bool dhaf_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t deadline_ms);

/* A waker: the bits that other threads set for one waiting thread ("a vote changed", "the
 * term closed", "reload"). Kicks are never lost: a kick that comes before the wait is seen by
 * it. */
struct dhaf_waker {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned bits;
};

void dhaf_waker_init(struct dhaf_waker *w);
void dhaf_waker_release(struct dhaf_waker *w);

/** Sets bits and wakes the waiting thread. Thread-safe; bits 0 is a plain wake-up. */
void dhaf_waker_kick(struct dhaf_waker *w, unsigned bits);

/**
 * Waits until some bit is set or the monotonic time deadline_ms passes (<= 0: no deadline),
 * then returns the bits set (clearing them); 0 on the deadline.
 */
unsigned dhaf_waker_wait(struct dhaf_waker *w, int64_t deadline_ms);

/* The stack of dhaf's own threads: their deepest paths (a TLS handshake in libcurl, a JSON
 * parse) use well under 128 KiB; the default 8 MiB only costs address space. Sanitizers need
 * more. */
#if defined(__SANITIZE_ADDRESS__)
#define DHAF_THREAD_STACK (2u << 20)
#else
#define DHAF_THREAD_STACK (512u << 10)
#endif

/** pthread_create with a DHAF_THREAD_STACK stack, detached or joinable. 0 or an errno. */
int dhaf_thread_start(pthread_t *t, bool detached, void *(*fn)(void *), void *arg);

/** Joins t, waiting at most ms; true when it ended (false: it is still running). */
bool dhaf_join_within(pthread_t t, int64_t ms);

/** The wait after `failures` failures in a row (1 or more): first, doubled for each further
 *  one, at most max (ms). */
int64_t dhaf_backoff_ms(int failures, int64_t first, int64_t max);

/* At most a number of events per second of a clock (a window restarted each second). */
struct dhaf_rate {
    int64_t window_ms; /* the current second's start */
    int n;             /* events taken in it */
};

/** Takes one event at now_ms if fewer than max_per_s were taken in the current second. Not
 *  thread-safe: the caller locks. */
bool dhaf_rate_take(struct dhaf_rate *r, int64_t now_ms, int max_per_s);

#endif
