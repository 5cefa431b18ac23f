/* SPDX-License-Identifier: MIT */
/* Event delivery: a duty bound to the term runs one worker per configured notifier. Each
 * follows the view's event history from its cursor (ext/notifier/<type>/<name>/delivered, the
 * last seq it delivered, written fenced after each delivery) and hands every event to its
 * notifier in order, retrying transient failures with back-off, far from the decision path.
 * A new leader's workers go on from the cursors, so nothing is lost across a leader change.
 * Each notifier's filters (min-severity, events) skip what it does not want, and repeats of
 * one subject within its repeat-window are held (node/repeats.h) and sent as one message when
 * the window ends; the held ones are saved with the cursor in one transaction, so they too
 * survive a leader change. A reload restarts only the notifiers whose config changed. */
#ifndef DHAF_NODE_NOTIFY_H
#define DHAF_NODE_NOTIFY_H

#include <stddef.h>

#include "cluster.h"
#include "dhaf/provider.h"

/** The notification duty (for cluster_add_duty). */
struct duty notify_duty(struct cluster *c);

/* One notifier instance bound to a term, stepped by hand in unit tests (by its worker in the
 * daemon). */
struct deliverer;

/**
 * The instance of notifier i of snapshot s (a reference to s and t is held) for term t; prov
 * NULL takes the provider of the notifier's type from the registry (a test passes its own).
 * Initialises the provider. NULL with err when it cannot run.
 */
struct deliverer *notify_deliverer_new(struct term *t, struct snap *s, size_t i,
                                       const struct dhaf_provider *prov, struct dhaf_err *err);

/**
 * Delivers, in order, every event the view holds after the cursor (read from etcd the first
 * time), saving the cursor after each. Returns 0 when it is done for now, 1 when a transient
 * failure asks for a retry later. *delivered (may be NULL) gets how many it delivered.
 */
int notify_deliver_pending(struct deliverer *d, size_t *delivered);

/** Milliseconds until the next window of held repeats ends (0: now), -1 when none is held. */
int64_t notify_wait_ms(const struct deliverer *d);

/** The provider registry's config catalog that also knows the event kinds (for `events:`). */
const struct dhaf_cfg_catalog *notify_catalog(void);

/** Destroys the provider instance and frees. NULL is fine. */
void notify_deliverer_free(struct deliverer *d);

#endif
