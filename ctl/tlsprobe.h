/* SPDX-License-Identifier: MIT */
/* dhafctl's TLS probe: after a failed call, one TLS handshake of its own with the node's port
 * says whether the node speaks TLS and, with a CA, whether its certificate is accepted, so the
 * error can say what to do (gRPC only says "Socket closed"). */
#ifndef DHAF_CTL_TLSPROBE_H
#define DHAF_CTL_TLSPROBE_H

#include <stdbool.h>

enum tlsprobe_result {
    TLSPROBE_UNKNOWN = 0, /* no answer: not connected, a unix: target, the deadline passed */
    TLSPROBE_PLAIN,       /* the port answered, but not with TLS */
    TLSPROBE_TLS,         /* the port speaks TLS (a ServerHello or a TLS alert came back) */
};

struct tlsprobe {
    enum tlsprobe_result result;
    bool verified;       /* TLS and verify: the certificate is accepted (chain and name) */
    char verify_msg[96]; /* TLS and verify, not accepted: OpenSSL's reason */
    bool name_mismatch;  /* not accepted because it does not name the target's host */
};

/**
 * Connects to target ("host:port", "[v6]:port", optionally "dns:", "ipv4:" or "ipv6:"
 * prefixed), offers a TLS handshake and reports what came back, within timeout_ms (the name
 * lookup excepted: the system resolver's own timeout applies). With verify, the node's
 * certificate is checked as gRPC would (against ca_file, borrowed, or the system's roots when
 * NULL, and for the target's host name or address). Never fails: what it cannot tell is
 * TLSPROBE_UNKNOWN.
 */
void tlsprobe_run(const char *target, bool verify, const char *ca_file, int timeout_ms,
                  struct tlsprobe *out);

#endif
