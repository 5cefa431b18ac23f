/* SPDX-License-Identifier: MIT */
/* The provider ABI: switchers, health checkers and notifiers, built in or loaded from a .so.
 *
 * A provider is one constant `struct dhaf_provider`: its ABI version, kind, type name (the YAML
 * `type:`), a declarative table of its config keys and the size of the struct they fill. The
 * framework parses and validates the section before the provider sees it. The operations of
 * each kind are added to this struct by the issues that build them; abi_version changes
 * whenever the layout does, and a plugin built for another version is refused.
 */
#ifndef DHAF_PROVIDER_H
#define DHAF_PROVIDER_H

#include <stddef.h>

#include "dhaf/cfgkeys.h"
#include "dhaf/config.h"

#define DHAF_PROVIDER_ABI_VERSION 1

struct dhaf_provider {
    unsigned abi_version; /* DHAF_PROVIDER_ABI_VERSION */
    enum dhaf_pkind kind;
    const char *type;               /* YAML `type:`, e.g. "cloudflare" */
    const char *summary;            /* one line for docs and --help */
    const struct dhaf_cfgkey *keys; /* config keys, terminated by {NULL} */
    size_t config_size;             /* size of the struct the keys' offsets point into */
    dhaf_cfg_finish_fn finish;      /* cross-key checks and derived defaults; may be NULL */
};

/* Key-table row helpers for provider files. */
#define DHAF_KEY_END                                                                               \
    {                                                                                              \
        NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL                                      \
    }

#endif
