/* SPDX-License-Identifier: MIT */
/* Config loader tests: the seed's example, defaults, and a table of broken configs, each
 * asserting the exact line:column, parameter path and message of its one error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../providers/checkers/tcp.h"
#include "../../providers/checkers/web.h"
#include "../../providers/notifiers/email.h"
#include "../../providers/notifiers/telegram.h"
#include "../../providers/switchers/cloudflare.h"
#include "dhaf/config.h"
#include "dhaf/registry.h"

/* Lines 1-2 */
#define HEAD                                                                                       \
    "dhaf: {cluster-name: c1, node-name: n1}\n"                                                    \
    "etcd: {hosts: \"127.0.0.1:2379\"}\n"
/* Lines 3-8 */
#define SVC                                                                                        \
    "services:\n"                                                                                  \
    "- name: main\n"                                                                               \
    "  domain: foo.com\n"                                                                          \
    "  entry-points: [{name: ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.2}]\n"                   \
    "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"                               \
    "  health-checker: {type: tcp, port: 80}\n"
/* Lines 3-6 of a service whose switcher and checker follow on lines 7 and 8. */
#define SVC_TOP                                                                                    \
    "services:\n"                                                                                  \
    "- name: main\n"                                                                               \
    "  domain: foo.com\n"                                                                          \
    "  entry-points: [{name: ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.2}]\n"
#define SW_OK "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
#define HC_OK "  health-checker: {type: tcp, port: 80}\n"

struct bad_case {
    const char *name;
    const char *yaml;
    int line, col;
    const char *path;
    const char *msg; /* substring of the message */
};

static int load(const char *yaml, struct dhaf_config *cfg, struct dhaf_cfg_report *rep)
{
    dhaf_cfg_report_init(rep, "test.dhaf");
    return dhaf_config_load_mem(yaml, strlen(yaml), "test.dhaf", ".", dhaf_registry_catalog(), cfg,
                                rep);
}

static void dump(const struct dhaf_cfg_report *rep)
{
    dhaf_cfg_report_print(rep, stderr);
}

