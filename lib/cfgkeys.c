/* SPDX-License-Identifier: MIT */
/* The config-key engine: parses and validates one YAML section against a key table. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg_internal.h"
#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/valid.h"

#define SECRET_FILE_MAX (64 * 1024)

/* ------------------------------------------------------------------ report */

void dhaf_cfg_report_init(struct dhaf_cfg_report *rep, const char *file)
{
    memset(rep, 0, sizeof(*rep));
    rep->file = dhaf_xstrdup(file ? file : "<config>");
}

static void free_list(struct dhaf_cfg_error *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].path);
        free(v[i].msg);
    }
    free(v);
}

void dhaf_cfg_report_release(struct dhaf_cfg_report *rep)
{
    free_list(rep->errs, rep->n_errs);
    free_list(rep->warns, rep->n_warns);
    DHAF_FREE(rep->file);
    memset(rep, 0, sizeof(*rep));
}

static void add(struct dhaf_cfg_error **v, size_t *n, size_t *cap, int line, int col,
                const char *path, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    DHAF_GROW(*v, *n + 1, *cap);
    struct dhaf_cfg_error *e = &(*v)[(*n)++];
    e->line = line;
    e->col = col;
    e->path = dhaf_xstrdup(path ? path : "");
    e->msg = dhaf_xstrdup(msg);
}

