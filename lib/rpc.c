/* SPDX-License-Identifier: MIT */
/* gRPC C core wrapper: protobuf-c messages in and out, a server that authenticates each call
 * from its metadata before reading its message and runs handlers on a fixed pool of workers,
 * unary client calls with deadlines and bidirectional client streams. See grpc-core-etcd-facts.md
 * for the traps this code avoids (RECV_INITIAL_METADATA on streams, SO_REUSEPORT, one op of a kind
 * outstanding per call, draining completion queues before destroying them). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/log.h"
#include "dhaf/rpc.h"

#define PEM_MAX             (256 * 1024)
#define DEFAULT_MAX_MESSAGE (4 * 1024 * 1024)
#define CLIENT_MAX_MESSAGE  (64 * 1024 * 1024)
#define DEFAULT_MAX_CALLS   256
#define MAX_METADATA        64

/* ------------------------------------------------------------------ common */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void grpc_log(gpr_log_func_args *args)
{
    /* gRPC's own diagnostics (TLS handshake failures, ...) become our log lines. */
    enum dhaf_log_level lv =
        args->severity == GPR_LOG_SEVERITY_ERROR ? DHAF_LOG_WARN : DHAF_LOG_DEBUG;
    char msg[512];
    DHAF_LOG(lv, "event=grpc-log msg=\"%s\"", dhaf_log_quote(msg, sizeof(msg), args->message));
}

static void do_init(void)
{
    grpc_init();
    gpr_set_log_function(grpc_log);
    gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
}

void dhaf_rpc_init(void)
{
    pthread_once(&init_once, do_init);
}

static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *dhaf_rpc_status_name(int s)
{
    if (s >= 0 && (size_t)s < sizeof(status_names) / sizeof(status_names[0]))
        return status_names[s];
    return "UNKNOWN";
}

int dhaf_rpc_status_to_err(int s)
{
    switch (s) {
    case GRPC_STATUS_OK:
        return 0;
    case GRPC_STATUS_CANCELLED:
        return DHAF_ECANCELLED;
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_OUT_OF_RANGE:
        return DHAF_EINVAL;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return DHAF_ETIMEOUT;
    case GRPC_STATUS_NOT_FOUND:
        return DHAF_ENOTFOUND;
    case GRPC_STATUS_ALREADY_EXISTS:
        return DHAF_EEXISTS;
    case GRPC_STATUS_PERMISSION_DENIED:
    case GRPC_STATUS_UNAUTHENTICATED:
        return DHAF_EAUTH;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return DHAF_ETOOBIG;
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_ABORTED:
        return DHAF_ECONFLICT;
    case GRPC_STATUS_UNAVAILABLE:
        return DHAF_EUNAVAILABLE;
    case GRPC_STATUS_UNIMPLEMENTED:
    case GRPC_STATUS_DATA_LOSS:
        return DHAF_EPROTO;
    default:
        return DHAF_EINTERNAL;
    }
}

