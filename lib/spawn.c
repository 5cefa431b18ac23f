/* SPDX-License-Identifier: MIT */
/* Running programs concurrently with posix_spawn: output capture, deadlines, group kill, reap;
 * at a deadline or a cancel, descendants that left the group (setsid) are found by a mark in
 * their environment and killed too, and this process is a child subreaper so that orphans
 * come back to be reaped. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dhaf/clock.h"
#include "dhaf/alloc.h"
#include "dhaf/err.h"
#include "dhaf/log.h"
#include "dhaf/spawn.h"
#include "dhaf/valid.h"

/* A child's exit usually shows as EOF on its pipe first; this tick also catches an exit
 * whose pipe stays open (a background grandchild holds it). */
#define TICK_OPEN_MS 20
/* Right after EOF or a kill the exit is imminent: sweep often, for a while. */
#define TICK_SOON_MS 1
#define SOON_FOR_MS  50
/* Descendants that left the process group (setsid, setpgid, a double fork) are found by a
 * mark in their environment, inherited from the child: every process carrying the run's mark
 * is killed when the run ends. Scans of /proc repeat this often while some were found. */
#define MARK_VAR    "DHAF_SPAWN_ID"
#define SCAN_MS     10
#define ENVIRON_MAX (1024 * 1024) /* bytes of a process's environment searched for the mark */
#define ZOMBIE_AGE  1000          /* ms an adopted zombie nobody reaped waits for its owner */
#define ZOMBIES_MAX 64
/* Reads per poll wake-up per child, so one chatty child does not starve the others. */
#define READS_PER_WAKE 4
/* Reads of what is left in the pipe once the child is gone. */
#define READS_AT_EXIT 16

enum run_state {
    RUN_DONE,    /* ended and reaped (or left behind): outputs final */
    RUN_RUNNING, /* started, not reaped yet */
    RUN_GROUP,   /* reaped; waiting for the rest of its group that became our children */
};

/* Bookkeeping of one child during dhaf_spawn_run_all(). */
struct run {
    enum run_state state;
    int fd;         /* read end of the output pipe, non-blocking; -1 once closed */
    int64_t eof_ms; /* when the pipe reached EOF; 0 = not yet */
    bool killed;    /* its deadline passed (or cancel fired) and the group got SIGKILL */
    bool cancelled; /* killed because cancel fired */
    int64_t start_ms, deadline_ms;
    int64_t kill_ms; /* when its group was last killed: the grace period starts there */
    char mark[64];   /* MARK_VAR=<our pid>.<seq>: in its environment and its descendants' */
    uint64_t seq;
    char **envp;        /* the child's environment with mark added */
    int64_t scan_ms;    /* next scan for marked descendants; 0 = none due */
    pid_t *killed_pids; /* marked descendants killed, until they are reaped or gone */
    size_t n_killed, cap_killed;
    size_t found;  /* marked processes the last scan found */
    bool scanning; /* its scan is due in the current pass */
};

/* Children that did not die within the grace period after SIGKILL: reaped by a later call.
 * pid > 0 is one child, pid < 0 the group -pid. */
#define LEFTOVER_MAX 64
static pthread_mutex_t leftover_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t leftovers[LEFTOVER_MAX];
static size_t n_leftovers;

static void leftover_add(pid_t who, const char *path)
{
    char q[256];
    DHAF_LOG(DHAF_LOG_WARN,
             "event=spawn-leftover %s=%d program=\"%s\" msg=\"still there %d ms after SIGKILL; "
             "reaped later\"",
             who > 0 ? "pid" : "pgid", who > 0 ? (int)who : (int)-who,
             dhaf_log_quote(q, sizeof(q), path), DHAF_SPAWN_KILL_GRACE_MS);
    pthread_mutex_lock(&leftover_mu);
    if (n_leftovers < LEFTOVER_MAX)
        leftovers[n_leftovers++] = who;
    pthread_mutex_unlock(&leftover_mu);
}

