/* SPDX-License-Identifier: MIT */
/* Typed events: one enum and one table of {name, severity, message template}; an event is
 * built from a kind and its fields, rendered once into a message, stored in etcd by the outbox
 * (outbox.h) as JSON, logged as one key=value line, and read back into an event view for
 * notifiers. Stable names: new-leader, leader-lost, node-up, node-down, failover, ...,
 * etcd-alarm. */
#ifndef DHAF_NODE_EVENTS_H
#define DHAF_NODE_EVENTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum event_level { EV_INFO = 1, EV_WARNING = 2, EV_CRITICAL = 3 };

/* X(id, name, level, template). Template fields: {service} {node} {from} {to} {detail}
 * {cluster}; an empty from/to reads "(none)". */
#define EVENT_KINDS(X)                                                                             \
    X(NEW_LEADER, "new-leader", EV_INFO, "{node} is the leader of cluster {cluster}{detail}")      \
    X(LEADER_LOST, "leader-lost", EV_WARNING, "{node} stopped acting as leader{detail}")           \
    X(NODE_UP, "node-up", EV_INFO, "dhaf node {node} is UP")                                       \
    X(NODE_DOWN, "node-down", EV_WARNING, "dhaf node {node} is DOWN")                              \
    X(EP_DOWN, "ep-down", EV_WARNING, "entry point {from} of {service} is DOWN{detail}")           \
    X(EP_UP, "ep-up", EV_INFO, "entry point {from} of {service} is UP{detail}")                    \
    X(SERVICE_DOWN, "service-down", EV_CRITICAL,                                                   \
      "service {service} is DOWN: no entry point is healthy; nothing is switched until one "       \
      "recovers")                                                                                  \
    X(SERVICE_UP, "service-up", EV_INFO, "service {service} is UP again")                          \
    X(NO_QUORUM, "no-quorum", EV_WARNING,                                                          \
      "too few fresh voters for {service}{detail}: decisions are suspended")                       \
    X(QUORUM, "quorum", EV_INFO, "enough fresh voters for {service}{detail}: decisions resume")    \
    X(SWITCHOVER_PURGED, "switchover-purged", EV_INFO,                                             \
      "the switchover request of {service} was purged{detail}")                                    \
    X(SWITCHOVER_REQUESTED, "switchover-requested", EV_INFO,                                       \
      "a switchover of {service} to {to} was requested{detail}")                                   \
    X(NODE_DECOMMISSIONED, "node-decommissioned", EV_INFO,                                         \
      "dhaf node {node} was decommissioned{detail}")                                               \
    X(FAILOVER, "failover", EV_WARNING, "failover of {service} from {from} to {to}{detail}")       \
    X(SWITCHOVER, "switchover", EV_INFO, "switchover of {service} from {from} to {to}{detail}")    \
    X(SWITCHING, "switching", EV_INFO, "switching of {service} from {from} to {to}{detail}")       \
    X(WOULD_SWITCH, "would-switch", EV_WARNING,                                                    \
      "dhaf would switch {service} from {from} to {to}{detail}")                                   \
    X(EP_DRAINED, "ep-drained", EV_INFO, "entry point {to} of {service} was drained{detail}")      \
    X(EP_UNDRAINED, "ep-undrained", EV_INFO,                                                       \
      "entry point {to} of {service} is no longer drained{detail}")                                \
    X(PAUSED, "paused", EV_WARNING,                                                                \
      "decisions of cluster {cluster} are paused: shown, not carried out{detail}")                 \
    X(RESUMED, "resumed", EV_INFO, "decisions of cluster {cluster} are carried out again{detail}") \
    X(SWITCH_FAILED, "switch-failed", EV_WARNING,                                                  \
      "switch of {service} to {to} failed (will retry){detail}")                                   \
    X(SWITCH_INTERRUPTED, "switch-interrupted", EV_WARNING,                                        \
      "a previous leader stopped in the middle of a switch of {service} to {to}; traffic goes "    \
      "to {from}{detail}")                                                                         \
    X(CURRENT_CORRECTED, "current-corrected", EV_WARNING,                                          \
      "the switcher of {service} reports traffic on {to}, not on {from}; its answer wins")         \
    X(PROVIDER_UNREAD, "provider-unread", EV_WARNING,                                              \
      "cannot read where the switcher of {service} sends traffic; no decision for {service} "      \
      "until it can{detail}")                                                                      \
    X(PROVIDER_READ, "provider-read", EV_INFO,                                                     \
      "the switcher of {service} can be read again: traffic goes to {to}; decisions resume"        \
      "{detail}")                                                                                  \
    X(EVENTS_DROPPED, "events-dropped", EV_WARNING, "{detail}")                                    \
    X(ETCD_ALARM, "etcd-alarm", EV_CRITICAL,                                                       \
      "etcd refuses the writes of cluster {cluster}: {detail}; no decision is recorded or acted "  \
      "on until it accepts them again")                                                            \
    X(ETCD_ALARM_CLEARED, "etcd-alarm-cleared", EV_INFO,                                           \
      "etcd accepts the writes of cluster {cluster} again{detail}; decisions resume")              \
    X(EP_FLAPPING, "ep-flapping", EV_WARNING,                                                      \
      "entry point {from} of {service} flaps: held down, no traffic goes to it while another "     \
      "is healthy{detail}")                                                                        \
    X(EP_CALM, "ep-calm", EV_INFO,                                                                 \
      "entry point {from} of {service} no longer flaps: it may take traffic again{detail}")        \
    X(PROVIDER_DRIFT, "provider-drift", EV_WARNING,                                                \
      "the switcher of {service} sends traffic to {from}, not to the decided {to}{detail}")        \
    X(CONFIG_DRIFT, "config-drift", EV_WARNING,                                                    \
      "the nodes of cluster {cluster} run different configs{detail}")                              \
    X(CONFIG_DRIFT_CLEARED, "config-drift-cleared", EV_INFO,                                       \
      "the nodes of cluster {cluster} run the same config again{detail}")

