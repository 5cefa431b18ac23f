/* SPDX-License-Identifier: MIT */
/* The decision engine (pure): failover, switchover, switching, panic and quorum. */
#include <math.h>
#include <string.h>

#include "dhaf/json.h"

#include "decide.h"

const char *action_name(enum action_kind a)
{
    switch (a) {
    case ACT_FAILOVER:
        return "failover";
    case ACT_SWITCHOVER:
        return "switchover";
    case ACT_SWITCHING:
        return "switching";
    case ACT_NONE:
        break;
    }
    return "none";
}

static void emit(struct decide_output *out, enum event_kind kind, int ep, const char *why)
{
    if (out->n_events < DECIDE_MAX_EVENTS)
        out->events[out->n_events++] = (struct decide_event){kind, ep, why};
}

static enum ep_health health_of(const struct ep_tally *t)
{
    if (!t->known)
        return EP_UNKNOWN;
    return t->is_healthy ? EP_UP : EP_DOWN;
}

void decide(const struct dhaf_service *svc, const struct ep_tally *tally, const struct quorum *q,
            const struct decide_state *state, const struct decide_request *req,
            struct decide_output *out)
{
    memset(out, 0, sizeof(*out));
    out->next = *state;
    out->target = -1;
    size_t n = svc->n_eps < DECIDE_MAX_EPS ? svc->n_eps : DECIDE_MAX_EPS;

    /* Too few fresh voters (fewer than a strict majority of those expected, or than
     * dhaf.min-voters), or none that checked any entry point: no decision, everything stays as
     * it is. A lone voter - the last node up, or one cut off with its own view - must not
     * decide for the cluster. */
    bool quorum = q->fresh >= q->need && q->fresh > 0;
    bool checked = false;
    for (size_t e = 0; e < n; e++)
        checked |= tally[e].known;
    quorum &= checked;
    if (!quorum) {
        if (state->quorum)
            emit(out, EVK_NO_QUORUM, -1, NULL);
        out->next.quorum = false;
        out->rule = "no quorum: too few fresh voters, nothing is decided";
        return;
    }
    if (!state->quorum)
        emit(out, EVK_QUORUM, -1, NULL);
    out->next.quorum = true;

    /* Health transitions of each entry point, announced once (the state remembers). */
    int best = -1;   /* highest-priority healthy EP that is not drained: the target */
    int calm = -1;   /* ... and not held down for flapping: preferred */
    bool up = false; /* any EP healthy, drained or not: the service is not down */
    for (size_t e = 0; e < n; e++) {
        enum ep_health h = health_of(&tally[e]);
        up |= h == EP_UP;
        if (h == EP_UP && best < 0 && !req->drained[e])
            best = (int)e;
        if (h == EP_UP && calm < 0 && !req->drained[e] && !req->flapping[e])
            calm = (int)e;
        if (h != EP_UNKNOWN && h != state->eps[e])
            emit(out, h == EP_UP ? EVK_EP_UP : EVK_EP_DOWN, (int)e, NULL);
        if (h != EP_UNKNOWN)
            out->next.eps[e] = h;
    }

    /* An entry point that flaps is a target only when no other healthy one is. */
    bool flap_skipped = calm >= 0 && calm != best;
    if (calm >= 0)
        best = calm;

    /* Panic: no entry point is healthy. Nothing is switched; the service is down. */
    bool panic = !up;
    if (panic != state->panic)
        emit(out, panic ? EVK_SERVICE_DOWN : EVK_SERVICE_UP, -1, NULL);
    out->next.panic = panic;

    int cur = state->current >= 0 && (size_t)state->current < n ? state->current : -1;
    enum ep_health cur_h = cur >= 0 ? health_of(&tally[cur]) : EP_UNKNOWN;

    /* A request that cannot be honoured is purged (and said so), whatever else happens. */
    bool pinned = false;
    if (req->kind == REQ_UNKNOWN_EP ||
        (req->kind == REQ_EP && (req->ep < 0 || (size_t)req->ep >= n))) {
        out->purge_request = true;
        emit(out, EVK_SWITCHOVER_PURGED, -1, "the requested entry point is not configured");
    } else if (req->kind == REQ_EP && req->drained[req->ep]) {
        out->purge_request = true;
        emit(out, EVK_SWITCHOVER_PURGED, req->ep, "the requested entry point is drained");
    } else if (req->kind == REQ_EP) {
        enum ep_health rh = health_of(&tally[req->ep]);
        if (rh != EP_UP) {
            out->purge_request = true;
            emit(out, EVK_SWITCHOVER_PURGED, req->ep,
                 rh == EP_DOWN ? "the requested entry point is unhealthy"
                               : "no voter has checked the requested entry point");
        } else {
            pinned = true;
        }
    }
    if (panic || best < 0) { /* down, or only drained entry points are up: nowhere to go */
        out->rule = panic ? "panic: no entry point is healthy, nothing is switched"
                          : "only drained entry points are healthy: nowhere to switch to";
        return;
    }

