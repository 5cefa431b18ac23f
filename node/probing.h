/* SPDX-License-Identifier: MIT */
/* The node's eyes: the built-in prober runs a probe round every tact-interval and writes its
 * opinions as the node's vote (votes/<node>) when they change, on the node's vote lease that
 * the round renews. The tally of everyone's votes lives in the view (view.h), on every node. */
#ifndef DHAF_NODE_PROBING_H
#define DHAF_NODE_PROBING_H

#include <stdbool.h>

#include "cluster.h"
#include "dhaf/config.h"
#include "dhaf/probe.h"

struct probing;

/** Starts the prober thread when the current snapshot says dhaf.probe. Returns NULL with err
 *  when a checker cannot start. */
struct probing *probing_start(struct cluster *c, struct dhaf_err *err);

/**
 * Makes the checkers of cfg (a config about to be published: the engine points into its heap
 * parts, which a snapshot keeps where they are). *engine is NULL when cfg does not probe.
 * Returns 0, or an error when a checker cannot start (the reload must then be refused).
 */
int probing_prepare(const struct dhaf_config *cfg, struct dhaf_probe **engine,
                    struct dhaf_err *err);

/** Hands the prober a new engine (taken; may be NULL: no probing) made from snapshot s's
 *  config (s taken): it switches between two rounds. */
void probing_switch(struct probing *p, struct dhaf_probe *engine, struct snap *s);

/** Stops the prober within deadline_ms; false when a round is still running (then nothing is
 *  freed: the process is exiting). NULL is fine. */
bool probing_stop(struct probing *p, int deadline_ms);

#endif
