/* SPDX-License-Identifier: MIT */
/* The node's gRPC API on dhaf.grpc-api: dhaf.v1.Dhaf (status from the view, changes to etcd)
 * and dhaf.v1.Prober (plans and reports of remote probers), with gRPC's health service
 * (health.c) and server reflection (reflect.c) on the same port. */
#ifndef DHAF_NODE_API_H
#define DHAF_NODE_API_H

#include <stdbool.h>

#include "cluster.h"

struct api;

/** Binds and starts the server with the current config snapshot. NULL with err on failure
 *  (address in use, bad certificate). */
struct api *api_start(struct cluster *c, struct dhaf_err *err);

/** A reload was published: a new probe plan (and generation), new tokens. */
void api_reload(struct api *a);

/** Stops the server and revokes the relay leases of probers, within about deadline_ms; false
 *  when a call was still running (then nothing is freed: the process is exiting). NULL is
 *  fine. */
bool api_stop(struct api *a, int deadline_ms);

#endif
