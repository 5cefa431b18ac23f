/* SPDX-License-Identifier: MIT */
/* Votes: decoding refuses malformed records; the tally follows DESIGN (strict majority of the
 * fresh voters that checked an entry point; a tie is healthy; stale votes do not count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../node/votes.h"
#include "dhaf/registry.h"

static const char *const CFG = "dhaf: {cluster-name: c, node-name: n}\n"
                               "etcd: {hosts: \"127.0.0.1:2379\"}\n"
                               "services:\n"
                               "- name: web\n"
                               "  domain: a.com\n"
                               "  entry-points: [{name: b-first, ip: 10.0.0.1}, {name: a-second, "
                               "ip: 10.0.0.2}]\n"
                               "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
                               "  health-checker: {type: tcp, port: 80}\n";

static struct dhaf_config cfg;

static int setup(void **state)
{
    (void)state;
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, "t");
    int rc = dhaf_config_load_mem(CFG, strlen(CFG), "t", ".", dhaf_registry_catalog(), &cfg, &rep);
    dhaf_cfg_report_release(&rep);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    dhaf_config_release(&cfg);
    return 0;
}

/* A vote from voter whose opinion of (b-first, a-second) is given as 'h', 'u' or '-'. */
static void make(struct vote *v, const char *voter, const char *ops)
{
    char json[1024];
    int n = snprintf(json, sizeof(json),
                     "{\"voter\":\"%s\",\"kind\":\"node\",\"seq\":1,\"results\":[", voter);
    const char *eps[2] = {"b-first", "a-second"};
    bool first = true;
    for (int i = 0; i < 2; i++) {
        if (ops[i] == '-')
            continue;
        n += snprintf(json + n, sizeof(json) - (size_t)n,
                      "%s{\"service\":\"web\",\"ep\":\"%s\",\"healthy\":%s,\"reason\":\"%s\"}",
                      first ? "" : ",", eps[i], ops[i] == 'h' ? "true" : "false",
                      ops[i] == 'h' ? "ok" : "timeout");
        first = false;
    }
    snprintf(json + n, sizeof(json) - (size_t)n, "]}");
    struct dhaf_err err;
    assert_int_equal(vote_decode(json, strlen(json), voter, &cfg, v, &err), 0);
}

struct tally_case {
    const char *name;
    const char *votes[6]; /* per voter: opinions of the two EPs; NULL ends */
    int64_t ages[6];      /* ms since the leader saw each vote */
    /* expected for b-first: known, healthy, h, u, voters */
    bool known, healthy;
    unsigned h, u, voters;
};

static void test_tally_table(void **state)
{
    (void)state;
    static const struct tally_case cases[] = {
        {"all healthy", {"hh", "hh", "hh"}, {0, 0, 0}, true, true, 3, 0, 3},
        {"strict majority down", {"uh", "uh", "hh"}, {0, 0, 0}, true, false, 1, 2, 3},
        {"one of three down", {"uh", "hh", "hh"}, {0, 0, 0}, true, true, 2, 1, 3},
        {"tie is healthy", {"uh", "hh"}, {0, 0}, true, true, 1, 1, 2},
        {"two of four is a tie", {"uh", "uh", "hh", "hh"}, {0, 0, 0, 0}, true, true, 2, 2, 4},
        {"three of four down", {"uh", "uh", "uh", "hh"}, {0, 0, 0, 0}, true, false, 1, 3, 4},
        {"no voters: no decision", {NULL}, {0}, false, true, 0, 0, 0},
        {"only stale voters", {"uu", "uu"}, {9001, 10000}, false, true, 0, 0, 0},
        {"stale votes do not count", {"uh", "uh", "hh"}, {9001, 9001, 0}, true, true, 1, 0, 1},
        {"freshness edge counts", {"uh"}, {9000}, true, false, 0, 1, 1},
        {"voters that did not check it", {"-h", "-h", "uh"}, {0, 0, 0}, true, false, 0, 1, 1},
        {"single voter down", {"uh"}, {0}, true, false, 0, 1, 1},
        {"a vote never seen written does not count",
         {"uh", "hh"},
         {100000, 0},
         true,
         true,
         1,
         0,
         1},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const struct tally_case *tc = &cases[c];
        struct vote v[6];
        struct seen_vote sv[6];
        size_t n = 0;
        for (; n < 6 && tc->votes[n]; n++) {
            char name[16];
            snprintf(name, sizeof(name), "v%zu", n);
            make(&v[n], name, tc->votes[n]);
            sv[n] = (struct seen_vote){&v[n], 100000 - tc->ages[n]};
        }
        struct ep_tally t[2];
        tally_service(&cfg.services[0], sv, n, 100000, 9000, t);
        if (t[0].known != tc->known || t[0].is_healthy != tc->healthy || t[0].healthy != tc->h ||
            t[0].unhealthy != tc->u || t[0].voters != tc->voters)
            fail_msg("case \"%s\": got known=%d healthy=%d h=%u u=%u voters=%u", tc->name,
                     t[0].known, t[0].is_healthy, t[0].healthy, t[0].unhealthy, t[0].voters);
        for (size_t i = 0; i < n; i++)
            vote_release(&v[i]);
    }
}