/* Reaps what earlier calls left behind, where it has ended by now. */
static void leftover_sweep(void)
{
    pthread_mutex_lock(&leftover_mu);
    for (size_t i = 0; i < n_leftovers;) {
        pid_t w;
        do
            w = waitpid(leftovers[i], NULL, WNOHANG);
        while (w > 0 || (w < 0 && errno == EINTR));
        if (w < 0) /* ECHILD: nothing of it is left */
            leftovers[i] = leftovers[--n_leftovers];
        else
            i++;
    }
    pthread_mutex_unlock(&leftover_mu);
}

/* This process is made a child subreaper at the first run: what a child leaves behind
 * (orphans, a setsid grandchild) is re-parented to us instead of to init, so it can be found,
 * killed and reaped. */
static pthread_once_t adopt_once = PTHREAD_ONCE_INIT;
static bool adopting;
static atomic_uint_fast64_t run_seq;

static void adopt_orphans(void)
{
    adopting = prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
}

/* The rest of the entry of env[0..len) (NUL-separated) that starts with prefix; NULL if none.
 * *rest_len gets its length. */
static const char *env_find(const char *env, size_t len, const char *prefix, size_t *rest_len)
{
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < len;) {
        const char *e = memchr(env + i, '\0', len - i);
        size_t el = e ? (size_t)(e - (env + i)) : len - i;
        if (el >= pl && memcmp(env + i, prefix, pl) == 0) {
            *rest_len = el - pl;
            return env + i + pl;
        }
        i += el + 1;
    }
    return NULL;
}

/* Reads process pid's environment into *buf (grown as needed, at most ENVIRON_MAX bytes);
 * returns its length (0 when it cannot be read: gone, a zombie, not ours to read). */
static size_t read_environ(pid_t pid, char **buf, size_t *cap)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t len = 0;
    for (;;) {
        if (len == *cap) {
            if (*cap >= ENVIRON_MAX)
                break;
            *cap = *cap ? *cap * 2 : 16384;
            *buf = dhaf_xreallocarray(*buf, *cap, 1);
        }
        ssize_t r = read(fd, *buf + len, *cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    return len;
}

/* One pass over /proc for every run whose scan is due: each process (but us) carrying such a
 * run's mark is killed and remembered for reaping (but the run's own child, which
 * finish_child reaps). A run that found some scans again SCAN_MS later. Returns how many runs
 * were scanned for (their `scanning` is set). */
static size_t scan_marked(struct run *runs, const struct dhaf_proc *procs, size_t n, int64_t now)
{
    size_t due = 0;
    for (size_t i = 0; i < n; i++) {
        runs[i].found = 0;
        runs[i].scanning = runs[i].scan_ms && now >= runs[i].scan_ms;
        due += runs[i].scanning;
    }
    if (!due)
        return 0;
    pid_t me = getpid();
    char prefix[48];
    snprintf(prefix, sizeof(prefix), MARK_VAR "=%d.", (int)me);
    char *buf = NULL;
    size_t cap = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char *end, num[24];
        long v = strtol(e->d_name, &end, 10);
        if (*end || v <= 1 || (pid_t)v == me)
            continue;
        pid_t pid = (pid_t)v;
        size_t len = read_environ(pid, &buf, &cap), rl = 0;
        const char *rest = len ? env_find(buf, len, prefix, &rl) : NULL;
        if (!rest || rl == 0 || rl >= sizeof(num))
            continue;
        memcpy(num, rest, rl);
        num[rl] = '\0';
        unsigned long long seq = strtoull(num, &end, 10);
        if (*end)
            continue;
        for (size_t i = 0; i < n; i++) {
            struct run *r = &runs[i];
            if (!r->scanning || r->seq != seq)
                continue;
            kill(pid, SIGKILL);
            r->found++;
            bool known = pid == procs[i].pid;
            for (size_t k = 0; k < r->n_killed && !known; k++)
                known = r->killed_pids[k] == pid;
            if (!known) {
                DHAF_GROW(r->killed_pids, r->n_killed + 1, r->cap_killed);
                r->killed_pids[r->n_killed++] = pid;
            }
            break;
        }
    }
    if (d)
        closedir(d);
    free(buf);
    for (size_t i = 0; i < n; i++)
        if (runs[i].scanning)
            runs[i].scan_ms = runs[i].found ? now + SCAN_MS : 0;
    return due;
}

