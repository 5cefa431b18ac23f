/* SPDX-License-Identifier: MIT */
/* Decisions in virtual time (node/leader.c on the in-memory store, an exec switcher whose
 * every call is recorded): a reload changes no decision (the tally lives in the view, not in
 * the term); a decision waits for a complete view; a state change and its events are written
 * together or not at all, also when etcd's answer is lost (the state is read again). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dhaf/json.h"
#include "leader.h"
#include "suspects.h"
#include "node_fixture.h"

struct world {
    struct vclock vc;
    struct memstore *ms;
    struct fx_node a;
    struct term *t;
    struct decider *d;
    char dir[64], current[128], log[128];
    char *yaml;
};

static void write_script(const char *path, const char *body)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
    chmod(path, 0755);
}

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    snprintf(w->dir, sizeof(w->dir), "/tmp/dhaf-unit-leader-XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    snprintf(w->current, sizeof(w->current), "%s/current", w->dir);
    snprintf(w->log, sizeof(w->log), "%s/switch.log", w->dir);
    char path[160], body[400], sw[400];
    snprintf(path, sizeof(path), "%s/init.sh", w->dir);
    snprintf(body, sizeof(body),
             "#!/bin/sh\n[ -f %s/broken ] && { echo x >> %s/init.fails; echo provider unreachable; "
             "exit 1; }\ncat %s 2>/dev/null || true\n",
             w->dir, w->dir, w->current);
    write_script(path, body);
    snprintf(path, sizeof(path), "%s/switch.sh", w->dir);
    snprintf(body, sizeof(body), "#!/bin/sh\necho \"$1\" >> %s\necho \"$1\" > %s\n", w->log,
             w->current);
    write_script(path, body);
    snprintf(sw, sizeof(sw), "{type: exec, init: %s/init.sh, switch: %s/switch.sh, timeout: 2}",
             w->dir, w->dir);
    w->yaml = fx_yaml("node-a", sw, "");
    FILE *f = fopen(w->current, "w");
    fputs("primary\n", f);
    fclose(f);
    vclock_init(&w->vc, 1000000, 1790000000000);
    w->ms = memstore_new(&w->vc.base);
    fx_node_init(&w->a, w->ms, &w->vc, w->yaml, NULL, 0);
    fx_step(&w->a);
    w->t = cluster_term(w->a.c);
    assert_non_null(w->t);
    w->d = leader_decider_new(w->t);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    leader_decider_free(w->d);
    term_put(w->t);
    fx_node_release(&w->a);
    memstore_free(w->ms);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", w->dir);
    assert_int_equal(system(cmd), 0);
    free(w->yaml);
    free(w);
    return 0;
}

/* Four voters: ops[i] is voter i's opinion of (primary, backup). */
static void vote(struct world *w, const char *o0, const char *o1, const char *o2, const char *o3)
{
    const char *ops[4] = {o0, o1, o2, o3};
    for (int i = 0; i < 4; i++) {
        char name[8];
        snprintf(name, sizeof(name), "v%d", i);
        fx_put_vote(w->ms, name, ops[i]);
    }
    view_step(w->a.view, 0);
}

static int switch_calls(struct world *w)
{
    FILE *f = fopen(w->log, "r");
    if (!f)
        return 0;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

/* state.current of web in the store ("" when none). */
static void current_in_state(struct world *w, char *buf, size_t len)
{
    buf[0] = '\0';
    char *v = memstore_value(w->ms, "/dhaf/fx/services/web/state");
    if (!v)
        return;
    json_t *j = json_loads(v, 0, NULL);
    free(v);
    const char *c = j ? dhaf_json_str(j, "current") : NULL;
    snprintf(buf, len, "%s", c ? c : "");
    json_decref(j);
}

static void reload_same_config(struct world *w)
{
    struct dhaf_config cfg;
    fx_load(w->yaml, &cfg);
    snap_publish(w->a.snaps, &cfg);
}

static void test_reload_changes_no_decision(void **state)
{
    struct world *w = *state;
    /* the leader's own checker sees primary down; three others see it up */
    vote(w, "uh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    char cur[32];
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "primary");
    size_t events = fx_count_events(w->ms, NULL);
    int calls = switch_calls(w);
    for (int i = 0; i < 5; i++) {
        reload_same_config(w);
        vclock_advance(&w->vc, 1000);
        fx_step(&w->a); /* the lease is renewed: the term goes on */
        vote(w, "uh", "hh", "hh", "hh");
        leader_decider_round(w->d);
    }
    assert_true(term_valid(w->t));
    assert_int_equal(switch_calls(w), calls);
    assert_int_equal(fx_count_events(w->ms, NULL), events);
    assert_int_equal(fx_count_events(w->ms, "no-quorum"), 0);
    assert_int_equal(fx_count_events(w->ms, "failover"), 0);
    /* the control: a majority down is a failover, reload or not */
    reload_same_config(w);
    vote(w, "uh", "uh", "uh", "hh");
    assert_true(leader_decider_round(w->d));
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "backup");
    assert_int_equal(fx_count_events(w->ms, "failover"), 1);
    assert_int_equal(switch_calls(w), calls + 1);
}

