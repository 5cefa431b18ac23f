/* SPDX-License-Identifier: MIT */
/* The probe round: every entry point of every service checked concurrently by its service's
 * checker, with rise/fall smoothing. The same code runs in dhaf-node's built-in prober and in
 * dhaf-prober. */
#ifndef DHAF_PROBE_H
#define DHAF_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/config.h"
#include "dhaf/err.h"

/* The voter's opinion of one entry point after a round. */
struct dhaf_probe_result {
    const char *service; /* borrowed from the services given to dhaf_probe_new */
    const char *ep;
    bool healthy;       /* the opinion, after rise/fall */
    bool raw_healthy;   /* this round's check */
    const char *reason; /* code from the checker's status table (static) */
    char text[256];
    uint32_t latency_ms;
};

struct dhaf_probe;

/**
 * Initialises the checker of each service (svcs borrowed for the probe's life). A checker
 * whose init fails is reported in err and the probe is not created. Free with dhaf_probe_free.
 */
struct dhaf_probe *dhaf_probe_new(const struct dhaf_service *svcs, size_t n, struct dhaf_err *err);

/**
 * Runs one round: all checks at once (one thread per checker type, the checker's own event
 * loop inside). *out points to the results (one per entry point, services in order), valid
 * until the next round or dhaf_probe_free.
 */
void dhaf_probe_round(struct dhaf_probe *p, const struct dhaf_probe_result **out, size_t *n_out);

void dhaf_probe_free(struct dhaf_probe *p);

#endif
