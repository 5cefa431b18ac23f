/* SPDX-License-Identifier: MIT */
/* The leader's decision duty: bound to a term, it decides for every service on each tact and
 * at once when the view's votes or requests change, from the view's tally (only once the view
 * is complete), and carries out switches fenced by the epoch: txn(state.switching + events) ->
 * switcher -> txn(state.current + event). Switcher instances exist only while a term is open,
 * and survive reloads that leave their service's switcher config alone. */
#ifndef DHAF_NODE_LEADER_H
#define DHAF_NODE_LEADER_H

#include <stdbool.h>
#include <stddef.h>

#include "cluster.h"
#include "dhaf/config.h"
#include "events.h"

/** The decision duty (for cluster_add_duty): a worker looping over leader_decider_round,
 *  woken by the view's votes and requests, the term's end and reloads, or every tact. */
struct duty leader_duty(struct cluster *c);

/* The decisions of one term, stepped by hand in unit tests (the duty's worker steps it in the
 * daemon). */
struct decider;

/** A decider for term t (a reference is held until leader_decider_free). */
struct decider *leader_decider_new(struct term *t);

/** One round: reads the states it does not know, then decides for every service on the
 *  view's tally (nothing while the view is incomplete). Returns true when it switched. */
bool leader_decider_round(struct decider *d);

/** Destroys the switcher instances and frees. NULL is fine. */
void leader_decider_free(struct decider *d);

/** The TTL of a vote lease under cfg, in ms (VOTE_LEASE_TACTS x tact-interval): a new term
 *  waits at most this long for every voter's vote. */
int64_t leader_fresh_ms(const struct dhaf_config *cfg);

/** Writes a switchover request (as the APIs do): services/<svc>/switchover, with a
 *  switchover-requested event naming actor (borrowed) in the same transaction. */
int leader_request_switchover(struct cluster *c, const struct dhaf_config *cfg, const char *service,
                              const char *ep, const struct event_actor *actor,
                              struct dhaf_err *err);

/** Drains (drain) or undrains entry point ep of service: services/<svc>/drained/<ep> with an
 *  ep-drained / ep-undrained event naming actor, in one transaction. Draining the last
 *  undrained entry point is refused (DHAF_ECONFLICT); undraining one that is not drained is
 *  DHAF_ENOTFOUND. */
int leader_drain(struct cluster *c, const struct dhaf_config *cfg, const char *service,
                 const char *ep, bool drain, const struct event_actor *actor, struct dhaf_err *err);

/** Pauses (control/pause) or resumes the cluster's decisions, with a paused / resumed event
 *  naming actor; resuming when not paused is DHAF_ENOTFOUND. */
int leader_pause(struct cluster *c, bool pause, const struct event_actor *actor,
                 struct dhaf_err *err);

/** Deletes the switchover request of service with a switchover-purged event naming actor in
 *  the same transaction (also when none was pending); *purged gets the EP it named ("" if
 *  none). */
int leader_purge_switchover(struct cluster *c, const struct dhaf_config *cfg, const char *service,
                            const struct event_actor *actor, char *purged, size_t len,
                            struct dhaf_err *err);

#endif
