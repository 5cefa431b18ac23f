/* SPDX-License-Identifier: MIT */
/* The text form of a simulated world (docs/simulate.md): one change a line,
 *   <time> ep <entry point> up | refused | hung | slow <mean ms> <spread ms> | flaky <odds>
 *   <time> voter <name> frozen | thawed | cut | joined | calm
 *   <time> voter <name> overloaded [<mean ms between stalls> <longest stall ms>]
 *   <time> voter <name> net <entry point | all> up | refused | hung | slow ... | flaky ...
 *   <time> end
 *   seed <number>
 * times as 1500, 1500ms or 1.5s; '#' starts a comment. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "sim.h"
#include "votes.h"

#define TL_WORDS    8
#define TL_LINE_MAX 512
#define TL_VOTE_MAX (4u << 20) /* a vote of thousands of entry points, and room */

struct tl {
    const char *what;
    size_t line;
    struct dhaf_err *err;
};

static int bad(const struct tl *tl, const char *why, const char *word)
{
    return dhaf_err_set(tl->err, DHAF_EINVAL, "%s:%zu: %s%s%.64s%s", tl->what, tl->line, why,
                        word ? " (\"" : "", word ? word : "", word ? "\")" : "");
}

static int parse_time(const struct tl *tl, const char *w, int64_t *ms)
{
    char *end;
    errno = 0;
    double x = strtod(w, &end);
    double scale = 1;
    if (strcmp(end, "s") == 0)
        scale = 1000;
    else if (strcmp(end, "ms") != 0 && *end)
        return bad(tl, "a time is a number of ms, or ends in ms or s", w);
    x *= scale;
    if (errno || end == w || !(x >= 0) || x > 1e12)
        return bad(tl, "a time must be 0 or more, and below 10^12 ms", w);
    *ms = (int64_t)x;
    return 0;
}

static int parse_num(const struct tl *tl, const char *w, double lo, double hi, double *x)
{
    char *end;
    errno = 0;
    *x = w ? strtod(w, &end) : 0;
    if (!w || errno || end == w || *end || !(*x >= lo && *x <= hi)) {
        char range[64];
        snprintf(range, sizeof(range), "a number from %g to %g is needed", lo, hi);
        return bad(tl, range, w);
    }
    return 0;
}

/* "up" | "refused" | "hung" | "slow MEAN SPREAD" | "flaky ODDS" from w[0..]. */
static int parse_backend(const struct tl *tl, char **w, size_t n, struct sim_change *c)
{
    if (n < 1)
        return bad(tl, "what the backend does is missing (up, refused, hung, slow, flaky)", NULL);
    size_t need = 1;
    if (strcmp(w[0], "up") == 0) {
        c->backend = SIM_UP;
    } else if (strcmp(w[0], "refused") == 0) {
        c->backend = SIM_REFUSED;
    } else if (strcmp(w[0], "hung") == 0) {
        c->backend = SIM_HUNG;
    } else if (strcmp(w[0], "slow") == 0) {
        c->backend = SIM_SLOW;
        need = 3;
        if (parse_num(tl, n > 1 ? w[1] : NULL, 1, 3.6e6, &c->a) ||
            parse_num(tl, n > 2 ? w[2] : NULL, 0, 3.6e6, &c->b))
            return DHAF_EINVAL;
    } else if (strcmp(w[0], "flaky") == 0) {
        c->backend = SIM_FLAKY;
        need = 2;
        if (parse_num(tl, n > 1 ? w[1] : NULL, 0, 1, &c->a))
            return DHAF_EINVAL;
    } else {
        return bad(tl, "a backend is up, refused, hung, slow <mean> <spread> or flaky <odds>",
                   w[0]);
    }
    if (n > need)
        return bad(tl, "more words than expected", w[need]);
    return 0;
}

static int voter_of(const struct tl *tl, const char *name, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return (int)i;
    bad(tl, "no such voter (see --voters, or the timeline's voters line)", name);
    return -1;
}

static int ep_of(const struct tl *tl, const struct dhaf_service *svc, const char *name)
{
    int e = dhaf_service_ep_index(svc, name);
    if (e < 0)
        bad(tl, "the service has no such entry point", name);
    return e;
}

