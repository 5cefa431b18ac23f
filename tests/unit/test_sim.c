/* SPDX-License-Identifier: MIT */
/* dhaf-sim's engine (sim/sim.h): the three rules on worlds whose right answer is known, each
 * test one thing a rule is for (or fails at), and the timeline's text form with its errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config_load.h"
#include "sim.h"

static const char *const yaml =
    "dhaf:\n  cluster-name: sim\n  node-name: node-1\n  tact-interval: 1\n"
    "etcd:\n  hosts: 127.0.0.1:2379\n"
    "services:\n  - name: web\n    domain: example.com\n    entry-points:\n"
    "      - name: ep-1\n        ip: 192.0.2.1\n"
    "      - name: ep-2\n        ip: 192.0.2.2\n"
    "    switcher:\n      type: exec\n      init: /bin/true\n      switch: /bin/true\n"
    "    health-checker:\n      type: web\n      timeout: 1\n      retries: 0\n";

/* A vote as dhaf-node stores it, of voter v: ep-1 healthy a, ep-2 healthy b. */
#define VOTE(v, a, b)                                                                              \
    "{\"voter\":\"" v "\",\"kind\":\"node\",\"seq\":1,\"results\":[{\"service\":\"web\","          \
    "\"ep\":\"ep-1\",\"healthy\":" a "},{\"service\":\"web\",\"ep\":\"ep-2\","                     \
    "\"healthy\":" b "}]}"

static struct dhaf_config cfg;
static const char *const names[] = {"node-1", "node-2", "node-3"};

static int setup(void **state)
{
    (void)state;
    return test_config_load(yaml, "sim.yaml", "/", &cfg);
}

static int teardown(void **state)
{
    (void)state;
    dhaf_config_release(&cfg);
    return 0;
}

/* Runs the timeline text under every rule. */
static void run(const char *timeline, struct sim_outcome out[SIM_N_RULES])
{
    struct sim_world w;
    struct dhaf_err err;
    int rc = sim_timeline_parse(timeline, "t.tl", &cfg.services[0], names, 3, &w, &err);
    if (rc)
        fail_msg("%s", err.msg);
    struct sim_opts o = {.cfg = &cfg,
                         .svc = &cfg.services[0],
                         .timeout_ms = 1000,
                         .retries = 0,
                         .n_voters = 3,
                         .voter_names = names};
    assert_int_equal(sim_run(&o, &w, out, &err), 0);
    sim_world_release(&w);
}

/* A clean outage: every rule fails over once and switches back once; dhaf within a second of
 * it (a suspicion, and the other voters' burst checks), the original only at its tact. */
static void test_clean_outage(void **state)
{
    (void)state;
    struct sim_outcome out[SIM_N_RULES];
    run("10.5s ep ep-1 refused\n30s ep ep-1 up\n60s end\n", out);
    for (int r = 0; r < SIM_N_RULES; r++) {
        assert_int_equal(out[r].n_sw, 2);
        assert_int_equal(out[r].sw[0].from, 0);
        assert_int_equal(out[r].sw[0].to, 1);
        assert_string_equal(out[r].sw[0].kind, "failover");
        assert_true(out[r].sw[0].at_ms > 10500);
        assert_int_equal(out[r].current, 0);
    }
    assert_true(out[SIM_DHAF].sw[0].at_ms < 10500 + 1000);
    /* switching back waits for switch-back-delay (3 tacts) under dhaf, not under the others */
    assert_true(out[SIM_DHAF].sw[1].at_ms >= 30000 + 3000);
    assert_true(out[SIM_ORIGINAL].sw[1].at_ms < 30000 + 3000);
}

/* Two voters of three frozen for 40 s, and the third's route to ep-1 breaks: one vantage point
 * alone. dhaf has no quorum and does nothing; the original, once the frozen nodes' heartbeats
 * are 30 s old, lets the lone node decide; the local checker is that lone node. */
static void test_lone_voter_never_decides(void **state)
{
    (void)state;
    struct sim_outcome out[SIM_N_RULES];
    run("5s voter node-2 frozen\n5s voter node-3 frozen\n"
        "38s voter node-1 net ep-1 refused\n45s voter node-2 thawed\n45s voter node-3 thawed\n"
        "50s voter node-1 net ep-1 up\n70s end\n",
        out);
    assert_int_equal(out[SIM_DHAF].n_sw, 0);
    assert_true(out[SIM_ORIGINAL].n_sw >= 1);
    assert_true(out[SIM_ORIGINAL].sw[0].at_ms >= 38000);
    assert_true(out[SIM_LOCAL].n_sw >= 1);
}

