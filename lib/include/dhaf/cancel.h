/* SPDX-License-Identifier: MIT */
/* A cancel token: one thread fires it, the calls that were given it end at once (an HTTP
 * request wakes from its poll, a child process is killed with its group) and every later call
 * that is given it does not start. A leader's term fires one when it closes, so that no call
 * to a provider outlives the leadership it was made for. */
#ifndef DHAF_CANCEL_H
#define DHAF_CANCEL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define DHAF_CANCEL_HOOKS 8

struct dhaf_cancel {
    pthread_mutex_t lock;
    bool fired;
    struct {
        void (*fn)(void *arg);
        void *arg;
    } hooks[DHAF_CANCEL_HOOKS]; /* called when it fires: wake the calls in progress */
    size_t n_hooks;
};

void dhaf_cancel_init(struct dhaf_cancel *c);
void dhaf_cancel_destroy(struct dhaf_cancel *c);

/** Fires c: every hook runs once (with c's lock held: hooks only wake, they never block). */
void dhaf_cancel_fire(struct dhaf_cancel *c);

/** True once c fired. NULL is never fired. */
bool dhaf_cancel_fired(struct dhaf_cancel *c);

/**
 * Registers fn(arg) to run when c fires, for a call in progress. Returns false (nothing
 * registered) when c has fired already or all hook slots are in use, so the caller can tell
 * "do not start" (dhaf_cancel_fired) from "cannot be woken". NULL c: false.
 */
bool dhaf_cancel_hook(struct dhaf_cancel *c, void (*fn)(void *arg), void *arg);

/** Removes a hook registered with dhaf_cancel_hook (the call ended). */
void dhaf_cancel_unhook(struct dhaf_cancel *c, void (*fn)(void *arg), void *arg);

#endif
