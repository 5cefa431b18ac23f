/* SPDX-License-Identifier: MIT */
/* The leader's duty: decide for every service on each tact and at once when the tally or a
 * switchover request changes, and carry out switches fenced by the leader's epoch:
 * txn(state.switching) -> switcher -> txn(state.current). Switchers exist only on the leader. */
#ifndef DHAF_NODE_LEADER_H
#define DHAF_NODE_LEADER_H

#include <stdbool.h>

#include "cluster.h"
#include "dhaf/config.h"
#include "probing.h"

struct leader;

/** Starts the decision thread; cfg is borrowed until leader_reload. */
struct leader *leader_start(struct cluster *c, struct probing *p, const struct dhaf_config *cfg,
                            struct dhaf_err *err);

/** Switches to a reloaded config (switchers are made anew on the next decision). */
void leader_reload(struct leader *l, const struct dhaf_config *cfg);

/** Waits for the thread (after cluster_stop) and frees; false when a switch is still
 *  running past deadline_ms (then nothing is freed). NULL is fine. */
bool leader_stop(struct leader *l, int deadline_ms);

/** Writes a switchover request (as the API will): services/<svc>/switchover. */
int leader_request_switchover(struct cluster *c, const struct dhaf_config *cfg, const char *service,
                              const char *ep, const char *by, struct dhaf_err *err);

/** Deletes the switchover request of service; *purged gets the EP it named ("" if none). */
int leader_purge_switchover(struct cluster *c, const struct dhaf_config *cfg, const char *service,
                            char *purged, size_t len, struct dhaf_err *err);

#endif
