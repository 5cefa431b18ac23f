/* SPDX-License-Identifier: MIT */
/* Test harness: starts, kills, restarts and queries real etcd servers on loopback. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "etcd_harness.h"

#define DEFAULT_ETCD     "/usr/bin/etcd"
#define DEFAULT_ETCDCTL  "/usr/bin/etcdctl"
#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS  10000
#define CTL_TIMEOUT_MS   30000
#define POLL_INTERVAL_MS 20
#define HEALTH_PROBE_MS  500
#define START_ATTEMPTS   3
#define CTL_MAX_ARGS     64
#define CTL_ARGS_MAX_LEN 4096
#define LOG_TAIL_BYTES   4096
#define LOG_TAIL_LINES   25
#define DIR_MARKER       "dhaf-etcd-"

extern char **environ;

static void harness_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void harness_err(const char *fmt, ...)
{
    va_list ap;
    fputs("etcd_harness: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static const char *etcd_path(void)
{
    const char *p = getenv("DHAF_TEST_ETCD");
    return p && *p ? p : DEFAULT_ETCD;
}

static const char *etcdctl_path(void)
{
    const char *p = getenv("DHAF_TEST_ETCDCTL");
    return p && *p ? p : DEFAULT_ETCDCTL;
}

static bool member_index_ok(const struct etcd_cluster *c, size_t i, const char *what)
{
    if (!c || i >= c->n || i >= ETCD_MAX_MEMBERS) {
        harness_err("%s: member index %zu out of range (cluster has %zu members)", what, i,
                    c ? c->n : 0);
        return false;
    }
    return true;
}

/* Prints the last lines of a member's log, so a failed start explains itself. */
static void print_log_tail(const struct etcd_member *m)
{
    char buf[LOG_TAIL_BYTES + 1];
    int fd = open(m->log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        harness_err("cannot open log %s: %s", m->log_path, strerror(errno));
        return;
    }
    struct stat st;
    off_t off = 0;
    if (fstat(fd, &st) == 0 && st.st_size > LOG_TAIL_BYTES)
        off = st.st_size - LOG_TAIL_BYTES;
    ssize_t len = pread(fd, buf, LOG_TAIL_BYTES, off);
    close(fd);
    if (len < 0)
        len = 0;
    buf[len] = '\0';

    const char *start = buf;
    int lines = 0;
    for (ssize_t k = len - 1; k >= 0; k--) {
        /* The last byte is usually the final newline and does not start a line. */
        if (buf[k] == '\n' && k != len - 1 && ++lines == LOG_TAIL_LINES) {
            start = buf + k + 1;
            break;
        }
    }
    fprintf(stderr, "---- last lines of %s (%s) ----\n%s%s---- end of %s ----\n", m->log_path,
            m->name, start, (len > 0 && buf[len - 1] != '\n') ? "\n" : "", m->name);
    fflush(stderr);
}

static bool log_contains(const struct etcd_member *m, const char *needle)
{
    char buf[LOG_TAIL_BYTES * 4 + 1];
    int fd = open(m->log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (len <= 0)
        return false;
    buf[len] = '\0';
    return strstr(buf, needle) != NULL;
}

static void describe_status(int status, char *out, size_t outlen)
{
    if (WIFEXITED(status))
        snprintf(out, outlen, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, outlen, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, outlen, "wait status 0x%x", status);
}

/*
 * Reaps member m without blocking if it has exited. Returns true when it is gone (pid cleared,
 * *status set when status is not NULL), false while it still runs.
 */
static bool member_reap_nohang(struct etcd_member *m, int *status)
{
    if (m->pid <= 0)
        return true;
    int st = 0;
    pid_t r;
    do {
        r = waitpid(m->pid, &st, WNOHANG);
    } while (r == -1 && errno == EINTR);
    if (r == 0)
        return false;
    if (r == -1) {
        /* ECHILD: somebody else reaped it; it is gone either way. */
        harness_err("waitpid(%s pid %d): %s", m->name, (int)m->pid, strerror(errno));
        st = 0;
    }
    m->pid = 0;
    if (status)
        *status = st;
    return true;
}

static void member_reap_blocking(struct etcd_member *m)
{
    if (m->pid <= 0)
        return;
    pid_t r;
    do {
        r = waitpid(m->pid, NULL, 0);
    } while (r == -1 && errno == EINTR);
    if (r == -1)
        harness_err("waitpid(%s pid %d): %s", m->name, (int)m->pid, strerror(errno));
    m->pid = 0;
}

/* Picks count distinct free loopback ports; the sockets stay bound until all are picked. */
static int pick_ports(int *ports, size_t count)
{
    int fds[2 * ETCD_MAX_MEMBERS];
    size_t opened = 0;
    int rc = -1;

    for (; opened < count; opened++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            harness_err("pick free port: socket: %s", strerror(errno));
            goto out;
        }
        fds[opened] = fd;
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t salen = sizeof(sa);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
            getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
            harness_err("pick free port: bind/getsockname 127.0.0.1:0: %s", strerror(errno));
            close(fd);
            goto out;
        }
        ports[opened] = ntohs(sa.sin_port);
    }
    rc = 0;
