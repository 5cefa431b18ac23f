/* SPDX-License-Identifier: MIT */
/* TCP health checker: config keys (the checks arrive with the probing issue). */
#include <stddef.h>

#include "dhaf/provider.h"
#include "tcp.h"

#define TCP(field) offsetof(struct tcp_config, field)

/* clang-format off */
static const struct dhaf_cfgkey tcp_keys[] = {
    {"port", DHAF_CFG_INT, TCP(port), true, NULL, 1, 65535, NULL, NULL, NULL,
     "Port to connect to."},
    {"receive-timeout", DHAF_CFG_INT, TCP(receive_timeout), false, "5", 1, 86400, NULL, NULL,
     "receiveTimeout", "Seconds to wait (the seed's README spells it receiveTimeout)."},
    DHAF_KEY_END,
};
/* clang-format on */

const struct dhaf_provider dhaf_checker_tcp = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_CHECKER,
    .type = "tcp",
    .summary = "Checks that a TCP port accepts connections.",
    .keys = tcp_keys,
    .config_size = sizeof(struct tcp_config),
};