enum event_kind {
#define EVENT_ENUM(id, name, level, tmpl) EVK_##id,
    EVENT_KINDS(EVENT_ENUM)
#undef EVENT_ENUM
        EVK_N,
    EVK_UNKNOWN = EVK_N /* a record written by a newer version */
};

struct event_kind_info {
    const char *name;
    enum event_level level;
    const char *tmpl;
};

/** The table row of kind (EVK_UNKNOWN: name "event", level info). */
const struct event_kind_info *event_kind_info(enum event_kind kind);

/** The name of the i-th kind of the table; NULL past the end (for config checks). */
const char *event_kind_name_at(size_t i);

/** The kind named name (a lookup in the table); EVK_UNKNOWN when none has that name. */
enum event_kind event_kind_named(const char *name);

/** "info", "warning", "critical". */
const char *event_level_name(enum event_level l);

/** The level named name (a table lookup); EV_INFO for NULL or an unknown name. */
enum event_level event_level_named(const char *name);

#define EVENT_MAX_REASONS 8

/* Who asked for a change through an API (the audit trail): every string borrowed. */
struct event_actor {
    const char *name;    /* the authenticated identity: "api-token", "cn:ops-1", "anonymous" */
    const char *role;    /* "admin" */
    const char *peer;    /* the caller's address */
    const char *comment; /* what the caller said of itself (requested_by); may be NULL */
};

/* An event as its emitter builds it; every string is borrowed for the call. */
struct event {
    enum event_kind kind;
    const char *service; /* NULL: a cluster event */
    const char *node;    /* the node it is about */
    const char *from;
    const char *to;
    const char *reasons[EVENT_MAX_REASONS];
    size_t n_reasons;
    const char *detail;              /* fills {detail}: counts, durations, an error */
    const struct event_actor *actor; /* a change asked through an API; NULL otherwise */
};

/** " by <name> from <peer> (comment: \"...\")" into buf, for an event's detail. */
void event_actor_text(const struct event_actor *a, char *buf, size_t len);

/** The message of ev (its kind's template filled in) into buf (cut to len). */
void event_render(const struct event *ev, const char *cluster, char *buf, size_t len);

/**
 * The record stored at events/<seq>: {seq, kind, level, service?, node?, from?, to?, reasons?,
 * message, at, by, epoch, actor?, role?, peer?, comment?} (by: the node that wrote it; actor:
 * who asked for the change). New reference; never NULL.
 */
json_t *event_record(const struct event *ev, uint64_t seq, const char *cluster, const char *by,
                     int64_t epoch, int64_t at_ms);

/** Logs one record (as made by event_record) as an `event=<kind> severity=...` line. */
void event_log_record(const json_t *rec);

#endif
