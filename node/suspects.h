/* SPDX-License-Identifier: MIT */
/* Burst confirmation (DESIGN "Decision"): a voter's first failing check of its service's current
 * entry point writes suspect/<svc>/<ep> = {voter, at} on a short lease; every node's view sees
 * it and its built-in prober checks that entry point at once, beside a witness (remote probers
 * hear of it through Prober.Suspects). A majority then confirms the failure in about one check's
 * time instead of waiting for the other voters' next scheduled checks. A suspicion decides
 * nothing: only votes count. */
#ifndef DHAF_NODE_SUSPECTS_H
#define DHAF_NODE_SUSPECTS_H

#include <stddef.h>

#include "cluster.h"
#include "dhaf/probe.h"

#define SUSPECT_MAX_PER_S   20 /* suspicions one writer sends per second, at most */
#define SUSPECT_MAX_AT_ONCE 8  /* more in one batch of results: none is sent */

struct suspects;

/** A writer of suspect/ keys for c; any thread. */
struct suspects *suspects_new(struct cluster *c);
void suspects_free(struct suspects *s);

/**
 * For each result of voter's round flagged suspect (dhaf_probe_result.suspect) whose entry point
 * is its service's current one in the view, writes suspect/<svc>/<ep> - not when the round looks
 * impaired (vote_round_impaired: the vantage point's own trouble) or more than
 * SUSPECT_MAX_AT_ONCE are flagged at once, and at most SUSPECT_MAX_PER_S a second. Failures are
 * logged at debug level (burst confirmation only speeds a failover up). Blocks for the etcd writes.
 */
void suspects_raise(struct suspects *s, const char *voter, const struct dhaf_probe_result *r,
                    size_t n);

#endif