int dhaf_rpc_err_to_status(int code)
{
    switch (code) {
    case 0:
        return GRPC_STATUS_OK;
    case DHAF_EINVAL:
    case DHAF_ECONFIG:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case DHAF_ENOTFOUND:
        return GRPC_STATUS_NOT_FOUND;
    case DHAF_EEXISTS:
        return GRPC_STATUS_ALREADY_EXISTS;
    case DHAF_ECONFLICT:
    case DHAF_EFENCED:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case DHAF_ETIMEOUT:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case DHAF_EUNAVAILABLE:
    case DHAF_EIO:
        return GRPC_STATUS_UNAVAILABLE;
    case DHAF_EAUTH:
        return GRPC_STATUS_UNAUTHENTICATED;
    case DHAF_EDENIED:
        return GRPC_STATUS_PERMISSION_DENIED;
    case DHAF_ETOOBIG:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case DHAF_ECANCELLED:
        return GRPC_STATUS_CANCELLED;
    case DHAF_EUNKNOWN_OUTCOME:
        return GRPC_STATUS_UNKNOWN;
    case DHAF_EPROTO:
    case DHAF_EINTERNAL:
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

bool dhaf_rpc_token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t n = la > lb ? la : lb;
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < la ? (unsigned char)a[i] : 0;
        unsigned char y = i < lb ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}

static gpr_timespec deadline_in(int timeout_ms)
{
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

char *dhaf_read_pem(const char *path, const char *what, struct dhaf_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        dhaf_err_set(err, DHAF_EIO, "cannot read %s \"%s\": %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = dhaf_xmalloc(PEM_MAX + 1);
    size_t n = fread(buf, 1, PEM_MAX + 1, f);
    fclose(f);
    if (n == 0 || n > PEM_MAX || !strstr(buf, "-----BEGIN")) {
        buf[n > PEM_MAX ? PEM_MAX : n] = '\0';
        dhaf_err_set(err, DHAF_EINVAL, "%s \"%s\" is not a PEM file of at most %d bytes", what,
                     path, PEM_MAX);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* ------------------------------------------------------------------ metadata */

struct md_out {
    grpc_metadata v[MAX_METADATA];
    size_t n;
};

static void md_build(struct md_out *out, const struct dhaf_rpc_md *md, size_t n)
{
    out->n = 0;
    for (size_t i = 0; i < n && i < MAX_METADATA; i++) {
        memset(&out->v[i], 0, sizeof(out->v[i]));
        out->v[i].key = grpc_slice_from_copied_string(md[i].key);
        out->v[i].value = grpc_slice_from_copied_string(md[i].value);
        out->n++;
    }
}

static void md_free(struct md_out *out)
{
    for (size_t i = 0; i < out->n; i++) {
        grpc_slice_unref(out->v[i].key);
        grpc_slice_unref(out->v[i].value);
    }
    out->n = 0;
}

/* ------------------------------------------------------------------ client */

struct dhaf_rpc_channel {
    grpc_channel *ch;
    char *target;
};

struct dhaf_rpc_channel *dhaf_rpc_channel_new(const char *target, const struct dhaf_rpc_tls *tls,
                                              struct dhaf_err *err)
{
    return dhaf_rpc_channel_new_max(target, tls, CLIENT_MAX_MESSAGE, err);
}

struct dhaf_rpc_channel *dhaf_rpc_channel_new_max(const char *target,
                                                  const struct dhaf_rpc_tls *tls,
                                                  size_t max_receive, struct dhaf_err *err)
{
    if (max_receive == 0 || max_receive > CLIENT_MAX_MESSAGE)
        max_receive = CLIENT_MAX_MESSAGE;
    dhaf_rpc_init();
    grpc_channel_credentials *creds = NULL;
    char *ca = NULL, *cert = NULL, *key = NULL;
    if (tls && tls->tls) {
        if (tls->ca_file && !(ca = dhaf_read_pem(tls->ca_file, "CA file", err)))
            goto fail;
        if (tls->cert_file && !(cert = dhaf_read_pem(tls->cert_file, "certificate", err)))
            goto fail;
        if (tls->key_file && !(key = dhaf_read_pem(tls->key_file, "private key", err)))
            goto fail;
        if (!!cert != !!key) {
            dhaf_err_set(err, DHAF_EINVAL, "a client certificate needs its key (and back)");
            goto fail;
        }
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    if (!creds) {
        dhaf_err_set(err, DHAF_EINVAL, "cannot create credentials for %s", target);
        goto fail;
    }
    grpc_arg args[9];
    size_t na = 0;
    /* Own subchannels: a channel made to replace a wedged one must not inherit its state. */
    args[na++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1};
    args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                            .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                            .value.integer = (int)max_receive};
    /* Reconnect fast: a restarted etcd member should be used again within a second. */
    args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                            .key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                            .value.integer = 100};
    /* This is also the connect timeout: too small, and attempts are cut off mid-handshake. */
    args[na++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, .value.integer = 1000};
    args[na++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, .value.integer = 1000};
    /* Pings find a dead peer under a long-lived stream; etcd accepts one per 5 s. */
    args[na++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS, .value.integer = 10000};
    args[na++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, .value.integer = 5000};
    if (tls && tls->tls && tls->server_name)
        args[na++] = (grpc_arg){.type = GRPC_ARG_STRING,
                                .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                .value.string = (char *)tls->server_name};
    grpc_channel_args cargs = {.num_args = na, .args = args};
    grpc_channel *ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    free(ca);
    free(cert);
    if (key)
        explicit_bzero(key, strlen(key));
    free(key);
    if (!ch) {
        dhaf_err_set(err, DHAF_EINVAL, "cannot create a channel to \"%s\"", target);
        return NULL;
    }
    struct dhaf_rpc_channel *c = dhaf_xcalloc(1, sizeof(*c));
    c->ch = ch;
    c->target = dhaf_xstrdup(target);
    return c;
fail:
    free(ca);
    free(cert);
    if (key)
        explicit_bzero(key, strlen(key));
    free(key);
    return NULL;
}

void dhaf_rpc_channel_free(struct dhaf_rpc_channel *ch)
{
    if (!ch)
        return;
    grpc_channel_destroy(ch->ch);
    free(ch->target);
    free(ch);
}

const char *dhaf_rpc_channel_target(const struct dhaf_rpc_channel *ch)
{
    return ch->target;
}

/* Destroys a pluck queue: shut it down and drain it first, as gRPC requires. */
static void cq_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    grpc_completion_queue_destroy(cq);
}

static int status_error(struct dhaf_err *err, const char *target, const char *method,
                        grpc_status_code status, grpc_slice details)
{
    char *d = grpc_slice_to_c_string(details);
    int code = dhaf_rpc_status_to_err(status);
    dhaf_err_set(err, code, "%s %s: %s: %s", target, method, dhaf_rpc_status_name(status),
                 d[0] ? d : dhaf_strerror(code));
    if (err)
        err->status = status;
    gpr_free(d);
    return code;
}

/* A request certainly never left when the channel could not connect at all. */
static enum dhaf_rpc_sent guess_sent(grpc_status_code status, grpc_slice details)
{
    if (status != GRPC_STATUS_UNAVAILABLE)
        return DHAF_RPC_MAYBE_SENT;
    char *d = grpc_slice_to_c_string(details);
    enum dhaf_rpc_sent s = (strstr(d, "failed to connect") || strstr(d, "Connection refused"))
                               ? DHAF_RPC_NOT_SENT
                               : DHAF_RPC_MAYBE_SENT;
    gpr_free(d);
    return s;
}

int dhaf_rpc_call(struct dhaf_rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                  int timeout_ms, const struct dhaf_rpc_md *md, size_t n_md,
                  enum dhaf_rpc_sent *sent, struct dhaf_err *err)
{
    *resp = NULL;
    if (sent)
        *sent = DHAF_RPC_MAYBE_SENT;
    if (timeout_ms <= 0)
        return dhaf_err_set(err, DHAF_EINVAL, "%s: every call needs a deadline", method);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice mslice = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, mslice,
                                               NULL, deadline_in(timeout_ms), NULL);
    grpc_slice_unref(mslice);

    struct md_out mdo;
    md_build(&mdo, md, n_md);
    grpc_byte_buffer *send_bb = pack(req);
    grpc_byte_buffer *recv_bb = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = mdo.n;
    ops[0].data.send_initial_metadata.metadata = mdo.v;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;

    int rc = 0;
    grpc_call_error ce = grpc_call_start_batch(call, ops, 6, (void *)1, NULL);
    if (ce != GRPC_CALL_OK) {
        rc = dhaf_err_set(err, DHAF_EINTERNAL, "%s %s: cannot start the call (%d)", ch->target,
                          method, ce);
    } else {
        /* The call's deadline bounds this wait. */
        grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (status != GRPC_STATUS_OK) {
            rc = status_error(err, ch->target, method, status, details);
            enum dhaf_rpc_sent g = guess_sent(status, details);
            if (sent)
                *sent = g;
            if (g == DHAF_RPC_NOT_SENT)
                grpc_channel_reset_connect_backoff(ch->ch);
        } else if (!recv_bb) {
            rc = dhaf_err_set(err, DHAF_EPROTO, "%s %s: the server sent no reply", ch->target,
                              method);
        } else if (!(*resp = unpack(resp_desc, recv_bb))) {
            rc = dhaf_err_set(err, DHAF_EPROTO, "%s %s: cannot decode the reply as %s", ch->target,
                              method, resp_desc->name);
        }
    }
    if (rc == 0)
        dhaf_err_clear(err);
    grpc_byte_buffer_destroy(send_bb);
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    md_free(&mdo);
    grpc_call_unref(call);
    cq_destroy(cq);
    return rc;
}

/* Tags of a stream's operations: each kind has at most one batch outstanding. */
enum stream_tag { TAG_MD, TAG_INIT, TAG_STATUS, TAG_RECV, TAG_SEND, TAG_HALF, N_TAGS };

struct dhaf_rpc_stream {
    struct dhaf_rpc_channel *ch;
    char *method;
    grpc_call *call;
    grpc_completion_queue *cq;
    char tags[N_TAGS];           /* addresses used as tags */
    atomic_bool pending[N_TAGS]; /* batch started, completion not plucked yet */
    struct md_out md;
    grpc_metadata_array initial, trailing;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *recv_bb;
    grpc_byte_buffer *send_bb;
    bool status_seen;
    bool recv_ended;
};

static int stream_start(struct dhaf_rpc_stream *s, enum stream_tag t, grpc_op *ops, size_t n)
{
    atomic_store(&s->pending[t], true);
    grpc_call_error ce = grpc_call_start_batch(s->call, ops, n, &s->tags[t], NULL);
    if (ce != GRPC_CALL_OK) {
        atomic_store(&s->pending[t], false);
        return -1;
    }
    return 0;
}

/* Waits for the completion of tag t up to timeout_ms (<= 0: forever). Returns 1 when it
 * completed successfully, 0 when it completed with failure, -1 on timeout (still pending). */
static int stream_wait(struct dhaf_rpc_stream *s, enum stream_tag t, int timeout_ms)
{
    gpr_timespec dl =
        timeout_ms > 0 ? deadline_in(timeout_ms) : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->tags[t], dl, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT)
        return -1;
    atomic_store(&s->pending[t], false);
    return ev.success ? 1 : 0;
}

struct dhaf_rpc_stream *dhaf_rpc_stream_open(struct dhaf_rpc_channel *ch, const char *method,
                                             const struct dhaf_rpc_md *md, size_t n_md,
                                             int timeout_ms, struct dhaf_err *err)
{
    struct dhaf_rpc_stream *s = dhaf_xcalloc(1, sizeof(*s));
    s->ch = ch;
    s->method = dhaf_xstrdup(method);
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    s->details = grpc_empty_slice();
    s->status = GRPC_STATUS_UNKNOWN;
    grpc_metadata_array_init(&s->initial);
    grpc_metadata_array_init(&s->trailing);
    for (int i = 0; i < N_TAGS; i++)
        atomic_init(&s->pending[i], false);
    grpc_slice mslice = grpc_slice_from_copied_string(method);
    s->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, mslice, NULL,
                                       deadline_in(timeout_ms), NULL);
    grpc_slice_unref(mslice);
    md_build(&s->md, md, n_md);

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.data.send_initial_metadata.count = s->md.n;
    op.data.send_initial_metadata.metadata = s->md.v;
    int bad = stream_start(s, TAG_MD, &op, 1);
    /* Without RECV_INITIAL_METADATA, RECV_MESSAGE never completes on a client stream. */
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_INITIAL_METADATA;
    op.data.recv_initial_metadata.recv_initial_metadata = &s->initial;
    bad |= stream_start(s, TAG_INIT, &op, 1);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->trailing;
    op.data.recv_status_on_client.status = &s->status;
    op.data.recv_status_on_client.status_details = &s->details;
    bad |= stream_start(s, TAG_STATUS, &op, 1);
    if (bad) {
        dhaf_err_set(err, DHAF_EINTERNAL, "%s %s: cannot start the stream", ch->target, method);
        dhaf_rpc_stream_close(s);
        return NULL;
    }
    return s;
}

/* The stream has ended: wait for its status and turn it into an error. */
static int stream_ended(struct dhaf_rpc_stream *s, struct dhaf_err *err)
{
    if (!s->status_seen && atomic_load(&s->pending[TAG_STATUS])) {
        if (stream_wait(s, TAG_STATUS, 5000) < 0) {
            grpc_call_cancel(s->call, NULL);
            stream_wait(s, TAG_STATUS, 0);
        }
        s->status_seen = true;
    }
    if (s->status == GRPC_STATUS_OK) {
        dhaf_err_set(err, DHAF_ECANCELLED, "%s %s: the server ended the stream", s->ch->target,
                     s->method);
        return DHAF_ECANCELLED;
    }
    return status_error(err, s->ch->target, s->method, s->status, s->details);
}