out:
    for (size_t k = 0; k < opened; k++)
        close(fds[k]);
    return rc;
}

/*
 * Copies the environment minus variables starting with strip_prefix (etcd and etcdctl read
 * ETCD_* / ETCDCTL_* as flags and refuse a variable that shadows a command-line flag), plus extra
 * (may be NULL). The array is malloc'd, the strings borrowed; caller frees the array only.
 */
static char **build_env(const char *strip_prefix, const char *extra)
{
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    char **env = calloc(n + 2, sizeof(*env));
    if (!env) {
        harness_err("out of memory building the environment");
        return NULL;
    }
    size_t k = 0;
    size_t plen = strlen(strip_prefix);
    for (char **e = environ; e && *e; e++) {
        /* Keep ETCD_UNSUPPORTED_ARCH: it is not a flag and some arches need it. */
        if (strncmp(*e, strip_prefix, plen) == 0 && strncmp(*e, "ETCD_UNSUPPORTED_ARCH=", 22) != 0)
            continue;
        env[k++] = *e;
    }
    if (extra)
        env[k++] = (char *)extra;
    env[k] = NULL;
    return env;
}

/*
 * fork + execve with stdin from /dev/null, stdout/stderr on the given fds (-1: inherit), and
 * PR_SET_PDEATHSIG(SIGKILL) so the child dies with us. Only async-signal-safe calls in the child.
 * Returns the pid or -1.
 */
