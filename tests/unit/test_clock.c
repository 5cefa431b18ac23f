/* SPDX-License-Identifier: MIT */
/* lib/clock.c's back-off and per-second rate limit, which the leader (switch and provider
 * read back-offs, drift reads), the suspicions and the prober's reconnects share. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dhaf/clock.h"

static void test_backoff(void **state)
{
    (void)state;
    static const int64_t want[] = {500, 1000, 2000, 4000, 8000, 10000, 10000};
    for (int f = 1; f <= 7; f++)
        assert_int_equal(dhaf_backoff_ms(f, 500, 10000), want[f - 1]);
    assert_int_equal(dhaf_backoff_ms(0, 500, 10000), 500); /* (no failure yet: the first) */
    assert_int_equal(dhaf_backoff_ms(1000000, 1000, 60000), 60000); /* no overflow */
    assert_int_equal(dhaf_backoff_ms(3, 7000, 5000), 5000);         /* first above the cap */
}

static void test_rate(void **state)
{
    (void)state;
    struct dhaf_rate r = {0};
    int taken = 0;
    for (int i = 0; i < 30; i++)
        taken += dhaf_rate_take(&r, 5000 + i, 20);
    assert_int_equal(taken, 20);                                /* at most 20 in that second */
    assert_false(dhaf_rate_take(&r, 5999, 20));                 /* still that second */
    assert_true(dhaf_rate_take(&r, 6000, 20));                  /* the next one */
    assert_false(dhaf_rate_take(&(struct dhaf_rate){0}, 0, 0)); /* none allowed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
