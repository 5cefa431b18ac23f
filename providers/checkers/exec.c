/* SPDX-License-Identifier: MIT */
/* Exec health checker: config keys (running the program arrives with the probing issue). */
#include <stddef.h>

#include "dhaf/provider.h"
#include "exec.h"

#define EX(field) offsetof(struct exec_hc_config, field)

/* clang-format off */
static const struct dhaf_cfgkey exec_hc_keys[] = {
    {"init", DHAF_CFG_PATH, EX(init), true, NULL, 0, 0, NULL, NULL, NULL,
     "Program run once at start; exit 0 = ready."},
    {"check", DHAF_CFG_PATH, EX(check), true, NULL, 0, 0, NULL, NULL, NULL,
     "Program run per entry point; argv: entry point name, ip; exit 0 = healthy."},
    {"timeout", DHAF_CFG_INT, EX(timeout), false, "5", 1, 86400, NULL, NULL, NULL,
     "Seconds before the program is killed (with its process group)."},
    DHAF_KEY_END,
};
/* clang-format on */

const struct dhaf_provider dhaf_checker_exec = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_CHECKER,
    .type = "exec",
    .summary = "Checks the health of a service by running an executable.",
    .keys = exec_hc_keys,
    .config_size = sizeof(struct exec_hc_config),
};
