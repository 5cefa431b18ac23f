/* SPDX-License-Identifier: MIT */
/* The etcd monitor: whether etcd accepts the cluster's writes, on every node. It lists etcd's
 * alarms (NOSPACE, CORRUPT) every few seconds - at once when a write is refused for lack of
 * space - and hears the outcome of every write the node makes (it observes the node's store):
 * writes that keep failing with no alarm raised make an unwritable etcd too. What it finds is
 * served from memory to /readyz, /metrics and the status APIs and logged once when it changes.
 * Its duty, on the leader, records each such episode as ONE etcd-alarm event and one
 * etcd-alarm-cleared event: both once etcd accepts writes again if it refused them meanwhile
 * (the events live in etcd, whence notifiers deliver them). Every node watches, not only the
 * leader: the leader could not tell the others (etcd refuses the writes that would), and every
 * node's /readyz must say why it is not ready. */
#ifndef DHAF_NODE_ETCDMON_H
#define DHAF_NODE_ETCDMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "dhaf/clock.h"
#include "dhaf/etcd.h"
#include "store.h"

struct view;

#define ETCDMON_CHECK_MS      5000  /* alarms are listed this often */
#define ETCDMON_UNWRITABLE_MS 10000 /* no write accepted this long (some tried) is an outage */

struct etcdmon_opts {
    struct store store;             /* copied: what the monitor asks and observes */
    const struct dhaf_clock *clock; /* borrowed */
    struct view *view;              /* borrowed, may be NULL: where recorded events are seen */
    const char *prefix;             /* "/dhaf/<cluster>/" (copied): where its probe key is */
    int check_ms;                   /* 0: ETCDMON_CHECK_MS */
    int unwritable_ms;              /* 0: ETCDMON_UNWRITABLE_MS */
};

struct etcdmon;

/** A monitor (nothing runs until etcdmon_start). Free with etcdmon_free. */
struct etcdmon *etcdmon_new(const struct etcdmon_opts *o);

/** Frees a stopped (or never started) monitor. NULL is fine. */
void etcdmon_free(struct etcdmon *m);

/** The store for every part of the node: opts.store, with each write's outcome reported to m.
 *  Valid while m lives. */
struct store etcdmon_store(struct etcdmon *m);

/** Starts the monitor's thread (looping on etcdmon_step). Returns 0 or DHAF_EINTERNAL. */
int etcdmon_start(struct etcdmon *m, struct dhaf_err *err);

/** Stops the thread within about deadline_ms; false when it is still in a call (then m must not
 *  be freed: the process is exiting). */
bool etcdmon_stop(struct etcdmon *m, int deadline_ms);

/**
 * One round: lists the alarms (and the member's status) when due or asked for, judges whether
 * etcd accepts writes, and on a change logs one line and kicks the subscribers. Returns the
 * monotonic time of the next round. The thread loops on it; unit tests call it in virtual time.
 */
int64_t etcdmon_step(struct etcdmon *m);

/* What the monitor knows, copied out for a reader. */
struct etcdmon_state {
    bool writable;                   /* etcd accepts writes, as far as this node knows */
    struct dhaf_etcd_alarms alarms;  /* the alarms raised (last listing) */
    bool unwritable;                 /* writes kept failing, no alarm raised */
    char problem[512];               /* what is wrong and what to do; "" while writable */
    int64_t since_wall_ms;           /* when the problem began (Unix ms); 0 while writable */
    int64_t checked_ms;              /* monotonic ms of the last alarm listing (0: none yet) */
    int64_t db_size, db_size_in_use; /* of the member asked last (0: unknown) */
    int64_t revision;                /* etcd's revision then */
};

/** A copy of what m knows now. */
void etcdmon_state(struct etcdmon *m, struct etcdmon_state *out);

/** True while one alarm of type (an enum dhaf_etcd_alarm_type) is raised in s. */
bool etcdmon_alarm_raised(const struct etcdmon_state *s, int type);

/** Kicks w with bits whenever the state changes (writable or not, the alarms). w borrowed until
 *  etcdmon_unsubscribe. */
void etcdmon_subscribe(struct etcdmon *m, struct dhaf_waker *w, unsigned bits);
void etcdmon_unsubscribe(struct etcdmon *m, struct dhaf_waker *w);

/**
 * The leader's part, for term t: records what is due - an etcd-alarm event when a problem
 * began (tried once while etcd refuses writes), then the etcd-alarm-cleared event when it
 * ended, with the etcd-alarm one first if it could not be written before. An episode another
 * leader already recorded (seen in the view's event history) is not recorded again. Returns
 * 1 when something is still due (try again later), 0 when nothing is, or an error (the
 * outbox's: nothing was recorded).
 */
int etcdmon_record(struct etcdmon *m, struct term *t, struct dhaf_err *err);

/** The duty that calls etcdmon_record whenever the monitor or the event history changes (a
 *  struct duty for cluster_add_duty; m borrowed, must outlive the cluster's duties). */
struct duty etcdmon_duty(struct etcdmon *m);

#endif
