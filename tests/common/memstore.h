/* SPDX-License-Identifier: MIT */
/* An in-memory etcd behind node/store.h's interface, on an injected clock, for unit tests in
 * virtual time: MVCC revisions, txns with compares, leases, watches with history, compaction,
 * alarms, and failure injection (errors, unknown outcomes, an etcd that is down). */
#ifndef DHAF_TESTS_MEMSTORE_H
#define DHAF_TESTS_MEMSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/clock.h"
#include "store.h"

/*
 * Semantics follow etcd 3.4 for what node/ uses:
 *  - The revision starts at 1. A txn that changes something takes the next revision for all
 *    its writes; a txn that changes nothing (reads, failed compares, deleting a missing key)
 *    takes none. Each put sets mod_rev, version + 1, the lease, and create_rev when new.
 *  - A put with a lease that does not exist fails the txn (DHAF_ENOTFOUND, nothing applied); a
 *    branch that puts a key twice or puts a key it also deletes is DHAF_EINVAL (etcd's
 *    "duplicate key given in txn request").
 *  - Leases expire by the clock (expiry = grant or renewal + ttl s). Every call first revokes
 *    the expired leases, in order of expiry, each in one revision of its own (when it holds
 *    keys), deleting its keys in key order, as etcd's lessor does.
 *  - Watches never block (virtual time): watch_next returns at once what is pending, or
 *    DHAF_ETIMEOUT. memstore_compact(m, rev) is etcd's compaction at rev: no watch can start
 *    below rev (watch_new fails with DHAF_ECOMPACTED). As in etcd, a watch that is connected
 *    when the store compacts still gets every event; one whose stream broke (the store was
 *    down, memstore_set_down) resumes from its next revision when the store is back, and gets
 *    DHAF_ECOMPACTED from watch_next if that revision was compacted meanwhile. watch_heard is
 *    the clock time of the watch's last delivery or its last watch_progress (answered at
 *    once), 0 before either, as lib/etcd's. No call waits: every timeout_ms is ignored.
 *  - The store's compact op is etcd's Compact: DHAF_ECOMPACTED at or below the last compaction,
 *    DHAF_EINVAL above the current revision ("required revision is a future revision").
 *  - Alarms are raised and disarmed by the test (memstore_set_alarm), as etcd keeps them: while
 *    NOSPACE is raised, a txn with a put in either branch and a lease grant fail with
 *    DHAF_ETOOBIG "etcdserver: mvcc: database space exceeded" (what lib/etcd returns for gRPC
 *    RESOURCE_EXHAUSTED); reads, deletes, revokes, keep-alives and compaction go on. While
 *    CORRUPT is raised, reads and writes fail with DHAF_EPROTO "etcdserver: corrupt cluster".
 *    status reports the revision, a database size of the bytes the keys and history hold, and
 *    the raised alarms in its errors as etcd's does ("memberID:N alarm:NOSPACE ").
 * All results are freed with lib/etcd's own functions (dhaf_kvs_release,
 * dhaf_etcd_txn_result_release, dhaf_etcd_events_release). All functions are thread-safe; one
 * mutex guards the store, held only for memory work.
 */

struct memstore;

/** The kinds of call that are counted and can be made to fail. */
enum memstore_op {
    MS_GET,       /* get and get_from */
    MS_TXN,       /* txn */
    MS_GRANT,     /* lease_grant */
    MS_REVOKE,    /* lease_revoke */
    MS_KEEPALIVE, /* keepalive_once */
    MS_WATCH_NEW, /* watch_new */
    MS_COMPACT,   /* compact */
    MS_ALARMS,    /* alarms */
    MS_STATUS,    /* status */
    MS_N_OPS
};

/**
 * A new empty store (revision 1) reading time from clock (borrowed; must outlive the store).
 * Free with memstore_free.
 */
struct memstore *memstore_new(const struct dhaf_clock *clock);

/** Frees the store. Its watches and keep-alives must be freed first. NULL is fine. */
void memstore_free(struct memstore *m);

/** The store's table for node/ code (m is borrowed and must outlive every use of it). */
struct store memstore_store(struct memstore *m);

/**
 * Makes the next count calls of kind op fail with code (a negative DHAF_E* code) and the
 * message "memstore: injected failure". With applied, the call takes effect first (a txn is
 * applied, a lease granted or revoked, a keep-alive renews) and then fails: an unknown outcome.
 * count 0 cancels what is left of an earlier injection.
 */
void memstore_fail(struct memstore *m, enum memstore_op op, int count, int code, bool applied);

/**
 * While down, every call fails with DHAF_EUNAVAILABLE ("memstore: etcd is down"), watch_next
 * returns DHAF_ETIMEOUT without delivering and watch_progress fails; leases still expire by the
 * clock. Going down breaks the watches' streams: when the store is up again each resumes from
 * its next revision (nothing is lost), or fails with DHAF_ECOMPACTED if that was compacted. Down
 * wins over memstore_fail (an injection is not used up while down).
 */
/** While mute, every watch delivers nothing (watch_next: DHAF_ETIMEOUT) although progress
 *  requests are answered and writes go on: a watch stuck in a way it cannot tell. */
void memstore_mute_watches(struct memstore *m, bool mute);

void memstore_set_down(struct memstore *m, bool down);

/** How many calls of kind op were made (failed ones included). */
uint64_t memstore_calls(struct memstore *m, enum memstore_op op);

/** The current store revision. */
int64_t memstore_revision(struct memstore *m);

/** The revision of the last compaction (0: none). */
int64_t memstore_compact_revision(struct memstore *m);

/** Raises (active) or disarms alarm type (an enum dhaf_etcd_alarm_type) of member, as etcd's
 *  Maintenance/Alarm ACTIVATE / DEACTIVATE. */
void memstore_set_alarm(struct memstore *m, uint64_t member, int type, bool active);

/**
 * Compacts at rev (clamped to the current revision): drops the events of revisions < rev that no
 * connected watch still has to get; watches can no longer start or resume below rev.
 */
void memstore_compact(struct memstore *m, int64_t rev);

/*
 * Direct access for tests: these bypass memstore_fail and memstore_set_down, are not counted,
 * and write like a txn of one op (a new revision, watch events).
 */

/**
 * Puts key = value (both borrowed) with lease (0 = none). Returns 0, or DHAF_ENOTFOUND (and
 * writes nothing) when the lease does not exist.
 */
int memstore_put(struct memstore *m, const char *key, const char *value, int64_t lease);

/** Deletes key (nothing happens when it does not exist). */
void memstore_delete(struct memstore *m, const char *key);

/** A copy of key's value (caller frees), or NULL when the key does not exist. */
char *memstore_value(struct memstore *m, const char *key);

/** The number of keys under prefix ("" = all keys). */
size_t memstore_count_prefix(struct memstore *m, const char *prefix);

#endif