/* One voter's route to the current entry point broken: outvoted under dhaf and the original;
 * the local checker at that voter fails over. */
static void test_one_vantage_point(void **state)
{
    (void)state;
    struct sim_outcome out[SIM_N_RULES];
    run("10s voter node-1 net ep-1 hung\n40s voter node-1 net ep-1 up\n60s end\n", out);
    assert_int_equal(out[SIM_DHAF].n_sw, 0);
    assert_int_equal(out[SIM_ORIGINAL].n_sw, 0);
    assert_true(out[SIM_LOCAL].n_sw >= 1);
    /* a voter whose whole network refuses is impaired: its votes count for nothing */
    run("10s voter node-2 net all refused\n40s voter node-2 net all up\n60s end\n", out);
    assert_int_equal(out[SIM_DHAF].n_sw, 0);
}

/* A backend that flaps (down 2 s, up 4 s, ten times): the original and the local checker
 * follow every flap; dhaf's switch-back delay and flap penalty hold it down. */
static void test_flapping(void **state)
{
    (void)state;
    char tl[2048] = "";
    size_t n = 0;
    for (int k = 0; k < 10; k++)
        n += (size_t)snprintf(tl + n, sizeof(tl) - n, "%ds ep ep-1 refused\n%ds ep ep-1 up\n",
                              10 + 6 * k, 12 + 6 * k);
    snprintf(tl + n, sizeof(tl) - n, "100s end\n");
    struct sim_outcome out[SIM_N_RULES];
    run(tl, out);
    assert_true(out[SIM_ORIGINAL].n_sw >= 18);
    assert_true(out[SIM_LOCAL].n_sw >= 18);
    assert_true(out[SIM_DHAF].n_sw >= 1 && out[SIM_DHAF].n_sw <= 6);
    assert_int_equal(out[SIM_DHAF].sw[0].from, 0);
}

/* A voter cut off from etcd loses its vote after the vote lease (3 tacts): the two others
 * still decide an outage. The backend hangs: the first voter's check turns slow and is
 * suspected 100 ms in, the other's burst check times out beside a passing witness (confirmed);
 * the first confirms its own after its check and its re-check time out - within a tact and
 * two timeouts of the outage. */
static void test_cut_and_hung(void **state)
{
    (void)state;
    struct sim_outcome out[SIM_N_RULES];
    run("5s voter node-3 cut\n10.5s ep ep-1 hung\n30s ep ep-1 up\n35s voter node-3 joined\n"
        "60s end\n",
        out);
    assert_true(out[SIM_DHAF].n_sw >= 1);
    assert_true(out[SIM_DHAF].sw[0].at_ms > 10500 + 1000);
    assert_true(out[SIM_DHAF].sw[0].at_ms < 10500 + 1000 + 2 * 1000 + 100);
}

/* The same world and seed give the same outcome; the seed changes the draws. */
static void test_reproducible(void **state)
{
    (void)state;
    const char *tl = "seed 7\n10s ep ep-1 slow 900 150\n60s end\n";
    struct sim_outcome a[SIM_N_RULES], b[SIM_N_RULES];
    run(tl, a);
    run(tl, b);
    for (int r = 0; r < SIM_N_RULES; r++) {
        assert_int_equal(a[r].n_sw, b[r].n_sw);
        for (size_t k = 0; k < a[r].n_sw && k < SIM_MAX_SWITCHES; k++)
            assert_int_equal(a[r].sw[k].at_ms, b[r].sw[k].at_ms);
    }
    /* at 900 +- 150 ms a third of the attempts time out: the local checker flaps */
    assert_true(a[SIM_LOCAL].n_sw >= 4);
}