    /* No current entry point yet (a new service, or the provider points nowhere we know):
     * send traffic where the operator asked, else to the highest priority. */
    if (cur < 0) {
        out->action = pinned ? ACT_SWITCHOVER : ACT_SWITCHING;
        out->target = pinned ? req->ep : best;
        out->rule = pinned ? "no current entry point: the requested one"
                           : "no current entry point: the highest-priority healthy one";
        return;
    }

    /* Failover: the current entry point is down. Goes to the highest-priority healthy one and
     * purges a switchover request, as the original did. */
    if (cur_h == EP_DOWN) {
        out->action = ACT_FAILOVER;
        out->target = best;
        out->rule = "failover: a majority of the fresh voters says the current entry point is "
                    "down; to the highest-priority healthy one";
        if (req->kind == REQ_EP && !out->purge_request) {
            out->purge_request = true;
            emit(out, EVK_SWITCHOVER_PURGED, req->ep, "a failover took precedence");
        }
        return;
    }

    /* Switchover: a healthy requested EP other than the current one. A fulfilled request
     * stays as a pin: no automatic switching while it exists. */
    if (pinned) {
        if (req->ep != cur) {
            out->action = ACT_SWITCHOVER;
            out->target = req->ep;
        }
        out->rule = req->ep != cur ? "switchover: an operator asked for a healthy entry point"
                                   : "pinned: a switchover request holds traffic here (purge "
                                     "it to let dhaf switch back)";
        return;
    }

    /* Drained: traffic leaves the current entry point for the best one, gracefully (it is
     * healthy: nothing is lost on the way). */
    if (req->drained[cur]) {
        out->action = ACT_SWITCHING;
        out->target = best;
        out->rule = "drained: the current entry point is drained; to the best other healthy one";
        return;
    }

    /* Switching: back to a higher-priority entry point healthy again - by a strict majority
     * (a tie keeps traffic where it is) for switch_back_ms, unless failback is manual. */
    if (cur_h == EP_UP && best < cur) {
        const struct ep_tally *bt = &tally[best];
        bool strict = bt->healthy * 2 > bt->voters;
        if (req->manual_failback) {
            out->rule = "failback is manual (dhaf.auto-switch-back: false): a higher-priority "
                        "entry point is healthy; a switchover takes traffic back";
        } else if (!strict || req->strict_up_ms[best] < req->switch_back_ms) {
            out->rule = "switching back waits: the higher-priority entry point must be healthy "
                        "by a strict majority for dhaf.switch-back-delay";
        } else {
            out->action = ACT_SWITCHING;
            out->target = best;
            out->rule = "switching: a higher-priority entry point is healthy again";
        }
        return;
    }
    if (cur_h == EP_UP && flap_skipped) {
        out->rule = "steady: a higher-priority entry point is healthy but flaps: it is held down "
                    "until its penalty decays (dhaf.flap-threshold, dhaf.flap-half-life)";
        return;
    }
    out->rule = cur_h == EP_UP ? "steady: the current entry point is healthy and none of "
                                 "higher priority is"
                               : "steady: no voter has checked the current entry point";
}

void decide_state_from_json(const struct dhaf_service *svc, const json_t *j,
                            struct decide_state *st)
{
    memset(st, 0, sizeof(*st));
    st->current = -1;
    st->would_target = -1;
    if (!json_is_object(j))
        return;
    const char *cur = dhaf_json_str(j, "current");
    st->current = cur ? dhaf_service_ep_index(svc, cur) : -1;
    st->panic = json_is_true(json_object_get(j, "panic"));
    st->quorum = json_is_true(json_object_get(j, "quorum"));
    const json_t *would = json_object_get(j, "would");
    const char *wk = json_is_object(would) ? dhaf_json_str(would, "kind") : NULL;
    const char *wt = json_is_object(would) ? dhaf_json_str(would, "to") : NULL;
    if (wk && wt && (st->would_target = dhaf_service_ep_index(svc, wt)) >= 0)
        st->would_action = !strcmp(wk, "failover")     ? ACT_FAILOVER
                           : !strcmp(wk, "switchover") ? ACT_SWITCHOVER
                                                       : ACT_SWITCHING;
    else
        st->would_target = -1;
    const json_t *eps = json_object_get(j, "eps");
    for (size_t e = 0; e < svc->n_eps && e < DECIDE_MAX_EPS; e++) {
        const char *h = dhaf_json_str(eps, svc->eps[e].name);
        st->eps[e] = h && !strcmp(h, "up") ? EP_UP : h && !strcmp(h, "down") ? EP_DOWN : EP_UNKNOWN;
    }
}

