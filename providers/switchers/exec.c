/* SPDX-License-Identifier: MIT */
/* Exec switcher: the operator's programs switch traffic. `init` prints the name of the current
 * entry point (run again whenever the leader asks, so a change made by hand is seen);
 * `switch` gets argv [entry point name, entry point ip]. Run directly (no shell) with a
 * timeout that kills the process group. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/spawn.h"
#include "exec.h"

struct exec_sw {
    const struct exec_sw_config *conf;
    const struct dhaf_provider_ctx *ctx;
};

#define EX(field) offsetof(struct exec_sw_config, field)

/* clang-format off */
static const struct dhaf_cfgkey exec_sw_keys[] = {
    {"init", DHAF_CFG_PATH, EX(init), true, NULL, 0, 0, NULL, NULL, NULL,
     "Program run at start; prints the name of the current entry point."},
    {"switch", DHAF_CFG_PATH, EX(switch_path), true, NULL, 0, 0, NULL, NULL, NULL,
     "Program run to switch; argv: entry point name, entry point ip; exit 0 = switched."},
    {"timeout", DHAF_CFG_INT, EX(timeout), false, "30", 1, 86400, NULL, NULL, NULL,
     "Seconds before a program is killed (with its process group)."},
    DHAF_KEY_END,
};
/* clang-format on */

/* Runs one program with the service (and maybe an entry point) in its environment. Returns 0
 * when it exited 0; otherwise an error with what happened and its first output line. */
static int run(const struct exec_sw *x, const char *path, const char *ep_name, const char *ep_ip,
               struct dhaf_proc *p, struct dhaf_err *err)
{
    char epoch[32];
    snprintf(epoch, sizeof(epoch), "%lld", (long long)x->ctx->epoch);
    /* who switches, for the script's own audit trail */
    const char *names[] = {"DHAF_SERVICE", "DHAF_NODE", "DHAF_EPOCH", "DHAF_EP_NAME", "DHAF_EP_IP"};
    const char *values[] = {x->ctx->service, x->ctx->node ? x->ctx->node : "", epoch, ep_name,
                            ep_ip};
    char **env = dhaf_env_new(names, values, ep_name ? 5 : 3);
    char *argv[4] = {(char *)path, (char *)ep_name, (char *)ep_ip, NULL};
    memset(p, 0, sizeof(*p));
    p->path = path;
    p->argv = argv;
    p->envp = env;
    p->timeout_ms = (uint32_t)x->conf->timeout * 1000;
    dhaf_spawn_run_all(p, 1);
    dhaf_env_free(env);
    if (p->outcome == DHAF_PROC_EXITED && p->exit_code == 0)
        return 0;
    char what[300];
    dhaf_proc_describe(p, what, sizeof(what));
    return dhaf_err_set(err, p->outcome == DHAF_PROC_TIMEOUT ? DHAF_ETIMEOUT : DHAF_EIO,
                        "exec switcher %s: %s", path, what);
}

static int exec_sw_current(void *state, int *ep, struct dhaf_err *err)
{
    const struct exec_sw *x = state;
    struct dhaf_proc p;
    int rc = run(x, x->conf->init, NULL, NULL, &p, err);
    if (rc)
        return rc;
    char line[128];
    dhaf_proc_first_line(&p, line, sizeof(line));
    if (!line[0])
        return dhaf_err_set(err, DHAF_ENOTFOUND, "exec switcher %s printed no entry point name",
                            x->conf->init);
    *ep = -1;
    for (size_t i = 0; i < x->ctx->n_eps; i++)
        if (strcmp(x->ctx->eps[i].name, line) == 0)
            *ep = (int)i;
    return 0;
}

static int exec_sw_init(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                        struct dhaf_err *err)
{
    struct exec_sw *x = dhaf_xcalloc(1, sizeof(*x));
    x->conf = conf;
    x->ctx = ctx;
    int ep;
    /* The init program must work now: a switcher that cannot report is refused at start. */
    int rc = exec_sw_current(x, &ep, err);
    if (rc != 0 && rc != DHAF_ENOTFOUND) {
        free(x);
        return rc;
    }
    *state = x;
    return 0;
}

static void exec_sw_destroy(void *state)
{
    free(state);
}

static int exec_sw_switch(void *state, size_t ep, struct dhaf_err *err)
{
    const struct exec_sw *x = state;
    if (ep >= x->ctx->n_eps)
        return dhaf_err_set(err, DHAF_EINVAL, "exec switcher: no entry point %zu", ep);
    struct dhaf_proc p;
    int rc = run(x, x->conf->switch_path, x->ctx->eps[ep].name, x->ctx->eps[ep].ip, &p, err);
    DHAF_LOG(rc ? DHAF_LOG_WARN : DHAF_LOG_INFO,
             "event=exec-switch service=%s to=%s ok=%s elapsed_ms=%u", x->ctx->service,
             x->ctx->eps[ep].name, rc ? "no" : "yes", p.elapsed_ms);
    return rc;
}

const struct dhaf_provider dhaf_switcher_exec = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_SWITCHER,
    .type = "exec",
    .summary = "Switches entry points by running an executable (e.g. a Python script).",
    .keys = exec_sw_keys,
    .config_size = sizeof(struct exec_sw_config),
    .init = exec_sw_init,
    .destroy = exec_sw_destroy,
    .switch_to = exec_sw_switch,
    .current = exec_sw_current,
};
