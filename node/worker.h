/* SPDX-License-Identifier: MIT */
/* A worker: one thread with a waker and a quit flag, the shape of every leader duty (decisions,
 * notifier delivery, node tracking, history trimming). Stopping is bounded: a worker stuck in
 * a call past the deadline is left to finish alone, and its state is freed by whichever of the
 * thread and its owner lets go last. */
#ifndef DHAF_NODE_WORKER_H
#define DHAF_NODE_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "dhaf/clock.h"
#include "dhaf/err.h"

struct worker;

/* The thread's body: it loops until worker_quit(w) and returns. */
typedef void worker_body_fn(struct worker *w);
/* Frees the worker's state (ud) once neither the thread nor its owner needs it. */
typedef void worker_release_fn(void *ud);

/**
 * Starts a worker thread running body(w). ud is taken: release(ud) runs when both the thread
 * has ended and worker_stop has been called (release may be NULL). name is copied (for logs).
 * Returns NULL with err when the thread cannot start (then release(ud) has run).
 */
struct worker *worker_start(const char *name, worker_body_fn *body, worker_release_fn *release,
                            void *ud, struct dhaf_err *err);

/** The worker's state (the ud given to worker_start). */
void *worker_ud(struct worker *w);

/** The worker's waker: others kick it (view changes, reloads); worker_stop kicks it too. */
struct dhaf_waker *worker_waker(struct worker *w);

/** True once worker_stop was called: the body must return soon. */
bool worker_quit(struct worker *w);

/** Waits for a kick or the monotonic deadline (<= 0: none); returns the bits (0: deadline or
 *  quit). */
unsigned worker_wait(struct worker *w, int64_t deadline_ms);

struct term;

/**
 * A worker of a term's duty: as worker_start, and its waker is kicked when the term t closes,
 * when one of the view's topics changes (view_topics 0: none) and, with on_reload, when a
 * reload is published. The worker holds a reference to t until it is freed.
 */
struct worker *term_worker_start(struct term *t, const char *name, worker_body_fn *body,
                                 worker_release_fn *release, void *ud, unsigned view_topics,
                                 bool on_reload, struct dhaf_err *err);

/** Undoes what term_worker_start subscribed, then worker_stop. */
bool term_worker_stop(struct worker *w, int deadline_ms);

/**
 * Asks the worker to quit and waits up to deadline_ms for its thread. Returns true when it
 * ended; false when it is still in a call (it ends alone and frees its state then). The owner's
 * reference is gone either way: w must not be used after this. NULL is fine (true).
 */
bool worker_stop(struct worker *w, int deadline_ms);

#endif
