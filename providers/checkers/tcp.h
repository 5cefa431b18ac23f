/* SPDX-License-Identifier: MIT */
/* TCP health checker: a connect (and optional exchange) per entry point. */
#ifndef DHAF_TCP_H
#define DHAF_TCP_H

struct tcp_config {
    int port;
    int receive_timeout;
};

#endif
