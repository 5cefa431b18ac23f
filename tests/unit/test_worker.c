/* SPDX-License-Identifier: MIT */
/* Workers (node/worker.c): kicks reach the body, a stop ends a waiting body at once, and a body
 * stuck in a call past the stop's deadline is left to end alone - its state is released once,
 * when it does, never under it. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "dhaf/clock.h"
#include "worker.h"

struct state {
    atomic_int released; /* times release ran */
    atomic_int rounds;
    atomic_uint bits_seen;
    /* a call the body is stuck in until the test lets it go */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stuck, let_go;
};

static void release(void *ud)
{
    struct state *s = ud;
    atomic_fetch_add(&s->released, 1);
}

static void waiting_body(struct worker *w)
{
    struct state *s = worker_ud(w);
    while (!worker_quit(w)) {
        unsigned bits = worker_wait(w, 0);
        atomic_fetch_or(&s->bits_seen, bits);
        atomic_fetch_add(&s->rounds, 1);
    }
}

static void stuck_body(struct worker *w)
{
    struct state *s = worker_ud(w);
    pthread_mutex_lock(&s->lock);
    s->stuck = true;
    pthread_cond_broadcast(&s->cond);
    while (!s->let_go) /* a call that does not look at the quit flag */
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

static struct state *state_new(void)
{
    struct state *s = calloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    return s;
}

static void state_free(struct state *s)
{
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

/* Polls cond with a deadline (a test's wait for another thread, never a fixed sleep). */
static bool within(int ms, atomic_int *v, int want)
{
    int64_t end = dhaf_mono_ms() + ms;
    while (atomic_load(v) != want && dhaf_mono_ms() < end) {
        struct dhaf_waker nap;
        dhaf_waker_init(&nap);
        dhaf_waker_wait(&nap, dhaf_mono_ms() + 2);
        dhaf_waker_release(&nap);
    }
    return atomic_load(v) == want;
}

static void test_kick_and_stop(void **state)
{
    (void)state;
    struct state *s = state_new();
    struct dhaf_err err;
    struct worker *w = worker_start("waiting", waiting_body, release, s, &err);
    assert_non_null(w);
    dhaf_waker_kick(worker_waker(w), 4);
    assert_true(within(5000, &s->rounds, 1));
    assert_int_equal(atomic_load(&s->bits_seen) & 4, 4);
    assert_int_equal(atomic_load(&s->released), 0);
    int64_t t0 = dhaf_mono_ms();
    assert_true(worker_stop(w, 5000)); /* ends a waiting body at once */
    assert_true(dhaf_mono_ms() - t0 < 4000);
    assert_int_equal(atomic_load(&s->released), 1);
    state_free(s);
}

static void test_stuck_body_ends_alone(void **state)
{
    (void)state;
    struct state *s = state_new();
    struct dhaf_err err;
    struct worker *w = worker_start("stuck", stuck_body, release, s, &err);
    assert_non_null(w);
    pthread_mutex_lock(&s->lock);
    while (!s->stuck)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    /* the stop's deadline passes while the body is in its call */
    assert_false(worker_stop(w, 50));
    assert_int_equal(atomic_load(&s->released), 0); /* its state is still in use */
    pthread_mutex_lock(&s->lock);
    s->let_go = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    assert_true(within(5000, &s->released, 1)); /* released by the thread, once */
    state_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kick_and_stop),
        cmocka_unit_test(test_stuck_body_ends_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
