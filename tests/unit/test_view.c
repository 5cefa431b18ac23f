/* SPDX-License-Identifier: MIT */
/* The view in virtual time (node/view.c on the in-memory store): a vote counts while its key
 * exists - it goes with its vote lease when the voter stops renewing it; the tally survives a
 * reload (a new config snapshot); a view is complete only when every voter that should vote
 * has a vote (or a lease's TTL has passed); it turns stale when etcd goes quiet and synced
 * when it answers; a compaction makes it read everything again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "leader.h"
#include "node_fixture.h"

#define FRESH 3000 /* VOTE_LEASE_TACTS x tact 1 s */

struct world {
    struct vclock vc;
    struct memstore *ms;
    struct snap_holder *snaps;
    struct view *v;
};

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    vclock_init(&w->vc, 1000000, 1790000000000);
    w->ms = memstore_new(&w->vc.base);
    w->snaps = fx_snaps(FX_YAML("node-a", ""));
    struct view_opts vo = {.store = memstore_store(w->ms),
                           .clock = &w->vc.base,
                           .prefix = "/dhaf/fx/",
                           .progress_ms = 1000,
                           .stale_ms = 3000};
    w->v = view_new(&vo);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    view_free(w->v);
    snap_holder_free(w->snaps);
    memstore_free(w->ms);
    free(w);
    return 0;
}

/* The tally of primary now, with the current snapshot. */
static struct ep_tally primary(struct world *w)
{
    struct snap *s = snap_get(w->snaps);
    struct ep_tally t[2];
    view_rdlock(w->v);
    view_tally(w->v, &s->cfg, &s->cfg.services[0], t, NULL);
    view_unlock(w->v);
    snap_put(s);
    return t[0];
}

static bool complete(struct world *w)
{
    view_rdlock(w->v);
    bool c = view_tally_complete(w->v, FRESH, 0);
    view_unlock(w->v);
    return c;
}

static bool has_voter(struct world *w, const char *name)
{
    view_rdlock(w->v);
    bool found = false;
    for (size_t i = 0; i < view_voters(w->v); i++)
        found |= strcmp(view_voter_at(w->v, i)->name, name) == 0;
    view_unlock(w->v);
    return found;
}

static void test_a_vote_lives_with_its_lease(void **state)
{
    struct world *w = *state;
    /* votes already in etcd when the view loads count: their leases are alive */
    int64_t l1 = fx_lease(w->ms, 3), l2 = fx_lease(w->ms, 3);
    fx_put_vote_on(w->ms, "v1", "uh", l1);
    fx_put_vote_on(w->ms, "v2", "hh", l2);
    view_step(w->v, 0);
    struct ep_tally t = primary(w);
    assert_int_equal(t.voters, 2);
    assert_int_equal(t.unhealthy, 1);
    assert_true(t.is_healthy); /* a tie is healthy */
    assert_true(complete(w));
    /* nothing is rewritten for ten lease TTLs: v1 keeps renewing, its vote keeps counting */
    for (int i = 0; i < 30; i++) {
        vclock_advance(&w->vc, 1000);
        fx_renew(w->ms, l1);
        if (i < 2)
            fx_renew(w->ms, l2); /* ... v2 stalls after two rounds */
        view_step(w->v, 0);
    }
    t = primary(w);
    assert_int_equal(t.voters, 1); /* v2's vote went with its lease */
    assert_false(t.is_healthy);
    assert_false(has_voter(w, "v2"));
}

/* The quorum (DESIGN "Decision"): impaired votes are counted apart and tallied for nothing;
 * the expected voters are the member nodes that probe (a record without "probe" is one that
 * does) and the configured probers. */
