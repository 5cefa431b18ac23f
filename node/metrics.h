/* SPDX-License-Identifier: MIT */
/* Process-wide counters for /metrics (switches and failed switch calls by service, the
 * built-in prober's check latency histogram, etcd compactions, notifier outcomes, when each
 * remote prober last reported here) and the Prometheus text rendering of them with the
 * cluster's view, the etcd monitor's state and the process's own RSS, FDs and CPU.
 * Named series (switches, notifiers, prober reports) are recorded under a mutex: they are
 * rare; the latency histogram and round counters are atomics. */
#ifndef DHAF_NODE_METRICS_H
#define DHAF_NODE_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "dhaf/v1/dhaf.pb-c.h"

/** Counts one completed switch of service (kind: failover, switchover or switching; another
 *  is not counted). Both strings are borrowed for the call. Thread-safe. */
void metrics_switch(const char *service, const char *kind);

/** Records one health check's latency in the check latency histogram. Thread-safe. */
void metrics_check_latency(uint32_t latency_ms);

/** Counts one round of the built-in prober that took took_ms; overran: a tact or more (the
 *  next round could not start at this node's phase - the prober is behind). Thread-safe. */
void metrics_probe_round(int64_t took_ms, bool overran);

/** Counts one compaction of etcd's history this node made, at revision. Thread-safe. */
void metrics_compaction(int64_t revision);

/** Counts one failed call of service's switcher (type: its type name) to move traffic; a
 *  call refused by fencing (the term ended) is not counted. Strings borrowed. Thread-safe. */
void metrics_switch_failed(const char *service, const char *type);

/* What became of one notifier's attempt (dhaf_notifications_total and
 * dhaf_notification_failures_total{outcome}). */
enum metrics_notify_outcome {
    METRICS_NOTIFY_SENT,        /* an event was delivered */
    METRICS_NOTIFY_RETRY,       /* a delivery failed and is tried again (notify-retry) */
    METRICS_NOTIFY_GIVEN_UP,    /* a delivery failed for good (notify-given-up) */
    METRICS_NOTIFY_INIT_FAILED, /* the notifier could not start (notifier-init-failed) */
};

/** Counts outcome for notifier name of type (every configured notifier has its series from
 *  the start, at 0). Strings borrowed. Thread-safe. */
void metrics_notify(const char *name, const char *type, enum metrics_notify_outcome outcome);

/** Notes that this node accepted a report of remote prober name now (monotonic clock): its
 *  dhaf_prober_report_age_seconds counts from here. Borrowed. Thread-safe. */
void metrics_prober_report(const char *name);

struct etcdmon_state;
struct dhaf_config;

/* What the node knows when /metrics is asked; every pointer borrowed for the call. */
struct metrics_view {
    bool leader;                              /* this node is the leader now */
    const Dhaf__V1__ClusterStatus *cluster;   /* NULL when the view was never loaded */
    const Dhaf__V1__ListServicesResponse *ls; /* NULL when the view was never loaded */
    bool view_synced;                         /* the view is in sync with etcd */
    int64_t view_age_ms;                      /* since etcd was last heard from */
    uint64_t etcd_errors;                     /* dhaf_etcd_error_count() */
    const struct etcdmon_state *etcd;         /* alarms, writability; NULL: not monitored */
    const struct dhaf_config *cfg;            /* switchers, probers, notifiers; may be NULL */
};

/** The Prometheus text exposition (format 0.0.4) of the process counters and v. Caller
 *  frees. Never NULL. */
char *metrics_render(const struct metrics_view *v);

#endif
