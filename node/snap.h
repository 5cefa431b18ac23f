/* SPDX-License-Identifier: MIT */
/* Config snapshots: the running config is an immutable, refcounted snapshot; SIGHUP publishes
 * a new one atomically, and every unit of work (a request, a decision round, a probe round)
 * takes a reference to the snapshot it started with, so nothing waits for a reload and no
 * part ever reads a freed config. */
#ifndef DHAF_NODE_SNAP_H
#define DHAF_NODE_SNAP_H

#include <stdint.h>

#include "dhaf/config.h"

struct snap {
    struct dhaf_config cfg; /* immutable once published */
    uint64_t generation;    /* 1, 2, ... in publication order */
};

struct snap_holder;

/** A holder publishing cfg (taken: the holder releases it with dhaf_config_release when its
 *  last reference goes; cfg is emptied). */
struct snap_holder *snap_holder_new(struct dhaf_config *cfg);

/** Frees the holder and drops its reference to the current snapshot. NULL is fine. */
void snap_holder_free(struct snap_holder *h);

/** A reference to the current snapshot (never NULL); give it back with snap_put. */
struct snap *snap_get(struct snap_holder *h);

/** Another reference to s (which the caller holds); give it back with snap_put. */
struct snap *snap_hold(struct snap *s);

/** Drops a reference taken with snap_get (the last one frees the snapshot). NULL is fine. */
void snap_put(struct snap *s);

/** Publishes cfg (taken, emptied) as the current snapshot; returns its generation. The old one
 *  lives on until its last user lets go. */
uint64_t snap_publish(struct snap_holder *h, struct dhaf_config *cfg);

#endif
