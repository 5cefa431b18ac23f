/* SPDX-License-Identifier: MIT */
/* The config hash (node/cfghash.c): the same meaning gives the same hash whatever the YAML's key
 * order, layout and implied defaults; a changed shared setting changes it (and only its part);
 * per-node settings do not; the published record holds no secret. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cfghash.h"
#include "config_load.h"

/* Two services, a prober and a notifier with a password: the base of every case. */
static const char base_yaml[] =
    "dhaf: {cluster-name: c1, node-name: n1, tact-interval: 3, api-token: admin-secret-1}\n"
    "etcd: {hosts: \"127.0.0.1:2379\"}\n"
    "services:\n"
    "- name: web\n"
    "  domain: foo.com\n"
    "  entry-points: [{name: ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.2}]\n"
    "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
    "  health-checker: {type: exec, init: /bin/true, check: /bin/true, timeout: 4}\n"
    "- name: db\n"
    "  domain: db.foo.com\n"
    "  entry-points: [{name: a, ip: 10.0.1.1}, {name: b, ip: 10.0.1.2}]\n"
    "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
    "  health-checker: {type: tcp, port: 5432}\n"
    "probers:\n"
    "- {name: probe-eu, token: prober-secret-1, location: eu}\n"
    "notifiers:\n"
    "- type: email\n"
    "  name: ops\n"
    "  from: dhaf@foo.com\n"
    "  to: ops@foo.com\n"
    "  smtp: {server: 127.0.0.1, port: 2525, username: ops, password: smtp-secret-1}\n";

/* The same meaning: keys in other orders, block style instead of flow style, services in the
 * other order, defaults written out (tcp timeout 5, auto-switch-back true), a comment. */
static const char reordered_yaml[] =
    "# the same cluster, written differently\n"
    "notifiers:\n"
    "- smtp:\n"
    "    password: smtp-secret-1\n"
    "    username: ops\n"
    "    port: 2525\n"
    "    server: 127.0.0.1\n"
    "  to: ops@foo.com\n"
    "  from: dhaf@foo.com\n"
    "  name: ops\n"
    "  type: email\n"
    "probers:\n"
    "- location: eu\n"
    "  token: prober-secret-1\n"
    "  name: probe-eu\n"
    "services:\n"
    "- health-checker:\n"
    "    timeout: 5\n"
    "    port: 5432\n"
    "    type: tcp\n"
    "  switcher: {switch: /bin/true, init: /bin/true, type: exec}\n"
    "  entry-points:\n"
    "  - {ip: 10.0.1.1, name: a}\n"
    "  - {ip: 10.0.1.2, name: b}\n"
    "  domain: db.foo.com\n"
    "  name: db\n"
    "- name: web\n"
    "  health-checker: {timeout: 4, check: /bin/true, init: /bin/true, type: exec}\n"
    "  switcher: {type: exec, switch: /bin/true, init: /bin/true}\n"
    "  entry-points: [{ip: 10.0.0.1, name: ep-1}, {name: ep-2, ip: 10.0.0.2}]\n"
    "  domain: foo.com\n"
    "etcd:\n"
    "  hosts: \"127.0.0.1:2379\"\n"
    "dhaf:\n"
    "  auto-switch-back: true\n"
    "  tact-interval: 3\n"
    "  node-name: n1\n"
    "  api-token: admin-secret-1\n"
    "  cluster-name: c1\n";

/* Replaces the first `from` in base_yaml with `to`. Caller frees. */
static char *variant(const char *from, const char *to)
{
    const char *at = strstr(base_yaml, from);
    assert_non_null(at);
    size_t pre = (size_t)(at - base_yaml), fl = strlen(from), tl = strlen(to);
    char *out = malloc(sizeof(base_yaml) - fl + tl);
    assert_non_null(out);
    memcpy(out, base_yaml, pre);
    memcpy(out + pre, to, tl);
    strcpy(out + pre + tl, at + fl);
    return out;
}

