/* SPDX-License-Identifier: MIT */
/* lib/log: the rate limiter in virtual time: one line per key per 10 s with the count held back,
 * keys independent, nothing evaluated or counted below the level threshold, and the lines
 * DHAF_LOG_LIMITED really writes (stderr captured in a file); the JSON line's value types. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "dhaf/log.h"
#include "vclock.h"

static struct vclock vc;

static int setup(void **state)
{
    (void)state;
    vclock_init(&vc, 5000000, 1790000000000);
    dhaf_log_limit_reset(&vc.base);
    dhaf_log_setup(DHAF_LOG_INFO, DHAF_LOG_TEXT);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dhaf_log_limit_reset(NULL);
    return 0;
}

static void test_one_line_per_window(void **state)
{
    (void)state;
    unsigned long rep = 99;
    assert_true(dhaf_log_limit("state-not-written", &rep));
    assert_int_equal(rep, 0);
    /* a failure every 100 ms for just under the window: all held back */
    int held = 0;
    for (int i = 0; i < 99; i++) {
        vclock_advance(&vc, 100);
        held += !dhaf_log_limit("state-not-written", &rep);
    }
    assert_int_equal(held, 99);
    vclock_advance(&vc, 99); /* 9,999 ms after the line */
    assert_false(dhaf_log_limit("state-not-written", &rep));
    vclock_advance(&vc, 1); /* 10 s: the next line, with the count */
    assert_true(dhaf_log_limit("state-not-written", &rep));
    assert_int_equal(rep, 100);
    /* the window counts from the line written, and the count starts again */
    vclock_advance(&vc, 5000);
    assert_false(dhaf_log_limit("state-not-written", &rep));
    vclock_advance(&vc, 5000);
    assert_true(dhaf_log_limit("state-not-written", &rep));
    assert_int_equal(rep, 1);
    /* after a quiet spell the first one is written at once, with nothing held back */
    vclock_advance(&vc, 60000);
    assert_true(dhaf_log_limit("state-not-written", &rep));
    assert_int_equal(rep, 0);
}

static void test_keys_are_independent(void **state)
{
    (void)state;
    unsigned long rep;
    assert_true(dhaf_log_limit("no-quorum", &rep));
    assert_true(dhaf_log_limit("event-not-recorded", &rep));
    assert_false(dhaf_log_limit("no-quorum", &rep));
    assert_false(dhaf_log_limit("event-not-recorded", &rep));
    assert_false(dhaf_log_limit("event-not-recorded", &rep));
    vclock_advance(&vc, 10000);
    assert_true(dhaf_log_limit("no-quorum", &rep));
    assert_int_equal(rep, 1);
    assert_true(dhaf_log_limit("event-not-recorded", &rep));
    assert_int_equal(rep, 2);
    /* more kinds than slots: the last slot is shared, nothing is lost or unbounded */
    char key[32];
    int written = 0;
    for (int i = 0; i < DHAF_LOG_LIMIT_KEYS + 20; i++) {
        snprintf(key, sizeof(key), "kind-%d", i);
        written += dhaf_log_limit(key, &rep);
    }
    assert_true(written <= DHAF_LOG_LIMIT_KEYS);
    assert_true(written >= DHAF_LOG_LIMIT_KEYS - 3);
}

static int ncalls;

static const char *counted(const char *s)
{
    ncalls++;
    return s;
}

/* Runs fn with stderr in a temp file; returns the text written (caller frees). */
static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/dhaf-unit-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, buf, (size_t)n, 0), n);
    close(fd);
    unlink(path);
    return buf;
}

/* 12,300 failures in 3 minutes (the flood of the NOSPACE report): 18 lines, not 12,300. */
static void flood(void)
{
    for (int i = 0; i < 12300; i++) {
        DHAF_LOG_LIMITED("state-not-written", DHAF_LOG_WARN,
                         "event=state-not-written service=web reason=\"%s\"",
                         counted("etcdserver: mvcc: database space exceeded"));
        vclock_advance(&vc, 180000 / 12300);
    }
    DHAF_LOG_LIMITED("below", DHAF_LOG_DEBUG, "event=below %s", counted("x"));
}