static void expect_error(const char *timeline, const char *needle)
{
    struct sim_world w;
    struct dhaf_err err;
    int rc = sim_timeline_parse(timeline, "t.tl", &cfg.services[0], names, 3, &w, &err);
    assert_int_equal(rc, DHAF_EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("error \"%s\" does not say \"%s\"", err.msg, needle);
    assert_null(w.changes);
}

static void test_timeline_errors(void **state)
{
    (void)state;
    expect_error("10s ep ep-9 refused\n", "t.tl:1: the service has no such entry point (\"ep-9\")");
    expect_error("# fine\n10s voter node-7 frozen\n", "t.tl:2: no such voter");
    expect_error("10x ep ep-1 refused\n", "t.tl:1: a time is a number");
    expect_error("-5s ep ep-1 refused\n", "t.tl:1: a time must be 0 or more");
    expect_error("10s ep ep-1 sideways\n", "t.tl:1: a backend is up, refused, hung");
    expect_error("10s ep ep-1 slow 900\n", "t.tl:1: a number from 0");
    expect_error("10s ep ep-1 flaky 2\n", "t.tl:1: a number from 0 to 1");
    expect_error("10s ep ep-1 refused now\n", "more words than expected (\"now\")");
    expect_error("10s voter node-1 asleep\n", "a voter is frozen, thawed");
    expect_error("10s voter node-1 net ep-1\n", "what the backend does is missing");
    expect_error("10s end\n20s ep ep-1 hung\n", "a change comes after the end");
    expect_error("10s end\n20s end\n", "t.tl:2: a second end");
    expect_error("10s\n", "a time needs what happens");
    expect_error("seed x\n", "t.tl:1: a number from 0");
    expect_error("10s ep ep-1 \x01\n", "control or non-ASCII");
    expect_error("10s vote node-1 {\"voter\":\n", "t.tl:1: node-1");
    expect_error("10s vote node-1 " VOTE("node-2", "true", "true") "\n",
                 "the vote is another voter's (\"node-1\")");
    expect_error("10s vote node-1\n", "a vote line is <time> vote <voter>");
    expect_error("10s vote node-9 -\n", "no such voter");
    size_t huge = (4u << 20) + 64; /* a vote line past 4 MiB */
    char *big = malloc(huge + 1);
    assert_non_null(big);
    memset(big, 'x', huge);
    memcpy(big, "10s vote node-1 {", 17);
    big[huge] = '\0';
    expect_error(big, "t.tl:1: the line is longer than 4 MiB");
    free(big);
    char longl[600];
    memset(longl, 'a', sizeof(longl) - 1);
    longl[sizeof(longl) - 1] = '\0';
    expect_error(longl, "longer than 511 bytes");

    /* the voters a timeline declares */
    char buf[128];
    const char *got[4];
    assert_int_equal(
        sim_timeline_voters("# x\nvoters a b  c # three\n1s end\n", buf, sizeof(buf), got, 4), 3);
    assert_string_equal(got[2], "c");
    assert_int_equal(sim_timeline_voters("1s end\n", buf, sizeof(buf), got, 4), 0);

    /* a good one: sorted by time, in line order within a time; end defaults to +60 s */
    struct sim_world w;
    struct dhaf_err err;
    assert_int_equal(sim_timeline_parse("20s ep ep-1 up\n5s voter node-2 overloaded 100 50\n"
                                        "5s voter node-2 net all hung\n",
                                        "t.tl", &cfg.services[0], names, 3, &w, &err),
                     0);
    assert_int_equal(w.n_changes, 3);
    assert_int_equal(w.changes[0].kind, SIM_OVERLOAD);
    assert_true(w.changes[0].a == 100 && w.changes[0].b == 50);
    assert_int_equal(w.changes[1].kind, SIM_NET);
    assert_int_equal(w.changes[1].ep, -1);
    assert_int_equal(w.changes[2].at_ms, 20000);
    assert_int_equal(w.end_ms, 80000);
    sim_world_release(&w);
}

/* Recorded votes (dhaf-sim record) are replayed as they were: two of three calling ep-1 down
 * is a failover at that moment; with two votes gone (their leases ended) there is no quorum,
 * and the third alone decides nothing under dhaf - while the original rule, which counts live
 * nodes only, follows it. */
static void test_replay_votes(void **state)
{
    (void)state;
    struct sim_outcome out[SIM_N_RULES];
    run("voters node-1 node-2 node-3\n"
        "1s vote node-1 " VOTE(
            "node-1", "true", "true") "\n"
                                      "1s vote node-2 " VOTE(
                                          "node-2", "true",
                                          "true") "\n"
                                                  "1.2s vote node-3 " VOTE(
                                                      "node-3", "true",
                                                      "true") "\n"
                                                              "10.25s vote node-2 " VOTE(
                                                                  "node-2", "false",
                                                                  "true") "\n"
                                                                          "10.5s vote node-3 " VOTE(
                                                                              "node-3", "false",
                                                                              "true") "\n"
                                                                                      "30s end\n",
        out);
    assert_int_equal(out[SIM_DHAF].n_sw, 1);
    assert_int_equal(out[SIM_DHAF].sw[0].at_ms, 10500 + 5); /* + the switcher call */
    assert_int_equal(out[SIM_DHAF].sw[0].to, 1);
    assert_int_equal(out[SIM_ORIGINAL].n_sw, 1);
    assert_int_equal(out[SIM_LOCAL].n_sw, 0); /* node-1's own vote never said ep-1 down */

    run("1s vote node-1 " VOTE(
            "node-1", "true",
            "true") "\n"
                    "1s vote node-2 " VOTE(
                        "node-2", "true",
                        "true") "\n"
                                "1s vote node-3 " VOTE(
                                    "node-3", "true",
                                    "true") "\n"
                                            "5s vote node-2 -\n5s vote node-3 -\n"
                                            "10s vote node-1 " VOTE("node-1", "false",
                                                                    "true") "\n"
                                                                            "30s end\n",
        out);
    assert_int_equal(out[SIM_DHAF].n_sw, 0);
    assert_int_equal(out[SIM_ORIGINAL].n_sw, 1);
    assert_int_equal(out[SIM_LOCAL].n_sw, 1);
}

/* sim_run refuses worlds it cannot run, naming the change. */
static void test_run_refuses(void **state)
{
    (void)state;
    struct sim_change bad[2] = {{.at_ms = 10, .kind = SIM_FROZEN, .voter = 5},
                                {.at_ms = 5, .kind = SIM_BACKEND, .ep = 0}};
    struct sim_world w = {.changes = bad, .n_changes = 1, .end_ms = 1000};
    struct sim_opts o = {.cfg = &cfg, .svc = &cfg.services[0], .timeout_ms = 1000, .n_voters = 3};
    struct sim_outcome out[SIM_N_RULES];
    struct dhaf_err err;
    assert_int_equal(sim_run(&o, &w, out, &err), DHAF_EINVAL);
    assert_non_null(strstr(err.msg, "change 1"));
    assert_non_null(strstr(err.msg, "names no voter"));
    bad[0].voter = 0;
    w.n_changes = 2;
    assert_int_equal(sim_run(&o, &w, out, &err), DHAF_EINVAL);
    assert_non_null(strstr(err.msg, "change 2 is out of order"));
    o.n_voters = 0;
    assert_int_equal(sim_run(&o, &w, out, &err), DHAF_EINVAL);
    assert_non_null(strstr(err.msg, "voters"));
    o.n_voters = SIM_MAX_VOTERS + 1;
    assert_int_equal(sim_run(&o, &w, out, &err), DHAF_EINVAL);
    assert_non_null(strstr(err.msg, "1 to 16 voters, not 17"));
    /* a service of more entry points than the engine models */
    struct dhaf_ep eps[SIM_MAX_EPS + 1] = {{0}};
    struct dhaf_service big = {.name = "big", .eps = eps, .n_eps = SIM_MAX_EPS + 1};
    o.n_voters = 3;
    o.svc = &big;
    assert_int_equal(sim_run(&o, &w, out, &err), DHAF_EINVAL);
    assert_non_null(strstr(err.msg, "1 to 8 entry points"));
    o.svc = &cfg.services[0];
    o.timeout_ms = 0;
    assert_int_equal(sim_run(&o, &w, out, &err), DHAF_EINVAL);
    assert_non_null(strstr(err.msg, "timeout"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_outage),      cmocka_unit_test(test_lone_voter_never_decides),
        cmocka_unit_test(test_one_vantage_point), cmocka_unit_test(test_flapping),
        cmocka_unit_test(test_cut_and_hung),      cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_timeline_errors),   cmocka_unit_test(test_replay_votes),
        cmocka_unit_test(test_run_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
