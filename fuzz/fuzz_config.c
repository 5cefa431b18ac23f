/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the config loader (dhaf_config_load_mem: libyaml, ytree, every key table of
 * the built-in providers, the cross checks) on a YAML buffer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/cfgkeys.h"
#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/log.h"
#include "dhaf/registry.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dhaf_log_setup(DHAF_LOG_ERROR, DHAF_LOG_TEXT);
    devnull = fopen("/dev/null", "w");
    if (!devnull)
        abort();
    return 0;
}

/* A section that loaded must turn back into JSON (what the node sends in a probe plan). */
static void section_json(const struct dhaf_section *s)
{
    if (!s->type)
        return;
    char *j = dhaf_section_to_json(s);
    if (!j)
        abort();
    free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct dhaf_config zero;
    struct dhaf_cfg_report rep;
    struct dhaf_config cfg;

    dhaf_cfg_report_init(&rep, "fuzz.dhaf");
    /* A directory that does not exist: relative paths resolve against it, so nothing the
     * input names is found by accident in the current directory. */
    int rc = dhaf_config_load_mem((const char *)data, size, "fuzz.dhaf", "/nonexistent-dhaf-fuzz",
                                  dhaf_registry_catalog(), &cfg, &rep);
    if (rc == 0) {
        /* Loaded: no error was reported, and every part is usable. */
        if (rep.n_errs != 0)
            abort();
        for (size_t i = 0; i < cfg.n_services; i++) {
            const struct dhaf_service *svc = &cfg.services[i];
            if (dhaf_config_service(&cfg, svc->name) != svc)
                abort();
            for (size_t e = 0; e < svc->n_eps; e++)
                if (dhaf_service_ep_index(svc, svc->eps[e].name) != (int)e)
                    abort();
            section_json(&svc->switcher);
            section_json(&svc->checker);
        }
        for (size_t i = 0; i < cfg.n_notifiers; i++)
            section_json(&cfg.notifiers[i]);
        dhaf_config_release(&cfg);
    } else {
        /* Refused: said why, and left nothing behind. */
        if (rc != DHAF_ECONFIG || rep.n_errs == 0 || memcmp(&cfg, &zero, sizeof(cfg)) != 0)
            abort();
        for (size_t i = 0; i < rep.n_errs; i++)
            if (!rep.errs[i].msg || !rep.errs[i].msg[0])
                abort();
    }
    dhaf_cfg_report_print(&rep, devnull);
    dhaf_cfg_report_release(&rep);
    return 0;
}