static int parse_line(const struct tl *tl, char **w, size_t n, const struct dhaf_service *svc,
                      const char *const *names, size_t n_voters, struct sim_change *c, bool *is_end)
{
    if (parse_time(tl, w[0], &c->at_ms))
        return DHAF_EINVAL;
    if (n < 2)
        return bad(tl, "a time needs what happens: ep, voter or end", NULL);
    if (strcmp(w[1], "end") == 0) {
        *is_end = true;
        return n > 2 ? bad(tl, "more words than expected", w[2]) : 0;
    }
    if (n < 3)
        return bad(tl, "an entry point or voter name is missing", NULL);
    if (strcmp(w[1], "ep") == 0) {
        c->kind = SIM_BACKEND;
        if ((c->ep = ep_of(tl, svc, w[2])) < 0)
            return DHAF_EINVAL;
        return parse_backend(tl, w + 3, n - 3, c);
    }
    if (strcmp(w[1], "voter") != 0)
        return bad(tl, "a change is about an ep, a voter, or the end", w[1]);
    if ((c->voter = voter_of(tl, w[2], names, n_voters)) < 0)
        return DHAF_EINVAL;
    if (n < 4)
        return bad(tl, "what happens to the voter is missing", NULL);
    static const struct {
        const char *word;
        enum sim_change_kind kind;
    } plain[] = {{"frozen", SIM_FROZEN},
                 {"thawed", SIM_THAWED},
                 {"cut", SIM_CUT},
                 {"joined", SIM_JOINED},
                 {"calm", SIM_CALM}};
    for (size_t k = 0; k < sizeof(plain) / sizeof(plain[0]); k++)
        if (strcmp(w[3], plain[k].word) == 0) {
            c->kind = plain[k].kind;
            return n > 4 ? bad(tl, "more words than expected", w[4]) : 0;
        }
    if (strcmp(w[3], "overloaded") == 0) {
        c->kind = SIM_OVERLOAD;
        c->a = 4000, c->b = 2000;
        if (n == 4)
            return 0;
        if (n != 6)
            return bad(tl, "overloaded takes no number or two (mean gap, longest stall)", NULL);
        if (parse_num(tl, w[4], 1, 3.6e6, &c->a) || parse_num(tl, w[5], 1, 3.6e6, &c->b))
            return DHAF_EINVAL;
        return 0;
    }
    if (strcmp(w[3], "net") == 0) {
        c->kind = SIM_NET;
        if (n < 5)
            return bad(tl, "net needs an entry point or all", NULL);
        c->ep = strcmp(w[4], "all") == 0 ? -1 : ep_of(tl, svc, w[4]);
        if (c->ep < 0 && strcmp(w[4], "all") != 0)
            return DHAF_EINVAL;
        return parse_backend(tl, w + 5, n - 5, c);
    }
    return bad(tl,
               "a voter is frozen, thawed, cut, joined, overloaded, calm, or net <ep|all> "
               "<backend>",
               w[3]);
}

/* "<time> vote <voter> <vote JSON | ->": 1 with *c filled, 0 when line is not one, -1 with
 * the error in tl (JSON may hold '#' and spaces: such a line is not cut into words). */
static int vote_line(const struct tl *tl, char *line, const char *const *names, size_t n_voters,
                     struct sim_change *c)
{
    char *p = line + strspn(line, " \t");
    char *time = p;
    if (*time == '#')
        return 0;
    p += strcspn(p, " \t");
    char *second = p + strspn(p, " \t");
    if (!*p || strncmp(second, "vote", 4) != 0 || (second[4] != ' ' && second[4] != '\t'))
        return 0; /* (also "voter": another kind of line) */
    *p = '\0';
    p = second + 4;
    p += strspn(p, " \t");
    char *name = p;
    p += strcspn(p, " \t");
    if (*p)
        *p++ = '\0';
    p += strspn(p, " \t");
    size_t len = strlen(p);
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r'))
        p[--len] = '\0';
    if (parse_time(tl, time, &c->at_ms))
        return -1;
    if (!*name || !len) {
        bad(tl, "a vote line is <time> vote <voter> <vote JSON, or - when its key went away>",
            NULL);
        return -1;
    }
    if ((c->voter = voter_of(tl, name, names, n_voters)) < 0)
        return -1;
    c->kind = SIM_VOTE;
    if (strcmp(p, "-") == 0)
        return 1;
    struct vote v;
    struct dhaf_err e2;
    if (vote_decode(p, len, name, NULL, &v, &e2) != 0) {
        bad(tl, e2.msg, NULL);
        return -1;
    }
    bool same = strcmp(v.voter, name) == 0;
    vote_release(&v);
    if (!same) {
        bad(tl, "the vote is another voter's", name);
        return -1;
    }
    c->vote = dhaf_xstrdup(p);
    return 1;
}

/* Any other line: a change (c->line set), or a comment, seed, voters or end line (c->line
 * 0). */