void dhaf_cfg_report_error(struct dhaf_cfg_report *rep, int line, int col, const char *path,
                           const char *fmt, ...)
{
    if (rep->n_errs >= DHAF_CFG_MAX_ERRORS) {
        rep->dropped++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    add(&rep->errs, &rep->n_errs, &rep->cap_errs, line, col, path, fmt, ap);
    va_end(ap);
}

void dhaf_cfg_report_warn(struct dhaf_cfg_report *rep, int line, int col, const char *path,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add(&rep->warns, &rep->n_warns, &rep->cap_warns, line, col, path, fmt, ap);
    va_end(ap);
}

static void print_one(FILE *out, const char *file, const char *kind, const struct dhaf_cfg_error *e)
{
    if (e->line > 0)
        fprintf(out, "%s:%d:%d: %s: ", file, e->line, e->col, kind);
    else
        fprintf(out, "%s: %s: ", file, kind);
    if (e->path[0])
        fprintf(out, "%s: ", e->path);
    fprintf(out, "%s\n", e->msg);
}

static int by_position(const void *a, const void *b)
{
    const struct dhaf_cfg_error *x = *(const struct dhaf_cfg_error *const *)a;
    const struct dhaf_cfg_error *y = *(const struct dhaf_cfg_error *const *)b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x < y ? -1 : (x > y); /* stable: keep discovery order */
}

/* Prints a list in file order. */
static void print_sorted(FILE *out, const char *file, const char *kind,
                         const struct dhaf_cfg_error *v, size_t n)
{
    const struct dhaf_cfg_error **order = dhaf_xcalloc(n ? n : 1, sizeof(*order));
    for (size_t i = 0; i < n; i++)
        order[i] = &v[i];
    qsort(order, n, sizeof(*order), by_position);
    for (size_t i = 0; i < n; i++)
        print_one(out, file, kind, order[i]);
    free(order);
}

void dhaf_cfg_report_print(const struct dhaf_cfg_report *rep, FILE *out)
{
    print_sorted(out, rep->file, "warning", rep->warns, rep->n_warns);
    print_sorted(out, rep->file, "error", rep->errs, rep->n_errs);
    if (rep->dropped)
        fprintf(out, "%s: %zu more errors not shown\n", rep->file, rep->dropped);
}

/* ------------------------------------------------------------------ helpers */

char *cfg_join(const char *path, const char *key)
{
    if (!path || !path[0])
        return dhaf_xstrdup(key);
    return dhaf_xasprintf("%s.%s", path, key);
}

char *cfg_index(const char *path, size_t i)
{
    return dhaf_xasprintf("%s[%zu]", path, i);
}

void cfg_error_at(struct dhaf_cfg_report *rep, const struct ynode *n, const char *path,
                  const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dhaf_cfg_report_error(rep, n ? n->line : 0, n ? n->col : 0, path, "%s", msg);
}

const char *cfg_show(const struct ynode *n, char *buf, size_t len)
{
    if (!n || n->kind != YNODE_SCALAR) {
        snprintf(buf, len, "%s", ynode_kind_name(n));
        return buf;
    }
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < n->len && o + 6 < len && i < 60; i++) {
        unsigned char c = (unsigned char)n->str[i];
        if (c < 0x20 || c == 0x7f)
            buf[o++] = '?';
        else
            buf[o++] = (char)c;
    }
    if (n->len > 60 && o + 5 < len) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* The longest word and candidate measured by distance: names are short, and a longer word gets
 * no suggestion by distance (only by same_squashed). */
#define SUGGEST_MAX 64

/* Copies s lower-cased into out (SUGGEST_MAX + 1 bytes), once per string rather than once per
 * cell of the distance table. Returns the length, or SIZE_MAX (out untouched) when it is longer
 * than SUGGEST_MAX. */
static size_t lower_into(const char *s, char *out)
{
    size_t n = strlen(s);
    if (n > SUGGEST_MAX)
        return SIZE_MAX;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[n] = '\0';
    return n;
}

/* Edit distance of a (la) and b (lb) counting a swap of neighbours as one edit (optimal string
 * alignment), when it is at most k (< SUGGEST_MAX); k + 1 when it is more. Only the answer up to
 * k matters to the caller, which makes it cheap (the fuzzer and a config full of typos call it
 * for every candidate of every unknown key):
 * - a cell d[i][j] is at least |i - j|, so only the band |i - j| <= k is worked out; the cells
 *   outside it stay k + 1;
 * - every value is capped at k + 1: min and +1 keep a capped table exact up to k;
 * - once a whole row exceeds k, so does every later row (a swap reaching back two rows passes
 *   a cell of the row between that is no larger than it plus one), and the search stops. */
static size_t distance_within(const char *a, size_t la, const char *b, size_t lb, size_t k)
{
    const unsigned char over = (unsigned char)(k + 1);
    if ((la > lb ? la - lb : lb - la) > k)
        return over;
    unsigned char rows[3][SUGGEST_MAX + 1];
    unsigned char *before = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j <= k ? (unsigned char)j : over;
    for (size_t i = 1; i <= la; i++) {
        memset(cur, over, lb + 1);
        size_t lo = i > k ? i - k : 1, hi = i + k < lb ? i + k : lb;
        unsigned char row_min = over;
        if (i <= k)
            cur[0] = row_min = (unsigned char)i;
        for (size_t j = lo; j <= hi; j++) {
            unsigned char v = (unsigned char)(prev[j - 1] + (a[i - 1] != b[j - 1]));
            if (prev[j] + 1 < v)
                v = (unsigned char)(prev[j] + 1);
            if (cur[j - 1] + 1 < v)
                v = (unsigned char)(cur[j - 1] + 1);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                before[j - 2] + 1 < v)
                v = (unsigned char)(before[j - 2] + 1);
            if (v > over)
                v = over;
            cur[j] = v;
            if (v < row_min)
                row_min = v;
        }
        if (row_min > k)
            return over;
        unsigned char *t = before;
        before = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

/* Same letters apart from case, '-' and '_' ("receiveTimeout" vs "receive-timeout"). */
static bool same_squashed(const char *a, const char *b)
{
    for (;;) {
        while (*a == '-' || *a == '_')
            a++;
        while (*b == '-' || *b == '_')
            b++;
        if (!*a || !*b)
            return !*a && !*b;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
        a++;
        b++;
    }
}

const char *dhaf_cfg_suggest(const char *word, const char *const *cands, size_t n)
{
    char lw[SUGGEST_MAX + 1], lc[SUGGEST_MAX + 1];
    size_t len = strlen(word);
    size_t limit = len <= 4 ? 1 : (len <= 8 ? 2 : 3);
    size_t lwlen = lower_into(word, lw);
    /* The first candidate at the smallest distance, among those within the limit: bestd starts
     * past the limit, and a later candidate must be strictly closer to replace the best. */
    const char *best = NULL;
    size_t bestd = limit + 1;
    for (size_t i = 0; i < n; i++) {
        if (same_squashed(word, cands[i]))
            return cands[i];
        if (lwlen == SIZE_MAX || bestd == 0)
            continue;
        size_t k = bestd - 1;
        size_t cl = strlen(cands[i]);
        if (cl > SUGGEST_MAX || (cl > lwlen ? cl - lwlen : lwlen - cl) > k)
            continue;
        lower_into(cands[i], lc);
        size_t d = distance_within(lw, lwlen, lc, cl, k);
        if (d <= k) {
            bestd = d;
            best = cands[i];
        }
    }
    return best;
}

const struct ynode *cfg_lookup(const struct ynode *map, const char *dotted)
{
    char seg[128];
    const char *p = dotted;
    const struct ynode *cur = map;
    while (cur) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof(seg))
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        cur = ynode_get(cur, seg, NULL);
        if (!dot)
            return cur;
        if (cur && ynode_is_null(cur))
            return NULL;
        p = dot + 1;
    }
    return NULL;
}