static pid_t spawn(const char *path, char *const argv[], char *const envp[], int out_fd, int err_fd)
{
    pid_t parent = getpid();
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) {
        harness_err("open /dev/null: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        harness_err("fork for %s: %s", path, strerror(errno));
        close(null_fd);
        return -1;
    }
    if (pid == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
            _exit(126);
        /* The parent may have died before prctl took effect. */
        if (getppid() != parent)
            _exit(126);
        /* Signal mask and ignored dispositions survive exec; give the child clean ones. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(SIGPIPE, &dfl, NULL);
        sigaction(SIGTERM, &dfl, NULL);
        sigaction(SIGINT, &dfl, NULL);
        if (dup2(null_fd, STDIN_FILENO) < 0)
            _exit(126);
        if (out_fd >= 0 && dup2(out_fd, STDOUT_FILENO) < 0)
            _exit(126);
        if (err_fd >= 0 && dup2(err_fd, STDERR_FILENO) < 0)
            _exit(126);
        execve(path, argv, envp);
        static const char msg[] = "etcd_harness: execve failed for ";
        ssize_t wr = write(STDERR_FILENO, msg, sizeof(msg) - 1);
        wr = write(STDERR_FILENO, path, strlen(path));
        wr = write(STDERR_FILENO, "\n", 1);
        (void)wr;
        _exit(127);
    }
    close(null_fd);
    return pid;
}

/*
 * One GET /health on 127.0.0.1:port within timeout_ms. Returns 1 when the body says
 * "health":"true", 0 otherwise (refused, timeout, unhealthy). *why gets a short reason.
 */
static int health_probe(int port, int timeout_ms, char *why, size_t whylen)
{
    long long deadline = now_ms() + timeout_ms;
    int healthy = 0;
    char buf[2048];
    size_t used = 0;

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(why, whylen, "socket: %s", strerror(errno));
        return 0;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        snprintf(why, whylen, "connect: %s", strerror(errno));
        goto out;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int left = (int)(deadline - now_ms());
    if (left <= 0 || poll(&pfd, 1, left) <= 0) {
        snprintf(why, whylen, "connect: timed out");
        goto out;
    }
    int soerr = 0;
    socklen_t slen = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0 || soerr != 0) {
        snprintf(why, whylen, "connect: %s", strerror(soerr ? soerr : errno));
        goto out;
    }

    char req[128];
    int reqlen =
        snprintf(req, sizeof(req),
                 "GET /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", port);
    /* A loopback socket buffer takes this small request in one go. */
    if (send(fd, req, (size_t)reqlen, MSG_NOSIGNAL) != reqlen) {
        snprintf(why, whylen, "send: %s", strerror(errno));
        goto out;
    }

    for (;;) {
        left = (int)(deadline - now_ms());
        pfd.events = POLLIN;
        if (left <= 0 || poll(&pfd, 1, left) <= 0) {
            snprintf(why, whylen, "reading reply: timed out");
            goto out;
        }
        ssize_t r = recv(fd, buf + used, sizeof(buf) - 1 - used, 0);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            snprintf(why, whylen, "recv: %s", strerror(errno));
            goto out;
        }
        used += (size_t)r;
        if (r == 0 || used == sizeof(buf) - 1)
            break;
    }
    buf[used] = '\0';
    if (strstr(buf, "\"health\":\"true\"")) {
        healthy = 1;
    } else {
        const char *body = strstr(buf, "\r\n\r\n");
        snprintf(why, whylen, "reply: %.200s", body ? body + 4 : buf);
    }
out:
    close(fd);
    return healthy;
}

/* Starts member i (state "new" or "existing"); does not wait for it. */
static int member_spawn(struct etcd_cluster *c, size_t i, const char *state)
{
    struct etcd_member *m = &c->m[i];
    char client_url[64], peer_url[64], initial_cluster[512] = "";
    size_t used = 0;
    int rc = -1;
    char **env = NULL;
    int log_fd = -1;

    snprintf(client_url, sizeof(client_url), "http://127.0.0.1:%d", m->client_port);
    snprintf(peer_url, sizeof(peer_url), "http://127.0.0.1:%d", m->peer_port);
    for (size_t k = 0; k < c->n; k++) {
        int w = snprintf(initial_cluster + used, sizeof(initial_cluster) - used,
                         "%s%s=http://127.0.0.1:%d", k ? "," : "", c->m[k].name, c->m[k].peer_port);
        if (w < 0 || (size_t)w >= sizeof(initial_cluster) - used) {
            harness_err("start %s: --initial-cluster value too long", m->name);
            goto out;
        }
        used += (size_t)w;
    }

    char *argv[] = {
        (char *)etcd_path(),
        "--name",
        m->name,
        "--data-dir",
        m->data_dir,
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-state",
        (char *)state,
        "--initial-cluster-token",
        c->token,
        "--heartbeat-interval=25",
        "--election-timeout=250",
        "--logger=zap",
        "--log-outputs=stderr",
        NULL,
    };

    env = build_env("ETCD_", NULL);
    if (!env)
        goto out;
    log_fd = open(m->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        harness_err("start %s: open log %s: %s", m->name, m->log_path, strerror(errno));
        goto out;
    }
    dprintf(log_fd, "==== etcd_harness: starting %s (initial-cluster-state %s) ====\n", m->name,
            state);
    pid_t pid = spawn(argv[0], argv, env, log_fd, log_fd);
    if (pid < 0) {
        harness_err("start %s: could not spawn %s", m->name, argv[0]);
        goto out;
    }
    m->pid = pid;
    rc = 0;
out:
    if (log_fd >= 0)
        close(log_fd);
    free(env);
    return rc;
}

