/* SPDX-License-Identifier: MIT */
/* dhaf-sim's engine: one service's failover decisions over a world that changes in virtual
 * time, under three rules side by side, on the same world and the same random draws:
 *
 *  - dhaf: each voter behaves as the probe engine does (providers/include/dhaf/probe.h: a
 *    failure held until witnessed, burst checks on a suspicion, slow-check suspicion, rounds at
 *    even phases, a vote lease of VOTE_LEASE_TACTS tacts renewed as rounds end); its votes are
 *    encoded and decoded by node/votes.c, and the leader's own code decides on them
 *    (tally_votes, decide_round) on every tact and at once when a vote changes or expires;
 *  - original: the C# dhaf (shared/reference/dhaf-original.md 2.2-2.6): each node checks every
 *    tact (the web checker's two attempts), opinions without leases, liveness by heartbeat
 *    (every 5 s, alive for 30 s), an entry point healthy iff floor(H/2)+1 of the H live nodes
 *    say so (a tie is down, a live node without an opinion is down, stale opinions count), no
 *    damping, decided once a tact;
 *  - local: one checker at the first voter's vantage point, HAProxy-like (fall 1, rise 2, one
 *    attempt per check, every tact): traffic goes to the first entry point it holds up.
 *
 * A voter whose votes were recorded (SIM_VOTE, `dhaf-sim record`) is replayed instead of
 * modelled: under dhaf its votes are the recorded ones (present until their key went away);
 * under the original rule its opinions are the votes' and it is alive while its key exists;
 * the local checker, if it is the first voter, holds up what its vote calls healthy.
 *
 * The leader itself is not modelled: it is always there, 5 ms from etcd. Random draws come from
 * the world's seed, so a run is reproducible. Pure but for the trace it may print. */
#ifndef DHAF_SIM_H
#define DHAF_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dhaf/config.h"
#include "dhaf/err.h"

#define SIM_MAX_VOTERS   16
#define SIM_MAX_EPS      8
#define SIM_MAX_SWITCHES 256

/* What a backend (or a broken route to it) does to a check attempt. */
enum sim_backend {
    SIM_UP,      /* answers in 5-30 ms */
    SIM_REFUSED, /* fails at once (connection refused) */
    SIM_HUNG,    /* never answers: the attempt times out */
    SIM_SLOW,  /* answers in a normal draw of mean a and spread b ms: timed out past the timeout */
    SIM_FLAKY, /* each attempt refused with odds a, else up */
};

enum sim_change_kind {
    SIM_BACKEND,   /* entry point `ep` becomes `backend` */
    SIM_FROZEN,    /* voter stops (SIGSTOP): no check, no vote renewal, checks in flight lost */
    SIM_THAWED,    /* ... runs again: a round at once */
    SIM_CUT,       /* voter loses etcd: checks go on; votes, renewals and suspicions do not */
    SIM_JOINED,    /* ... reaches etcd again */
    SIM_NET,       /* voter's route to `ep` (-1: every entry point) does `backend` (SIM_UP: fine) */
    SIM_OVERLOAD,  /* voter stalls now and then (a: mean ms between stalls, b: longest stall) */
    SIM_CALM,      /* ... no more stalls */
    SIM_VOTE,      /* a recorded vote of voter: `vote` is its JSON as stored at votes/<voter>
                      (NULL: the key went away); such a voter is replayed, not modelled */
    SIM_N_CHANGES, /* (count) */
};

struct sim_change {
    int64_t at_ms;
    enum sim_change_kind kind;
    int voter; /* the voter it is about (not for SIM_BACKEND) */
    int ep;    /* SIM_BACKEND, SIM_NET (-1: every one) */
    enum sim_backend backend;
    double a, b;
    size_t line;      /* the timeline line it was read from (0: made in code) */
    const char *vote; /* SIM_VOTE (owned by the world when parsed) */
};

struct sim_world {
    const struct sim_change *changes; /* sorted by at_ms (sim_run refuses them otherwise) */
    size_t n_changes;
    int64_t end_ms;
    uint64_t seed;
};

enum sim_rule { SIM_DHAF, SIM_ORIGINAL, SIM_LOCAL, SIM_N_RULES };

struct sim_opts {
    const struct dhaf_config *cfg;  /* tact, damping, flap, min-voters */
    const struct dhaf_service *svc; /* its entry points (at most SIM_MAX_EPS) */
    int timeout_ms;                 /* of one check attempt */
    int retries;                    /* dhaf's attempts after a failed first one */
    size_t n_voters;                /* 1..SIM_MAX_VOTERS */
    const char *const *voter_names; /* NULL: node-1, node-2, ... */
    int etcd_ms;                    /* from a write to the watchers (0: 5) */
    int switch_ms;                  /* a switcher call (0: 5) */
    FILE *trace;                    /* each rule's events as they happen (NULL: none) */
    bool trace_votes;               /* ... and every vote dhaf's leader hears */
};

struct sim_switch {
    int64_t at_ms; /* when the switch landed */
    int from, to;
    const char *kind; /* "failover", "switching", "switchover" (static) */
};

struct sim_outcome {
    struct sim_switch sw[SIM_MAX_SWITCHES];
    size_t n_sw; /* switches landed (those past SIM_MAX_SWITCHES are counted, not kept) */
    int current; /* where traffic is at the end */
    size_t n_decisions;
};

/** The name of a rule: "dhaf", "original", "local". */
const char *sim_rule_name(enum sim_rule r);

/**
 * Runs the world under every rule from time 0 (traffic on the first entry point, every backend
 * up, every voter running) to w->end_ms. Returns 0 with out[SIM_N_RULES] filled, or DHAF_EINVAL
 * when the options or the world are not usable (the message says which).
 */
int sim_run(const struct sim_opts *o, const struct sim_world *w,
            struct sim_outcome out[SIM_N_RULES], struct dhaf_err *err);

/**
 * Reads a timeline (text, one change a line; docs/simulate.md) naming svc's entry points and
 * the voters in names. Returns 0 with *w filled (sim_world_release) or DHAF_EINVAL naming the
 * line and what was wrong in it.
 */
int sim_timeline_parse(const char *text, const char *what, const struct dhaf_service *svc,
                       const char *const *names, size_t n_voters, struct sim_world *w,
                       struct dhaf_err *err);

/** The engine's random numbers (splitmix64 on *state): the next 64 bits, and a draw in
 *  [0, 1). For worlds generated by the same rule as the engine's own draws. */
uint64_t sim_random(uint64_t *state);
double sim_random_unit(uint64_t *state);

/**
 * A command-line option's whole number in [lo, hi] into *out: 0, or 2 (the usage exit code)
 * after "PROG: OPT wants a whole number from LO to HI, not "VALUE"" on stderr.
 */
int sim_option_long(const char *prog, const char *opt, const char *value, long lo, long hi,
                    long *out);

/** Frees what a parsed world holds (its changes and their votes) and zeroes it. */
void sim_world_release(struct sim_world *w);

/**
 * The voters a timeline declares on a line "voters NAME..." (dhaf-sim record writes one):
 * up to max names (pointers into buf, which gets a copy of that line). Returns their number,
 * 0 when the timeline has no such line.
 */
size_t sim_timeline_voters(const char *text, char *buf, size_t len, const char **names, size_t max);

#endif
