/* SPDX-License-Identifier: MIT */
/* The node-wide view: every node, leader or not, keeps in memory what etcd holds under the
 * cluster prefix - the leader key, members, alive nodes and their config hashes, probers,
 * votes, service states, switchover requests and the event history - fed by ONE watch. It
 * survives terms and reloads: a new or reloaded leader starts with every vote it has seen,
 * and the status APIs read it instead of etcd. While etcd is out of reach the view is kept
 * and marked stale with its age.
 *
 * Changes are pushed: a part subscribes a waker to the topics it cares about and is kicked
 * when one changes. Readers take the read lock (memory work only, never across I/O); the
 * view's own thread takes the write lock to apply a watch response. */
#ifndef DHAF_NODE_VIEW_H
#define DHAF_NODE_VIEW_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "dhaf/clock.h"
#include "dhaf/config.h"
#include "store.h"
#include "votes.h"

struct view;

enum view_topic {
    VIEW_LEADER = 1u << 0,   /* the leader key */
    VIEW_MEMBERS = 1u << 1,  /* members/, alive/, config/ and config-drift */
    VIEW_PROBERS = 1u << 2,  /* probers/ */
    VIEW_VOTES = 1u << 3,    /* votes/ */
    VIEW_SERVICES = 1u << 4, /* services/<svc>/state and services/<svc>/switchover */
    VIEW_EVENTS = 1u << 5,   /* events/ */
    VIEW_SYNC = 1u << 6,     /* the view became stale, or synced again */
    VIEW_ALL = (1u << 7) - 1,
};

struct view_opts {
    struct store store;             /* copied; its instance must outlive the view */
    const struct dhaf_clock *clock; /* borrowed */
    const char *prefix;             /* "/dhaf/<cluster>/" (copied) */
    int progress_ms;                /* a quiet watch asks etcd for progress this often */
    int stale_ms;                   /* not hearing from etcd this long makes the view stale */
    int check_ms; /* this often a cheap read checks that the watch keeps up (0: 5000) */
};

/** A view (not loaded yet). NULL never; free with view_free. */
struct view *view_new(const struct view_opts *o);

/** Starts the view's thread (load, then watch). Returns 0 or DHAF_EINTERNAL. */
int view_start(struct view *v, struct dhaf_err *err);

/** Tells the thread to end after its current wait (without waiting for it). */
void view_quit(struct view *v);

/** Stops the thread within about deadline_ms; false when it is still stuck in a call (then
 *  the view must not be freed: the process is exiting). */
bool view_stop(struct view *v, int deadline_ms);

/** Frees a stopped (or never started) view. NULL is fine. */
void view_free(struct view *v);

/**
 * One round of the view's work: loads everything when it has no watch (at start, after a
 * compaction), applies what the watch delivers within timeout_ms, asks for progress when the
 * watch has been quiet for progress_ms, and updates the synced/stale state. The thread loops
 * on it; unit tests call it with timeout 0 in virtual time.
 */
void view_step(struct view *v, int timeout_ms);

/** Kicks w with bits whenever one of topics changes. w is borrowed until view_unsubscribe. */
void view_subscribe(struct view *v, struct dhaf_waker *w, unsigned topics, unsigned bits);
void view_unsubscribe(struct view *v, struct dhaf_waker *w);

/**
 * Burst confirmation (suspects.h): fn is called from the view's thread for every suspect/<svc>/<ep>
 * written while the view watches (not for those found by a load: they are old news), with the
 * voter the value names ("" when it names none). It must be quick (no I/O). At most
 * VIEW_SUSPECT_HOOKS hooks (false when full); view_off_suspect removes one (after it returns,
 * that fn is not running).
 */
#define VIEW_SUSPECT_HOOKS 4
typedef void (*view_suspect_fn)(void *ud, const char *svc, const char *ep, const char *voter);
bool view_on_suspect(struct view *v, view_suspect_fn fn, void *ud);
void view_off_suspect(struct view *v, view_suspect_fn fn, void *ud);

/* ---- reading: every accessor below needs the read lock held (view_rdlock .. view_unlock);
 * pointers they return are valid until view_unlock. */

void view_rdlock(struct view *v);
void view_unlock(struct view *v);

struct view_sync {
    bool loaded;      /* etcd was read at least once */
    bool synced;      /* etcd was heard from within stale_ms */
    int64_t age_ms;   /* since etcd was last heard from (0 when never loaded: see loaded) */
    int64_t revision; /* the etcd revision the view reflects */
    int64_t since_ms; /* monotonic time the current synced period began */
};

struct view_sync view_sync(const struct view *v);