const struct ynode *cfg_anchor(const struct ynode *map, const char *dotted)
{
    const struct ynode *v = cfg_lookup(map, dotted);
    if (v && !ynode_is_null(v))
        return v;
    /* The deepest mapping that exists on the way to the key. */
    const struct ynode *at = map;
    for (const char *dot = strchr(dotted, '.'); dot; dot = strchr(dot + 1, '.')) {
        char *parent = dhaf_xstrndup(dotted, (size_t)(dot - dotted));
        const struct ynode *pn = cfg_lookup(map, parent);
        free(parent);
        if (!pn || pn->kind != YNODE_MAP)
            break;
        at = pn;
    }
    return at;
}

/* ------------------------------------------------------------------ unknown keys */

/* Names accepted directly inside the mapping at `prefix` ("" = the section itself). Fills out
 * (count returned); strings made here are put in owned (*n_owned of them) for the caller. */
static size_t level_names(const struct dhaf_cfg_ctx *ctx, const char *prefix, const char **out,
                          size_t max, char **owned, size_t *n_owned)
{
    size_t n = 0;
    size_t pl = strlen(prefix);
    *n_owned = 0;
    for (const struct dhaf_cfgkey *k = ctx->keys; k && k->key && n + 2 < max; k++) {
        const char *rest = k->key;
        if (pl) {
            if (strncmp(k->key, prefix, pl) != 0 || k->key[pl] != '.')
                continue;
            rest = k->key + pl + 1;
        }
        const char *dot = strchr(rest, '.');
        char *name = dhaf_xstrndup(rest, dot ? (size_t)(dot - rest) : strlen(rest));
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(out[i], name) == 0;
        if (dup) {
            free(name);
            continue;
        }
        owned[(*n_owned)++] = name;
        out[n++] = name;
        if (!dot && k->type == DHAF_CFG_SECRET) {
            char *f = dhaf_xasprintf("%s-file", name);
            owned[(*n_owned)++] = f;
            out[n++] = f;
        }
    }
    if (!pl)
        for (const char *const *e = ctx->extra; e && *e && n < max; e++)
            out[n++] = *e;
    return n;
}

static const struct dhaf_cfgkey accepted_extra = {
    "", DHAF_CFG_EXTERNAL, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL};

static const struct dhaf_cfgkey *find_key(const struct dhaf_cfg_ctx *ctx, const char *full,
                                          bool *nested)
{
    size_t fl = strlen(full);
    *nested = false;
    for (const struct dhaf_cfgkey *k = ctx->keys; k && k->key; k++) {
        if (strcmp(k->key, full) == 0 || (k->alias && strcmp(k->alias, full) == 0))
            return k;
        size_t kl = strlen(k->key);
        if (k->type == DHAF_CFG_SECRET && strncmp(k->key, full, kl) == 0 &&
            strcmp(full + kl, "-file") == 0)
            return k;
        if (strncmp(k->key, full, fl) == 0 && k->key[fl] == '.')
            *nested = true;
    }
    if (!strchr(full, '.'))
        for (const char *const *e = ctx->extra; e && *e; e++)
            if (strcmp(*e, full) == 0)
                return &accepted_extra;
    return NULL;
}

static size_t check_unknown(struct dhaf_cfg_ctx *ctx, const struct ynode *map, const char *prefix)
{
    size_t errs = 0;
    char show[96];
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const struct ynode *k = map->items[i], *v = map->items[i + 1];
        if (k->kind != YNODE_SCALAR) {
            char *p = cfg_join(ctx->path, prefix);
            cfg_error_at(ctx->rep, k, p, "a key must be a plain word, found %s",
                         ynode_kind_name(k));
            free(p);
            errs++;
            continue;
        }
        char *full = prefix[0] ? cfg_join(prefix, k->str) : dhaf_xstrdup(k->str);
        char *p = cfg_join(ctx->path, full);
        for (size_t j = 0; j < i; j += 2) {
            const struct ynode *o = map->items[j];
            if (o->kind == YNODE_SCALAR && strcmp(o->str, k->str) == 0) {
                cfg_error_at(ctx->rep, k, p, "duplicate key (first given at line %d)", o->line);
                errs++;
                break;
            }
        }
        bool nested;
        const struct dhaf_cfgkey *key = find_key(ctx, full, &nested);
        if (!key && nested) {
            if (v->kind == YNODE_MAP) {
                errs += check_unknown(ctx, v, full);
            } else if (!ynode_is_null(v)) {
                cfg_error_at(ctx->rep, v, p, "expected a mapping, found %s",
                             cfg_show(v, show, sizeof(show)));
                errs++;
            }
        } else if (!key) {
            const char *names[160];
            char *owned[160];
            size_t n_owned;
            size_t n = level_names(ctx, prefix, names, 160, owned, &n_owned);
            const char *s = dhaf_cfg_suggest(k->str, names, n);
            if (s)
                cfg_error_at(ctx->rep, k, p, "unknown key \"%s\"; did you mean \"%s\"?", k->str, s);
            else
                cfg_error_at(ctx->rep, k, p, "unknown key \"%s\"", k->str);
            for (size_t j = 0; j < n_owned; j++)
                free(owned[j]);
            errs++;
        }
        free(p);
        free(full);
    }
    return errs;
}

