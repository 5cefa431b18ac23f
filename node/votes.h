/* SPDX-License-Identifier: MIT */
/* Votes: one voter's opinion of every entry point, as stored at votes/<voter> (JSON), and the
 * pure tally that turns the fresh votes into per-entry-point health (DESIGN "Decision"). */
#ifndef DHAF_NODE_VOTES_H
#define DHAF_NODE_VOTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/probe.h"

#define VOTE_MAX_RESULTS 4096
#define VOTE_TEXT_MAX    256

struct vote_result {
    char *service;
    char *ep;
    bool healthy;
    char *reason;
    char *text;
    uint32_t latency_ms;
};

struct vote {
    char *voter;
    char *kind; /* "node" or "prober" */
    uint64_t seq;
    int64_t at_ms; /* the voter's wall clock: shown, never compared */
    struct vote_result *results;
    size_t n;
};

/** Encodes a probe round as vote JSON. Caller frees. */
char *vote_encode(const char *voter, const char *kind, uint64_t seq,
                  const struct dhaf_probe_result *r, size_t n);

/**
 * Decodes and validates vote JSON (text, len) from key `what`. Results naming services or
 * entry points that cfg does not have are dropped (an old voter may lag a reload); with cfg
 * NULL every result is kept. Results come out sorted by (service, entry point), one per pair.
 * Returns 0 with *v (release with vote_release) or DHAF_EINVAL with a clear message.
 */
int vote_decode(const char *text, size_t len, const char *what, const struct dhaf_config *cfg,
                struct vote *v, struct dhaf_err *err);

void vote_release(struct vote *v);

/** The result of v for (service, ep), or NULL (results are sorted by vote_decode). */
const struct vote_result *vote_find(const struct vote *v, const char *service, const char *ep);

/* What the fresh voters say about one entry point. */
struct ep_tally {
    unsigned healthy;   /* fresh voters that call it healthy */
    unsigned unhealthy; /* fresh voters that call it unhealthy */
    unsigned voters;    /* fresh voters that checked it */
    bool known;         /* voters > 0: there is a decision */
    bool is_healthy;    /* unhealthy iff a strict majority says so; a tie is healthy */
    char reasons[512];  /* distinct reasons of the unhealthy votes: "node-1: timeout ...; ..." */
};

/* A vote with the time this node last saw it rewritten (its own monotonic clock; 0 never). */
struct seen_vote {
    const struct vote *vote;
    int64_t seen_ms;
};

/**
 * The tally of one service's entry points (out has svc->n_eps entries, in priority order).
 * A vote counts while 0 < seen_ms and now_ms - seen_ms <= fresh_ms. Pure: no I/O, no clock.
 */
void tally_service(const struct dhaf_service *svc, const struct seen_vote *votes, size_t n,
                   int64_t now_ms, int64_t fresh_ms, struct ep_tally *out);

#endif