/* Reaps the killed marked descendants that became our children; forgets those that are gone.
 * Returns how many are still there. */
static size_t reap_killed(struct run *r)
{
    for (size_t i = 0; i < r->n_killed;) {
        pid_t pid = r->killed_pids[i], w;
        do
            w = waitpid(pid, NULL, WNOHANG);
        while (w < 0 && errno == EINTR);
        /* ECHILD: not ours (yet): gone for good, or still below a dying parent of its own */
        if (w == pid || (w < 0 && kill(pid, 0) < 0 && errno == ESRCH))
            r->killed_pids[i] = r->killed_pids[--r->n_killed];
        else
            i++;
    }
    return r->n_killed;
}

/* An adopted process that exited by itself before its run ended stays our zombie: nobody
 * else will reap it. Reaps zombie children of ours that have been zombies for ZOMBIE_AGE ms
 * (a run reaps its own child within a few ms, so those are never touched). At most one
 * scan of /proc a second. */
static pthread_mutex_t zombie_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    pid_t pid;
    int64_t seen_ms;
} zombies[ZOMBIES_MAX];
static size_t n_zombies;
static int64_t zombie_scan_ms;

static void reap_old_zombies(void)
{
    int64_t now = dhaf_mono_ms();
    pthread_mutex_lock(&zombie_mu);
    if (!adopting || now - zombie_scan_ms < 1000) {
        pthread_mutex_unlock(&zombie_mu);
        return;
    }
    zombie_scan_ms = now;
    DIR *d = opendir("/proc");
    pid_t me = getpid();
    size_t n_now = 0;
    pid_t now_z[ZOMBIES_MAX];
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL && n_now < ZOMBIES_MAX) {
        char *end, path[64], st[512];
        long v = strtol(e->d_name, &end, 10);
        if (*end || v <= 1)
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/stat", v);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t k = read(fd, st, sizeof(st) - 1);
        close(fd);
        if (k <= 0)
            continue;
        st[k] = '\0';
        const char *rp = strrchr(st, ')');
        char state;
        int ppid;
        if (rp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && state == 'Z' && ppid == me)
            now_z[n_now++] = (pid_t)v;
    }
    if (d)
        closedir(d);
    /* keep the first sighting of each zombie still there; reap the old ones */
    size_t kept = 0;
    for (size_t i = 0; i < n_now; i++) {
        int64_t seen = now;
        for (size_t j = 0; j < n_zombies; j++)
            if (zombies[j].pid == now_z[i])
                seen = zombies[j].seen_ms;
        if (now - seen >= ZOMBIE_AGE && waitpid(now_z[i], NULL, WNOHANG) == now_z[i])
            continue;
        zombies[kept].pid = now_z[i];
        zombies[kept++].seen_ms = seen;
    }
    n_zombies = kept;
    pthread_mutex_unlock(&zombie_mu);
}

/* Reads what the pipe has now (at most max_reads reads), keeping the first DHAF_PROC_OUT_MAX
 * bytes. Closes the pipe at EOF or on an error. */
