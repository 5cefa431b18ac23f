/* SPDX-License-Identifier: MIT */
/* The key-table engine's inside: sections as YAML mappings, used by config.c. */
#ifndef DHAF_CFG_INTERNAL_H
#define DHAF_CFG_INTERNAL_H

#include "dhaf/cfgkeys.h"
#include "ytree.h"

struct dhaf_cfg_ctx {
    struct dhaf_cfg_report *rep;
    const struct ynode *map;        /* the section; NULL when absent from the file */
    int line, col;                  /* where to report things about an absent section */
    const char *path;               /* "services[0].switcher"; "" for the root */
    const char *dir;                /* directory of the config file, for relative paths */
    const struct dhaf_cfgkey *keys; /* the section's table */
    const char *const *extra;       /* more accepted keys, NULL-terminated (may be NULL) */
    bool skip_unknown;              /* another table of the same mapping reports unknowns */
};

/**
 * Parses the section ctx->map into base following keys: reports unknown keys (with a
 * suggestion), duplicate keys, missing required keys, bad types and out-of-range values.
 * Keys of type DHAF_CFG_EXTERNAL and ctx->extra are accepted but left to the caller.
 * Returns the number of errors it added.
 */
size_t cfg_apply(struct dhaf_cfg_ctx *ctx, void *base);

/** path + "." + key (or key alone when path is empty). Caller frees. */
char *cfg_join(const char *path, const char *key);

/** path + "[i]". Caller frees. */
char *cfg_index(const char *path, size_t i);

/** Reports at node n (or at the ctx's section when n is NULL). */
void cfg_error_at(struct dhaf_cfg_report *rep, const struct ynode *n, const char *path,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/** Value node of a possibly dotted key ("smtp.server") inside map; NULL when absent. */
const struct ynode *cfg_lookup(const struct ynode *map, const char *dotted);

/** The value of a dotted key, or the deepest mapping that exists on the way to it: where to
 *  report a problem with that key. */
const struct ynode *cfg_anchor(const struct ynode *map, const char *dotted);

/** A scalar's text as a string for messages: quoted and cut at 60 characters. Static buffer
 *  per call site is avoided: writes into buf. */
const char *cfg_show(const struct ynode *n, char *buf, size_t len);

#endif