static void test_no_decision_on_a_partial_view(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    /* etcd away for 5 s: the term ends (its lease cannot be renewed), the view goes stale */
    memstore_set_down(w->ms, true);
    for (int i = 0; i < 5; i++) {
        vclock_advance(&w->vc, 1000);
        fx_step(&w->a);
    }
    assert_true(term_closed(w->t));
    memstore_set_down(w->ms, false);
    vclock_advance(&w->vc, 100);
    for (int i = 0; i < 3; i++)
        fx_step(&w->a); /* view synced again; a new term */
    struct term *t2 = cluster_term(w->a.c);
    assert_non_null(t2);
    struct decider *d2 = leader_decider_new(t2);
    /* the first voter to speak again says primary is down: 1 of 1 - no decision */
    fx_put_vote(w->ms, "v0", "uh");
    view_step(w->a.view, 0);
    int calls = switch_calls(w);
    assert_true(term_valid(t2));
    assert_false(leader_decider_round(d2));
    assert_int_equal(fx_count_events(w->ms, "ep-down"), 0);
    assert_int_equal(switch_calls(w), calls);
    /* the others speak: 1 of 4, still no failover */
    vote(w, "uh", "hh", "hh", "hh");
    assert_false(leader_decider_round(d2));
    assert_int_equal(fx_count_events(w->ms, "failover"), 0);
    /* the control: once complete, a majority down fails over */
    vote(w, "uh", "uh", "uh", "hh");
    assert_true(leader_decider_round(d2));
    assert_int_equal(fx_count_events(w->ms, "failover"), 1);
    leader_decider_free(d2);
    term_put(t2);
}

static void test_state_and_events_together(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    int calls = switch_calls(w);
    /* primary goes down; the write of state.switching + ep-down fails before etcd applies it */
    vote(w, "uh", "uh", "uh", "hh");
    memstore_fail(w->ms, MS_TXN, 1, DHAF_EUNAVAILABLE, false);
    leader_decider_round(w->d);
    assert_int_equal(fx_count_events(w->ms, "ep-down"), 0);
    char *st = memstore_value(w->ms, "/dhaf/fx/services/web/state");
    assert_null(strstr(st, "switching"));
    assert_non_null(strstr(st, "\"primary\":\"up\""));
    free(st);
    assert_int_equal(switch_calls(w), calls); /* no provider call without the record */
    /* the next round does it all, once */
    assert_true(leader_decider_round(w->d));
    assert_int_equal(fx_count_events(w->ms, "ep-down"), 1);
    assert_int_equal(fx_count_events(w->ms, "failover"), 1);
    assert_int_equal(switch_calls(w), calls + 1);
}

/* The view behind etcd: it still has the votes that called the primary down, etcd already
 * has newer ones that call it up (a watch stalled on a member cut off from the others). No
 * switch on the stale view; once the view has the votes, none is needed. */
static void test_no_switch_on_a_stale_view(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    int calls = switch_calls(w);
    vote(w, "uh", "uh", "uh", "hh"); /* the view has these */
    for (int i = 0; i < 4; i++) {    /* etcd has these too; the view not yet */
        char name[8];
        snprintf(name, sizeof(name), "v%d", i);
        fx_put_vote(w->ms, name, "hh");
    }
    leader_decider_round(w->d);
    assert_int_equal(switch_calls(w), calls);
    assert_int_equal(fx_count_events(w->ms, "failover"), 0);
    char cur[64];
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "primary");
    view_step(w->a.view, 0); /* the votes arrive: nothing to do */
    leader_decider_round(w->d);
    assert_int_equal(switch_calls(w), calls);
    assert_int_equal(fx_count_events(w->ms, "failover"), 0);
}

