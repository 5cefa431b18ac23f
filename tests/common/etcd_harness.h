/* SPDX-License-Identifier: MIT */
/* Test harness: starts and controls real etcd servers (1..3 members) on loopback for tests. */
#ifndef DHAF_TESTS_ETCD_HARNESS_H
#define DHAF_TESTS_ETCD_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Usage:
 *
 *     struct etcd_cluster c;
 *     if (etcd_cluster_start(&c, 3) != 0)
 *         fail();
 *     etcd_cluster_ctl(&c, out, sizeof(out), "put k v");
 *     etcd_member_kill(&c, 0);
 *     etcd_member_restart(&c, 0);
 *     etcd_cluster_stop(&c);
 *
 * Every member runs /usr/bin/etcd (override with $DHAF_TEST_ETCD; etcdctl with $DHAF_TEST_ETCDCTL)
 * with its stdout/stderr in <dir>/<name>.log, on free loopback ports, with fast raft timing
 * (heartbeat 25 ms, election 250 ms). Members get PR_SET_PDEATHSIG(SIGKILL): they die with the
 * thread that started them, so call the harness from the test's main thread. Synchronization is
 * by polling with deadlines (GET /health on the client port), never by fixed sleeps. In etcd 3.4
 * /health is "true" only once a quorum read went through raft, so a healthy member has a live
 * leader.
 *
 * Each member preallocates and fsyncs a 64 MB WAL at first start; three members doing that at
 * once on a slow disk take 1-2 s. TMPDIR=/dev/shm makes it ~0.15 s if memory allows.
 * A test killed with SIGKILL leaves its temp dir (named dhaf-etcd-*) behind; its etcds still die.
 *
 * All functions print a message naming what failed on stderr before returning an error; when a
 * member dies while the harness waits for it, the tail of its log is printed too.
 * The harness is not thread-safe; it reaps its children with waitpid() on their own pids only
 * (it installs no SIGCHLD handler and never waits for other children of the test).
 */

#define ETCD_MAX_MEMBERS 3

struct etcd_member {
    pid_t pid;          /* 0 when not running (never started, killed, stopped, exited) */
    int client_port;    /* http://127.0.0.1:client_port */
    int peer_port;      /* http://127.0.0.1:peer_port */
    char name[32];      /* "m0", "m1", ... */
    char data_dir[512]; /* <dir>/<name>.etcd */
    char log_path[512]; /* <dir>/<name>.log, appended to across restarts */
};

struct etcd_cluster {
    size_t n;
    struct etcd_member m[ETCD_MAX_MEMBERS];
    char dir[512];       /* temp dir holding data dirs and logs; removed by etcd_cluster_stop */
    char endpoints[256]; /* "127.0.0.1:p1,127.0.0.1:p2,..." (client ports of all members) */
    char user[64], password[64]; /* set once auth is enabled (root user) */
    char token[96];              /* --initial-cluster-token, unique per cluster */
};

/**
 * Starts an n-member cluster (1 <= n <= ETCD_MAX_MEMBERS) in a fresh temp dir under $TMPDIR (or
 * /tmp) and waits (up to 10 s) until every member answers /health with "true". *c is
 * overwritten; it is caller-owned and must be released with etcd_cluster_stop() (also after a
 * failed start, which is harmless). Each member preallocates a 64 MB WAL in the temp dir.
 * Returns 0, or -1 with a message on stderr (everything started so far is already cleaned up).
 */
int etcd_cluster_start(struct etcd_cluster *c, size_t n);

/** Sends SIGKILL to member i and reaps it. Returns 0 (also if it was not running) or -1. */
int etcd_member_kill(struct etcd_cluster *c, size_t i);

/**
 * Sends SIGTERM to member i, waits up to 10 s for it to exit, then SIGKILLs it; always reaps.
 * Returns 0 (also if it was not running) or -1.
 */
int etcd_member_stop(struct etcd_cluster *c, size_t i);

/**
 * Starts member i again with the same name, ports and data dir (--initial-cluster-state existing
 * when the data dir already holds a WAL, new otherwise) and waits up to 10 s until it answers
 * /health with "true". A running member is stopped first. Returns 0 or -1.
 */
int etcd_member_restart(struct etcd_cluster *c, size_t i);

/**
 * Polls GET http://127.0.0.1:<client_port>/health every 20 ms until it reports "health":"true"
 * or timeout_ms passes. Fails early (with the log tail) if the member process exits.
 * Returns 0 or -1.
 */
int etcd_member_wait_healthy(struct etcd_cluster *c, size_t i, int timeout_ms);

/**
 * Adds the user root with root_password (borrowed; passed to etcdctl as one argument, so it may
 * contain spaces but must fit c->password), enables auth, and records root/root_password in
 * c->user/c->password so that later etcd_cluster_ctl() calls pass --user. Returns 0 or -1.
 */
int etcd_cluster_enable_auth(struct etcd_cluster *c, const char *root_password);

/**
 * Runs `etcdctl --endpoints=<live members> [--user root:pw] <args>` with ETCDCTL_API=3 and
 * without a shell. The printf-formatted args are split on spaces (runs of spaces count as one;
 * there is no quoting, so an argument cannot contain a space). Only the endpoints of members that
 * are running (pid != 0) are passed; do not pass --endpoints again (etcdctl appends repeated
 * --endpoints flags instead of replacing them). etcdctl's stdout is captured into out (may be NULL
 * when outlen is 0), NUL-terminated and truncated to outlen - 1 bytes; its stderr goes to the
 * test's stderr. etcdctl is killed if it runs longer than 30 s. Returns etcdctl's exit code (0 =
 * success), or -1 if it could not be run or was killed.
 */
int etcd_cluster_ctl(struct etcd_cluster *c, char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/**
 * Kills all members, reaps them and removes c->dir recursively. Safe to call twice, after kills,
 * and after a failed etcd_cluster_start().
 */
void etcd_cluster_stop(struct etcd_cluster *c);

#endif
