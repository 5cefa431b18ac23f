/* SPDX-License-Identifier: MIT */
/* The node's place in the cluster: membership (members/, alive/ on a session lease), leader
 * election with a fencing epoch, step-down, node-up/down tracking, and decommission. */
#ifndef DHAF_NODE_CLUSTER_H
#define DHAF_NODE_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/etcd.h"

enum cluster_role { ROLE_FOLLOWER = 0, ROLE_CANDIDATE = 1, ROLE_LEADER = 2 };

struct cluster;

/**
 * Creates the cluster module for cfg (borrowed; must outlive the cluster until
 * cluster_reload replaces it) on etcd (borrowed). Nothing runs until cluster_start.
 */
struct cluster *cluster_new(const struct dhaf_config *cfg, struct dhaf_etcd *etcd);

/** Starts the session, election and leader-duty threads. Returns 0 or a negative code. */
int cluster_start(struct cluster *c, struct dhaf_err *err);

/**
 * Graceful stop: stops acting, revokes the leases (leadership passes at once, the node's
 * alive key disappears), and joins the threads, within about deadline_ms. Returns true when
 * every thread finished (then the cluster and its etcd client may be freed).
 */
bool cluster_stop(struct cluster *c, int deadline_ms);

/** Frees a stopped cluster. NULL is fine. */
void cluster_free(struct cluster *c);

/** Applies a reloaded config (timings); cfg is borrowed from now on. */
void cluster_reload(struct cluster *c, const struct dhaf_config *cfg);

/**
 * True while this node is the leader and its lease is surely still valid (measured on the
 * local monotonic clock). *epoch (may be NULL) gets the fencing epoch.
 */
bool cluster_is_leader(struct cluster *c, int64_t *epoch);

/** The role now (for status and logs). */
enum cluster_role cluster_role(struct cluster *c);

/**
 * Fenced write: runs ops only if this node is the leader and the leader key's
 * create_revision is still our epoch (plus the caller's own compares). Returns 0 when
 * applied, DHAF_EFENCED when we are not (or no longer) the leader - then the node steps
 * down - or DHAF_ECONFLICT when only the caller's compares failed.
 */
int cluster_txn_as_leader(struct cluster *c, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                          const struct dhaf_etcd_op *ops, size_t n_ops,
                          struct dhaf_etcd_txn_result *res, struct dhaf_err *err);

/**
 * Removes node from members/ with its vote; refused (DHAF_ECONFLICT) while the node is alive
 * and DHAF_ENOTFOUND for a node that is not a member.
 */
int cluster_decommission(struct cluster *c, const char *node, struct dhaf_err *err);

/** The full etcd key of a path under the cluster prefix ("leader" -> /dhaf/<c>/leader). */
const char *cluster_key(const struct cluster *c, char *buf, size_t len, const char *path);

/** The etcd client (borrowed). */
struct dhaf_etcd *cluster_etcd(struct cluster *c);

/** The node's session lease (0 while it has none): keys that must vanish with the node. */
int64_t cluster_session_lease(struct cluster *c);

/** Sleeps up to ms unless the cluster is stopping; returns true when stopping. */
bool cluster_nap(struct cluster *c, int64_t ms);

/** True once cluster_stop began. */
bool cluster_stopping(struct cluster *c);

/** This node's name (borrowed). */
const char *cluster_node(const struct cluster *c);

#endif
