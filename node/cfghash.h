/* SPDX-License-Identifier: MIT */
/* The config hash: a canonical digest of the parts of a node's config that every node of a
 * cluster must share (decision timings and thresholds, services with their entry points,
 * switchers and checkers, probers, notifiers), so that nodes can tell when their configs
 * differ. Computed from the parsed config - key order, whitespace, comments, defaults written
 * out or left implied all give the same hash - and never from the file bytes. Per-node parts
 * (node name, API addresses and TLS files, tokens of the node's own APIs, etcd endpoints and
 * credentials, log settings, probe, dry-run) are left out. Secrets of the shared parts
 * (prober tokens, provider credentials) go into the digest only: the record shows no value. */
#ifndef DHAF_NODE_CFGHASH_H
#define DHAF_NODE_CFGHASH_H

#include <jansson.h>
#include <stdint.h>

#include "dhaf/config.h"

#define CFGHASH_HEX   65 /* SHA-256 in hex, with its NUL */
#define CFGHASH_SHORT 12 /* hex digits shown to operators */

/* The parts hashed one by one too, so that a status can say which part differs. */
enum cfghash_part { CFGP_DECISION, CFGP_SERVICES, CFGP_PROBERS, CFGP_NOTIFIERS, CFGP_N };

/** "decision", "services", "probers", "notifiers". */
const char *cfghash_part_name(enum cfghash_part p);

struct cfghash {
    char hash[CFGHASH_HEX];                /* SHA-256 of the whole canonical document */
    char parts[CFGP_N][CFGHASH_SHORT + 1]; /* short SHA-256 of each part */
};

/**
 * The canonical document of cfg's shared parts (a new reference): objects are compared with
 * sorted keys, services and probers sorted by name, notifiers by their canonical text; entry
 * points keep their order (it is their priority). For tests and for dhaf-node's debugging.
 */
json_t *cfghash_document(const struct dhaf_config *cfg);

/** Fills *out with cfg's hashes. Returns 0, or DHAF_EINTERNAL when OpenSSL fails. */
int cfghash_compute(const struct dhaf_config *cfg, struct cfghash *out);

/** The record a node publishes at config/<node>: {hash, generation, parts: {decision, ...}}.
 *  Caller frees. */
char *cfghash_record(const struct cfghash *h, uint64_t generation);

#endif
