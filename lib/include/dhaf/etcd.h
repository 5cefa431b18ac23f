/* SPDX-License-Identifier: MIT */
/* etcd v3 client over lib/rpc (gRPC): KV, transactions, leases with keep-alive streams,
 * watches that resume, authentication, maintenance (compaction, alarms, status), and failover
 * between several endpoints.
 *
 * Retry rules when an endpoint fails (UNAVAILABLE or deadline):
 *  - reads, lease keep-alives and revokes are retried on the next endpoint;
 *  - a transaction guarded by compares is retried too: it cannot apply twice, because the
 *    first application would make its compares fail; if an earlier attempt may have been
 *    applied and the retry's compares fail, the result is DHAF_EUNKNOWN_OUTCOME;
 *  - an unguarded write (put, delete, unguarded txn, lease grant) is retried only when the
 *    request certainly never left (the connection failed); otherwise DHAF_EUNKNOWN_OUTCOME.
 * Every attempt has a deadline (timeout_ms), so a call takes at most endpoints x timeout_ms.
 * All functions are thread-safe. */
#ifndef DHAF_ETCD_H
#define DHAF_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/err.h"

struct dhaf_etcd_opts {
    const char *const *endpoints; /* "host:port", at least one; borrowed during _new */
    size_t n_endpoints;
    bool tls;              /* https:// endpoints */
    const char *ca_file;   /* optional: CA for etcd's certificate */
    const char *cert_file; /* optional: client certificate */
    const char *key_file;
    const char *username; /* optional: etcd authentication */
    const char *password;
    int timeout_ms; /* per attempt; 0 = 2000 */
};

struct dhaf_etcd;

/**
 * Creates a client; contacts no server yet (the first call connects and, with a username,
 * authenticates). Returns NULL with err on bad options. Free with dhaf_etcd_free.
 */
struct dhaf_etcd *dhaf_etcd_new(const struct dhaf_etcd_opts *opts, struct dhaf_err *err);
/** Frees the client. Watches and keep-alives made from it must be freed first. NULL is fine. */
void dhaf_etcd_free(struct dhaf_etcd *e);
/** The endpoint the client currently prefers (borrowed). */
const char *dhaf_etcd_endpoint(const struct dhaf_etcd *e);
/** Calls that no endpoint answered, since the process started (all clients; for /metrics). */
uint64_t dhaf_etcd_error_count(void);

/* One key-value pair. value is NUL-terminated (value_len excludes the NUL). */
struct dhaf_kv {
    char *key;
    char *value;
    size_t value_len;
    int64_t create_rev;
    int64_t mod_rev;
    int64_t version;
    int64_t lease;
};

struct dhaf_kvs {
    struct dhaf_kv *kvs;
    size_t n;
    int64_t revision; /* store revision of the read */
    int64_t count;    /* keys in the range (may exceed n with a limit) */
    bool more;
};

/** Frees what kvs holds and zeroes it. */
void dhaf_kvs_release(struct dhaf_kvs *kvs);

/** Reads one key; out->n is 0 when it does not exist. */
int dhaf_etcd_get(struct dhaf_etcd *e, const char *key, struct dhaf_kvs *out, struct dhaf_err *err);
/** Reads every key under prefix in key order (limit 0 = all). */
int dhaf_etcd_get_prefix(struct dhaf_etcd *e, const char *prefix, int64_t limit,
                         struct dhaf_kvs *out, struct dhaf_err *err);
/** Reads the keys from `from` (inclusive) to the end of prefix, in key order (limit 0 = all);
 *  from must start with prefix (DHAF_EINVAL otherwise). */
int dhaf_etcd_get_from(struct dhaf_etcd *e, const char *from, const char *prefix, int64_t limit,
                       struct dhaf_kvs *out, struct dhaf_err *err);
/** The mod revision of the key under prefix written last (0 when there is none): one cheap
 *  read (keys only, sorted by mod revision, limit 1). */
int dhaf_etcd_latest_mod(struct dhaf_etcd *e, const char *prefix, int64_t *mod_rev,
                         struct dhaf_err *err);
/** Counts the keys under prefix. */
int dhaf_etcd_count_prefix(struct dhaf_etcd *e, const char *prefix, int64_t *count,
                           struct dhaf_err *err);
/** Writes key = value (len bytes; SIZE_MAX = strlen) attached to lease (0 = none). *revision
 *  (may be NULL) gets the store revision of the write. */
int dhaf_etcd_put(struct dhaf_etcd *e, const char *key, const char *value, size_t len,
                  int64_t lease, int64_t *revision, struct dhaf_err *err);
/** Deletes key, or every key under it when prefix. *deleted (may be NULL) gets the count. */
int dhaf_etcd_delete(struct dhaf_etcd *e, const char *key, bool prefix, int64_t *deleted,
                     struct dhaf_err *err);