static void test_quorum_counts(void **state)
{
    struct world *w = *state;
    memstore_put(w->ms, "/dhaf/fx/members/m1", "{\"probe\": true}", 0);
    memstore_put(w->ms, "/dhaf/fx/members/m2", "{\"probe\": false}", 0);
    memstore_put(w->ms, "/dhaf/fx/members/m3", "{\"first_seen\": 1}", 0);
    fx_put_vote(w->ms, "v1", "uh");
    fx_put_vote(w->ms, "v2", "uu!");
    fx_put_vote(w->ms, "v3", "hh");
    view_step(w->v, 0);
    struct snap *s = snap_get(w->snaps);
    struct ep_tally t[2];
    struct quorum q;
    view_rdlock(w->v);
    view_tally(w->v, &s->cfg, &s->cfg.services[0], t, &q);
    view_unlock(w->v);
    snap_put(s);
    assert_int_equal(t[0].voters, 2); /* v2 is not tallied */
    assert_int_equal(t[0].unhealthy, 1);
    assert_true(t[0].is_healthy); /* 1 of 2: a tie; with v2 it would be 2 of 3 down */
    assert_int_equal(q.fresh, 2);
    assert_int_equal(q.impaired, 1);
    assert_int_equal(q.expected, 2); /* m1 and m3; m2 does not probe; no probers configured */
    assert_int_equal(q.need, 2);
    assert_false(q.all_impaired);

    /* every fresh voter impaired: from nowhere is anything up - their votes are the tally */
    fx_put_vote(w->ms, "v1", "uu!");
    fx_put_vote(w->ms, "v3", "uu!");
    view_step(w->v, 0);
    s = snap_get(w->snaps);
    view_rdlock(w->v);
    view_tally(w->v, &s->cfg, &s->cfg.services[0], t, &q);
    view_unlock(w->v);
    snap_put(s);
    assert_true(q.all_impaired);
    assert_int_equal(q.fresh, 3);
    assert_int_equal(t[0].voters, 3);
    assert_false(t[0].is_healthy);
    assert_false(t[1].is_healthy);
}

/* Every node lists the voters in the same order (by name), whatever order their votes came
 * in or went: reasons and vote details read the same from any node. */
static void test_voters_in_name_order(void **state)
{
    struct world *w = *state;
    view_step(w->v, 0);
    const char *names[] = {"v3", "v1", "v4", "v2"};
    for (int i = 0; i < 4; i++)
        fx_put_vote(w->ms, names[i], "uh");
    memstore_delete(w->ms, "/dhaf/fx/votes/v4");
    view_step(w->v, 0);
    view_rdlock(w->v);
    assert_int_equal(view_voters(w->v), 3);
    for (size_t i = 0; i < 3; i++) {
        char want[8];
        snprintf(want, sizeof(want), "v%zu", i + 1);
        assert_string_equal(view_voter_at(w->v, i)->name, want);
    }
    view_unlock(w->v);
    struct ep_tally t = primary(w);
    assert_string_equal(t.reasons, "v1: timeout; v2: timeout; v3: timeout");
}

static void test_tally_survives_a_reload(void **state)
{
    struct world *w = *state;
    view_step(w->v, 0);
    const char *ops[4] = {"uh", "hh", "hh", "hh"};
    char name[8];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "v%d", i);
        fx_put_vote(w->ms, name, ops[i]);
    }
    view_step(w->v, 0);
    assert_int_equal(primary(w).voters, 4);
    assert_true(complete(w));
    /* SIGHUP: a new snapshot, same services; the view is not touched */
    struct dhaf_config cfg;
    fx_load(FX_YAML("node-a", ""), &cfg);
    snap_publish(w->snaps, &cfg);
    struct ep_tally t = primary(w);
    assert_int_equal(t.voters, 4);
    assert_int_equal(t.unhealthy, 1);
    assert_true(t.is_healthy);
    assert_true(complete(w));
}

