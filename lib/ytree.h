/* SPDX-License-Identifier: MIT */
/* A YAML document as a small tree with 1-based line/column marks, loaded with hard limits
 * (file size, node count after alias expansion, depth) so no input can exhaust the process. */
#ifndef DHAF_YTREE_H
#define DHAF_YTREE_H

#include <stdbool.h>
#include <stddef.h>

#include "dhaf/cfgkeys.h"

enum ynode_kind { YNODE_SCALAR, YNODE_MAP, YNODE_SEQ };

struct ynode {
    enum ynode_kind kind;
    int line, col;
    char *str; /* scalar text, NUL-terminated */
    size_t len;
    bool plain;           /* unquoted scalar (may mean null, a bool or a number) */
    struct ynode **items; /* map: key, value, key, value, ...; seq: elements */
    size_t n, cap;
};

#define YTREE_MAX_FILE  (1024 * 1024) /* bytes */
#define YTREE_MAX_NODES 100000        /* after expanding aliases */
#define YTREE_MAX_DEPTH 64

/**
 * Loads the YAML file at path. On success returns 0 and *root (caller frees with ynode_free;
 * an empty document gives an empty mapping). On failure returns DHAF_ECONFIG with the reason
 * added to rep (file missing, a directory, too large, not UTF-8, YAML syntax, alias bomb, ...).
 */
int ytree_load_file(const char *path, struct ynode **root, struct dhaf_cfg_report *rep);

/** Same, from memory (text need not be NUL-terminated). */
int ytree_load_mem(const char *text, size_t len, struct ynode **root, struct dhaf_cfg_report *rep);

/** Frees a node and everything below it. NULL is fine. */
void ynode_free(struct ynode *n);

/** Value of key in map (NULL when absent or map is not a mapping); *keynode gets the key. */
const struct ynode *ynode_get(const struct ynode *map, const char *key,
                              const struct ynode **keynode);

/** True for an absent value, an empty plain scalar, `~` and `null`. */
bool ynode_is_null(const struct ynode *n);

/** "a mapping", "a list", "a string" ...: for error messages. */
const char *ynode_kind_name(const struct ynode *n);

#endif
