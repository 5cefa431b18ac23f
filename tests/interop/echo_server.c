/* SPDX-License-Identifier: MIT */
/* dhaf-test-echo-server: serves dhaftest.v1.Echo with lib/rpc so third-party gRPC clients can
 * prove wire compatibility (tests/system/interop_python.sh). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dhaf/err.h"
#include "dhaf/log.h"
#include "dhaf/rpc.h"
#include "dhaftest/v1/echo.pb-c.h"

/* Caps on what a request may ask for, so a bad client cannot pin the server. */
#define COUNT_MAX   100000
#define SLOW_MAX_MS 60000
/* How often Slow looks at dhaf_rpc_call_cancelled(). */
#define SLOW_STEP_MS 10

/* Written by the signal handler; main() blocks reading the other end. */
static int stop_pipe[2] = {-1, -1};

static void on_stop_signal(int sig)
{
    int saved = errno;
    char c = (char)sig;
    /* A full pipe means a stop is already pending: a failed write loses nothing. */
    ssize_t n = write(stop_pipe[1], &c, 1);
    (void)n;
    errno = saved;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int say(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
               struct dhaf_err *err)
{
    (void)ud;
    const Dhaftest__V1__SayRequest *in = (const Dhaftest__V1__SayRequest *)req;
    Dhaftest__V1__SayReply out = DHAFTEST__V1__SAY_REPLY__INIT;
    const char *cn = dhaf_rpc_call_peer_cn(call);
    const char *peer = dhaf_rpc_call_peer(call);
    /* protobuf-c packs string fields as they are; the casts only drop const. */
    out.text = (char *)in->text;
    out.peer = (char *)(peer ? peer : "");
    out.has_client_cn = cn != NULL;
    out.client_cn = (char *)(cn ? cn : "");
    return dhaf_rpc_send(call, &out.base, err);
}

static int count(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
                 struct dhaf_err *err)
{
    (void)ud;
    const Dhaftest__V1__CountRequest *in = (const Dhaftest__V1__CountRequest *)req;
    if (in->n < 0 || in->n > COUNT_MAX)
        return dhaf_err_set(err, DHAF_EINVAL, "n=%d is outside 0..%d", in->n, COUNT_MAX);
    for (int32_t i = 0; i < in->n; i++) {
        Dhaftest__V1__CountReply out = DHAFTEST__V1__COUNT_REPLY__INIT;
        out.i = i;
        int rc = dhaf_rpc_send(call, &out.base, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int fail(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
                struct dhaf_err *err)
{
    (void)ud;
    (void)call;
    const Dhaftest__V1__FailRequest *in = (const Dhaftest__V1__FailRequest *)req;
    /* Returning 0 without a reply would break the unary contract: refuse non-errors. */
    if (in->code >= 0)
        return dhaf_err_set(err, DHAF_EINVAL, "code=%d is not a dhaf error code", in->code);
    return dhaf_err_set(err, in->code, "%s", in->message);
}

static int slow(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
                struct dhaf_err *err)
{
    (void)ud;
    const Dhaftest__V1__SlowRequest *in = (const Dhaftest__V1__SlowRequest *)req;
    if (in->sleep_ms < 0 || in->sleep_ms > SLOW_MAX_MS)
        return dhaf_err_set(err, DHAF_EINVAL, "sleep_ms=%d is outside 0..%d", in->sleep_ms,
                            SLOW_MAX_MS);
    int64_t start = now_ms();
    /* The system test waits for this line before it stops the server mid-call. */
    DHAF_LOG(DHAF_LOG_INFO, "event=slow-start sleep_ms=%d", in->sleep_ms);
    for (;;) {
        int64_t elapsed = now_ms() - start;
        if (dhaf_rpc_call_cancelled(call)) {
            /* The system test looks for this line: the handler noticed and gave up. */
            DHAF_LOG(DHAF_LOG_INFO, "event=slow-cancelled elapsed_ms=%lld sleep_ms=%d",
                     (long long)elapsed, in->sleep_ms);
            return dhaf_err_set(err, DHAF_ECANCELLED, "cancelled after %lld ms",
                                (long long)elapsed);
        }
        if (elapsed >= in->sleep_ms)
            break;
        int64_t step =
            in->sleep_ms - elapsed < SLOW_STEP_MS ? in->sleep_ms - elapsed : SLOW_STEP_MS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
        nanosleep(&ts, NULL);
    }
    char text[64];
    snprintf(text, sizeof(text), "slept %d ms", in->sleep_ms);
    Dhaftest__V1__SayReply out = DHAFTEST__V1__SAY_REPLY__INIT;
    out.text = text;
    return dhaf_rpc_send(call, &out.base, err);
}

static const struct dhaf_rpc_method methods[] = {
    {"/dhaftest.v1.Echo/Say", &dhaftest__v1__say_request__descriptor, false, say, NULL, NULL},
    {"/dhaftest.v1.Echo/Count", &dhaftest__v1__count_request__descriptor, true, count, NULL, NULL},
    {"/dhaftest.v1.Echo/Fail", &dhaftest__v1__fail_request__descriptor, false, fail, NULL, NULL},
    {"/dhaftest.v1.Echo/Slow", &dhaftest__v1__slow_request__descriptor, false, slow, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: dhaf-test-echo-server --addr HOST:PORT [--token T]\n"
                 "                             [--tls-cert F --tls-key F [--client-ca F]]\n"
                 "\n"
                 "  --addr HOST:PORT  where to listen (port 0: any free port)\n"
                 "  --token T         require \"authorization: Bearer T\" on every call\n"
                 "  --tls-cert F      server certificate (PEM); turns TLS on\n"
                 "  --tls-key F       its private key (PEM)\n"
                 "  --client-ca F     require client certificates chaining to this CA (mTLS)\n"
                 "  -h, --help        this help\n"
                 "\n"
                 "Prints \"LISTENING <port>\" on stdout once serving; SIGTERM or SIGINT stops it\n"
                 "(exit 0). Exit 1: could not start; 2: usage.\n");
}

static int install_stop_handler(void)
{
    if (pipe(stop_pipe) != 0)
        return -1;
    /* The handler must never block, even if signals pile up. */
    if (fcntl(stop_pipe[0], F_SETFD, FD_CLOEXEC) != 0 ||
        fcntl(stop_pipe[1], F_SETFD, FD_CLOEXEC) != 0 ||
        fcntl(stop_pipe[1], F_SETFL, O_NONBLOCK) != 0)
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int main(int argc, char **argv)
{
    enum { OPT_ADDR = 256, OPT_TOKEN, OPT_CERT, OPT_KEY, OPT_CA };
    static const struct option opts[] = {
        {"addr", required_argument, NULL, OPT_ADDR},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"tls-cert", required_argument, NULL, OPT_CERT},
        {"tls-key", required_argument, NULL, OPT_KEY},
        {"client-ca", required_argument, NULL, OPT_CA},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dhaf_rpc_server_opts so;
    memset(&so, 0, sizeof(so));
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_ADDR:
            so.addr = optarg;
            break;
        case OPT_TOKEN:
            so.bearer_token = optarg;
            break;
        case OPT_CERT:
            so.tls.cert_file = optarg;
            break;
        case OPT_KEY:
            so.tls.key_file = optarg;
            break;
        case OPT_CA:
            so.tls.ca_file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            fprintf(stderr, "dhaf-test-echo-server: %s needs a value\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "dhaf-test-echo-server: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !so.addr) {
        fprintf(stderr, "dhaf-test-echo-server: %s\n",
                so.addr ? "unexpected argument" : "--addr HOST:PORT is required");
        usage(stderr);
        return 2;
    }
    if (!so.tls.cert_file != !so.tls.key_file || (so.tls.ca_file && !so.tls.cert_file)) {
        fprintf(stderr, "dhaf-test-echo-server: --tls-cert and --tls-key go together, and "
                        "--client-ca needs them\n");
        return 2;
    }
    so.tls.tls = so.tls.cert_file != NULL;

    /* Before the server starts, so that a signal arriving early is not lost. */
    if (install_stop_handler() != 0) {
        perror("dhaf-test-echo-server: signal setup");
        return 1;
    }
    struct dhaf_err err;
    dhaf_err_clear(&err);
    struct dhaf_rpc_server *srv =
        dhaf_rpc_server_start(&so, methods, sizeof(methods) / sizeof(methods[0]), &err);
    if (!srv) {
        fprintf(stderr, "dhaf-test-echo-server: cannot serve on %s: %s (%s)\n", so.addr, err.msg,
                dhaf_strerror_name(err.code));
        return 1;
    }
    printf("LISTENING %d\n", dhaf_rpc_server_port(srv));
    fflush(stdout);
    DHAF_LOG(DHAF_LOG_INFO, "event=listening addr=%s port=%d tls=%s mtls=%s token=%s", so.addr,
             dhaf_rpc_server_port(srv), so.tls.tls ? "yes" : "no", so.tls.ca_file ? "yes" : "no",
             so.bearer_token ? "set" : "none");

    char sig = 0;
    for (;;) {
        ssize_t n = read(stop_pipe[0], &sig, 1);
        if (n == 1)
            break;
        if (n < 0 && errno == EINTR)
            continue;
        perror("dhaf-test-echo-server: read stop pipe");
        break;
    }
    DHAF_LOG(DHAF_LOG_INFO, "event=stopping signal=%d", (int)sig);
    dhaf_rpc_server_stop(srv);
    DHAF_LOG(DHAF_LOG_INFO, "event=stopped");
    close(stop_pipe[0]);
    close(stop_pipe[1]);
    return 0;
}
