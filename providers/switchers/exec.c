/* SPDX-License-Identifier: MIT */
/* Exec switcher: the operator's programs switch traffic. `init` prints the name of the current
 * entry point (run again whenever the leader asks, so a change made by hand is seen);
 * `switch` gets argv [entry point name, entry point ip]. Run directly (no shell) with a
 * timeout that kills the process group - and never past the leader's lease: the timeout must
 * fit in it (max_call_ms, checked with the config), the child is killed when the term closes,
 * and DHAF_EPOCH / DHAF_EXPECT_FROM let a script refuse a stale call on its side. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/spawn.h"
#include "exec.h"
#include "fence.h"

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
    {"timeout", DHAF_CFG_INT, EX(timeout), false, "10", 1, 86400, NULL, NULL, NULL,
     "Seconds before a program is killed (with its process group); at most 2/3 of "
     "etcd.leader-key-ttl."},
    DHAF_KEY_END,
};
/* clang-format on */

/* One run: the program, its entry point (switch) and the leader's expectation. */
struct exec_run {
    const char *path;
    const char *ep_name, *ep_ip; /* NULL for init */
    const char *expect_from;     /* DHAF_EXPECT_FROM: "" when unknown */
    const struct dhaf_fence *fence;
};

/* Runs one program with the service (and maybe an entry point) in its environment, within
 * its timeout and the leader's lease. Returns 0 when it exited 0; otherwise an error with
 * what happened. */
static int run(const struct exec_sw *x, const struct exec_run *how, struct dhaf_proc *p,
               struct dhaf_err *err)
{
    memset(p, 0, sizeof(*p));
    int64_t timeout_ms = (int64_t)x->conf->timeout * 1000;
    int64_t lease = sw_fence_left(how->fence);
    if (lease <= 0)
        return dhaf_err_set(err, DHAF_EFENCED,
                            "exec switcher %s: not started: this node's leadership ended",
                            how->path);
    bool clamped = lease < timeout_ms; /* cut at the end of the lease */
    if (clamped)
        timeout_ms = lease;
    char epoch[32];
    snprintf(epoch, sizeof(epoch), "%lld", (long long)x->ctx->epoch);
    /* who switches, for the script's own audit trail and its own fencing */
    const char *names[] = {"DHAF_SERVICE", "DHAF_NODE",  "DHAF_EPOCH",
                           "DHAF_EP_NAME", "DHAF_EP_IP", "DHAF_EXPECT_FROM"};
    const char *values[] = {x->ctx->service, x->ctx->node ? x->ctx->node : "",
                            epoch,           how->ep_name,
                            how->ep_ip,      how->expect_from};
    char **env = dhaf_env_new(names, values, how->ep_name ? 6 : 3);
    char *argv[4] = {(char *)how->path, (char *)how->ep_name, (char *)how->ep_ip, NULL};
    p->path = how->path;
    p->argv = argv;
    p->envp = env;
    p->timeout_ms = (uint32_t)timeout_ms;
    p->cancel = how->fence ? how->fence->cancel : NULL;
    dhaf_spawn_run_all(p, 1);
    dhaf_env_free(env);
    if (p->outcome == DHAF_PROC_EXITED && p->exit_code == 0)
        return 0;
    char what[300];
    dhaf_proc_describe(p, what, sizeof(what));
    if (p->outcome == DHAF_PROC_CANCELLED)
        return dhaf_err_set(err, DHAF_EFENCED,
                            "exec switcher %s: %s (this node's leadership ended)", how->path, what);
    char head[DHAF_ERR_MSG_MAX];
    int hn = snprintf(head, sizeof(head), "exec switcher %s: %s%s", how->path, what,
                      clamped && p->outcome == DHAF_PROC_TIMEOUT
                          ? " (the end of the leader's lease came before timeout)"
                          : "");
    /* as much of its output as the error has room for after that (the excerpt is cut on a
     * character and a line, the message must not cut it again) */
    size_t room = hn > 0 && (size_t)hn + 3 < sizeof(head) ? sizeof(head) - (size_t)hn - 2 : 0;
    char line[DHAF_ERR_MSG_MAX];
    bool said = room > 1 && dhaf_proc_excerpt(p, line, room) != NULL;
    return dhaf_err_set(err, p->outcome == DHAF_PROC_TIMEOUT ? DHAF_ETIMEOUT : DHAF_EIO, "%s%s%s",
                        head, said ? ": " : "", said ? line : "");
}

static int exec_sw_current(void *state, const struct dhaf_fence *fence, int *ep,
                           struct dhaf_err *err)
{
    const struct exec_sw *x = state;
    struct dhaf_proc p;
    struct exec_run how = {.path = x->conf->init, .fence = fence};
    int rc = run(x, &how, &p, err);
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
    int rc = exec_sw_current(x, NULL, &ep, err);
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

static int exec_sw_switch(void *state, const struct dhaf_switch_req *req, struct dhaf_err *err)
{
    const struct exec_sw *x = state;
    size_t ep = req->to;
    if (ep >= x->ctx->n_eps || (req->expect_from >= 0 && (size_t)req->expect_from >= x->ctx->n_eps))
        return dhaf_err_set(err, DHAF_EINVAL, "exec switcher: no entry point %zu or %d", ep,
                            req->expect_from);
    struct dhaf_proc p;
    struct exec_run how = {
        .path = x->conf->switch_path,
        .ep_name = x->ctx->eps[ep].name,
        .ep_ip = x->ctx->eps[ep].ip,
        .expect_from = req->expect_from >= 0 ? x->ctx->eps[req->expect_from].name : "",
        .fence = req->fence,
    };
    int rc = run(x, &how, &p, err);
    DHAF_LOG(rc ? DHAF_LOG_WARN : DHAF_LOG_INFO,
             "event=exec-switch service=%s to=%s expect_from=%s epoch=%lld ok=%s elapsed_ms=%u",
             x->ctx->service, x->ctx->eps[ep].name, how.expect_from[0] ? how.expect_from : "-",
             (long long)x->ctx->epoch, rc ? "no" : "yes", p.elapsed_ms);
    return rc;
}

/* A switch program runs until its timeout without asking the fence: it must fit in the
 * leader's lease. */
static int64_t exec_sw_max_call_ms(const void *conf, const char **key)
{
    const struct exec_sw_config *c = conf;
    *key = "timeout";
    return (int64_t)c->timeout * 1000;
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
    .max_call_ms = exec_sw_max_call_ms,
};
