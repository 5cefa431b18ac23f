/* SPDX-License-Identifier: MIT */
/* gRPC server reflection (grpc.reflection.v1 and v1alpha ServerReflectionInfo) for the
 * services on the node's gRPC port, answered from the FileDescriptorSet embedded at build
 * time (proto/CMakeLists.txt), so grpcurl can list and call dhaf.v1 without .proto files. */
#ifndef DHAF_NODE_REFLECT_H
#define DHAF_NODE_REFLECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/err.h"
#include "dhaf/rpc.h"

/* Reflection streams at once (each holds a worker thread of the gRPC server while it is
 * open: the server gets this many more); more are refused with RESOURCE_EXHAUSTED. */
#define REFLECT_MAX_STREAMS 2
/* A stream that sends no request for this long is ended (DEADLINE_EXCEEDED). */
#define REFLECT_IDLE_MS 30000

/* An index of a FileDescriptorSet: its files (each a serialized FileDescriptorProto) and the
 * full names of the symbols they define (packages' services, methods, messages, their fields
 * and nested types, enums). */
struct reflect_index;

/**
 * Indexes the serialized FileDescriptorSet set (len bytes, borrowed for the index's life).
 * Returns the index (caller frees with reflect_index_free) or NULL with err naming what in
 * the set is malformed.
 */
struct reflect_index *reflect_index_new(const uint8_t *set, size_t len, struct dhaf_err *err);
void reflect_index_free(struct reflect_index *x);

/** Number of services, and the full name of service i ("dhaf.v1.Dhaf"; borrowed). */
size_t reflect_n_services(const struct reflect_index *x);
const char *reflect_service(const struct reflect_index *x, size_t i);

/**
 * The files to send for file name (by_symbol false: "dhaf/v1/dhaf.proto") or for the file
 * that defines symbol (by_symbol true: "dhaf.v1.Dhaf.GetVersion"): that file first, then the
 * files it imports, transitively, each once. Fills out[] (at most room) with file numbers and
 * returns how many, or 0 when the name is not known.
 */
size_t reflect_lookup(const struct reflect_index *x, const char *name, bool by_symbol, size_t *out,
                      size_t room);
/** File i's serialized FileDescriptorProto (borrowed). */
void reflect_file(const struct reflect_index *x, size_t i, const uint8_t **p, size_t *n);
/** Number of files in the index. */
size_t reflect_n_files(const struct reflect_index *x);

/* The method handler (ud unused; the auth hook is the caller's): both packages' messages are
 * the same on the wire, so one handler decoding v1 serves both paths. */
int reflect_handler(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
                    struct dhaf_err *err);

#endif