/* Waits until member i is healthy or deadline (monotonic ms) passes. */
static int member_wait_until(struct etcd_cluster *c, size_t i, long long deadline)
{
    struct etcd_member *m = &c->m[i];
    char why[256] = "no probe made";

    for (;;) {
        int status = 0;
        if (m->pid <= 0) {
            harness_err("%s (127.0.0.1:%d) is not running", m->name, m->client_port);
            return -1;
        }
        if (member_reap_nohang(m, &status)) {
            char desc[96];
            describe_status(status, desc, sizeof(desc));
            harness_err("%s (127.0.0.1:%d) %s while waiting for it to become healthy; log %s",
                        m->name, m->client_port, desc, m->log_path);
            print_log_tail(m);
            return -1;
        }
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        if (health_probe(m->client_port, left < HEALTH_PROBE_MS ? (int)left : HEALTH_PROBE_MS, why,
                         sizeof(why)) == 1)
            return 0;
        left = deadline - now_ms();
        if (left <= 0)
            break;
        sleep_ms(left < POLL_INTERVAL_MS ? (int)left : POLL_INTERVAL_MS);
    }
    harness_err("%s (127.0.0.1:%d, pid %d) not healthy before the deadline; last probe: %s",
                m->name, m->client_port, (int)m->pid, why);
    print_log_tail(m);
    return -1;
}

int etcd_member_wait_healthy(struct etcd_cluster *c, size_t i, int timeout_ms)
{
    if (!member_index_ok(c, i, "wait healthy"))
        return -1;
    return member_wait_until(c, i, now_ms() + (timeout_ms > 0 ? timeout_ms : 0));
}

static int make_temp_dir(struct etcd_cluster *c)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    int w = snprintf(c->dir, sizeof(c->dir), "%s/" DIR_MARKER "XXXXXX", tmp);
    /* Leave room for "/mN.etcd" and "/mN.log" below. */
    if (w < 0 || (size_t)w >= sizeof(c->dir) - 32) {
        harness_err("temp dir path under %s is too long", tmp);
        c->dir[0] = '\0';
        return -1;
    }
    if (!mkdtemp(c->dir)) {
        harness_err("mkdtemp %s: %s", c->dir, strerror(errno));
        c->dir[0] = '\0';
        return -1;
    }
    return 0;
}

/* One attempt at starting the cluster described by c (ports picked here). */
static int cluster_start_once(struct etcd_cluster *c, bool *port_clash)
{
    int ports[2 * ETCD_MAX_MEMBERS];
    size_t used = 0;

    *port_clash = false;
    if (pick_ports(ports, 2 * c->n) != 0)
        return -1;
    c->endpoints[0] = '\0';
    for (size_t k = 0; k < c->n; k++) {
        struct etcd_member *m = &c->m[k];
        m->client_port = ports[2 * k];
        m->peer_port = ports[2 * k + 1];
        int w = snprintf(c->endpoints + used, sizeof(c->endpoints) - used, "%s127.0.0.1:%d",
                         k ? "," : "", m->client_port);
        used += (size_t)w;
    }
    for (size_t k = 0; k < c->n; k++) {
        if (member_spawn(c, k, "new") != 0)
            return -1;
    }
    /* Members of a multi-member cluster only become healthy together: wait on one deadline. */
    long long deadline = now_ms() + START_TIMEOUT_MS;
    for (size_t k = 0; k < c->n; k++) {
        if (member_wait_until(c, k, deadline) != 0) {
            for (size_t j = 0; j < c->n; j++) {
                if (log_contains(&c->m[j], "address already in use"))
                    *port_clash = true;
            }
            return -1;
        }
    }
    return 0;
}

static void kill_and_reap_all(struct etcd_cluster *c)
{
    for (size_t k = 0; k < c->n && k < ETCD_MAX_MEMBERS; k++) {
        if (c->m[k].pid > 0) {
            if (kill(c->m[k].pid, SIGKILL) != 0 && errno != ESRCH)
                harness_err("kill %s pid %d: %s", c->m[k].name, (int)c->m[k].pid, strerror(errno));
            member_reap_blocking(&c->m[k]);
        }
    }
}

