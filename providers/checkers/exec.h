/* SPDX-License-Identifier: MIT */
/* Exec health checker: runs an operator's program per entry point; exit 0 = healthy. */
#ifndef DHAF_EXEC_HC_H
#define DHAF_EXEC_HC_H

struct exec_hc_config {
    char *init;
    char *check;
    int timeout;
};

#endif