static void read_output(struct dhaf_proc *p, struct run *r, int max_reads)
{
    char scratch[4096];
    for (int i = 0; i < max_reads && r->fd >= 0; i++) {
        bool keep = p->out_len < DHAF_PROC_OUT_MAX;
        /* scratch is only written into (the excess output is dropped) */
        // cppcheck-suppress legacyUninitvar
        char *dst = keep ? p->out + p->out_len : scratch;
        size_t room = keep ? DHAF_PROC_OUT_MAX - p->out_len : sizeof(scratch);
        ssize_t k = read(r->fd, dst, room);
        if (k > 0) {
            if (keep) {
                p->out_len += (size_t)k;
                p->out[p->out_len] = '\0';
            } else {
                p->out_truncated = true;
            }
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        r->eof_ms = dhaf_mono_ms();
        close(r->fd);
        r->fd = -1;
    }
}

/* SIGKILL to a child's process group. Never with pgid <= 1: kill(0) or kill(-1) would hit our
 * own group or every process we may signal. */
static void kill_group(pid_t pgid)
{
    if (pgid > 1)
        kill(-pgid, SIGKILL);
}

static void close_output(struct run *r)
{
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
}

/* Makes fd >= 3 (close-on-exec) so that dup2 onto 0-2 in the child never hits itself; a
 * daemon may run with its standard descriptors closed. Returns the fd or -1 with errno. */
static int above_stdio(int fd)
{
    if (fd > 2)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return nfd;
}

static void start_one(struct dhaf_proc *p, struct run *r, const posix_spawnattr_t *attr)
{
    int pfd[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    bool fa_ok = false;
    int rc;

    r->start_ms = dhaf_mono_ms();
    r->deadline_ms = r->start_ms + (p->timeout_ms ? p->timeout_ms : 1);
    if (dhaf_cancel_fired(p->cancel)) {
        p->outcome = DHAF_PROC_CANCELLED;
        r->state = RUN_DONE;
        return;
    }
    r->seq = (uint64_t)atomic_fetch_add(&run_seq, 1);
    snprintf(r->mark, sizeof(r->mark), MARK_VAR "=%d.%llu", (int)getpid(),
             (unsigned long long)r->seq);
    {
        char *const *from = p->envp ? p->envp : environ;
        size_t n = 0, k = 0;
        while (from && from[n])
            n++;
        r->envp = dhaf_xcalloc(n + 2, sizeof(char *));
        r->envp[k++] = r->mark;
        for (size_t i = 0; i < n; i++)
            if (strncmp(from[i], MARK_VAR "=", sizeof(MARK_VAR)) != 0)
                r->envp[k++] = from[i];
    }
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        rc = errno;
        goto out;
    }
    if ((pfd[0] = above_stdio(pfd[0])) < 0 || (pfd[1] = above_stdio(pfd[1])) < 0) {
        rc = errno;
        goto out;
    }
    /* Only our end is non-blocking: the flag lives in the shared file description. */
    if (fcntl(pfd[0], F_SETFL, O_NONBLOCK) != 0) {
        rc = errno;
        goto out;
    }
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        goto out;
    fa_ok = true;
    if ((rc = posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO)) != 0 ||
        (rc = posix_spawn_file_actions_adddup2(&fa, pfd[1], STDERR_FILENO)) != 0 ||
        (rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0)) != 0)
        goto out;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Descriptors someone opened without O_CLOEXEC (a library, a racing thread) stay ours. */
    if ((rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0)
        goto out;
#endif
    rc = posix_spawn(&p->pid, p->path, &fa, attr, p->argv, r->envp);
out:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (pfd[1] >= 0)
        close(pfd[1]);
    if (rc == 0 && p->pid <= 1)
        rc = ECHILD; /* cannot happen; guards the group kills */
    if (rc != 0) {
        if (pfd[0] >= 0)
            close(pfd[0]);
        p->pid = 0;
        p->outcome = DHAF_PROC_NOSTART;
        p->err = rc;
        r->state = RUN_DONE;
        return;
    }
    r->fd = pfd[0];
    r->state = RUN_RUNNING;
}

/* The child has exited (it is a zombie, so its pid and pgid cannot be reused yet): kill the
 * rest of its group, reap it, record how it ended and what is left in the pipe. */
static void finish_child(struct dhaf_proc *p, struct run *r, int64_t now)
{
    int st = 0;
    pid_t w;

    /* What left the group (setsid) is not looked for here: that takes a scan of /proc, too
     * dear after every run of a busy checker; it is adopted (we are a subreaper) and reaped
     * when it ends. Only a run killed at its deadline or cancelled scans (sweep_running). */
    if (!p->keep_group)
        kill_group(p->pid);
    do
        w = waitpid(p->pid, &st, 0);
    while (w < 0 && errno == EINTR);
    if (w != p->pid)
        p->outcome = DHAF_PROC_LOST;
    else if (r->killed)
        p->outcome = r->cancelled ? DHAF_PROC_CANCELLED : DHAF_PROC_TIMEOUT;
    else if (WIFEXITED(st))
        p->outcome = DHAF_PROC_EXITED, p->exit_code = WEXITSTATUS(st);
    else
        p->outcome = DHAF_PROC_SIGNALED, p->signo = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    p->elapsed_ms = (uint32_t)((r->killed ? r->kill_ms : now) - r->start_ms);
    if (r->fd >= 0)
        read_output(p, r, READS_AT_EXIT);
    close_output(r);
    r->kill_ms = now;
    r->state = p->keep_group ? RUN_DONE : RUN_GROUP;
}

