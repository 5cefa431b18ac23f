/* SPDX-License-Identifier: MIT */
/* Roles of API callers (node/access.c): which credential gives which role under which config,
 * what each role may do, and the caller's address as the audit trail writes it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../node/access.h"
#include "dhaf/registry.h"

#define ADMIN  "admin-token-0123456789"
#define READ   "read-token-0123456789"
#define PROBER "prober-token-0123456789"

#define BASE                                                                                       \
    "etcd: {hosts: \"127.0.0.1:2379\"}\n"                                                          \
    "services:\n"                                                                                  \
    "- {name: web, domain: a.com, entry-points: [{name: e1, ip: 10.0.0.1}],\n"                     \
    "   switcher: {type: exec, init: /bin/true, switch: /bin/true},\n"                             \
    "   health-checker: {type: tcp, port: 80}}\n"                                                  \
    "probers: [{name: p1, token: " PROBER "}]\n"
#define CA "grpc-api: {tls: {cert-file: c.pem, key-file: k.pem, client-ca-file: ca.pem}}"

enum cfgs { OPEN, TOKENS, CA_ONLY, CA_LISTS, N_CFGS };
static const char *const texts[N_CFGS] = {
    [OPEN] = "dhaf: {cluster-name: c, node-name: n}\n" BASE,
    [TOKENS] =
        "dhaf: {cluster-name: c, node-name: n, api-token: " ADMIN ", read-token: " READ "}\n" BASE,
    [CA_ONLY] = "dhaf: {cluster-name: c, node-name: n, " CA "}\n" BASE,
    [CA_LISTS] = "dhaf: {cluster-name: c, node-name: n, api-token: " ADMIN
                 ", admin-cns: [ops], read-cns: [viewer], " CA "}\n" BASE,
};
static struct dhaf_config cfgs[N_CFGS];

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < N_CFGS; i++) {
        struct dhaf_cfg_report rep;
        dhaf_cfg_report_init(&rep, "t");
        int rc = dhaf_config_load_mem(texts[i], strlen(texts[i]), "t", ".", dhaf_registry_catalog(),
                                      &cfgs[i], &rep);
        for (size_t e = 0; e < rep.n_errs; e++)
            fprintf(stderr, "config %d: %s: %s\n", i, rep.errs[e].path, rep.errs[e].msg);
        dhaf_cfg_report_release(&rep);
        if (rc)
            return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_CFGS; i++)
        dhaf_config_release(&cfgs[i]);
    return 0;
}

struct id_case {
    enum cfgs cfg;
    const char *token, *cn;
    bool client_ca;
    int rc;
    enum access_role role;
    const char *name; /* or the message's start when rc != 0 */
};

static void test_identify(void **state)
{
    (void)state;
    static const struct id_case cases[] = {
        /* no credential configured: everyone is admin; a stray token does no harm */
        {OPEN, NULL, NULL, false, 0, ACCESS_ADMIN, "anonymous"},
        {OPEN, "whatever-token", NULL, false, 0, ACCESS_ADMIN, "anonymous"},
        {OPEN, PROBER, NULL, false, 0, ACCESS_PROBER, "prober:p1"},
        /* tokens */
        {TOKENS, ADMIN, NULL, false, 0, ACCESS_ADMIN, "api-token"},
        {TOKENS, READ, NULL, false, 0, ACCESS_READ, "read-token"},
        {TOKENS, PROBER, NULL, false, 0, ACCESS_PROBER, "prober:p1"},
        {TOKENS, "admin-token-012345678", NULL, false, DHAF_EAUTH, 0, "invalid token"},
        {TOKENS, NULL, NULL, false, DHAF_EAUTH, 0, "missing \"Authorization"},
        /* a client CA alone: any CN but a prober's is admin (as before roles) */
        {CA_ONLY, NULL, "ops", true, 0, ACCESS_ADMIN, "cn:ops"},
        {CA_ONLY, NULL, "p1", true, 0, ACCESS_PROBER, "prober:p1"},
        {CA_ONLY, NULL, NULL, true, DHAF_EAUTH, 0, "a client certificate"},
        /* lists: a CN has the role its list gives, else needs a token */
        {CA_LISTS, NULL, "ops", true, 0, ACCESS_ADMIN, "cn:ops"},
        {CA_LISTS, NULL, "viewer", true, 0, ACCESS_READ, "cn:viewer"},
        {CA_LISTS, NULL, "p1", true, 0, ACCESS_PROBER, "prober:p1"},
        {CA_LISTS, NULL, "other", true, DHAF_EAUTH, 0, "the client certificate's CN \"other\""},
        {CA_LISTS, ADMIN, "viewer", true, 0, ACCESS_ADMIN, "api-token"}, /* the token speaks */
        {CA_LISTS, "nope-nope-nope-nope", "ops", true, DHAF_EAUTH, 0, "invalid token"},
    };
    size_t fails = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct id_case *c = &cases[i];
        struct access_creds cr = {.token = c->token, .cn = c->cn, .client_ca = c->client_ca};
        struct access_who who;
        struct dhaf_err err = {0};
        int rc = access_identify(&cfgs[c->cfg], &cr, &who, &err);
        bool ok = rc == c->rc &&
                  (rc ? who.role == ACCESS_NONE && !strncmp(err.msg, c->name, strlen(c->name))
                      : who.role == c->role && !strcmp(who.name, c->name));
        if (!ok) {
            fprintf(stderr, "case %zu: rc %d role %d name \"%s\" msg \"%s\"\n", i, rc, who.role,
                    who.name, err.msg);
            fails++;
        }
        if (rc == 0)
            assert_int_equal(who.by_token, c->token != NULL && strcmp(who.name, "anonymous"));
    }
    assert_int_equal(fails, 0);
}

static void test_allow(void **state)
{
    (void)state;
    struct dhaf_err err;
    struct access_who admin = {ACCESS_ADMIN, true, "api-token"};
    struct access_who reader = {ACCESS_READ, true, "read-token"};
    struct access_who prober = {ACCESS_PROBER, false, "prober:p1"};
    assert_int_equal(access_allow(&admin, ACCESS_ADMIN, "a change", &err), 0);
    assert_int_equal(access_allow(&admin, ACCESS_READ, "a read", &err), 0);
    assert_int_equal(access_allow(&reader, ACCESS_READ, "a read", &err), 0);
    assert_int_equal(access_allow(&reader, ACCESS_ADMIN, "a change", &err), DHAF_EDENIED);
    assert_non_null(strstr(err.msg, "a change needs the admin role; read-token has the "
                                    "read-only role"));
    assert_int_equal(access_allow(&prober, ACCESS_READ, "a read", &err), DHAF_EDENIED);
    assert_non_null(strstr(err.msg, "prober:p1 is a prober's credential"));
}

static void test_peer_addr(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"ipv4:127.0.0.1:5555", "127.0.0.1"},
        {"ipv6:[::1]:80", "::1"},
        {"127.0.0.1", "127.0.0.1"},
        {"::1", "::1"},
        {"", "?"},
        {"ipv6:[", "?"},
        {"unix:/run/x.sock", "unix:/run/x.sock"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[64];
        access_peer_addr(cases[i][0], buf, sizeof(buf));
        assert_string_equal(buf, cases[i][1]);
    }
    char buf[64];
    access_peer_addr(NULL, buf, sizeof(buf));
    assert_string_equal(buf, "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identify),
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_peer_addr),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
