/* SPDX-License-Identifier: MIT */
/* The node's gRPC API on dhaf.grpc-api: dhaf.v1.Prober (plans and reports of remote probers);
 * dhaf.v1.Dhaf joins it with the control-plane issue. */
#ifndef DHAF_NODE_API_H
#define DHAF_NODE_API_H

#include <stdint.h>

#include "cluster.h"
#include "dhaf/config.h"

struct api;

/** Binds and starts the server. cfg is borrowed until api_reload. NULL with err on failure
 *  (address in use, bad certificate). */
struct api *api_start(struct cluster *c, const struct dhaf_config *cfg, struct dhaf_err *err);

/** Switches to a reloaded config: a new probe plan (and generation), new prober tokens. */
void api_reload(struct api *a, const struct dhaf_config *cfg);

/** Stops the server, revokes the relay leases of probers, frees. NULL is fine. */
void api_stop(struct api *a);

/** The current probe plan's generation (changes when the plan does). */
uint64_t api_plan_generation(struct api *a);

#endif