static void test_lost_answer_is_read_again(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    int calls = switch_calls(w);
    /* etcd applies state.switching + ep-down, but the answer is lost */
    vote(w, "uh", "uh", "uh", "hh");
    memstore_fail(w->ms, MS_TXN, 1, DHAF_EUNKNOWN_OUTCOME, true);
    leader_decider_round(w->d);
    assert_int_equal(fx_count_events(w->ms, "ep-down"), 1);
    assert_int_equal(switch_calls(w), calls); /* unsure: no provider call */
    /* the next round reads the state again (a switch under way, traffic still on primary):
     * it says so, fails over once, and does not announce ep-down twice */
    assert_true(leader_decider_round(w->d));
    assert_int_equal(fx_count_events(w->ms, "ep-down"), 1);
    assert_int_equal(fx_count_events(w->ms, "switch-interrupted"), 1);
    assert_int_equal(fx_count_events(w->ms, "failover"), 1);
    assert_int_equal(switch_calls(w), calls + 1);
}

static void set_file(struct world *w, const char *name, const char *text)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/%s", w->dir, name);
    if (!text) {
        unlink(path);
        return;
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static bool state_has(struct world *w, const char *part)
{
    char *st = memstore_value(w->ms, "/dhaf/fx/services/web/state");
    bool has = st && strstr(st, part);
    free(st);
    return has;
}

/* A previous leader's switch to backup landed although etcd still says primary with
 * `switching`; the new term cannot read the provider at first. Nothing is decided (backup,
 * where traffic really is, is down) and `switching` stays until the read succeeds; then etcd
 * is corrected and the failover back to primary follows. */
static void test_unread_provider_blocks_decisions(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    leader_decider_free(w->d);
    /* what the previous leader left: switching to backup, and the provider on backup */
    assert_int_equal(memstore_put(w->ms, "/dhaf/fx/services/web/state",
                                  "{\"current\":\"primary\",\"since\":1,\"epoch\":1,"
                                  "\"eps\":{\"primary\":\"down\",\"backup\":\"up\"},"
                                  "\"switching\":{\"kind\":\"failover\",\"from\":\"primary\","
                                  "\"to\":\"backup\",\"at\":1}}",
                                  0),
                     0);
    set_file(w, "current", "backup\n");
    set_file(w, "broken", "1");
    size_t corrected = fx_count_events(w->ms, "current-corrected"); /* from (none), at start */
    w->d = leader_decider_new(w->t); /* a new term's decider: reads etcd and the provider */
    vote(w, "hu", "hu", "hu", "hh"); /* backup down, primary up */
    int calls = switch_calls(w);
    assert_false(leader_decider_round(w->d));
    assert_int_equal(fx_count_events(w->ms, "provider-unread"), 1);
    assert_true(state_has(w, "\"switching\""));
    assert_true(state_has(w, "provider unreachable"));
    /* retried with back-off: not before 1 s, still nothing decided */
    for (int i = 0; i < 3; i++) {
        vclock_advance(&w->vc, 400);
        fx_step(&w->a);
        vote(w, "hu", "hu", "hu", "hh");
        assert_false(leader_decider_round(w->d));
    }
    assert_int_equal(switch_calls(w), calls);
    assert_int_equal(fx_count_events(w->ms, "failover"), 0);
    assert_int_equal(fx_count_events(w->ms, "provider-unread"), 1);
    assert_true(state_has(w, "\"switching\""));
    /* the provider answers again: etcd learns where traffic is, then the failover follows */
    set_file(w, "broken", NULL);
    for (int i = 0; i < 5; i++) {
        vclock_advance(&w->vc, 400);
        fx_step(&w->a);
    }
    vote(w, "hu", "hu", "hu", "hh");
    assert_true(leader_decider_round(w->d));
    assert_int_equal(fx_count_events(w->ms, "provider-read"), 1);
    assert_int_equal(fx_count_events(w->ms, "switch-interrupted"), 1);
    assert_int_equal(fx_count_events(w->ms, "current-corrected"), corrected + 1);
    assert_int_equal(fx_count_events(w->ms, "failover"), 1);
    assert_int_equal(switch_calls(w), calls + 1);
    char cur[32];
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "primary");
    assert_false(state_has(w, "\"switching\""));
    assert_false(state_has(w, "provider_error"));
}

