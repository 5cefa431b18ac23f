/* SPDX-License-Identifier: MIT */
/* The config hash: the shared parts of a config as one canonical JSON document, hashed with
 * SHA-256 (as a whole and part by part). */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfghash.h"
#include "dhaf/alloc.h"
#include "dhaf/err.h"
#include "dhaf/json.h"

/* Bumped when the document's shape changes: nodes of two versions then differ visibly instead
 * of agreeing by accident. */
#define CFGHASH_FORMAT 1

static const char *const part_names[CFGP_N] = {"decision", "services", "probers", "notifiers"};

const char *cfghash_part_name(enum cfghash_part p)
{
    return (unsigned)p < CFGP_N ? part_names[p] : "?";
}

/* A provider section: its type, name (notifiers), every key that has a value (defaults
 * included, so that writing a default out or leaving it implied is the same) and, for
 * checkers, rise and fall. */
static json_t *section_doc(const struct dhaf_section *s, bool checker)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(s->type ? s->type : ""));
    if (s->name)
        json_object_set_new(o, "name", json_string(s->name));
    json_t *keys = json_object();
    dhaf_cfgkeys_to_json(s->keys, s->conf, keys);
    json_object_set_new(o, "settings", keys);
    if (checker) {
        json_object_set_new(o, "rise", json_integer(s->rise));
        json_object_set_new(o, "fall", json_integer(s->fall));
    }
    return o;
}

static json_t *decision_doc(const struct dhaf_config *c)
{
    /* what decides when and how traffic moves, and the leases every node's timing rests on */
    return json_pack(
        "{s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:i, s:i, s:i, s:i, s:i, s:i}", "tact-interval",
        c->tact_interval, "tact-post-switch-delay", c->tact_post_switch_delay,
        "healthy-node-status-ttl", c->healthy_node_status_ttl, "heartbeat-interval",
        c->heartbeat_interval, "min-voters", c->min_voters, "switch-back-delay",
        c->switch_back_delay, "auto-switch-back", c->auto_switch_back, "flap-threshold",
        c->flap_threshold, "flap-half-life", c->flap_half_life, "provider-check-interval",
        c->provider_check_interval, "leader-key-ttl", c->etcd.leader_key_ttl, "compaction-interval",
        c->etcd.compaction_interval, "compaction-retention", c->etcd.compaction_retention);
}

static int by_svc_name(const void *a, const void *b)
{
    const struct dhaf_service *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static json_t *services_doc(const struct dhaf_config *c)
{
    const struct dhaf_service **order = dhaf_xcalloc(c->n_services + 1, sizeof(*order));
    for (size_t i = 0; i < c->n_services; i++)
        order[i] = &c->services[i];
    /* the list's order means nothing (a service is found by name); entry points' does */
    qsort(order, c->n_services, sizeof(*order), by_svc_name);
    json_t *a = json_array();
    for (size_t i = 0; i < c->n_services; i++) {
        const struct dhaf_service *s = order[i];
        json_t *eps = json_array();
        for (size_t e = 0; e < s->n_eps; e++)
            json_array_append_new(eps, json_pack("{s:s, s:s}", "name", s->eps[e].name, "ip",
                                                 s->eps[e].ip ? s->eps[e].ip : ""));
        json_array_append_new(a, json_pack("{s:s, s:s, s:o, s:o, s:o}", "name", s->name, "domain",
                                           s->domain ? s->domain : "", "entry-points", eps,
                                           "switcher", section_doc(&s->switcher, false),
                                           "health-checker", section_doc(&s->checker, true)));
    }
    free(order);
    return a;
}

static int by_prober_name(const void *a, const void *b)
{
    const struct dhaf_prober_cfg *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static json_t *probers_doc(const struct dhaf_config *c)
{
    const struct dhaf_prober_cfg **order = dhaf_xcalloc(c->n_probers + 1, sizeof(*order));
    for (size_t i = 0; i < c->n_probers; i++)
        order[i] = &c->probers[i];
    qsort(order, c->n_probers, sizeof(*order), by_prober_name);
    json_t *a = json_array();
    for (size_t i = 0; i < c->n_probers; i++) {
        /* the token is a secret: it reaches the digest, never the record */
        json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "name", order[i]->name, "token",
                                           order[i]->token ? order[i]->token : "", "location",
                                           order[i]->location ? order[i]->location : ""));
    }
    free(order);
    return a;
}