static int other_line(struct tl *tl, char *buf, const struct dhaf_service *svc,
                      const char *const *names, size_t n_voters, struct sim_world *w,
                      struct sim_change *c, bool *has_end)
{
    size_t line = c->line;
    c->line = 0;
    char *hash = strchr(buf, '#');
    if (hash)
        *hash = '\0';
    char *words[TL_WORDS + 1];
    size_t n = 0;
    char *save = NULL;
    bool voters = false;
    for (char *t = strtok_r(buf, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
        voters |= n == 0 && strcmp(t, "voters") == 0;
        if (voters)
            continue; /* read by sim_timeline_voters */
        if (n == TL_WORDS)
            return bad(tl, "more words than any change has", t);
        words[n++] = t;
    }
    if (n == 0)
        return 0;
    for (size_t k = 0; k < n; k++)
        for (const char *ch = words[k]; *ch; ch++)
            if (!isprint((unsigned char)*ch))
                return bad(tl, "a word holds a control or non-ASCII byte", NULL);
    if (strcmp(words[0], "seed") == 0) {
        double x;
        if (n != 2)
            return bad(tl, "seed takes one number", NULL);
        if (parse_num(tl, words[1], 0, 9e15, &x))
            return DHAF_EINVAL;
        w->seed = (uint64_t)x;
        return 0;
    }
    bool is_end = false;
    int rc = parse_line(tl, words, n, svc, names, n_voters, c, &is_end);
    if (rc)
        return rc;
    if (is_end) {
        if (*has_end)
            return bad(tl, "a second end", NULL);
        *has_end = true;
        w->end_ms = c->at_ms;
        return 0;
    }
    c->line = line;
    return 0;
}

static int by_time(const void *a, const void *b)
{
    const struct sim_change *x = a, *y = b;
    if (x->at_ms != y->at_ms)
        return x->at_ms < y->at_ms ? -1 : 1;
    /* stable: in line order */
    return x->line < y->line ? -1 : x->line > y->line;
}

int sim_timeline_parse(const char *text, const char *what, const struct dhaf_service *svc,
                       const char *const *names, size_t n_voters, struct sim_world *w,
                       struct dhaf_err *err)
{
    memset(w, 0, sizeof(*w));
    struct tl tl = {.what = what, .err = err};
    struct sim_change *list = NULL;
    size_t cap = 0;
    bool has_end = false;
    int64_t last = 0;
    const char *p = text;
    int rc = 0;
    while (*p && rc == 0) {
        tl.line++;
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > TL_VOTE_MAX) {
            rc = bad(&tl, "the line is longer than 4 MiB", NULL);
            break;
        }
        char *buf = dhaf_xstrndup(p, len);
        p = eol ? eol + 1 : p + len;
        struct sim_change c = {.ep = -1, .line = tl.line};
        int is_vote = vote_line(&tl, buf, names, n_voters, &c);
        if (is_vote != 0) {
            free(buf);
            if (is_vote < 0) {
                rc = DHAF_EINVAL;
                break;
            }
            DHAF_GROW(list, w->n_changes + 1, cap);
            list[w->n_changes++] = c;
            last = c.at_ms > last ? c.at_ms : last;
            continue;
        }
        if (len >= TL_LINE_MAX) {
            free(buf);
            rc = bad(&tl, "the line is longer than 511 bytes", NULL);
            break;
        }
        rc = other_line(&tl, buf, svc, names, n_voters, w, &c, &has_end);
        free(buf);
        if (rc)
            break;
        if (c.line == 0)
            continue; /* nothing to add: a comment, seed, voters or end */
        DHAF_GROW(list, w->n_changes + 1, cap);
        list[w->n_changes++] = c;
        last = c.at_ms > last ? c.at_ms : last;
    }
    if (rc == 0 && has_end && last > w->end_ms) {
        tl.line = 0;
        rc = dhaf_err_set(err, DHAF_EINVAL, "%s: a change comes after the end (%lld ms)", what,
                          (long long)w->end_ms);
    }
    if (rc) {
        w->changes = list;
        sim_world_release(w);
        return rc;
    }
    if (!has_end)
        w->end_ms = last + 60000;
    if (list)
        qsort(list, w->n_changes, sizeof(*list), by_time);
    w->changes = list;
    return 0;
}

void sim_world_release(struct sim_world *w)
{
    for (size_t i = 0; i < w->n_changes; i++)
        free((void *)w->changes[i].vote);
    free((void *)w->changes);
    memset(w, 0, sizeof(*w));
}

size_t sim_timeline_voters(const char *text, char *buf, size_t len, const char **names, size_t max)
{
    for (const char *p = text; *p;) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        const char *q = p + strspn(p, " \t");
        if (strncmp(q, "voters", 6) == 0 && (q[6] == ' ' || q[6] == '\t') &&
            (size_t)(p + n - q) < len) {
            memcpy(buf, q, (size_t)(p + n - q));
            buf[p + n - q] = '\0';
            char *hash = strchr(buf, '#');
            if (hash)
                *hash = '\0';
            size_t k = 0;
            char *save = NULL;
            strtok_r(buf, " \t\r", &save);
            for (char *t = strtok_r(NULL, " \t\r", &save); t && k < max;
                 t = strtok_r(NULL, " \t\r", &save))
                names[k++] = t;
            return k;
        }
        p = eol ? eol + 1 : p + n;
    }
    return 0;
}
