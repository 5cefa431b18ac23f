/* SPDX-License-Identifier: MIT */
/* Validators: names, addresses, endpoints, and expected-codes patterns (table-driven). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "dhaf/cfgkeys.h"
#include "dhaf/valid.h"

static void test_names(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"a", true},
        {"node-1", true},
        {"ep_2", true},
        {"A-Z_09", true},
        {"", false},
        {"a b", false},
        {"a.b", false},
        {"é", false},
        {"node/1", false},
        {"a\n", false},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true},   /* 64 */
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false}, /* 65 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(dhaf_valid_name(cases[i].s), cases[i].ok);
}

static void test_ips_and_hosts(void **state)
{
    (void)state;
    int fam = 0;
    assert_true(dhaf_valid_ip("10.0.0.1", &fam));
    assert_int_equal(fam, AF_INET);
    assert_true(dhaf_valid_ip("::1", &fam));
    assert_int_equal(fam, AF_INET6);
    assert_true(dhaf_valid_ip("2001:db8::7", NULL));
    assert_false(dhaf_valid_ip("256.0.0.1", NULL));
    assert_false(dhaf_valid_ip("10.0.0", NULL));
    assert_false(dhaf_valid_ip("foo.com", NULL));
    assert_false(dhaf_valid_ip("", NULL));
    assert_true(dhaf_valid_hostname("foo.com"));
    assert_true(dhaf_valid_hostname("a-b.c.example."));
    assert_false(dhaf_valid_hostname("-a.com"));
    assert_false(dhaf_valid_hostname("a..com"));
    assert_false(dhaf_valid_hostname("a b.com"));
    assert_false(dhaf_valid_hostname(""));
    assert_true(dhaf_is_loopback_host("localhost"));
    assert_true(dhaf_is_loopback_host("127.0.0.11"));
    assert_true(dhaf_is_loopback_host("::1"));
    assert_false(dhaf_is_loopback_host("0.0.0.0"));
    assert_false(dhaf_is_loopback_host("10.1.1.1"));
}

static void test_endpoints(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        const char *host;
        int port;
        bool tls;
    } ok[] = {
        {"127.0.0.1:2379", "127.0.0.1", 2379, false},
        {"http://etcd-1:2379", "etcd-1", 2379, false},
        {"https://etcd.example.com:2379/", "etcd.example.com", 2379, true},
        {"[::1]:2379", "::1", 2379, false},
        {"http://[2001:db8::1]:23790", "2001:db8::1", 23790, false},
    };
    char why[128];
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *host = NULL;
        int port = 0;
        bool tls = false;
        assert_int_equal(dhaf_parse_endpoint(ok[i].s, &host, &port, &tls, why, sizeof(why)), 0);
        assert_string_equal(host, ok[i].host);
        assert_int_equal(port, ok[i].port);
        assert_int_equal(tls, ok[i].tls);
        free(host);
    }
    static const char *const bad[] = {"127.0.0.1", "host:0",     "host:65536", "ftp://h:1",
                                      "[::1:2379", "bad host:1", ":2379",      "h:12x",
                                      "[foo]:1",   "http://:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *host = NULL;
        int port = 0;
        bool tls = false;
        assert_int_not_equal(dhaf_parse_endpoint(bad[i], &host, &port, &tls, why, sizeof(why)), 0);
        assert_null(host);
        assert_true(why[0] != '\0');
    }
}

static void test_codes(void **state)
{
    (void)state;
    static const struct {
        const char *pattern;
        long code;
        bool match;
    } cases[] = {
        {"200", 200, true},     {"200", 201, false},     {"2XX", 204, true}, {"2XX", 304, false},
        {"200,3XX", 302, true}, {"200, 3XX", 302, true}, {"XXX", 599, true}, {"1XX", 101, true},
        {"5XX", 503, true},     {"2xx", 299, true},      {"20X", 209, true}, {"20X", 210, false},
        {"404", 404, true},     {"200,404", 500, false}, {"X00", 500, true},
    };
    char why[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dhaf_codes c;
        assert_int_equal(dhaf_codes_parse(cases[i].pattern, &c, why, sizeof(why)), 0);
        assert_int_equal(dhaf_codes_match(&c, cases[i].code), cases[i].match);
        dhaf_codes_release(&c);
    }
    static const char *const bad[] = {"",    "2X",   "600",  "0XX",     "2000",
                                      "abc", "200,", ",200", "200;300", "2 00"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct dhaf_codes c;
        assert_int_not_equal(dhaf_codes_parse(bad[i], &c, why, sizeof(why)), 0);
        assert_non_null(strstr(why, "is not a code or code range"));
        assert_null(c.pat);
    }
}

static void test_suggest(void **state)
{
    (void)state;
    static const char *const keys[] = {"tact-interval", "heartbeat-interval", "node-name", "host"};
    assert_string_equal(dhaf_cfg_suggest("tact-intervall", keys, 4), "tact-interval");
    assert_string_equal(dhaf_cfg_suggest("hots", keys, 4), "host");
    assert_string_equal(dhaf_cfg_suggest("nodeName", keys, 4), "node-name");
    assert_null(dhaf_cfg_suggest("zzzzzz", keys, 4));
}

/* The limits and ties that the bounded distance in dhaf_cfg_suggest must keep (each answer was
 * checked against the full-table version it replaced). */
