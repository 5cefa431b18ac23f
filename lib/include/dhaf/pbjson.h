/* SPDX-License-Identifier: MIT */
/* Any protobuf-c message as JSON (jansson), driven by its descriptor: field names as in the
 * .proto, enums by value name, 64-bit integers as numbers, every field present. */
#ifndef DHAF_PBJSON_H
#define DHAF_PBJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

/** A new JSON object for m (caller json_decref's it). */
json_t *dhaf_pb_to_json(const ProtobufCMessage *m);

#endif