enum dhaf_etcd_target {
    DHAF_ETCD_VALUE,
    DHAF_ETCD_CREATE_REV,
    DHAF_ETCD_MOD_REV,
    DHAF_ETCD_VERSION,
    DHAF_ETCD_LEASE,
};
enum dhaf_etcd_result { DHAF_ETCD_EQ, DHAF_ETCD_NE, DHAF_ETCD_GT, DHAF_ETCD_LT };

/* One compare of a transaction: target(key) result (num | value). */
struct dhaf_etcd_cmp {
    const char *key;
    enum dhaf_etcd_target target;
    enum dhaf_etcd_result result;
    int64_t num;       /* for revisions, version and lease */
    const char *value; /* for DHAF_ETCD_VALUE */
};

enum dhaf_etcd_optype { DHAF_ETCD_OP_GET, DHAF_ETCD_OP_PUT, DHAF_ETCD_OP_DELETE };

struct dhaf_etcd_op {
    enum dhaf_etcd_optype type;
    const char *key;
    const char *value; /* PUT */
    size_t value_len;  /* PUT: 0 = strlen(value) */
    int64_t lease;     /* PUT */
    bool prefix;       /* GET, DELETE */
};

struct dhaf_etcd_txn_result {
    bool succeeded; /* the compares held: the `then` branch ran */
    int64_t revision;
    struct dhaf_kvs *gets; /* one per GET op of the branch that ran, in order */
    size_t n_gets;
};

/** Frees what r holds. */
void dhaf_etcd_txn_result_release(struct dhaf_etcd_txn_result *r);

/**
 * Transaction: if every compare holds, runs `then`, else `otherwise`. With no compares it is
 * an unguarded write (see the retry rules above).
 */
int dhaf_etcd_txn(struct dhaf_etcd *e, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                  const struct dhaf_etcd_op *then, size_t n_then,
                  const struct dhaf_etcd_op *otherwise, size_t n_otherwise,
                  struct dhaf_etcd_txn_result *res, struct dhaf_err *err);

/** Grants a lease of ttl seconds; *id gets its ID (and *granted, may be NULL, the TTL). */
int dhaf_etcd_lease_grant(struct dhaf_etcd *e, int64_t ttl, int64_t *id, int64_t *granted,
                          struct dhaf_err *err);
/** Revokes a lease (its keys are deleted). Revoking an unknown lease is DHAF_ENOTFOUND. */
int dhaf_etcd_lease_revoke(struct dhaf_etcd *e, int64_t id, struct dhaf_err *err);
/** The same within timeout_ms in all (every endpoint tried included): for a bounded stop. */
int dhaf_etcd_lease_revoke_within(struct dhaf_etcd *e, int64_t id, int timeout_ms,
                                  struct dhaf_err *err);
/** Seconds left on a lease; DHAF_ENOTFOUND when it expired or never existed. */
int dhaf_etcd_lease_ttl(struct dhaf_etcd *e, int64_t id, int64_t *remaining, struct dhaf_err *err);

struct dhaf_etcd_keepalive;

/** A keep-alive channel for one lease: one long-lived LeaseKeepAlive stream, reopened on
 *  another endpoint when it breaks. Free with dhaf_etcd_keepalive_free. */
struct dhaf_etcd_keepalive *dhaf_etcd_keepalive_new(struct dhaf_etcd *e, int64_t lease);
/**
 * Renews the lease once and waits at most timeout_ms for the answer. Returns 0 with *ttl (the
 * lease's TTL again), DHAF_ENOTFOUND when the lease has expired, or an error when no endpoint
 * answered in time (the caller must then assume the lease may expire).
 */
int dhaf_etcd_keepalive_once(struct dhaf_etcd_keepalive *ka, int64_t *ttl, int timeout_ms,
                             struct dhaf_err *err);
void dhaf_etcd_keepalive_free(struct dhaf_etcd_keepalive *ka);

/* ------------------------------------------------------------------ maintenance */

/**
 * Compacts etcd's history at revision (etcd's Compact, not physical: it returns once etcd has
 * scheduled it): every key keeps its latest version, older versions below revision go, and no
 * read or watch can start below revision any more. Retried like a read (compacting twice at
 * one revision changes nothing). Returns 0; DHAF_ECOMPACTED when revision is at or below the
 * last compaction (nothing to do); DHAF_EINVAL when it is a future revision.
 */
int dhaf_etcd_compact(struct dhaf_etcd *e, int64_t revision, struct dhaf_err *err);

/* etcd's alarm types (etcdserverpb.AlarmType); a newer etcd may send other values. */
enum dhaf_etcd_alarm_type {
    DHAF_ETCD_ALARM_NONE = 0,
    DHAF_ETCD_ALARM_NOSPACE = 1, /* the database exceeded its quota: etcd refuses writes */
    DHAF_ETCD_ALARM_CORRUPT = 2, /* a member's data diverged: etcd refuses reads and writes */
};

/** "NONE", "NOSPACE", "CORRUPT", or "UNKNOWN" for another value. */
const char *dhaf_etcd_alarm_name(int type);