/* After a switch the provider is read back; when it shows something else (a late write of a
 * deposed leader, a manual change), etcd follows the provider and the decision is made again. */
static void test_read_back_after_switch(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    size_t corrected = fx_count_events(w->ms, "current-corrected"); /* from (none), at start */
    /* the switch script "succeeds" but something else puts traffic back on primary */
    char path[160], body[400];
    snprintf(path, sizeof(path), "%s/switch.sh", w->dir);
    snprintf(body, sizeof(body), "#!/bin/sh\necho \"$1\" >> %s\necho primary > %s\n", w->log,
             w->current);
    write_script(path, body);
    vote(w, "uh", "uh", "uh", "hh");
    leader_decider_round(w->d);
    assert_int_equal(fx_count_events(w->ms, "failover"), 0);
    assert_int_equal(fx_count_events(w->ms, "current-corrected"), corrected + 1);
    char cur[32];
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "primary");
    assert_false(state_has(w, "\"switching\""));
}

/* A vote counts while its lease lives: three voters that said "primary is down" and then froze
 * (their vote leases no longer renewed) do not count once the leases expired - in the term that
 * saw them or in a new one. */
static void test_frozen_voters_lose_their_votes(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    term_close(w->t, "test: leadership changes hands");
    for (int i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof(name), "v%d", i);
        fx_put_vote_on(w->ms, name, "uh", fx_lease(w->ms, 3)); /* then v0..v2 freeze */
    }
    struct term *t2 = NULL;
    for (int i = 0; i < 10 && !t2; i++) {
        vclock_advance(&w->vc, 10);
        fx_step(&w->a);
        t2 = cluster_term(w->a.c);
        if (t2 && t2 == w->t) {
            term_put(t2);
            t2 = NULL;
        }
    }
    assert_non_null(t2);
    struct decider *d2 = leader_decider_new(t2);
    int calls = switch_calls(w);
    /* only v3 speaks (and renews) while the frozen leases run out */
    int64_t l3 = fx_lease(w->ms, 3);
    fx_put_vote_on(w->ms, "v3", "hh", l3);
    for (int i = 0; i < 8; i++) {
        vclock_advance(&w->vc, 500);
        fx_renew(w->ms, l3);
        fx_step(&w->a);
    }
    view_step(w->a.view, 0);
    assert_false(leader_decider_round(d2));
    assert_int_equal(fx_count_events(w->ms, "failover"), 0);
    assert_int_equal(switch_calls(w), calls);
    /* the control: the same opinions from live voters fail over */
    vote(w, "uh", "uh", "uh", "hh");
    assert_true(leader_decider_round(d2));
    assert_int_equal(fx_count_events(w->ms, "failover"), 1);
    leader_decider_free(d2);
    term_put(t2);
}

static int lines_of(struct world *w, const char *name)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/%s", w->dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

/* Steps the node and the decider through ms of virtual time in 500 ms steps (the lease is
 * renewed on the way); with opinions (four, as for vote()), the voters vote them each step. */
static void run_for(struct world *w, int64_t ms, const char *const *opinions)
{
    for (int64_t t = 0; t < ms; t += 500) {
        vclock_advance(&w->vc, 500);
        fx_step(&w->a);
        if (opinions)
            vote(w, opinions[0], opinions[1], opinions[2], opinions[3]);
        leader_decider_round(w->d);
    }
}

/* An unreadable provider is read again after 1 s, 2 s, 4 s ... and never less often than every
 * 30 s; the first failure is one event, not one per attempt. */
static void test_provider_read_back_off(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    leader_decider_free(w->d);
    set_file(w, "broken", "1");
    w->d = leader_decider_new(w->t);
    leader_decider_round(w->d); /* attempt at 0 s */
    run_for(w, 70000, NULL);    /* attempts at 1, 3, 7, 15, 31, 61 s */
    assert_int_equal(lines_of(w, "init.fails"), 7);
    run_for(w, 25000, NULL); /* the next at 61 + 30 s (capped; not 61 + 64 s) */
    assert_int_equal(lines_of(w, "init.fails"), 8);
    assert_int_equal(fx_count_events(w->ms, "provider-unread"), 1);
    assert_true(state_has(w, "\"attempts\":1"));
}

