/* SPDX-License-Identifier: MIT */
/* libFuzzer target: dhaf-sim's timeline text (sim/timeline.c) - what an operator or a
 * recording feeds dhaf-sim - and, when it parses, the engine run over that world (sim/sim.c),
 * its end cut to 20 virtual seconds so that a run stays short. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/config.h"
#include "dhaf/log.h"
#include "dhaf/registry.h"
#include "sim.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char cfg_text[] =
    "dhaf: {cluster-name: fuzz, node-name: node-1, tact-interval: 1}\n"
    "etcd: {hosts: \"127.0.0.1:2379\"}\n"
    "services:\n"
    "- name: web\n"
    "  domain: foo.com\n"
    "  entry-points: [{name: ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.2},\n"
    "                 {name: ep-3, ip: 10.0.0.3}]\n"
    "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
    "  health-checker: {type: web, timeout: 1, retries: 1}\n";

static struct dhaf_config cfg;
static const char *const names[] = {"node-1", "node-2", "node-3"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct dhaf_cfg_report rep;
    dhaf_log_setup(DHAF_LOG_ERROR, DHAF_LOG_TEXT);
    dhaf_cfg_report_init(&rep, "fuzz_timeline.dhaf");
    if (dhaf_config_load_mem(cfg_text, strlen(cfg_text), "fuzz_timeline.dhaf", "/",
                             dhaf_registry_catalog(), &cfg, &rep) != 0) {
        dhaf_cfg_report_print(&rep, stderr);
        abort();
    }
    dhaf_cfg_report_release(&rep);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct sim_world w;
    struct dhaf_err err;
    if (sim_timeline_parse(text, "fuzz", &cfg.services[0], names, 3, &w, &err) == 0) {
        if (w.end_ms > 20000)
            w.end_ms = 20000;
        struct sim_opts o = {.cfg = &cfg,
                             .svc = &cfg.services[0],
                             .timeout_ms = 1000,
                             .retries = 1,
                             .n_voters = 3,
                             .voter_names = names};
        struct sim_outcome *out = calloc(SIM_N_RULES, sizeof(*out));
        if (out && sim_run(&o, &w, out, &err) != 0)
            abort(); /* a parsed timeline is always runnable */
        free(out);
        sim_world_release(&w);
    }
    char buf[256];
    const char *got[16];
    (void)sim_timeline_voters(text, buf, sizeof(buf), got, 16);
    free(text);
    return 0;
}
