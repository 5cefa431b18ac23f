/* SPDX-License-Identifier: MIT */
/* Repeat collapsing (node/repeats.c) in virtual time: the first of a subject goes out at once,
 * repeats within the window are held and come out at its end as one summary with a count, at
 * most one message a window while they go on, other subjects are not held, nothing is lost
 * across a save and load, and a malformed state is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "repeats.h"

#define T0 1790000000000LL /* Unix ms */
#define W  60000           /* the window */

static json_t *rec(uint64_t seq, const char *kind, const char *service, const char *from,
                   int64_t at)
{
    json_t *j = json_object();
    json_object_set_new(j, "seq", json_integer((json_int_t)seq));
    json_object_set_new(j, "kind", json_string(kind));
    json_object_set_new(j, "level", json_string("warning"));
    if (service)
        json_object_set_new(j, "service", json_string(service));
    if (from)
        json_object_set_new(j, "from", json_string(from));
    char msg[128];
    snprintf(msg, sizeof(msg), "%s #%llu", kind, (unsigned long long)seq);
    json_object_set_new(j, "message", json_string(msg));
    json_object_set_new(j, "at", json_integer(at));
    return j;
}

/* What the notifier's worker does with one event at its time: flush due windows (counted in
 * *sent), then send or hold. Returns true when the event itself was sent. */
static bool offer(struct repeats *r, json_t *j, size_t *sent)
{
    int64_t at = 0;
    json_t *a = json_object_get(j, "at");
    at = json_integer_value(a);
    size_t slot;
    json_t *sum;
    while ((sum = repeats_due(r, at, &slot)) != NULL) {
        json_decref(sum);
        repeats_flushed(r, slot);
        (*sent)++;
    }
    bool held = repeats_would_hold(r, j);
    if (held) {
        repeats_hold(r, j);
    } else {
        repeats_sent(r, j);
        (*sent)++;
    }
    json_decref(j);
    return !held;
}

static void test_first_at_once_then_one_summary(void **state)
{
    (void)state;
    struct repeats *r = repeats_new(W);
    size_t sent = 0;
    assert_true(offer(r, rec(1, "ep-down", "web", "ep-1", T0), &sent));
    for (int i = 0; i < 8; i++) /* 8 more within the window: held */
        assert_false(
            offer(r, rec(2 + (uint64_t)i, "ep-down", "web", "ep-1", T0 + 1000 + i * 5000), &sent));
    assert_int_equal(sent, 1);
    assert_int_equal(repeats_held(r), 8);
    assert_int_equal(repeats_next_due(r), T0 + W);
    size_t slot;
    assert_null(repeats_due(r, T0 + W - 1, &slot)); /* not before the window ends */
    json_t *sum = repeats_due(r, T0 + W, &slot);
    assert_non_null(sum);
    assert_string_equal(json_string_value(json_object_get(sum, "message")),
                        "ep-down #9 (and 7 more like it in 60 s)");
    assert_int_equal(json_integer_value(json_object_get(sum, "seq")), 9); /* the last one */
    assert_int_equal(json_integer_value(json_object_get(sum, "repeats")), 7);
    json_decref(sum);
    /* not flushed (the send failed): the same summary again */
    sum = repeats_due(r, T0 + W, &slot);
    assert_non_null(sum);
    json_decref(sum);
    repeats_flushed(r, slot);
    assert_int_equal(repeats_held(r), 0);
    assert_int_equal(repeats_next_due(r), INT64_MAX);
    repeats_free(r);
}

static void test_other_subjects_are_not_held(void **state)
{
    (void)state;
    struct repeats *r = repeats_new(W);
    size_t sent = 0;
    assert_true(offer(r, rec(1, "ep-down", "web", "ep-1", T0), &sent));
    assert_true(offer(r, rec(2, "ep-down", "web", "ep-2", T0 + 10), &sent)); /* another EP */
    assert_true(offer(r, rec(3, "ep-down", "api", "ep-1", T0 + 20), &sent)); /* another service */
    assert_true(offer(r, rec(4, "ep-up", "web", "ep-1", T0 + 30), &sent));   /* another kind */
    assert_false(offer(r, rec(5, "ep-down", "web", "ep-1", T0 + 40), &sent));
    assert_int_equal(sent, 4);
    repeats_free(r);
}

