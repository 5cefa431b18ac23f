/* SPDX-License-Identifier: MIT */
/* Test helpers around the Python fakes and other child processes (see fake_proc.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_proc.h"

extern char **environ;

#define STOP_TIMEOUT_MS 5000
#define MAX_ARGS        64
#define TMP_PREFIX      "/tmp/dhaf-"

int64_t test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void test_sleep_ms(int ms)
{
    poll(NULL, 0, ms);
}

/* Reaps pid; SIGKILLs it first when it is still there after timeout_ms. */
static void reap(pid_t pid, int timeout_ms)
{
    int64_t deadline = test_now_ms() + timeout_ms;
    while (waitpid(pid, NULL, WNOHANG) == 0) {
        if (test_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return;
        }
        test_sleep_ms(20);
    }
}

/* Reads from fd into line until a newline, EOF, a full buffer or the deadline; NUL-terminates. */
static void read_line(int fd, char *line, size_t size, int64_t deadline)
{
    size_t got = 0;
    while (!memchr(line, '\n', got) && got < size - 1) {
        int64_t now = test_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
            break;
        ssize_t r = read(fd, line + got, size - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    line[got] = '\0';
}

int fake_proc_start(struct fake_proc *p, const char *const argv[], const char *const extra[],
                    int timeout_ms)
{
    const char *all[MAX_ARGS + 1];
    size_t n = 0;
    int out[2], in[2];
    char line[128];

    memset(p, 0, sizeof(*p));
    for (; argv[n] && n < MAX_ARGS; n++)
        all[n] = argv[n];
    for (; extra && *extra && n < MAX_ARGS; extra++)
        all[n++] = *extra;
    all[n] = NULL;
    if (pipe2(out, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(in, O_CLOEXEC) != 0) {
        close(out[0]);
        close(out[1]);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    int rc = posix_spawnp(&p->pid, all[0], &fa, NULL, (char *const *)all, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    close(in[0]);
    if (rc != 0) {
        fprintf(stderr, "cannot run %s: %s\n", all[0], strerror(rc));
        close(out[0]);
        close(in[1]);
        p->pid = 0;
        return -1;
    }
    p->stdin_fd = in[1];

    read_line(out[0], line, sizeof(line), test_now_ms() + timeout_ms);
    close(out[0]);
    if (sscanf(line, "LISTENING %d", &p->port) != 1 || p->port <= 0) {
        fprintf(stderr, "%s did not start: \"%s\"\n", n > 1 ? all[1] : all[0], line);
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        close(p->stdin_fd);
        memset(p, 0, sizeof(*p));
        return -1;
    }
    return 0;
}

void fake_proc_stop(struct fake_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    reap(p->pid, STOP_TIMEOUT_MS);
    close(p->stdin_fd);
    p->pid = 0;
    p->stdin_fd = -1;
}

void fake_script(char *buf, size_t size, const char *env, const char *name)
{
    const char *from_env = env ? getenv(env) : NULL;
    if (from_env) {
        snprintf(buf, size, "%s", from_env);
        return;
    }
    snprintf(buf, size, "%s", __FILE__); /* tests/common/fake_proc.c */
    char *slash = strrchr(buf, '/');
    if (slash) {
        snprintf(slash, size - (size_t)(slash - buf), "/../fakes/%s", name);
        if (access(buf, R_OK) == 0)
            return;
    }
    snprintf(buf, size, "fakes/%s", name);
}

int test_tmpdir(char *buf, size_t size, const char *tag)
{
    if ((size_t)snprintf(buf, size, TMP_PREFIX "%s-XXXXXX", tag) >= size || !mkdtemp(buf)) {
        fprintf(stderr, "cannot make a temp dir %s: %s\n", buf, strerror(errno));
        return -1;
    }
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if ((flag == FTW_DP ? rmdir(path) : unlink(path)) != 0 && errno != ENOENT)
        fprintf(stderr, "cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

int test_rmrf(const char *path)
{
    if (strncmp(path, TMP_PREFIX, strlen(TMP_PREFIX)) != 0 || strstr(path, "/..")) {
        fprintf(stderr, "test_rmrf: refusing to remove %s (not under " TMP_PREFIX ")\n", path);
        return -1;
    }
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 && errno != ENOENT)
        return -1;
    return 0;
}

int test_run(const char *const argv[], char *out, size_t size)
{
    int pipefd[2] = {-1, -1};
    pid_t pid;
    int status = 0;
    posix_spawn_file_actions_t fa;

    if (out && pipe2(pipefd, O_CLOEXEC) != 0)
        return -1;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out) {
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    } else {
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    }
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (out) {
        close(pipefd[1]);
        size_t got = 0;
        char chunk[4096];
        ssize_t r;
        /* read to EOF (the child's end of the pipe closes when it exits), keeping what fits */
        while (rc == 0 &&
               ((r = read(pipefd[0], chunk, sizeof(chunk))) > 0 || (r < 0 && errno == EINTR))) {
            size_t keep = r > 0 ? (size_t)r : 0;
            if (keep > size - 1 - got)
                keep = size - 1 - got;
            memcpy(out + got, chunk, keep);
            got += keep;
        }
        out[got] = '\0';
        close(pipefd[0]);
    }
    if (rc != 0)
        return -1;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int test_make_cert(const char *cert, const char *key, const char *cn, const char *san)
{
    char subj[256], ext[512], out[4096];
    snprintf(subj, sizeof(subj), "/CN=%s", cn);
    snprintf(ext, sizeof(ext), "subjectAltName=%s", san);
    const char *const argv[] = {"openssl",
                                "req",
                                "-x509",
                                "-newkey",
                                "ec",
                                "-pkeyopt",
                                "ec_paramgen_curve:prime256v1",
                                "-nodes",
                                "-keyout",
                                key,
                                "-out",
                                cert,
                                "-days",
                                "2",
                                "-subj",
                                subj,
                                "-addext",
                                ext,
                                NULL};
    if (test_run(argv, out, sizeof(out)) != 0) {
        fprintf(stderr, "openssl could not make a test certificate:\n%s\n", out);
        return -1;
    }
    return 0;
}

int test_bind(const char *ip, int backlog, int *port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, ip, &s6->sin6_addr) != 1)
            return -1;
        sl = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1)
            return -1;
        sl = sizeof(*s4);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || (backlog >= 0 && listen(fd, backlog) != 0) ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                     : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int test_free_port(const char *ip)
{
    int port;
    int fd = test_bind(ip, -1, &port);
    if (fd < 0)
        return -1;
    close(fd);
    return port;
}

/* Reads fd to EOF into a malloc'd, NUL-terminated buffer; *len gets its length. */
static char *read_all(int fd, size_t *len)
{
    size_t cap = 1 << 16, got = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;
    if (!buf)
        abort();
    while ((r = read(fd, buf + got, cap - got)) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
        if (got == cap) {
            cap *= 2;
            if (!(buf = realloc(buf, cap + 1)))
                abort();
        }
    }
    buf[got] = '\0';
    if (len)
        *len = got;
    return buf;
}

char *test_read_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *text = read_all(fd, NULL);
    close(fd);
    return text;
}

char *test_http(const char *ip, int port, const char *method, const char *target, const char *body,
                int *status)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    size_t blen = body ? strlen(body) : 0;
    if (status)
        *status = 0;
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return NULL;
    }
    char head[1024];
    int hlen = snprintf(head, sizeof(head),
                        "%s %s HTTP/1.0\r\nHost: fake\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\n\r\n",
                        method, target, blen);
    if (hlen < 0 || (size_t)hlen >= sizeof(head) ||
        send(fd, head, (size_t)hlen, MSG_NOSIGNAL) != hlen ||
        (blen && send(fd, body, blen, MSG_NOSIGNAL) != (ssize_t)blen)) {
        close(fd);
        return NULL;
    }
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char *reply = read_all(fd, NULL);
    close(fd);
    int code = 0;
    if (status && sscanf(reply, "HTTP/%*d.%*d %d", &code) == 1)
        *status = code;
    char *sep = strstr(reply, "\r\n\r\n");
    if (sep)
        memmove(reply, sep + 4, strlen(sep + 4) + 1);
    else
        reply[0] = '\0';
    return reply;
}

int test_stderr_begin(struct test_stderr *c, const char *path)
{
    c->saved = -1;
    snprintf(c->path, sizeof(c->path), "%s", path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    fflush(stderr);
    c->saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    if (c->saved < 0 || dup2(fd, STDERR_FILENO) != STDERR_FILENO) {
        if (c->saved >= 0)
            close(c->saved);
        c->saved = -1;
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

char *test_stderr_end(struct test_stderr *c)
{
    if (c->saved >= 0) {
        fflush(stderr);
        dup2(c->saved, STDERR_FILENO);
        close(c->saved);
        c->saved = -1;
    }
    char *text = test_read_file(c->path);
    unlink(c->path);
    if (!text && !(text = calloc(1, 1)))
        abort();
    return text;
}
