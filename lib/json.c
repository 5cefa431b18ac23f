/* SPDX-License-Identifier: MIT */
/* JSON helpers over jansson for the values dhaf keeps in etcd. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/json.h"

int dhaf_json_parse_object(const char *text, size_t len, const char *what, json_t **out,
                           struct dhaf_err *err)
{
    *out = NULL;
    if (len > DHAF_JSON_MAX)
        return dhaf_err_set(err, DHAF_ETOOBIG, "%s: %zu bytes of JSON; at most %d are accepted",
                            what, len, DHAF_JSON_MAX);
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return dhaf_err_set(err, DHAF_EINVAL, "%s: invalid JSON at line %d column %d: %s", what,
                            je.line, je.column, je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return dhaf_err_set(err, DHAF_EINVAL, "%s: expected a JSON object", what);
    }
    *out = j;
    return 0;
}

char *dhaf_json_dump(const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s) {
        fprintf(stderr, "dhaf: out of memory (JSON)\n");
        abort();
    }
    /* jansson's allocator is malloc, so the caller's free() is right. */
    return s;
}

const char *dhaf_json_str(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int dhaf_json_int(const json_t *obj, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return DHAF_EINVAL;
    *out = (int64_t)json_integer_value(v);
    return 0;
}