/* Notices an exit, a deadline, or a child that ignores SIGKILL. */
static void sweep_running(struct dhaf_proc *p, struct run *r, int64_t now)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    /* WNOWAIT: see the exit without reaping, so the group can still be killed safely. */
    int rc = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    if (rc == 0 && si.si_pid == p->pid) {
        finish_child(p, r, now);
        return;
    }
    if (rc < 0 && errno == ECHILD) { /* reaped behind our back (SIGCHLD ignored) */
        p->outcome = DHAF_PROC_LOST;
        p->elapsed_ms = (uint32_t)(now - r->start_ms);
        close_output(r);
        r->state = RUN_DONE;
        return;
    }
    bool cancel = !r->killed && dhaf_cancel_fired(p->cancel);
    if (!r->killed && (now >= r->deadline_ms || cancel)) {
        kill_group(p->pid);
        kill(p->pid, SIGKILL); /* in case it moved itself to another group */
        r->scan_ms = now;      /* every descendant, in whatever group or session: this pass */
        r->killed = true;
        r->cancelled = cancel;
        r->kill_ms = now;
        return;
    }
    if (r->killed && now - r->kill_ms >= DHAF_SPAWN_KILL_GRACE_MS) {
        leftover_add(p->pid, p->path);
        leftover_add(-p->pid, p->path);
        p->outcome = r->cancelled ? DHAF_PROC_CANCELLED : DHAF_PROC_TIMEOUT;
        p->elapsed_ms = (uint32_t)(r->kill_ms - r->start_ms);
        close_output(r);
        r->state = RUN_DONE;
    }
}

/* Reaps members of the dead child's group that are our children (they were re-parented to
 * us because this process is a child subreaper). Without that, the first call ends it. */
static void sweep_group(struct dhaf_proc *p, struct run *r, int64_t now)
{
    /* Marked descendants outside the group: killed again while more keep turning up (one
     * that was forking when the scan passed), reaped once they are our zombies. */
    bool grace_over = now - r->kill_ms >= DHAF_SPAWN_KILL_GRACE_MS;
    if (reap_killed(r) && !grace_over)
        return;
    for (size_t i = 0; i < r->n_killed; i++)
        leftover_add(r->killed_pids[i], p->path);
    r->n_killed = 0;
    for (;;) {
        pid_t w = waitpid(-p->pid, NULL, WNOHANG);
        if (w > 0)
            continue;
        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0) {
            if (!grace_over)
                return;
            leftover_add(-p->pid, p->path);
        }
        if (r->scan_ms && !grace_over)
            return;
        r->state = RUN_DONE;
        return;
    }
}

static int spawnattr_setup(posix_spawnattr_t *attr)
{
    sigset_t none, all;
    int rc = posix_spawnattr_init(attr);
    if (rc != 0)
        return rc;
    sigemptyset(&none);
    sigfillset(&all);
    /* Our signal mask and ignored signals (SIGPIPE) would otherwise be inherited. */
    if ((rc = posix_spawnattr_setsigmask(attr, &none)) != 0 ||
        (rc = posix_spawnattr_setsigdefault(attr, &all)) != 0 ||
        (rc = posix_spawnattr_setpgroup(attr, 0)) != 0 ||
        (rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF)) != 0)
        posix_spawnattr_destroy(attr);
    return rc;
}

