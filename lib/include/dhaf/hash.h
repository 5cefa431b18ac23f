/* SPDX-License-Identifier: MIT */
/* 64-bit FNV-1a: stable across machines and runs (offsets, digests, plan generations). */
#ifndef DHAF_HASH_H
#define DHAF_HASH_H

#include <stddef.h>
#include <stdint.h>

#define DHAF_FNV_OFFSET 0xcbf29ce484222325ULL
#define DHAF_FNV_PRIME  0x100000001b3ULL

/** Folds the n bytes at p into h (start with DHAF_FNV_OFFSET). */
static inline uint64_t dhaf_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * DHAF_FNV_PRIME;
    return h;
}

/** Folds the string s and its terminating NUL (a separator between strings) into h. */
static inline uint64_t dhaf_fnv1a_str(uint64_t h, const char *s)
{
    const unsigned char *c = (const unsigned char *)s;
    do
        h = (h ^ *c) * DHAF_FNV_PRIME;
    while (*c++);
    return h;
}

#endif