static void test_complete_again_after_an_outage(void **state)
{
    struct world *w = *state;
    for (int i = 1; i <= 3; i++) {
        char key[64];
        snprintf(key, sizeof(key), "/dhaf/fx/alive/v%d", i);
        memstore_put(w->ms, key, "{\"probe\":true}", 0);
    }
    int64_t l1 = fx_lease(w->ms, 3);
    fx_put_vote_on(w->ms, "v1", "hh", l1);
    fx_put_vote(w->ms, "v2", "hh");
    fx_put_vote(w->ms, "v3", "uh");
    view_step(w->v, 0);
    assert_true(complete(w));
    /* etcd goes away for 10 s: the view turns stale after 3 s of silence; v1's lease is not
     * renewed meanwhile and expires */
    memstore_set_down(w->ms, true);
    for (int i = 0; i < 10; i++) {
        vclock_advance(&w->vc, 1000);
        view_step(w->v, 0);
    }
    view_rdlock(w->v);
    struct view_sync vs = view_sync(w->v);
    view_unlock(w->v);
    assert_false(vs.synced);
    assert_true(vs.age_ms >= 3000);
    assert_false(complete(w));
    /* back: v1 has no vote, so the two left are not the electorate */
    memstore_set_down(w->ms, false);
    view_step(w->v, 0); /* progress answered: synced */
    view_step(w->v, 0);
    view_rdlock(w->v);
    vs = view_sync(w->v);
    view_unlock(w->v);
    assert_true(vs.synced);
    assert_false(has_voter(w, "v1"));
    struct ep_tally t = primary(w);
    assert_int_equal(t.voters, 2);
    assert_false(complete(w));
    fx_put_vote(w->ms, "v1", "hh");
    view_step(w->v, 0);
    assert_true(complete(w));
    t = primary(w);
    assert_int_equal(t.voters, 3);
    assert_true(t.is_healthy);
}

static void test_a_silent_voter_waits_a_window(void **state)
{
    struct world *w = *state;
    /* an alive node that probes but never votes holds decisions back for one window only */
    memstore_put(w->ms, "/dhaf/fx/alive/node-x", "{\"probe\":true}", 0);
    memstore_put(w->ms, "/dhaf/fx/alive/node-y", "{\"probe\":false}", 0);
    view_step(w->v, 0);
    fx_put_vote(w->ms, "v1", "hh");
    view_step(w->v, 0);
    assert_false(complete(w));
    vclock_advance(&w->vc, FRESH - 1);
    fx_put_vote(w->ms, "v1", "hh");
    view_step(w->v, 0);
    assert_false(complete(w));
    vclock_advance(&w->vc, 1);
    assert_true(complete(w));
}

static void test_reload_after_compaction(void **state)
{
    struct world *w = *state;
    view_step(w->v, 0);
    fx_put_vote(w->ms, "v1", "hh");
    view_step(w->v, 0);
    /* a gap in the watch that etcd compacted away: the view reads everything again */
    memstore_set_down(w->ms, true);
    view_step(w->v, 0);
    memstore_put(w->ms, "/dhaf/fx/services/web/state", "{\"current\":\"primary\"}", 0);
    memstore_put(w->ms, "/dhaf/fx/services/web/state", "{\"current\":\"backup\"}", 0);
    memstore_compact(w->ms, memstore_revision(w->ms)); /* the first put is gone */
    memstore_set_down(w->ms, false);
    vclock_advance(&w->vc, 500);
    for (int i = 0; i < 3; i++)
        view_step(w->v, 0);
    view_rdlock(w->v);
    const struct view_rec *st = view_find(w->v, VS_STATE, "web");
    assert_non_null(st);
    assert_string_equal(json_string_value(json_object_get(st->j, "current")), "backup");
    view_unlock(w->v);
    /* the vote is still there and counts */
    assert_int_equal(primary(w).voters, 1);
    assert_true(complete(w));
}

static void test_a_stuck_watch_is_noticed(void **state)
{
    struct world *w = *state;
    view_step(w->v, 0);
    fx_put_vote(w->ms, "v1", "hh");
    view_step(w->v, 0);
    assert_true(has_voter(w, "v1"));
    /* the watch stops delivering but still answers progress requests: it looks alive */
    memstore_mute_watches(w->ms, true);
    fx_put_vote(w->ms, "v2", "uh");
    int64_t t0 = w->vc.mono;
    while (!has_voter(w, "v2") && w->vc.mono - t0 < 20000) {
        vclock_advance(&w->vc, 500);
        view_step(w->v, 0);
        view_rdlock(w->v);
        assert_true(view_sync(w->v).synced); /* progress answered all along */
        view_unlock(w->v);
    }
    /* two checks (5 s apart) saw a change it did not have: it read everything again */
    assert_true(has_voter(w, "v2"));
    assert_true(w->vc.mono - t0 <= 10500);
    memstore_mute_watches(w->ms, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_vote_lives_with_its_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quorum_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_voters_in_name_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tally_survives_a_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_complete_again_after_an_outage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_silent_voter_waits_a_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_after_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_stuck_watch_is_noticed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
