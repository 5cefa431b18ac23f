/* SPDX-License-Identifier: MIT */
/* Terms in virtual time (node/cluster.c on the in-memory store): a won election opens a term
 * and starts the duties; a failed renewal, a lease that ran out while the process was frozen,
 * a leader key removed behind our back, and a stop each close it at once and stop every duty;
 * a deposed leader's fenced write is refused; another node takes over when the lease ends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node_fixture.h"
#include "outbox.h"

/* A duty that records its starts and stops. */
struct rec_duty {
    int started, stopped;
    int64_t last_epoch;
};

static void *rec_start(struct term *t, void *ud)
{
    struct rec_duty *r = ud;
    r->started++;
    r->last_epoch = term_epoch(t);
    return r;
}

static bool rec_stop(void *handle, int deadline_ms)
{
    (void)deadline_ms;
    struct rec_duty *r = handle;
    r->stopped++;
    return true;
}

struct world {
    struct vclock vc;
    struct memstore *ms;
    struct rec_duty rec[2];
    struct fx_node a, b;
};

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    vclock_init(&w->vc, 1000000, 1790000000000);
    w->ms = memstore_new(&w->vc.base);
    struct duty da = {"rec", rec_start, rec_stop, &w->rec[0]};
    struct duty db = {"rec", rec_start, rec_stop, &w->rec[1]};
    fx_node_init(&w->a, w->ms, &w->vc, FX_YAML("node-a", ""), &da, 1);
    fx_node_init(&w->b, w->ms, &w->vc, FX_YAML("node-b", ""), &db, 1);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    fx_node_release(&w->a);
    fx_node_release(&w->b);
    memstore_free(w->ms);
    free(w);
    return 0;
}

/* The term of n now (a reference the caller puts), or NULL. */
static struct term *term_of(struct fx_node *n)
{
    return cluster_term(n->c);
}

static void test_open_renew_and_failed_renewal(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    struct term *t = term_of(&w->a);
    assert_non_null(t);
    assert_true(term_valid(t));
    assert_int_equal(cluster_role(w->a.c), ROLE_LEADER);
    assert_int_equal(w->rec[0].started, 1);
    assert_int_equal(w->rec[0].last_epoch, term_epoch(t));
    assert_int_equal(fx_count_events(w->ms, "new-leader"), 1);

    /* renewed every TTL/3 (1 s): valid well past the first TTL */
    for (int i = 0; i < 6; i++) {
        vclock_advance(&w->vc, 1000);
        fx_step(&w->a);
        assert_true(term_valid(t));
    }
    assert_true(memstore_calls(w->ms, MS_KEEPALIVE) >= 6);

    /* a renewal of the leader lease fails: the term closes at once and the duty stops (the
     * election step alone, so that the session's own renewal does not take the failure) */
    memstore_fail(w->ms, MS_KEEPALIVE, 1, DHAF_EUNAVAILABLE, false);
    vclock_advance(&w->vc, 1000);
    cluster_election_step(w->a.c);
    assert_true(term_closed(t));
    assert_false(term_valid(t));
    assert_int_equal(w->rec[0].stopped, 1);
    assert_int_equal(fx_count_events(w->ms, "leader-lost"), 1);
    /* a deposed term's fenced write is refused without reaching etcd */
    uint64_t txns = memstore_calls(w->ms, MS_TXN);
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_PUT, .key = "/dhaf/fx/x", .value = "1"};
    struct dhaf_etcd_txn_result res;
    struct dhaf_err err;
    assert_int_equal(term_txn(t, NULL, 0, &op, 1, NULL, 0, &res, &err), DHAF_EFENCED);
    assert_int_equal(memstore_calls(w->ms, MS_TXN), txns);
    assert_null(memstore_value(w->ms, "/dhaf/fx/x"));

    /* the lease was handed back: the next step wins a new term with a new epoch */
    fx_step(&w->a);
    struct term *t2 = term_of(&w->a);
    assert_non_null(t2);
    assert_true(term_epoch(t2) > term_epoch(t));
    assert_int_equal(w->rec[0].started, 2);
    term_put(t2);
    term_put(t);
}

