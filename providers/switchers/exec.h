/* SPDX-License-Identifier: MIT */
/* Exec switcher: runs an operator's program to switch (argv: entry point name, ip). */
#ifndef DHAF_EXEC_SW_H
#define DHAF_EXEC_SW_H

struct exec_sw_config {
    char *init;
    char *switch_path;
    int timeout;
};

#endif
