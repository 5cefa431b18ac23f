/* SPDX-License-Identifier: MIT */
/* Test helpers shared by the unit tests that run the Python fakes of tests/fakes/ (and other
 * child processes): start a fake and wait for its "LISTENING <port>" line, stop it, find its
 * script, temp dirs, certificates made with the openssl CLI, free ports, commands run to their
 * end, one plain HTTP request, and stderr captured in a file.
 *
 *     struct fake_proc f;
 *     const char *const argv[] = {FAKE_PYTHON, script, "--port", "0", "--watch-stdin", NULL};
 *     if (fake_proc_start(&f, argv, NULL, FAKE_START_TIMEOUT_MS) != 0)
 *         fail();
 *     ... talk to 127.0.0.1:f.port ...
 *     fake_proc_stop(&f);
 *
 * Nothing here depends on cmocka: every function returns an error (with a message on stderr
 * where it says so) and the tests assert on it. Not thread-safe; children are reaped by pid. */
#ifndef DHAF_TESTS_FAKE_PROC_H
#define DHAF_TESTS_FAKE_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FAKE_PYTHON           "/usr/bin/python3"
#define FAKE_START_TIMEOUT_MS 20000

/* A child process that serves on a port it announced with "LISTENING <port>". */
struct fake_proc {
    pid_t pid;    /* 0 when not running */
    int stdin_fd; /* the write end of its stdin: closing it (or our death) ends a fake run
                   * with --watch-stdin */
    int port;     /* from its LISTENING line */
};

/* Spawns argv (argv[0] is looked up in PATH) followed by the NULL-terminated extra (may be
 * NULL), with stdin and stdout on pipes, and waits up to timeout_ms for its first line, which
 * must be "LISTENING <port>". Returns 0; or -1 with a message (and what it printed) on stderr,
 * the process killed and reaped and *p zeroed. */
int fake_proc_start(struct fake_proc *p, const char *const argv[], const char *const extra[],
                    int timeout_ms);

/* SIGTERM, then SIGKILL when it is not gone within 5 s; reaps it and closes its stdin. Does
 * nothing when it is not running; safe to call twice. */
void fake_proc_stop(struct fake_proc *p);

/* The path of the fake tests/fakes/<name> into buf: $env when that is set, else the file next
 * to this source tree (__FILE__ is absolute in a CMake build), else "fakes/<name>" (ctest runs
 * the unit tests in tests/). */
void fake_script(char *buf, size_t size, const char *env, const char *name);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t test_now_ms(void);

void test_sleep_ms(int ms);

/* Makes a fresh directory /tmp/dhaf-<tag>-XXXXXX and writes its path into buf. 0 or -1. */
int test_tmpdir(char *buf, size_t size, const char *tag);

/* Removes path and everything below it (symlinks are removed, never followed). Only paths
 * under /tmp/dhaf- are touched (as test_tmpdir makes them); returns 0 or -1. */
int test_rmrf(const char *path);

/* Runs argv (argv[0] looked up in PATH) to its end with stdin on /dev/null. Its stdout and
 * stderr go to out (NUL-terminated, truncated to size - 1 bytes) or, when out is NULL, to
 * /dev/null. Returns its exit status, or -1 when it could not run or was killed by a signal. */
int test_run(const char *const argv[], char *out, size_t size);

/* A self-signed certificate and its (unencrypted, EC P-256) key, made with the openssl CLI,
 * valid for 2 days: subject CN=cn, subjectAltName san (e.g. "DNS:foo.test,IP:127.0.0.1").
 * Returns 0, or -1 with openssl's output on stderr. */
int test_make_cert(const char *cert, const char *key, const char *cn, const char *san);

/* A socket bound to ip (IPv4 or IPv6 text) on a free port, listening with backlog when
 * backlog >= 0; the port goes to *port. Returns the fd (close-on-exec) or -1. */
int test_bind(const char *ip, int backlog, int *port);

/* A port on ip where nothing listens: bound once by us, then closed. The port, or -1. */
int test_free_port(const char *ip);

/* The whole contents of a file (caller frees), or NULL when it cannot be read. */
char *test_read_file(const char *path);

/* One HTTP/1.0 request to ip:port (IPv4), independent of the code under test: method, target
 * ("/path?query"), an optional body sent as application/json, replies read for up to 10 s.
 * Returns the reply's body (caller frees) and its status in *status (may be NULL; 0 when there
 * was no status line); NULL when it could not connect or send. */
char *test_http(const char *ip, int port, const char *method, const char *target, const char *body,
                int *status);

/* Our stderr redirected into a file, to search what the code under test logged. */
struct test_stderr {
    int saved; /* the original stderr; -1 when not capturing */
    char path[256];
};

/* Sends stderr (fd 2) to path (created or truncated) from now on. 0 or -1. */
int test_stderr_begin(struct test_stderr *c, const char *path);

/* Restores stderr and returns what was written to the file meanwhile (caller frees; "" when
 * nothing), which is removed. */
char *test_stderr_end(struct test_stderr *c);

#endif