int etcd_cluster_start(struct etcd_cluster *c, size_t n)
{
    static unsigned serial;

    if (!c) {
        harness_err("start: cluster is NULL");
        return -1;
    }
    memset(c, 0, sizeof(*c));
    if (n < 1 || n > ETCD_MAX_MEMBERS) {
        harness_err("start: %zu members requested, supported 1..%d", n, ETCD_MAX_MEMBERS);
        return -1;
    }
    if (access(etcd_path(), X_OK) != 0) {
        harness_err("start: %s is not executable: %s", etcd_path(), strerror(errno));
        return -1;
    }

    for (int attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
        bool port_clash = false;
        if (make_temp_dir(c) != 0)
            return -1;
        c->n = n;
        snprintf(c->token, sizeof(c->token), "dhaf-test-%d-%u-%s", (int)getpid(), ++serial,
                 strrchr(c->dir, '/') + 1);
        for (size_t k = 0; k < n; k++) {
            struct etcd_member *m = &c->m[k];
            snprintf(m->name, sizeof(m->name), "m%zu", k);
            /* make_temp_dir left room for these suffixes. */
            int wd = snprintf(m->data_dir, sizeof(m->data_dir), "%s/m%zu.etcd", c->dir, k);
            int wl = snprintf(m->log_path, sizeof(m->log_path), "%s/m%zu.log", c->dir, k);
            if (wd < 0 || (size_t)wd >= sizeof(m->data_dir) || wl < 0 ||
                (size_t)wl >= sizeof(m->log_path)) {
                harness_err("start: path under %s too long", c->dir);
                etcd_cluster_stop(c);
                memset(c, 0, sizeof(*c));
                return -1;
            }
        }
        if (cluster_start_once(c, &port_clash) == 0)
            return 0;
        etcd_cluster_stop(c);
        if (!port_clash)
            break;
        /* Another process took a port between our probe bind and etcd's bind: new ports. */
        harness_err("start: port already in use on attempt %d of %d%s", attempt, START_ATTEMPTS,
                    attempt < START_ATTEMPTS ? ", retrying with new ports" : "");
    }
    harness_err("start: could not start a %zu-member etcd cluster", n);
    memset(c, 0, sizeof(*c));
    return -1;
}

int etcd_member_kill(struct etcd_cluster *c, size_t i)
{
    if (!member_index_ok(c, i, "kill"))
        return -1;
    struct etcd_member *m = &c->m[i];
    if (m->pid <= 0)
        return 0;
    if (kill(m->pid, SIGKILL) != 0 && errno != ESRCH) {
        harness_err("kill %s pid %d: %s", m->name, (int)m->pid, strerror(errno));
        return -1;
    }
    member_reap_blocking(m);
    return 0;
}

int etcd_member_stop(struct etcd_cluster *c, size_t i)
{
    if (!member_index_ok(c, i, "stop"))
        return -1;
    struct etcd_member *m = &c->m[i];
    if (m->pid <= 0)
        return 0;
    if (kill(m->pid, SIGTERM) != 0 && errno != ESRCH) {
        harness_err("SIGTERM %s pid %d: %s", m->name, (int)m->pid, strerror(errno));
        return -1;
    }
    long long deadline = now_ms() + STOP_TIMEOUT_MS;
    while (!member_reap_nohang(m, NULL)) {
        if (now_ms() >= deadline) {
            harness_err("%s pid %d ignored SIGTERM for %d ms; sending SIGKILL", m->name,
                        (int)m->pid, STOP_TIMEOUT_MS);
            return etcd_member_kill(c, i);
        }
        sleep_ms(POLL_INTERVAL_MS);
    }
    return 0;
}

/* True when the member's data dir holds a WAL, i.e. the member has joined before. */
static bool data_dir_has_wal(const struct etcd_member *m)
{
    char wal_dir[600];
    snprintf(wal_dir, sizeof(wal_dir), "%s/member/wal", m->data_dir);
    DIR *d = opendir(wal_dir);
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        found = len > 4 && strcmp(de->d_name + len - 4, ".wal") == 0;
    }
    closedir(d);
    return found;
}

