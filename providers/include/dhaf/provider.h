/* SPDX-License-Identifier: MIT */
/* The provider ABI: switchers, health checkers and notifiers, built in or loaded from a .so.
 *
 * A provider is one constant `struct dhaf_provider`: its ABI version, kind, type name (the YAML
 * `type:`), a declarative table of its config keys and the size of the struct they fill. The
 * framework parses and validates the section before the provider sees it. Then init() makes an
 * instance, the kind's operation uses it, and destroy() frees it. abi_version changes
 * whenever this layout does, and a plugin built for another version is refused. Built-ins
 * are listed in providers/registry.c; plugins export the same struct from a .so (see
 * "plugins" below and docs/extensions.md).
 */
#ifndef DHAF_PROVIDER_H
#define DHAF_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/cfgkeys.h"
#include "dhaf/config.h"
#include "dhaf/err.h"

#define DHAF_PROVIDER_ABI_VERSION 2

struct dhaf_cancel; /* dhaf/cancel.h */

/* The leader's lease as a switcher sees it during one call: etcd fences dhaf's own writes, but
 * only the switcher can fence its requests to the provider. A switcher asks left_ms() right
 * before every request it sends and sends it only when the answer is positive, with a
 * deadline no later than that; it gives up (DHAF_EFENCED) otherwise. When the leadership ends,
 * cancel fires: requests in flight end at once and exec children are killed. */
struct dhaf_fence {
    void *ud;
    /** Milliseconds the leader may still act (its lease is surely valid that long); <= 0 when
     *  it must not act any more. */
    int64_t (*left_ms)(void *ud);
    /** Fired when the term closes. dhaf's own providers pass it to lib/http and lib/spawn;
     *  a plugin (which calls no dhaf function) keeps its requests within left_ms instead. */
    struct dhaf_cancel *cancel;
};

/* One switch, as the leader asks for it. */
struct dhaf_switch_req {
    size_t to;       /* make traffic go to ctx->eps[to] */
    int expect_from; /* where the leader believes traffic goes now (index into ctx->eps), or -1
                        when it does not know: a switcher that can write conditionally writes
                        only while the provider still points there (or already at `to`) */
    const struct dhaf_fence *fence; /* never NULL */
};

/* One row of a provider's status table: a short stable code and what it means. Health
 * results name one of these (like haproxy's check statuses). */
struct dhaf_reason {
    const char *code;        /* "ok", "timeout", "http-code", ... */
    const char *description; /* "the HTTP status code was not an expected one" */
};

/* A small key-value store in etcd that belongs to one provider instance (under
 * ext/<kind>/<type>/<instance>/). Values are text. Writes from the leader are fenced. */
struct dhaf_kv_store {
    void *ud;
    /** *value (caller frees) or NULL when absent. Returns 0 or a negative code. */
    int (*get)(void *ud, const char *key, char **value, struct dhaf_err *err);
    int (*put)(void *ud, const char *key, const char *value, struct dhaf_err *err);
    int (*del)(void *ud, const char *key, struct dhaf_err *err);
    /** Every key under prefix ("" = all): *keys and *values (n each, caller frees each and
     *  the arrays); keys are relative to the instance's folder. */
    int (*list)(void *ud, const char *prefix, char ***keys, char ***values, size_t *n,
                struct dhaf_err *err);
};

/* One event as a notifier receives it. Everything is borrowed for the notify() call. */
struct dhaf_event_view {
    uint64_t seq;      /* unique, increasing (etcd revision of the record) */
    const char *kind;  /* "failover", "ep-down", "node-up", "new-leader", ... */
    const char *level; /* "info", "warning", "critical" */
    const char *cluster;
    const char *service; /* NULL for cluster events */
    const char *node;
    const char *from;
    const char *to;
    const char *const *reasons;
    size_t n_reasons;
    const char *message; /* one human sentence */
    int64_t at_ms;       /* when it happened (Unix ms) */
};

/* What a provider instance is given at init. Everything is borrowed for the instance's life. */
struct dhaf_provider_ctx {
    const char *service; /* NULL for notifiers */
    const char *domain;
    const struct dhaf_ep *eps; /* the service's entry points, in priority order */
    size_t n_eps;
    const char *node;     /* the node running the instance (switchers: the leader) */
    int64_t epoch;        /* switchers: the leader's fencing epoch (sent along, for audits) */
    const char *cluster;  /* the cluster's name */
    const char *instance; /* notifiers: the instance name ("tg-anon") */
    const struct dhaf_kv_store *store; /* notifiers and switchers: the instance's own store */
};

/* The outcome of one check of one entry point. */
struct dhaf_check_result {
    bool healthy;
    const char *reason; /* a code of the checker's status table (static storage) */
    char text[256];     /* detail for operators: "unexpected HTTP code 500 (expected 200)" */
    uint32_t latency_ms;
};

/* One entry point to check. The checker reads the inputs and fills *result. */
struct dhaf_check_target {
    const void *conf; /* the service's checker config: the provider's own struct */
    void *state;      /* what init returned for that service */
    const char *service;
    const char *domain;
    const char *ep_name;
    const char *ep_ip;
    int family; /* AF_INET or AF_INET6 */
    struct dhaf_check_result *result;
};

struct dhaf_provider {
    unsigned abi_version; /* DHAF_PROVIDER_ABI_VERSION */
    enum dhaf_pkind kind;
    const char *type;               /* YAML `type:`, e.g. "cloudflare" */
    const char *summary;            /* one line for docs and --help */
    const struct dhaf_cfgkey *keys; /* config keys, terminated by {NULL} */
    size_t config_size;             /* size of the struct the keys' offsets point into */
    dhaf_cfg_finish_fn finish;      /* cross-key checks and derived defaults; may be NULL */

