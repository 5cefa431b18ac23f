/* SPDX-License-Identifier: MIT */
/* A deliberately broken plugin for the tests: a complete health checker that claims ABI
 * version 999, as one built against a future (or very old) dhaf would. dhaf must refuse it at
 * start ("ABI version 999, this dhaf speaks 1") and never call anything in it. */
#include <stddef.h>

#include "dhaf/provider.h"

struct bad_config {
    int unused;
};

static const struct dhaf_cfgkey bad_keys[] = {
    {"unused", DHAF_CFG_INT, offsetof(struct bad_config, unused), false, "0", 0, 1, NULL, NULL,
     NULL, "Nothing."},
    DHAF_KEY_END,
};

static const struct dhaf_reason bad_reasons[] = {{"ok", "never used"}, {NULL, NULL}};

static void bad_check(struct dhaf_check_target *targets, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        targets[i].result->healthy = true;
        targets[i].result->reason = bad_reasons[0].code;
    }
}

static const struct dhaf_provider example_bad_abi = {
    .abi_version = 999,
    .kind = DHAF_PKIND_CHECKER,
    .type = "example-bad-abi",
    .summary = "Test plugin built for another ABI version: dhaf refuses it.",
    .keys = bad_keys,
    .config_size = sizeof(struct bad_config),
    .check = bad_check,
    .reasons = bad_reasons,
};

const struct dhaf_provider *const dhaf_provider_entry[] = {&example_bad_abi, NULL};