/* ------------------------------------------------------------------ values */

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool parse_long(const char *s, long *out)
{
    if (!*s)
        return false;
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || (*s != '-' && *s != '+' && !(*s >= '0' && *s <= '9')))
        return false;
    *out = v;
    return true;
}

/* Secrets named as ${ENV} are taken out of the environment once read, so that no program this
 * process starts (exec checkers, switchers, a plugin's children) inherits them; the value is
 * kept here so that another reference to the same variable (a second key, a reload) still
 * resolves. */
struct env_secret {
    char *name;
    char *value;
};
static pthread_mutex_t env_mu = PTHREAD_MUTEX_INITIALIZER;
static struct env_secret *env_secrets;
static size_t n_env_secrets, cap_env_secrets;

/* The value of environment variable name (caller frees), or NULL when it is unset or empty
 * and was never taken before. Removes it from the environment and wipes its bytes there (the
 * initial environment is also what /proc/PID/environ shows). */
static char *take_env_secret(const char *name)
{
    pthread_mutex_lock(&env_mu);
    size_t i = 0;
    while (i < n_env_secrets && strcmp(env_secrets[i].name, name) != 0)
        i++;
    char *env = getenv(name);
    char *val = NULL;
    if (env && *env) {
        val = dhaf_xstrdup(env);
        if (i == n_env_secrets) {
            DHAF_GROW(env_secrets, n_env_secrets + 1, cap_env_secrets);
            env_secrets[n_env_secrets++] = (struct env_secret){dhaf_xstrdup(name), NULL};
        } else {
            explicit_bzero(env_secrets[i].value, strlen(env_secrets[i].value));
            free(env_secrets[i].value);
        }
        env_secrets[i].value = dhaf_xstrdup(env);
        explicit_bzero(env, strlen(env));
        unsetenv(name);
    } else if (i < n_env_secrets) {
        val = dhaf_xstrdup(env_secrets[i].value);
    }
    pthread_mutex_unlock(&env_mu);
    return val;
}

/* Reads a secret from a file: at most 64 KiB, trailing white space removed. */
static char *read_secret_file(struct dhaf_cfg_ctx *ctx, const struct ynode *v, const char *path,
                              const char *file)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        cfg_error_at(ctx->rep, v, path, "cannot read \"%s\": %s", file, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        cfg_error_at(ctx->rep, v, path, "\"%s\" is not a regular file", file);
        close(fd);
        return NULL;
    }
    if (st.st_size > SECRET_FILE_MAX) {
        cfg_error_at(ctx->rep, v, path, "\"%s\" is %lld bytes; a secret file may be at most %d",
                     file, (long long)st.st_size, SECRET_FILE_MAX);
        close(fd);
        return NULL;
    }
    if (st.st_mode & S_IROTH)
        dhaf_cfg_report_warn(ctx->rep, v->line, v->col, path,
                             "\"%s\" is readable by every user; chmod o-r it", file);
    char *buf = dhaf_xmalloc((size_t)st.st_size + 1);
    ssize_t r = read(fd, buf, (size_t)st.st_size);
    close(fd);
    if (r < 0) {
        cfg_error_at(ctx->rep, v, path, "cannot read \"%s\": %s", file, strerror(errno));
        free(buf);
        return NULL;
    }
    size_t n = (size_t)r;
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    buf[n] = '\0';
    if (n == 0 || strlen(buf) != n) {
        cfg_error_at(ctx->rep, v, path, "\"%s\" is empty or binary; expected the secret as text",
                     file);
        free(buf);
        return NULL;
    }
    return buf;
}

static char *resolve_path(const struct dhaf_cfg_ctx *ctx, const char *p)
{
    if (p[0] == '/' || !ctx->dir || !ctx->dir[0] || strcmp(ctx->dir, ".") == 0)
        return dhaf_xstrdup(p);
    return dhaf_xasprintf("%s/%s", ctx->dir, p);
}

