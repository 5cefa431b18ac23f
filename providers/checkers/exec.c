/* SPDX-License-Identifier: MIT */
/* Exec health checker: runs an operator's program per entry point; exit 0 = healthy. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/provider.h"
#include "dhaf/spawn.h"
#include "exec.h"

#define EX(field) offsetof(struct exec_hc_config, field)

/* clang-format off */
static const struct dhaf_cfgkey exec_hc_keys[] = {
    {"init", DHAF_CFG_PATH, EX(init), true, NULL, 0, 0, NULL, NULL, NULL,
     "Program run once at start; exit 0 = ready."},
    {"check", DHAF_CFG_PATH, EX(check), true, NULL, 0, 0, NULL, NULL, NULL,
     "Program run per entry point; argv: entry point name, ip; exit 0 = healthy."},
    {"timeout", DHAF_CFG_INT, EX(timeout), false, "5", 1, 86400, NULL, NULL, NULL,
     "Seconds before the program is killed (with its process group)."},
    DHAF_KEY_END,
};
/* clang-format on */

enum exec_hc_status { EXS_OK, EXS_EXIT_CODE, EXS_TIMEOUT, EXS_SIGNAL, EXS_SPAWN, EXS_INTERNAL };

static const struct dhaf_reason exec_hc_reasons[] = {
    [EXS_OK] = {"ok", "the program exited with code 0"},
    [EXS_EXIT_CODE] = {"exit-code", "the program exited with a non-zero code"},
    [EXS_TIMEOUT] = {"timeout", "the program ran past the timeout and was killed with its group"},
    [EXS_SIGNAL] = {"signal", "the program was killed by a signal"},
    [EXS_SPAWN] = {"spawn", "the program could not be started"},
    [EXS_INTERNAL] = {"internal", "the check could not be run (bad input, lost exit status)"},
    {NULL, NULL},
};

/* Names of the variables a program gets besides the inherited environment. */
static const char *const env_names[] = {"DHAF_SERVICE", "DHAF_EP_NAME", "DHAF_EP_IP"};

static int exec_hc_init(const void *vconf, const struct dhaf_provider_ctx *ctx, void **state,
                        struct dhaf_err *err)
{
    const struct exec_hc_config *c = vconf;
    *state = NULL;
    if (!c || !c->init)
        return dhaf_err_set(err, DHAF_EINVAL, "exec checker: no init program");

    const char *values[] = {ctx ? ctx->service : NULL, NULL, NULL};
    char **env = dhaf_env_new(env_names, values, 1);
    char *argv[] = {c->init, NULL};
    struct dhaf_proc *p = dhaf_xcalloc(1, sizeof(*p));
    p->path = c->init;
    p->argv = argv;
    p->envp = env;
    p->timeout_ms = (uint32_t)c->timeout * 1000u;
    int rc = dhaf_spawn_run_all(p, 1);
    if (rc == 0 && !(p->outcome == DHAF_PROC_EXITED && p->exit_code == 0)) {
        char how[128], line[200];
        const char *first = dhaf_proc_first_line(p, line, sizeof(line));
        rc = p->outcome == DHAF_PROC_TIMEOUT   ? DHAF_ETIMEOUT
             : p->outcome == DHAF_PROC_NOSTART ? DHAF_EIO
                                               : DHAF_EUNAVAILABLE;
        dhaf_err_set(err, rc, "exec checker: init program %s failed: %s%s%s", c->init,
                     dhaf_proc_describe(p, how, sizeof(how)), first ? ": " : "",
                     first ? first : "");
    } else if (rc != 0) {
        dhaf_err_set(err, rc, "exec checker: cannot run init program %s", c->init);
    }
    free(p);
    dhaf_env_free(env);
    return rc;
}

static void set_result(struct dhaf_check_result *r, enum exec_hc_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_result(struct dhaf_check_result *r, enum exec_hc_status s, const char *fmt, ...)
{
    va_list ap;
    r->healthy = s == EXS_OK;
    r->reason = exec_hc_reasons[s].code;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof(r->text), fmt, ap);
    va_end(ap);
}

/* Turns how the program ended into the target's result. */
static void fill_result(struct dhaf_check_result *r, const struct dhaf_proc *p)
{
    char line[200], how[96];
    const char *first = dhaf_proc_first_line(p, line, sizeof(line));
    const char *sep = first ? ": " : "";
    if (!first)
        first = "";
    dhaf_proc_describe(p, how, sizeof(how));
    r->latency_ms = p->elapsed_ms;
    switch (p->outcome) {
    case DHAF_PROC_EXITED:
        /* The program's own words say more than its exit code. */
        set_result(r, p->exit_code == 0 ? EXS_OK : EXS_EXIT_CODE, "%s", *first ? first : how);
        break;
    case DHAF_PROC_TIMEOUT:
        set_result(r, EXS_TIMEOUT, "%s%s%s", how, sep, first);
        break;
    case DHAF_PROC_SIGNALED:
        set_result(r, EXS_SIGNAL, "%s%s%s", how, sep, first);
        break;
    case DHAF_PROC_NOSTART:
        set_result(r, EXS_SPAWN, "%s", how);
        break;
    case DHAF_PROC_LOST:
    default:
        set_result(r, EXS_INTERNAL, "%s", how);
        break;
    }
}

/* What one started program needs to outlive dhaf_spawn_run_all(). */
struct exec_job {
    char *argv[4];
    char **env;
    struct dhaf_check_result *result;
};

static void exec_hc_check(struct dhaf_check_target *targets, size_t n)
{
    struct dhaf_proc *procs = dhaf_xcalloc(n, sizeof(*procs));
    struct exec_job *jobs = dhaf_xcalloc(n, sizeof(*jobs));
    size_t m = 0;

    for (size_t i = 0; i < n; i++) {
        struct dhaf_check_target *t = &targets[i];
        const struct exec_hc_config *c = t->conf;
        if (!t->result)
            continue;
        memset(t->result, 0, sizeof(*t->result));
        if (!c || !c->check || !t->ep_name || !t->ep_ip) {
            set_result(t->result, EXS_INTERNAL, "no check program or entry point given");
            continue;
        }
        const char *values[] = {t->service, t->ep_name, t->ep_ip};
        struct exec_job *j = &jobs[m];
        /* posix_spawn takes char *const argv[] but does not write to it. */
        j->argv[0] = c->check;
        j->argv[1] = (char *)t->ep_name;
        j->argv[2] = (char *)t->ep_ip;
        j->argv[3] = NULL;
        j->env = dhaf_env_new(env_names, values, 3);
        j->result = t->result;
        procs[m].path = c->check;
        procs[m].argv = j->argv;
        procs[m].envp = j->env;
        procs[m].timeout_ms = (uint32_t)c->timeout * 1000u;
        m++;
    }

    if (dhaf_spawn_run_all(procs, m) == 0) {
        for (size_t k = 0; k < m; k++)
            fill_result(jobs[k].result, &procs[k]);
    } else {
        for (size_t k = 0; k < m; k++)
            set_result(jobs[k].result, EXS_INTERNAL, "invalid program arguments");
    }
    for (size_t k = 0; k < m; k++)
        dhaf_env_free(jobs[k].env);
    free(jobs);
    free(procs);
}

const struct dhaf_provider dhaf_checker_exec = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_CHECKER,
    .type = "exec",
    .summary = "Checks the health of a service by running an executable.",
    .keys = exec_hc_keys,
    .config_size = sizeof(struct exec_hc_config),
    .init = exec_hc_init,
    .check = exec_hc_check,
    .reasons = exec_hc_reasons,
};
