/* SPDX-License-Identifier: MIT */
/* dhafctl's connection to a node: where (--endpoint, DHAF_ENDPOINT, or the node's config),
 * with which token and TLS, and one call helper with a deadline. */
#ifndef DHAF_CTL_CLIENT_H
#define DHAF_CTL_CLIENT_H

#include <stdbool.h>

#include "dhaf/rpc.h"

enum out_format { OUT_TABLE, OUT_JSON };

struct ctl {
    const char *config;     /* --config FILE */
    const char *endpoint;   /* --endpoint HOST:PORT (wins over the config) */
    const char *token;      /* --token T (a copy: the argument itself is wiped) */
    const char *token_file; /* --token-file FILE */
    const char *ca_file;    /* --ca FILE: CA of the node's TLS certificate */
    int timeout_ms;
    enum out_format out;
    bool color;

    /* resolved by ctl_connect */
    char *target;
    char *bearer;     /* "Bearer <token>" */
    char *file_token; /* read from token_file */
    char *cfg_token, *cfg_host, *cfg_ca;
    int cfg_port;
    bool tls;
    struct dhaf_rpc_channel *ch;
};

/** Works out the endpoint, token and TLS from flags, environment and config, and opens the
 *  channel. The token comes from --token, else --token-file, else DHAF_TOKEN, else the
 *  config. Returns 0, or 2 (usage, an unreadable token file) / 1 (failure) with a message
 *  printed on stderr. */
int ctl_connect(struct ctl *c);

/** One unary call of dhaf.v1.Dhaf/<method>. Returns 0 with *resp, or 1 with the server's
 *  message printed as "dhafctl: <message>". */
int ctl_call(struct ctl *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp);

void ctl_close(struct ctl *c);

#endif
