/* SPDX-License-Identifier: MIT */
/* Event delivery: on the leader, one thread per configured notifier reads the event history
 * in etcd (every event is recorded there first) and hands each new event to its notifier,
 * with retries and back-off, far from the decision path. A cursor per notifier in etcd
 * (ext/notifier/<type>/<name>/cursor) lets a new leader deliver what the old one had not. */
#ifndef DHAF_NODE_NOTIFY_H
#define DHAF_NODE_NOTIFY_H

#include <stdbool.h>

#include "cluster.h"
#include "dhaf/config.h"

struct notify;

/** Starts the delivery supervisor; cfg is borrowed until notify_reload. */
struct notify *notify_start(struct cluster *c, const struct dhaf_config *cfg, struct dhaf_err *err);

/** Switches to a reloaded config (waits until the old notifiers are gone). */
void notify_reload(struct notify *n, const struct dhaf_config *cfg);

/** Waits (after cluster_stop) and frees; false when a delivery is still running past
 *  deadline_ms (then nothing is freed: the process is exiting). NULL is fine. */
bool notify_stop(struct notify *n, int deadline_ms);

#endif
