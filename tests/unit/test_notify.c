/* SPDX-License-Identifier: MIT */
/* Delivery and the outbox's history in virtual time (node/notify.c, node/outbox.c on the
 * in-memory store): every event reaches a notifier exactly once and in order across a leader
 * change (the new leader's worker goes on from the cursor); a transient failure is retried, a
 * permanent one skipped; history is trimmed only below the lowest notifier cursor, with an
 * events-dropped record when the cap forces more. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "notify.h"
#include "node_fixture.h"
#include "outbox.h"

/* ------------------------------------------------------------------ a recording notifier */

#define MAX_SEEN 64

static struct {
    uint64_t seq[MAX_SEEN]; /* the first MAX_SEEN delivered */
    char kind[MAX_SEEN][32];
    size_t n;           /* delivered in all */
    char last_kind[32]; /* of the last one */
    char last_msg[256];
    int fail_next; /* the next notify calls fail with fail_code */
    int fail_code;
} seen;

static int rec_notify(void *state, const struct dhaf_event_view *ev, struct dhaf_err *err)
{
    (void)state;
    if (seen.fail_next > 0) {
        seen.fail_next--;
        return dhaf_err_set(err, seen.fail_code, "injected");
    }
    if (seen.n < MAX_SEEN) {
        seen.seq[seen.n] = ev->seq;
        snprintf(seen.kind[seen.n], sizeof(seen.kind[0]), "%s", ev->kind);
    }
    snprintf(seen.last_kind, sizeof(seen.last_kind), "%s", ev->kind);
    snprintf(seen.last_msg, sizeof(seen.last_msg), "%s", ev->message ? ev->message : "");
    seen.n++;
    return 0;
}

static const struct dhaf_provider rec_provider = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_NOTIFIER,
    .type = "rec",
    .notify = rec_notify,
};

#define NOTIFIER                                                                                   \
    "notifiers:\n  - {type: email, name: mail, from: dhaf@site.test, to: ops@site.test,\n"         \
    "     smtp: {server: 127.0.0.1, port: 25}}\n"

struct world {
    struct vclock vc;
    struct memstore *ms;
    struct fx_node a, b;
};

/* The same notifier with filters, and one that collapses repeats. */
#define FILTERED                                                                                   \
    "notifiers:\n  - {type: email, name: mail, from: dhaf@site.test, to: ops@site.test,\n"         \
    "     smtp: {server: 127.0.0.1, port: 25}, min-severity: warning,\n"                           \
    "     events: [ep-down, failover, ep-up, new-leader]}\n"
#define COLLAPSING                                                                                 \
    "notifiers:\n  - {type: email, name: mail, from: dhaf@site.test, to: ops@site.test,\n"         \
    "     smtp: {server: 127.0.0.1, port: 25}, repeat-window: 60}\n"

static int setup_with(void **state, const char *yaml_a, const char *yaml_b)
{
    memset(&seen, 0, sizeof(seen));
    struct world *w = calloc(1, sizeof(*w));
    vclock_init(&w->vc, 1000000, 1790000000000);
    w->ms = memstore_new(&w->vc.base);
    fx_node_init(&w->a, w->ms, &w->vc, yaml_a, NULL, 0);
    fx_node_init(&w->b, w->ms, &w->vc, yaml_b, NULL, 0);
    *state = w;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, FX_YAML("node-a", NOTIFIER), FX_YAML("node-b", NOTIFIER));
}

static int setup_filtered(void **state)
{
    return setup_with(state, FX_YAML("node-a", FILTERED), FX_YAML("node-b", FILTERED));
}

static int setup_collapsing(void **state)
{
    return setup_with(state, FX_YAML("node-a", COLLAPSING), FX_YAML("node-b", COLLAPSING));
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

static struct deliverer *deliverer_of(struct fx_node *n, struct term *t)
{
    struct snap *s = snap_get(n->snaps);
    struct dhaf_err err;
    struct deliverer *d = notify_deliverer_new(t, s, 0, &rec_provider, &err);
    snap_put(s);
    assert_non_null(d);
    return d;
}

static void commit_events(struct term *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct event ev = {.kind = EVK_EP_DOWN, .service = "web", .from = "primary"};
        struct dhaf_err err;
        assert_int_equal(outbox_commit(t, NULL, 0, NULL, 0, &ev, 1, &err), 0);
    }
}

