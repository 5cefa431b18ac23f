/* SPDX-License-Identifier: MIT */
/* decide(): every rule of DESIGN "Decision" and its edges, as a table. Entry points are named
 * so that alphabetical order differs from config (priority) order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../node/decide.h"

/* Priority order: zeta (0), alpha (1), mid (2). */
static struct dhaf_ep eps[3] = {{.name = "zeta"}, {.name = "alpha"}, {.name = "mid"}};
static struct dhaf_service svc = {.name = "web", .eps = eps, .n_eps = 3};

struct dcase {
    const char *name;
    const char *votes;  /* per EP: 'U' healthy, 'D' unhealthy, '?' no voters, 't' a 1:1 tie */
    int current;        /* state.current */
    const char *known;  /* state.eps as 'U'/'D'/'?' */
    bool panic, quorum; /* state */
    int req;            /* -1 none, -2 unknown name, else EP index */
    enum action_kind action;
    int target;
    bool purge;
    const char *events; /* expected kinds, space-separated, in order ("" = none) */
};

/* clang-format off */
static const struct dcase cases[] = {
    /* steady states */
    {"all healthy, on top priority", "UUU", 0, "UUU", false, true, -1, ACT_NONE, -1, false, ""},
    {"current healthy, lower priority healthy too", "UUU", 0, "UUU", false, true, -1, ACT_NONE, -1, false, ""},
    /* failover */
    {"current down: failover to next priority", "DUU", 0, "UUU", false, true, -1, ACT_FAILOVER, 1, false, "ep-down"},
    {"failover skips an unhealthy one", "DDU", 0, "UUU", false, true, -1, ACT_FAILOVER, 2, false, "ep-down ep-down"},
    {"failover prefers priority over names", "DUU", 0, "DUU", false, true, -1, ACT_FAILOVER, 1, false, ""},
    {"failover purges a switchover request", "DUU", 0, "UUU", false, true, 2, ACT_FAILOVER, 1, true, "ep-down switchover-purged"},
    {"tie is healthy: no failover", "tUU", 0, "UUU", false, true, -1, ACT_NONE, -1, false, ""},
    {"current unknown, others known: no failover", "?UU", 0, "UUU", false, true, -1, ACT_NONE, -1, false, ""},
    /* panic */
    {"all down: panic, no switch", "DDD", 0, "UUU", false, true, -1, ACT_NONE, -1, false, "ep-down ep-down ep-down service-down"},
    {"still all down: nothing new", "DDD", 0, "DDD", true, true, -1, ACT_NONE, -1, false, ""},
    {"one recovers: service-up and failover", "DUD", 0, "DDD", true, true, -1, ACT_FAILOVER, 1, false, "ep-up service-up"},
    {"panic with a request: purged, no switch", "DDD", 0, "DDD", true, true, 1, ACT_NONE, -1, true, "switchover-purged"},
    /* quorum */
    {"no voters at all: no decision", "???", 0, "UUU", false, true, -1, ACT_NONE, -1, false, "no-quorum"},
    {"still no voters: silent", "???", 0, "UUU", false, false, -1, ACT_NONE, -1, false, ""},
    {"voters back", "UUU", 0, "UUU", false, false, -1, ACT_NONE, -1, false, "quorum"},
    {"no voters keeps a request", "???", 0, "UUU", false, false, 1, ACT_NONE, -1, false, ""},
    /* switchover and pins */
    {"switchover to a healthy EP", "UUU", 0, "UUU", false, true, 2, ACT_SWITCHOVER, 2, false, ""},
    {"fulfilled request pins: no switching back", "UUU", 2, "UUU", false, true, 2, ACT_NONE, -1, false, ""},
    {"request for an unhealthy EP: purged", "UUD", 0, "UUD", false, true, 2, ACT_NONE, -1, true, "switchover-purged"},
    {"request for an unchecked EP: purged", "UU?", 0, "UU?", false, true, 2, ACT_NONE, -1, true, "switchover-purged"},
    {"request for an unknown EP name: purged", "UUU", 0, "UUU", false, true, -2, ACT_NONE, -1, true, "switchover-purged"},
    {"purged request lets switching resume", "UUU", 2, "UUU", false, true, -2, ACT_SWITCHING, 0, true, "switchover-purged"},
    {"pinned EP goes down: failover, purge", "UUD", 2, "UUU", false, true, 2, ACT_FAILOVER, 0, true, "ep-down switchover-purged"},
    /* switching */
    {"top priority back: switching", "UUU", 1, "DUU", false, true, -1, ACT_SWITCHING, 0, false, "ep-up"},
    {"switching goes to the highest healthy", "DUU", 2, "DDU", false, true, -1, ACT_SWITCHING, 1, false, "ep-up"},
    {"no switching to an equal or lower priority", "DUU", 1, "DUU", false, true, -1, ACT_NONE, -1, false, ""},
    /* no current entry point yet */
    {"nothing set yet: highest healthy", "DUU", -1, "???", false, false, -1, ACT_SWITCHING, 1, false, "quorum ep-down ep-up ep-up"},
    {"nothing set yet, a request: honoured", "UUU", -1, "UUU", false, true, 2, ACT_SWITCHOVER, 2, false, ""},
    {"nothing set, all down: panic", "DDD", -1, "DDD", false, true, -1, ACT_NONE, -1, false, "service-down"},
    {"current index out of range", "UUU", 7, "UUU", false, true, -1, ACT_SWITCHING, 0, false, ""},
};
/* clang-format on */

