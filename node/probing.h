/* SPDX-License-Identifier: MIT */
/* The node's eyes: the built-in prober (a probe round every tact-interval, written as the
 * node's vote), and, on the leader, the tally of every fresh vote per entry point. */
#ifndef DHAF_NODE_PROBING_H
#define DHAF_NODE_PROBING_H

#include "cluster.h"
#include "dhaf/config.h"
#include "votes.h"

struct probing;

/** Starts both threads (the prober only when cfg->probe). cfg is borrowed until the next
 *  probing_reload. Returns NULL with err when a checker cannot start. */
struct probing *probing_start(struct cluster *c, const struct dhaf_config *cfg,
                              struct dhaf_err *err);

/** Switches to a reloaded config (waits for a round in progress). Returns 0, or an error
 *  when the new checkers cannot start (the old ones keep running). */
int probing_reload(struct probing *p, const struct dhaf_config *cfg, struct dhaf_err *err);

/** Waits for the threads (after cluster_stop) and frees; false when a probe round did not end
 *  within deadline_ms (then nothing is freed: the process is exiting). NULL is fine. */
bool probing_stop(struct probing *p, int deadline_ms);

/**
 * The leader's current tally for service (out has its n_eps entries). Returns false when
 * this node is not the leader or the service is unknown.
 */
bool probing_tally(struct probing *p, const char *service, struct ep_tally *out, size_t n);

/**
 * Waits up to timeout_ms for the leader's tally to change after generation `seen`; returns the
 * current generation (equal to seen on timeout).
 */
uint64_t probing_wait(struct probing *p, uint64_t seen, int timeout_ms);

#endif
