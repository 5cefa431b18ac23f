/* SPDX-License-Identifier: MIT */
/* The node's place in the cluster, and the only module that knows leadership: membership
 * (members/, alive/ on a session lease), the election with a fencing epoch, and terms.
 *
 * A term is opened when this node wins the election: it carries the epoch (the leader key's
 * create_revision), a fenced-transaction helper, and a closed flag. It is closed the moment
 * leadership is in doubt - a failed or late keep-alive, a lease that may have run out (judged
 * on this node's monotonic clock, so a frozen process knows on waking), the leader key gone or
 * replaced (seen in the view), a refused fenced write, or a stop. The leader's duties (decision
 * loop, notifier delivery, node tracking, history trimming, etcd compaction, recording etcd
 * alarms, announcing config drift) are started with the term and stopped with it; nothing asks
 * "am I leader" in a loop. */
#ifndef DHAF_NODE_CLUSTER_H
#define DHAF_NODE_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/cancel.h"
#include "dhaf/clock.h"
#include "dhaf/err.h"
#include "dhaf/etcd.h"
#include "snap.h"
#include "store.h"
#include "view.h"

struct event_actor; /* events.h */

enum cluster_role { ROLE_FOLLOWER = 0, ROLE_CANDIDATE = 1, ROLE_LEADER = 2 };

struct cluster;
struct term;

/* A duty: work the leader does while a term is open. */
struct duty {
    const char *name;
    /* Starts the duty for term t (a reference the duty may keep with term_hold until it
     * stops); returns its handle, NULL when nothing was started. */
    void *(*start)(struct term *t, void *ud);
    /* Stops it within deadline_ms (false: it ends alone and can no longer act). */
    bool (*stop)(void *handle, int deadline_ms);
    void *ud;
};

#define CLUSTER_MAX_DUTIES 8

struct etcdmon;

struct cluster_opts {
    struct store store;             /* copied; its instance outlives the cluster */
    const struct dhaf_clock *clock; /* borrowed */
    struct view *view;              /* borrowed: the leader key as etcd has it */
    struct snap_holder *snaps;      /* borrowed: timings are read from the current snapshot */
    struct etcdmon *etcdmon;        /* borrowed, may be NULL: whether etcd accepts writes */
};

/** The cluster module of the node named in the current snapshot. Nothing runs until
 *  cluster_start. */
struct cluster *cluster_new(const struct cluster_opts *o);

/** Adds a duty (copied); before cluster_start. Duties start in the order added and stop in
 *  the reverse order. */
void cluster_add_duty(struct cluster *c, const struct duty *d);

/** Starts the session and election threads. Returns 0 or a negative code. */
int cluster_start(struct cluster *c, struct dhaf_err *err);

/**
 * Graceful stop within about deadline_ms: closes the term, revokes the leader lease (the next
 * leader takes over at once) and the session lease (alive/<node> disappears), stops the duties
 * and joins the threads. Every etcd call is bounded, so a frozen etcd does not hold it up.
 * Returns true when every thread finished (then the cluster may be freed).
 */
bool cluster_stop(struct cluster *c, int deadline_ms);

/** Frees a stopped cluster. NULL is fine. */
void cluster_free(struct cluster *c);

/** A reload was published: the threads read the new timings, and every waker registered with
 *  cluster_watch_reload is kicked (duties re-read the snapshot). */
void cluster_reload(struct cluster *c);
void cluster_watch_reload(struct cluster *c, struct dhaf_waker *w, unsigned bits);
void cluster_unwatch_reload(struct cluster *c, struct dhaf_waker *w);

/**
 * One round of the session thread: opens the session (lease, members/<node>, alive/<node>) or
 * renews it when due. Returns the monotonic time of the next round. The thread loops on it;
 * unit tests call it in virtual time.
 */
int64_t cluster_session_step(struct cluster *c);

/**
 * One round of the election thread: campaigns when nobody leads; as leader renews the lease
 * when due and closes the term when leadership is in doubt, stopping the duties. Returns the
 * monotonic time of the next round (the thread is also woken by leader-key changes).
 */
int64_t cluster_election_step(struct cluster *c);