static int by_text(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static json_t *notifiers_doc(const struct dhaf_config *c)
{
    /* notifiers are all told every event: their order means nothing */
    char **texts = dhaf_xcalloc(c->n_notifiers + 1, sizeof(*texts));
    for (size_t i = 0; i < c->n_notifiers; i++) {
        const struct dhaf_section *n = &c->notifiers[i];
        json_t *s = section_doc(n, false);
        /* what it is told: its filters and repeat window (a set of kinds: sorted) */
        json_t *kinds = json_array();
        char **ev = dhaf_xcalloc(n->events.n + 1, sizeof(*ev));
        for (size_t k = 0; k < n->events.n; k++)
            ev[k] = n->events.v[k];
        qsort(ev, n->events.n, sizeof(*ev), by_text);
        for (size_t k = 0; k < n->events.n; k++)
            json_array_append_new(kinds, json_string(ev[k]));
        free(ev);
        json_object_set_new(s, "events", kinds);
        json_object_set_new(s, "min-severity", json_integer(n->min_severity));
        json_object_set_new(s, "repeat-window", json_integer(n->repeat_window));
        texts[i] = json_dumps(s, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(s);
        if (!texts[i])
            texts[i] = dhaf_xstrdup("");
    }
    qsort(texts, c->n_notifiers, sizeof(*texts), by_text);
    json_t *a = json_array();
    for (size_t i = 0; i < c->n_notifiers; i++) {
        json_t *s = json_loads(texts[i], 0, NULL);
        json_array_append_new(a, s ? s : json_null());
        free(texts[i]);
    }
    free(texts);
    return a;
}

json_t *cfghash_document(const struct dhaf_config *cfg)
{
    return json_pack("{s:i, s:o, s:o, s:o, s:o}", "format", CFGHASH_FORMAT,
                     part_names[CFGP_DECISION], decision_doc(cfg), part_names[CFGP_SERVICES],
                     services_doc(cfg), part_names[CFGP_PROBERS], probers_doc(cfg),
                     part_names[CFGP_NOTIFIERS], notifiers_doc(cfg));
}

/* SHA-256 of j's canonical text (sorted keys, no spaces) in hex, cut to len - 1 digits. */
static int digest(const json_t *j, char *hex, size_t len)
{
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (!text)
        return DHAF_EINTERNAL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int ok = EVP_Digest(text, strlen(text), md, &n, EVP_sha256(), NULL);
    free(text);
    if (ok != 1)
        return DHAF_EINTERNAL;
    size_t w = 0;
    for (unsigned int i = 0; i < n && w + 2 < len; i++, w += 2)
        snprintf(hex + w, 3, "%02x", md[i]);
    hex[w < len ? w : len - 1] = '\0';
    return 0;
}

int cfghash_compute(const struct dhaf_config *cfg, struct cfghash *out)
{
    memset(out, 0, sizeof(*out));
    json_t *doc = cfghash_document(cfg);
    if (!doc)
        return DHAF_EINTERNAL;
    int rc = digest(doc, out->hash, sizeof(out->hash));
    for (int p = 0; p < CFGP_N && rc == 0; p++)
        rc = digest(json_object_get(doc, part_names[p]), out->parts[p], sizeof(out->parts[p]));
    json_decref(doc);
    return rc;
}

char *cfghash_record(const struct cfghash *h, uint64_t generation)
{
    json_t *parts = json_object();
    for (int p = 0; p < CFGP_N; p++)
        json_object_set_new(parts, part_names[p], json_string(h->parts[p]));
    json_t *j = json_pack("{s:s, s:I, s:o}", "hash", h->hash, "generation", (json_int_t)generation,
                          "parts", parts);
    char *text = dhaf_json_dump(j);
    json_decref(j);
    return text;
}
