/* SPDX-License-Identifier: MIT */
/* libFuzzer target: protobuf-c decoding of every request message the node's gRPC API accepts
 * (node/api.c's method table), and of the replies a prober decodes from a node; a decoded
 * message goes through lib/pbjson.c (as the REST gateway shows messages) and is packed and
 * decoded again. A prober's Report also goes through the node's validation (vote_from_report)
 * against a small config: what it accepts must encode to a vote that every node decodes with
 * the same results; what it refuses has a message. The first input byte chooses the message
 * type; the rest is the wire bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "dhaf/config.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/registry.h"
#include "dhaf/valid.h"
#include "dhaf/pbjson.h"
#include "dhaf/v1/dhaf.pb-c.h"
#include "dhaf/v1/prober.pb-c.h"
#include "votes.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ProtobufCMessageDescriptor *const messages[] = {
    /* dhaf.v1.Dhaf requests */
    &dhaf__v1__get_cluster_status_request__descriptor,
    &dhaf__v1__list_services_request__descriptor,
    &dhaf__v1__get_service_request__descriptor,
    &dhaf__v1__get_switchover_candidates_request__descriptor,
    &dhaf__v1__switchover_request__descriptor,
    &dhaf__v1__purge_switchover_request__descriptor,
    &dhaf__v1__decommission_node_request__descriptor,
    &dhaf__v1__list_events_request__descriptor,
    &dhaf__v1__get_version_request__descriptor,
    /* dhaf.v1.Prober requests */
    &dhaf__v1__get_plan_request__descriptor,
    &dhaf__v1__report_request__descriptor,
    /* what a prober decodes from a node */
    &dhaf__v1__probe_plan__descriptor,
    &dhaf__v1__report_response__descriptor,
    /* added later, at the end: the seeds' first byte keeps naming the same message */
    &dhaf__v1__drain_request__descriptor,
    &dhaf__v1__pause_request__descriptor,
};
#define N_MESSAGES (sizeof(messages) / sizeof(messages[0]))

/* The plan the reports are checked against: short names the fuzzer finds (fuzz_grpc.dict). */
static const char CONFIG[] =
    "dhaf: {cluster-name: c, node-name: n}\n"
    "etcd: {hosts: \"127.0.0.1:2379\"}\n"
    "services:\n"
    "- {name: web, domain: a.com, entry-points: [{name: e1, ip: 10.0.0.1}, {name: e2, ip: "
    "10.0.0.2}], switcher: {type: exec, init: /bin/true, switch: /bin/true}, health-checker: "
    "{type: tcp, port: 80}}\n"
    "- {name: db, domain: b.com, entry-points: [{name: e1, ip: 10.0.1.1}], switcher: {type: "
    "exec, init: /bin/true, switch: /bin/true}, health-checker: {type: tcp, port: 5432}}\n";
static struct dhaf_config cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dhaf_log_setup(DHAF_LOG_ERROR, DHAF_LOG_TEXT);
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, "fuzz");
    if (dhaf_config_load_mem(CONFIG, strlen(CONFIG), "fuzz", ".", dhaf_registry_catalog(), &cfg,
                             &rep) != 0)
        abort();
    dhaf_cfg_report_release(&rep);
    return 0;
}

/* The node's checks of a prober's report, and the vote it would write. */
static void report(const Dhaf__V1__ReportRequest *req)
{
    struct dhaf_err err = {0};
    struct dhaf_probe_result *res = vote_from_report(&cfg, req, &err);
    if (!res) {
        if (!err.msg[0])
            abort(); /* a refusal says why */
        return;
    }
    char *text = vote_encode("p1", "prober", req->seq, res, req->n_results);
    struct vote v;
    if (vote_decode(text, strlen(text), "votes/p1", &cfg, &v, &err) != 0) {
        fprintf(stderr, "vote %s: %s\n", text, err.msg);
        abort(); /* an accepted report became a vote no node can read */
    }
    size_t pairs = 0; /* distinct (service, entry point) pairs reported */
    for (size_t i = 0; i < req->n_results; i++) {
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = !strcmp(res[k].service, res[i].service) && !strcmp(res[k].ep, res[i].ep);
        pairs += !seen;
    }
    if (v.n != pairs)
        abort(); /* a result was lost or invented on the way */
    for (size_t i = 0; i < v.n; i++)
        if (v.results[i].text && !dhaf_valid_comment(v.results[i].text))
            abort(); /* a text that would break a log line or a mail */
    vote_release(&v);
    free(text);
    free(res);
}

/* m packed; caller frees. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (!buf)
        abort();
    if (protobuf_c_message_pack(m, buf) != *len)
        abort();
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *desc = messages[data[0] % N_MESSAGES];
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, size - 1, data + 1);
    if (!m)
        return 0;
    if (!protobuf_c_message_check(m))
        abort();

    if (desc == &dhaf__v1__report_request__descriptor)
        report((const Dhaf__V1__ReportRequest *)m);

    json_t *j = dhaf_pb_to_json(m);
    if (!json_is_object(j))
        abort();
    char *text = dhaf_json_dump(j);
    free(text);
    json_decref(j);

    /* Packing what was decoded, then decoding and packing again, gives the same bytes. The
     * second decode may fail: protobuf-c 1.4 takes an unknown field numbered 0 when its tag is
     * written in two bytes (0x82 0x00), packs it back in one (0x02 0x00) and refuses that. */
    size_t n1, n2;
    uint8_t *b1 = pack(m, &n1);
    ProtobufCMessage *m2 = protobuf_c_message_unpack(desc, NULL, n1, b1);
    if (m2) {
        uint8_t *b2 = pack(m2, &n2);
        if (n1 != n2 || memcmp(b1, b2, n1) != 0)
            abort();
        free(b2);
        protobuf_c_message_free_unpacked(m2, NULL);
    }
    free(b1);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
