/* SPDX-License-Identifier: MIT */
#include "config_load.h"

#include <stdio.h>
#include <string.h>

#include "dhaf/registry.h"

int test_config_load(const char *yaml, const char *name, const char *dir, struct dhaf_config *cfg)
{
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, name);
    int rc =
        dhaf_config_load_mem(yaml, strlen(yaml), name, dir, dhaf_registry_catalog(), cfg, &rep);
    if (rc != 0) {
        fprintf(stderr, "%s", yaml);
        dhaf_cfg_report_print(&rep, stderr);
    }
    dhaf_cfg_report_release(&rep);
    return rc;
}
