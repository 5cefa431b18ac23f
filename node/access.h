/* SPDX-License-Identifier: MIT */
/* Who a caller of the APIs is, and what it may do (DESIGN "Secure by default"): one rule for
 * gRPC and REST. Roles: admin (dhaf.api-token, a CN of dhaf.admin-cns), read-only
 * (dhaf.read-token, a CN of dhaf.read-cns) and prober (a prober's token or certificate: the
 * Prober service only). An API without any credential configured is open: every caller is
 * admin (loopback only, or dhaf.insecure-api). */
#ifndef DHAF_NODE_ACCESS_H
#define DHAF_NODE_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "dhaf/config.h"
#include "dhaf/err.h"

enum access_role { ACCESS_NONE = 0, ACCESS_PROBER, ACCESS_READ, ACCESS_ADMIN };

/* What the caller showed. Borrowed. */
struct access_creds {
    const char *token; /* the bearer token, NULL when none was sent */
    const char *cn;    /* the common name of a client certificate the API verified, or NULL */
    bool client_ca;    /* the API asks for client certificates (its client-ca-file is set) */
};

/* Who the caller is, for the decision and the audit trail. */
struct access_who {
    enum access_role role;
    bool by_token; /* a token said so: something a web page cannot send by itself */
    char name[96]; /* "api-token", "read-token", "cn:ops-1", "prober:p1", "anonymous" */
};

/**
 * Finds the caller's role. Every configured token is compared, in constant time each, so the
 * time says nothing about which one matched. A token that matches none is refused when the
 * config has an API token, and ignored otherwise (the API asks for none). Returns 0, or DHAF_EAUTH
 * with err saying what is missing or wrong (a wrong token, a certificate whose CN has no role, no
 * credential where one is needed); who->role is ACCESS_NONE then.
 */
int access_identify(const struct dhaf_config *cfg, const struct access_creds *cr,
                    struct access_who *who, struct dhaf_err *err);

/** Whether who may do what needs role need (ACCESS_READ or ACCESS_ADMIN); what names the
 *  operation in the message. Returns 0 or DHAF_EDENIED with err. */
int access_allow(const struct access_who *who, enum access_role need, const char *what,
                 struct dhaf_err *err);

/** "admin", "read-only", "prober", "none". */
const char *access_role_name(enum access_role r);

/** The caller's address without transport prefix or port ("ipv4:127.0.0.1:5555" and
 *  "ipv6:[::1]:80" give "127.0.0.1" and "::1"; "127.0.0.1" stays). "?" when empty. */
void access_peer_addr(const char *peer, char *buf, size_t len);

#endif
