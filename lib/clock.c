/* SPDX-License-Identifier: MIT */
/* Clocks, monotonic condition waits, wakers and a deadline-bounded thread join. */
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

static int64_t sys_mono(const struct dhaf_clock *c)
{
    (void)c;
    return dhaf_mono_ms();
}

static int64_t sys_wall(const struct dhaf_clock *c)
{
    (void)c;
    return dhaf_wall_ms();
}

const struct dhaf_clock dhaf_clock_system = {sys_mono, sys_wall};

void dhaf_cond_init_mono(pthread_cond_t *cond)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &ca);
    pthread_condattr_destroy(&ca);
}

static struct timespec ts_of(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    return ts;
}

bool dhaf_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t deadline_ms)
{
    if (deadline_ms <= 0) {
        pthread_cond_wait(cond, mutex);
        return true;
    }
    struct timespec ts = ts_of(deadline_ms);
    return pthread_cond_timedwait(cond, mutex, &ts) == 0;
}

void dhaf_waker_init(struct dhaf_waker *w)
{
    pthread_mutex_init(&w->lock, NULL);
    dhaf_cond_init_mono(&w->cond);
    w->bits = 0;
}

void dhaf_waker_release(struct dhaf_waker *w)
{
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
}

void dhaf_waker_kick(struct dhaf_waker *w, unsigned bits)
{
    pthread_mutex_lock(&w->lock);
    w->bits |= bits ? bits : 1u << 31;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

unsigned dhaf_waker_wait(struct dhaf_waker *w, int64_t deadline_ms)
{
    pthread_mutex_lock(&w->lock);
    while (!w->bits && (deadline_ms <= 0 || dhaf_mono_ms() < deadline_ms))
        dhaf_cond_wait_until(&w->cond, &w->lock, deadline_ms);
    unsigned b = w->bits;
    w->bits = 0;
    pthread_mutex_unlock(&w->lock);
    return b;
}

int dhaf_thread_start(pthread_t *t, bool detached, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, DHAF_THREAD_STACK);
    if (detached)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
}

bool dhaf_join_within(pthread_t t, int64_t ms)
{
    /* pthread_timedjoin_np takes an absolute CLOCK_REALTIME time */
    if (ms < 1)
        ms = 1;
    struct timespec ts = ts_of(dhaf_wall_ms() + ms);
    return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

int64_t dhaf_backoff_ms(int failures, int64_t first, int64_t max)
{
    int64_t wait = first;
    for (int k = 1; k < failures && wait < max; k++)
        wait *= 2;
    return wait < max ? wait : max;
}

bool dhaf_rate_take(struct dhaf_rate *r, int64_t now_ms, int max_per_s)
{
    if (now_ms - r->window_ms >= 1000) {
        r->window_ms = now_ms;
        r->n = 0;
    }
    if (r->n >= max_per_s)
        return false;
    r->n++;
    return true;
}
