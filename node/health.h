/* SPDX-License-Identifier: MIT */
/* grpc.health.v1.Health on the node's gRPC port (Kubernetes' grpc probes, grpc-health-probe,
 * client-side health checks): service "" is the process, "dhaf.v1.Dhaf" the node's readiness
 * (node_ready, as REST /readyz). Its calls need no credentials (probes send none). */
#ifndef DHAF_NODE_HEALTH_H
#define DHAF_NODE_HEALTH_H

#include "cluster.h"
#include "dhaf/rpc.h"

/* Watch streams at once (each holds a worker thread of the gRPC server for its life: the
 * server gets this many more); more are refused with RESOURCE_EXHAUSTED. */
#define HEALTH_MAX_WATCHES 4
/* How often a Watch stream looks at the node's readiness (and at its call). */
#define HEALTH_WATCH_POLL_MS 500

struct health;

/** The health service of cluster c (borrowed for the service's life). Never NULL. */
struct health *health_new(struct cluster *c);
/** From now on every service is NOT_SERVING and Watch streams end (the node is stopping).
 *  NULL is fine. */
void health_stop(struct health *h);
/** Frees h; its calls must have ended (the server stopped). NULL is fine. */
void health_free(struct health *h);

/* The methods, for the server's method table (ud: the struct health). */
int health_auth(void *ud, struct dhaf_rpc_call *call, struct dhaf_err *err);
int health_check(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
                 struct dhaf_err *err);
int health_watch(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
                 struct dhaf_err *err);

#endif