static void build_tally(const char *votes, struct ep_tally *t)
{
    for (size_t e = 0; e < 3; e++) {
        memset(&t[e], 0, sizeof(t[e]));
        switch (votes[e]) {
        case 'U':
            t[e] = (struct ep_tally){.healthy = 3, .voters = 3, .known = true, .is_healthy = true};
            break;
        case 'D':
            t[e] = (struct ep_tally){.unhealthy = 2, .healthy = 1, .voters = 3, .known = true};
            break;
        case 't': /* a tie counts as healthy (the tally already decided it) */
            t[e] = (struct ep_tally){
                .unhealthy = 1, .healthy = 1, .voters = 2, .known = true, .is_healthy = true};
            break;
        default:
            break;
        }
    }
}

static void test_table(void **state)
{
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct dcase *c = &cases[i];
        struct ep_tally t[3];
        build_tally(c->votes, t);
        struct decide_state st = {.current = c->current, .panic = c->panic, .quorum = c->quorum};
        for (size_t e = 0; e < 3; e++)
            st.eps[e] = c->known[e] == 'U' ? EP_UP : c->known[e] == 'D' ? EP_DOWN : EP_UNKNOWN;
        struct decide_request req = {.kind = REQ_NONE, .ep = -1};
        if (c->req == -2)
            req.kind = REQ_UNKNOWN_EP;
        else if (c->req >= 0)
            req = (struct decide_request){.kind = REQ_EP, .ep = c->req};
        struct decide_output out;
        struct quorum q = {.fresh = 3,
                           .expected = 3,
                           .need = 2}; /* every voter fresh: the table is about the rules */
        decide(&svc, t, &q, &st, &req, &out);
        char got[256] = "";
        for (size_t k = 0; k < out.n_events; k++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", k ? " " : "",
                     event_kind_info(out.events[k].kind)->name);
        if (out.action != c->action || out.target != c->target || out.purge_request != c->purge ||
            strcmp(got, c->events) != 0) {
            failures++;
            fprintf(stderr,
                    "case \"%s\": got action=%s target=%d purge=%d events=\"%s\"; want %s %d %d "
                    "\"%s\"\n",
                    c->name, action_name(out.action), out.target, out.purge_request, got,
                    action_name(c->action), c->target, c->purge, c->events);
        }
    }
    assert_int_equal(failures, 0);
}