/* The read-back after a switch fails: `switching` stays and nothing more is decided; once the
 * provider can be read, the switch is recorded as the failover it was. */
static void test_read_back_fails_after_switch(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d);
    char path[160], body[400];
    snprintf(path, sizeof(path), "%s/switch.sh", w->dir);
    snprintf(body, sizeof(body),
             "#!/bin/sh\necho \"$1\" >> %s\necho \"$1\" > %s\ntouch %s/broken\n", w->log,
             w->current, w->dir);
    write_script(path, body);
    int calls = switch_calls(w);
    vote(w, "uh", "uh", "uh", "hh");
    leader_decider_round(w->d);
    assert_int_equal(switch_calls(w), calls + 1);
    assert_true(state_has(w, "\"switching\""));
    assert_int_equal(fx_count_events(w->ms, "failover"), 0);
    /* backup goes down too, primary comes back: no decision while unread */
    static const char *const back[] = {"hu", "hu", "hu", "hh"};
    run_for(w, 1500, back);
    assert_int_equal(switch_calls(w), calls + 1);
    assert_true(state_has(w, "\"switching\""));
    /* readable again: the failover is recorded once, then the decision goes on (back to primary) */
    snprintf(body, sizeof(body), "#!/bin/sh\necho \"$1\" >> %s\necho \"$1\" > %s\n", w->log,
             w->current);
    write_script(path, body);
    set_file(w, "broken", NULL);
    run_for(w, 2500, back);
    assert_int_equal(fx_count_events(w->ms, "provider-read"), 1);
    assert_int_equal(fx_count_events(w->ms, "failover"), 2);
    assert_int_equal(fx_count_events(w->ms, "switch-interrupted"), 0);
    assert_int_equal(switch_calls(w), calls + 2);
    char cur[32];
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "primary");
    assert_false(state_has(w, "\"switching\""));
}

/* Flap damping with the defaults (threshold 3, half-life 300 s, switch back after 3 tacts):
 * the third time the primary goes down within a few seconds it is held down (ep-flapping);
 * healthy again, traffic stays on the backup until the penalty has decayed below half the
 * threshold (ep-calm, about one half-life later), then goes back. */
static void test_flapping_entry_point_held_down(void **state)
{
    struct world *w = *state;
    static const char *const up[4] = {"hh", "hh", "hh", "hh"};
    static const char *const down[4] = {"uh", "uh", "uh", "uh"};
    run_for(w, 1000, up);
    int calls = switch_calls(w);
    for (int flap = 1; flap <= 3; flap++) {
        run_for(w, 1000, down); /* failover to backup */
        assert_int_equal(switch_calls(w), calls + 1);
        calls++;
        assert_int_equal(fx_count_events(w->ms, "ep-flapping"), flap == 3);
        run_for(w, 5000, up); /* switch back after 3 tacts - but not after the third flap */
        if (flap < 3) {
            assert_int_equal(switch_calls(w), calls + 1);
            calls++;
        }
    }
    char cur[32];
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "backup");
    run_for(w, 200000, up); /* penalty 2.9 -> 1.8: still held down */
    assert_int_equal(switch_calls(w), calls);
    assert_int_equal(fx_count_events(w->ms, "ep-calm"), 0);
    run_for(w, 120000, up); /* -> 1.4: released, and traffic goes back */
    assert_int_equal(fx_count_events(w->ms, "ep-calm"), 1);
    assert_int_equal(switch_calls(w), calls + 1);
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "primary");
}

/* The provider is changed by hand (the exec switcher's state file says backup): within
 * dhaf.provider-check-interval (60 s, plus up to 15 s of stagger) the leader reads it, says so
 * once (provider-drift) and sets it back to the decided primary; later reads find it right. */