void decide_damping(const struct dhaf_config *cfg, struct decide_request *req)
{
    req->switch_back_ms = (int64_t)cfg->switch_back_delay * cfg->tact_interval * 1000;
    req->manual_failback = !cfg->auto_switch_back;
}

bool flap_update(struct flap *f, int64_t now_ms, bool went_down, int threshold, int half_life_s)
{
    if (threshold <= 0) {
        bool was = f->held;
        *f = (struct flap){0};
        return was;
    }
    if (f->at_ms && now_ms > f->at_ms && f->penalty > 0)
        f->penalty *= (float)exp2(-(double)(now_ms - f->at_ms) / (half_life_s * 1000.0));
    f->at_ms = now_ms;
    if (f->penalty < 0.001f)
        f->penalty = 0;
    if (went_down)
        f->penalty += 1;
    /* held at the threshold, the penalty rounded (three quick downs make 2.9, not 3); released
     * below half of it */
    bool held = f->held ? f->penalty >= threshold / 2.0f : f->penalty + 0.5f >= (float)threshold;
    bool changed = held != f->held;
    f->held = held;
    return changed;
}

/* Paused (control/pause, or dhaf.dry-run): the decision is shown, not carried out. The
 * action becomes a would-switch event, once per different action (the state remembers it
 * across leaders); a purge waits too (its event goes with it); announcements of health stay. */
static void hold(const struct decide_state *st, struct decide_output *out)
{
    size_t kept = 0;
    for (size_t k = 0; k < out->n_events; k++)
        if (out->events[k].kind != EVK_SWITCHOVER_PURGED)
            out->events[kept++] = out->events[k];
    out->n_events = kept;
    out->purge_request = false;
    if (out->action == ACT_NONE || out->target < 0) {
        out->next.would_action = ACT_NONE;
        out->next.would_target = -1;
        return;
    }
    if ((st->would_action != (int)out->action || st->would_target != out->target) &&
        out->n_events < DECIDE_MAX_EVENTS)
        out->events[out->n_events++] =
            (struct decide_event){EVK_WOULD_SWITCH, out->target, action_name(out->action)};
    out->next.would_action = out->action;
    out->next.would_target = out->target;
    out->action = ACT_NONE;
    out->target = -1;
}

void decide_round(const struct dhaf_config *cfg, const struct dhaf_service *svc,
                  const struct ep_tally *t, const struct quorum *q, const struct decide_state *st,
                  struct decide_request *req, bool paused, int64_t now_ms,
                  struct decide_memory *mem, struct decide_output *out, bool *flap_changed)
{
    size_t n = svc->n_eps < DECIDE_MAX_EPS ? svc->n_eps : DECIDE_MAX_EPS;
    for (size_t e = 0; e < n; e++) {
        bool strict = t[e].known && t[e].healthy * 2 > t[e].voters;
        if (!strict)
            mem->strict_up_since[e] = 0;
        else if (!mem->strict_up_since[e])
            mem->strict_up_since[e] = now_ms;
        req->strict_up_ms[e] = strict ? now_ms - mem->strict_up_since[e] : -1;
    }
    decide_damping(cfg, req);
    for (size_t e = 0; e < mem->n_flap && e < n; e++)
        req->flapping[e] = mem->flap[e].held;
    decide(svc, t, q, st, req, out);
    if (paused)
        hold(st, out);
    for (size_t e = 0; e < n; e++) {
        flap_changed[e] = false;
        if (e >= mem->n_flap)
            continue;
        bool down = false;
        for (size_t k = 0; k < out->n_events; k++)
            down |= out->events[k].kind == EVK_EP_DOWN && out->events[k].ep == (int)e;
        flap_changed[e] =
            flap_update(&mem->flap[e], now_ms, down, cfg->flap_threshold, cfg->flap_half_life);
    }
}
