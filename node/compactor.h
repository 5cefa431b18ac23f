/* SPDX-License-Identifier: MIT */
/* The leader's compaction duty: etcd's history is bounded by dhaf itself, as kube-apiserver
 * bounds it. Every etcd.compaction-interval seconds (0: never, for an etcd shared with software
 * that compacts it) the leader compacts etcd at the current revision less
 * etcd.compaction-retention revisions, when the revision advanced since. Watches that are
 * connected are not affected; one that reconnects from a compacted revision gets
 * DHAF_ECOMPACTED and its owner re-reads (the view reloads). */
#ifndef DHAF_NODE_COMPACTOR_H
#define DHAF_NODE_COMPACTOR_H

#include <stdint.h>

#include "cluster.h"

struct compactor;

/** A compactor for term t (a reference is held until compactor_free). */
struct compactor *compactor_new(struct term *t);

/**
 * One compaction, if due: reads etcd's revision (Maintenance/Status) and compacts at revision
 * - retention when that is past the last compaction this compactor made or saw. Does nothing
 * when the term is no longer valid or compaction is off. *compacted_at (may be NULL) gets the
 * revision compacted at (0: none this time). Returns 0 or the store's error.
 */
int compactor_round(struct compactor *k, int64_t *compacted_at, struct dhaf_err *err);

/** Frees k. NULL is fine. */
void compactor_free(struct compactor *k);

/** The duty (for cluster_add_duty): a worker running compactor_round every interval, woken by
 *  reloads (a new interval) and the term's end. */
struct duty compactor_duty(struct cluster *c);

#endif
