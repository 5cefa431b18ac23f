/* SPDX-License-Identifier: MIT */
/* ASCII tables: widths from the visible text, colour codes added at print time. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "table.h"

void table_init(struct table *t, const char *title, ...)
{
    memset(t, 0, sizeof(*t));
    t->title = title;
    va_list ap;
    va_start(ap, title);
    const char *h;
    while (t->ncols < TABLE_MAX_COLS && (h = va_arg(ap, const char *)) != NULL)
        t->heads[t->ncols++] = h;
    va_end(ap);
}

/* Each cell is stored as one byte of paint followed by the text. */
void table_row(struct table *t, ...)
{
    DHAF_GROW(t->cells, (t->nrows + 1) * t->ncols, t->cap);
    va_list ap;
    va_start(ap, t);
    for (size_t c = 0; c < t->ncols; c++) {
        int paint = va_arg(ap, int);
        const char *text = va_arg(ap, const char *);
        t->cells[t->nrows * t->ncols + c] = dhaf_xasprintf("%c%s", 'A' + paint, text ? text : "");
    }
    va_end(ap);
    t->nrows++;
}

static size_t visible(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) /* count UTF-8 characters */
            n++;
    return n;
}

static void rule(FILE *out, const size_t *w, size_t ncols)
{
    fputc('+', out);
    for (size_t c = 0; c < ncols; c++) {
        for (size_t i = 0; i < w[c] + 2; i++)
            fputc('-', out);
        fputc('+', out);
    }
    fputc('\n', out);
}

void table_print(struct table *t, FILE *out, bool color)
{
    static const char *const codes[] = {"", "\033[32m", "\033[31m", "\033[33m", "\033[1m"};
    size_t w[TABLE_MAX_COLS];
    for (size_t c = 0; c < t->ncols; c++) {
        w[c] = visible(t->heads[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t v = visible(t->cells[r * t->ncols + c] + 1);
            if (v > w[c])
                w[c] = v;
        }
    }
    if (t->title)
        fprintf(out, "%s\n", t->title);
    rule(out, w, t->ncols);
    fputc('|', out);
    for (size_t c = 0; c < t->ncols; c++)
        fprintf(out, " %s%-*s |", t->heads[c], (int)(w[c] - visible(t->heads[c])), "");
    fputc('\n', out);
    rule(out, w, t->ncols);
    for (size_t r = 0; r < t->nrows; r++) {
        fputc('|', out);
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            int paint = cell[0] - 'A';
            const char *text = cell + 1;
            bool on = color && paint > 0 && paint < 5;
            fprintf(out, " %s%s%s%*s |", on ? codes[paint] : "", text, on ? "\033[0m" : "",
                    (int)(w[c] - visible(text)), "");
        }
        fputc('\n', out);
    }
    if (t->nrows)
        rule(out, w, t->ncols);
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->cap = 0;
}
