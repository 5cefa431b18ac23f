/* SPDX-License-Identifier: MIT */
/* gRPC over the C core with protobuf-c messages: a server that checks each call's credentials
 * from its initial metadata before reading its message, and runs unary, server-streaming and
 * bidirectional handlers on a fixed pool of workers fed by one completion queue; and a client
 * for unary calls and bidirectional streams. Every client call has a deadline. */
#ifndef DHAF_RPC_H
#define DHAF_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "dhaf/err.h"

/** Initialises gRPC once per process (idempotent, thread-safe). Other functions call it. */
void dhaf_rpc_init(void);

/** Maps a gRPC status code to a dhaf error code (0 for OK). */
int dhaf_rpc_status_to_err(int grpc_status);
/** Maps a dhaf error code to the gRPC status a server answers with. */
int dhaf_rpc_err_to_status(int code);
/** Name of a gRPC status code ("UNAVAILABLE"). */
const char *dhaf_rpc_status_name(int grpc_status);

/** Constant-time comparison of two NUL-terminated tokens (no early exit on a mismatch). */
bool dhaf_rpc_token_equal(const char *a, const char *b);

/* A metadata pair sent with a call ("authorization", "Bearer x"). Borrowed. */
struct dhaf_rpc_md {
    const char *key;
    const char *value;
};

/* TLS material as PEM file paths. All optional; TLS is on when `tls` is true. */
struct dhaf_rpc_tls {
    bool tls;
    const char *ca_file;   /* client: CA to verify the server (NULL: system roots);
                              server: CA client certificates must chain to (mTLS) */
    const char *cert_file; /* client: client certificate; server: server certificate */
    const char *key_file;
    const char *server_name; /* client: name expected in the server certificate (override) */
};

/* ------------------------------------------------------------------ client */

struct dhaf_rpc_channel;

/**
 * Opens a channel to target ("127.0.0.1:2379", "unix:/path", "ipv4:a:1,b:2"). Connection is
 * lazy. tls may be NULL (plaintext). Returns the channel (caller frees with
 * dhaf_rpc_channel_free) or NULL with err set (e.g. unreadable PEM file).
 */
struct dhaf_rpc_channel *dhaf_rpc_channel_new(const char *target, const struct dhaf_rpc_tls *tls,
                                              struct dhaf_err *err);
/** The same, refusing replies larger than max_receive bytes (RESOURCE_EXHAUSTED, the reply is
 *  not kept in memory); 0 or more than the default: the default (64 MiB). */
struct dhaf_rpc_channel *dhaf_rpc_channel_new_max(const char *target,
                                                  const struct dhaf_rpc_tls *tls,
                                                  size_t max_receive, struct dhaf_err *err);
/** Closes the channel. Calls and streams on it must be finished first. NULL is fine. */
void dhaf_rpc_channel_free(struct dhaf_rpc_channel *ch);
/** The target string it was opened with (borrowed). */
const char *dhaf_rpc_channel_target(const struct dhaf_rpc_channel *ch);

/* What the client knows about a failed call, beyond the error code. */
enum dhaf_rpc_sent {
    DHAF_RPC_NOT_SENT = 0, /* the request certainly did not reach a server (connect failed) */
    DHAF_RPC_MAYBE_SENT = 1,
};

/**
 * Unary call of method ("/etcdserverpb.KV/Range") with req; waits at most timeout_ms.
 * On success returns 0 and *resp (caller frees with protobuf_c_message_free_unpacked).
 * On failure returns a negative code, err->status = gRPC status, err->msg = server's message,
 * and *sent (may be NULL) says whether the request may have been processed.
 */
int dhaf_rpc_call(struct dhaf_rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                  int timeout_ms, const struct dhaf_rpc_md *md, size_t n_md,
                  enum dhaf_rpc_sent *sent, struct dhaf_err *err);

struct dhaf_rpc_stream;

