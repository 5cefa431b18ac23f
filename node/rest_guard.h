/* SPDX-License-Identifier: MIT */
/* The REST gateway's connection guard: a deadline for each request to arrive (TLS handshake,
 * head and body; and for an idle keep-alive connection to send its next one), and, when more
 * than a soft limit of connections are open, the oldest one not being answered is cut, so
 * slow or idle clients cannot hold every connection (/healthz stays reachable). Cutting is a
 * shutdown() of the socket: the server's own thread then sees the end and closes it. */
#ifndef DHAF_NODE_REST_GUARD_H
#define DHAF_NODE_REST_GUARD_H

#include <stdbool.h>
#include <stddef.h>

struct rest_guard;
struct rest_conn;

/**
 * A guard with a reaper thread: connections beyond soft_limit evict the oldest idle one; an
 * idle connection (not being answered) is cut deadline_ms after it opened or after its last
 * reply. NULL when the thread cannot start. Free with rest_guard_free.
 */
struct rest_guard *rest_guard_new(size_t soft_limit, int deadline_ms);

/** Stops the reaper and frees g and its remaining entries (call after the server stopped). */
void rest_guard_free(struct rest_guard *g);

/**
 * A connection opened on fd, from peer (numeric, copied, for the log). Returns its entry
 * (owned by g, freed by rest_guard_remove). May cut the oldest idle connection.
 */
struct rest_conn *rest_guard_add(struct rest_guard *g, int fd, const char *peer);

/**
 * busy: a reply is being made for c (no deadline); !busy: the reply is done, c's deadline
 * for its next request starts now. c may be NULL (nothing happens).
 */
void rest_guard_busy(struct rest_guard *g, struct rest_conn *c, bool busy);

/** c is closing: forgets it (before its socket is closed). c may be NULL. */
void rest_guard_remove(struct rest_guard *g, struct rest_conn *c);

/** How many connections were cut: by the deadline, and to make room. */
void rest_guard_counts(struct rest_guard *g, unsigned long *deadline, unsigned long *evicted);

#endif