int dhaf_rpc_stream_send(struct dhaf_rpc_stream *s, const ProtobufCMessage *msg, int timeout_ms,
                         struct dhaf_err *err)
{
    if (atomic_load(&s->pending[TAG_SEND])) {
        /* The previous send timed out; it must finish before another may start. */
        int r = stream_wait(s, TAG_SEND, timeout_ms);
        if (r < 0)
            return dhaf_err_set(err, DHAF_ETIMEOUT, "%s %s: previous send still pending",
                                s->ch->target, s->method);
        grpc_byte_buffer_destroy(s->send_bb);
        s->send_bb = NULL;
        if (r == 0)
            return stream_ended(s, err);
    }
    s->send_bb = pack(msg);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->send_bb;
    if (stream_start(s, TAG_SEND, &op, 1) != 0) {
        grpc_byte_buffer_destroy(s->send_bb);
        s->send_bb = NULL;
        return dhaf_err_set(err, DHAF_ECANCELLED, "%s %s: the stream is closed for sending",
                            s->ch->target, s->method);
    }
    int r = stream_wait(s, TAG_SEND, timeout_ms);
    if (r < 0)
        return dhaf_err_set(err, DHAF_ETIMEOUT, "%s %s: send did not finish within %d ms",
                            s->ch->target, s->method, timeout_ms);
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    if (r == 0)
        return stream_ended(s, err);
    return 0;
}

int dhaf_rpc_stream_close_send(struct dhaf_rpc_stream *s, int timeout_ms, struct dhaf_err *err)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (atomic_load(&s->pending[TAG_HALF]) || stream_start(s, TAG_HALF, &op, 1) != 0)
        return dhaf_err_set(err, DHAF_EINVAL, "%s %s: already half-closed", s->ch->target,
                            s->method);
    if (stream_wait(s, TAG_HALF, timeout_ms) < 0)
        return dhaf_err_set(err, DHAF_ETIMEOUT, "%s %s: half-close did not finish", s->ch->target,
                            s->method);
    return 0;
}

int dhaf_rpc_stream_recv(struct dhaf_rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                         ProtobufCMessage **msg, int timeout_ms, struct dhaf_err *err)
{
    *msg = NULL;
    if (s->recv_ended)
        return stream_ended(s, err);
    if (!atomic_load(&s->pending[TAG_RECV])) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->recv_bb;
        if (stream_start(s, TAG_RECV, &op, 1) != 0) {
            s->recv_ended = true;
            return stream_ended(s, err);
        }
    }
    int r = stream_wait(s, TAG_RECV, timeout_ms);
    if (r < 0)
        return dhaf_err_set(err, DHAF_ETIMEOUT, "%s %s: nothing received within %d ms",
                            s->ch->target, s->method, timeout_ms);
    if (r == 0 || !s->recv_bb) {
        s->recv_ended = true;
        return stream_ended(s, err);
    }
    *msg = unpack(desc, s->recv_bb);
    grpc_byte_buffer_destroy(s->recv_bb);
    s->recv_bb = NULL;
    if (!*msg)
        return dhaf_err_set(err, DHAF_EPROTO, "%s %s: cannot decode a message as %s", s->ch->target,
                            s->method, desc->name);
    return 0;
}

void dhaf_rpc_stream_close(struct dhaf_rpc_stream *s)
{
    if (!s)
        return;
    grpc_call_cancel(s->call, NULL);
    for (int t = 0; t < N_TAGS; t++)
        if (atomic_load(&s->pending[t]))
            stream_wait(s, (enum stream_tag)t, 0);
    if (s->recv_bb)
        grpc_byte_buffer_destroy(s->recv_bb);
    if (s->send_bb)
        grpc_byte_buffer_destroy(s->send_bb);
    grpc_call_unref(s->call);
    cq_destroy(s->cq);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->initial);
    grpc_metadata_array_destroy(&s->trailing);
    md_free(&s->md);
    free(s->method);
    free(s);
}

/* ------------------------------------------------------------------ server */

/* The server: a fixed pool of threads takes the completions of the server's one completion
 * queue (new calls, received messages, sent replies, ends of calls) and runs the handlers of
 * the calls whose message arrived, on the thread that received it (no hand-over of the call);
 * at most all but RESERVED_POLLERS of them run handlers at once, so a completion (a new call
 * to check, a refusal, a reply) is always taken within a few ms (below) even while every
 * handler blocks.
 * Only one thread of the pool waits on the queue at a time, the poller: with several threads
 * in grpc_completion_queue_next, gRPC core hands the polling over to another thread at every
 * completion it returns (a futex wake and a context switch each, about 3 a call, a third of
 * the node's CPU under load). The poller takes every completion itself, and also runs the
 * handler of a message it receives; a second thread, the watcher, looks every WATCH_MS while
 * calls come in, and takes the poller's role over from a handler that has run for
 * TAKEOVER_MS (the thread then finishes its handler and waits for a role), so a handler that
 * blocks delays other completions by a few ms at most, and a quick one (a status read) costs
 * no hand-over at all. The other threads wait to become the watcher. A new call is
 * checked from its initial metadata (method, bearer token or the method's auth hook, slots)
 * before any message is read: a refused call is answered at once and never has its message
 * received, so it costs no slot, no handler and no memory for its message. An accepted call
 * takes a slot (total, per peer address, per connection) and must deliver its message within
 * recv_timeout_ms, or it is cancelled. */

#define DEFAULT_WORKERS       8
#define DEFAULT_RECV_TIMEOUT  5000
#define REQUESTS_OUTSTANDING  8
#define HTTP2_MAX_STREAMS     100
#define REFUSED_LOGS_A_SECOND 10
#define RESERVED_POLLERS      2
#define WATCH_MS              1    /* how often the watcher looks while calls come in */
#define TAKEOVER_MS           2    /* a handler the poller runs longer: another thread polls */
#define IDLE_WAIT_MS          100  /* the poller's and the watcher's longest wait */
#define SPARE_WAIT_MS         1000 /* the other threads' (woken when the pool ends) */

enum tag_kind { T_REQUEST, T_CLOSE, T_RECV, T_FINISH, T_SEND, T_MORE };

struct call_tag {
    struct dhaf_rpc_call *c;
    enum tag_kind kind;
};

/* How many accepted calls a peer address or a connection holds. */
struct slot_count {
    char key[96];
    int n;
};

struct dhaf_rpc_server {
    grpc_server *srv;
    grpc_completion_queue *cq;
    const struct dhaf_rpc_method *methods;
    size_t n_methods;
    size_t *method_max; /* max receive size of each method */
    char *token;
    int max_calls, max_per_peer, max_per_conn, recv_timeout_ms, n_workers;
    int port;
    pthread_t thread;   /* the first thread of the pool; it joins the others when it ends */
    pthread_t *workers; /* the others */
    atomic_bool stopping, shutdown_started, shutdown_seen;
    atomic_int live;      /* calls handed out by the core and not freed yet */
    atomic_int requested; /* grpc_server_request_call outstanding */
    atomic_int queued;    /* calls waiting for a thread to run their handler */
    atomic_llong next_sweep;
    pthread_mutex_t lock; /* token, slots, the handler queue */
    struct dhaf_rpc_call *q_head, *q_tail;
    int in_handlers, max_handlers;
    int active; /* accepted calls holding a slot */
    struct slot_count *peers, *conns;
    int n_peers, n_conns;
    pthread_mutex_t poll_lock;        /* the roles of the pool's threads (see serve()) */
    pthread_cond_t poll_cv;           /* threads without a role wait here */
    pthread_cond_t watch_cv;          /* the watcher waits here */
    bool polling, watching;           /* the poller's and the watcher's roles are taken */
    bool watcher_idle;                /* the watcher waits long: no handler ran lately */
    uint64_t poll_epoch;              /* +1 at each takeover from a poller in a handler */
    int64_t inline_since;             /* when the poller started a handler (mono ms); 0: it polls */
    uint64_t inline_runs, watch_runs; /* handlers the poller ran; the count the watcher saw */
    pthread_mutex_t send_lock;        /* streaming sends wait here for their completion */
    pthread_cond_t send_done;
    pthread_cond_t recv_done;  /* bidirectional calls' further messages (send_lock) */
    pthread_mutex_t wait_lock; /* the list of calls awaiting their message */
    struct dhaf_rpc_call *wait_head, *wait_tail; /* oldest first */
    pthread_mutex_t log_lock;
    int64_t log_second;
    int logs_this_second, logs_suppressed;
    char shutdown_tag;
};