static void test_suggest_limits(void **state)
{
    (void)state;
    static const char *const keys_host[] = {"host"};
    static const char *const node[] = {"node-name"}, *const tact[] = {"tact-interval"};
    /* Up to 4 letters: 1 edit; up to 8: 2; longer: 3. A swap of neighbours is one edit. */
    assert_string_equal(dhaf_cfg_suggest("Hsot", keys_host, 1), "host");
    assert_null(dhaf_cfg_suggest("hxsx", keys_host, 1));
    assert_string_equal(dhaf_cfg_suggest("nodexnam", node, 1), "node-name");
    assert_null(dhaf_cfg_suggest("nodxxnam", node, 1));
    assert_string_equal(dhaf_cfg_suggest("tactinterv", tact, 1), "tact-interval");
    assert_null(dhaf_cfg_suggest("tactintxrv", tact, 1));
    /* Equally close: the first candidate; a later one must be strictly closer. */
    static const char *const de[] = {"abcd", "abce"}, *const ed[] = {"abce", "abcd"};
    assert_ptr_equal(dhaf_cfg_suggest("abcf", de, 2), de[0]);
    assert_ptr_equal(dhaf_cfg_suggest("abcf", ed, 2), ed[0]);
    static const char *const iv[] = {"intrval-s", "interval"};
    assert_string_equal(dhaf_cfg_suggest("intervals", iv, 2), "interval");
    /* Same letters apart from case and separators win over any distance. */
    static const char *const rt[] = {"receive-timeou", "receive_Timeout"};
    assert_string_equal(dhaf_cfg_suggest("receiveTimeout", rt, 2), "receive_Timeout");
    static const char *const ax[] = {"ab", "x"};
    assert_string_equal(dhaf_cfg_suggest("", ax, 2), "x");
    /* Past 64 characters only the same-letters rule applies. */
    char a63[64], a64[65], a65[66], up65[66];
    memset(a63, 'a', 63);
    a63[63] = '\0';
    memset(a64, 'a', 64);
    a64[64] = '\0';
    memset(a65, 'a', 65);
    a65[65] = '\0';
    memset(up65, 'A', 65);
    up65[65] = '\0';
    const char *c63[] = {a63}, *c64[] = {a64}, *cup[] = {up65};
    assert_ptr_equal(dhaf_cfg_suggest(a64, c63, 1), a63);
    assert_null(dhaf_cfg_suggest(a65, c64, 1));
    assert_ptr_equal(dhaf_cfg_suggest(a65, cup, 1), up65);
}

/* A caller's comment (requested_by): UTF-8 text without control characters, bounded. */
static void test_comment(void **state)
{
    (void)state;
    char long_ok[DHAF_COMMENT_MAX + 1], too_long[DHAF_COMMENT_MAX + 2];
    memset(long_ok, 'a', DHAF_COMMENT_MAX);
    long_ok[DHAF_COMMENT_MAX] = '\0';
    memset(too_long, 'a', DHAF_COMMENT_MAX + 1);
    too_long[DHAF_COMMENT_MAX + 1] = '\0';
    static const char *const good[] = {"", "ticket-42 (alice)", "Jürgen", "切换",
                                       "\xf0\x9f\x98\x80"};
    static const char *const bad[] = {"a\nb",         "tab\there",
                                      "del\x7f",      "\xff",
                                      "\xc0\xaf",     "\xe0\x80\xaf",
                                      "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                      "\xc3",         "\xc2\x85",
                                      "\x80",         "\xf0\x8f\xbf\xbf",
                                      "\xe2\x82",     "\xf8\x88\x80\x80\x80"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(dhaf_valid_comment(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (dhaf_valid_comment(bad[i]))
            fail_msg("bad comment %zu accepted", i);
    assert_true(dhaf_valid_comment(long_ok));
    assert_false(dhaf_valid_comment(too_long));
}

/* Untrusted text made fit for JSON and logs: bad bytes and control characters become '?',
 * and a cut never splits a character. */
static void test_utf8_clean(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"plain", "plain"},      {"Jürgen", "Jürgen"}, {"a\nb\tc", "a?b?c"},
        {"\xff\xfeok", "??ok"},  {"\xc3", "?"},        {"\xe2\x82", "??"},
        {"\xed\xa0\x80", "???"}, {"\xc2\x85x", "??x"}, {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dhaf_utf8_clean(buf, sizeof(buf), cases[i][0]);
        assert_string_equal(buf, cases[i][1]);
        assert_true(dhaf_valid_comment(buf));
    }
    /* "ab" + a 2-byte character into 4 bytes: the character does not fit and is left out */
    assert_int_equal(dhaf_utf8_clean(buf, 4, "ab\xc3\xbc"), 2);
    assert_string_equal(buf, "ab");
    assert_int_equal(dhaf_utf8_clean(buf, 1, "abc"), 0);
    assert_string_equal(buf, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comment),   cmocka_unit_test(test_utf8_clean),
        cmocka_unit_test(test_names),     cmocka_unit_test(test_ips_and_hosts),
        cmocka_unit_test(test_endpoints), cmocka_unit_test(test_codes),
        cmocka_unit_test(test_suggest),   cmocka_unit_test(test_suggest_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