int etcd_member_restart(struct etcd_cluster *c, size_t i)
{
    if (!member_index_ok(c, i, "restart"))
        return -1;
    struct etcd_member *m = &c->m[i];
    if (m->pid > 0 && etcd_member_stop(c, i) != 0)
        return -1;
    const char *state = data_dir_has_wal(m) ? "existing" : "new";
    if (member_spawn(c, i, state) != 0)
        return -1;
    if (member_wait_until(c, i, now_ms() + START_TIMEOUT_MS) != 0) {
        harness_err("restart %s (initial-cluster-state %s) failed", m->name, state);
        etcd_member_kill(c, i);
        return -1;
    }
    return 0;
}

/* Runs etcdctl with argv (NULL-terminated, borrowed) after the harness's global flags. */
static int run_ctl(struct etcd_cluster *c, char *out, size_t outlen, char *const *args)
{
    char endpoints_flag[300] = "--endpoints=";
    char user_flag[160];
    char *argv[CTL_MAX_ARGS + 8];
    size_t argc = 0, nargs = 0;
    int rc = -1;
    int pipe_fds[2] = {-1, -1};
    char **env = NULL;
    size_t got = 0;
    bool any = false;

    if (out && outlen)
        out[0] = '\0';
    for (size_t k = 0; k < c->n; k++) {
        if (c->m[k].pid <= 0)
            continue;
        size_t len = strlen(endpoints_flag);
        snprintf(endpoints_flag + len, sizeof(endpoints_flag) - len, "%s127.0.0.1:%d",
                 any ? "," : "", c->m[k].client_port);
        any = true;
    }
    if (!any) {
        harness_err("etcdctl: no member is running");
        return -1;
    }
    while (args[nargs])
        nargs++;
    if (nargs > CTL_MAX_ARGS) {
        harness_err("etcdctl: too many arguments (%zu > %d)", nargs, CTL_MAX_ARGS);
        return -1;
    }

    argv[argc++] = (char *)etcdctl_path();
    argv[argc++] = endpoints_flag;
    if (c->user[0]) {
        snprintf(user_flag, sizeof(user_flag), "--user=%s:%s", c->user, c->password);
        argv[argc++] = user_flag;
    }
    for (size_t k = 0; k < nargs; k++)
        argv[argc++] = args[k];
    argv[argc] = NULL;

    env = build_env("ETCDCTL_", "ETCDCTL_API=3");
    if (!env)
        goto out;
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
        harness_err("etcdctl: pipe: %s", strerror(errno));
        goto out;
    }
    pid_t pid = spawn(argv[0], argv, env, pipe_fds[1], -1);
    close(pipe_fds[1]);
    pipe_fds[1] = -1;
    if (pid < 0)
        goto out;

    /* Drain all of stdout (even past outlen) so etcdctl never blocks on a full pipe. */
    long long deadline = now_ms() + CTL_TIMEOUT_MS;
    bool timed_out = false;
    for (;;) {
        char buf[4096];
        struct pollfd pfd = {.fd = pipe_fds[0], .events = POLLIN};
        long long left = deadline - now_ms();
        int pr = left > 0 ? poll(&pfd, 1, (int)left) : 0;
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            timed_out = true;
            break;
        }
        ssize_t r = read(pipe_fds[0], buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (out && outlen > got + 1) {
            size_t take = (size_t)r < outlen - 1 - got ? (size_t)r : outlen - 1 - got;
            memcpy(out + got, buf, take);
            got += take;
            out[got] = '\0';
        }
    }
    if (timed_out) {
        harness_err("etcdctl %s ... did not finish in %d ms; killing it", args[0] ? args[0] : "",
                    CTL_TIMEOUT_MS);
        kill(pid, SIGKILL);
    }
    int status = 0;
    pid_t r;
    do {
        r = waitpid(pid, &status, 0);
    } while (r == -1 && errno == EINTR);
    if (r == -1) {
        harness_err("etcdctl: waitpid %d: %s", (int)pid, strerror(errno));
        goto out;
    }
    if (timed_out)
        goto out;
    if (WIFEXITED(status)) {
        rc = WEXITSTATUS(status);
    } else {
        char desc[96];
        describe_status(status, desc, sizeof(desc));
        harness_err("etcdctl %s ...: %s", args[0] ? args[0] : "", desc);
    }