static void test_state_is_carried(void **state)
{
    (void)state;
    struct ep_tally t[3];
    build_tally("DUU", t);
    struct decide_state st = {.current = 0, .quorum = true};
    st.eps[0] = st.eps[1] = st.eps[2] = EP_UP;
    struct decide_request req = {.kind = REQ_NONE, .ep = -1};
    struct decide_output out;
    struct quorum q = {.fresh = 3, .expected = 3, .need = 2};
    decide(&svc, t, &q, &st, &req, &out);
    /* the next state records what was announced, so a new leader does not repeat it */
    assert_int_equal(out.next.eps[0], EP_DOWN);
    assert_int_equal(out.next.current, 0); /* only a completed switch changes current */
    struct decide_output again;
    out.next.current = 1;
    decide(&svc, t, &q, &out.next, &req, &again);
    assert_int_equal(again.action, ACT_NONE);
    assert_int_equal(again.n_events, 0);
}

/* The quorum of expected voters: a decision needs q.need fresh voters (a strict majority of
 * the expected ones, or dhaf.min-voters); below it nothing is decided, whatever the votes
 * say, and the transition is announced once each way. */
static void test_quorum(void **state)
{
    (void)state;
    struct {
        const char *name;
        struct quorum q;
        bool was; /* state.quorum */
        enum action_kind action;
        const char *events;
    } qcases[] = {
        {"1 of 3 expected says down: no failover",
         {.fresh = 1, .expected = 3, .need = 2},
         true,
         ACT_NONE,
         "no-quorum"},
        {"still 1 of 3: silent", {.fresh = 1, .expected = 3, .need = 2}, false, ACT_NONE, ""},
        {"2 of 3 back: failover",
         {.fresh = 2, .expected = 3, .need = 2},
         false,
         ACT_FAILOVER,
         "quorum ep-down"},
        {"2 of 4: no majority",
         {.fresh = 2, .expected = 4, .need = 3},
         true,
         ACT_NONE,
         "no-quorum"},
        {"3 of 5 with 2 probers: decides",
         {.fresh = 3, .expected = 5, .need = 3},
         true,
         ACT_FAILOVER,
         "ep-down"},
        {"a cluster of one: decides",
         {.fresh = 1, .expected = 1, .need = 1},
         true,
         ACT_FAILOVER,
         "ep-down"},
        {"min-voters 3, 2 fresh of 2: no decision",
         {.fresh = 2, .expected = 2, .need = 3},
         true,
         ACT_NONE,
         "no-quorum"},
        {"need 0 never means no voter",
         {.fresh = 0, .expected = 0, .need = 0},
         true,
         ACT_NONE,
         "no-quorum"},
    };
    for (size_t i = 0; i < sizeof(qcases) / sizeof(qcases[0]); i++) {
        struct ep_tally t[3];
        build_tally("DUU", t);
        struct decide_state st = {.current = 0, .quorum = qcases[i].was};
        st.eps[0] = st.eps[1] = st.eps[2] = EP_UP;
        struct decide_request req = {.kind = REQ_NONE, .ep = -1};
        struct decide_output out;
        decide(&svc, t, &qcases[i].q, &st, &req, &out);
        char got[128] = "";
        for (size_t k = 0; k < out.n_events; k++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", k ? " " : "",
                     event_kind_info(out.events[k].kind)->name);
        if (out.action != qcases[i].action || strcmp(got, qcases[i].events) != 0)
            fail_msg("case \"%s\": action %s, events \"%s\"", qcases[i].name,
                     action_name(out.action), got);
        if (qcases[i].action == ACT_NONE && !strcmp(qcases[i].events, "no-quorum"))
            assert_int_equal(out.next.eps[0], EP_UP); /* nothing announced without quorum */
    }
}

