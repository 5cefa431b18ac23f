/* SPDX-License-Identifier: MIT */
/* YAML loader: libyaml events into a marked tree, with limits against hostile input. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "dhaf/alloc.h"
#include "dhaf/err.h"
#include "ytree.h"

struct anchor {
    char *name;
    struct ynode *node;
};

struct loader {
    yaml_parser_t parser;
    struct dhaf_cfg_report *rep;
    struct ynode *stack[YTREE_MAX_DEPTH + 1];
    size_t depth;
    struct ynode *root;
    /* Anchors by name in an open-addressing hash table (linear probing, at most half full),
     * so an alias is found in constant time: a file of many anchors and aliases loads in
     * linear time. A name anchored again replaces the earlier node, as YAML says. */
    struct anchor *anchors; /* n_slots slots; name NULL = empty */
    size_t n_anchors, n_slots;
    size_t nodes; /* counted after alias expansion */
};

void ynode_free(struct ynode *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        ynode_free(n->items[i]);
    free(n->items);
    free(n->str);
    free(n);
}

static struct ynode *node_new(enum ynode_kind kind, yaml_mark_t m)
{
    struct ynode *n = dhaf_xcalloc(1, sizeof(*n));
    n->kind = kind;
    n->line = (int)m.line + 1;
    n->col = (int)m.column + 1;
    return n;
}

static void node_push(struct ynode *parent, struct ynode *child)
{
    DHAF_GROW(parent->items, parent->n + 1, parent->cap);
    parent->items[parent->n++] = child;
}

/* Size of a subtree in nodes, stopping early once it exceeds limit. */
static size_t node_count(const struct ynode *n, size_t limit)
{
    size_t c = 1;
    for (size_t i = 0; i < n->n && c <= limit; i++)
        c += node_count(n->items[i], limit - c + 1);
    return c;
}

static struct ynode *node_copy(const struct ynode *n)
{
    struct ynode *c = dhaf_xcalloc(1, sizeof(*c));
    *c = *n;
    c->items = NULL;
    c->n = c->cap = 0;
    if (n->str)
        c->str = dhaf_xstrndup(n->str, n->len);
    for (size_t i = 0; i < n->n; i++)
        node_push(c, node_copy(n->items[i]));
    return c;
}

static int fail(struct loader *ld, yaml_mark_t m, const char *fmt, const char *arg)
{
    char msg[256];
    snprintf(msg, sizeof(msg), fmt, arg);
    dhaf_cfg_report_error(ld->rep, (int)m.line + 1, (int)m.column + 1, NULL, "%s", msg);
    return DHAF_ECONFIG;
}

/* FNV-1a of a NUL-terminated name. */
static size_t anchor_hash(const char *name)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)h;
}

/* The slot holding name, or the empty slot where it would go. n_slots is a power of two and
 * the table is never full, so the probe ends. */
static struct anchor *anchor_slot(struct anchor *slots, size_t n_slots, const char *name)
{
    size_t i = anchor_hash(name) & (n_slots - 1);
    while (slots[i].name && strcmp(slots[i].name, name) != 0)
        i = (i + 1) & (n_slots - 1);
    return &slots[i];
}

static const struct ynode *find_anchor(const struct loader *ld, const char *name)
{
    if (!ld->n_slots)
        return NULL;
    const struct anchor *a = anchor_slot(ld->anchors, ld->n_slots, name);
    return a->name ? a->node : NULL;
}

static void remember_anchor(struct loader *ld, const yaml_char_t *anchor, struct ynode *n)
{
    if (!anchor)
        return;
    if ((ld->n_anchors + 1) * 2 > ld->n_slots) {
        size_t n_slots = ld->n_slots ? ld->n_slots * 2 : 64;
        struct anchor *slots = dhaf_xcalloc(n_slots, sizeof(*slots));
        for (size_t i = 0; i < ld->n_slots; i++)
            if (ld->anchors[i].name)
                *anchor_slot(slots, n_slots, ld->anchors[i].name) = ld->anchors[i];
        free(ld->anchors);
        ld->anchors = slots;
        ld->n_slots = n_slots;
    }
    struct anchor *a = anchor_slot(ld->anchors, ld->n_slots, (const char *)anchor);
    if (!a->name) {
        a->name = dhaf_xstrdup((const char *)anchor);
        ld->n_anchors++;
    }
    a->node = n;
}

