/* SPDX-License-Identifier: MIT */
/* The prober's liveness file: the main loop rewrites it after every round (and every plan
 * attempt), saying until when it counts as alive; `dhaf-prober --healthcheck` reads it. The
 * prober serves no port, so this is what a container HEALTHCHECK or a Kubernetes exec
 * liveness probe looks at (docs/deploy.md). */
#ifndef DHAF_PROBER_ALIVE_H
#define DHAF_PROBER_ALIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/** The file for prober name: $DHAF_ALIVE_DIR, else $TMPDIR, else /tmp, then
 *  "dhaf-prober-<name>.alive". Returns 0, or -1 when it does not fit in len. */
int alive_path(char *buf, size_t len, const char *name);

/** Writes the file (atomically: a temporary file renamed over it): alive until now_s +
 *  stale_s; reported says whether the last report reached a node. Returns 0 or -errno. */
int alive_touch(const char *path, int64_t now_s, int64_t stale_s, bool reported);

/** Reads the file at now_s and prints one line to out. Returns 0 when it is fresh, 1 when
 *  it is missing, unreadable, malformed or stale. */
int alive_check(const char *path, int64_t now_s, FILE *out);

#endif