/**
 * Opens a bidirectional (or server-streaming) call. timeout_ms <= 0 means no deadline (a
 * long-lived stream); the stream ends when closed or when the server ends it. Returns the
 * stream (caller closes with dhaf_rpc_stream_close) or NULL with err.
 */
struct dhaf_rpc_stream *dhaf_rpc_stream_open(struct dhaf_rpc_channel *ch, const char *method,
                                             const struct dhaf_rpc_md *md, size_t n_md,
                                             int timeout_ms, struct dhaf_err *err);
/** Sends one message, waiting at most timeout_ms. Returns 0 or a negative code. */
int dhaf_rpc_stream_send(struct dhaf_rpc_stream *s, const ProtobufCMessage *msg, int timeout_ms,
                         struct dhaf_err *err);
/** Half-closes the sending side (the server sees end of input). */
int dhaf_rpc_stream_close_send(struct dhaf_rpc_stream *s, int timeout_ms, struct dhaf_err *err);
/**
 * Receives one message of type desc, waiting at most timeout_ms. Returns 0 and *msg (caller
 * frees), or DHAF_ETIMEOUT when nothing arrived in time (the receive stays pending: call
 * again), or another negative code when the stream ended (err has the final status; an end
 * with status OK gives DHAF_ECANCELLED with status 0). send and recv may run in two threads.
 */
int dhaf_rpc_stream_recv(struct dhaf_rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                         ProtobufCMessage **msg, int timeout_ms, struct dhaf_err *err);
/** Cancels the call if still open and frees everything. NULL is fine. */
void dhaf_rpc_stream_close(struct dhaf_rpc_stream *s);

/* ------------------------------------------------------------------ server */

struct dhaf_rpc_server;
struct dhaf_rpc_call; /* one incoming call, valid during its handler */

/**
 * Handles one call. req is the decoded request (borrowed). A unary handler calls
 * dhaf_rpc_send exactly once before returning 0; a streaming handler calls it once per
 * message. Returning a negative code answers with the matching gRPC status and err->msg.
 */
typedef int (*dhaf_rpc_handler_fn)(void *ud, struct dhaf_rpc_call *call,
                                   const ProtobufCMessage *req, struct dhaf_err *err);

/** Decides whether a call may proceed; returns 0 or a negative code (DHAF_EAUTH). It runs
 *  before the request message is read, on one of the server's threads: it sees only the
 *  call's metadata, peer and certificate, and must not block (memory work only). A refused
 *  call is answered at once and its message is never received. */
typedef int (*dhaf_rpc_auth_fn)(void *ud, struct dhaf_rpc_call *call, struct dhaf_err *err);

/* How a method's messages flow (0 and 1 are what a plain false / true says). */
enum dhaf_rpc_flow {
    DHAF_RPC_UNARY = 0,         /* one request, one reply */
    DHAF_RPC_SERVER_STREAM = 1, /* one request, replies sent one by one with dhaf_rpc_send */
    DHAF_RPC_BIDI = 2, /* both ways: the handler runs on the first request message and reads
                        * the next ones with dhaf_rpc_recv */
};

struct dhaf_rpc_method {
    const char *path; /* "/dhaf.v1.Dhaf/GetClusterStatus" */
    const ProtobufCMessageDescriptor *req_desc;
    enum dhaf_rpc_flow flow;
    dhaf_rpc_handler_fn handler;
    dhaf_rpc_auth_fn auth; /* NULL: the server's bearer token rule */
    void *ud;
};

struct dhaf_rpc_server_opts {
    const char *addr;             /* "127.0.0.1:8129", "[::]:0", "unix:/path" */
    struct dhaf_rpc_tls tls;      /* cert_file/key_file; ca_file = require client certs */
    const char *bearer_token;     /* when set, calls must carry "authorization: Bearer <token>" */
    int max_concurrent_calls;     /* accepted (authenticated) calls at once; 0: 256 */
    size_t max_message_bytes;     /* 0: 4 MiB */
    int max_calls_per_peer;       /* accepted calls at once from one address; 0: half the above */
    int max_calls_per_connection; /* ... on one connection; 0: a quarter of the total */
    int recv_timeout_ms;          /* an accepted call's message must arrive within this; 0: 5000 */
    int workers;                  /* pool threads, at most workers-2 in handlers at once; 0: 8 */
    /* per method (parallel to methods; 0 or NULL: max_message_bytes): largest request */
    const size_t *method_max_bytes;
};