/* Attaches a finished node to the open collection, or makes it the root. */
static void attach(struct loader *ld, struct ynode *n)
{
    if (ld->depth == 0)
        ld->root = n;
    else
        node_push(ld->stack[ld->depth - 1], n);
}

static int on_alias(struct loader *ld, yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    const struct ynode *target = find_anchor(ld, name);
    if (!target)
        return fail(ld, ev->start_mark, "alias *%s has no anchor defined before it", name);
    /* An alias to a collection that is still open would be a cycle. */
    for (size_t d = 0; d < ld->depth; d++)
        if (ld->stack[d] == target)
            return fail(ld, ev->start_mark, "alias *%s refers to a node that contains it", name);
    size_t sz = node_count(target, YTREE_MAX_NODES);
    if (ld->nodes + sz > YTREE_MAX_NODES)
        return fail(ld, ev->start_mark,
                    "aliases expand this document past 100000 nodes (alias *%s); "
                    "a config file is never that large",
                    name);
    ld->nodes += sz;
    attach(ld, node_copy(target));
    return 0;
}

static int on_event(struct loader *ld, yaml_event_t *ev, bool *done)
{
    struct ynode *n;
    switch (ev->type) {
    case YAML_STREAM_START_EVENT:
    case YAML_DOCUMENT_START_EVENT:
    case YAML_NO_EVENT:
        return 0;
    case YAML_DOCUMENT_END_EVENT:
    case YAML_STREAM_END_EVENT:
        *done = true;
        return 0;
    case YAML_ALIAS_EVENT:
        return on_alias(ld, ev);
    case YAML_SCALAR_EVENT:
        if (++ld->nodes > YTREE_MAX_NODES)
            return fail(ld, ev->start_mark, "more than %s YAML nodes", "100000");
        n = node_new(YNODE_SCALAR, ev->start_mark);
        n->len = ev->data.scalar.length;
        n->str = dhaf_xstrndup((const char *)ev->data.scalar.value, n->len);
        if (strlen(n->str) != n->len) {
            ynode_free(n);
            return fail(ld, ev->start_mark, "a value contains a NUL character%s", "");
        }
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        remember_anchor(ld, ev->data.scalar.anchor, n);
        attach(ld, n);
        return 0;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (++ld->nodes > YTREE_MAX_NODES)
            return fail(ld, ev->start_mark, "more than %s YAML nodes", "100000");
        if (ld->depth >= YTREE_MAX_DEPTH)
            return fail(ld, ev->start_mark, "nesting deeper than %s levels", "64");
        n = node_new(ev->type == YAML_MAPPING_START_EVENT ? YNODE_MAP : YNODE_SEQ, ev->start_mark);
        remember_anchor(ld,
                        ev->type == YAML_MAPPING_START_EVENT ? ev->data.mapping_start.anchor
                                                             : ev->data.sequence_start.anchor,
                        n);
        attach(ld, n);
        ld->stack[ld->depth++] = n;
        return 0;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        ld->depth--;
        return 0;
    }
    return 0;
}

static const char *problem_text(const yaml_parser_t *p)
{
    return p->problem ? p->problem : "malformed YAML";
}