int dhaf_spawn_run_all(struct dhaf_proc *procs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!procs[i].path || !procs[i].argv || !procs[i].argv[0])
            return DHAF_EINVAL;
    pthread_once(&adopt_once, adopt_orphans);
    leftover_sweep();
    reap_old_zombies();
    if (n == 0)
        return 0;

    struct run *runs = dhaf_xcalloc(n, sizeof(*runs));
    struct pollfd *pfds = dhaf_xcalloc(n, sizeof(*pfds));
    size_t *pidx = dhaf_xcalloc(n, sizeof(*pidx));
    posix_spawnattr_t attr;
    int attr_rc = spawnattr_setup(&attr);
    size_t active = 0;

    for (size_t i = 0; i < n; i++) {
        struct dhaf_proc *p = &procs[i];
        p->outcome = DHAF_PROC_NOSTART;
        p->exit_code = p->signo = p->err = 0;
        p->pid = 0;
        p->elapsed_ms = 0;
        p->out[0] = '\0';
        p->out_len = 0;
        p->out_truncated = false;
        runs[i].fd = -1;
        if (attr_rc != 0) {
            p->err = attr_rc;
            continue;
        }
        start_one(p, &runs[i], &attr);
        if (runs[i].state != RUN_DONE)
            active++;
    }
    if (attr_rc == 0)
        posix_spawnattr_destroy(&attr);

    while (active > 0) {
        int64_t now = dhaf_mono_ms();
        int64_t wait = 1000;
        size_t np = 0;
        for (size_t i = 0; i < n; i++) {
            struct run *r = &runs[i];
            if (r->state == RUN_RUNNING) {
                if (r->fd >= 0) {
                    pfds[np] = (struct pollfd){.fd = r->fd, .events = POLLIN};
                    pidx[np++] = i;
                }
                int64_t until = r->killed ? r->kill_ms + DHAF_SPAWN_KILL_GRACE_MS : r->deadline_ms;
                bool soon = (r->killed && now - r->kill_ms < SOON_FOR_MS) ||
                            (r->eof_ms && now - r->eof_ms < SOON_FOR_MS);
                int64_t tick = soon ? TICK_SOON_MS : TICK_OPEN_MS;
                if (until - now < wait)
                    wait = until - now;
                if (tick < wait)
                    wait = tick;
            } else if (r->state == RUN_GROUP && TICK_SOON_MS < wait) {
                wait = TICK_SOON_MS;
            }
        }
        if (wait < 0)
            wait = 0;
        int pr = poll(pfds, np, (int)wait);
        for (size_t k = 0; pr > 0 && k < np; k++)
            if (pfds[k].revents)
                read_output(&procs[pidx[k]], &runs[pidx[k]], READS_PER_WAKE);

        now = dhaf_mono_ms();
        for (size_t i = 0; i < n; i++) {
            struct run *r = &runs[i];
            if (r->state == RUN_DONE)
                continue;
            if (r->state == RUN_RUNNING)
                sweep_running(&procs[i], r, now);
            if (r->state == RUN_GROUP)
                sweep_group(&procs[i], r, now);
            if (r->state == RUN_DONE)
                active--;
        }
        /* One scan of /proc for every run whose descendants are due to be hunted (those that
         * just ended or timed out), then those runs may finish in this same pass. */
        if (scan_marked(runs, procs, n, now)) {
            now = dhaf_mono_ms();
            for (size_t i = 0; i < n; i++) {
                struct run *r = &runs[i];
                if (r->state != RUN_GROUP || !r->scanning)
                    continue;
                sweep_group(&procs[i], r, now);
                if (r->state == RUN_DONE)
                    active--;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(runs[i].envp);
        free(runs[i].killed_pids);
    }
    free(runs);
    free(pfds);
    free(pidx);
    return 0;
}

const char *dhaf_proc_first_line(const struct dhaf_proc *p, char *buf, size_t len)
{
    if (len == 0)
        return NULL;
    buf[0] = '\0';
    const unsigned char *s = (const unsigned char *)p->out, *end = s + p->out_len;
    while (s < end) {
        const unsigned char *eol = memchr(s, '\n', (size_t)(end - s));
        if (!eol)
            eol = end;
        const unsigned char *a = s, *b = eol;
        while (a < b && (*a <= ' ' || *a == 0x7f))
            a++;
        while (b > a && (b[-1] <= ' ' || b[-1] == 0x7f))
            b--;
        if (a < b) {
            size_t k = (size_t)(b - a) < len - 1 ? (size_t)(b - a) : len - 1;
            /* Do not cut a UTF-8 sequence in half. */
            if (k < (size_t)(b - a))
                while (k > 0 && (a[k] & 0xc0) == 0x80)
                    k--;
            for (size_t i = 0; i < k; i++)
                buf[i] = (a[i] < ' ' || a[i] == 0x7f) ? ' ' : (char)a[i];
            buf[k] = '\0';
            return buf;
        }
        s = eol + 1;
    }
    return NULL;
}

const char *dhaf_proc_excerpt(const struct dhaf_proc *p, char *buf, size_t len)
{
    if (len == 0)
        return NULL;
    size_t k = 0;
    bool brk = false, sp = false; /* a line break, a blank or control character pending */
    const unsigned char *s = (const unsigned char *)p->out, *end = s + p->out_len;
    for (; s < end; s++) {
        if (*s == '\n' || *s == '\r') {
            brk |= k > 0;
            continue;
        }
        if (*s <= ' ' || *s == 0x7f) {
            sp |= k > 0;
            continue;
        }
        const char *sep = brk ? " | " : sp ? " " : "";
        size_t n = strlen(sep);
        /* a character's bytes go together (by its lead byte): never half of one */
        size_t c = *s >= 0xf0 ? 4 : *s >= 0xe0 ? 3 : *s >= 0xc0 ? 2 : 1;
        if (c > (size_t)(end - s))
            c = (size_t)(end - s);
        if (k + n + c + 1 > len)
            break;
        memcpy(buf + k, sep, n);
        k += n;
        brk = sp = false;
        memcpy(buf + k, s, c);
        k += c;
        s += c - 1;
    }
    buf[k] = '\0';
    if (!k)
        return NULL;
    /* what is no valid UTF-8 (the program's bytes are only text by convention) becomes '?' */
    char *raw = dhaf_xstrdup(buf);
    dhaf_utf8_clean(buf, len, raw);
    free(raw);
    return buf;
}

const char *dhaf_proc_describe(const struct dhaf_proc *p, char *buf, size_t len)
{
    switch (p->outcome) {
    case DHAF_PROC_EXITED:
        snprintf(buf, len, "exit code %d", p->exit_code);
        break;
    case DHAF_PROC_SIGNALED:
        snprintf(buf, len, "killed by signal %d (%s)", p->signo, strsignal(p->signo));
        break;
    case DHAF_PROC_TIMEOUT:
        if (p->timeout_ms % 1000 == 0)
            snprintf(buf, len, "killed after %u s", (unsigned)(p->timeout_ms / 1000));
        else
            snprintf(buf, len, "killed after %u ms", (unsigned)p->timeout_ms);
        break;
    case DHAF_PROC_CANCELLED:
        if (p->pid)
            snprintf(buf, len, "killed after %u ms: cancelled", (unsigned)p->elapsed_ms);
        else
            snprintf(buf, len, "not started: cancelled");
        break;
    case DHAF_PROC_NOSTART:
        snprintf(buf, len, "could not start: %s", strerror(p->err));
        break;
    case DHAF_PROC_LOST:
    default:
        snprintf(buf, len, "exit status lost");
        break;
    }
    return buf;
}

char **dhaf_env_new(const char *const *names, const char *const *values, size_t n)
{
    size_t ne = 0;
    for (char **e = environ; e && *e; e++)
        ne++;
    char **env = dhaf_xcalloc(ne + n + 1, sizeof(*env));
    size_t k = 0;
    for (char **e = environ; e && *e; e++) {
        bool replaced = false;
        for (size_t i = 0; i < n && !replaced; i++) {
            size_t nl = strlen(names[i]);
            replaced = strncmp(*e, names[i], nl) == 0 && (*e)[nl] == '=';
        }
        if (!replaced)
            env[k++] = dhaf_xstrdup(*e);
    }
    for (size_t i = 0; i < n; i++)
        if (values[i])
            env[k++] = dhaf_xasprintf("%s=%s", names[i], values[i]);
    env[k] = NULL;
    return env;
}

void dhaf_env_free(char **env)
{
    if (!env)
        return;
    for (char **e = env; *e; e++)
        free(*e);
    free(env);
}