/* One record of a set: its name (the key's last part, or the service for states and
 * requests), its JSON (NULL when the value was not a JSON object) and etcd's numbers. */
struct view_rec {
    char *name;
    json_t *j;
    int64_t create_rev, mod_rev, lease;
};

/* VS_DRAINED: services/<svc>/drained/<ep>, named "<svc>/<ep>"; VS_CONTROL: control/<name>
 * ("pause"); VS_CONFIG: config/<node> (each node's config hash, cfgdrift.h); VS_DRIFT: the one
 * record config-drift (the drift the leader last announced). Both are VIEW_MEMBERS news. */
enum view_set {
    VS_MEMBERS,
    VS_ALIVE,
    VS_PROBERS,
    VS_STATE,
    VS_REQUEST,
    VS_DRAINED,
    VS_CONTROL,
    VS_CONFIG,
    VS_DRIFT,
    VS_N
};

size_t view_count(const struct view *v, enum view_set set);
/** Records in name order. */
const struct view_rec *view_at(const struct view *v, enum view_set set, size_t i);
const struct view_rec *view_find(const struct view *v, enum view_set set, const char *name);

/** The record of services/<svc>/drained/<ep> ({actor, role, peer, comment?, at}), or NULL. */
const struct view_rec *view_drained(const struct view *v, const char *svc, const char *ep);

struct decide_request; /* decide.h */

/** The operator's input for svc as the view has it (for decide()): the switchover request
 *  (*mod_rev: its revision, 0 when none) and the drained entry points; the damping fields
 *  are left zero for the caller. */
void view_request(const struct view *v, const struct dhaf_service *svc, struct decide_request *req,
                  int64_t *mod_rev);

/** The leader key's record (name "leader", create_rev = epoch); NULL when nobody leads. */
const struct view_rec *view_leader(const struct view *v);

/* A voter's vote as the view holds it. */
struct view_vote {
    char *name;       /* the key's last part */
    struct vote vote; /* valid only when ok */
    bool ok;          /* the value decoded as a vote of this voter */
    int64_t seen_ms;  /* monotonic time it was last written while watched; 0 never (shown only) */
    int64_t mod_rev, lease;
};

size_t view_voters(const struct view *v);
/* Voters are in name order. */
/** The vote of voter, or NULL. */
const struct view_vote *view_vote_of(const struct view *v, const char *voter);
const struct view_vote *view_voter_at(const struct view *v, size_t i);

/** The tally of svc's entry points (out: svc->n_eps entries) from the votes in the view: a
 *  vote is fresh while its key exists (it lives on its voter's vote lease, renewed by the
 *  voter's probe loop each round, so a voter that stalls loses it within the lease's TTL).
 *  q (may be NULL) gets the quorum: the service's fresh voters against the voters expected -
 *  cfg's probers and the member nodes that probe, alive or not (a frozen node is still
 *  expected; a decommissioned one is no member). Impaired votes are left out - unless every
 *  fresh vote is impaired: then they are the tally (all down: panic, service-down), and
 *  q->all_impaired says so. */
void view_tally(const struct view *v, const struct dhaf_config *cfg, const struct dhaf_service *svc,
                struct ep_tally *out, struct quorum *q);

/**
 * True when the view may be decided on: it is synced, and every voter that should vote (alive
 * nodes that probe, probers that report) has a vote in it - or window_ms (the vote lease's TTL:
 * a voter silent that long is not voting) has passed since the current synced period began, or
 * since since_ms when later (the term's start). Deciding before the voters have all spoken
 * would count the first ones to write as the electorate.
 */
bool view_tally_complete(const struct view *v, int64_t window_ms, int64_t since_ms);

/* An event record from events/<seq>, kept as its text (a parsed tree costs about five times
 * as much, and the view may hold thousands while a notifier is down). */
struct view_event {
    uint64_t seq;
    const char *kind;    /* "" when the record has none */
    const char *service; /* NULL: a cluster event */
    char *text;          /* the record's JSON object; kind and service live in the same block */
    size_t len;
};

size_t view_events(const struct view *v);
/** Events in seq order (oldest first). */
const struct view_event *view_event_at(const struct view *v, size_t i);
/** The record of e parsed (a new reference: json_decref it), NULL if out of memory. */
json_t *view_event_json(const struct view_event *e);
/** Index of the first event with a seq greater than seq (view_events() when none). */
size_t view_event_after(const struct view *v, uint64_t seq);

/** The event counter (event-seq) as last seen: its value and mod revision (0, 0: none). */
void view_event_counter(const struct view *v, uint64_t *seq, int64_t *mod_rev);

#define VIEW_EVENTS_MAX 20000 /* newest event records kept in memory */

#endif
