/* SPDX-License-Identifier: MIT */
/* Allocation wrappers: out-of-memory aborts here and nowhere else. */
#ifndef DHAF_ALLOC_H
#define DHAF_ALLOC_H

#include <stdint.h>
#include <stdlib.h>

/** malloc that never returns NULL (aborts with a message on out-of-memory). Caller frees. */
void *dhaf_xmalloc(size_t n);
/** calloc that never returns NULL; also aborts on n * size overflow. Caller frees. */
void *dhaf_xcalloc(size_t n, size_t size);
/** realloc that never returns NULL; also aborts on n * size overflow. */
void *dhaf_xreallocarray(void *p, size_t n, size_t size);
/** strdup that never returns NULL; s must not be NULL. Caller frees. */
char *dhaf_xstrdup(const char *s);
/** strndup that never returns NULL. Caller frees. */
char *dhaf_xstrndup(const char *s, size_t n);
/** asprintf that never returns NULL. Caller frees. */
char *dhaf_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * For a daemon's main, before it starts threads: at most 2 malloc arenas (unless the operator
 * set MALLOC_ARENA_MAX). glibc gives each new thread an arena of its own, up to 8 per core;
 * dhaf's short-lived probe and call threads then leave freed memory spread over them, which
 * made a node's RSS at 1,000 services vary from 51 to 71 MiB between identical followers.
 */
void dhaf_malloc_setup(void);

/**
 * Gives the heap's free pages back to the OS (malloc_trim) when the monotonic time now_ms has
 * reached *next_ms, then sets *next_ms = now_ms + period_ms. For a daemon's periodic loop:
 * start-up and a reload free megabytes in the middle of the heap, which glibc keeps mapped.
 */
void dhaf_malloc_trim_every(int64_t *next_ms, int64_t now_ms, int64_t period_ms);

/* Frees p and sets it to NULL, so no dangling pointer stays reachable. */
#define DHAF_FREE(p)                                                                               \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

/* Grows array `arr` (element type from *arr) so that index `need - 1` fits; cap is a size_t. */
#define DHAF_GROW(arr, need, cap)                                                                  \
    do {                                                                                           \
        if ((need) > (cap)) {                                                                      \
            size_t dhaf_grow_n = (cap) ? (cap)*2 : 8;                                              \
            while (dhaf_grow_n < (need))                                                           \
                dhaf_grow_n *= 2;                                                                  \
            (arr) = dhaf_xreallocarray((arr), dhaf_grow_n, sizeof(*(arr)));                        \
            (cap) = dhaf_grow_n;                                                                   \
        }                                                                                          \
    } while (0)

#endif
