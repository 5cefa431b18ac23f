/* SPDX-License-Identifier: MIT */
/* The table of provider types the node knows: built-ins now, plugins once loaded. */
#ifndef DHAF_REGISTRY_H
#define DHAF_REGISTRY_H

#include "dhaf/config.h"
#include "dhaf/provider.h"

/** The provider of kind and type; NULL when unknown. */
const struct dhaf_provider *dhaf_registry_find(enum dhaf_pkind kind, const char *type);

/** The i-th provider of the registry (any kind); NULL past the end. */
const struct dhaf_provider *dhaf_registry_at(size_t i);

/** A catalog for dhaf_config_load backed by the registry (static; never freed). */
const struct dhaf_cfg_catalog *dhaf_registry_catalog(void);

#endif