struct dhaf_rpc_call {
    struct dhaf_rpc_server *server;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    struct call_tag t_request, t_close, t_recv, t_finish, t_send, t_more;
    atomic_int refs;
    const struct dhaf_rpc_method *method;
    char *path;
    char *peer;
    char **md_kv; /* key i at [2i], its value at [2i+1]: one allocation with the strings */
    size_t n_md;
    char slot_addr[96], slot_conn[96]; /* the slot's keys (peer address, connection) */
    char *cn;
    bool cn_done;
    int cancelled_raw;     /* written by the core when the call ends */
    atomic_bool cancelled; /* copied from it when the end is seen */
    bool has_slot;
    bool waiting; /* in the awaiting-message list */
    int64_t recv_deadline_ms;
    struct dhaf_rpc_call *w_prev, *w_next, *q_next;
    grpc_byte_buffer *recv_bb;
    ProtobufCMessage *req;
    grpc_byte_buffer *reply;   /* unary: the one response */
    grpc_byte_buffer *send_bb; /* streaming: the message being sent */
    int send_state;            /* streaming: 0 idle, 1 pending, 2 sent, 3 failed */
    grpc_byte_buffer *more_bb; /* bidirectional: the next request message */
    int more_state;            /* bidirectional: 0 idle, 1 pending, 2 received, 3 failed */
    bool input_ended;          /* bidirectional: the client closed its side */
    bool initial_sent;
};

static struct dhaf_rpc_call *call_new(struct dhaf_rpc_server *srv)
{
    struct dhaf_rpc_call *c = dhaf_xcalloc(1, sizeof(*c));
    c->server = srv;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    c->t_request = (struct call_tag){c, T_REQUEST};
    c->t_close = (struct call_tag){c, T_CLOSE};
    c->t_recv = (struct call_tag){c, T_RECV};
    c->t_finish = (struct call_tag){c, T_FINISH};
    c->t_send = (struct call_tag){c, T_SEND};
    c->t_more = (struct call_tag){c, T_MORE};
    atomic_init(&c->refs, 0);
    atomic_init(&c->cancelled, false);
    return c;
}

static void call_free(struct dhaf_rpc_call *c)
{
    if (c->call)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    free(c->md_kv);
    if (c->path)
        gpr_free(c->path);
    if (c->peer)
        gpr_free(c->peer);
    free(c->cn);
    if (c->recv_bb)
        grpc_byte_buffer_destroy(c->recv_bb);
    if (c->req)
        protobuf_c_message_free_unpacked(c->req, NULL);
    if (c->reply)
        grpc_byte_buffer_destroy(c->reply);
    if (c->send_bb)
        grpc_byte_buffer_destroy(c->send_bb);
    if (c->more_bb)
        grpc_byte_buffer_destroy(c->more_bb);
    free(c);
}

/* "ipv4:127.0.0.1:5555" -> "ipv4:127.0.0.1" (the peer address without the port). */
static void peer_address(const char *peer, char *out, size_t len)
{
    snprintf(out, len, "%s", peer ? peer : "unknown");
    char *colon = strrchr(out, ':');
    if (colon && colon != strchr(out, ':'))
        *colon = '\0';
}

static struct slot_count *slot_find(struct slot_count *v, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(v[i].key, key) == 0)
            return &v[i];
    return NULL;
}

static void slot_drop(struct slot_count *v, int *n, const char *key)
{
    struct slot_count *s = slot_find(v, *n, key);
    if (s && --s->n == 0)
        *s = v[--*n];
}

/* Takes a slot for c, or says why not (in why). Called when the call arrives. */
static bool slot_take(struct dhaf_rpc_server *srv, struct dhaf_rpc_call *c, char *why, size_t len)
{
    char *addr = c->slot_addr, *conn = c->slot_conn; /* kept for call_unref */
    peer_address(c->peer, addr, sizeof(c->slot_addr));
    snprintf(conn, sizeof(c->slot_conn), "%s", c->peer ? c->peer : "unknown");
    pthread_mutex_lock(&srv->lock);
    struct slot_count *p = slot_find(srv->peers, srv->n_peers, addr);
    struct slot_count *k = slot_find(srv->conns, srv->n_conns, conn);
    bool ok = false;
    if (srv->active >= srv->max_calls)
        snprintf(why, len, "too many calls in progress (%d); retry later", srv->max_calls);
    else if (p && p->n >= srv->max_per_peer)
        snprintf(why, len, "too many calls in progress from this address (%d); retry later",
                 srv->max_per_peer);
    else if (k && k->n >= srv->max_per_conn)
        snprintf(why, len, "too many calls in progress on this connection (%d); retry later",
                 srv->max_per_conn);
    else
        ok = true;
    if (ok) {
        srv->active++;
        if (!p) {
            p = &srv->peers[srv->n_peers++];
            snprintf(p->key, sizeof(p->key), "%s", addr);
            p->n = 0;
        }
        if (!k) {
            k = &srv->conns[srv->n_conns++];
            snprintf(k->key, sizeof(k->key), "%s", conn);
            k->n = 0;
        }
        p->n++;
        k->n++;
        c->has_slot = true;
    }
    pthread_mutex_unlock(&srv->lock);
    return ok;
}

static void call_unref(struct dhaf_rpc_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    struct dhaf_rpc_server *srv = c->server;
    if (c->has_slot) {
        pthread_mutex_lock(&srv->lock);
        srv->active--;
        slot_drop(srv->peers, &srv->n_peers, c->slot_addr);
        slot_drop(srv->conns, &srv->n_conns, c->slot_conn);
        pthread_mutex_unlock(&srv->lock);
    }
    call_free(c);
    atomic_fetch_sub(&srv->live, 1);
}

static int request_next(struct dhaf_rpc_server *srv)
{
    struct dhaf_rpc_call *c = call_new(srv);
    grpc_call_error ce = grpc_server_request_call(srv->srv, &c->call, &c->details, &c->md, srv->cq,
                                                  srv->cq, &c->t_request);
    if (ce != GRPC_CALL_OK) {
        call_free(c);
        return -1;
    }
    return 0;
}

/* Answers the call with its status (and the unary reply when OK): the last batch of a call.
 * The batch holds the caller's reference to the call; released when it completes. */
static void call_finish(struct dhaf_rpc_call *c, int grpc_status, const char *msg, bool refused)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (refused) {
        /* the end of the call, in the same batch: no message is ever received */
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n++].data.recv_close_on_server.cancelled = &c->cancelled_raw;
    }
    if (!c->initial_sent)
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (grpc_status == GRPC_STATUS_OK && c->reply) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->reply;
    }
    grpc_slice details = grpc_slice_from_copied_string(msg ? msg : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)grpc_status;
    ops[n].data.send_status_from_server.status_details = &details;
    ops[n++].data.send_status_from_server.trailing_metadata_count = 0;
    if (grpc_call_start_batch(c->call, ops, n, &c->t_finish, NULL) != GRPC_CALL_OK)
        call_unref(c); /* fails harmlessly when the client is gone */
    grpc_slice_unref(details);
}

/* Logs a refused call, at most REFUSED_LOGS_A_SECOND lines a second (a flood of refused calls
 * must not flood the log): the lines left out are counted in the next one. */
static void log_refused(struct dhaf_rpc_server *srv, struct dhaf_rpc_call *c, const char *why)
{
    int64_t sec = dhaf_mono_ms() / 1000;
    pthread_mutex_lock(&srv->log_lock);
    if (sec != srv->log_second) {
        srv->log_second = sec;
        srv->logs_this_second = 0;
    }
    if (srv->logs_this_second >= REFUSED_LOGS_A_SECOND) {
        srv->logs_suppressed++;
        pthread_mutex_unlock(&srv->log_lock);
        return;
    }
    srv->logs_this_second++;
    char m[200], p[100], r[300];
    DHAF_LOG(DHAF_LOG_WARN,
             "event=rpc-refused method=\"%s\" peer=\"%s\" reason=\"%s\" suppressed=%d",
             dhaf_log_quote(m, sizeof(m), c->path ? c->path : ""),
             dhaf_log_quote(p, sizeof(p), dhaf_rpc_call_peer(c)), dhaf_log_quote(r, sizeof(r), why),
             srv->logs_suppressed);
    srv->logs_suppressed = 0;
    pthread_mutex_unlock(&srv->log_lock);
}

