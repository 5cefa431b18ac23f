/* SPDX-License-Identifier: MIT */
/* Votes: decoding refuses malformed records; the tally follows DESIGN (strict majority of the
 * fresh voters that checked an entry point; a tie is healthy); the encoding is compact (a
 * reason only for a failing check, texts bounded) and vote_same / vote_digest tell a change of
 * opinion from a change of wording. */
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
    /* expected for b-first: known, healthy, h, u, voters */
    bool known, healthy;
    unsigned h, u, voters;
};

static void test_tally_table(void **state)
{
    (void)state;
    static const struct tally_case cases[] = {
        {"all healthy", {"hh", "hh", "hh"}, true, true, 3, 0, 3},
        {"strict majority down", {"uh", "uh", "hh"}, true, false, 1, 2, 3},
        {"one of three down", {"uh", "hh", "hh"}, true, true, 2, 1, 3},
        {"tie is healthy", {"uh", "hh"}, true, true, 1, 1, 2},
        {"two of four is a tie", {"uh", "uh", "hh", "hh"}, true, true, 2, 2, 4},
        {"three of four down", {"uh", "uh", "uh", "hh"}, true, false, 1, 3, 4},
        {"no voters: no decision", {NULL}, false, true, 0, 0, 0},
        {"voters that did not check it", {"-h", "-h", "uh"}, true, false, 0, 1, 1},
        {"single voter down", {"uh"}, true, false, 0, 1, 1},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const struct tally_case *tc = &cases[c];
        struct vote v[6];
        const struct vote *pv[6];
        size_t n = 0;
        for (; n < 6 && tc->votes[n]; n++) {
            char name[16];
            snprintf(name, sizeof(name), "v%zu", n);
            make(&v[n], name, tc->votes[n]);
            pv[n] = &v[n];
        }
        struct ep_tally t[2];
        tally_service(&cfg.services[0], pv, n, t);
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
    const struct vote *pv = &v;
    struct ep_tally t[2];
    tally_service(&cfg.services[0], &pv, 1, t);
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
    assert_string_equal(v.results[0].text, "no answer");
    assert_int_equal(v.seq, 7);
    vote_release(&v);
}

static void test_encode_round_trip(void **state)
{
    (void)state;
    struct dhaf_probe_result r[2] = {
        {.service = "web", .ep = "b-first", .healthy = true, .reason = "ok", .known = true},
        {.service = "web",
         .ep = "a-second",
         .healthy = false,
         .reason = "http-code",
         .known = true},
    };
    snprintf(r[1].text, sizeof(r[1].text), "unexpected HTTP code 500 \"quoted\"");
    char *json = vote_encode("node-1", "node", 42, r, 2);
    /* compact: no reason or text for the healthy result, no latencies */
    assert_null(strstr(json, "\"ok\""));
    assert_null(strstr(json, "latency"));
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
    assert_string_equal(b->reason, "");
    assert_true(vote_same(&v, r, 2));
    vote_release(&v);
    free(json);
}

/* A vote is rewritten when an opinion or a failing check's reason changes - not when only a
 * text, a latency or a healthy check's reason does; an entry point not checked yet is left out
 * of the vote. */
static void test_same_and_digest(void **state)
{
    (void)state;
    struct dhaf_probe_result r[2] = {
        {.service = "web", .ep = "b-first", .healthy = true, .reason = "ok", .known = true},
        {.service = "web", .ep = "a-second", .healthy = false, .reason = "timeout", .known = true},
    };
    snprintf(r[1].text, sizeof(r[1].text), "no answer in 1001 ms");
    char *json = vote_encode("p", "prober", 1, r, 2);
    struct vote v;
    struct dhaf_err err;
    assert_int_equal(vote_decode(json, strlen(json), "votes/p", NULL, &v, &err), 0);
    free(json);
    uint64_t d = dhaf_probe_digest(r, 2);

    struct dhaf_probe_result w[2];
    memcpy(w, r, sizeof(w));
    snprintf(w[1].text, sizeof(w[1].text), "no answer in 1002 ms");
    w[1].latency_ms = 1002;
    w[0].reason = "ok-other";
    assert_true(vote_same(&v, w, 2));
    assert_int_equal(dhaf_probe_digest(w, 2), d);

    memcpy(w, r, sizeof(w));
    w[1].reason = "refused";
    assert_false(vote_same(&v, w, 2));
    assert_true(dhaf_probe_digest(w, 2) != d);

    memcpy(w, r, sizeof(w));
    w[0].healthy = false;
    assert_false(vote_same(&v, w, 2));
    assert_true(dhaf_probe_digest(w, 2) != d);

    memcpy(w, r, sizeof(w));
    w[0].known = false; /* one entry point fewer */
    assert_false(vote_same(&v, w, 2));
    assert_true(dhaf_probe_digest(w, 2) != d);
    char *partial = vote_encode("p", "prober", 2, w, 2);
    assert_null(strstr(partial, "b-first"));
    free(partial);

    /* a long text is cut when written */
    memcpy(w, r, sizeof(w));
    memset(w[1].text, 'x', sizeof(w[1].text) - 1);
    w[1].text[sizeof(w[1].text) - 1] = 0;
    char *longer = vote_encode("p", "prober", 3, w, 2);
    assert_true(strlen(longer) < 120 + 200);
    free(longer);
    vote_release(&v);
}

/* A large vote (more strings than one pool block holds) decodes whole, every string intact. */
static void test_large_vote(void **state)
{
    (void)state;
    enum { N = 3000 };
    struct dhaf_probe_result *r = calloc(N, sizeof(*r));
    char(*names)[48] = calloc(N, sizeof(*names));
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "service-with-a-long-name-%05d", i);
        r[i] = (struct dhaf_probe_result){.service = names[i],
                                          .ep = "ep-1",
                                          .healthy = i % 7 != 0,
                                          .reason = "timeout",
                                          .known = true};
        snprintf(r[i].text, sizeof(r[i].text), "no answer from %s", names[i]);
    }
    char *json = vote_encode("p", "prober", 1, r, N);
    struct vote v;
    struct dhaf_err err;
    assert_int_equal(vote_decode(json, strlen(json), "votes/p", NULL, &v, &err), 0);
    assert_int_equal(v.n, N);
    for (int i = 0; i < N; i++) {
        const struct vote_result *x = vote_find(&v, names[i], "ep-1");
        assert_non_null(x);
        assert_int_equal(x->healthy, i % 7 != 0);
        if (!x->healthy)
            assert_string_equal(x->text, r[i].text);
    }
    assert_true(vote_same(&v, r, N));
    vote_release(&v);
    free(json);
    free(names);
    free(r);
}

