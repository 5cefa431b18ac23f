/* SPDX-License-Identifier: MIT */
/* dhaf-prober: the remote vantage agent. This build knows its options and version only. */
#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: dhaf-prober --config FILE\n"
                 "\n"
                 "  -c, --config FILE  the prober's config (name, location, nodes, token)\n"
                 "  -h, --help         this help\n"
                 "  -V, --version      print the version\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("dhaf-prober %s (%s)\n", DHAF_VERSION, DHAF_GIT_COMMIT);
            return 0;
        }
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    fprintf(stderr, "dhaf-prober: remote probing is not in this build yet (issue #5)\n");
    return 1;
}