static void refuse(struct dhaf_rpc_call *c, int grpc_status, const char *why, bool log)
{
    if (log)
        log_refused(c->server, c, why);
    atomic_store(&c->refs, 1);
    call_finish(c, grpc_status, why, true);
}

static int default_auth(struct dhaf_rpc_server *srv, struct dhaf_rpc_call *c, struct dhaf_err *err)
{
    const char *tok = dhaf_rpc_call_bearer(c);
    pthread_mutex_lock(&srv->lock); /* the token may be replaced by a reload */
    int rc = 0;
    if (!srv->token)
        rc = 0;
    else if (!tok)
        rc = dhaf_err_set(err, DHAF_EAUTH, "missing \"authorization: Bearer <token>\"");
    else if (!dhaf_rpc_token_equal(tok, srv->token))
        rc = dhaf_err_set(err, DHAF_EAUTH, "invalid token");
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

void dhaf_rpc_server_set_token(struct dhaf_rpc_server *srv, const char *token)
{
    char *fresh = token ? dhaf_xstrdup(token) : NULL;
    pthread_mutex_lock(&srv->lock);
    char *old = srv->token;
    srv->token = fresh;
    pthread_mutex_unlock(&srv->lock);
    if (old)
        explicit_bzero(old, strlen(old));
    free(old);
}

static void wait_remove(struct dhaf_rpc_server *srv, struct dhaf_rpc_call *c)
{
    if (!c->waiting)
        return;
    if (c->w_prev)
        c->w_prev->w_next = c->w_next;
    else
        srv->wait_head = c->w_next;
    if (c->w_next)
        c->w_next->w_prev = c->w_prev;
    else
        srv->wait_tail = c->w_prev;
    c->w_prev = c->w_next = NULL;
    c->waiting = false;
}

/* Copies the call's metadata (at most MAX_METADATA entries) as C strings, in one allocation
 * (a call arrives with a few: one malloc instead of two a key). */
static void md_copy(struct dhaf_rpc_call *c)
{
    size_t n = c->md.count < MAX_METADATA ? c->md.count : MAX_METADATA;
    if (n == 0)
        return;
    size_t bytes = 2 * n * sizeof(char *);
    for (size_t i = 0; i < n; i++)
        bytes += GRPC_SLICE_LENGTH(c->md.metadata[i].key) +
                 GRPC_SLICE_LENGTH(c->md.metadata[i].value) + 2;
    c->md_kv = dhaf_xmalloc(bytes);
    char *p = (char *)(c->md_kv + 2 * n);
    for (size_t i = 0; i < 2 * n; i++) {
        grpc_slice sl = i % 2 ? c->md.metadata[i / 2].value : c->md.metadata[i / 2].key;
        size_t len = GRPC_SLICE_LENGTH(sl);
        memcpy(p, GRPC_SLICE_START_PTR(sl), len);
        p[len] = '\0';
        c->md_kv[i] = p;
        p += len + 1;
    }
    c->n_md = n;
}

/* A new call, from its initial metadata only: refuse it at once or start receiving its
 * message. Nothing here blocks. */
static void on_new_call(struct dhaf_rpc_server *srv, struct dhaf_rpc_call *c)
{

    c->path = grpc_slice_to_c_string(c->details.method);
    c->peer = grpc_call_get_peer(c->call);
    md_copy(c);
    for (size_t i = 0; i < srv->n_methods; i++)
        if (strcmp(srv->methods[i].path, c->path) == 0)
            c->method = &srv->methods[i];
    if (!c->method) {
        char why[200], q[160];
        snprintf(why, sizeof(why), "unknown method %s", dhaf_log_quote(q, sizeof(q), c->path));
        refuse(c, GRPC_STATUS_UNIMPLEMENTED, why, false);
        return;
    }
    struct dhaf_err err;
    dhaf_err_clear(&err);
    int rc = c->method->auth ? c->method->auth(c->method->ud, c, &err) : default_auth(srv, c, &err);
    if (rc != 0) {
        if (!err.msg[0])
            snprintf(err.msg, sizeof(err.msg), "%s", dhaf_strerror(rc));
        refuse(c, dhaf_rpc_err_to_status(rc), err.msg, true);
        return;
    }
    char why[160];
    if (!slot_take(srv, c, why, sizeof(why))) {
        refuse(c, GRPC_STATUS_RESOURCE_EXHAUSTED, why, true);
        return;
    }
    /* two references: the end of the call (RECV_CLOSE) and the message -> handler -> reply */
    atomic_store(&c->refs, 2);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled_raw;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK)
        call_unref(c);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    /* A unary call's headers leave with its reply (call_finish): one write a call instead of
     * two. A stream's leave now, before its first message. */
    if (c->method->flow != DHAF_RPC_UNARY) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_sent = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &c->recv_bb;
    /* listed before the receive starts: its completion may come at once, on another thread */
    c->recv_deadline_ms = dhaf_mono_ms() + srv->recv_timeout_ms;
    pthread_mutex_lock(&srv->wait_lock);
    c->waiting = true;
    c->w_prev = srv->wait_tail;
    if (srv->wait_tail)
        srv->wait_tail->w_next = c;
    else
        srv->wait_head = c;
    srv->wait_tail = c;
    pthread_mutex_unlock(&srv->wait_lock);
    if (grpc_call_start_batch(c->call, ops, n, &c->t_recv, NULL) != GRPC_CALL_OK) {
        pthread_mutex_lock(&srv->wait_lock);
        wait_remove(srv, c);
        pthread_mutex_unlock(&srv->wait_lock);
        c->initial_sent = false;
        call_finish(c, GRPC_STATUS_INTERNAL, "cannot receive the request", false);
    }
}

/* The request message arrived (or the call ended without one): decode it. Returns the call
 * when this thread is to run its handler now (a handler slot was free), else NULL (answered,
 * or queued for the next thread with a free handler slot). */
static struct dhaf_rpc_call *on_message(struct dhaf_rpc_server *srv, struct dhaf_rpc_call *c,
                                        bool success)
{
    pthread_mutex_lock(&srv->wait_lock);
    wait_remove(srv, c);
    pthread_mutex_unlock(&srv->wait_lock);
    struct dhaf_rpc_call *run = NULL;
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    size_t max = srv->method_max[c->method - srv->methods];
    if (!success || !bb) {
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message", false);
    } else if (grpc_byte_buffer_length(bb) > max) {
        char why[160];
        snprintf(why, sizeof(why), "request of %zu bytes; %s takes at most %zu",
                 grpc_byte_buffer_length(bb), c->method->path, max);
        call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, why, false);
    } else if (!(c->req = unpack(c->method->req_desc, bb))) {
        char why[200];
        snprintf(why, sizeof(why), "cannot decode the request as %s", c->method->req_desc->name);
        call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, why, false);
    } else {
        pthread_mutex_lock(&srv->lock);
        if (srv->in_handlers < srv->max_handlers && !srv->q_head) {
            srv->in_handlers++;
            run = c;
        } else {
            c->q_next = NULL;
            if (srv->q_tail)
                srv->q_tail->q_next = c;
            else
                srv->q_head = c;
            srv->q_tail = c;
            atomic_fetch_add(&srv->queued, 1);
        }
        pthread_mutex_unlock(&srv->lock);
    }
    if (bb)
        grpc_byte_buffer_destroy(bb);
    return run;
}

/* Cancels the calls whose message is overdue (one thread at a time, every 50 ms). */
static void sweep_waiting(struct dhaf_rpc_server *srv)
{
    int64_t now = dhaf_mono_ms();
    long long due = atomic_load(&srv->next_sweep);
    if (now < due || !atomic_compare_exchange_strong(&srv->next_sweep, &due, now + 50))
        return;
    pthread_mutex_lock(&srv->wait_lock);
    while (srv->wait_head && srv->wait_head->recv_deadline_ms <= now) {
        struct dhaf_rpc_call *c = srv->wait_head;
        wait_remove(srv, c);
        char why[120];
        snprintf(why, sizeof(why), "no request message within %d ms", srv->recv_timeout_ms);
        log_refused(srv, c, why);
        /* the pending RECV_MESSAGE then completes without a message (on_message) */
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, why, NULL);
    }
    pthread_mutex_unlock(&srv->wait_lock);
}

