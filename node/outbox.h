/* SPDX-License-Identifier: MIT */
/* The event outbox: an event is written in the same fenced transaction as the state change it
 * reports, so etcd has both or neither. Its sequence number comes from etcd - a counter key
 * (event-seq) compared and advanced in that transaction - never from a clock. The history
 * (events/<seq>, zero-padded) is trimmed by a leader duty only below the lowest notifier
 * cursor, with an events-dropped record when a cap forces more. */
#ifndef DHAF_NODE_OUTBOX_H
#define DHAF_NODE_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "events.h"

#define OUTBOX_MAX_EVENTS 80    /* per transaction */
#define OUTBOX_KEEP       1000  /* delivered events kept for the history APIs */
#define OUTBOX_CAP        10000 /* undelivered events kept before the oldest are dropped */

/**
 * Commits ops (with the caller's compares) and evs as one fenced transaction of term t.
 * Returns 0 (each event is then logged), DHAF_EFENCED (the term is over), DHAF_ECONFLICT (a
 * compare of the caller's failed: nothing was written), DHAF_EUNKNOWN_OUTCOME (etcd may or may
 * not have applied it: re-read before deciding again) or another error (nothing was written).
 * Everything is borrowed for the call.
 */
int outbox_commit(struct term *t, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                  const struct dhaf_etcd_op *ops, size_t n_ops, const struct event *evs,
                  size_t n_evs, struct dhaf_err *err);

/**
 * Records evs without a term, comparing only the counter: for what a node that does not lead
 * (or no longer does) has to say, such as leader-lost. Returns 0 or an error (logged by the
 * caller; the events are logged either way).
 */
int outbox_record(struct cluster *c, const struct event *evs, size_t n_evs, struct dhaf_err *err);

/**
 * The same with the caller's compares and ops in the one transaction: a change asked through
 * an API and its audit event are written together or not at all. DHAF_ECONFLICT: a compare
 * of the caller's failed, nothing was written.
 */
int outbox_record_ops(struct cluster *c, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                      const struct dhaf_etcd_op *ops, size_t n_ops, const struct event *evs,
                      size_t n_evs, struct dhaf_err *err);

/** The events/<seq> key of seq into buf (NULL when it does not fit). */
const char *outbox_key(const struct cluster *c, uint64_t seq, char *buf, size_t len);

/**
 * Trims the history once (the duty does it whenever events arrive): delivered events beyond
 * the newest OUTBOX_KEEP go; undelivered ones stay unless more than OUTBOX_CAP wait, then the
 * oldest go and an events-dropped record says how many. *deleted gets the count.
 */
int outbox_trim(struct term *t, size_t *deleted, struct dhaf_err *err);

/** The trimming duty (a struct duty for cluster_add_duty). */
struct duty outbox_trim_duty(struct cluster *c);

#endif