static void test_one_message_a_window_while_repeats_go_on(void **state)
{
    (void)state;
    struct repeats *r = repeats_new(W);
    size_t sent = 0;
    /* a flap every 10 s for 5 minutes: the first, then one summary per window */
    for (int i = 0; i < 30; i++)
        offer(r, rec(1 + (uint64_t)i, "ep-down", "web", "ep-1", T0 + i * 10000), &sent);
    size_t slot;
    json_t *sum;
    while ((sum = repeats_due(r, T0 + 10 * W, &slot)) != NULL) {
        json_decref(sum);
        repeats_flushed(r, slot);
        sent++;
    }
    assert_int_equal(sent, 1 + 5); /* windows end at 60, 120, 180, 240, 300 s */
    assert_int_equal(repeats_held(r), 0);
    /* quiet long enough: the next one goes out at once again */
    assert_true(offer(r, rec(99, "ep-down", "web", "ep-1", T0 + 20 * W), &sent));
    repeats_free(r);
}

static void test_a_single_repeat_keeps_its_message(void **state)
{
    (void)state;
    struct repeats *r = repeats_new(W);
    size_t sent = 0;
    offer(r, rec(1, "failover", "web", "ep-1", T0), &sent);
    offer(r, rec(2, "failover", "web", "ep-1", T0 + 5000), &sent);
    size_t slot;
    json_t *sum = repeats_due(r, T0 + W, &slot);
    assert_non_null(sum);
    assert_string_equal(json_string_value(json_object_get(sum, "message")), "failover #2");
    json_decref(sum);
    repeats_free(r);
}

static void test_save_and_load_keep_what_is_held(void **state)
{
    (void)state;
    struct repeats *r = repeats_new(W);
    size_t sent = 0;
    offer(r, rec(1, "node-down", NULL, NULL, T0), &sent);
    offer(r, rec(2, "node-down", NULL, NULL, T0 + 1000), &sent);
    offer(r, rec(3, "node-down", NULL, NULL, T0 + 2000), &sent);
    assert_true(repeats_dirty(r));
    char *text = repeats_save(r);
    assert_true(repeats_dirty(r)); /* until it is known to be in etcd */
    repeats_saved(r);
    assert_false(repeats_dirty(r));
    repeats_free(r);
    /* a new leader, and one that collapses nothing any more: held events still go out */
    struct repeats *b = repeats_new(0);
    struct dhaf_err err;
    assert_int_equal(repeats_load(b, text, &err), 0);
    free(text);
    assert_int_equal(repeats_held(b), 2);
    json_t *again = rec(4, "node-down", NULL, NULL, T0 + 3000);
    assert_false(repeats_would_hold(b, again)); /* window 0: nothing new is held */
    json_decref(again);
    size_t slot;
    json_t *sum = repeats_due(b, T0 + W, &slot);
    assert_non_null(sum);
    assert_string_equal(json_string_value(json_object_get(sum, "message")),
                        "node-down #3 (and 1 more like it in 60 s)");
    json_decref(sum);
    repeats_flushed(b, slot);
    assert_int_equal(repeats_held(b), 0);
    repeats_free(b);
}

static void test_malformed_state_is_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "[]",
        "{\"windows\": 3}",
        "{\"windows\": [{\"end\": 1, \"len\": 1, \"n\": 0}]}",
        "{\"windows\": [{\"key\": \"k\", \"end\": \"x\", \"len\": 1, \"n\": 0}]}",
        "{\"windows\": [{\"key\": \"k\", \"end\": 1, \"n\": 0}]}",             /* no length */
        "{\"windows\": [{\"key\": \"k\", \"end\": 1, \"len\": 1, \"n\": 2}]}", /* no record */
        "{\"windows\": [{\"key\": \"k\", \"end\": 1, \"len\": 1, \"n\": -1}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct repeats *r = repeats_new(W);
        struct dhaf_err err = {0};
        assert_int_not_equal(repeats_load(r, bad[i], &err), 0);
        assert_true(err.msg[0] != '\0');
        assert_int_equal(repeats_held(r), 0);
        repeats_free(r);
    }
}

static void test_full_table_sends(void **state)
{
    (void)state;
    struct repeats *r = repeats_new(W);
    size_t sent = 0;
    char ep[32];
    for (int i = 0; i < REPEATS_MAX + 5; i++) {
        snprintf(ep, sizeof(ep), "ep-%d", i);
        assert_true(offer(r, rec(1 + (uint64_t)i, "ep-down", "web", ep, T0), &sent));
    }
    /* subjects beyond the table are never held (nothing is dropped) */
    snprintf(ep, sizeof(ep), "ep-%d", REPEATS_MAX + 2);
    assert_true(offer(r, rec(999, "ep-down", "web", ep, T0 + 1), &sent));
    repeats_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_at_once_then_one_summary),
        cmocka_unit_test(test_other_subjects_are_not_held),
        cmocka_unit_test(test_one_message_a_window_while_repeats_go_on),
        cmocka_unit_test(test_a_single_repeat_keeps_its_message),
        cmocka_unit_test(test_save_and_load_keep_what_is_held),
        cmocka_unit_test(test_malformed_state_is_refused),
        cmocka_unit_test(test_full_table_sends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