static void test_exactly_once_across_a_leader_change(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    fx_step(&w->b);
    struct term *ta = cluster_term(w->a.c);
    assert_non_null(ta);
    struct deliverer *da = deliverer_of(&w->a, ta);
    commit_events(ta, 3);
    view_step(w->a.view, 0);
    size_t n = 0;
    assert_int_equal(notify_deliver_pending(da, &n), 0);
    assert_int_equal(n, 4); /* new-leader (the notifier starts with this term) + 3 */
    /* two more, then node-a freezes before delivering them */
    commit_events(ta, 2);
    for (int i = 0; i < 5; i++) {
        vclock_advance(&w->vc, 1000);
        fx_step(&w->b);
    }
    struct term *tb = cluster_term(w->b.c);
    assert_non_null(tb);
    struct deliverer *db = deliverer_of(&w->b, tb);
    view_step(w->b.view, 0);
    assert_int_equal(notify_deliver_pending(db, &n), 0);
    assert_int_equal(n, 3); /* the 2 node-a left behind, and node-b's new-leader */
    /* node-a wakes: its delivery cannot go on (its term is over) */
    view_step(w->a.view, 0);
    assert_int_equal(notify_deliver_pending(da, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(seen.n, 7);
    for (size_t i = 0; i < seen.n; i++)
        assert_int_equal(seen.seq[i], i + 1); /* each once, in order */
    assert_string_equal(seen.kind[0], "new-leader");
    assert_string_equal(seen.kind[6], "new-leader");
    char *cur = memstore_value(w->ms, "/dhaf/fx/ext/notifier/email/mail/delivered");
    assert_string_equal(cur, "7");
    free(cur);
    notify_deliverer_free(da);
    notify_deliverer_free(db);
    term_put(ta);
    term_put(tb);
}

static void test_retry_and_give_up(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    struct term *t = cluster_term(w->a.c);
    struct deliverer *d = deliverer_of(&w->a, t);
    commit_events(t, 2);
    view_step(w->a.view, 0);
    /* a transient failure: nothing is skipped, the worker tries again later */
    seen.fail_next = 1;
    seen.fail_code = DHAF_EUNAVAILABLE;
    size_t n = 0;
    assert_int_equal(notify_deliver_pending(d, &n), 1);
    assert_int_equal(n, 0);
    assert_int_equal(notify_deliver_pending(d, &n), 0);
    assert_int_equal(n, 3);
    /* a permanent failure: that event is given up, the next ones go on */
    commit_events(t, 2);
    view_step(w->a.view, 0);
    seen.fail_next = 1;
    seen.fail_code = DHAF_EINVAL;
    assert_int_equal(notify_deliver_pending(d, &n), 0);
    assert_int_equal(n, 2); /* both moved the cursor; one reached the notifier */
    assert_int_equal(seen.n, 4);
    assert_int_equal(seen.seq[3], 5);
    notify_deliverer_free(d);
    term_put(t);
}

/* Keeps the term alive while many events are written. */
static void commit_many(struct world *w, struct term *t, size_t n)
{
    struct event evs[OUTBOX_MAX_EVENTS];
    for (size_t i = 0; i < OUTBOX_MAX_EVENTS; i++)
        evs[i] = (struct event){.kind = EVK_NODE_UP, .node = "node-x"};
    while (n > 0) {
        size_t k = n < OUTBOX_MAX_EVENTS ? n : OUTBOX_MAX_EVENTS;
        struct dhaf_err err;
        assert_int_equal(outbox_commit(t, NULL, 0, NULL, 0, evs, k, &err), 0);
        n -= k;
    }
    view_step(w->a.view, 0);
}

static void test_trim_below_the_lowest_cursor(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    struct term *t = cluster_term(w->a.c);
    struct deliverer *d = deliverer_of(&w->a, t);
    commit_many(w, t, 99);
    size_t n = 0;
    assert_int_equal(notify_deliver_pending(d, &n), 0); /* cursor: 100 */
    commit_many(w, t, 1400);                            /* 1500 in all */
    struct dhaf_err err;
    size_t deleted = 0;
    assert_int_equal(outbox_trim(t, &deleted, &err), 0);
    view_step(w->a.view, 0);
    /* delivered ones go, undelivered ones stay (1400 > the 1000 kept for history) */
    assert_int_equal(deleted, 100);
    assert_int_equal(fx_count_events(w->ms, NULL), 1400);
    assert_int_equal(notify_deliver_pending(d, &n), 0);
    assert_int_equal(n, 1400);
    assert_int_equal(outbox_trim(t, &deleted, &err), 0);
    assert_int_equal(deleted, 400);
    assert_int_equal(fx_count_events(w->ms, NULL), OUTBOX_KEEP);
    assert_int_equal(fx_count_events(w->ms, "events-dropped"), 0);
    notify_deliverer_free(d);
    term_put(t);
}

static void test_cap_drops_with_a_marker(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    struct term *t = cluster_term(w->a.c);
    struct deliverer *d = deliverer_of(&w->a, t);
    size_t n = 0;
    assert_int_equal(notify_deliver_pending(d, &n), 0); /* cursor: 1 (new-leader) */
    commit_many(w, t, OUTBOX_CAP + 499);                /* the notifier is stuck */
    struct dhaf_err err;
    size_t deleted = 0;
    assert_int_equal(outbox_trim(t, &deleted, &err), 0);
    view_step(w->a.view, 0);
    assert_int_equal(deleted, 500);
    assert_int_equal(fx_count_events(w->ms, "events-dropped"), 1);
    /* the notifier goes on after the gap and is told about it */
    seen.n = 0;
    assert_int_equal(notify_deliver_pending(d, &n), 0);
    assert_true(n > 0);
    assert_int_equal(seen.seq[0], 501); /* 2..500 were dropped */
    assert_string_equal(seen.last_kind, "events-dropped");
    notify_deliverer_free(d);
    term_put(t);
}

static void commit_kind(struct term *t, enum event_kind kind, const char *from)
{
    struct event ev = {.kind = kind, .service = "web", .from = from, .to = "backup"};
    struct dhaf_err err;
    assert_int_equal(outbox_commit(t, NULL, 0, NULL, 0, &ev, 1, &err), 0);
}

static void test_filters(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    struct term *t = cluster_term(w->a.c);
    struct deliverer *d = deliverer_of(&w->a, t);
    commit_kind(t, EVK_EP_DOWN, "primary");      /* warning, listed: sent */
    commit_kind(t, EVK_EP_UP, "primary");        /* listed but info: not sent */
    commit_kind(t, EVK_SWITCH_FAILED, "backup"); /* warning but not listed: not sent */
    commit_kind(t, EVK_FAILOVER, "primary");     /* warning, listed: sent */
    commit_kind(t, EVK_SERVICE_DOWN, NULL);      /* critical, not listed: not sent */
    view_step(w->a.view, 0);
    size_t n = 0;
    assert_int_equal(notify_deliver_pending(d, &n), 0);
    assert_int_equal(n, 6); /* the cursor passed all six (new-leader: info, not sent) */
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.kind[0], "ep-down");
    assert_string_equal(seen.kind[1], "failover");
    char *cur = memstore_value(w->ms, "/dhaf/fx/ext/notifier/email/mail/delivered");
    assert_string_equal(cur, "6");
    free(cur);
    assert_null(memstore_value(w->ms, "/dhaf/fx/ext/notifier/email/mail/repeats"));
    notify_deliverer_free(d);
    term_put(t);
}

static void test_repeats_collapse_across_a_leader_change(void **state)
{
    struct world *w = *state;
    fx_step(&w->a);
    fx_step(&w->b);
    struct term *ta = cluster_term(w->a.c);
    struct deliverer *da = deliverer_of(&w->a, ta);
    for (int i = 0; i < 5; i++) { /* ep-down of primary five times in 1 s */
        commit_kind(ta, EVK_EP_DOWN, "primary");
        vclock_advance(&w->vc, 200);
    }
    commit_kind(ta, EVK_EP_DOWN, "backup"); /* another entry point: not a repeat */
    view_step(w->a.view, 0);
    size_t n = 0;
    assert_int_equal(notify_deliver_pending(da, &n), 0);
    assert_int_equal(n, 7);
    assert_int_equal(seen.n, 3); /* new-leader, the first ep-down of primary, backup's */
    assert_string_equal(seen.kind[1], "ep-down");
    int64_t wait = notify_wait_ms(da);
    assert_true(wait > 55000 && wait < 60000); /* the window ends 60 s after the first */
    /* node-a stops; node-b takes over with the four held in etcd */
    for (int i = 0; i < 5; i++) {
        vclock_advance(&w->vc, 1000);
        fx_step(&w->b);
    }
    struct term *tb = cluster_term(w->b.c);
    assert_non_null(tb);
    struct deliverer *db = deliverer_of(&w->b, tb);
    view_step(w->b.view, 0);
    assert_int_equal(notify_deliver_pending(db, &n), 0);
    assert_int_equal(seen.n, 4); /* node-b's new-leader; the held ones wait for their window */
    assert_string_equal(seen.last_kind, "new-leader");
    wait = notify_wait_ms(db);
    assert_true(wait > 0 && wait <= 55000);
    for (int64_t left = wait; left > 0; left -= 1000) { /* node-b's lease is kept alive */
        vclock_advance(&w->vc, left < 1000 ? left : 1000);
        fx_step(&w->b);
        if (left > 1000) { /* not before the window's end */
            assert_int_equal(notify_deliver_pending(db, &n), 0);
            assert_int_equal(seen.n, 4);
        }
    }
    assert_int_equal(notify_deliver_pending(db, &n), 0);
    assert_int_equal(seen.n, 5);
    assert_string_equal(seen.last_kind, "ep-down");
    assert_string_equal(seen.last_msg,
                        "entry point primary of web is DOWN (and 3 more like it in 60 s)");
    assert_int_equal(notify_wait_ms(db), -1);
    /* node-a wakes: its term is over, it sends nothing */
    view_step(w->a.view, 0);
    assert_int_equal(notify_deliver_pending(da, &n), 0);
    assert_int_equal(seen.n, 5);
    notify_deliverer_free(da);
    notify_deliverer_free(db);
    term_put(ta);
    term_put(tb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exactly_once_across_a_leader_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_and_give_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trim_below_the_lowest_cursor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cap_drops_with_a_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filters, setup_filtered, teardown),
        cmocka_unit_test_setup_teardown(test_repeats_collapse_across_a_leader_change,
                                        setup_collapsing, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