/**
 * Creates, binds and starts a server for methods (array of n, borrowed for the server's life).
 * Returns the server or NULL with err (e.g. address in use: SO_REUSEPORT is off).
 */
struct dhaf_rpc_server *dhaf_rpc_server_start(const struct dhaf_rpc_server_opts *opts,
                                              const struct dhaf_rpc_method *methods, size_t n,
                                              struct dhaf_err *err);
/** The port actually bound (useful with port 0). */
int dhaf_rpc_server_port(const struct dhaf_rpc_server *srv);
/* Reads a PEM file (certificate, key or CA bundle; at most 256 KiB, must hold a "-----BEGIN"
 * line) into a NUL-terminated buffer the caller frees; NULL with err naming what and path. */
char *dhaf_read_pem(const char *path, const char *what, struct dhaf_err *err);

/* Replaces the bearer token that calls must carry (NULL: none); calls already authenticated
 * keep running. Thread-safe, for a config reload. */
void dhaf_rpc_server_set_token(struct dhaf_rpc_server *srv, const char *token);
/** Stops accepting, cancels calls in flight, waits for their handlers, frees. NULL is fine. */
void dhaf_rpc_server_stop(struct dhaf_rpc_server *srv);
/** The same, waiting at most deadline_ms for handlers still running; false when one is still
 *  in a call (then the server is left to the process exit, not freed). */
bool dhaf_rpc_server_stop_within(struct dhaf_rpc_server *srv, int deadline_ms);

/** Sends a response message (see dhaf_rpc_handler_fn). Returns 0 or a negative code
 *  (DHAF_ECANCELLED when the client went away). */
int dhaf_rpc_send(struct dhaf_rpc_call *call, const ProtobufCMessage *msg, struct dhaf_err *err);
/**
 * Receives the next request message of a bidirectional call (the first one is the handler's
 * req), waiting at most timeout_ms (<= 0: until the call ends). Returns 0 and *msg (caller
 * frees with protobuf_c_message_free_unpacked), or 0 and *msg NULL when the client closed its
 * side (no more requests); DHAF_ETIMEOUT when nothing came in time (the receive stays
 * pending: call again, or return); DHAF_ECANCELLED when the client went away or the server
 * stops; DHAF_ETOOBIG / DHAF_EINVAL for a message over the method's size or not decodable.
 */
int dhaf_rpc_recv(struct dhaf_rpc_call *call, ProtobufCMessage **msg, int timeout_ms,
                  struct dhaf_err *err);
/** Value of request metadata key (borrowed, valid during the call), or NULL. */
const char *dhaf_rpc_call_metadata(const struct dhaf_rpc_call *call, const char *key);
/** The token of an "authorization: Bearer <token>" header, or NULL. */
const char *dhaf_rpc_call_bearer(const struct dhaf_rpc_call *call);
/** Peer address ("ipv4:127.0.0.1:5555"), borrowed. */
const char *dhaf_rpc_call_peer(const struct dhaf_rpc_call *call);
/** Common name of the client certificate (mTLS), or NULL. Borrowed. */
const char *dhaf_rpc_call_peer_cn(const struct dhaf_rpc_call *call);
/** Milliseconds left until the client's deadline (INT32_MAX when none). */
int64_t dhaf_rpc_call_remaining_ms(const struct dhaf_rpc_call *call);
/** True once the client cancelled or the deadline passed. */
bool dhaf_rpc_call_cancelled(const struct dhaf_rpc_call *call);

#endif
