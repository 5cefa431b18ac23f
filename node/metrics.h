/* SPDX-License-Identifier: MIT */
/* Process-wide counters for /metrics (switches by service and kind, the built-in prober's
 * check latency histogram, etcd compactions) and the Prometheus text rendering of them with
 * the cluster's view and the etcd monitor's state.
 * Recording is lock-free (atomics) except the first switch of a (service, kind) pair. */
#ifndef DHAF_NODE_METRICS_H
#define DHAF_NODE_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "dhaf/v1/dhaf.pb-c.h"

/** Counts one completed switch of service (kind: failover, switchover, switching). Both
 *  strings are borrowed for the call. Thread-safe. */
void metrics_switch(const char *service, const char *kind);

/** Records one health check's latency in the check latency histogram. Thread-safe. */
void metrics_check_latency(uint32_t latency_ms);

/** Counts one round of the built-in prober that took took_ms; overran: a tact or more (the
 *  next round could not start at this node's phase - the prober is behind). Thread-safe. */
void metrics_probe_round(int64_t took_ms, bool overran);

/** Counts one compaction of etcd's history this node made, at revision. Thread-safe. */
void metrics_compaction(int64_t revision);

struct etcdmon_state;

/* What the node knows when /metrics is asked; every pointer borrowed for the call. */
struct metrics_view {
    bool leader;                              /* this node is the leader now */
    const Dhaf__V1__ClusterStatus *cluster;   /* NULL when the view was never loaded */
    const Dhaf__V1__ListServicesResponse *ls; /* NULL when the view was never loaded */
    bool view_synced;                         /* the view is in sync with etcd */
    int64_t view_age_ms;                      /* since etcd was last heard from */
    uint64_t etcd_errors;                     /* dhaf_etcd_error_count() */
    const struct etcdmon_state *etcd;         /* alarms, writability; NULL: not monitored */
};

/** The Prometheus text exposition (format 0.0.4) of the process counters and v. Caller
 *  frees. Never NULL. */
char *metrics_render(const struct metrics_view *v);

#endif