static void test_frozen_past_the_lease(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    fx_step(&w->b);
    struct term *t = term_of(&w->a);
    assert_non_null(t);
    assert_null(term_of(&w->b));
    /* node-a freezes (no step) past its TTL; node-b keeps stepping and takes over */
    for (int i = 0; i < 5; i++) {
        vclock_advance(&w->vc, 1000);
        fx_step(&w->b);
    }
    struct term *tb = term_of(&w->b);
    assert_non_null(tb);
    assert_int_equal(w->rec[1].started, 1);
    /* node-a wakes: before doing anything it knows its lease may be gone */
    assert_false(term_valid(t));
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_PUT, .key = "/dhaf/fx/x", .value = "a"};
    struct dhaf_etcd_txn_result res;
    struct dhaf_err err;
    assert_int_equal(term_txn(t, NULL, 0, &op, 1, NULL, 0, &res, &err), DHAF_EFENCED);
    fx_step(&w->a);
    assert_true(term_closed(t));
    assert_int_equal(w->rec[0].stopped, 1);
    assert_null(term_of(&w->a));
    assert_true(term_valid(tb));
    /* new-leader: one per term; the woken node wrote nothing fenced */
    assert_int_equal(fx_count_events(w->ms, "new-leader"), 2);
    assert_null(memstore_value(w->ms, "/dhaf/fx/x"));
    term_put(t);
    term_put(tb);
}

static void test_leader_key_removed(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    struct term *t = term_of(&w->a);
    assert_non_null(t);
    memstore_delete(w->ms, "/dhaf/fx/leader");
    fx_step(&w->a); /* the view sees the key go; the term closes in the same step */
    assert_true(term_closed(t));
    assert_int_equal(w->rec[0].stopped, 1);
    term_put(t);
}

static void test_stop_closes_the_term(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    fx_step(&w->b);
    struct term *t = term_of(&w->a);
    assert_non_null(t);
    assert_true(cluster_stop(w->a.c, 100));
    assert_true(term_closed(t));
    assert_int_equal(w->rec[0].stopped, 1);
    term_put(t);
    /* the lease was revoked: node-b leads on its next step, no TTL to wait for */
    fx_step(&w->b);
    struct term *tb = term_of(&w->b);
    assert_non_null(tb);
    term_put(tb);
}

static void test_outbox_counter(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    struct term *t = term_of(&w->a);
    assert_non_null(t);
    /* two writers of the counter at once: the second learns the new value and retries */
    struct event ev = {.kind = EVK_NODE_UP, .node = "node-x"};
    struct dhaf_err err;
    assert_int_equal(outbox_commit(t, NULL, 0, NULL, 0, &ev, 1, &err), 0);
    assert_int_equal(outbox_record(w->b.c, &ev, 1, &err), 0);
    assert_int_equal(outbox_commit(t, NULL, 0, NULL, 0, &ev, 1, &err), 0);
    char *seq = memstore_value(w->ms, "/dhaf/fx/event-seq");
    assert_string_equal(seq, "4"); /* new-leader, then three */
    free(seq);
    for (int i = 1; i <= 4; i++) {
        char key[64];
        snprintf(key, sizeof(key), "/dhaf/fx/events/%012d", i);
        char *v = memstore_value(w->ms, key);
        assert_non_null(v);
        free(v);
    }
    /* a compare of the caller's fails: nothing is written, not even the event */
    struct dhaf_etcd_cmp cmp = {.key = "/dhaf/fx/nothing",
                                .target = DHAF_ETCD_CREATE_REV,
                                .result = DHAF_ETCD_GT,
                                .num = 0};
    assert_int_equal(outbox_commit(t, &cmp, 1, NULL, 0, &ev, 1, &err), DHAF_ECONFLICT);
    assert_int_equal(fx_count_events(w->ms, NULL), 4);
    term_put(t);
}

/* A store whose every transaction finds the event counter moved by another writer just before
 * it (races of them). */
static struct store inner;
static struct memstore *race_ms;
static int races;
static struct store_ops racing_ops;