static void run_handler(struct dhaf_rpc_call *c)
{
    struct dhaf_err err;
    dhaf_err_clear(&err);
    int status = GRPC_STATUS_OK;
    int rc = c->method->handler(c->method->ud, c, c->req, &err);
    if (rc != 0) {
        status = dhaf_rpc_err_to_status(rc);
        /* A handler that gave up because the call's deadline passed answers as the client's
         * own timer would, whichever of the two reaches the client first. */
        if (rc == DHAF_ECANCELLED && dhaf_rpc_call_remaining_ms(c) == 0)
            status = GRPC_STATUS_DEADLINE_EXCEEDED;
        if (!err.msg[0])
            snprintf(err.msg, sizeof(err.msg), "%s", dhaf_strerror(rc));
    } else if (c->method->flow == DHAF_RPC_UNARY && !c->reply) {
        status = GRPC_STATUS_INTERNAL;
        dhaf_err_set(&err, DHAF_EINTERNAL, "the handler of %s sent no reply", c->path);
    }
    protobuf_c_message_free_unpacked(c->req, NULL);
    c->req = NULL;
    call_finish(c, status, status == GRPC_STATUS_OK ? "" : err.msg, false);
}

/* Runs c's handler on this thread (it holds a handler slot), then the queued ones while any. */
static void run_handlers(struct dhaf_rpc_server *srv, struct dhaf_rpc_call *c)
{
    while (c) {
        run_handler(c);
        c = NULL;
        pthread_mutex_lock(&srv->lock);
        if (srv->q_head) {
            c = srv->q_head; /* keeps the slot */
            srv->q_head = c->q_next;
            if (!srv->q_head)
                srv->q_tail = NULL;
            atomic_fetch_sub(&srv->queued, 1);
        } else {
            srv->in_handlers--;
        }
        pthread_mutex_unlock(&srv->lock);
    }
}

/* A queued call, when a handler slot is free (taking it). */
static struct dhaf_rpc_call *queue_pop(struct dhaf_rpc_server *srv)
{
    if (atomic_load(&srv->queued) == 0)
        return NULL;
    struct dhaf_rpc_call *c = NULL;
    pthread_mutex_lock(&srv->lock);
    if (srv->q_head && srv->in_handlers < srv->max_handlers) {
        c = srv->q_head;
        srv->q_head = c->q_next;
        if (!srv->q_head)
            srv->q_tail = NULL;
        atomic_fetch_sub(&srv->queued, 1);
        srv->in_handlers++;
    }
    pthread_mutex_unlock(&srv->lock);
    return c;
}

static void on_event(struct dhaf_rpc_server *srv, struct call_tag *t, bool success)
{
    struct dhaf_rpc_call *c = t->c;
    switch (t->kind) {
    case T_REQUEST: {
        /* counted live before the request is uncounted: the pool ends only when both are 0 */
        if (success)
            atomic_fetch_add(&srv->live, 1);
        atomic_fetch_sub(&srv->requested, 1);
        bool stopping = atomic_load(&srv->shutdown_started);
        if (success && !stopping) {
            on_new_call(srv, c);
        } else if (success) {
            refuse(c, GRPC_STATUS_UNAVAILABLE, "the server is stopping", false);
        } else {
            call_free(c);
        }
        if (!stopping && request_next(srv) == 0)
            atomic_fetch_add(&srv->requested, 1);
        break;
    }
    case T_CLOSE:
        atomic_store(&c->cancelled, c->cancelled_raw != 0);
        call_unref(c);
        break;
    case T_RECV: /* serve() takes these itself */
        run_handlers(srv, on_message(srv, c, success));
        break;
    case T_FINISH:
        atomic_store(&c->cancelled, true); /* over: a handler still streaming stops */
        call_unref(c);
        break;
    case T_SEND:
        pthread_mutex_lock(&srv->send_lock);
        c->send_state = success ? 2 : 3;
        pthread_cond_broadcast(&srv->send_done);
        pthread_mutex_unlock(&srv->send_lock);
        break;
    case T_MORE:
        pthread_mutex_lock(&srv->send_lock);
        c->more_state = success ? 2 : 3;
        pthread_cond_broadcast(&srv->recv_done);
        pthread_mutex_unlock(&srv->send_lock);
        call_unref(c); /* the receive's own reference (dhaf_rpc_recv) */
        break;
    }
}

enum role { R_NONE, R_WATCHER, R_POLLER };

/* Waits on cv up to ms milliseconds (srv->poll_lock held). */
static void role_wait(struct dhaf_rpc_server *srv, pthread_cond_t *cv, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, &srv->poll_lock, &ts);
}

/* A thread without the poller's role: takes the poller's role when it is free, or the
 * watcher's, or (as the watcher) the poller's from a handler that has run TAKEOVER_MS; else
 * waits a while. Returns the thread's role; every wait is bounded, so the end of the pool is
 * seen. */
static enum role role_next(struct dhaf_rpc_server *srv, enum role role)
{
    pthread_mutex_lock(&srv->poll_lock);
    if (role == R_NONE && !srv->watching) {
        srv->watching = true;
        role = R_WATCHER;
    }
    bool take = !srv->polling;
    if (role == R_WATCHER && !take && srv->inline_since &&
        dhaf_mono_ms() - srv->inline_since >= TAKEOVER_MS) {
        srv->poll_epoch++; /* the handler's thread sees it and leaves the role */
        srv->inline_since = 0;
        take = true;
    }
    if (take) {
        srv->polling = true;
        if (role == R_WATCHER) {
            srv->watching = false;
            pthread_cond_signal(&srv->poll_cv); /* another thread watches */
        }
        pthread_mutex_unlock(&srv->poll_lock);
        return R_POLLER;
    }
    if (role == R_WATCHER) {
        /* short waits only while calls come in: an idle server stays idle */
        bool active = srv->inline_since || srv->inline_runs != srv->watch_runs;
        srv->watch_runs = srv->inline_runs;
        srv->watcher_idle = !active;
        role_wait(srv, &srv->watch_cv, active ? WATCH_MS : IDLE_WAIT_MS);
        srv->watcher_idle = false;
    } else {
        role_wait(srv, &srv->poll_cv, SPARE_WAIT_MS);
    }
    pthread_mutex_unlock(&srv->poll_lock);
    return role;
}

/* Leaves a role (to run a queued handler, or at the end). */
static void role_leave(struct dhaf_rpc_server *srv, enum role role)
{
    pthread_mutex_lock(&srv->poll_lock);
    if (role == R_POLLER)
        srv->polling = false;
    if (role == R_WATCHER)
        srv->watching = false;
    pthread_cond_signal(&srv->watch_cv); /* the watcher polls at once */
    pthread_cond_signal(&srv->poll_cv);
    pthread_mutex_unlock(&srv->poll_lock);
}

/* The poller runs the handler of the message it received (c holds a handler slot). True when
 * this thread is still the poller afterwards (the watcher took over if it ran long). */
static bool run_inline(struct dhaf_rpc_server *srv, struct dhaf_rpc_call *c)
{
    pthread_mutex_lock(&srv->poll_lock);
    uint64_t epoch = srv->poll_epoch;
    srv->inline_since = dhaf_mono_ms();
    srv->inline_runs++;
    if (srv->watcher_idle)
        pthread_cond_signal(&srv->watch_cv); /* the first call after a quiet time */
    pthread_mutex_unlock(&srv->poll_lock);
    run_handlers(srv, c);
    pthread_mutex_lock(&srv->poll_lock);
    bool still = srv->poll_epoch == epoch;
    if (still)
        srv->inline_since = 0;
    pthread_mutex_unlock(&srv->poll_lock);
    return still;
}

/* One thread of the pool: takes completions until the server is shut down and every call has
 * ended. */
