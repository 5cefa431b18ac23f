/* SPDX-License-Identifier: MIT */
/* Exec switcher: config keys (running the programs arrives with the switchers issue). */
#include <stddef.h>

#include "dhaf/provider.h"
#include "exec.h"

#define EX(field) offsetof(struct exec_sw_config, field)

/* clang-format off */
static const struct dhaf_cfgkey exec_sw_keys[] = {
    {"init", DHAF_CFG_PATH, EX(init), true, NULL, 0, 0, NULL, NULL, NULL,
     "Program run at start; prints the name of the current entry point."},
    {"switch", DHAF_CFG_PATH, EX(switch_path), true, NULL, 0, 0, NULL, NULL, NULL,
     "Program run to switch; argv: entry point name, entry point ip; exit 0 = switched."},
    {"timeout", DHAF_CFG_INT, EX(timeout), false, "30", 1, 86400, NULL, NULL, NULL,
     "Seconds before a program is killed (with its process group)."},
    DHAF_KEY_END,
};
/* clang-format on */

const struct dhaf_provider dhaf_switcher_exec = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_SWITCHER,
    .type = "exec",
    .summary = "Switches entry points by running an executable (e.g. a Python script).",
    .keys = exec_sw_keys,
    .config_size = sizeof(struct exec_sw_config),
};
