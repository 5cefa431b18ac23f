/* SPDX-License-Identifier: MIT */
/* The prober's probe plan: the limits a plan from a node must keep, the prober's own rule for
 * the exec checkers a plan may ask for (exec-allow), and the services built from a plan.
 * Pure: no network, no processes started (the checkers' init runs only in dhaf_probe_new). */
#ifndef PROBER_PLAN_H
#define PROBER_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/cfgkeys.h"
#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/v1/prober.pb-c.h"

/* What a prober accepts from a node. A vote holds at most 4096 results (node/votes.h), so a
 * plan with more entry points could never be reported. */
#define PLAN_MAX_BYTES           (4 * 1024 * 1024) /* the packed plan message */
#define PLAN_MAX_SERVICES        4096
#define PLAN_MAX_EPS_PER_SERVICE 256
#define PLAN_MAX_EPS             4096        /* entry points of all services together */
#define PLAN_MAX_CHECKER_JSON    (64 * 1024) /* one service's health-checker section */
#define PLAN_MAX_INTERVAL_S      3600        /* the nodes' tact-interval range */

/* The prober's own rules for a plan (borrowed). */
struct plan_policy {
    /* exec-allow: absolute paths; one ending in '/' allows every program under that
     * directory, any other only that exact program. Empty: no exec checker from a plan. */
    const struct dhaf_strlist *exec_allow;
};

/* A service of the plan the prober will not check, and why. */
struct plan_refusal {
    char *service;
    char *why;
};

/* What a plan turned into: the services to check and those refused. */
struct plan {
    Dhaf__V1__ProbePlan *msg; /* taken by plan_build; freed by plan_free */
    struct dhaf_service *svcs;
    size_t n;
    struct plan_refusal *refused;
    size_t n_refused;
};

/**
 * Checks msg against the PLAN_MAX_* limits (size, counts, lengths) before anything is built.
 * Returns 0 or DHAF_ETOOBIG with err naming the limit and the value found.
 */
int plan_check_limits(const Dhaf__V1__ProbePlan *msg, struct dhaf_err *err);

/**
 * True when path is an absolute, normalised path ("." , ".." and empty components refused)
 * that exec_allow allows: an exact entry, or an entry ending in '/' that path starts with.
 */
bool plan_exec_allowed(const struct dhaf_strlist *exec_allow, const char *path);

/**
 * Config check of one exec-allow entry: an absolute, normalised path (a directory ends in
 * '/'). Returns 0, or -1 with the reason in why. Fits dhaf_cfg_check_fn.
 */
int plan_check_allow_entry(const char *entry, char *why, size_t wl);

/**
 * Builds p's services from msg (taken: p owns it from here, even on failure). Every value is
 * validated again (names, addresses, duplicates, the limits above, each checker section as a
 * config section). A service whose checker the policy forbids is not built: it is added to
 * p->refused with the reason, and the other services are kept. Returns 0, or a negative code
 * with err when the plan as a whole is malformed or too large (then nothing is kept but msg).
 */
int plan_build(struct plan *p, Dhaf__V1__ProbePlan *msg, const struct plan_policy *pol,
               struct dhaf_err *err);

/**
 * Unpacks a packed plan of len bytes (refused above PLAN_MAX_BYTES) and builds it as
 * plan_build does. Returns 0 or a negative code with err. Release p with plan_free either way.
 */
int plan_decode(struct plan *p, const uint8_t *buf, size_t len, const struct plan_policy *pol,
                struct dhaf_err *err);

/** Frees everything p holds (the message too) and zeroes it. */
void plan_free(struct plan *p);

#endif
