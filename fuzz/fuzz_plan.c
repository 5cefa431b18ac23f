/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the probe plan a prober takes from a node (prober/plan.c plan_decode: the
 * PLAN_MAX_* limits, names, addresses, duplicates, each checker section, the exec-allow rule).
 * The first input byte chooses: even, the rest is a packed ProbePlan; odd, the rest is a path
 * checked as an exec-allow entry and against one. Nothing is run: the probe engine (which
 * would start an exec checker's init) is never built. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/log.h"
#include "dhaf/registry.h"
#include "dhaf/valid.h"
#include "plan.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *allow_v[] = {"/usr/local/lib/dhaf/checks/", "/bin/true"};
static const struct dhaf_strlist allow = {2, allow_v};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dhaf_log_setup(DHAF_LOG_ERROR, DHAF_LOG_TEXT);
    return 0;
}

/* Every kept service is within the limits, well-formed, and may run under allow. */
static void check_plan(const struct plan *p)
{
    if (!p->msg || p->n + p->n_refused != p->msg->n_services)
        abort();
    size_t total = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct dhaf_service *s = &p->svcs[i];
        if (!dhaf_valid_name(s->name) || !s->n_eps || s->n_eps > PLAN_MAX_EPS_PER_SERVICE)
            abort();
        total += s->n_eps;
        for (size_t e = 0; e < s->n_eps; e++)
            if (!dhaf_valid_name(s->eps[e].name) || !dhaf_valid_ip(s->eps[e].ip, NULL))
                abort();
        if (s->checker.type && strcmp(s->checker.type, "exec") == 0) {
            for (const struct dhaf_cfgkey *k = s->checker.keys; k && k->key; k++) {
                if (k->type != DHAF_CFG_PATH)
                    continue;
                const char *v = *(char *const *)((const char *)s->checker.conf + k->offset);
                if (v && !plan_exec_allowed(&allow, v))
                    abort();
            }
        }
    }
    if (total > PLAN_MAX_EPS)
        abort();
    for (size_t i = 0; i < p->n_refused; i++)
        if (!p->refused[i].service || !p->refused[i].why || !p->refused[i].why[0])
            abort();
}

/* An entry the config accepts allows itself (a program) or what lies under it (a directory),
 * and never a ".." escape out of it. */
static void check_path(const uint8_t *data, size_t size)
{
    char *path = malloc(size + 8);
    if (!path)
        abort();
    memcpy(path, data, size);
    path[size] = '\0';
    char why[300];
    if (plan_check_allow_entry(path, why, sizeof(why)) == 0) {
        char *v[1] = {path};
        struct dhaf_strlist one = {1, v};
        size_t n = strlen(path);
        bool dir = path[n - 1] == '/';
        strcpy(path + n, dir ? "x" : "");
        if (!plan_exec_allowed(&one, path))
            abort();
        path[n] = '\0';
        strcpy(path + n, dir ? "../x" : "/../x");
        if (plan_exec_allowed(&one, path))
            abort();
        path[n] = '\0';
    } else if (!why[0]) {
        abort();
    }
    (void)plan_exec_allowed(&allow, path);
    free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        check_path(data + 1, size - 1);
        return 0;
    }
    struct plan p;
    struct dhaf_err err = {0};
    struct plan_policy pol = {.exec_allow = &allow};
    int rc = plan_decode(&p, data + 1, size - 1, &pol, &err);
    if (rc) {
        /* refused: with a reason, and no service kept */
        if (!err.msg[0] || p.n || p.svcs || p.refused)
            abort();
    } else {
        check_plan(&p);
    }
    plan_free(&p);
    return 0;
}
