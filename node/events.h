/* SPDX-License-Identifier: MIT */
/* The event path: every notable transition becomes one log line and one record in etcd's
 * events/ history (notifiers join in a later issue). Stable event names: new-leader,
 * leader-lost, node-up, node-down, failover, ... */
#ifndef DHAF_NODE_EVENTS_H
#define DHAF_NODE_EVENTS_H

#include <stddef.h>

struct cluster;

enum event_level { EV_INFO = 1, EV_WARNING = 2, EV_CRITICAL = 3 };

#define EVENT_MAX_REASONS 8
#define EVENT_CLUSTER     "@cluster" /* the "service" of cluster-wide events ('@' is no name) */

struct event {
    const char *kind; /* "new-leader", "node-down", ... */
    enum event_level level;
    const char *service; /* NULL: a cluster event */
    const char *node;    /* the node it is about, if any */
    const char *from;
    const char *to;
    const char *reasons[EVENT_MAX_REASONS];
    size_t n_reasons;
    const char *message; /* one human sentence */
};

/**
 * Logs ev and records it under events/<service>/ (fenced when this node is the leader;
 * leader-lost is recorded by the node that lost leadership). Recording failures are logged,
 * never fatal. History is capped at EVENT_HISTORY_MAX per service.
 */
void event_emit(struct cluster *c, const struct event *ev);

#define EVENT_HISTORY_MAX 1000

/** "info", "warning", "critical". */
const char *event_level_name(enum event_level l);

#endif