static void test_provider_drift_set_back(void **state)
{
    struct world *w = *state;
    static const char *const up[4] = {"hh", "hh", "hh", "hh"};
    run_for(w, 1000, up);
    int calls = switch_calls(w);
    set_file(w, "current", "backup\n");
    run_for(w, 50000, up); /* not read yet: the first read is 60-75 s after the term began */
    assert_int_equal(fx_count_events(w->ms, "provider-drift"), 0);
    run_for(w, 26000, up);
    assert_int_equal(fx_count_events(w->ms, "provider-drift"), 1);
    assert_int_equal(switch_calls(w), calls + 1);
    char *ev = fx_last_event(w->ms, "provider-drift");
    assert_non_null(ev);
    assert_non_null(strstr(ev, "\"from\":\"backup\""));
    assert_non_null(strstr(ev, "set back to primary"));
    free(ev);
    char cur[32];
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "primary");
    run_for(w, 80000, up); /* read again: right, nothing said or done */
    assert_int_equal(fx_count_events(w->ms, "provider-drift"), 1);
    assert_int_equal(switch_calls(w), calls + 1);
}

/* Paused, a drift is reported once and not set back. */
static void test_provider_drift_paused(void **state)
{
    struct world *w = *state;
    static const char *const up[4] = {"hh", "hh", "hh", "hh"};
    run_for(w, 1000, up);
    assert_int_equal(memstore_put(w->ms, "/dhaf/fx/control/pause", "{\"by\":\"test\"}", 0), 0);
    int calls = switch_calls(w);
    set_file(w, "current", "backup\n");
    run_for(w, 160000, up); /* two reads or more */
    assert_int_equal(fx_count_events(w->ms, "provider-drift"), 1);
    assert_int_equal(switch_calls(w), calls);
    char *ev = fx_last_event(w->ms, "provider-drift");
    assert_non_null(ev);
    assert_non_null(strstr(ev, "paused: not set back"));
    free(ev);
}

/* A failing switch script is tried again after 1 s, 2 s, 4 s ... - not every tact - and the
 * streak is one switch-failed event carrying the start of its output (several lines, joined);
 * when it works again the failover says after how many failed attempts. */
static void test_failing_switch_backs_off(void **state)
{
    struct world *w = *state;
    static const char *const up[4] = {"hh", "hh", "hh", "hh"};
    static const char *const down[4] = {"uh", "uh", "uh", "uh"};
    run_for(w, 1000, up);
    char path[160], body[400];
    snprintf(path, sizeof(path), "%s/switch.sh", w->dir);
    snprintf(body, sizeof(body),
             "#!/bin/sh\necho \"$1\" >> %s\necho 'error: API refused' >&2\n"
             "echo 'hint: check the token' >&2\nexit 3\n",
             w->log);
    write_script(path, body);
    int calls = switch_calls(w);
    run_for(w, 20000, down); /* tried at 0, 1, 3, 7 and 15 s */
    int tries = switch_calls(w) - calls;
    print_message("%d switch calls in 20 s\n", tries);
    assert_true(tries >= 4 && tries <= 6);
    assert_int_equal(fx_count_events(w->ms, "switch-failed"), 1);
    char *ev = fx_last_event(w->ms, "switch-failed");
    assert_non_null(ev);
    assert_non_null(strstr(ev, "exit code 3"));
    assert_non_null(strstr(ev, "error: API refused | hint: check the token"));
    free(ev);
    snprintf(body, sizeof(body), "#!/bin/sh\necho \"$1\" >> %s\necho \"$1\" > %s\n", w->log,
             w->current);
    write_script(path, body);
    run_for(w, 20000, down); /* the next attempt (at 31 s) works */
    assert_int_equal(fx_count_events(w->ms, "failover"), 1);
    ev = fx_last_event(w->ms, "failover");
    assert_non_null(strstr(ev, "failed attempts"));
    free(ev);
    char cur[32];
    current_in_state(w, cur, sizeof(cur));
    assert_string_equal(cur, "backup");
}

/* A switch that keeps failing is tried again at most once a minute (SWITCH_BACKOFF_MAX_MS):
 * 1, 2, 4 ... 32 s, then 60 s between attempts; still one switch-failed event. */
