/* SPDX-License-Identifier: MIT */
/* The plugin loader: provider types from .so files of an extensions directory, checked against
 * the ABI of dhaf/provider.h and registered after the built-ins (dhaf/registry.h). */
#ifndef DHAF_PLUGINS_H
#define DHAF_PLUGINS_H

#include <stddef.h>

#include "dhaf/err.h"
#include "dhaf/provider.h"

/**
 * Loads every `*.so` regular file of dir (sorted by name; hidden files skipped) with dlopen
 * (RTLD_NOW | RTLD_LOCAL), reads its DHAF_PLUGIN_ENTRY_SYMBOL array and checks each provider
 * of it: ABI version, kind, type name, key table, config size and the operations of its kind,
 * and that its type is neither built in nor brought by another plugin of the same kind.
 * dir is borrowed; a dir that does not exist holds no plugins (returns 0). The directory and
 * each .so must belong to root or this process's user and not be writable by group or others
 * (a plugin runs with the daemon's rights): otherwise nothing is loaded.
 *
 * All or nothing: returns 0 with every provider registered, or a negative code with the first
 * refusal in err ("plugin /x/y.so: ABI version 999, this dhaf speaks 1") and nothing of this
 * call registered. May be called again for another dir. Not thread-safe: call at start-up,
 * before any thread looks up the registry.
 */
int dhaf_plugins_load(const char *dir, struct dhaf_err *err);

/**
 * Forgets every loaded plugin and closes its .so. Only when nothing uses the plugins any more:
 * no config section (its keys point into the .so), no instance, no thread in a call.
 */
void dhaf_plugins_unload(void);

/** How many providers the loaded plugins brought. */
size_t dhaf_plugins_count(void);

/** The i-th provider of the loaded plugins (load order); NULL past the end. */
const struct dhaf_provider *dhaf_plugins_at(size_t i);

/** The file the i-th provider came from (borrowed, valid until unload); NULL past the end. */
const char *dhaf_plugins_file(size_t i);

#endif
