/* SPDX-License-Identifier: MIT */
/* The REST gateway on dhaf.web-api (libmicrohttpd, thread per connection): /api/v1 (JSON,
 * HTTP status codes), the original dhaf's paths and envelope, /metrics, /healthz, /readyz.
 * It calls the same operations as the gRPC API (service.h), reads from the node's view.
 * Routes and replies: docs/api.md. */
#ifndef DHAF_NODE_REST_H
#define DHAF_NODE_REST_H

#include <stdbool.h>

#include "cluster.h"
#include "dhaf/err.h"

struct rest;

/**
 * Binds dhaf.web-api of the current config snapshot (host, port; TLS when tls.cert-file is
 * set, client certificates when tls.client-ca-file is) and starts serving. Each request runs
 * with the snapshot current when it arrives. Returns NULL with err when the address cannot be
 * bound (in use, unknown host) or the TLS files cannot be read; nothing is left running then.
 */
struct rest *rest_start(struct cluster *c, struct dhaf_err *err);

/** A reload was published: address and TLS changes need a restart (a warning says so). */
void rest_reload(struct rest *r);

/** Stops listening and frees, waiting at most deadline_ms for requests in progress; false
 *  when one is still waiting (then nothing is freed: the process is exiting). NULL is fine. */
bool rest_stop(struct rest *r, int deadline_ms);

#endif
