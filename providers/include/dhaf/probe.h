/* SPDX-License-Identifier: MIT */
/* The probe round: every entry point of every service checked by its service's checker, each
 * at a stable offset within the round and with a bound on the checks in flight, its opinion
 * smoothed with rise/fall and reported as soon as its check ends. The same code runs in
 * dhaf-node's built-in prober and in dhaf-prober. */
#ifndef DHAF_PROBE_H
#define DHAF_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/cancel.h"
#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/provider.h"

/* The voter's opinion of one entry point. */
struct dhaf_probe_result {
    const char *service; /* borrowed from the services given to dhaf_probe_new */
    const char *ep;
    bool healthy;       /* the opinion, after rise/fall */
    bool raw_healthy;   /* the last check's result */
    const char *reason; /* code from the checker's status table (static) */
    char text[256];
    uint32_t latency_ms;
    bool known;         /* checked at least once (false: "not checked yet", healthy false) */
    bool fresh;         /* checked in the current round (false: the previous opinion) */
    uint32_t offset_ms; /* when its check starts in the current round, from the round's start */
    bool held;          /* its opinion turned unhealthy, but no other entry point has passed a
                           check started since: healthy stays published until one does (the
                           vantage point itself may be what failed); see dhaf_probe_round */
    bool suspect;       /* set for one callback: its opinion was just held after a failing
                           scheduled check - other voters may check it at once
                           (dhaf_probe_suspect); not set by the failures of burst checks */
};

/* How an engine runs its rounds. */
struct dhaf_probe_opts {
    const char *voter; /* seeds each entry point's offset: stable for (voter, service, ep);
                          borrowed for the call only (NULL: "") */
    int max_inflight;  /* checks in flight at once in this engine (0: 256) */
};

struct dhaf_probe;

/**
 * Initialises the checker of each service (svcs borrowed for the probe's life); o may be NULL
 * (defaults). A checker whose init fails, or a negative max_inflight, is reported in err and
 * the probe is not created. Free with dhaf_probe_free.
 */
struct dhaf_probe *dhaf_probe_new(const struct dhaf_service *svcs, size_t n,
                                  const struct dhaf_probe_opts *o, struct dhaf_err *err);

/**
 * Called from the thread running the round each time checks have ended: all = every entry
 * point's current opinion (services in order; one not checked yet this round shows its
 * previous opinion, with fresh false), n = their number. Borrowed for the call. The round
 * starts no check while cb runs: keep it short (publish, do not wait on the network).
 */
typedef void (*dhaf_probe_cb)(void *ud, const struct dhaf_probe_result *all, size_t n);

/**
 * Runs one round spread over spread_ms (<= 0: all at once): each entry point's check starts
 * at its offset in [0, spread_ms) from the call (the offset is stable for the voter, service,
 * entry point and spread). At most max_inflight checks are in flight; checks that are due
 * together run in one check() call of their checker, on a short-lived thread of the round.
 * A plugin's check() is never called from two threads at once (docs/extensions.md).
 *
 * An opinion that turns unhealthy is held (published healthy, held true) until it fails again
 * while the vantage point is seen working: at once, it is checked again in one call beside a
 * witness (a healthy entry point of its checker type), and a pass of the witness there
 * confirms the failure; otherwise (the witness failed too, or its type has none) it stays held
 * until another entry point passes a check that started after the failing result came in, and
 * then a confirming check of it fails. A vantage point whose own network breaks fails its
 * checks one after the other as the round goes on, and the first ones must not read as the
 * entry points' failure. With every entry point failing, every one ends held (the vote is then
 * impaired). With a single entry point nothing is held. These checks start before the
 * scheduled ones and may pass max_inflight by a quarter of it (at least 4).
 *
 * cb (may be NULL) gets every entry point's opinion after each group of checks ends. stop
 * (may be NULL): once it fires, no further check starts and the round returns as soon as the
 * checks in flight end (a check is not interrupted: it keeps to its own timeout).
 *
 * *out points to every entry point's opinion (services in order), valid until the next round
 * or dhaf_probe_free; after a stopped round, those with fresh false were not checked in it.
 * One round at a time per engine.
 */
void dhaf_probe_round(struct dhaf_probe *p, int spread_ms, struct dhaf_cancel *stop,
                      dhaf_probe_cb cb, void *ud, const struct dhaf_probe_result **out,
                      size_t *n_out);

/**
 * For checkers built into dhaf: t's result is final - the engine may take it now rather than
 * when the whole check() call returns (the slowest of its targets), so that a failure is held,
 * re-checked and published one check's time after it came. (It takes failures, and every
 * result of a re-check, witness or confirming check, early; a scheduled pass waits.) Call it from
 * the thread in check(), at most once per target, after the last write to t->result. Outside an
 * engine's run (a checker called directly, as in tests) it does nothing. A checker that never calls
 * it has its results taken when check() returns.
 */
void dhaf_check_done(const struct dhaf_check_target *t);

/**
 * Waits until until_ms (monotonic), running the burst checks that dhaf_probe_suspect asks for
 * meanwhile and what follows from them, and calling cb as a round does. Returns at until_ms,
 * when stop fires, or when dhaf_probe_wake is called (also before this call), once no check is
 * in flight. For the time between rounds; the same thread as the rounds.
 */
void dhaf_probe_idle(struct dhaf_probe *p, int64_t until_ms, struct dhaf_cancel *stop,
                     dhaf_probe_cb cb, void *ud);

/**
 * Another voter suspects this entry point (its first failing check): check it at once - in the
 * round or idle wait in progress, or in the next - in one call beside a witness of its checker
 * type; a failure there while the witness passes is confirmed in that one check's time. Asked
 * again while it waits, it is checked once; it is not checked when this voter already holds it
 * failing, nor twice within 250 ms. Any thread. False when p has no such entry point.
 */
bool dhaf_probe_suspect(struct dhaf_probe *p, const char *service, const char *ep);

/** Ends dhaf_probe_idle early (the one in progress, or the next one). Any thread. */
void dhaf_probe_wake(struct dhaf_probe *p);

/** Destroys the checkers' instances and frees p (NULL: nothing). Not during a round. */
void dhaf_probe_free(struct dhaf_probe *p);

/**
 * A digest of the opinions in r that a vote carries: for each entry point checked at least
 * once, its name, its opinion and - when failing - its reason code (not its text or latency:
 * a voter does not speak again because a timeout took 1002 ms instead of 1001). Two rounds
 * with the same digest say the same thing.
 */
uint64_t dhaf_probe_digest(const struct dhaf_probe_result *r, size_t n);

#endif