int ytree_load_mem(const char *text, size_t len, struct ynode **root, struct dhaf_cfg_report *rep)
{
    struct loader ld;
    memset(&ld, 0, sizeof(ld));
    ld.rep = rep;
    *root = NULL;
    int rc = 0;

    /* libyaml checks UTF-8 itself, but a NUL byte would end its input early. */
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        int line = 1, col = 1;
        for (const char *p = text; p < nul; p++) {
            if (*p == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        dhaf_cfg_report_error(rep, line, col, NULL,
                              "the file contains a NUL byte: it is binary, not a YAML text");
        return DHAF_ECONFIG;
    }

    if (!yaml_parser_initialize(&ld.parser)) {
        dhaf_cfg_report_error(rep, 0, 0, NULL, "cannot initialise the YAML parser");
        return DHAF_ECONFIG;
    }
    yaml_parser_set_input_string(&ld.parser, (const unsigned char *)text, len);

    bool done = false;
    bool doc_ended = false;
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&ld.parser, &ev)) {
            yaml_mark_t m = ld.parser.problem_mark;
            if (ld.parser.error == YAML_READER_ERROR) {
                /* Reader errors give a byte offset, not a line: compute it. */
                int line = 1, col = 1;
                for (size_t i = 0; i < ld.parser.problem_offset && i < len; i++) {
                    if (text[i] == '\n') {
                        line++;
                        col = 1;
                    } else {
                        col++;
                    }
                }
                dhaf_cfg_report_error(rep, line, col, NULL,
                                      "the file is not valid UTF-8 text (%s at byte %zu)",
                                      problem_text(&ld.parser), ld.parser.problem_offset);
            } else {
                dhaf_cfg_report_error(rep, (int)m.line + 1, (int)m.column + 1, NULL,
                                      "YAML syntax error: %s%s%s", problem_text(&ld.parser),
                                      ld.parser.context ? " " : "",
                                      ld.parser.context ? ld.parser.context : "");
            }
            rc = DHAF_ECONFIG;
            break;
        }
        if (ev.type == YAML_DOCUMENT_START_EVENT && doc_ended) {
            rc = fail(&ld, ev.start_mark, "the file has more than one YAML document%s", "");
            yaml_event_delete(&ev);
            break;
        }
        if (ev.type == YAML_DOCUMENT_END_EVENT) {
            doc_ended = true;
            yaml_event_delete(&ev);
            continue;
        }
        bool stream_end = ev.type == YAML_STREAM_END_EVENT;
        bool unused = false;
        rc = on_event(&ld, &ev, &unused);
        yaml_event_delete(&ev);
        if (rc || stream_end)
            break;
    }

    yaml_parser_delete(&ld.parser);
    for (size_t i = 0; i < ld.n_slots; i++)
        free(ld.anchors[i].name);
    free(ld.anchors);

    if (rc) {
        ynode_free(ld.root);
        return rc;
    }
    if (!ld.root || ynode_is_null(ld.root)) {
        /* An empty file is an empty mapping: the validator then says what is missing. */
        ynode_free(ld.root);
        yaml_mark_t m = {0, 0, 0};
        ld.root = node_new(YNODE_MAP, m);
    }
    *root = ld.root;
    return 0;
}

int ytree_load_file(const char *path, struct ynode **root, struct dhaf_cfg_report *rep)
{
    *root = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        dhaf_cfg_report_error(rep, 0, 0, NULL, "cannot open the config file: %s", strerror(errno));
        return DHAF_ECONFIG;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        dhaf_cfg_report_error(rep, 0, 0, NULL, "cannot stat the config file: %s", strerror(errno));
        close(fd);
        return DHAF_ECONFIG;
    }
    if (S_ISDIR(st.st_mode)) {
        dhaf_cfg_report_error(rep, 0, 0, NULL, "is a directory, not a config file");
        close(fd);
        return DHAF_ECONFIG;
    }
    if (!S_ISREG(st.st_mode)) {
        dhaf_cfg_report_error(rep, 0, 0, NULL, "is not a regular file");
        close(fd);
        return DHAF_ECONFIG;
    }
    if (st.st_size > YTREE_MAX_FILE) {
        dhaf_cfg_report_error(rep, 0, 0, NULL,
                              "the file is %lld bytes; a config file may be at most %d bytes",
                              (long long)st.st_size, YTREE_MAX_FILE);
        close(fd);
        return DHAF_ECONFIG;
    }
    char *buf = dhaf_xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r < 0)
                dhaf_cfg_report_error(rep, 0, 0, NULL, "cannot read the config file: %s",
                                      strerror(errno));
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (got < (size_t)st.st_size && rep->n_errs) {
        free(buf);
        return DHAF_ECONFIG;
    }
    int rc = ytree_load_mem(buf, got, root, rep);
    free(buf);
    return rc;
}

const struct ynode *ynode_get(const struct ynode *map, const char *key,
                              const struct ynode **keynode)
{
    if (keynode)
        *keynode = NULL;
    if (!map || map->kind != YNODE_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const struct ynode *k = map->items[i];
        if (k->kind == YNODE_SCALAR && strcmp(k->str, key) == 0) {
            if (keynode)
                *keynode = k;
            return map->items[i + 1];
        }
    }
    return NULL;
}

bool ynode_is_null(const struct ynode *n)
{
    if (!n)
        return true;
    if (n->kind != YNODE_SCALAR || !n->plain)
        return false;
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcasecmp(n->str, "null") == 0;
}

const char *ynode_kind_name(const struct ynode *n)
{
    if (!n || ynode_is_null(n))
        return "nothing";
    switch (n->kind) {
    case YNODE_MAP:
        return "a mapping";
    case YNODE_SEQ:
        return "a list";
    case YNODE_SCALAR:
        break;
    }
    return "a value";
}
