/* SPDX-License-Identifier: MIT */
/* TCP health checker: a connect (and optional exchange) per entry point. */
#ifndef DHAF_TCP_H
#define DHAF_TCP_H

/* Bytes of the peer's reply searched for `expect`. */
#define TCP_RECV_MAX 4096

struct tcp_config {
    int port;
    int receive_timeout; /* seconds for the exchange (send, expect) after connecting */
    int timeout;         /* seconds the connect may take */
    char *send;          /* sent once connected; NULL = nothing */
    char *expect;        /* must appear in what the peer sends; NULL = nothing read */
};

/** The status code (from the tcp status table) for a connect errno; exposed for tests. */
const char *tcp_errno_reason(int err);

#endif