static void test_macro_writes_the_lines(void **state)
{
    (void)state;
    ncalls = 0;
    char *out = capture(flood);
    size_t lines = 0, with_count = 0;
    for (const char *p = out; (p = strstr(p, "event=state-not-written")) != NULL; p++) {
        lines++;
        const char *eol = strchr(p, '\n');
        const char *r = strstr(p, " repeated=");
        if (r && eol && r < eol)
            with_count++;
    }
    /* 180 s of failures: one line at once, then one per 10 s (the clock steps 14 ms) */
    assert_in_range(lines, 17, 19);
    assert_int_equal(with_count, lines - 1);
    assert_non_null(strstr(out, "reason=\"etcdserver: mvcc: database space exceeded\""));
    /* arguments are evaluated only for the lines written; below the threshold never */
    assert_int_equal((size_t)ncalls, lines);
    assert_null(strstr(out, "event=below"));
    free(out);
}

static void json_line(void)
{
    char q[64];
    dhaf_log_setup(DHAF_LOG_INFO, DHAF_LOG_JSON);
    DHAF_LOG(DHAF_LOG_INFO,
             "event=web-check port=8129 ms=0.25 delta=-3 rev=0 healthy=true stale=false "
             "ip=127.0.0.1 id=007 pct=1. hex=0x1f exp=1e5 version=0.1.0 name=\"42\" flag=\"true\" "
             "reason=\"%s\" word=True lease=7587 ep=2 zone_id=12",
             dhaf_log_quote(q, sizeof(q), "said \"no\" 7"));
    dhaf_log_setup(DHAF_LOG_INFO, DHAF_LOG_TEXT);
    DHAF_LOG(DHAF_LOG_INFO, "event=web-check port=8129 healthy=true name=\"42\"");
}

/* JSON logs: numbers and booleans bare, everything else (and everything quoted, and the values
 * of names and identifiers) a string, a quoted value's escapes undone; the text line unchanged. */
static void test_json_types(void **state)
{
    (void)state;
    char *out = capture(json_line);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    if (!j)
        fail_msg("not JSON: %s: %s", jerr.text, out);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "event")), "web-check");
    assert_true(json_is_integer(json_object_get(j, "port")));
    assert_int_equal(json_integer_value(json_object_get(j, "port")), 8129);
    assert_true(json_is_real(json_object_get(j, "ms")));
    assert_true(json_real_value(json_object_get(j, "ms")) == 0.25);
    assert_int_equal(json_integer_value(json_object_get(j, "delta")), -3);
    assert_true(json_is_integer(json_object_get(j, "rev")));
    assert_true(json_is_true(json_object_get(j, "healthy")));
    assert_true(json_is_false(json_object_get(j, "stale")));
    static const char *const strings[][2] = {
        {"ip", "127.0.0.1"},  {"id", "007"},
        {"pct", "1."},        {"hex", "0x1f"},
        {"exp", "1e5"},       {"name", "42"},
        {"version", "0.1.0"}, {"flag", "true"},
        {"word", "True"},     {"reason", "said \"no\" 7"},
        {"lease", "7587"},    {"ep", "2"},
        {"zone_id", "12"},
    };
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        json_t *v = json_object_get(j, strings[i][0]);
        if (!json_is_string(v))
            fail_msg("%s is not a string in %s", strings[i][0], out);
        assert_string_equal(json_string_value(v), strings[i][1]);
    }
    json_decref(j);
    /* the text format is as before: values as written */
    assert_string_equal(strstr(nl + 1, "event="), "event=web-check port=8129 healthy=true "
                                                  "name=\"42\"\n");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_line_per_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_are_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_macro_writes_the_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_types, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
