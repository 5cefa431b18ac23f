/* SPDX-License-Identifier: MIT */
/* The operations of dhaf.v1.Dhaf, once: the gRPC API and the REST gateway both call these.
 * Reads are served from the node's view (view.h): memory only, no etcd round trip, the same
 * answer on every node, and an answer - marked stale with its age - while etcd is out of
 * reach. Changes are written to etcd (the leader acts on them). Results are protobuf-c
 * messages the caller frees with protobuf_c_message_free_unpacked. Errors: DHAF_ENOTFOUND
 * (unknown service, entry point or node), DHAF_ECONFLICT (unhealthy target, live node),
 * DHAF_EINVAL, DHAF_EUNAVAILABLE (etcd, for changes; the view was never loaded, for reads). */
#ifndef DHAF_NODE_SERVICE_H
#define DHAF_NODE_SERVICE_H

#include "cluster.h"
#include "dhaf/config.h"
#include "events.h"
#include "dhaf/v1/dhaf.pb-c.h"

/* What the operations need: borrowed for the call. */
struct svc_env {
    struct cluster *c;
    const struct dhaf_config *cfg;   /* the snapshot the request runs with */
    const struct event_actor *actor; /* who asks (the changes record it); NULL for reads */
};

int svc_cluster_status(const struct svc_env *env, Dhaf__V1__ClusterStatus **out,
                       struct dhaf_err *err);
int svc_list_services(const struct svc_env *env, Dhaf__V1__ListServicesResponse **out,
                      struct dhaf_err *err);
int svc_get_service(const struct svc_env *env, const char *service, Dhaf__V1__ServiceStatus **out,
                    struct dhaf_err *err);
int svc_candidates(const struct svc_env *env, const char *service,
                   Dhaf__V1__SwitchoverCandidates **out, struct dhaf_err *err);
/* The changes need env->actor (the audit event); its comment is the request's requested_by. */
int svc_switchover(const struct svc_env *env, const char *service, const char *ep,
                   Dhaf__V1__SwitchoverResponse **out, struct dhaf_err *err);
int svc_purge(const struct svc_env *env, const char *service,
              Dhaf__V1__PurgeSwitchoverResponse **out, struct dhaf_err *err);
int svc_decommission(const struct svc_env *env, const char *node,
                     Dhaf__V1__DecommissionNodeResponse **out, struct dhaf_err *err);
/* Maintenance (audited with env->actor): drain or undrain an entry point; pause or resume. */
int svc_drain(const struct svc_env *env, const char *service, const char *ep, bool drain,
              Dhaf__V1__DrainResponse **out, struct dhaf_err *err);
int svc_pause(const struct svc_env *env, bool pause, Dhaf__V1__PauseResponse **out,
              struct dhaf_err *err);
/** service NULL or "": cluster events. limit 0 = 50; at most 1000. Newest first. */
int svc_events(const struct svc_env *env, const char *service, uint32_t limit,
               Dhaf__V1__ListEventsResponse **out, struct dhaf_err *err);
int svc_version(const struct svc_env *env, Dhaf__V1__VersionInfo **out, struct dhaf_err *err);

#endif