/* Parses one scalar (or mapping for STRMAP) into the slot. Returns 0 or 1 (errors added). */
static size_t set_value(struct dhaf_cfg_ctx *ctx, const struct dhaf_cfgkey *k, void *slot,
                        const struct ynode *v, const char *path, bool from_file)
{
    char show[96], why[256];
    if (k->type == DHAF_CFG_STRMAP) {
        if (v->kind != YNODE_MAP) {
            cfg_error_at(ctx->rep, v, path, "expected a mapping of names to values, found %s",
                         cfg_show(v, show, sizeof(show)));
            return 1;
        }
        struct dhaf_strmap *m = slot;
        size_t errs = 0;
        for (size_t i = 0; i + 1 < v->n; i += 2) {
            const struct ynode *mk = v->items[i], *mv = v->items[i + 1];
            if (mk->kind != YNODE_SCALAR || mv->kind != YNODE_SCALAR || !mk->len) {
                char *p = cfg_join(path, mk->kind == YNODE_SCALAR ? mk->str : "?");
                cfg_error_at(ctx->rep, mv->kind != YNODE_SCALAR ? mv : mk, p,
                             "expected a name and a text value, found %s",
                             ynode_kind_name(mv->kind != YNODE_SCALAR ? mv : mk));
                free(p);
                errs++;
                continue;
            }
            m->keys = dhaf_xreallocarray(m->keys, m->n + 1, sizeof(char *));
            m->vals = dhaf_xreallocarray(m->vals, m->n + 1, sizeof(char *));
            m->keys[m->n] = dhaf_xstrdup(mk->str);
            m->vals[m->n] = dhaf_xstrdup(mv->str);
            m->n++;
        }
        return errs ? 1 : 0;
    }
    if (k->type == DHAF_CFG_STRLIST) {
        struct dhaf_strlist *l = slot;
        size_t errs = 0;
        /* items: the list's scalars, or the comma-separated parts of one scalar */
        size_t n = v->kind == YNODE_SEQ ? v->n : 1;
        char *copy = v->kind == YNODE_SCALAR ? dhaf_xstrdup(v->str) : NULL, *save = NULL;
        char *tok = copy ? strtok_r(copy, ",", &save) : NULL;
        for (size_t i = 0; v->kind == YNODE_SEQ ? i < n : tok != NULL; i++) {
            const struct ynode *item = v->kind == YNODE_SEQ ? v->items[i] : v;
            const char *text = v->kind == YNODE_SEQ ? item->str : tok;
            char *ipath = cfg_index(path, i);
            if (item->kind != YNODE_SCALAR || !text) {
                cfg_error_at(ctx->rep, item, ipath, "expected a value, found %s",
                             ynode_kind_name(item));
                errs++;
            } else {
                while (*text == ' ')
                    text++;
                char *t = dhaf_xstrdup(text);
                size_t tl = strlen(t);
                while (tl && t[tl - 1] == ' ')
                    t[--tl] = '\0';
                why[0] = '\0';
                if (!tl || (k->check && k->check(t, why, sizeof(why)) != 0)) {
                    cfg_error_at(ctx->rep, item, ipath, "%s", tl ? why : "is empty");
                    free(t);
                    errs++;
                } else {
                    l->v = dhaf_xreallocarray(l->v, l->n + 1, sizeof(char *));
                    l->v[l->n++] = t;
                }
            }
            free(ipath);
            if (v->kind == YNODE_SCALAR)
                tok = strtok_r(NULL, ",", &save);
        }
        free(copy);
        if (!errs && l->n == 0) {
            cfg_error_at(ctx->rep, v, path, "the list is empty");
            errs++;
        }
        return errs ? 1 : 0;
    }
    if (v->kind != YNODE_SCALAR) {
        cfg_error_at(ctx->rep, v, path, "expected a single value, found %s", ynode_kind_name(v));
        return 1;
    }
    const char *s = v->str;
    switch (k->type) {
    case DHAF_CFG_INT: {
        long n;
        if (!parse_long(s, &n)) {
            cfg_error_at(ctx->rep, v, path, "%s is not a whole number; expected %ld to %ld",
                         cfg_show(v, show, sizeof(show)), k->min, k->max);
            return 1;
        }
        if (n < k->min || n > k->max) {
            cfg_error_at(ctx->rep, v, path, "%ld is out of range; expected %ld to %ld", n, k->min,
                         k->max);
            return 1;
        }
        *(int *)slot = (int)n;
        return 0;
    }
    case DHAF_CFG_BOOL:
        if (!parse_bool(s, (bool *)slot)) {
            cfg_error_at(ctx->rep, v, path, "%s is not a boolean; expected true or false",
                         cfg_show(v, show, sizeof(show)));
            return 1;
        }
        return 0;
    case DHAF_CFG_ENUM: {
        size_t n = 0;
        for (; k->choices[n]; n++) {
            if (strcasecmp(s, k->choices[n]) == 0) {
                *(int *)slot = (int)n;
                return 0;
            }
        }
        char list[256] = "";
        for (size_t i = 0; i < n; i++)
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                     i ? (i + 1 == n ? " or " : ", ") : "", k->choices[i]);
        const char *sug = dhaf_cfg_suggest(s, (const char *const *)k->choices, n);
        if (sug)
            cfg_error_at(ctx->rep, v, path, "%s is not allowed; expected %s (did you mean %s?)",
                         cfg_show(v, show, sizeof(show)), list, sug);
        else
            cfg_error_at(ctx->rep, v, path, "%s is not allowed; expected %s",
                         cfg_show(v, show, sizeof(show)), list);
        return 1;
    }
    default:
        break;
    }

    /* String types. */
    if (!*s) {
        cfg_error_at(ctx->rep, v, path, "is empty; expected a value");
        return 1;
    }
    char *val = NULL;
    switch (k->type) {
    case DHAF_CFG_NAME:
        if (!dhaf_valid_name(s)) {
            cfg_error_at(ctx->rep, v, path,
                         "%s is not a valid name; use 1-64 letters, digits, '-' or '_'",
                         cfg_show(v, show, sizeof(show)));
            return 1;
        }
        break;
    case DHAF_CFG_SECRET:
        if (from_file) {
            char *file = resolve_path(ctx, s);
            val = read_secret_file(ctx, v, path, file);
            free(file);
            if (!val)
                return 1;
        } else if (s[0] == '$' && s[1] == '{' && s[v->len - 1] == '}') {
            char *name = dhaf_xstrndup(s + 2, v->len - 3);
            val = take_env_secret(name);
            if (!val) {
                cfg_error_at(ctx->rep, v, path, "environment variable %s is not set or empty",
                             name);
                free(name);
                return 1;
            }
            free(name);
        }
        break;
    case DHAF_CFG_PATH:
        val = resolve_path(ctx, s);
        break;
    case DHAF_CFG_HOST:
        if (!dhaf_valid_ip(s, NULL) && !dhaf_valid_hostname(s)) {
            cfg_error_at(ctx->rep, v, path, "%s is not a host name or IP address",
                         cfg_show(v, show, sizeof(show)));
            return 1;
        }
        break;
    case DHAF_CFG_URL: {
        size_t skip = strncasecmp(s, "https://", 8) == 0  ? 8
                      : strncasecmp(s, "http://", 7) == 0 ? 7
                                                          : 0;
        if (!skip || !s[skip] || strchr(s, ' ')) {
            cfg_error_at(ctx->rep, v, path, "%s is not an http:// or https:// URL",
                         cfg_show(v, show, sizeof(show)));
            return 1;
        }
        size_t n = v->len;
        while (n > skip + 1 && s[n - 1] == '/')
            n--; /* "…/v4/" and "…/v4" mean the same base */
        val = dhaf_xstrndup(s, n);
        break;
    }
    case DHAF_CFG_EMAIL: {
        const char *at = strchr(s, '@');
        if (!at || at == s || !at[1] || strchr(at + 1, '@') || strpbrk(s, " <>\r\n,;")) {
            cfg_error_at(ctx->rep, v, path, "%s is not an e-mail address (name@domain)",
                         cfg_show(v, show, sizeof(show)));
            return 1;
        }
        break;
    }
    default:
        break;
    }
    if (k->check) {
        /* A secret is checked as resolved (file or ${ENV}); its check never echoes it. */
        const char *cv = (k->type == DHAF_CFG_SECRET && val) ? val : s;
        why[0] = '\0';
        if (k->check(cv, why, sizeof(why)) != 0) {
            cfg_error_at(ctx->rep, v, path, "%s", why);
            free(val);
            return 1;
        }
    }
    char **dst = slot;
    free(*dst);
    *dst = val ? val : dhaf_xstrdup(s);
    return 0;
}