static void test_priority_is_config_order(void **state)
{
    (void)state;
    /* "b-first" sorts after "a-second" but is first in the config: the tally keeps config
     * order, so decide() can take the first healthy one as the highest priority. */
    struct vote v;
    make(&v, "v0", "uh");
    struct seen_vote sv = {&v, 500};
    struct ep_tally t[2];
    tally_service(&cfg.services[0], &sv, 1, 1000, 1000, t);
    assert_false(t[0].is_healthy); /* b-first */
    assert_true(t[1].is_healthy);  /* a-second */
    assert_non_null(strstr(t[0].reasons, "v0: timeout"));
    vote_release(&v);
}

static void test_decode_refuses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "[]",
        "{\"voter\":\"a b\",\"kind\":\"node\",\"seq\":1,\"results\":[]}",
        "{\"voter\":\"a\",\"kind\":\"robot\",\"seq\":1,\"results\":[]}",
        "{\"voter\":\"a\",\"kind\":\"node\",\"seq\":-1,\"results\":[]}",
        "{\"voter\":\"a\",\"kind\":\"node\",\"seq\":1,\"results\":{}}",
        "{\"voter\":\"a\",\"kind\":\"node\",\"seq\":1,\"results\":[{\"service\":\"web\"}]}",
        "{\"voter\":\"a\",\"kind\":\"node\",\"seq\":1,\"results\":[{\"service\":\"web\","
        "\"ep\":\"b-first\",\"healthy\":\"yes\"}]}",
        "{\"voter\":\"a\",\"voter\":\"b\",\"kind\":\"node\",\"seq\":1,\"results\":[]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct vote v;
        struct dhaf_err err;
        if (vote_decode(bad[i], strlen(bad[i]), "votes/a", &cfg, &v, &err) == 0)
            fail_msg("accepted bad vote %zu: %s", i, bad[i]);
        assert_non_null(strstr(err.msg, "votes/a"));
    }
    /* results for services or entry points we do not have are dropped, not fatal */
    const char *other = "{\"voter\":\"a\",\"kind\":\"prober\",\"seq\":7,\"results\":["
                        "{\"service\":\"gone\",\"ep\":\"x\",\"healthy\":true},"
                        "{\"service\":\"web\",\"ep\":\"a-second\",\"healthy\":false,"
                        "\"reason\":\"timeout\",\"text\":\"no answer\",\"latency_ms\":1000}]}";
    struct vote v;
    struct dhaf_err err;
    assert_int_equal(vote_decode(other, strlen(other), "votes/a", &cfg, &v, &err), 0);
    assert_int_equal(v.n, 1);
    assert_string_equal(v.results[0].ep, "a-second");
    assert_int_equal(v.results[0].latency_ms, 1000);
    assert_int_equal(v.seq, 7);
    vote_release(&v);
}

static void test_encode_round_trip(void **state)
{
    (void)state;
    struct dhaf_probe_result r[2] = {
        {.service = "web", .ep = "b-first", .healthy = true, .reason = "ok", .latency_ms = 3},
        {.service = "web",
         .ep = "a-second",
         .healthy = false,
         .reason = "http-code",
         .latency_ms = 12},
    };
    snprintf(r[1].text, sizeof(r[1].text), "unexpected HTTP code 500 \"quoted\"");
    char *json = vote_encode("node-1", "node", 42, r, 2);
    struct vote v;
    struct dhaf_err err;
    assert_int_equal(vote_decode(json, strlen(json), "votes/node-1", &cfg, &v, &err), 0);
    assert_string_equal(v.voter, "node-1");
    assert_int_equal(v.n, 2);
    /* results come back sorted by (service, entry point), found by vote_find */
    assert_string_equal(v.results[0].ep, "a-second");
    const struct vote_result *a = vote_find(&v, "web", "a-second");
    const struct vote_result *b = vote_find(&v, "web", "b-first");
    assert_non_null(a);
    assert_non_null(b);
    assert_null(vote_find(&v, "web", "c-none"));
    assert_false(a->healthy);
    assert_true(b->healthy);
    assert_string_equal(a->text, "unexpected HTTP code 500 \"quoted\"");
    vote_release(&v);
    free(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tally_table),
        cmocka_unit_test(test_priority_is_config_order),
        cmocka_unit_test(test_decode_refuses),
        cmocka_unit_test(test_encode_round_trip),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
