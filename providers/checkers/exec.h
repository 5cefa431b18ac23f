/* SPDX-License-Identifier: MIT */
/* Exec health checker: runs an operator's program per entry point; exit 0 = healthy. */
#ifndef DHAF_EXEC_HC_H
#define DHAF_EXEC_HC_H

struct exec_hc_config {
    char *init;  /* run once by init(), no arguments */
    char *check; /* run per entry point: argv [check, ep name, ep ip] */
    int timeout; /* seconds; then the program's process group is killed */
};

#endif
