/* SPDX-License-Identifier: MIT */
/* Loads a config written by a test (YAML in memory) with every registered provider; on
 * failure prints the YAML and the loader's report on stderr, for the test's log. */
#ifndef DHAF_TEST_CONFIG_LOAD_H
#define DHAF_TEST_CONFIG_LOAD_H

#include "dhaf/config.h"

/* name: the file name errors show; dir: where relative paths in the config resolve.
 * Returns what dhaf_config_load_mem returns (0 = cfg filled; release it as usual). */
int test_config_load(const char *yaml, const char *name, const char *dir, struct dhaf_config *cfg);

#endif