static int racing_txn(void *ud, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                      const struct dhaf_etcd_op *then, size_t n_then,
                      const struct dhaf_etcd_op *otherwise, size_t n_otherwise,
                      struct dhaf_etcd_txn_result *res, struct dhaf_err *err)
{
    if (races > 0) {
        races--;
        char *v = memstore_value(race_ms, "/dhaf/fx/event-seq");
        char next[32];
        snprintf(next, sizeof(next), "%lld", v ? atoll(v) + 1 : 1);
        free(v);
        memstore_put(race_ms, "/dhaf/fx/event-seq", next, 0);
    }
    return inner.ops->txn(ud, cmps, n_cmps, then, n_then, otherwise, n_otherwise, res, err);
}

static void test_outbox_gives_up_on_a_racing_counter(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    struct term *t = term_of(&w->a);
    assert_non_null(t);
    size_t before = fx_count_events(w->ms, NULL);
    /* node-b records through a store that always loses the race for the counter */
    inner = memstore_store(w->ms);
    race_ms = w->ms;
    racing_ops = *inner.ops;
    racing_ops.txn = racing_txn;
    struct cluster_opts co = {.store = {&racing_ops, inner.ud},
                              .clock = &w->vc.base,
                              .view = w->b.view,
                              .snaps = w->b.snaps};
    struct cluster *racer = cluster_new(&co);
    struct event ev = {.kind = EVK_NODE_UP, .node = "node-x"};
    struct dhaf_err err;
    races = 100;
    int64_t t0 = w->vc.mono;
    assert_int_equal(outbox_record(racer, &ev, 1, &err), DHAF_ECONFLICT);
    assert_non_null(strstr(err.msg, "kept changing"));
    assert_true(races > 90); /* a bounded number of attempts */
    assert_int_equal(w->vc.mono, t0);
    assert_int_equal(fx_count_events(w->ms, NULL), before); /* nothing half-written */
    /* when the racing stops, the same call goes through */
    races = 2;
    assert_int_equal(outbox_record(racer, &ev, 1, &err), 0);
    assert_int_equal(fx_count_events(w->ms, NULL), before + 1);
    cluster_free(racer);
    term_put(t);
}

/* The term's fence: what is left of its lease, a renewal asked for ahead of time before a long
 * provider call (sent by the next election step although not due), and the cancel token that
 * closing the term fires. */
static void test_fence_of_the_term(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    struct term *t = term_of(&w->a);
    assert_non_null(t);
    assert_true(term_left_ms(t) > 1900 && term_left_ms(t) <= 2000); /* TTL 3 s - TTL/3 */
    vclock_advance(&w->vc, 900);                                    /* renewal due at 1 s */
    assert_true(term_left_ms(t) <= 1100);
    /* no election thread runs here: the wait gives up after its 50 ms, nothing renewed yet */
    uint64_t kas = memstore_calls(w->ms, MS_KEEPALIVE);
    int64_t t0 = dhaf_mono_ms();
    assert_true(term_renew(t, 1900, 50) < 1900);
    assert_true(dhaf_mono_ms() - t0 < 1000);
    assert_int_equal(memstore_calls(w->ms, MS_KEEPALIVE), kas);
    /* the asked renewal goes out at the next step although it is not due */
    cluster_election_step(w->a.c);
    assert_int_equal(memstore_calls(w->ms, MS_KEEPALIVE), kas + 1);
    assert_true(term_left_ms(t) >= 1900);
    /* enough left: nothing asked, the next step sends nothing */
    assert_true(term_renew(t, 1000, 50) >= 1900);
    cluster_election_step(w->a.c);
    assert_int_equal(memstore_calls(w->ms, MS_KEEPALIVE), kas + 1);
    /* closing fires the cancel token and leaves nothing of the lease */
    struct dhaf_cancel *cancel = term_cancel(t);
    assert_false(dhaf_cancel_fired(cancel));
    term_close(t, "test");
    assert_true(dhaf_cancel_fired(cancel));
    assert_int_equal(term_left_ms(t), 0);
    assert_int_equal(term_renew(t, 1000, 50), 0);
    term_put(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_renew_and_failed_renewal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frozen_past_the_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leader_key_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_closes_the_term, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_counter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_gives_up_on_a_racing_counter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fence_of_the_term, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