static void test_switch_backoff_capped(void **state)
{
    struct world *w = *state;
    static const char *const up[4] = {"hh", "hh", "hh", "hh"};
    static const char *const down[4] = {"uh", "uh", "uh", "uh"};
    run_for(w, 1000, up);
    char path[160], body[200];
    snprintf(path, sizeof(path), "%s/switch.sh", w->dir);
    snprintf(body, sizeof(body), "#!/bin/sh\necho \"$1\" >> %s\nexit 3\n", w->log);
    write_script(path, body);
    int calls = switch_calls(w);
    run_for(w, 64000, down); /* tried at 0, 1, 3, 7, 15, 31 and 63 s */
    int first = switch_calls(w) - calls;
    run_for(w, 180000, down); /* then at 123, 183 and 243 s: a minute apart */
    int later = switch_calls(w) - calls - first;
    print_message("%d switch calls in 64 s, %d in the next 180 s\n", first, later);
    assert_true(first >= 6 && first <= 8);
    assert_int_equal(later, 3); /* doubling on, it would be 1 (at 127 s) */
    assert_int_equal(fx_count_events(w->ms, "switch-failed"), 1);
}

/* suspect/ writes of the current entry point since *mark (MS_TXN calls: the test writes no
 * other key meanwhile). */
static int suspicions_since(struct world *w, uint64_t *mark)
{
    uint64_t now = memstore_calls(w->ms, MS_TXN);
    int n = (int)(now - *mark);
    *mark = now;
    return n;
}

/* Suspicions (node/suspects.c): written for the service's current entry point only, on a
 * lease, naming the voter; none from an impaired round, none when more than
 * SUSPECT_MAX_AT_ONCE are flagged together, and at most SUSPECT_MAX_PER_S a second. */
static void test_suspicion_limits(void **state)
{
    struct world *w = *state;
    vote(w, "hh", "hh", "hh", "hh");
    leader_decider_round(w->d); /* web's current entry point: primary */
    view_step(w->a.view, 0);
    struct dhaf_probe_result r[SUSPECT_MAX_AT_ONCE + 1];
    memset(r, 0, sizeof(r));
    for (size_t i = 0; i < SUSPECT_MAX_AT_ONCE + 1; i++)
        r[i] = (struct dhaf_probe_result){
            .service = "web", .ep = i == 1 ? "backup" : "primary", .healthy = true, .known = true};
    struct suspects *s = suspects_new(w->a.c);
    uint64_t mark = memstore_calls(w->ms, MS_TXN);
    r[1].suspect = true; /* backup is not current: nothing */
    suspects_raise(s, "v0", r, 2);
    assert_int_equal(suspicions_since(w, &mark), 0);
    r[1].suspect = false;
    r[0].suspect = true;
    suspects_raise(s, "v0", r, 2);
    assert_int_equal(suspicions_since(w, &mark), 1);
    char *v = memstore_value(w->ms, "/dhaf/fx/suspect/web/primary");
    assert_non_null(v);
    assert_non_null(strstr(v, "\"voter\":\"v0\""));
    free(v);
    r[0].held = true; /* every entry point failing or held: impaired, nothing */
    r[1].healthy = false;
    suspects_raise(s, "v0", r, 2);
    assert_int_equal(suspicions_since(w, &mark), 0);
    r[0].held = false;
    r[1].healthy = true;
    for (size_t i = 0; i < SUSPECT_MAX_AT_ONCE + 1; i++)
        r[i].suspect = true; /* too many at once: nothing */
    suspects_raise(s, "v0", r, SUSPECT_MAX_AT_ONCE + 1);
    assert_int_equal(suspicions_since(w, &mark), 0);
    suspects_free(s);
    s = suspects_new(w->a.c); /* a fresh second for the rate */
    for (size_t i = 1; i < SUSPECT_MAX_AT_ONCE + 1; i++)
        r[i].suspect = false;
    for (int i = 0; i < SUSPECT_MAX_PER_S + 5; i++) /* (the cluster's clock: virtual) */
        suspects_raise(s, "v0", r, 2);
    int written = suspicions_since(w, &mark);
    assert_int_equal(written, SUSPECT_MAX_PER_S);
    vclock_advance(&w->vc, 1000); /* the next second: written again */
    suspects_raise(s, "v0", r, 2);
    assert_int_equal(suspicions_since(w, &mark), 1);
    suspects_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reload_changes_no_decision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_decision_on_a_partial_view, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_and_events_together, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_answer_is_read_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unread_provider_blocks_decisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_back_after_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frozen_voters_lose_their_votes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_read_back_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_back_fails_after_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flapping_entry_point_held_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_drift_set_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_drift_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_switch_on_a_stale_view, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_switch_backs_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_backoff_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_suspicion_limits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
