/* SPDX-License-Identifier: MIT */
/* The table of provider types the node knows: the built-ins, then the providers of the plugins
 * loaded so far (dhaf/plugins.h). Lookups are safe from any thread once loading is done. */
#ifndef DHAF_REGISTRY_H
#define DHAF_REGISTRY_H

#include "dhaf/config.h"
#include "dhaf/provider.h"

/** The provider of kind and type (built-in or plugin); NULL when unknown. */
const struct dhaf_provider *dhaf_registry_find(enum dhaf_pkind kind, const char *type);

/** The i-th provider of the registry (any kind): built-ins first, then plugins in load order;
 *  NULL past the end. */
const struct dhaf_provider *dhaf_registry_at(size_t i);

/** A catalog for dhaf_config_load backed by the registry (static; never freed). Its type_at
 *  lists plugin types too, so "known types" messages name them. */
const struct dhaf_cfg_catalog *dhaf_registry_catalog(void);

#endif