/* Drained entry points: never a target; a drained current one is left for the best other
 * healthy one; a request for a drained one is purged; the service is not down while a
 * drained entry point is up, but nothing is switched to it. */
static void test_drain(void **state)
{
    (void)state;
    struct {
        const char *name, *votes, *drained;
        int current, req;
        enum action_kind action;
        int target;
        const char *events;
    } dcases[] = {
        {"current drained: switching to the next", "UUU", "D..", 0, -1, ACT_SWITCHING, 1, ""},
        {"current drained, next drained too: the third", "UUU", "DD.", 0, -1, ACT_SWITCHING, 2, ""},
        {"failover skips a drained one", "DUU", ".D.", 0, -1, ACT_FAILOVER, 2, ""},
        {"no switching back to a drained top priority", "UUU", "D..", 1, -1, ACT_NONE, -1, ""},
        {"only a drained one is up: no switch, no panic", "DUD", ".D.", 0, -1, ACT_NONE, -1, ""},
        {"a request for a drained one: purged", "UUU", "..D", 0, 2, ACT_NONE, -1,
         "switchover-purged"},
        {"nothing set yet: the best undrained", "UUU", "D..", -1, -1, ACT_SWITCHING, 1, ""},
    };
    for (size_t i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++) {
        struct ep_tally t[3];
        build_tally(dcases[i].votes, t);
        struct decide_state st = {.current = dcases[i].current, .quorum = true};
        for (size_t e = 0; e < 3; e++)
            st.eps[e] = dcases[i].votes[e] == 'U' ? EP_UP : EP_DOWN;
        struct decide_request req = {.kind = dcases[i].req >= 0 ? REQ_EP : REQ_NONE,
                                     .ep = dcases[i].req};
        for (size_t e = 0; e < 3; e++)
            req.drained[e] = dcases[i].drained[e] == 'D';
        struct quorum q = {.fresh = 3, .expected = 3, .need = 2};
        struct decide_output out;
        decide(&svc, t, &q, &st, &req, &out);
        char got[128] = "";
        for (size_t k = 0; k < out.n_events; k++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", k ? " " : "",
                     event_kind_info(out.events[k].kind)->name);
        if (out.action != dcases[i].action || out.target != dcases[i].target ||
            strcmp(got, dcases[i].events) != 0)
            fail_msg("case \"%s\": action %s target %d events \"%s\"", dcases[i].name,
                     action_name(out.action), out.target, got);
        assert_false(out.next.panic);
    }
}

/* Decides with three fresh voters of three whose tally is votes (build_tally), every entry
 * point announced as it is now (D: down, else up) and current the current one. */
static void decide_three(const char *votes, int current, const struct decide_request *req,
                         struct decide_output *out)
{
    struct ep_tally t[3];
    build_tally(votes, t);
    struct decide_state st = {.current = current, .quorum = true};
    for (size_t e = 0; e < 3; e++)
        st.eps[e] = votes[e] == 'D' ? EP_DOWN : EP_UP;
    struct quorum q = {.fresh = 3, .expected = 3, .need = 2};
    decide(&svc, t, &q, &st, req, out);
}

/* Damping: switching back waits for a strict majority held for switch_back_ms, and never
 * happens with manual failback; a failover never waits. */
