/* SPDX-License-Identifier: MIT */
/* The decision engine: a pure function from (the service's config, the tally of fresh votes,
 * the service state, the switchover request) to one action and the notifications to send.
 * No I/O, no clock: DESIGN "Decision" is its specification, tests/unit/test_decide.c its
 * table. */
#ifndef DHAF_NODE_DECIDE_H
#define DHAF_NODE_DECIDE_H

#include <stdbool.h>
#include <stddef.h>

#include "dhaf/config.h"
#include "events.h"
#include "votes.h"

#define DECIDE_MAX_EPS    64
#define DECIDE_MAX_EVENTS (DECIDE_MAX_EPS + 8)

enum ep_health { EP_UNKNOWN = 0, EP_UP = 1, EP_DOWN = 2 };

/* What etcd's services/<svc>/state says (the parts decide reads). */
struct decide_state {
    int current;                        /* index of the current EP; -1 = none known */
    bool panic;                         /* all EPs were down */
    bool quorum;                        /* there were enough fresh voters (struct quorum) */
    int would_action;                   /* paused: the switch announced as would-switch */
    int would_target;                   /* (enum action_kind, EP index; 0 and -1: none) */
    enum ep_health eps[DECIDE_MAX_EPS]; /* last announced health of each EP */
};

/* The switchover request at services/<svc>/switchover. */
enum request_kind { REQ_NONE = 0, REQ_EP, REQ_UNKNOWN_EP };

struct decide_request {
    enum request_kind kind;
    int ep;                       /* REQ_EP: its index */
    bool drained[DECIDE_MAX_EPS]; /* an operator drained it: never a target */
    /* Damping of switching back (config and the leader's memory; zeros: none): how long each
     * EP has been healthy by a strict majority (-1: it is not), how long that must be before
     * traffic goes back to it, and whether it goes back at all. */
    int64_t strict_up_ms[DECIDE_MAX_EPS];
    int64_t switch_back_ms;
    bool manual_failback;
    bool flapping[DECIDE_MAX_EPS]; /* held down by its flap penalty: a target only when no
                                      other healthy entry point is */
};

enum action_kind { ACT_NONE = 0, ACT_FAILOVER, ACT_SWITCHOVER, ACT_SWITCHING };

struct decide_event {
    enum event_kind kind; /* EVK_EP_DOWN, EVK_EP_UP, EVK_SERVICE_DOWN, EVK_SERVICE_UP,
                             EVK_NO_QUORUM, EVK_QUORUM, EVK_SWITCHOVER_PURGED */
    int ep;               /* the EP it is about, -1 if none */
    const char *why;      /* switchover-purged: why; static text */
};

struct decide_output {
    enum action_kind action;
    int target;               /* ACT_*: the EP to switch to */
    bool purge_request;       /* delete services/<svc>/switchover */
    struct decide_state next; /* the state to store (current is changed by the switch only) */
    struct decide_event events[DECIDE_MAX_EVENTS];
    size_t n_events;
    const char *rule; /* which rule decided, in words (static): for explain */
};

/**
 * Decides for one service. tally has svc->n_eps entries (priority = config order); q says
 * whether enough voters are fresh (fewer than q->need: no decision, announced once). Pure.
 */
void decide(const struct dhaf_service *svc, const struct ep_tally *tally, const struct quorum *q,
            const struct decide_state *state, const struct decide_request *req,
            struct decide_output *out);

/** The parts of a services/<svc>/state record (j; NULL or not an object: nothing known) that
 *  decide() reads. */
void decide_state_from_json(const struct dhaf_service *svc, const json_t *j,
                            struct decide_state *st);

/** The damping settings of cfg into req (dhaf.switch-back-delay in ms, auto-switch-back). */
void decide_damping(const struct dhaf_config *cfg, struct decide_request *req);

/* An entry point's flap penalty (the leader's memory). */
struct flap {
    float penalty; /* +1 per time it went down, halving every half-life */
    int64_t at_ms; /* when penalty was last brought up to date (monotonic ms; 0: never) */
    bool held;     /* held down: penalty reached the threshold, not yet below half of it */
};

/**
 * Brings f up to now_ms (the penalty decays), adds 1 when the entry point went down just now,
 * and holds it down at threshold, releasing it below threshold/2 (threshold 0: off, f
 * cleared). Returns true when held changed. Pure but for f.
 */
bool flap_update(struct flap *f, int64_t now_ms, bool went_down, int threshold, int half_life_s);

/* The leader's memory of one service between its rounds (not in etcd: a new leader starts
 * afresh). */
struct decide_memory {
    int64_t strict_up_since[DECIDE_MAX_EPS]; /* monotonic ms each EP became healthy by a strict
                                                majority (0: it is not) */
    struct flap *flap;                       /* one per EP (n_flap): its flap penalty */
    size_t n_flap;
};

/**
 * One round of the leader for one service, as dhaf-node and dhaf-sim both run it: the damping
 * inputs from cfg and mem into req (how long each EP has been healthy by a strict majority,
 * the switch-back delay, flap holds), decide(), then - paused - the action shown as a
 * would-switch instead (once per different action; a purge waits), and the flap penalties
 * brought up to now_ms from the entry points that went down. flap_changed (svc->n_eps
 * entries) tells which holds changed: announce them. Pure but for mem.
 */
void decide_round(const struct dhaf_config *cfg, const struct dhaf_service *svc,
                  const struct ep_tally *t, const struct quorum *q, const struct decide_state *st,
                  struct decide_request *req, bool paused, int64_t now_ms,
                  struct decide_memory *mem, struct decide_output *out, bool *flap_changed);

/** "failover", "switchover", "switching", "none". */
const char *action_name(enum action_kind a);

#endif