static void *serve(void *arg)
{
    struct dhaf_rpc_server *srv = arg;
    enum role role = R_NONE;
    for (;;) {
        if (atomic_load(&srv->stopping) && !atomic_exchange(&srv->shutdown_started, true)) {
            grpc_server_shutdown_and_notify(srv->srv, srv->cq, &srv->shutdown_tag);
            grpc_server_cancel_all_calls(srv->srv);
        }
        if (atomic_load(&srv->shutdown_seen) && atomic_load(&srv->requested) == 0 &&
            atomic_load(&srv->live) == 0)
            break;
        struct dhaf_rpc_call *q = queue_pop(srv);
        if (q) {
            if (role != R_NONE)
                role_leave(srv, role);
            role = R_NONE;
            run_handlers(srv, q);
            continue;
        }
        if (role != R_POLLER) {
            role = role_next(srv, role);
            continue;
        }
        grpc_event ev = grpc_completion_queue_next(srv->cq, deadline_in(IDLE_WAIT_MS), NULL);
        sweep_waiting(srv);
        if (ev.type == GRPC_QUEUE_TIMEOUT)
            continue;
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.tag == &srv->shutdown_tag) {
            atomic_store(&srv->shutdown_seen, true);
            continue;
        }
        struct call_tag *t = ev.tag;
        if (t->kind != T_RECV) {
            on_event(srv, t, ev.success != 0); /* never blocks */
            continue;
        }
        struct dhaf_rpc_call *c = on_message(srv, t->c, ev.success != 0);
        if (c && c->method->flow != DHAF_RPC_UNARY) {
            /* its sends wait for completions this thread would take: the watcher polls */
            role_leave(srv, role);
            role = R_NONE;
            run_handlers(srv, c);
        } else if (c && !run_inline(srv, c)) {
            role = R_NONE;
        }
    }
    if (role != R_NONE)
        role_leave(srv, role);
    /* the others see the end now */
    pthread_mutex_lock(&srv->poll_lock);
    pthread_cond_broadcast(&srv->poll_cv);
    pthread_cond_broadcast(&srv->watch_cv);
    pthread_mutex_unlock(&srv->poll_lock);
    return NULL;
}

/* The first thread: serves, then waits for the others. */
static void *serve_first(void *arg)
{
    struct dhaf_rpc_server *srv = arg;
    serve(srv);
    for (int i = 0; i < srv->n_workers - 1; i++)
        pthread_join(srv->workers[i], NULL);
    return NULL;
}

static void server_free(struct dhaf_rpc_server *srv)
{
    pthread_mutex_destroy(&srv->lock);
    pthread_mutex_destroy(&srv->wait_lock);
    pthread_mutex_destroy(&srv->log_lock);
    pthread_mutex_destroy(&srv->send_lock);
    pthread_cond_destroy(&srv->send_done);
    pthread_cond_destroy(&srv->recv_done);
    pthread_mutex_destroy(&srv->poll_lock);
    pthread_cond_destroy(&srv->poll_cv);
    pthread_cond_destroy(&srv->watch_cv);
    if (srv->token)
        explicit_bzero(srv->token, strlen(srv->token));
    free(srv->token);
    free(srv->method_max);
    free(srv->workers);
    free(srv->peers);
    free(srv->conns);
    free(srv);
}

/* Drains the (shut down) queue of a server no thread serves any more, and frees it. Only
 * requests for calls the core never handed out can be left. */
static void drain_and_free(struct dhaf_rpc_server *srv)
{
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.tag && ev.tag != &srv->shutdown_tag) {
            struct call_tag *t = ev.tag;
            if (t->kind == T_REQUEST)
                call_free(t->c);
        }
    }
    grpc_completion_queue_destroy(srv->cq);
    server_free(srv);
}

/* Shuts down a server whose threads never ran, and frees it. */
static void server_abort(struct dhaf_rpc_server *srv, bool started)
{
    if (started) {
        grpc_server_shutdown_and_notify(srv->srv, srv->cq, &srv->shutdown_tag);
        grpc_server_cancel_all_calls(srv->srv);
    }
    grpc_server_destroy(srv->srv);
    grpc_completion_queue_shutdown(srv->cq);
    drain_and_free(srv);
}

struct dhaf_rpc_server *dhaf_rpc_server_start(const struct dhaf_rpc_server_opts *opts,
                                              const struct dhaf_rpc_method *methods, size_t n,
                                              struct dhaf_err *err)
{
    dhaf_rpc_init();
    grpc_server_credentials *creds = NULL;
    if (opts->tls.tls) {
        if (!opts->tls.cert_file || !opts->tls.key_file) {
            dhaf_err_set(err, DHAF_EINVAL, "TLS needs a certificate and a key");
            return NULL;
        }
        char *cert = dhaf_read_pem(opts->tls.cert_file, "certificate", err);
        char *key = cert ? dhaf_read_pem(opts->tls.key_file, "private key", err) : NULL;
        char *ca = NULL;
        if (key && opts->tls.ca_file)
            ca = dhaf_read_pem(opts->tls.ca_file, "client CA file", err);
        if (!cert || !key || (opts->tls.ca_file && !ca)) {
            free(cert);
            if (key)
                explicit_bzero(key, strlen(key));
            free(key);
            return NULL;
        }
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_server_credentials_create_ex(
            ca, &pair, 1,
            ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
        free(cert);
        explicit_bzero(key, strlen(key));
        free(key);
        free(ca);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    if (!creds) {
        dhaf_err_set(err, DHAF_EINVAL, "cannot create server credentials (bad certificate?)");
        return NULL;
    }

    struct dhaf_rpc_server *srv = dhaf_xcalloc(1, sizeof(*srv));
    srv->methods = methods;
    srv->n_methods = n;
    srv->token = opts->bearer_token ? dhaf_xstrdup(opts->bearer_token) : NULL;
    srv->max_calls =
        opts->max_concurrent_calls > 0 ? opts->max_concurrent_calls : DEFAULT_MAX_CALLS;
    srv->max_per_peer =
        opts->max_calls_per_peer > 0 ? opts->max_calls_per_peer : (srv->max_calls + 1) / 2;
    srv->max_per_conn = opts->max_calls_per_connection > 0 ? opts->max_calls_per_connection
                                                           : (srv->max_calls + 3) / 4;
    srv->recv_timeout_ms = opts->recv_timeout_ms > 0 ? opts->recv_timeout_ms : DEFAULT_RECV_TIMEOUT;
    srv->n_workers = opts->workers > 0 ? opts->workers : DEFAULT_WORKERS;
    if (srv->n_workers < RESERVED_POLLERS + 1)
        srv->n_workers = RESERVED_POLLERS + 1;
    srv->max_handlers = srv->n_workers - RESERVED_POLLERS;
    srv->peers = dhaf_xcalloc((size_t)srv->max_calls, sizeof(*srv->peers));
    srv->conns = dhaf_xcalloc((size_t)srv->max_calls, sizeof(*srv->conns));
    srv->workers = dhaf_xcalloc((size_t)srv->n_workers, sizeof(*srv->workers));
    size_t max_msg = opts->max_message_bytes ? opts->max_message_bytes : DEFAULT_MAX_MESSAGE;
    if (max_msg > INT32_MAX)
        max_msg = INT32_MAX;
    size_t biggest = 0;
    srv->method_max = dhaf_xcalloc(n + 1, sizeof(*srv->method_max));
    for (size_t i = 0; i < n; i++) {
        size_t m = opts->method_max_bytes && opts->method_max_bytes[i] ? opts->method_max_bytes[i]
                                                                       : max_msg;
        srv->method_max[i] = m < max_msg ? m : max_msg;
        if (srv->method_max[i] > biggest)
            biggest = srv->method_max[i];
    }
    atomic_init(&srv->stopping, false);
    atomic_init(&srv->shutdown_started, false);
    atomic_init(&srv->shutdown_seen, false);
    atomic_init(&srv->live, 0);
    atomic_init(&srv->requested, 0);
    atomic_init(&srv->queued, 0);
    atomic_init(&srv->next_sweep, 0);
    pthread_mutex_init(&srv->lock, NULL);
    pthread_mutex_init(&srv->wait_lock, NULL);
    pthread_mutex_init(&srv->log_lock, NULL);
    pthread_mutex_init(&srv->send_lock, NULL);
    pthread_cond_init(&srv->send_done, NULL);
    dhaf_cond_init_mono(&srv->recv_done);
    pthread_mutex_init(&srv->poll_lock, NULL);
    pthread_cond_init(&srv->poll_cv, NULL);
    pthread_cond_init(&srv->watch_cv, NULL);

    grpc_arg args[5] = {
        /* Without this a second server on the same port "succeeds" and steals connections. */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
        /* the largest message any method takes; each method's own bound is checked too */
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = (int)(biggest ? biggest : 1)},
        /* Clients of a long stream may ping every 10 s. */
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
         .value.integer = 5000},
        /* streams open at once on one connection (the transport's own per-connection bound) */
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_CONCURRENT_STREAMS,
         .value.integer = HTTP2_MAX_STREAMS},
        /* flow-control windows stay at their initial size (64 KiB a stream): a client cannot
         * make the node buffer much of a message it has not asked for */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_BDP_PROBE, .value.integer = 0},
    };
    grpc_channel_args cargs = {.num_args = 5, .args = args};
    srv->srv = grpc_server_create(&cargs, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->srv, srv->cq, NULL);
    srv->port = grpc_server_add_http2_port(srv->srv, opts->addr, creds);
    grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        dhaf_err_set(err, DHAF_EUNAVAILABLE,
                     "cannot listen on %s (address in use, not local, or malformed)", opts->addr);
        server_abort(srv, false);
        return NULL;
    }
    grpc_server_start(srv->srv);
    /* several calls requested at once, so a burst of new calls does not wait for a thread */
    for (int i = 0; i < REQUESTS_OUTSTANDING; i++)
        if (request_next(srv) == 0)
            atomic_fetch_add(&srv->requested, 1);
    int started = 0;
    for (; started < srv->n_workers - 1; started++)
        if (dhaf_thread_start(&srv->workers[started], false, serve, srv) != 0)
            break;
    if (started == srv->n_workers - 1 &&
        dhaf_thread_start(&srv->thread, false, serve_first, srv) == 0)
        return srv;
    dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the server threads");
    if (started == 0) {
        server_abort(srv, true);
        return NULL;
    }
    /* the threads that run shut the server down and end */
    atomic_store(&srv->stopping, true);
    for (int i = 0; i < started; i++)
        pthread_join(srv->workers[i], NULL);
    server_abort(srv, false);
    return NULL;
}

