/* SPDX-License-Identifier: MIT */
/* Votes: one voter's opinion of every entry point, as stored at votes/<voter> (JSON), and the
 * pure tally that turns the fresh votes into per-entry-point health (DESIGN "Decision").
 *
 * A vote is written only when an opinion changes (vote_same tells) and lives on the voter's
 * vote lease, which the voter's probe loop renews as its checks end (once a tact): a vote is fresh
 * while its key exists. The encoding is compact - a reason only for a failing check, its text
 * bounded - so that a vote of 3,000 entry points stays well under etcd's request limit. */
#ifndef DHAF_NODE_VOTES_H
#define DHAF_NODE_VOTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/probe.h"
#include "dhaf/v1/prober.pb-c.h"

#define VOTE_MAX_RESULTS 4096
#define VOTE_LEASE_TACTS 3   /* a vote's lease: this many tacts, renewed by its voter */
#define VOTE_TEXT_MAX    256 /* longest text accepted from a vote */
#define VOTE_TEXT_WRITE  120 /* longest text written into one */

/* The strings of a decoded vote live in its pool (one block per few hundred results, not
 * four allocations each: a node holds every voter's vote of every entry point). */
struct vote_result {
    const char *service;
    const char *ep;
    bool healthy;
    const char *reason; /* "" for a healthy result */
    const char *text;
};

struct vote {
    char *voter;
    char *kind; /* "node" or "prober" */
    uint64_t seq;
    int64_t at_ms; /* the voter's wall clock: shown, never compared */
    bool impaired; /* the voter's own vantage point looks broken: the vote counts for nothing */
    struct vote_result *results;
    size_t n;
    struct vote_pool *pool; /* where the results' strings live */
};

/**
 * A remote prober's report as a probe round (for vote_encode), checked against cfg: a seq a
 * vote can hold (at most INT64_MAX), at most VOTE_MAX_RESULTS results, each naming an entry point
 * cfg has, with a reason code that is empty or a name of at most 32 characters; texts are copied
 * cleaned (dhaf_utf8_clean). Returns the array of req->n_results (caller frees; service, ep and
 * reason point into req), or NULL with DHAF_EINVAL in err: then nothing of the report may be
 * written.
 */
struct dhaf_probe_result *vote_from_report(const struct dhaf_config *cfg,
                                           const Dhaf__V1__ReportRequest *req,
                                           struct dhaf_err *err);

/**
 * Whether a round says more about the vantage point than about the services: at least two
 * entry points checked and every one of them failing (DESIGN "Decision": impaired vantage
 * points abstain). A voter whose network, resolver or CPU is broken sees everything fail; the
 * services' own outages rarely take every entry point of every service at once, and then there
 * is nothing to switch to anyway.
 */
bool vote_round_impaired(const struct dhaf_probe_result *r, size_t n);

/** Encodes a probe round as vote JSON (results not yet known are left out; texts cut at
 *  VOTE_TEXT_WRITE bytes on a character boundary; "impaired": true when
 *  vote_round_impaired). Caller frees. */
char *vote_encode(const char *voter, const char *kind, uint64_t seq,
                  const struct dhaf_probe_result *r, size_t n);

/**
 * True when v (decoded) says what the round r says: the same entry points, each with the same
 * opinion and, when failing, the same reason code - what dhaf_probe_digest covers (texts and
 * latencies are not compared: a vote is not rewritten because a timeout took 1001 ms instead
 * of 1002).
 */
bool vote_same(const struct vote *v, const struct dhaf_probe_result *r, size_t n);

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

/**
 * The tally of one service's entry points (out has svc->n_eps entries, in priority order)
 * from the votes given: the caller passes the fresh ones (those whose key exists). Returns how
 * many of the votes have a result for the service (its fresh voters). Pure.
 */
unsigned tally_service(const struct dhaf_service *svc, const struct vote *const *votes, size_t n,
                       struct ep_tally *out);

/* How many voters a service's decision rests on (DESIGN "Decision", quorum of expected
 * voters): no decision while fresh < need. */
struct quorum {
    unsigned fresh;    /* fresh voters with a result for the service, impaired ones left out */
    unsigned impaired; /* fresh voters whose vote is impaired (they count for nothing) */
    bool all_impaired; /* every fresh voter is impaired: their votes are the tally (see
                          view_tally); fresh counts them, impaired is 0 */
    unsigned expected; /* configured probers + member nodes that probe */
    unsigned need;     /* dhaf.min-voters, else a strict majority of expected; at least 1 */
};

/**
 * The tally of svc from every fresh vote (impaired ones included) and its quorum for expected
 * voters: impaired votes count for nothing, unless every fresh voter is impaired - then they
 * are the tally (all down: panic, announced; nothing is switched). What the leader's view
 * and dhaf-sim both run. Returns the fresh voters tallied. Pure; q may be NULL.
 */
unsigned tally_votes(const struct dhaf_config *cfg, const struct dhaf_service *svc,
                     const struct vote *const *votes, size_t n, unsigned expected,
                     struct ep_tally *out, struct quorum *q);

/** True when v has a result for an entry point of svc. */
bool vote_has_service(const struct vote *v, const struct dhaf_service *svc);

/** need for expected voters under cfg (see struct quorum). */
unsigned quorum_need(const struct dhaf_config *cfg, unsigned expected);

#endif