/* clang-format off */
static const struct bad_case bad_cases[] = {
    /* unknown keys, with a did-you-mean */
    {"unknown top-level key", HEAD SVC "servics: []\n", 9, 1, "servics", "unknown key \"servics\"; did you mean \"services\"?"},
    {"unknown dhaf key", "dhaf: {cluster-name: c1, node-name: n1, tact-intervall: 5}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 41, "dhaf.tact-intervall", "did you mean \"tact-interval\"?"},
    {"unknown provider key", HEAD SVC_TOP "  switcher: {type: cloudflare, api-token: t, zone: foo.com, api-urll: x}\n" HC_OK,
     7, 61, "services[0].switcher.api-urll", "did you mean \"api-url\"?"},
    {"unknown entry point key", HEAD "services:\n- name: main\n  domain: foo.com\n  entry-points:\n  - {name: ep-1, ip: 10.0.0.1, priorty: 1}\n" SW_OK HC_OK,
     7, 32, "services[0].entry-points[0].priorty", "unknown key \"priorty\""},
    {"unknown nested key", "dhaf: {cluster-name: c1, node-name: n1, web-api: {hots: x}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 51, "dhaf.web-api.hots", "did you mean \"host\"?"},
    {"unknown smtp key", HEAD SVC "notifiers:\n- {type: email, from: a@b.c, to: d@e.f, smtp: {server: s.com, port: 25, pasword: x}}\n",
     10, 73, "notifiers[0].smtp.pasword", "did you mean \"password\"?"},
    /* name rule */
    {"cluster name with space", "dhaf: {cluster-name: my cluster, node-name: n1}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 22, "dhaf.cluster-name", "is not a valid name"},
    {"node name too long", "dhaf: {cluster-name: c1, node-name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 37, "dhaf.node-name", "is not a valid name"},
    {"service name", HEAD "services:\n- name: main.svc\n  domain: foo.com\n  entry-points: [{name: ep-1, ip: 10.0.0.1}]\n" SW_OK HC_OK,
     4, 9, "services[0].name", "\"main.svc\" is not a valid name"},
    {"entry point name", HEAD "services:\n- name: main\n  domain: foo.com\n  entry-points: [{name: ep/1, ip: 10.0.0.1}]\n" SW_OK HC_OK,
     6, 25, "services[0].entry-points[0].name", "\"ep/1\" is not a valid name"},
    {"notifier name", HEAD SVC "notifiers:\n- {type: tg, name: my tg, token: \"1:a\", join-code: j}\n",
     10, 20, "notifiers[0].name", "\"my tg\" is not a valid name"},
    /* uniqueness */
    {"duplicate service", HEAD SVC "- name: main\n  domain: bar.com\n  entry-points: [{name: ep-1, ip: 10.0.0.1}]\n" SW_OK HC_OK,
     9, 9, "services[1].name", "service \"main\" is already defined at line 4"},
    {"duplicate entry point", HEAD "services:\n- name: main\n  domain: foo.com\n  entry-points: [{name: ep-1, ip: 10.0.0.1}, {name: ep-1, ip: 10.0.0.2}]\n" SW_OK HC_OK,
     6, 53, "services[0].entry-points[1].name", "entry point \"ep-1\" is already defined"},
    {"duplicate entry point address", HEAD "services:\n- name: main\n  domain: foo.com\n  entry-points: [{name: ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.1}]\n" SW_OK HC_OK,
     6, 63, "services[0].entry-points[1].ip", "10.0.0.1 is already the address of entry point \"ep-1\""},
    {"duplicate notifier", HEAD SVC "notifiers:\n- {type: tg, token: \"1:a\", join-code: j}\n- {type: tg, token: \"1:b\", join-code: k}\n",
     11, 3, "notifiers[1].name", "notifier \"tg-anon\" is already defined at line 10"},
    {"duplicate key", "dhaf: {cluster-name: c1, node-name: n1, node-name: n2}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 41, "dhaf.node-name", "duplicate key (first given at line 1)"},
    /* services and entry points present */
    {"no services", HEAD, 1, 1, "services", "missing; at least one service is required"},
    {"empty services", HEAD "services: []\n", 3, 11, "services", "the list is empty"},
    {"services not a list", HEAD "services: main\n", 3, 11, "services", "expected a list of services, found \"main\""},
    {"service without entry points", HEAD "services:\n- name: main\n  domain: foo.com\n" SW_OK HC_OK,
     4, 3, "services[0].entry-points", "missing; at least one entry point is required"},
    {"empty entry points", HEAD "services:\n- name: main\n  domain: foo.com\n  entry-points: []\n" SW_OK HC_OK,
     6, 17, "services[0].entry-points", "the list is empty"},
    {"service without domain", HEAD "services:\n- name: main\n  entry-points: [{name: ep-1, ip: 10.0.0.1}]\n" SW_OK HC_OK,
     4, 3, "services[0].domain", "missing; this key is required"},
    {"bad domain", HEAD "services:\n- name: main\n  domain: foo bar\n  entry-points: [{name: ep-1, ip: 10.0.0.1}]\n" SW_OK HC_OK,
     5, 11, "services[0].domain", "\"foo bar\" is not a host name or IP address"},
    /* ranges */
    {"tact-interval 0", "dhaf: {cluster-name: c1, node-name: n1, tact-interval: 0}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 56, "dhaf.tact-interval", "0 is out of range; expected 1 to 3600"},
    {"tact-interval 3601", "dhaf: {cluster-name: c1, node-name: n1, tact-interval: 3601}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 56, "dhaf.tact-interval", "3601 is out of range; expected 1 to 3600"},
    {"tact-interval not a number", "dhaf: {cluster-name: c1, node-name: n1, tact-interval: ten}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 56, "dhaf.tact-interval", "\"ten\" is not a whole number; expected 1 to 3600"},
    {"post-switch delay negative", "dhaf: {cluster-name: c1, node-name: n1, tact-post-switch-delay: -1}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 65, "dhaf.tact-post-switch-delay", "-1 is out of range; expected 0 to 3600"},
    {"post-switch delay too long", "dhaf: {cluster-name: c1, node-name: n1, tact-post-switch-delay: 3601}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 65, "dhaf.tact-post-switch-delay", "3601 is out of range; expected 0 to 3600"},
    {"web timeout 0", HEAD SVC_TOP SW_OK "  health-checker: {type: web, timeout: 0}\n",
     8, 40, "services[0].health-checker.timeout", "0 is out of range; expected 1 to 86400"},
    {"web timeout 86401", HEAD SVC_TOP SW_OK "  health-checker: {type: web, timeout: 86401}\n",
     8, 40, "services[0].health-checker.timeout", "86401 is out of range; expected 1 to 86400"},
    {"tcp receive-timeout 0", HEAD SVC_TOP SW_OK "  health-checker: {type: tcp, port: 80, receive-timeout: 0}\n",
     8, 58, "services[0].health-checker.receive-timeout", "0 is out of range"},
    {"web-api port 0", "dhaf: {cluster-name: c1, node-name: n1, web-api: {port: 0}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 57, "dhaf.web-api.port", "0 is out of range; expected 1 to 65535"},
    {"grpc-api port 70000", "dhaf: {cluster-name: c1, node-name: n1, grpc-api: {port: 70000}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 58, "dhaf.grpc-api.port", "70000 is out of range; expected 1 to 65535"},
    {"smtp port 65536", HEAD SVC "notifiers:\n- {type: email, from: a@b.c, to: d@e.f, smtp: {server: s.com, port: 65536}}\n",
     10, 69, "notifiers[0].smtp.port", "65536 is out of range"},
    {"tcp port missing", HEAD SVC_TOP SW_OK "  health-checker: {type: tcp}\n",
     8, 19, "services[0].health-checker.port", "missing; this key is required"},
    /* TTLs against the heartbeat */
    {"leader-key-ttl not above heartbeat", "dhaf: {cluster-name: c1, node-name: n1, heartbeat-interval: 16}\netcd: {hosts: \"127.0.0.1:2379\", leader-key-ttl: 16}\n" SVC,
     2, 49, "etcd.leader-key-ttl", "16 must be greater than dhaf.heartbeat-interval (16)"},
    /* a switcher call that cannot fit in the leader's lease */
    {"exec timeout past the lease", "dhaf: {cluster-name: c1, node-name: n1, heartbeat-interval: 1}\netcd: {hosts: \"127.0.0.1:2379\", leader-key-ttl: 3}\n" SVC_TOP
     "  switcher: {type: exec, init: /bin/true, switch: /bin/true, timeout: 20}\n" HC_OK,
     7, 71, "services[0].switcher.timeout", "the exec switcher may run 20000 ms in one call, but with etcd.leader-key-ttl 3 s a leader may act for at most 2000 ms after renewing its lease (the TTL minus one keep-alive interval): lower timeout to 2 s or less, or raise etcd.leader-key-ttl to at least 30"},
    {"default exec timeout past a short lease", "dhaf: {cluster-name: c1, node-name: n1, heartbeat-interval: 1}\netcd: {hosts: \"127.0.0.1:2379\", leader-key-ttl: 6}\n" SVC,
     7, 13, "services[0].switcher.timeout", "may run 10000 ms in one call, but with etcd.leader-key-ttl 6 s a leader may act for at most 4000 ms"},
    {"healthy ttl not above heartbeat", "dhaf: {cluster-name: c1, node-name: n1, heartbeat-interval: 10, healthy-node-status-ttl: 10}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 90, "dhaf.healthy-node-status-ttl", "10 must be greater than dhaf.heartbeat-interval (10)"},
    /* etcd */
    {"etcd username without password", "dhaf: {cluster-name: c1, node-name: n1}\netcd: {hosts: \"127.0.0.1:2379\", username: root}\n" SVC,
     2, 43, "etcd.password", "missing; etcd.username and etcd.password go together"},
    {"etcd password without username", "dhaf: {cluster-name: c1, node-name: n1}\netcd: {hosts: \"127.0.0.1:2379\", password: pw}\n" SVC,
     2, 43, "etcd.username", "missing; etcd.username and etcd.password go together"},
    {"etcd host with other scheme", "dhaf: {cluster-name: c1, node-name: n1}\netcd: {hosts: \"unix://x:1\"}\n" SVC,
     2, 15, "etcd.hosts", "only http:// and https:// endpoints are supported"},
    {"etcd host without port", "dhaf: {cluster-name: c1, node-name: n1}\netcd: {hosts: \"http://a:1,127.0.0.1\"}\n" SVC,
     2, 15, "etcd.hosts", "\"127.0.0.1\": missing :port"},
    {"etcd port out of range", "dhaf: {cluster-name: c1, node-name: n1}\netcd: {hosts: \"127.0.0.1:99999\"}\n" SVC,
     2, 15, "etcd.hosts", "the port must be a number from 1 to 65535"},
    {"etcd hosts list item", "dhaf: {cluster-name: c1, node-name: n1}\netcd:\n  hosts:\n  - 127.0.0.1:2379\n  - bad host:1\n" SVC,
     5, 5, "etcd.hosts", "\"bad host:1\": \"bad host\" is not a host name or IP address"},
    {"etcd hosts missing", "dhaf: {cluster-name: c1, node-name: n1}\netcd: {username: u, password: p}\n" SVC,
     2, 7, "etcd.hosts", "missing; list the etcd endpoints"},
    {"etcd mixed schemes", "dhaf: {cluster-name: c1, node-name: n1}\netcd: {hosts: \"http://a:1,https://b:2\"}\n" SVC,
     2, 15, "etcd.hosts", "mixes http:// and https://"},
    /* expected codes and addresses */
    {"expected-codes 2X", HEAD SVC_TOP SW_OK "  health-checker: {type: web, expected-codes: 2X}\n",
     8, 47, "services[0].health-checker.expected-codes", "\"2X\" is not a code or code range"},
    {"expected-codes 600", HEAD SVC_TOP SW_OK "  health-checker: {type: web, expected-codes: \"200,600\"}\n",
     8, 47, "services[0].health-checker.expected-codes", "\"600\" is not a code or code range"},
    {"expected-codes empty item", HEAD SVC_TOP SW_OK "  health-checker: {type: web, expected-codes: \"200,,3XX\"}\n",
     8, 47, "services[0].health-checker.expected-codes", "\"\" is not a code or code range"},
    {"ip out of range", HEAD "services:\n- name: main\n  domain: foo.com\n  entry-points: [{name: ep-1, ip: 300.1.1.1}]\n" SW_OK HC_OK,
     6, 35, "services[0].entry-points[0].ip", "\"300.1.1.1\" is not an IPv4 or IPv6 address"},
    {"ip is a name", HEAD "services:\n- name: main\n  domain: foo.com\n  entry-points: [{name: ep-1, ip: foo.com}]\n" SW_OK HC_OK,
     6, 35, "services[0].entry-points[0].ip", "\"foo.com\" is not an IPv4 or IPv6 address"},
    /* provider sections */
    {"unknown switcher type", HEAD SVC_TOP "  switcher: {type: cloudflair}\n" HC_OK,
     7, 20, "services[0].switcher.type", "unknown switcher type \"cloudflair\" (did you mean \"cloudflare\"?); known types: cloudflare, google-cloud, exec"},
    {"unknown checker type", HEAD SVC_TOP SW_OK "  health-checker: {type: http}\n",
     8, 26, "services[0].health-checker.type", "unknown health-checker type \"http\""},
    {"missing switcher", HEAD SVC_TOP HC_OK, 4, 3, "services[0].switcher", "missing; a switcher section with a type is required"},
    {"missing checker type", HEAD SVC_TOP SW_OK "  health-checker: {schema: http}\n",
     8, 19, "services[0].health-checker.type", "missing; the health-checker type is required"},
    {"cloudflare without token", HEAD SVC_TOP "  switcher: {type: cloudflare, zone: foo.com}\n" HC_OK,
     7, 13, "services[0].switcher.api-token", "missing; this key is required (or give it as api-token-file: PATH or ${ENV})"},
    {"cloudflare without zone", HEAD SVC_TOP "  switcher: {type: cloudflare, api-token: t}\n" HC_OK,
     7, 13, "services[0].switcher.zone", "missing; this key is required"},
    {"cloudflare bad api-url", HEAD SVC_TOP "  switcher: {type: cloudflare, api-token: t, zone: foo.com, api-url: ftp://x}\n" HC_OK,
     7, 70, "services[0].switcher.api-url", "\"ftp://x\" is not an http:// or https:// URL"},
    {"web schema ftp", HEAD SVC_TOP SW_OK "  health-checker: {type: web, schema: ftp}\n",
     8, 39, "services[0].health-checker.schema", "\"ftp\" is not allowed; expected http or https"},
    {"web method PUT", HEAD SVC_TOP SW_OK "  health-checker: {type: web, method: PUT}\n",
     8, 39, "services[0].health-checker.method", "\"PUT\" is not allowed; expected GET, POST or HEAD"},
    {"web bool", HEAD SVC_TOP SW_OK "  health-checker: {type: web, follow-redirects: maybe}\n",
     8, 49, "services[0].health-checker.follow-redirects", "\"maybe\" is not a boolean"},
    {"web headers not a map", HEAD SVC_TOP SW_OK "  health-checker: {type: web, headers: [a, b]}\n",
     8, 40, "services[0].health-checker.headers", "expected a mapping of names to values"},
    {"web header name", HEAD SVC_TOP SW_OK "  health-checker: {type: web, headers: {\"X Bad\": v}}\n",
     8, 40, "services[0].health-checker.headers", "\"X Bad\" is not a valid HTTP header name"},
    {"exec switcher without switch", HEAD SVC_TOP "  switcher: {type: exec, init: /bin/true}\n" HC_OK,
     7, 13, "services[0].switcher.switch", "missing; this key is required"},
    {"gcp metadata key", HEAD SVC_TOP "  switcher: {type: google-cloud, project: p, metadata-key: \"a b\", credentials-path: k.json}\n" HC_OK,
     7, 60, "services[0].switcher.metadata-key", "\"a b\" is not a metadata key"},
    /* notifiers */
    {"unknown notifier type", HEAD SVC "notifiers:\n- {type: slack}\n", 10, 10, "notifiers[0].type", "unknown notifier type \"slack\"; known types: email, tg"},
    {"email bad from", HEAD SVC "notifiers:\n- {type: email, from: nobody, to: d@e.f, smtp: {server: s.com, port: 25}}\n",
     10, 23, "notifiers[0].from", "\"nobody\" is not an e-mail address"},
    {"email username alone", HEAD SVC "notifiers:\n- {type: email, from: a@b.c, to: d@e.f, smtp: {server: s.com, port: 25, username: u}}\n",
     10, 47, "notifiers[0].smtp.password", "missing; smtp.username and smtp.password go together"},
    {"email security", HEAD SVC "notifiers:\n- {type: email, from: a@b.c, to: d@e.f, smtp: {server: s.com, port: 25, security: tls}}\n",
     10, 83, "notifiers[0].smtp.security", "\"tls\" is not allowed; expected ssl or starttls"},
    {"tg bad token", HEAD SVC "notifiers:\n- {type: tg, token: abc, join-code: j}\n",
     10, 21, "notifiers[0].token", "is not a Telegram bot token"},
    /* secrets */
    {"token and token file", "dhaf: {cluster-name: c1, node-name: n1, api-token: a, api-token-file: /nonexistent}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 71, "dhaf.api-token-file", "give either dhaf.api-token or dhaf.api-token-file, not both"},
    {"token file missing", "dhaf: {cluster-name: c1, node-name: n1, api-token-file: /nonexistent/token}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 57, "dhaf.api-token-file", "cannot read \"/nonexistent/token\": No such file or directory"},
    {"env secret unset", "dhaf: {cluster-name: c1, node-name: n1, api-token: \"${DHAF_TEST_UNSET_VAR}\"}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 52, "dhaf.api-token", "environment variable DHAF_TEST_UNSET_VAR is not set or empty"},
    /* security of the APIs */
    {"public API without token", "dhaf: {cluster-name: c1, node-name: n1, web-api: {host: 0.0.0.0}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 57, "dhaf.web-api.host", "0.0.0.0 is not a loopback address, and the API has no authentication"},
    {"public API with TLS only", "dhaf: {cluster-name: c1, node-name: n1, web-api: {host: 0.0.0.0, tls: {cert-file: c, key-file: k}}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 57, "dhaf.web-api.host", "TLS alone encrypts but lets anyone in"},
    {"public API with a weak token", "dhaf: {cluster-name: c1, node-name: n1, api-token: short-token, web-api: {host: 0.0.0.0}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 52, "dhaf.api-token", "is shorter than 16 bytes, too weak for a node reachable from the network (dhaf.web-api.host is 0.0.0.0)"},
    {"cert without key", "dhaf: {cluster-name: c1, node-name: n1, grpc-api: {tls: {cert-file: c.pem}}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 69, "dhaf.grpc-api.tls.key-file", "missing; cert-file and key-file go together"},
    /* roles */
    {"read token equals admin token", "dhaf: {cluster-name: c1, node-name: n1, api-token: same-token-0123456789, read-token: same-token-0123456789}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 87, "dhaf.read-token", "is the same as dhaf.api-token"},
    {"read token alone", "dhaf: {cluster-name: c1, node-name: n1, read-token: read-token-0123456789}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 53, "dhaf.read-token", "restricts nothing on dhaf.web-api and dhaf.grpc-api"},
    {"prober token equals admin token", "dhaf: {cluster-name: c1, node-name: n1, api-token: same-token-0123456789}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC "probers:\n- {name: p1, token: same-token-0123456789}\n",
     10, 21, "probers[0].token", "is the same as dhaf.api-token; a prober's token may only call the Prober service"},
    {"admin CNs without client CA", "dhaf: {cluster-name: c1, node-name: n1, admin-cns: [ops]}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 52, "dhaf.admin-cns", "no API asks for client certificates"},
    {"admin CN of a prober", "dhaf: {cluster-name: c1, node-name: n1, admin-cns: [p1], grpc-api: {tls: {cert-file: c, key-file: k, client-ca-file: ca}}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC "probers:\n- {name: p1, token: prober-token-0123456789}\n",
     1, 52, "dhaf.admin-cns", "\"p1\" is the name of prober p1"},
    {"CN with two roles", "dhaf: {cluster-name: c1, node-name: n1, admin-cns: [ops], read-cns: [ops], grpc-api: {tls: {cert-file: c, key-file: k, client-ca-file: ca}}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 52, "dhaf.admin-cns", "\"ops\" is also in dhaf.read-cns; a name has one role"},
    {"CN too long", "dhaf: {cluster-name: c1, node-name: n1, read-cns: [" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "], grpc-api: {tls: {cert-file: c, key-file: k, client-ca-file: ca}}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 52, "dhaf.read-cns[0]", "a certificate common name has 1 to 64 characters"},
    {"web-api name with a port", "dhaf: {cluster-name: c1, node-name: n1, web-api: {names: [\"dhaf.example.com:443\"]}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
     1, 59, "dhaf.web-api.names[0]", "\"dhaf.example.com:443\" is neither a DNS name nor an IP address"},
    {"prober without token", HEAD SVC "probers:\n- {name: p1, location: eu}\n", 10, 3, "probers[0].token", "missing; a prober needs a token"},
    /* shapes and syntax */
    {"dhaf not a mapping", "dhaf: 5\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC, 1, 7, "dhaf", "expected a mapping, found \"5\""},
    {"rise out of range", HEAD SVC_TOP SW_OK "  health-checker: {type: tcp, port: 80, fall: 0}\n",
     8, 47, "services[0].health-checker.fall", "0 is out of range; expected 1 to 100"},
    {"log level", HEAD SVC "log: {level: verbose}\n", 9, 14, "log.level", "\"verbose\" is not allowed; expected debug, info, warn or error"},
    {"YAML syntax", HEAD "services: [\n", 4, 1, "", "YAML syntax error"},
    {"tab indentation", "dhaf:\n\tcluster-name: c1\n", 2, 1, "", "YAML syntax error"},
    {"alias without anchor", HEAD "services: *nothing\n", 3, 11, "", "alias *nothing has no anchor defined before it"},
    {"two documents", HEAD SVC "---\nfoo: 1\n", 9, 1, "", "more than one YAML document"},
};
/* clang-format on */

static void test_bad_configs(void **state)
{
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        struct dhaf_config cfg;
        struct dhaf_cfg_report rep;
        int rc = load(c->yaml, &cfg, &rep);
        bool ok = rc != 0 && rep.n_errs == 1 && rep.errs[0].line == c->line &&
                  rep.errs[0].col == c->col && strcmp(rep.errs[0].path, c->path) == 0 &&
                  strstr(rep.errs[0].msg, c->msg) != NULL;
        if (!ok) {
            failures++;
            fprintf(stderr, "case \"%s\": rc=%d, want one error at %d:%d %s: ...%s...; got %zu:\n",
                    c->name, rc, c->line, c->col, c->path, c->msg, rep.n_errs);
            dump(&rep);
        }
        dhaf_cfg_report_release(&rep);
        dhaf_config_release(&cfg);
    }
    assert_int_equal(failures, 0);
}

/* dhaf.web-api.names holds at most DHAF_WEB_NAMES_MAX names: one more is refused. */
static void test_web_names_limit(void **state)
{
    (void)state;
    char yaml[4096];
    for (int n = DHAF_WEB_NAMES_MAX; n <= DHAF_WEB_NAMES_MAX + 1; n++) {
        int at = snprintf(yaml, sizeof(yaml),
                          "dhaf: {cluster-name: c1, node-name: n1, web-api: {names: [");
        for (int i = 0; i < n; i++)
            at += snprintf(yaml + at, sizeof(yaml) - (size_t)at, "%sn%d.example.com", i ? ", " : "",
                           i);
        snprintf(yaml + at, sizeof(yaml) - (size_t)at,
                 "]}}\netcd: {hosts: \"127.0.0.1:2379\"}\n" SVC);
        struct dhaf_config cfg;
        struct dhaf_cfg_report rep;
        int rc = load(yaml, &cfg, &rep);
        if (n == DHAF_WEB_NAMES_MAX) {
            assert_int_equal(rc, 0);
            assert_int_equal(cfg.web_api.names.n, DHAF_WEB_NAMES_MAX);
        } else {
            assert_int_equal(rc, DHAF_ECONFIG);
            assert_int_equal(rep.n_errs, 1);
            assert_string_equal(rep.errs[0].path, "dhaf.web-api.names");
            assert_non_null(strstr(rep.errs[0].msg, "33 names; at most 32"));
        }
        dhaf_cfg_report_release(&rep);
        dhaf_config_release(&cfg);
    }
}

static void test_case_count(void **state)
{
    (void)state;
    /* The issue asks for at least 40 broken configs. */
    assert_true(sizeof(bad_cases) / sizeof(bad_cases[0]) >= 40);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_seed_example(void **state)
{
    (void)state;
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, "config-n1.dhaf");
    int rc = dhaf_config_load("../examples/config-n1.dhaf", dhaf_registry_catalog(), &cfg, &rep);
    if (rc)
        dump(&rep);
    assert_int_equal(rc, 0);
    assert_int_equal(rep.n_warns, 0);
    assert_string_equal(cfg.cluster_name, "first-dhaf-cluster");
    assert_string_equal(cfg.node_name, "node-1");
    assert_int_equal(cfg.etcd.n_hosts, 3);
    assert_string_equal(cfg.etcd.hosts[0], "111.1.1.1:2379");
    assert_string_equal(cfg.etcd.hosts[2], "113.3.3.3:2379");
    assert_false(cfg.etcd.tls);
    /* defaults of the seed's tables */
    assert_int_equal(cfg.healthy_node_status_ttl, 30);
    assert_int_equal(cfg.heartbeat_interval, 5);
    assert_int_equal(cfg.tact_interval, 10);
    assert_int_equal(cfg.tact_post_switch_delay, 0);
    assert_int_equal(cfg.etcd.leader_key_ttl, 15);
    assert_string_equal(cfg.web_api.host, "localhost");
    assert_int_equal(cfg.web_api.port, 8128);
    assert_int_equal(cfg.grpc_api.port, 8129);
    assert_true(cfg.probe);
    assert_false(cfg.insecure_api);
    assert_null(cfg.api_token);
    assert_int_equal(cfg.n_services, 1);
    const struct dhaf_service *s = dhaf_config_service(&cfg, "main");
    assert_non_null(s);
    assert_string_equal(s->domain, "foo.com");
    assert_int_equal(s->n_eps, 2);
    assert_string_equal(s->eps[1].name, "ep-2");
    assert_string_equal(s->eps[1].ip, "222.222.222.22");
    assert_int_equal(dhaf_service_ep_index(s, "ep-2"), 1);
    assert_int_equal(dhaf_service_ep_index(s, "nope"), -1);
    assert_string_equal(s->switcher.type, "cloudflare");
    const struct cf_config *cf = s->switcher.conf;
    assert_string_equal(cf->api_token, "<your_api_token>");
    assert_string_equal(cf->zone, "foo.com");
    assert_string_equal(cf->api_url, "https://api.cloudflare.com/client/v4");
    const struct web_config *w = s->checker.conf;
    assert_int_equal(w->schema, WEB_HTTP);
    assert_int_equal(w->port, 80);
    assert_string_equal(w->path, "/");
    assert_int_equal(w->timeout, 5);
    assert_int_equal(w->retries, 2);
    assert_string_equal(w->expected_codes, "200");
    assert_true(w->domain_forwarding);
    assert_false(w->follow_redirects);
    assert_false(w->ignore_ssl_errors);
    assert_null(w->expected_body);
    dhaf_config_release(&cfg);
    dhaf_cfg_report_release(&rep);
}

/* Every example config in examples/ must stay valid. */
static void test_full_example(void **state)
{
    (void)state;
    setenv("DHAF_TEST_TG_TOKEN", "123456:ABC-def_1", 1);
    setenv("DHAF_API_TOKEN", "admin-token-0123456789", 1);
    setenv("DHAF_READ_TOKEN", "read-token-0123456789", 1);
    setenv("DHAF_PROBER_EU_TOKEN", "probe-eu-token-0123456789", 1);
    char dir[] = "/tmp/dhaf-cfg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char secret[256];
    snprintf(secret, sizeof(secret), "%s/cf.token", dir);
    FILE *f = fopen(secret, "w");
    assert_non_null(f);
    fputs("cf-secret-value\n", f);
    fclose(f);
    chmod(secret, 0600);

    char *text = slurp("../examples/full.dhaf");
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, "full.dhaf");
    int rc = dhaf_config_load_mem(text, strlen(text), "full.dhaf", dir, dhaf_registry_catalog(),
                                  &cfg, &rep);
    if (rc || rep.n_warns)
        dump(&rep);
    assert_int_equal(rc, 0);
    assert_int_equal(rep.n_warns, 0);
    assert_int_equal(cfg.n_services, 3);
    assert_int_equal(cfg.n_notifiers, 4);
    assert_int_equal(cfg.n_probers, 2);
    assert_int_equal(cfg.tact_interval, 2);
    assert_int_equal(cfg.log_format, 1);
    const struct dhaf_service *s = dhaf_config_service(&cfg, "main");
    const struct cf_config *cf = s->switcher.conf;
    assert_string_equal(cf->api_token, "cf-secret-value");               /* from api-token-file */
    assert_string_equal(cf->api_url, "http://127.0.0.1:8787/client/v4"); /* trailing / cut */
    const struct web_config *w = s->checker.conf;
    assert_int_equal(w->schema, WEB_HTTPS);
    assert_int_equal(w->port, 443);
    assert_string_equal(w->path, "/health");
    assert_int_equal(w->headers.n, 2);
    assert_string_equal(w->headers.keys[0], "X-Probe");
    assert_string_equal(w->expected_codes, "200,3XX");
    assert_int_equal(w->retries, 0);
    const struct dhaf_service *api = dhaf_config_service(&cfg, "api");
    const struct tcp_config *tcp = api->checker.conf;
    assert_int_equal(tcp->receive_timeout, 7); /* the seed's receiveTimeout spelling */
    assert_int_equal(api->eps[0].family, 10 /* AF_INET6 */);
    /* an anchor shared by two services */
    const struct dhaf_service *legacy = dhaf_config_service(&cfg, "legacy");
    assert_string_equal(legacy->checker.type, "web");
    const struct tg_config *tg = cfg.notifiers[1].conf;
    assert_string_equal(cfg.notifiers[1].name, "tg-anon");
    assert_string_equal(tg->token, "123456:ABC-def_1"); /* from ${ENV} */
    /* Read, then taken out of the environment: children do not inherit it. */
    assert_null(getenv("DHAF_TEST_TG_TOKEN"));
    assert_string_equal(cfg.api_token, "admin-token-0123456789");
    assert_string_equal(cfg.read_token, "read-token-0123456789");
    assert_string_equal(cfg.probers[0].token, "probe-eu-token-0123456789");
    assert_null(getenv("DHAF_API_TOKEN")); /* taken out of the environment */
    const struct email_config *em = cfg.notifiers[0].conf;
    assert_int_equal(em->security, EMAIL_SEC_STARTTLS);
    assert_string_equal(cfg.notifiers[0].name, "ops-mail");
    assert_int_equal(cfg.notifiers[0].min_severity, 1); /* warning */
    assert_int_equal(cfg.notifiers[0].repeat_window, 300);
    assert_int_equal(cfg.notifiers[0].events.n, 0);
    assert_int_equal(cfg.notifiers[1].events.n, 4);
    assert_string_equal(cfg.notifiers[1].events.v[3], "switch-failed");
    assert_int_equal(cfg.notifiers[1].min_severity, 0); /* info: every event */
    assert_string_equal(cfg.notifiers[2].type, "webhook");
    assert_int_equal(cfg.notifiers[3].events.n, 2); /* "a,b" */
    assert_string_equal(cfg.notifiers[3].events.v[1], "etcd-alarm");
    assert_string_equal(cfg.probers[0].name, "probe-eu");
    dhaf_config_release(&cfg);
    dhaf_cfg_report_release(&rep);
    unlink(secret);
    rmdir(dir);
}

static void test_world_readable_secret_warns(void **state)
{
    (void)state;
    char path[] = "/tmp/dhaf-tok-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "tok\n", 4), 4);
    close(fd);
    chmod(path, 0644);
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "dhaf: {cluster-name: c1, node-name: n1, api-token-file: %s}\n"
             "etcd: {hosts: \"127.0.0.1:2379\"}\n" SVC,
             path);
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    assert_int_equal(load(yaml, &cfg, &rep), 0);
    assert_string_equal(cfg.api_token, "tok");
    assert_int_equal(rep.n_warns, 1);
    assert_non_null(strstr(rep.warns[0].msg, "readable by every user"));
    /* the secret's value never appears in a message */
    assert_null(strstr(rep.warns[0].msg, "tok\n"));
    dhaf_config_release(&cfg);
    dhaf_cfg_report_release(&rep);
    unlink(path);
}

static void test_secret_not_in_errors(void **state)
{
    (void)state;
    const char *yaml =
        HEAD SVC "notifiers:\n- {type: tg, token: \"supersecret-value\", join-code: j}\n";
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    assert_int_not_equal(load(yaml, &cfg, &rep), 0);
    for (size_t i = 0; i < rep.n_errs; i++)
        assert_null(strstr(rep.errs[i].msg, "supersecret"));
    dhaf_cfg_report_release(&rep);
}

static void test_all_errors_at_once(void **state)
{
    (void)state;
    const char *yaml = "dhaf: {cluster-name: \"a b\", tact-interval: 0}\n"
                       "etcd: {hosts: x}\n"
                       "services: []\n";
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    assert_int_not_equal(load(yaml, &cfg, &rep), 0);
    /* cluster-name, node-name, tact-interval, hosts, services */
    assert_int_equal(rep.n_errs, 5);
    dhaf_cfg_report_release(&rep);
}

static void test_alias_bomb(void **state)
{
    (void)state;
    const char *yaml = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                       "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    assert_int_not_equal(load(yaml, &cfg, &rep), 0);
    assert_int_equal(rep.n_errs, 1);
    assert_non_null(strstr(rep.errs[0].msg, "aliases expand this document past 100000 nodes"));
    assert_int_equal(rep.errs[0].line, 5);
    dhaf_cfg_report_release(&rep);
}

/* Anchors are found by name in a hash table: a name anchored again means its latest node. */
static void test_anchor_lookup(void **state)
{
    (void)state;
    const char *yaml =
        "dhaf: {cluster-name: &x c1, node-name: &x n1}\n"
        "etcd: {hosts: &h \"127.0.0.1:2379\"}\n"
        "services:\n"
        "- name: *x\n"
        "  domain: foo.com\n"
        "  entry-points: [{name: &e ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.2}]\n"
        "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
        "  health-checker: {type: tcp, port: 80}\n";
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    assert_int_equal(load(yaml, &cfg, &rep), 0);
    assert_string_equal(cfg.cluster_name, "c1");
    assert_non_null(dhaf_config_service(&cfg, "n1"));
    dhaf_config_release(&cfg);
    dhaf_cfg_report_release(&rep);
}

/* dhaf_config_service finds every service of a loaded config by a binary search over the
 * names sorted at load (here given in no order), and nothing else; a config built by hand
 * (no index) is searched in order. */
static void test_service_lookup(void **state)
{
    (void)state;
    static const char *const names[] = {"web", "api", "zeta", "alpha", "mid", "b", "a1", "z0"};
    size_t n = sizeof(names) / sizeof(names[0]);
    char yaml[4096];
    size_t off = (size_t)snprintf(yaml, sizeof(yaml),
                                  "dhaf: {cluster-name: c1, node-name: n1}\n"
                                  "etcd: {hosts: \"127.0.0.1:2379\"}\nservices:\n");
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(yaml + off, sizeof(yaml) - off,
                                "- name: %s\n  domain: %s.com\n"
                                "  entry-points: [{name: ep-1, ip: 10.0.0.1}]\n"
                                "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
                                "  health-checker: {type: tcp, port: 80}\n",
                                names[i], names[i]);
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    assert_int_equal(load(yaml, &cfg, &rep), 0);
    assert_non_null(cfg.by_name);
    for (size_t i = 0; i < n; i++) {
        const struct dhaf_service *s = dhaf_config_service(&cfg, names[i]);
        assert_ptr_equal(s, &cfg.services[i]); /* config order kept: the index is apart */
    }
    static const char *const absent[] = {"", "0", "ab", "mi", "zz", "web2", "Web"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        assert_null(dhaf_config_service(&cfg, absent[i]));
    struct dhaf_config by_hand = {.services = cfg.services, .n_services = n};
    assert_ptr_equal(dhaf_config_service(&by_hand, "mid"), &cfg.services[4]);
    assert_null(dhaf_config_service(&by_hand, "nope"));
    dhaf_config_release(&cfg);
    dhaf_cfg_report_release(&rep);
}

static void test_empty_and_binary(void **state)
{
    (void)state;
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    assert_int_not_equal(load("", &cfg, &rep), 0);
    /* an empty file lacks dhaf.cluster-name, dhaf.node-name, etcd.hosts and services */
    assert_int_equal(rep.n_errs, 4);
    dhaf_cfg_report_release(&rep);

    static const char bin[] = "dhaf:\n  x: \xff\xfe\n";
    dhaf_cfg_report_init(&rep, "t");
    assert_int_not_equal(
        dhaf_config_load_mem(bin, sizeof(bin) - 1, "t", ".", dhaf_registry_catalog(), &cfg, &rep),
        0);
    assert_int_equal(rep.n_errs, 1);
    assert_non_null(strstr(rep.errs[0].msg, "not valid UTF-8"));
    assert_int_equal(rep.errs[0].line, 2);
    dhaf_cfg_report_release(&rep);

    static const char nul[] = "dhaf:\n  x: a\0b\n";
    dhaf_cfg_report_init(&rep, "t");
    assert_int_not_equal(
        dhaf_config_load_mem(nul, sizeof(nul) - 1, "t", ".", dhaf_registry_catalog(), &cfg, &rep),
        0);
    assert_int_equal(rep.n_errs, 1);
    assert_non_null(strstr(rep.errs[0].msg, "NUL byte"));
    assert_int_equal(rep.errs[0].line, 2);
    assert_int_equal(rep.errs[0].col, 7);
    dhaf_cfg_report_release(&rep);
}

static void test_file_errors(void **state)
{
    (void)state;
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, "/tmp");
    assert_int_not_equal(dhaf_config_load("/tmp", dhaf_registry_catalog(), &cfg, &rep), 0);
    assert_non_null(strstr(rep.errs[0].msg, "is a directory"));
    dhaf_cfg_report_release(&rep);
    dhaf_cfg_report_init(&rep, "/nonexistent.dhaf");
    assert_int_not_equal(dhaf_config_load("/nonexistent.dhaf", dhaf_registry_catalog(), &cfg, &rep),
                         0);
    assert_non_null(strstr(rep.errs[0].msg, "No such file"));
    dhaf_cfg_report_release(&rep);
}

static void test_every_provider_defaults_parse(void **state)
{
    (void)state;
    /* Each built-in type with only its required keys: the table's defaults must parse. */
    const char *yaml =
        HEAD "services:\n"
             "- name: a\n  domain: a.com\n  entry-points: [{name: e, ip: 10.0.0.1}]\n"
             "  switcher: {type: cloudflare, api-token: t, zone: a.com}\n"
             "  health-checker: {type: web}\n"
             "- name: b\n  domain: b.com\n  entry-points: [{name: e, ip: 10.0.0.1}]\n"
             "  switcher: {type: google-cloud, project: p, metadata-key: k, credentials-path: c}\n"
             "  health-checker: {type: tcp, port: 1}\n"
             "- name: c\n  domain: c.com\n  entry-points: [{name: e, ip: 10.0.0.1}]\n"
             "  switcher: {type: exec, init: i, switch: s}\n"
             "  health-checker: {type: exec, init: i, check: c}\n"
             "notifiers:\n"
             "- {type: email, from: a@b.c, to: c@d.e, smtp: {server: mail, port: 25}}\n"
             "- {type: tg, token: \"1:a\", join-code: j}\n";
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    int rc = load(yaml, &cfg, &rep);
    if (rc)
        dump(&rep);
    assert_int_equal(rc, 0);
    for (size_t i = 0; dhaf_registry_at(i); i++) {
        const struct dhaf_provider *p = dhaf_registry_at(i);
        assert_int_equal(p->abi_version, DHAF_PROVIDER_ABI_VERSION);
        for (const struct dhaf_cfgkey *k = p->keys; k->key; k++)
            assert_non_null(k->help);
    }
    assert_string_equal(cfg.notifiers[0].name, "email-anon");
    const struct email_config *em = cfg.notifiers[0].conf;
    assert_int_equal(em->security, -1);
    dhaf_config_release(&cfg);
    dhaf_cfg_report_release(&rep);
}

/* Thousands of corrupted variants of the full example: each must load or be refused, never
 * crash or leak (this test runs under ASan/UBSan in `make asan`). */
static void test_mutations(void **state)
{
    (void)state;
    const char *orig = slurp("../examples/full.dhaf");
    size_t len = strlen(orig);
    char *buf = malloc(len + 1);
    assert_non_null(buf);
    unsigned seed = 12345;
    setenv("DHAF_TEST_TG_TOKEN", "123456:ABC-def_1", 1);
    setenv("DHAF_API_TOKEN", "admin-token-0123456789", 1);
    setenv("DHAF_READ_TOKEN", "read-token-0123456789", 1);
    setenv("DHAF_PROBER_EU_TOKEN", "probe-eu-token-0123456789", 1);
    char dir[] = "/tmp/dhaf-mut-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char secret[256];
    snprintf(secret, sizeof(secret), "%s/cf.token", dir);
    FILE *f = fopen(secret, "w");
    assert_non_null(f);
    fputs("t\n", f);
    fclose(f);
    chmod(secret, 0600);
    size_t accepted = 0;
    static const char alphabet[] = "&*[]{}:,-#'\"|> \n\tx0!%@";
    size_t refused = 0;
    for (int round = 0; round < 3000; round++) {
        memcpy(buf, orig, len + 1);
        int edits = 1 + (int)(rand_r(&seed) % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)rand_r(&seed) % len;
            buf[at] = alphabet[(size_t)rand_r(&seed) % (sizeof(alphabet) - 1)];
        }
        size_t cut = len - (size_t)rand_r(&seed) % 64;
        struct dhaf_config cfg;
        struct dhaf_cfg_report rep;
        dhaf_cfg_report_init(&rep, "m");
        if (dhaf_config_load_mem(buf, cut, "m", dir, dhaf_registry_catalog(), &cfg, &rep) != 0) {
            refused++;
            assert_true(rep.n_errs > 0);
        } else {
            accepted++;
            dhaf_config_release(&cfg);
        }
        dhaf_cfg_report_release(&rep);
    }
    assert_true(refused > 0);
    assert_true(accepted > 0);
    free(buf);
    unlink(secret);
    rmdir(dir);
}

/* A checker section survives JSON (how a probe plan carries it) unchanged. */
static void test_section_json_round_trip(void **state)
{
    (void)state;
    const char *yaml = HEAD SVC_TOP SW_OK
        "  health-checker: {type: web, schema: https, path: /h, rise: 3, fall: 2,\n"
        "                   headers: {X-A: b}, expected-codes: \"200,3XX\", retries: 0}\n";
    struct dhaf_config cfg;
    struct dhaf_cfg_report rep;
    int rc = load(yaml, &cfg, &rep);
    if (rc)
        dump(&rep);
    assert_int_equal(rc, 0);
    dhaf_cfg_report_release(&rep);
    const struct dhaf_section *hc = &cfg.services[0].checker;
    assert_int_equal(hc->rise, 3);
    assert_int_equal(hc->fall, 2);
    char *json = dhaf_section_to_json(hc);
    struct dhaf_section back;
    dhaf_cfg_report_init(&rep, "plan");
    rc = dhaf_section_load_mem(DHAF_PKIND_CHECKER, json, strlen(json), "plan.checker",
                               dhaf_registry_catalog(), &back, &rep);
    if (rc)
        dump(&rep);
    assert_int_equal(rc, 0);
    char *again = dhaf_section_to_json(&back);
    assert_string_equal(json, again);
    const struct web_config *w = back.conf;
    assert_int_equal(w->port, 443);
    assert_int_equal(w->retries, 0);
    assert_string_equal(w->headers.vals[0], "b");
    assert_int_equal(back.rise, 3);
    free(json);
    free(again);
    dhaf_section_release(&back);
    dhaf_cfg_report_release(&rep);
    /* a broken plan section is refused with a clear error, not a crash */
    dhaf_cfg_report_init(&rep, "plan");
    const char *bad = "{\"type\":\"web\",\"rise\":0}";
    assert_int_not_equal(dhaf_section_load_mem(DHAF_PKIND_CHECKER, bad, strlen(bad), "plan.checker",
                                               dhaf_registry_catalog(), &back, &rep),
                         0);
    assert_non_null(strstr(rep.errs[0].path, "plan.checker.rise"));
    dhaf_cfg_report_release(&rep);
    dhaf_config_release(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_case_count),
        cmocka_unit_test(test_web_names_limit),
        cmocka_unit_test(test_seed_example),
        cmocka_unit_test(test_full_example),
        cmocka_unit_test(test_world_readable_secret_warns),
        cmocka_unit_test(test_secret_not_in_errors),
        cmocka_unit_test(test_all_errors_at_once),
        cmocka_unit_test(test_alias_bomb),
        cmocka_unit_test(test_anchor_lookup),
        cmocka_unit_test(test_empty_and_binary),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_every_provider_defaults_parse),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_section_json_round_trip),
        cmocka_unit_test(test_service_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
