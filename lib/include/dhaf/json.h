/* SPDX-License-Identifier: MIT */
/* JSON values as stored in etcd (jansson), with size-capped parsing and clear errors. */
#ifndef DHAF_JSON_H
#define DHAF_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dhaf/err.h"

#define DHAF_JSON_MAX (1024 * 1024)

/**
 * Parses text (len bytes, need not be NUL-terminated) into *out (caller frees with
 * json_decref). Refuses more than DHAF_JSON_MAX bytes and anything that is not a JSON
 * object. what names the value in errors ("etcd key /dhaf/c/leader").
 */
int dhaf_json_parse_object(const char *text, size_t len, const char *what, json_t **out,
                           struct dhaf_err *err);

/** Compact text of j, keys in insertion order. Caller frees. Never NULL. */
char *dhaf_json_dump(const json_t *j);

/** The string member key of obj, or NULL when absent or not a string. Borrowed. */
const char *dhaf_json_str(const json_t *obj, const char *key);

/** The integer member key of obj into *out; returns 0, or DHAF_EINVAL when absent or not an
 *  integer. */
int dhaf_json_int(const json_t *obj, const char *key, int64_t *out);

#endif