out:
    if (pipe_fds[0] >= 0)
        close(pipe_fds[0]);
    if (pipe_fds[1] >= 0)
        close(pipe_fds[1]);
    free(env);
    return rc;
}

int etcd_cluster_ctl(struct etcd_cluster *c, char *out, size_t outlen, const char *fmt, ...)
{
    char line[CTL_ARGS_MAX_LEN];
    char *args[CTL_MAX_ARGS + 1];
    size_t nargs = 0;

    if (out && outlen)
        out[0] = '\0';
    if (!c || !fmt || c->n == 0) {
        harness_err("etcdctl: no cluster");
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= sizeof(line)) {
        harness_err("etcdctl: arguments longer than %d bytes", CTL_ARGS_MAX_LEN - 1);
        return -1;
    }
    /* No shell and no quoting: every space separates two arguments. */
    for (char *save = NULL, *tok = strtok_r(line, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        if (nargs == CTL_MAX_ARGS) {
            harness_err("etcdctl: more than %d arguments", CTL_MAX_ARGS);
            return -1;
        }
        args[nargs++] = tok;
    }
    args[nargs] = NULL;
    return run_ctl(c, out, outlen, args);
}

int etcd_cluster_enable_auth(struct etcd_cluster *c, const char *root_password)
{
    char pw_flag[128];
    char out[512];

    if (!c || c->n == 0 || !root_password || !*root_password) {
        harness_err("enable auth: need a started cluster and a non-empty root password");
        return -1;
    }
    if (strlen(root_password) >= sizeof(c->password)) {
        harness_err("enable auth: root password longer than %zu bytes", sizeof(c->password) - 1);
        return -1;
    }
    /* --new-user-password avoids the interactive prompt and allows ':' in the password. */
    snprintf(pw_flag, sizeof(pw_flag), "--new-user-password=%s", root_password);
    char *add[] = {"user", "add", "root", pw_flag, NULL};
    int rc = run_ctl(c, out, sizeof(out), add);
    if (rc != 0) {
        harness_err("enable auth: etcdctl user add root failed (exit %d): %s", rc, out);
        return -1;
    }
    /* etcdctl auth enable would grant it too, but only after a logged FailedPrecondition. */
    char *grant[] = {"user", "grant-role", "root", "root", NULL};
    rc = run_ctl(c, out, sizeof(out), grant);
    if (rc != 0) {
        harness_err("enable auth: etcdctl user grant-role root root failed (exit %d): %s", rc, out);
        return -1;
    }
    char *enable[] = {"auth", "enable", NULL};
    rc = run_ctl(c, out, sizeof(out), enable);
    if (rc != 0) {
        harness_err("enable auth: etcdctl auth enable failed (exit %d): %s", rc, out);
        return -1;
    }
    snprintf(c->user, sizeof(c->user), "root");
    snprintf(c->password, sizeof(c->password), "%s", root_password);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int r = flag == FTW_DP ? rmdir(path) : unlink(path);
    if (r != 0 && errno != ENOENT)
        harness_err("remove %s: %s", path, strerror(errno));
    return 0;
}

void etcd_cluster_stop(struct etcd_cluster *c)
{
    if (!c)
        return;
    if (c->n > ETCD_MAX_MEMBERS)
        c->n = ETCD_MAX_MEMBERS;
    kill_and_reap_all(c);
    /* Only ever remove a directory this harness made with mkdtemp. */
    if (c->dir[0] == '/' && strstr(c->dir, "/" DIR_MARKER))
        nftw(c->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    c->dir[0] = '\0';
    c->user[0] = '\0';
    c->password[0] = '\0';
}
