/* SPDX-License-Identifier: MIT */
/* Plain ASCII tables for dhafctl (colour only on a terminal). */
#ifndef DHAF_CTL_TABLE_H
#define DHAF_CTL_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define TABLE_MAX_COLS 8

struct table {
    const char *title;
    size_t ncols;
    const char *heads[TABLE_MAX_COLS];
    char **cells; /* ncols per row, owned */
    size_t nrows, cap;
};

enum paint { PAINT_NONE, PAINT_GREEN, PAINT_RED, PAINT_YELLOW, PAINT_BOLD };

/** Starts a table with the column headings (NULL-terminated). */
void table_init(struct table *t, const char *title, ...);
/** Adds a row: ncols cells, each a (paint, text) pair; texts are copied. */
void table_row(struct table *t, ...);
/** Prints it (colours when color) and frees its cells. */
void table_print(struct table *t, FILE *out, bool color);

#endif
