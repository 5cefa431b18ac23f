/* SPDX-License-Identifier: MIT */
/* Whether the node is ready to serve: the one answer behind REST /readyz and the gRPC health
 * service's "dhaf.v1.Dhaf" (node/health.c). */
#ifndef DHAF_NODE_READY_H
#define DHAF_NODE_READY_H

#include <stdbool.h>

#include "cluster.h"

/**
 * True when the node is ready: etcd accepts writes, the node has its session with etcd, its
 * view is in sync with etcd, and (when it leads) it can initialise and read every service's
 * switcher. Otherwise false with *word a one-word reason ("etcd", "session", "provider";
 * static) and, when detail is not NULL, *detail the full reason (caller frees; it may name
 * etcd endpoints, so it is for authenticated callers only). Reads memory only (no I/O).
 */
bool node_ready(struct cluster *c, const char **word, char **detail);

#endif