    /**
     * Prepares one instance (one service's checker) where checks will run: on every node
     * and prober. Returns 0 with *state (may stay NULL), or a negative code with err.
     */
    int (*init)(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                struct dhaf_err *err);
    /** Frees what init made. May be NULL. */
    void (*destroy)(void *state);

    /* --- health checkers --- */
    /**
     * Checks every target concurrently (one event loop: libcurl multi, poll, child
     * processes; never a thread per check) and fills each result. Returns when all are
     * done; each check keeps to the timeouts of its own conf. Must not block forever.
     */
    void (*check)(struct dhaf_check_target *targets, size_t n);
    /** The status table (terminated by {NULL, NULL}); every result's reason is from it. */
    const struct dhaf_reason *reasons;

    /* --- switchers: only the leader makes an instance (init) and calls these --- */
    /**
     * Points traffic at ctx->eps[req->to] (ctx as given to init). Idempotent - "make it point
     * to X" - so an interrupted switch can simply be done again. Every request is fenced by
     * req->fence (see struct dhaf_fence). Returns 0; DHAF_EFENCED when the fence stopped it;
     * DHAF_ECONFLICT when the provider no longer points at req->expect_from (someone else
     * changed it: nothing written); or another negative code with the provider's own error
     * in err (the leader reads the provider back and decides again).
     */
    int (*switch_to)(void *state, const struct dhaf_switch_req *req, struct dhaf_err *err);
    /**
     * Reads from the provider itself where traffic goes now (the DNS record, the metadata
     * value), so a manual change or an interrupted switch is seen: *ep = index into ctx->eps,
     * or -1 when it points at no configured entry point. fence bounds the reads like a
     * switch's (NULL: the provider's own deadlines only). Returns 0, DHAF_ENOTFOUND when
     * nothing is set yet, or an error. NULL when the provider cannot tell (the leader then
     * trusts etcd's state).
     */
    int (*current)(void *state, const struct dhaf_fence *fence, int *ep, struct dhaf_err *err);
    /**
     * The longest one switch_to() may run with conf (ms) without checking its fence: a
     * program that runs until its timeout. The config is refused when that cannot fit in the
     * leader's lease. *key names the config key it comes from ("timeout"). NULL: every
     * request of the switcher is bounded by the fence.
     */
    int64_t (*max_call_ms)(const void *conf, const char **key);

    /* --- notifiers: instances exist on the leader only (init when it takes office, destroy
     * when it leaves it), so only the leader polls (Telegram) or sends --- */
    /**
     * Delivers one event. Called from the leader's delivery thread, never from the decision
     * path; every remote call has a deadline. Returns 0; DHAF_EUNAVAILABLE or DHAF_ETIMEOUT
     * to be retried later with back-off; any other code gives the event up for this
     * notifier (logged).
     */
    int (*notify)(void *state, const struct dhaf_event_view *ev, struct dhaf_err *err);
};

/* --- plugins ---------------------------------------------------------------------------------
 *
 * A plugin is a shared object (`*.so`) in the node's `dhaf.extensions-dir` (the prober's
 * `prober.extensions-dir`) that defines ONE well-known symbol, a NULL-terminated array of the
 * providers it brings (one or several, of any kinds):
 *
 *     const struct dhaf_provider *const dhaf_provider_entry[] = {&my_checker, NULL};
 *
 * dhaf dlopen()s every such file at start, before it reads its config (RTLD_NOW | RTLD_LOCAL,
 * in name order), looks the array up with dlsym() and checks each provider: abi_version equals
 * this header's DHAF_PROVIDER_ABI_VERSION, kind is one of enum dhaf_pkind, type is a valid
 * name that no built-in and no other plugin of that kind uses, keys is a terminated table
 * whose every slot lies inside config_size (> 0), and the kind's operation is set (checkers:
 * check and reasons; switchers: switch_to; notifiers: notify). Any refusal stops the process
 * at start with a message naming the file (exit code 2).
 *
 * What a plugin may rely on and must do (docs/extensions.md says more):
 * - abi_version is the first member of struct dhaf_provider in every ABI version, so dhaf can
 *   read it from a plugin built for another one. DHAF_PROVIDER_ABI_VERSION changes whenever a
 *   type reachable from this header changes (including dhaf/cfgkeys.h and struct dhaf_ep);
 *   dhaf loads only plugins built for exactly its own version.
 * - A plugin calls no dhaf function: the executables do not export them (dlopen then fails
 *   with "undefined symbol"). Everything dhaf offers comes through these structs (ctx, store,
 *   err: fill err->code and err->msg yourself). So a finish hook may derive defaults but
 *   cannot report; validate values with a key's check function instead.
 * - Everything the provider points to (type, summary, keys, reasons) is static storage of the
 *   .so: the framework keeps pointers to it while the process runs. Plugins are not unloaded
 *   while the node runs; a new or changed .so takes effect at the next start.
 * - Build with -fvisibility=hidden: only dhaf_provider_entry needs to be visible (the
 *   declaration below exports it).
 */
#define DHAF_PLUGIN_ENTRY_SYMBOL "dhaf_provider_entry"
#define DHAF_PLUGIN_EXPORT       __attribute__((visibility("default")))

/** Defined by a plugin (taken by nobody: static storage of the .so); dhaf only reads it. */
extern DHAF_PLUGIN_EXPORT const struct dhaf_provider *const dhaf_provider_entry[];

/* Key-table row helpers for provider files. */
#define DHAF_KEY_END                                                                               \
    {                                                                                              \
        NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL                                      \
    }

#endif