int dhaf_rpc_server_port(const struct dhaf_rpc_server *srv)
{
    return srv->port;
}

void dhaf_rpc_server_stop(struct dhaf_rpc_server *srv)
{
    dhaf_rpc_server_stop_within(srv, -1);
}

bool dhaf_rpc_server_stop_within(struct dhaf_rpc_server *srv, int deadline_ms)
{
    if (!srv)
        return true;
    atomic_store(&srv->stopping, true);
    if (deadline_ms < 0) {
        pthread_join(srv->thread, NULL);
    } else if (!dhaf_join_within(srv->thread, deadline_ms)) {
        /* a handler is still in a call: the server is left to the process exit */
        pthread_detach(srv->thread);
        return false;
    }
    grpc_server_destroy(srv->srv);
    grpc_completion_queue_shutdown(srv->cq);
    drain_and_free(srv);
    return true;
}

int dhaf_rpc_send(struct dhaf_rpc_call *call, const ProtobufCMessage *msg, struct dhaf_err *err)
{
    if (call->method->flow == DHAF_RPC_UNARY) {
        if (call->reply)
            return dhaf_err_set(err, DHAF_EINTERNAL, "%s: a unary call has one reply", call->path);
        call->reply = pack(msg);
        return 0;
    }
    struct dhaf_rpc_server *srv = call->server;
    call->send_bb = pack(msg);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = call->send_bb;
    call->send_state = 1;
    bool ok = false;
    if (grpc_call_start_batch(call->call, &op, 1, &call->t_send, NULL) == GRPC_CALL_OK) {
        /* a thread of the pool reports the completion; the call's deadline or a cancel bounds it */
        pthread_mutex_lock(&srv->send_lock);
        while (call->send_state == 1)
            pthread_cond_wait(&srv->send_done, &srv->send_lock);
        ok = call->send_state == 2;
        pthread_mutex_unlock(&srv->send_lock);
    }
    call->send_state = 0;
    grpc_byte_buffer_destroy(call->send_bb);
    call->send_bb = NULL;
    if (!ok)
        return dhaf_err_set(err, DHAF_ECANCELLED, "%s: the client went away", call->path);
    return 0;
}

int dhaf_rpc_recv(struct dhaf_rpc_call *call, ProtobufCMessage **msg, int timeout_ms,
                  struct dhaf_err *err)
{
    *msg = NULL;
    if (call->method->flow != DHAF_RPC_BIDI)
        return dhaf_err_set(err, DHAF_EINVAL, "%s takes one request message", call->path);
    if (call->input_ended)
        return 0;
    struct dhaf_rpc_server *srv = call->server;
    pthread_mutex_lock(&srv->send_lock); /* a completion writes more_state */
    bool idle = call->more_state == 0;
    pthread_mutex_unlock(&srv->send_lock);
    if (idle) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &call->more_bb;
        /* the receive holds the call: it may complete after the handler has returned (a
         * receive left pending by a timeout), and only then may the call be freed */
        atomic_fetch_add(&call->refs, 1);
        call->more_state = 1;
        if (grpc_call_start_batch(call->call, &op, 1, &call->t_more, NULL) != GRPC_CALL_OK) {
            call->more_state = 0;
            atomic_fetch_sub(&call->refs, 1); /* the handler's reference remains */
            return dhaf_err_set(err, DHAF_ECANCELLED, "%s: the stream is closed", call->path);
        }
    }
    int64_t deadline = timeout_ms > 0 ? dhaf_mono_ms() + timeout_ms : 0;
    pthread_mutex_lock(&srv->send_lock);
    while (call->more_state == 1)
        if (!dhaf_cond_wait_until(&srv->recv_done, &srv->send_lock, deadline))
            break;
    int state = call->more_state;
    if (state != 1)
        call->more_state = 0;
    pthread_mutex_unlock(&srv->send_lock);
    if (state == 1)
        return dhaf_err_set(err, DHAF_ETIMEOUT, "%s: no request within %d ms", call->path,
                            timeout_ms);
    if (state == 3)
        return dhaf_err_set(err, DHAF_ECANCELLED, "%s: the client went away", call->path);
    grpc_byte_buffer *bb = call->more_bb;
    call->more_bb = NULL;
    if (!bb) {
        call->input_ended = true;
        return 0;
    }
    int rc = 0;
    size_t max = srv->method_max[call->method - srv->methods];
    if (grpc_byte_buffer_length(bb) > max)
        rc = dhaf_err_set(err, DHAF_ETOOBIG, "request of %zu bytes; %s takes at most %zu",
                          grpc_byte_buffer_length(bb), call->path, max);
    else if (!(*msg = unpack(call->method->req_desc, bb)))
        rc = dhaf_err_set(err, DHAF_EINVAL, "cannot decode the request as %s",
                          call->method->req_desc->name);
    grpc_byte_buffer_destroy(bb);
    return rc;
}

const char *dhaf_rpc_call_metadata(const struct dhaf_rpc_call *call, const char *key)
{
    for (size_t i = 0; i < call->n_md; i++)
        if (strcasecmp(call->md_kv[2 * i], key) == 0)
            return call->md_kv[2 * i + 1];
    return NULL;
}

const char *dhaf_rpc_call_bearer(const struct dhaf_rpc_call *call)
{
    const char *v = dhaf_rpc_call_metadata(call, "authorization");
    if (!v || strncasecmp(v, "Bearer ", 7) != 0)
        return NULL;
    v += 7;
    while (*v == ' ')
        v++;
    return *v ? v : NULL;
}

const char *dhaf_rpc_call_peer(const struct dhaf_rpc_call *call)
{
    return call->peer ? call->peer : "unknown";
}

const char *dhaf_rpc_call_peer_cn(const struct dhaf_rpc_call *call)
{
    struct dhaf_rpc_call *c = (struct dhaf_rpc_call *)call;
    if (c->cn_done)
        return c->cn;
    c->cn_done = true;
    grpc_auth_context *ctx = grpc_call_auth_context(c->call);
    if (!ctx)
        return NULL;
    if (grpc_auth_context_peer_is_authenticated(ctx)) {
        grpc_auth_property_iterator it =
            grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
        const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
        if (p && p->value)
            c->cn = dhaf_xstrndup(p->value, p->value_length);
    }
    grpc_auth_context_release(ctx);
    return c->cn;
}

int64_t dhaf_rpc_call_remaining_ms(const struct dhaf_rpc_call *call)
{
    gpr_timespec dl = gpr_convert_clock_type(call->details.deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(dl, gpr_inf_future(GPR_CLOCK_MONOTONIC)) >= 0)
        return INT32_MAX;
    int64_t ms = gpr_time_to_millis(gpr_time_sub(dl, gpr_now(GPR_CLOCK_MONOTONIC)));
    return ms < 0 ? 0 : ms;
}

bool dhaf_rpc_call_cancelled(const struct dhaf_rpc_call *call)
{
    return atomic_load(&call->cancelled) || dhaf_rpc_call_remaining_ms(call) == 0;
}
