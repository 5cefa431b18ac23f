/* SPDX-License-Identifier: MIT */
/* A dhaf node's core (config snapshot, view, cluster) on the in-memory store in virtual time,
 * with no thread: the unit tests of terms, decisions and delivery step it by hand. */
#ifndef DHAF_TESTS_NODE_FIXTURE_H
#define DHAF_TESTS_NODE_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "cluster.h"
#include "memstore.h"
#include "snap.h"
#include "vclock.h"
#include "view.h"

struct fx_node {
    struct snap_holder *snaps;
    struct view *view;
    struct cluster *c;
};

/*
 * The config every fixture node loads: cluster "fx", heartbeat 1 s, session TTL 5 s, tact 1 s,
 * leader-key TTL 3 s, one service "web" with entry points primary (127.0.0.61) and backup
 * (127.0.0.62), an exec switcher running /bin/true (FX_YAML_SW: the switcher given), and
 * `extra` appended (notifiers, ...). Must be a string literal.
 */
#define FX_YAML_SW(node, switcher, extra)                                                          \
    "dhaf:\n  cluster-name: fx\n  node-name: " node "\n  heartbeat-interval: 1\n"                  \
    "  healthy-node-status-ttl: 5\n  tact-interval: 1\n  probe: false\n"                           \
    "etcd:\n  hosts: 127.0.0.1:1\n  leader-key-ttl: 3\n"                                           \
    "services:\n  - name: web\n    domain: site.test\n    entry-points:\n"                         \
    "      - {name: primary, ip: 127.0.0.61}\n      - {name: backup, ip: 127.0.0.62}\n"            \
    "    switcher: " switcher "\n"                                                                 \
    "    health-checker: {type: tcp, port: 80}\n" extra
#define FX_YAML(node, extra)                                                                       \
    FX_YAML_SW(node, "{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}", extra)

/** The FX_YAML config of node with the switcher given (YAML flow text) and extra appended.
 *  Caller frees. */
char *fx_yaml(const char *node, const char *switcher, const char *extra);

/** Loads yaml into *cfg (release with dhaf_config_release); fails the test with the report
 *  when it is invalid. */
void fx_load(const char *yaml, struct dhaf_config *cfg);

/** Loads yaml (fails the test with the report when invalid) into a snapshot holder. */
struct snap_holder *fx_snaps(const char *yaml);

/** Sets up n on the store ms and clock vc with the config yaml; duties (n_duties of them) are
 *  added to its cluster. Fails the test when the config is invalid. */
void fx_node_init(struct fx_node *n, struct memstore *ms, struct vclock *vc, const char *yaml,
                  const struct duty *duties, size_t n_duties);

/** Closes what n holds (its term included, without etcd calls that matter). */
void fx_node_release(struct fx_node *n);

/** One step of everything, as the threads would: the view, the session, the election, the
 *  view again (so that it sees what the step wrote). */
void fx_step(struct fx_node *n);

/** A vote of voter on web: each of primary and backup 'h' (healthy) or 'u'; a third character
 *  '!' marks the vote impaired. Caller frees. */
char *fx_vote(const char *voter, const char *ops);

/** Writes fx_vote(voter, ops) at /dhaf/fx/votes/<voter> (no lease). */
void fx_put_vote(struct memstore *ms, const char *voter, const char *ops);
/* The same on a lease (a vote lives while its lease does), and leases for it. */
void fx_put_vote_on(struct memstore *ms, const char *voter, const char *ops, int64_t lease);
int64_t fx_lease(struct memstore *ms, int ttl_s);
void fx_renew(struct memstore *ms, int64_t lease);

/** The number of event records (events/<seq>) of kind in the store; kind NULL counts all. */
size_t fx_count_events(struct memstore *ms, const char *kind);
/** The record (JSON text) of the last event of kind in ms, or NULL when none. Caller frees. */
char *fx_last_event(struct memstore *ms, const char *kind);

#endif