static void test_switch_back_damping(void **state)
{
    (void)state;
    struct {
        const char *name, *votes;
        int current;
        int64_t up_ms, delay_ms;
        bool manual;
        enum action_kind action;
        int target;
    } bcases[] = {
        {"healthy 1 s of 3: waits", "UUU", 1, 1000, 3000, false, ACT_NONE, -1},
        {"healthy 3 s of 3: back", "UUU", 1, 3000, 3000, false, ACT_SWITCHING, 0},
        {"a tie is no strict majority: waits", "tUU", 1, 5000, 0, false, ACT_NONE, -1},
        {"manual failback: stays", "UUU", 1, 9000, 3000, true, ACT_NONE, -1},
        {"failover never waits", "DUU", 0, -1, 3000, true, ACT_FAILOVER, 1},
    };
    for (size_t i = 0; i < sizeof(bcases) / sizeof(bcases[0]); i++) {
        struct decide_request req = {.kind = REQ_NONE,
                                     .ep = -1,
                                     .switch_back_ms = bcases[i].delay_ms,
                                     .manual_failback = bcases[i].manual};
        for (size_t e = 0; e < 3; e++)
            req.strict_up_ms[e] = bcases[i].up_ms;
        struct decide_output out;
        decide_three(bcases[i].votes, bcases[i].current, &req, &out);
        if (out.action != bcases[i].action || out.target != bcases[i].target)
            fail_msg("case \"%s\": action %s target %d (%s)", bcases[i].name,
                     action_name(out.action), out.target, out.rule);
    }
}

/* A flapping entry point (held down by its penalty) is a target only when no other healthy
 * one is: no switch back to it, no failover to it while another is up, but better it than
 * nothing. */
static void test_flapping_held_down(void **state)
{
    (void)state;
    struct {
        const char *name, *votes, *flapping;
        int current;
        enum action_kind action;
        int target;
    } fcases[] = {
        {"no switch back to a flapping one", "UUU", "x..", 1, ACT_NONE, -1},
        {"the control: back when it is calm", "UUU", "...", 1, ACT_SWITCHING, 0},
        {"failover skips a flapping one", "DUU", ".x.", 0, ACT_FAILOVER, 2},
        {"a flapping one rather than none", "DUD", ".x.", 0, ACT_FAILOVER, 1},
    };
    for (size_t i = 0; i < sizeof(fcases) / sizeof(fcases[0]); i++) {
        struct decide_request req = {.kind = REQ_NONE, .ep = -1};
        for (size_t e = 0; e < 3; e++)
            req.flapping[e] = fcases[i].flapping[e] == 'x';
        struct decide_output out;
        decide_three(fcases[i].votes, fcases[i].current, &req, &out);
        if (out.action != fcases[i].action || out.target != fcases[i].target)
            fail_msg("case \"%s\": action %s target %d (%s)", fcases[i].name,
                     action_name(out.action), out.target, out.rule);
    }
}

/* The flap penalty: +1 per time down, halving every half-life; held down at the threshold,
 * released below half of it; threshold 0 is off. */
static void test_flap_penalty(void **state)
{
    (void)state;
    struct flap f = {0};
    int64_t t = 1000000;
    assert_false(flap_update(&f, t, true, 3, 60));         /* 1 */
    assert_false(flap_update(&f, t + 10000, true, 3, 60)); /* 1 * 2^(-10/60) + 1 = 1.89 */
    assert_false(f.held);
    assert_true(flap_update(&f, t + 20000, true, 3, 60)); /* 2.68: 3, rounded: held down */
    assert_true(f.held);
    assert_false(flap_update(&f, t + 65000, false, 3, 60)); /* 1.59: not below 1.5 yet */
    assert_true(f.held);
    assert_true(flap_update(&f, t + 75000, false, 3, 60)); /* 1.41: released */
    assert_false(f.held);
    /* downs a few half-lives apart never add up */
    struct flap slow = {0};
    for (int k = 0; k < 10; k++)
        assert_false(flap_update(&slow, t + k * 120000, true, 3, 60));
    assert_true(slow.penalty < 1.5f);
    /* threshold 0: off; a held entry point is released at once */
    f.held = true;
    assert_true(flap_update(&f, t + 77000, true, 0, 60));
    assert_false(f.held);
    assert_false(flap_update(&f, t + 78000, true, 0, 60));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_state_is_carried),
        cmocka_unit_test(test_quorum),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_switch_back_damping),
        cmocka_unit_test(test_flapping_held_down),
        cmocka_unit_test(test_flap_penalty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
