/* SPDX-License-Identifier: MIT */
/* Repeat collapsing for one notifier (its `repeat-window`): the first event of a subject goes
 * out at once and opens a window; repeats within it are held and go out at its end as one
 * message, the last of them with a count ("... (and 7 more like it in 60 s)"). A pure table
 * with no I/O and no clock: every time comes in as an argument (event times are the records'
 * `at`, Unix ms), so the notifier's worker runs it in real time and the tests in virtual time.
 * Its state is JSON, saved by the worker with its cursor in one transaction: a held event is
 * never lost, not even across a leader change. */
#ifndef DHAF_NODE_REPEATS_H
#define DHAF_NODE_REPEATS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/err.h"

/* The most subjects with an open window; beyond it a new subject is sent, not collapsed. */
#define REPEATS_MAX 256

struct repeats;

/** A table for windows of window_ms (0: nothing is held; loaded windows still go out).
 *  Caller frees with repeats_free. */
struct repeats *repeats_new(int64_t window_ms);

/** Frees r and the records it holds. NULL is fine. */
void repeats_free(struct repeats *r);

/**
 * True when rec (an outbox record: kind, service, node, from, to, at; borrowed) is a repeat
 * of a subject whose window is open at rec's time: it is to be held (repeats_hold), not sent.
 * Changes nothing. Flush the windows that ended at or before rec's time first (repeats_due).
 */
bool repeats_would_hold(const struct repeats *r, const json_t *rec);

/** Counts rec in its open window and keeps it (a reference is taken) as the window's last. */
void repeats_hold(struct repeats *r, json_t *rec);

/** rec was sent: opens its subject's window from rec's time (when there is room). */
void repeats_sent(struct repeats *r, const json_t *rec);

/**
 * The summary of the earliest window that ended at or before now_ms and holds events, or NULL:
 * a new record (caller decrefs) - the window's last held record, its message followed by
 * " (and N more like it in W s)" when N > 0 others were held, and "repeats": N. Changes
 * nothing until repeats_flushed(r, *slot). Windows that ended holding nothing are forgotten
 * here (their subjects may open new ones).
 */
json_t *repeats_due(struct repeats *r, int64_t now_ms, size_t *slot);

/** The summary of slot (from repeats_due) was sent: the window starts again from its end, empty
 *  (so at most one message a window goes out while the repeats go on). */
void repeats_flushed(struct repeats *r, size_t slot);

/** The earliest end of a window that holds events (Unix ms); INT64_MAX when none does. */
int64_t repeats_next_due(const struct repeats *r);

/** How many events the windows hold. */
size_t repeats_held(const struct repeats *r);

/** True when the state changed since it was last marked saved (repeats_saved) or loaded. */
bool repeats_dirty(const struct repeats *r);

/** The state as JSON text (caller frees). */
char *repeats_save(const struct repeats *r);

/** The text of repeats_save reached etcd: clears the dirty mark. */
void repeats_saved(struct repeats *r);

/** Replaces the state with text (from repeats_save). DHAF_EINVAL with err when text is not
 *  such a state (r is then empty). */
int repeats_load(struct repeats *r, const char *text, struct dhaf_err *err);

#endif