/* True when a mapping on the way to a dotted key is written as something else: that was
 * already reported as "expected a mapping", so the key itself is not reported again. */
static bool broken_parent(const struct ynode *map, const char *dotted)
{
    const char *dot = dotted;
    while ((dot = strchr(dot, '.')) != NULL) {
        char *parent = dhaf_xstrndup(dotted, (size_t)(dot - dotted));
        const struct ynode *pn = cfg_lookup(map, parent);
        free(parent);
        if (pn && !ynode_is_null(pn) && pn->kind != YNODE_MAP)
            return true;
        dot++;
    }
    return false;
}

static size_t apply_key(struct dhaf_cfg_ctx *ctx, const struct dhaf_cfgkey *k, void *base)
{
    void *slot = (char *)base + k->offset;
    if (broken_parent(ctx->map, k->key))
        return 1;
    char *path = cfg_join(ctx->path, k->key);
    const struct ynode *v = cfg_lookup(ctx->map, k->key);
    if (!v && k->alias)
        v = cfg_lookup(ctx->map, k->alias);
    bool from_file = false;
    size_t errs = 0;
    if (k->type == DHAF_CFG_SECRET) {
        char *fk = dhaf_xasprintf("%s-file", k->key);
        const struct ynode *fv = cfg_lookup(ctx->map, fk);
        if (fv && !ynode_is_null(fv)) {
            if (v && !ynode_is_null(v)) {
                char *fp = cfg_join(ctx->path, fk);
                cfg_error_at(ctx->rep, fv, fp, "give either %s or %s, not both", k->key, fk);
                free(fp);
                errs++;
            } else {
                v = fv;
                from_file = true;
            }
        }
        if (from_file) {
            free(path);
            path = cfg_join(ctx->path, fk);
        }
        free(fk);
    }
    if (k->type == DHAF_CFG_ENUM)
        *(int *)slot = -1;
    if (errs == 0 && (!v || ynode_is_null(v))) {
        if (k->def) {
            struct ynode d = {.kind = YNODE_SCALAR,
                              .str = (char *)k->def,
                              .len = strlen(k->def),
                              .plain = true,
                              .line = ctx->map ? ctx->map->line : ctx->line,
                              .col = ctx->map ? ctx->map->col : ctx->col};
            errs += set_value(ctx, k, slot, &d, path, false);
        } else if (k->required) {
            const struct ynode *at = cfg_anchor(ctx->map, k->key);
            if (at)
                cfg_error_at(ctx->rep, at, path, "missing; this key is required%s",
                             k->type == DHAF_CFG_SECRET ? " (or give it as " : "");
            else
                dhaf_cfg_report_error(ctx->rep, ctx->line, ctx->col, path,
                                      "missing; this key is required%s",
                                      k->type == DHAF_CFG_SECRET ? " (or give it as " : "");
            if (k->type == DHAF_CFG_SECRET) {
                /* Complete the hint on the message just added. */
                struct dhaf_cfg_error *e = &ctx->rep->errs[ctx->rep->n_errs - 1];
                char *m = dhaf_xasprintf("%s%s-file: PATH or ${ENV})", e->msg, k->key);
                free(e->msg);
                e->msg = m;
            }
            errs++;
        }
    } else if (errs == 0) {
        errs += set_value(ctx, k, slot, v, path, from_file);
    }
    free(path);
    return errs;
}