/** The role now (for status and logs). */
enum cluster_role cluster_role(struct cluster *c);

/** A reference to the open term (release with term_put), or NULL when this node does not
 *  lead. For status and tests: workers get their term from their duty's start. */
struct term *cluster_term(struct cluster *c);

/** Removes node from members/ with its vote; refused (DHAF_ECONFLICT) while the node is alive
 *  and DHAF_ENOTFOUND for a node that is not a member; a node-decommissioned event naming
 *  actor (borrowed) is written with it. */
int cluster_decommission(struct cluster *c, const char *node, const struct event_actor *actor,
                         struct dhaf_err *err);

/** The full etcd key of a path under the cluster prefix ("leader" -> /dhaf/<c>/leader).
 *  Returns buf, or NULL when the key does not fit in len (never a cut key). */
const char *cluster_key(const struct cluster *c, char *buf, size_t len, const char *path);

const struct store *cluster_store(const struct cluster *c);
const struct dhaf_clock *cluster_clock(const struct cluster *c);
struct view *cluster_view(const struct cluster *c);
struct snap_holder *cluster_snaps(const struct cluster *c);
/** The etcd monitor the node runs (NULL when none: tests, one-shot commands). */
struct etcdmon *cluster_etcdmon(const struct cluster *c);
/** This node's name, the cluster's name (borrowed). */
const char *cluster_node(const struct cluster *c);
const char *cluster_name(const struct cluster *c);

/** The node's session lease (0 while it has none): keys that must vanish with the node. */
int64_t cluster_session_lease(struct cluster *c);

/* ------------------------------------------------------------------ terms */

int64_t term_epoch(const struct term *t);
struct cluster *term_cluster(const struct term *t);

/** True while the term is open and its lease is surely valid now (this node's clock). */
bool term_valid(const struct term *t);

/** When the term opened (monotonic ms of the cluster's clock). */
int64_t term_opened_ms(const struct term *t);

/** How long the term may still act, in ms of this node's clock: 0 once it closed or its lease
 *  is no longer surely valid. A provider request is sent only with a deadline within it. */
int64_t term_left_ms(const struct term *t);

/** The term's cancel token: fired when it closes (provider requests end, children die). */
struct dhaf_cancel *term_cancel(struct term *t);

/**
 * Makes sure the lease is surely valid for need_ms more: when less is left, asks the election
 * thread for a renewal now and waits for it (at most wait_ms of real time). Returns what is
 * left then (term_left_ms), which may still be less than need_ms.
 */
int64_t term_renew(struct term *t, int64_t need_ms, int wait_ms);

/** True once the term closed (it never reopens). */
bool term_closed(const struct term *t);

/** Closes the term from any thread: nothing may act for it any more. The first reason wins. */
void term_close(struct term *t, const char *reason);

/** Kicks w with bits when the term closes (at once if it already has). w borrowed until
 *  term_unwatch. */
void term_watch(struct term *t, struct dhaf_waker *w, unsigned bits);
void term_unwatch(struct term *t, struct dhaf_waker *w);

void term_hold(struct term *t);
void term_put(struct term *t);

/**
 * Fenced transaction: runs `then` only while the term is valid and the leader key's
 * create_revision is still the epoch (plus the caller's compares). Returns 0 when applied;
 * DHAF_EFENCED when the term is over (it is closed then); DHAF_ECONFLICT when only the
 * caller's compares failed - then res holds the `otherwise` branch's reads: res->gets[0] is the
 * leader key, the caller's own GETs follow. Other errors as lib/etcd's txn.
 */
int term_txn(struct term *t, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
             const struct dhaf_etcd_op *then, size_t n_then, const struct dhaf_etcd_op *otherwise,
             size_t n_otherwise, struct dhaf_etcd_txn_result *res, struct dhaf_err *err);

/** The seq of the term's new-leader event, its first (0 when it could not be recorded). */
uint64_t term_first_seq(struct term *t);

/** The outbox's cache of the event counter for this term (value and mod revision). */
void term_counter(struct term *t, uint64_t *seq, int64_t *rev);
void term_set_counter(struct term *t, uint64_t seq, int64_t rev);

#endif
