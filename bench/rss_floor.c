/* SPDX-License-Identifier: MIT */
/* dhaf-bench-rss-floor: the memory a process pays for dhaf-node's libraries before any dhaf
 * code runs. It links the libraries dhaf-node links, starts them the way dhaf-node does
 * (curl_global_init, grpc_init, a gRPC server, one gRPC call over a channel to it, a
 * libmicrohttpd daemon), waits a moment and prints its own VmRSS, RssAnon and RssFile as one
 * JSON line. bench/scale.py --idle-rss prints it beside the idle node's figure: what the node
 * adds is the difference. */
#include <curl/curl.h>
#include <getopt.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dhaf/valid.h"

static enum MHD_Result refuse(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *data,
                              size_t *size, void **state)
{
    (void)cls, (void)conn, (void)url, (void)method, (void)version, (void)data, (void)size;
    (void)state;
    return MHD_NO;
}

static gpr_timespec in_ms(int ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Takes completions until every tag in want[0..n) came (each one is NULLed as it comes) or
 * ms pass; on_tag runs for each. Returns true when all came. */
static bool wait_tags(grpc_completion_queue *cq, void **want, int n, int ms,
                      void (*on_tag)(void *tag, void *ud), void *ud)
{
    gpr_timespec deadline = in_ms(ms);
    for (int left = n; left > 0;) {
        grpc_event ev = grpc_completion_queue_next(cq, deadline, NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            return false;
        for (int i = 0; i < n; i++)
            if (want[i] && want[i] == ev.tag) {
                want[i] = NULL;
                left--;
                if (on_tag)
                    on_tag(ev.tag, ud);
            }
    }
    return true;
}

/* The server's side of the one call: whatever it is, UNIMPLEMENTED. */
struct served {
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    int cancelled;
    bool answered;
};

static void answer(void *tag, void *ud)
{
    struct served *sv = ud;
    if (tag != &sv->call || !sv->call)
        return;
    grpc_metadata_array trail;
    grpc_metadata_array_init(&trail);
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[1].data.recv_close_on_server.cancelled = &sv->cancelled;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    sv->answered = grpc_call_start_batch(sv->call, ops, 3, &sv->answered, NULL) == GRPC_CALL_OK;
    grpc_metadata_array_destroy(&trail);
}

/* One unary call to a method the server answers UNIMPLEMENTED: it runs the client and server
 * stacks (the node's etcd client and gRPC API). Returns true when that status came back. */
static bool one_call(grpc_server *server, grpc_channel *ch, grpc_completion_queue *cq)
{
    struct served sv = {0};
    grpc_call_details_init(&sv.details);
    grpc_metadata_array_init(&sv.md);
    bool ok = grpc_server_request_call(server, &sv.call, &sv.details, &sv.md, cq, cq, &sv.call) ==
              GRPC_CALL_OK;
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string("/floor.v1.F/Call"),
                                               NULL, in_ms(3000), NULL);
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_status_code status = GRPC_STATUS_OK;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[3].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[3].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[3].data.recv_status_on_client.status = &status;
    ops[3].data.recv_status_on_client.status_details = &details;
    ok = ok && grpc_call_start_batch(call, ops, 4, call, NULL) == GRPC_CALL_OK;
    void *want[3] = {&sv.call, call, &sv.answered};
    ok = ok && wait_tags(cq, want, 3, 4000, answer, &sv) && sv.answered;
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_call_unref(call);
    if (sv.call)
        grpc_call_unref(sv.call);
    grpc_call_details_destroy(&sv.details);
    grpc_metadata_array_destroy(&sv.md);
    return ok && status == GRPC_STATUS_UNIMPLEMENTED;
}

/* VmRSS, RssAnon, RssFile of this process in KiB (-1 when missing). */
static void own_rss(long out[3])
{
    static const char *const keys[] = {"VmRSS:", "RssAnon:", "RssFile:"};
    out[0] = out[1] = out[2] = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof(line), f))
        for (int i = 0; i < 3; i++)
            if (!strncmp(line, keys[i], strlen(keys[i])))
                out[i] = strtol(line + strlen(keys[i]), NULL, 10);
    fclose(f);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dhaf-bench-rss-floor [--settle MS]\n"
                 "Starts dhaf-node's libraries (curl, a gRPC server and a call to it, a\n"
                 "libmicrohttpd daemon), waits MS ms (default 2000) and prints its own VmRSS,\n"
                 "RssAnon and RssFile in KiB as a JSON line.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"settle", required_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int settle_ms = 2000, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        long v;
        if (c == 's' && dhaf_parse_long(optarg, 0, 600000, &v)) {
            settle_ms = (int)v;
        } else if (c == 'h') {
            usage(stdout);
            return 0;
        } else {
            if (c == 's')
                fprintf(stderr, "dhaf-bench-rss-floor: --settle: want 0 .. 600000 ms, got '%s'\n",
                        optarg);
            usage(stderr);
            return 2;
        }
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "dhaf-bench-rss-floor: curl_global_init failed\n");
        return 1;
    }
    grpc_init();
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server *server = grpc_server_create(NULL, NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    grpc_server_credentials *screds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, "127.0.0.1:0", screds);
    grpc_server_credentials_release(screds);
    grpc_server_start(server);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    grpc_channel_credentials *ccreds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, ccreds, NULL);
    grpc_channel_credentials_release(ccreds);
    bool called = port > 0 && one_call(server, ch, cq);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
                                            NULL, NULL, refuse, NULL, MHD_OPTION_END);
    usleep((useconds_t)settle_ms * 1000);
    long rss[3];
    own_rss(rss);
    printf("{\"vm_rss_kib\": %ld, \"rss_anon_kib\": %ld, \"rss_file_kib\": %ld, "
           "\"grpc_call\": %s, \"http_daemon\": %s}\n",
           rss[0], rss[1], rss[2], called ? "true" : "false", d ? "true" : "false");
    fflush(stdout);
    if (d)
        MHD_stop_daemon(d);
    grpc_channel_destroy(ch);
    grpc_server_shutdown_and_notify(server, cq, server);
    void *shut[1] = {server};
    wait_tags(cq, shut, 1, 2000, NULL, NULL);
    grpc_server_destroy(server);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, in_ms(1000), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    curl_global_cleanup();
    return called && d ? 0 : 1;
}