/* One raised alarm: which member raised it, and its type (an enum dhaf_etcd_alarm_type). */
struct dhaf_etcd_alarm {
    uint64_t member;
    int type;
};

#define DHAF_ETCD_MAX_ALARMS 16

struct dhaf_etcd_alarms {
    struct dhaf_etcd_alarm v[DHAF_ETCD_MAX_ALARMS]; /* in etcd's order; more are dropped */
    size_t n;
};

/** The alarms raised in the cluster (Maintenance/Alarm GET); out->n 0 when there is none. */
int dhaf_etcd_alarm_list(struct dhaf_etcd *e, struct dhaf_etcd_alarms *out, struct dhaf_err *err);

/**
 * Raises (active) or disarms an alarm of member (Maintenance/Alarm ACTIVATE / DEACTIVATE), as
 * `etcdctl alarm disarm` does. dhaf itself never calls it: it is for tests, which raise NOSPACE
 * without filling a disk.
 */
int dhaf_etcd_alarm_set(struct dhaf_etcd *e, uint64_t member, int type, bool active,
                        struct dhaf_err *err);

/* What one member says of itself (Maintenance/Status). */
struct dhaf_etcd_status {
    char version[32];       /* etcd's version, "3.4.23" */
    uint64_t member;        /* the answering member's ID */
    uint64_t leader;        /* the raft leader's member ID (0: none) */
    int64_t revision;       /* the store revision */
    int64_t db_size;        /* bytes of the backend database file (what the quota counts) */
    int64_t db_size_in_use; /* bytes in use in it (the rest is freed by a defragmentation) */
    uint64_t raft_index, raft_term;
    char errors[256]; /* the member's own list, "; "-joined (cut): "memberID:N alarm:NOSPACE" for
                       * each raised alarm, "etcdserver: no leader"; "" when none */
};

/** The status of the member the client currently uses (or the next that answers). */
int dhaf_etcd_status(struct dhaf_etcd *e, struct dhaf_etcd_status *out, struct dhaf_err *err);

/** True when err is etcd's refusal of a write because its database is full (the NOSPACE
 *  alarm: gRPC RESOURCE_EXHAUSTED "etcdserver: mvcc: database space exceeded"). */
bool dhaf_etcd_err_nospace(const struct dhaf_err *err);

enum dhaf_etcd_evtype { DHAF_ETCD_EV_PUT, DHAF_ETCD_EV_DELETE };

struct dhaf_etcd_event {
    enum dhaf_etcd_evtype type;
    struct dhaf_kv kv; /* for a delete: the key and mod_rev (the deletion's revision) */
};

struct dhaf_etcd_events {
    struct dhaf_etcd_event *v;
    size_t n;
    int64_t revision; /* the store revision the response was sent at */
};

/** Frees what ev holds and zeroes it. */
void dhaf_etcd_events_release(struct dhaf_etcd_events *ev);

struct dhaf_etcd_watch;

/**
 * Watches key (or every key under it when prefix) from start_rev (0 = from now). The watch
 * resumes by itself after a broken stream or an endpoint failure, from the revision after the
 * last event it delivered, so no event is lost or repeated. It is served only by a member
 * that has a raft leader (etcd's "hasleader" metadata): a member cut off from its peers ends
 * it, and it resumes on another endpoint, instead of going quiet while it answers progress
 * requests from its stale store. Free with dhaf_etcd_watch_free.
 */
struct dhaf_etcd_watch *dhaf_etcd_watch_new(struct dhaf_etcd *e, const char *key, bool prefix,
                                            int64_t start_rev, struct dhaf_err *err);
/**
 * Waits at most timeout_ms for events. Returns 0 with out filled (in revision order),
 * DHAF_ETIMEOUT when none came, or DHAF_ECOMPACTED when the revision to resume from was
 * compacted away (err says which revision is the oldest left; re-read state and watch anew).
 */
int dhaf_etcd_watch_next(struct dhaf_etcd_watch *w, struct dhaf_etcd_events *out, int timeout_ms,
                         struct dhaf_err *err);
/** The revision the watch will resume from. */
int64_t dhaf_etcd_watch_next_revision(const struct dhaf_etcd_watch *w);
/** Monotonic ms of the last events or progress notice etcd delivered on the watch (a creation
 *  or a cancellation does not count: only a watch that works is "heard"); 0 before the first.
 *  Not thread-safe with watch_next: ask its thread. */
int64_t dhaf_etcd_watch_heard(const struct dhaf_etcd_watch *w);
/**
 * Asks etcd for a progress notice on the watch's stream (WatchProgressRequest): its answer,
 * read by the next watch_next, moves dhaf_etcd_watch_heard, so a quiet watch can tell "no
 * change" from "no etcd". Returns DHAF_EUNAVAILABLE when the stream is down. Call it from the
 * thread that calls watch_next.
 */
int dhaf_etcd_watch_request_progress(struct dhaf_etcd_watch *w, int timeout_ms,
                                     struct dhaf_err *err);
void dhaf_etcd_watch_free(struct dhaf_etcd_watch *w);

#endif
