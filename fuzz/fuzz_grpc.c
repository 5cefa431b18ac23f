/* SPDX-License-Identifier: MIT */
/* libFuzzer target: protobuf-c decoding of every request message the node's gRPC API accepts
 * (node/api.c's method table), and of the replies a prober decodes from a node; a decoded
 * message goes through lib/pbjson.c (as the REST gateway shows messages) and is packed and
 * decoded again. The first input byte chooses the message type; the rest is the wire bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/pbjson.h"
#include "dhaf/v1/dhaf.pb-c.h"
#include "dhaf/v1/prober.pb-c.h"

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
};
#define N_MESSAGES (sizeof(messages) / sizeof(messages[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dhaf_log_setup(DHAF_LOG_ERROR, DHAF_LOG_TEXT);
    return 0;
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
