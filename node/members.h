/* SPDX-License-Identifier: MIT */
/* Node tracking: a duty bound to the term turns the view's changes of alive/ and members/
 * into node-up / node-down events, once per transition (the state last announced is kept in
 * members/<node>, written with the event in one fenced transaction). */
#ifndef DHAF_NODE_MEMBERS_H
#define DHAF_NODE_MEMBERS_H

#include "cluster.h"

/** The node-tracking duty (for cluster_add_duty). */
struct duty members_duty(struct cluster *c);

#endif
