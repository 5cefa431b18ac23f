/* SPDX-License-Identifier: MIT */
/* dhaf-node: the cluster node. This build validates configuration (--check-config). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/config.h"
#include "dhaf/log.h"
#include "dhaf/registry.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: dhaf-node --config FILE [--check-config] [--log-level LEVEL]\n"
                 "                 [--log-format text|json]\n"
                 "\n"
                 "  -c, --config FILE      the cluster config (YAML, the original dhaf format)\n"
                 "      --check-config     validate FILE, print OK or every error, and exit\n"
                 "                         (exit 0 valid, 2 invalid)\n"
                 "      --log-level LEVEL  debug, info, warn or error (overrides log.level)\n"
                 "      --log-format FMT   text or json (overrides log.format)\n"
                 "      --config-reference print every config parameter as Markdown and exit\n"
                 "  -h, --help             this help\n"
                 "  -V, --version          print the version\n");
}

/* The generated part of docs/config.md (a test fails when the two drift apart). */
static void write_reference(FILE *out)
{
    dhaf_config_write_reference(out);
    static const char *const kinds[] = {"Switcher", "Health checker", "Notifier"};
    static const char *const prefixes[] = {"services[].switcher.", "services[].health-checker.",
                                           "notifiers[]."};
    for (size_t i = 0; dhaf_registry_at(i); i++) {
        const struct dhaf_provider *p = dhaf_registry_at(i);
        fprintf(out, "\n### %s `%s`\n\n%s\n\n", kinds[p->kind], p->type, p->summary);
        dhaf_cfgkeys_write_reference(out, prefixes[p->kind], p->keys);
    }
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 256, OPT_LEVEL, OPT_FORMAT, OPT_REFERENCE };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"log-level", required_argument, NULL, OPT_LEVEL},
        {"log-format", required_argument, NULL, OPT_FORMAT},
        {"config-reference", no_argument, NULL, OPT_REFERENCE},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    bool check_only = false;
    enum dhaf_log_level level = DHAF_LOG_INFO;
    enum dhaf_log_format format = DHAF_LOG_TEXT;
    bool level_set = false, format_set = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case OPT_CHECK:
            check_only = true;
            break;
        case OPT_LEVEL:
            if (dhaf_log_level_parse(optarg, &level) != 0) {
                fprintf(stderr,
                        "dhaf-node: --log-level: \"%s\" is not debug, info, warn or error\n",
                        optarg);
                return 2;
            }
            level_set = true;
            break;
        case OPT_FORMAT:
            if (dhaf_log_format_parse(optarg, &format) != 0) {
                fprintf(stderr, "dhaf-node: --log-format: \"%s\" is not text or json\n", optarg);
                return 2;
            }
            format_set = true;
            break;
        case OPT_REFERENCE:
            write_reference(stdout);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("dhaf-node %s (%s)\n", DHAF_VERSION, DHAF_GIT_COMMIT);
            return 0;
        case ':':
            fprintf(stderr, "dhaf-node: %s needs a value\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "dhaf-node: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dhaf-node: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!config) {
        fprintf(stderr, "dhaf-node: --config FILE is required\n");
        usage(stderr);
        return 2;
    }

    struct dhaf_cfg_report rep;
    struct dhaf_config cfg;
    dhaf_cfg_report_init(&rep, config);
    int rc = dhaf_config_load(config, dhaf_registry_catalog(), &cfg, &rep);
    dhaf_cfg_report_print(&rep, stderr);
    if (rc != 0) {
        fprintf(stderr, "%s: invalid configuration (%zu error%s)\n", config,
                rep.n_errs + rep.dropped, rep.n_errs + rep.dropped == 1 ? "" : "s");
        dhaf_cfg_report_release(&rep);
        return 2;
    }
    dhaf_cfg_report_release(&rep);
    if (check_only) {
        printf("OK\n");
        dhaf_config_release(&cfg);
        return 0;
    }
    dhaf_log_setup(level_set ? level : (enum dhaf_log_level)cfg.log_level,
                   format_set ? format : (enum dhaf_log_format)cfg.log_format);
    DHAF_LOG(DHAF_LOG_ERROR,
             "event=start-refused node=%s cluster=%s reason=\"this build of dhaf-node only "
             "validates configs (--check-config); cluster membership is issue #4\"",
             cfg.node_name, cfg.cluster_name);
    dhaf_config_release(&cfg);
    return 1;
}
