/* SPDX-License-Identifier: MIT */
/* Config drift: every node publishes its config hash (cfghash.h) at config/<node> on its
 * session lease; any node reads from its view whether the alive nodes agree (for status,
 * /readyz and /metrics), and the leader's duty announces a drift once when it has lasted
 * dhaf.config-drift-grace (a config-drift event) and once when it ends (config-drift-cleared),
 * keeping what it announced in config-drift (written with the event in one fenced txn, so a
 * new leader does not say it again). */
#ifndef DHAF_NODE_CFGDRIFT_H
#define DHAF_NODE_CFGDRIFT_H

#include <stdbool.h>
#include <stddef.h>

#include "cfghash.h"
#include "cluster.h"
#include "view.h"

/* One alive node's config as the view has it. */
struct cfgdrift_node {
    char name[80];
    char hash[CFGHASH_SHORT + 1]; /* "": it publishes none (an older version, or not yet) */
    bool differs;                 /* its hash is not the reference */
    char parts[64];               /* where it differs: "services,probers" ("" when unknown) */
};

struct cfgdrift {
    bool drift;                  /* two or more hashes among the alive nodes */
    char ref[CFGHASH_SHORT + 1]; /* the hash most alive nodes publish (a tie: the leader's) */
    size_t n, n_differ;
    struct cfgdrift_node *nodes; /* the alive nodes in name order */
};

/** Fills *out from v (read lock held by the caller). Release with cfgdrift_release. */
void cfgdrift_read(const struct view *v, struct cfgdrift *out);

void cfgdrift_release(struct cfgdrift *d);

/** "node-3 has 1a2b3c4d5e6f (services differ); the others 9f8e7d6c5b4a" into buf; "" without
 *  a drift. Returns buf. */
const char *cfgdrift_summary(const struct cfgdrift *d, char *buf, size_t len);

/** The leader's duty announcing drifts (for cluster_add_duty). */
struct duty cfgdrift_duty(struct cluster *c);

/** The record this node publishes at config/<node> (on its session lease) for generation gen
 *  of its config: {hash, generation, parts}. NULL when hashing failed (logged). Caller frees. */
char *cfgdrift_record(const struct dhaf_config *cfg, uint64_t gen);

#endif