/* A round where every entry point fails (two or more checked) marks the vote impaired; one
 * failing entry point alone, or one healthy among them, does not. */
static void test_impaired(void **state)
{
    (void)state;
    struct dhaf_probe_result r[3] = {
        {.service = "web", .ep = "b-first", .healthy = false, .reason = "timeout", .known = true},
        {.service = "web", .ep = "a-second", .healthy = false, .reason = "timeout", .known = true},
        {.service = "web", .ep = "c-none", .known = false}, /* not checked yet: not counted */
    };
    assert_true(vote_round_impaired(r, 3));
    assert_false(vote_round_impaired(r, 1)); /* one checked: could be the entry point */
    char *json = vote_encode("p1", "prober", 1, r, 3);
    struct vote v;
    struct dhaf_err err;
    assert_int_equal(vote_decode(json, strlen(json), "votes/p1", &cfg, &v, &err), 0);
    assert_true(v.impaired);
    vote_release(&v);
    free(json);
    /* a held failure (published healthy, not yet witnessed) counts as failing, and the
     * impaired vote says what was seen */
    r[1].healthy = true;
    r[1].held = true;
    assert_true(vote_round_impaired(r, 3));
    json = vote_encode("p1", "prober", 2, r, 3);
    assert_non_null(strstr(json, "\"impaired\":true"));
    assert_null(strstr(json, "\"healthy\":true"));
    free(json);
    r[1].held = false;
    assert_false(vote_round_impaired(r, 3));
    json = vote_encode("p1", "prober", 2, r, 3);
    assert_null(strstr(json, "impaired"));
    assert_int_equal(vote_decode(json, strlen(json), "votes/p1", &cfg, &v, &err), 0);
    assert_false(v.impaired);
    vote_release(&v);
    free(json);
}

/* A remote prober's report: what the node refuses (nothing is written then) and what it keeps
 * of what it accepts (texts cleaned, so the vote stays readable JSON). */
static void test_from_report(void **state)
{
    (void)state;
    Dhaf__V1__CheckResult r1 = DHAF__V1__CHECK_RESULT__INIT, r2 = DHAF__V1__CHECK_RESULT__INIT;
    r1.service = "web";
    r1.entry_point = "b-first";
    r1.healthy = 1;
    r2.service = "web";
    r2.entry_point = "a-second";
    r2.reason = "refused";
    r2.reason_text = "caf\xe9\nbad";
    Dhaf__V1__CheckResult *rs[2] = {&r1, &r2};
    Dhaf__V1__ReportRequest req = DHAF__V1__REPORT_REQUEST__INIT;
    req.prober = "p1";
    req.seq = 7;
    req.results = rs;
    req.n_results = 2;
    struct dhaf_err err;
    struct dhaf_probe_result *res = vote_from_report(&cfg, &req, &err);
    assert_non_null(res);
    assert_true(res[0].known && res[0].healthy && res[1].known && !res[1].healthy);
    assert_string_equal(res[1].text, "caf??bad");
    char *text = vote_encode("p1", "prober", req.seq, res, 2);
    struct vote v;
    assert_int_equal(vote_decode(text, strlen(text), "votes/p1", &cfg, &v, &err), 0);
    assert_int_equal(v.n, 2);
    vote_release(&v);
    free(text);
    free(res);

    r2.entry_point = "nowhere";
    assert_null(vote_from_report(&cfg, &req, &err));
    assert_non_null(strstr(err.msg, "result 1: no entry point web/nowhere in the plan"));
    r2.entry_point = "a-second";
    r2.reason = "two words";
    assert_null(vote_from_report(&cfg, &req, &err));
    assert_non_null(strstr(err.msg, "is not a code"));
    r2.reason = "refused";
    req.seq = (uint64_t)INT64_MAX + 1;
    assert_null(vote_from_report(&cfg, &req, &err));
    assert_non_null(strstr(err.msg, "seq 9223372036854775808 is larger than"));
    req.seq = 7;
    req.n_results = VOTE_MAX_RESULTS + 1; /* refused before any result is looked at */
    assert_null(vote_from_report(&cfg, &req, &err));
    assert_non_null(strstr(err.msg, "results; at most 4096"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tally_table),     cmocka_unit_test(test_priority_is_config_order),
        cmocka_unit_test(test_decode_refuses),  cmocka_unit_test(test_encode_round_trip),
        cmocka_unit_test(test_same_and_digest), cmocka_unit_test(test_large_vote),
        cmocka_unit_test(test_from_report),     cmocka_unit_test(test_impaired),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