static void hash_of(const char *yaml, struct cfghash *h)
{
    struct dhaf_config cfg;
    assert_int_equal(test_config_load(yaml, "test.dhaf", ".", &cfg), 0);
    assert_int_equal(cfghash_compute(&cfg, h), 0);
    dhaf_config_release(&cfg);
    assert_int_equal(strlen(h->hash), 64);
    for (int p = 0; p < CFGP_N; p++)
        assert_int_equal(strlen(h->parts[p]), CFGHASH_SHORT);
}

/* The parts of a and b that differ, as "services,probers". */
static void differing(const struct cfghash *a, const struct cfghash *b, char *buf, size_t len)
{
    buf[0] = '\0';
    for (int p = 0; p < CFGP_N; p++)
        if (strcmp(a->parts[p], b->parts[p]) != 0)
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? "," : "",
                     cfghash_part_name(p));
}

static void test_key_order_and_layout(void **state)
{
    (void)state;
    struct cfghash a, b;
    hash_of(base_yaml, &a);
    hash_of(reordered_yaml, &b);
    assert_string_equal(a.hash, b.hash);
}

/* Each case: one edit of base_yaml, whether the hash changes, and which parts do. */
struct edit_case {
    const char *what, *from, *to;
    const char *parts; /* "" : the same hash */
};

static const struct edit_case edits[] = {
    /* shared settings: a different hash, and the part named */
    {"a checker's path", "check: /bin/true", "check: /bin/false", "services"},
    {"a checker's timeout", "timeout: 4", "timeout: 6", "services"},
    {"a checker's rise", "check: /bin/true,", "check: /bin/true, rise: 3,", "services"},
    {"entry point order (priority)", "[{name: ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.2}]",
     "[{name: ep-2, ip: 10.0.0.2}, {name: ep-1, ip: 10.0.0.1}]", "services"},
    {"an entry point's ip", "ip: 10.0.1.2", "ip: 10.0.1.3", "services"},
    {"the tact", "tact-interval: 3", "tact-interval: 4", "decision"},
    {"a prober's token", "prober-secret-1", "prober-secret-2", "probers"},
    {"a notifier's password", "smtp-secret-1", "smtp-secret-2", "notifiers"},
    {"a notifier's event filter", "  to: ops@foo.com\n",
     "  to: ops@foo.com\n  events: [failover]\n", "notifiers"},
    {"a notifier's min-severity", "  to: ops@foo.com\n",
     "  to: ops@foo.com\n  min-severity: warning\n", "notifiers"},
    /* per-node settings: the same hash */
    {"the node name", "node-name: n1", "node-name: n2", ""},
    {"the admin token", "admin-secret-1", "admin-secret-2", ""},
    {"the web API", "node-name: n1,", "node-name: n1, web-api: {port: 9128},", ""},
    {"dry-run", "node-name: n1,", "node-name: n1, dry-run: true,", ""},
    {"the log level", "etcd: {", "log: {level: debug}\netcd: {", ""},
    {"the etcd endpoints", "127.0.0.1:2379", "127.0.0.2:2379", ""},
};

static void test_edits(void **state)
{
    (void)state;
    struct cfghash base;
    hash_of(base_yaml, &base);
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        char *yaml = variant(edits[i].from, edits[i].to);
        struct cfghash h;
        hash_of(yaml, &h);
        char parts[100];
        differing(&base, &h, parts, sizeof(parts));
        if (strcmp(parts, edits[i].parts) != 0 ||
            (strcmp(base.hash, h.hash) == 0) != (edits[i].parts[0] == '\0'))
            fail_msg("%s: parts that differ \"%s\", want \"%s\" (hash %s vs %s)", edits[i].what,
                     parts, edits[i].parts, base.hash, h.hash);
        free(yaml);
    }
}

/* The record names the hashes and the generation, never a secret. */
static void test_record_has_no_secret(void **state)
{
    (void)state;
    struct cfghash h;
    hash_of(base_yaml, &h);
    char *rec = cfghash_record(&h, 7);
    assert_non_null(strstr(rec, h.hash));
    assert_non_null(strstr(rec, "\"generation\":7"));
    assert_non_null(strstr(rec, "\"services\":\""));
    assert_null(strstr(rec, "secret"));
    free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_order_and_layout),
        cmocka_unit_test(test_edits),
        cmocka_unit_test(test_record_has_no_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