size_t cfg_apply(struct dhaf_cfg_ctx *ctx, void *base)
{
    char show[96];
    if (ctx->map && ynode_is_null(ctx->map))
        ctx->map = NULL;
    if (ctx->map && ctx->map->kind != YNODE_MAP) {
        cfg_error_at(ctx->rep, ctx->map, ctx->path, "expected a mapping of keys, found %s",
                     cfg_show(ctx->map, show, sizeof(show)));
        return 1;
    }
    size_t errs = 0;
    if (ctx->map && !ctx->skip_unknown)
        errs += check_unknown(ctx, ctx->map, "");
    for (const struct dhaf_cfgkey *k = ctx->keys; k && k->key; k++)
        if (k->type != DHAF_CFG_EXTERNAL)
            errs += apply_key(ctx, k, base);
    return errs;
}

/* ------------------------------------------------------------------ hooks API */

void dhaf_cfg_fail(struct dhaf_cfg_ctx *ctx, const char *key, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const struct ynode *at = key ? cfg_anchor(ctx->map, key) : ctx->map;
    char *path = key ? cfg_join(ctx->path, key) : dhaf_xstrdup(ctx->path);
    if (at)
        cfg_error_at(ctx->rep, at, path, "%s", msg);
    else
        dhaf_cfg_report_error(ctx->rep, ctx->line, ctx->col, path, "%s", msg);
    free(path);
}

bool dhaf_cfg_isset(const struct dhaf_cfg_ctx *ctx, const char *key)
{
    const struct ynode *v = cfg_lookup(ctx->map, key);
    return v && !ynode_is_null(v);
}

