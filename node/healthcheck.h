/* SPDX-License-Identifier: MIT */
#ifndef DHAF_NODE_HEALTHCHECK_H
#define DHAF_NODE_HEALTHCHECK_H

#include <stdio.h>

#include "dhaf/config.h"

/** GETs /healthz from the REST listener cfg names, on loopback, within timeout_ms; prints one
 *  line to out. Returns 0 when it answered 200, else 1. */
int node_healthcheck(const struct dhaf_config *cfg, int timeout_ms, FILE *out);

#endif
