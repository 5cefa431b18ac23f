/* SPDX-License-Identifier: MIT */
/* dhafctl's connection to a node: where (--endpoint, DHAF_ENDPOINT, the node's config, or
 * 127.0.0.1:8129), with which token and TLS, one call helper with a deadline, and how errors
 * and warnings are told (text on stderr, or JSON objects under -o json). */
#ifndef DHAF_CTL_CLIENT_H
#define DHAF_CTL_CLIENT_H

#include <stdbool.h>

#include "dhaf/rpc.h"

/* The node's default gRPC API port (dhaf.grpc-api.port in lib/config.c) and the endpoint
 * dhafctl talks to when it is given none. */
#define CTL_DEFAULT_PORT     "8129"
#define CTL_DEFAULT_ENDPOINT "127.0.0.1:" CTL_DEFAULT_PORT

enum out_format { OUT_TABLE, OUT_JSON };

struct ctl {
    const char *config;     /* --config FILE */
    const char *endpoint;   /* --endpoint HOST:PORT (wins over the config) */
    const char *token;      /* --token T (a copy: the argument itself is wiped) */
    const char *token_file; /* --token-file FILE */
    const char *ca_file;    /* --ca FILE: CA of the node's TLS certificate */
    bool use_tls;           /* --tls: TLS, the system's roots unless a CA is given */
    int timeout_ms;
    enum out_format out;
    bool color;
    bool watch;            /* --watch: JSON one object a line */
    bool errors_on_stdout; /* --watch on a terminal: errors are part of the redrawn screen */

    /* resolved by ctl_connect */
    char *target;
    char *bearer;     /* "Bearer <token>" */
    char *file_token; /* read from token_file */
    char *cfg_token, *cfg_host, *cfg_ca;
    int cfg_port;
    bool tls;
    bool default_target; /* no endpoint given: CTL_DEFAULT_ENDPOINT */
    struct dhaf_rpc_channel *ch;
};

/** Tells an error: "dhafctl: <message>" on stderr, or under -o json one object on stdout,
 *  {"error": {"code": code, "exit_code": exit_code, "message": ..., "endpoint": ...}}
 *  (endpoint once known). code is a gRPC status name ("NOT_FOUND", "UNAVAILABLE") or "USAGE".
 *  Returns exit_code. */
int ctl_fail(const struct ctl *c, int exit_code, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Tells a warning: "dhafctl: warning: <message>" on stderr, or under -o json
 *  {"warning": {"message": ...}} on stderr. */
void ctl_warn(const struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Works out the endpoint, token and TLS from flags, environment and config, and opens the
 *  channel. The endpoint comes from --endpoint, else DHAF_ENDPOINT, else the config, else
 *  CTL_DEFAULT_ENDPOINT. The token comes from --token, else --token-file, else DHAF_TOKEN,
 *  else the config. Returns 0, or 2 (usage, an unreadable token file) / 1 (failure) told by
 *  ctl_fail. */
int ctl_connect(struct ctl *c);

/** Opens the channel again (after a failure: gRPC's reconnect back-off starts over). Returns
 *  0, or 1 told by ctl_fail. */
int ctl_reconnect(struct ctl *c);

/** One unary call of dhaf.v1.Dhaf/<method>. Returns 0 with *resp, or 1 with the server's
 *  message told by ctl_fail (a plaintext call to a TLS node, or a failed handshake, is named
 *  as such after a TLS probe of the node's port). */
int ctl_call(struct ctl *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp);

void ctl_close(struct ctl *c);

#endif