void dhaf_cfgkeys_release(const struct dhaf_cfgkey *keys, void *base)
{
    if (!base)
        return;
    for (const struct dhaf_cfgkey *k = keys; k && k->key; k++) {
        void *slot = (char *)base + k->offset;
        switch (k->type) {
        case DHAF_CFG_INT:
        case DHAF_CFG_BOOL:
        case DHAF_CFG_ENUM:
        case DHAF_CFG_EXTERNAL:
            break;
        case DHAF_CFG_STRLIST: {
            struct dhaf_strlist *l = slot;
            for (size_t i = 0; i < l->n; i++)
                free(l->v[i]);
            DHAF_FREE(l->v);
            l->n = 0;
            break;
        }
        case DHAF_CFG_STRMAP: {
            struct dhaf_strmap *m = slot;
            for (size_t i = 0; i < m->n; i++) {
                free(m->keys[i]);
                free(m->vals[i]);
            }
            DHAF_FREE(m->keys);
            DHAF_FREE(m->vals);
            m->n = 0;
            break;
        }
        case DHAF_CFG_SECRET: {
            char **s = slot;
            if (*s) /* do not leave secrets in freed memory */
                explicit_bzero(*s, strlen(*s));
            DHAF_FREE(*s);
            break;
        }
        default: {
            char **s = slot;
            DHAF_FREE(*s);
            break;
        }
        }
    }
}

/* ------------------------------------------------------------------ reference */

static const char *type_name(const struct dhaf_cfgkey *k, char *buf, size_t len)
{
    switch (k->type) {
    case DHAF_CFG_STR:
        return "string";
    case DHAF_CFG_NAME:
        return "name";
    case DHAF_CFG_SECRET:
        return "secret";
    case DHAF_CFG_PATH:
        return "path";
    case DHAF_CFG_HOST:
        return "host";
    case DHAF_CFG_URL:
        return "URL";
    case DHAF_CFG_EMAIL:
        return "e-mail";
    case DHAF_CFG_INT:
        snprintf(buf, len, "int %ld-%ld", k->min, k->max);
        return buf;
    case DHAF_CFG_BOOL:
        return "bool";
    case DHAF_CFG_ENUM: {
        size_t o = 0;
        buf[0] = '\0';
        for (size_t i = 0; k->choices[i] && o + 2 < len; i++)
            o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? " \\| " : "", k->choices[i]);
        return buf;
    }
    case DHAF_CFG_STRMAP:
        return "map";
    case DHAF_CFG_STRLIST:
        return "list";
    case DHAF_CFG_EXTERNAL:
        return "list / section";
    }
    return "?";
}

void dhaf_cfgkeys_write_reference(FILE *out, const char *prefix, const struct dhaf_cfgkey *keys)
{
    char tb[160];
    fprintf(out, "| Parameter | Type | Default | Description |\n|---|---|---|---|\n");
    for (const struct dhaf_cfgkey *k = keys; k && k->key; k++) {
        fprintf(out, "| `%s%s`", prefix, k->key);
        if (k->alias)
            fprintf(out, " (also `%s`)", k->alias);
        fprintf(out, " | %s | %s | %s |\n", type_name(k, tb, sizeof(tb)),
                k->required ? "required" : (k->def ? k->def : "—"), k->help ? k->help : "");
    }
}

/* Sets obj[dotted key] = v, creating the nested objects of a dotted key. */
static void json_set_dotted(json_t *obj, const char *key, json_t *v)
{
    const char *dot = strchr(key, '.');
    if (!dot) {
        json_object_set_new(obj, key, v);
        return;
    }
    char *head = dhaf_xstrndup(key, (size_t)(dot - key));
    json_t *sub = json_object_get(obj, head);
    if (!json_is_object(sub)) {
        sub = json_object();
        json_object_set_new(obj, head, sub);
    }
    free(head);
    json_set_dotted(sub, dot + 1, v);
}

void dhaf_cfgkeys_to_json(const struct dhaf_cfgkey *keys, const void *base, void *objp)
{
    json_t *obj = objp;
    for (const struct dhaf_cfgkey *k = keys; k && k->key; k++) {
        const void *slot = (const char *)base + k->offset;
        json_t *v = NULL;
        switch (k->type) {
        case DHAF_CFG_EXTERNAL:
            break;
        case DHAF_CFG_INT:
            v = json_integer(*(const int *)slot);
            break;
        case DHAF_CFG_BOOL:
            v = json_boolean(*(const bool *)slot);
            break;
        case DHAF_CFG_ENUM:
            if (*(const int *)slot >= 0)
                v = json_string(k->choices[*(const int *)slot]);
            break;
        case DHAF_CFG_STRLIST: {
            const struct dhaf_strlist *l = slot;
            if (l->n) {
                v = json_array();
                for (size_t i = 0; i < l->n; i++)
                    json_array_append_new(v, json_string(l->v[i]));
            }
            break;
        }
        case DHAF_CFG_STRMAP: {
            const struct dhaf_strmap *m = slot;
            if (m->n) {
                v = json_object();
                for (size_t i = 0; i < m->n; i++)
                    json_object_set_new(v, m->keys[i], json_string(m->vals[i]));
            }
            break;
        }
        default:
            if (*(char *const *)slot)
                v = json_string(*(char *const *)slot);
            break;
        }
        if (v)
            json_set_dotted(obj, k->key, v);
    }
}
