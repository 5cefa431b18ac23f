/* SPDX-License-Identifier: MIT */
/* Allocation wrappers: the one place where out-of-memory aborts the process. */
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"

static void oom(size_t n)
{
    fprintf(stderr, "dhaf: out of memory (allocating %zu bytes)\n", n);
    abort();
}

void *dhaf_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *dhaf_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *dhaf_xreallocarray(void *p, size_t n, size_t size)
{
    if (size && n > (size_t)-1 / size)
        oom((size_t)-1);
    size_t bytes = n * size;
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q)
        oom(n * size);
    return q;
}

char *dhaf_xstrdup(const char *s)
{
    return dhaf_xstrndup(s, strlen(s));
}

char *dhaf_xstrndup(const char *s, size_t n)
{
    char *p = dhaf_xmalloc(n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *dhaf_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    char *p = dhaf_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void dhaf_malloc_setup(void)
{
    if (!getenv("MALLOC_ARENA_MAX"))
        mallopt(M_ARENA_MAX, 2);
}

void dhaf_malloc_trim_every(int64_t *next_ms, int64_t now_ms, int64_t period_ms)
{
    if (now_ms < *next_ms)
        return;
    malloc_trim(0);
    *next_ms = now_ms + period_ms;
}
