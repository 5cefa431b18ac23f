/* SPDX-License-Identifier: MIT */
/* The REST gateway on dhaf.web-api (libmicrohttpd, thread per connection): /api/v1 (JSON,
 * HTTP status codes), the original dhaf's paths and envelope, /metrics, /healthz, /readyz.
 * It calls the same operations as the gRPC API (service.h). Routes and replies: docs/api.md. */
#ifndef DHAF_NODE_REST_H
#define DHAF_NODE_REST_H

#include "cluster.h"
#include "dhaf/config.h"
#include "dhaf/err.h"

struct rest;

/**
 * Binds cfg->web_api (host, port; TLS when tls.cert-file is set, client certificates when
 * tls.client-ca-file is) and starts serving. c and cfg are borrowed; cfg until rest_reload
 * replaces it. Returns NULL with err when the address cannot be bound (in use, unknown host)
 * or the TLS files cannot be read; nothing is left running then.
 */
struct rest *rest_start(struct cluster *c, const struct dhaf_config *cfg, struct dhaf_err *err);

/**
 * Switches to a reloaded config (services, api-token); waits for requests in progress that
 * use the old one, so the caller may free the old config on return. Address and TLS changes
 * need a restart (a warning says so).
 */
void rest_reload(struct rest *r, const struct dhaf_config *cfg);

/** Stops listening, waits for the requests in progress (each bounded by the etcd deadline)
 *  and frees. NULL is fine. */
void rest_stop(struct rest *r);

#endif
