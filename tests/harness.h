/*
 * harness.h - weft's header-only test harness.
 *
 * A test binary is one .c file that includes this header and defines tests:
 *
 *     TEST(spawn_many) { ... ASSERT_EQ(n, 1000); ... }
 *     TEST_TIMEOUT(stress_seeds, 120) { ... }
 *
 * The header provides main() (define HARNESS_NO_MAIN to write your own and
 * call harness_main()). main() runs, in definition order, every registered
 * test whose name contains one of the arguments as a substring (all tests
 * without arguments) and none of the arguments written "!substring", and
 * prints TAP (https://testanything.org) on stdout:
 *
 *     1..3
 *     ok 1 - spawn_many
 *     not ok 2 - timers # test_x.c:40: ASSERT_GE(wake, dl) failed: ...
 *     ok 3 - needs_ipv6 # SKIP no IPv6
 *     # 1 passed, 1 failed, 1 skipped
 *
 * and exits nonzero if any test failed. `-l` as argv[1] lists the test names.
 *
 * Isolation (the model is libuv's test/runner.c): each test runs in a forked
 * child, in a process group of its own, with its stdout and stderr captured
 * in a temporary file that the parent copies out as "# " comment lines when
 * the test fails (always, with HARNESS_VERBOSE=1). The parent waits with a
 * timeout: a test that outlives it (60 s, TEST_TIMEOUT overrides it,
 * the environment variable HARNESS_TIMEOUT_SCALE multiplies it for sanitizer
 * and valgrind runs) is sent SIGQUIT (weft answers with a dump of every
 * coroutine), then SIGKILL 3 s later, and reported as a timeout. A child that
 * dies by a signal is reported with the signal's name.
 *
 * The leak gate runs in the child after the test function returns: every fd
 * open at the end must have been open when the child started, on the same
 * file, and every fd open then must still be (listings of /proc/self/fd
 * are compared, with each fd's device and inode); extra fds fail the test,
 * named with their readlink() targets, and so do closed ones. Tests start and stop their own runtime (weft_main
 * returns only once the runtime is shut down), so a passing test has no live
 * coroutine by construction.
 *
 * Assertions may be used from any thread (a coroutine on any M): the first
 * failure records its message, flushes stdio and ends the child with
 * _exit(HARNESS_EXIT_FAIL). SKIP(reason) ends it with HARNESS_EXIT_SKIP.
 *
 * HARNESS_NOFORK=1 runs the tests in-process, one after the other, without
 * timeouts or leak gate: for gdb. The first failure then ends the binary.
 *
 * Rejected: setjmp/longjmp out of failing assertions (a failure on a
 * coroutine stack or a runtime thread cannot unwind to the runner);
 * alarm() in the child (the runtime's threads may block SIGALRM, and a hung
 * child must be killed from outside anyway); alarm() plus an EINTR'd
 * waitpid() in the parent (the alarm can land just before waitpid blocks,
 * and is lost): the parent blocks SIGCHLD and uses sigtimedwait().
 */
#ifndef WEFT_TESTS_HARNESS_H
#define WEFT_TESTS_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HARNESS_EXIT_FAIL 1
#define HARNESS_EXIT_SKIP 77
#define HARNESS_DEFAULT_TIMEOUT 60
#define HARNESS_MAX_TESTS 512
#define HARNESS_MSG_MAX 2048

/* Every helper is static and may go unused in a given test file. */
#define HARNESS_FN static __attribute__((unused))

typedef void (*harness_fn)(void);

struct harness_test {
    const char *name;
    harness_fn fn;
    unsigned timeout; /* seconds, before scaling */
    int line;         /* definition order */
};

/* Shared between the runner and its children: the reason for a failure or a
 * skip, written by the child, read by the parent. MAP_SHARED anonymous. */
struct harness_shared {
    int claimed; /* atomic: first failure wins */
    char msg[HARNESS_MSG_MAX];
};

static struct harness_test harness_tests[HARNESS_MAX_TESTS];
static int harness_ntests;
static struct harness_shared *harness_shm;
static struct harness_shared harness_shm_local; /* HARNESS_NOFORK */
static __attribute__((unused)) const char *harness_current;

HARNESS_FN void harness_register(const char *name, harness_fn fn, unsigned timeout,
                             int line)
{
    if (harness_ntests == HARNESS_MAX_TESTS) {
        fprintf(stderr, "harness: more than %d tests\n", HARNESS_MAX_TESTS);
        abort();
    }
    harness_tests[harness_ntests++] =
        (struct harness_test){name, fn, timeout, line};
}

#define HARNESS_DEFINE(name, secs)                                            \
    static void harness_test_##name(void);                                    \
    __attribute__((constructor)) static void harness_reg_##name(void)         \
    {                                                                         \
        harness_register(#name, harness_test_##name, (secs), __LINE__);       \
    }                                                                         \
    static void harness_test_##name(void)

/* TEST(name) { body } - a test with the default timeout (60 s). */
#define TEST(name) HARNESS_DEFINE(name, HARNESS_DEFAULT_TIMEOUT)
/* TEST_TIMEOUT(name, secs) { body } - a test with its own timeout. */
#define TEST_TIMEOUT(name, secs) HARNESS_DEFINE(name, (secs))

/* ------------------------------------------------------------ failures */

/* harness_finish - record msg as the result (first caller wins), flush
 * stdio and end the test child with code. Any thread. */
__attribute__((noreturn, format(printf, 2, 3))) HARNESS_FN void
harness_finish(int code, const char *fmt, ...)
{
    char buf[HARNESS_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    struct harness_shared *sh = harness_shm ? harness_shm : &harness_shm_local;
    if (__atomic_exchange_n(&sh->claimed, 1, __ATOMIC_ACQ_REL) == 0) {
        memcpy(sh->msg, buf, sizeof sh->msg);
        if (code != HARNESS_EXIT_SKIP)
            fprintf(stderr, "%s\n", buf);
        fflush(stdout);
        fflush(stderr);
        _exit(code);
    }
    /* Another thread is already failing: let it finish. */
    for (;;)
        pause();
}

#define HARNESS_FAIL(...) harness_finish(HARNESS_EXIT_FAIL, __VA_ARGS__)

/* FAIL(fmt, ...) - fail the test with a message. */
#define FAIL(...)                                                             \
    harness_finish(HARNESS_EXIT_FAIL, __FILE__ ":" HARNESS_STR(__LINE__)      \
                   ": " __VA_ARGS__)
/* SKIP(reason) - end the test as skipped. */
#define SKIP(...) harness_finish(HARNESS_EXIT_SKIP, __VA_ARGS__)

#define HARNESS_STR_(x) #x
#define HARNESS_STR(x) HARNESS_STR_(x)

#define ASSERT(cond)                                                          \
    do {                                                                      \
        if (!(cond))                                                          \
            HARNESS_FAIL("%s:%d: ASSERT(%s) failed", __FILE__, __LINE__,      \
                         #cond);                                              \
    } while (0)

#define HARNESS_CMP(name, a, op, b)                                           \
    do {                                                                      \
        int64_t harness_a_ = (int64_t)(a);                                    \
        int64_t harness_b_ = (int64_t)(b);                                    \
        if (!(harness_a_ op harness_b_))                                      \
            HARNESS_FAIL("%s:%d: " name "(%s, %s) failed: %s = %" PRId64      \
                         ", %s = %" PRId64,                                   \
                         __FILE__, __LINE__, #a, #b, #a, harness_a_, #b,      \
                         harness_b_);                                         \
    } while (0)

/* Integer comparisons; both sides are converted to int64_t and printed. */
#define ASSERT_EQ(a, b) HARNESS_CMP("ASSERT_EQ", a, ==, b)
#define ASSERT_NE(a, b) HARNESS_CMP("ASSERT_NE", a, !=, b)
#define ASSERT_GE(a, b) HARNESS_CMP("ASSERT_GE", a, >=, b)
#define ASSERT_GT(a, b) HARNESS_CMP("ASSERT_GT", a, >, b)
#define ASSERT_LE(a, b) HARNESS_CMP("ASSERT_LE", a, <=, b)
#define ASSERT_LT(a, b) HARNESS_CMP("ASSERT_LT", a, <, b)

#define ASSERT_STR_EQ(a, b)                                                   \
    do {                                                                      \
        const char *harness_a_ = (a);                                         \
        const char *harness_b_ = (b);                                         \
        if (harness_a_ == NULL || harness_b_ == NULL ||                       \
            strcmp(harness_a_, harness_b_) != 0)                              \
            HARNESS_FAIL("%s:%d: ASSERT_STR_EQ(%s, %s) failed: %s = \"%s\", " \
                         "%s = \"%s\"",                                       \
                         __FILE__, __LINE__, #a, #b, #a,                      \
                         harness_a_ ? harness_a_ : "(null)", #b,              \
                         harness_b_ ? harness_b_ : "(null)");                 \
    } while (0)

/* ASSERT_CONTAINS(haystack, needle) - needle is a substring of haystack. */
#define ASSERT_CONTAINS(h, n)                                                 \
    do {                                                                      \
        const char *harness_h_ = (h);                                         \
        const char *harness_n_ = (n);                                         \
        if (harness_h_ == NULL || strstr(harness_h_, harness_n_) == NULL)     \
            HARNESS_FAIL("%s:%d: ASSERT_CONTAINS(%s, %s) failed: \"%s\" not " \
                         "found in:\n%s",                                     \
                         __FILE__, __LINE__, #h, #n, harness_n_,              \
                         harness_h_ ? harness_h_ : "(null)");                 \
    } while (0)

/* EXPECT_ERR(call, WEFT_Exxx) - call returns exactly that (negative) code.
 * EXPECT_OK(call) - call returns >= 0. Both name the codes with
 * weft_err_name(), so <weft.h> must be included where they are used. */
#define EXPECT_ERR(call, err)                                                 \
    do {                                                                      \
        int64_t harness_r_ = (int64_t)(call);                                 \
        int64_t harness_e_ = (int64_t)(err);                                  \
        if (harness_r_ != harness_e_)                                         \
            HARNESS_FAIL("%s:%d: EXPECT_ERR(%s, %s) failed: returned %"       \
                         PRId64 " (%s), expected %" PRId64 " (%s)",           \
                         __FILE__, __LINE__, #call, #err, harness_r_,         \
                         harness_r_ < 0 && harness_r_ >= INT32_MIN            \
                             ? weft_err_name((int)harness_r_)                 \
                             : "not an error",                                \
                         harness_e_, weft_err_name((int)harness_e_));         \
    } while (0)

#define EXPECT_OK(call)                                                       \
    do {                                                                      \
        int64_t harness_r_ = (int64_t)(call);                                 \
        if (harness_r_ < 0)                                                   \
            HARNESS_FAIL("%s:%d: EXPECT_OK(%s) failed: returned %" PRId64     \
                         " (%s)",                                             \
                         __FILE__, __LINE__, #call, harness_r_,               \
                         harness_r_ >= INT32_MIN                              \
                             ? weft_err_name((int)harness_r_)                 \
                             : "WEFT_EUNKNOWN");                              \
    } while (0)

/* -------------------------------------------------------------- helpers */

/* harness_signame - "SIGSEGV" style name of sig. */
HARNESS_FN const char *harness_signame(int sig)
{
    static const struct {
        int sig;
        const char *name;
    } t[] = {
        {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},       {SIGQUIT, "SIGQUIT"},
        {SIGILL, "SIGILL"},   {SIGTRAP, "SIGTRAP"},     {SIGABRT, "SIGABRT"},
        {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},       {SIGKILL, "SIGKILL"},
        {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"},     {SIGUSR2, "SIGUSR2"},
        {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"},     {SIGTERM, "SIGTERM"},
        {SIGCHLD, "SIGCHLD"}, {SIGCONT, "SIGCONT"},     {SIGSTOP, "SIGSTOP"},
        {SIGTSTP, "SIGTSTP"}, {SIGTTIN, "SIGTTIN"},     {SIGTTOU, "SIGTTOU"},
        {SIGURG, "SIGURG"},   {SIGXCPU, "SIGXCPU"},     {SIGXFSZ, "SIGXFSZ"},
        {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"}, {SIGSYS, "SIGSYS"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i].sig == sig)
            return t[i].name;
    static char buf[32];
    snprintf(buf, sizeof buf, "signal %d", sig);
    return buf;
}

/* harness_status_str - describe a wait() status: "exit 0", "SIGSEGV". */
HARNESS_FN const char *harness_status_str(int status, char *buf, size_t n)
{
    if (WIFEXITED(status))
        snprintf(buf, n, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by %s%s", harness_signame(WTERMSIG(status)),
                 WCOREDUMP(status) ? " (core dumped)" : "");
    else
        snprintf(buf, n, "wait status 0x%x", status);
    return buf;
}

HARNESS_FN double harness_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* harness_timeout_scale - HARNESS_TIMEOUT_SCALE (> 0), else 1. Tests may use
 * it to loosen their own sanity bounds under sanitizers/valgrind. */
HARNESS_FN double harness_timeout_scale(void)
{
    const char *s = getenv("HARNESS_TIMEOUT_SCALE");
    if (s == NULL || *s == '\0')
        return 1.0;
    char *end;
    double v = strtod(s, &end);
    return (end != s && v > 0) ? v : 1.0;
}

/* harness_sibling - the path of helper program name: $env if set, else
 * name next to this test binary (meson builds them side by side). Fails
 * the test when neither exists. */
HARNESS_FN const char *harness_sibling(const char *env, const char *name)
{
    static char path[4096];
    const char *v = getenv(env);
    if (v != NULL && *v != '\0')
        return v;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        FAIL("%s is not set and /proc/self/exe is unreadable", env);
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash != NULL)
        *slash = '\0';
    if ((size_t)snprintf(path, sizeof path, "%s/%s", self, name) >=
        sizeof path)
        FAIL("the path of %s is too long", name);
    if (access(path, X_OK) != 0)
        FAIL("%s is not set and %s does not exist", env, path);
    return path;
}

/* harness_have_tool - whether an executable name is on PATH. */
HARNESS_FN int harness_have_tool(const char *name)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        return 0;
    char buf[4096];
    for (const char *p = path; *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(buf, sizeof buf, "%.*s/%s", (int)n, p, name);
        if (access(buf, X_OK) == 0)
            return 1;
        p += n + (e != NULL);
    }
    return 0;
}

/*
 * harness_run - run argv (argv[0] is a path, or a name looked up in PATH)
 * as a subprocess and wait for it.
 *
 * envp_extra (may be NULL) is a NULL-terminated list of "NAME=value" entries
 * set in the subprocess's environment on top of ours; a bare "NAME" unsets
 * it. The subprocess's stdout and stderr are captured separately into out
 * and err (each may be NULL; NUL-terminated, truncated to fit, the rest is
 * read and dropped); stdin is /dev/null. *status receives the raw wait()
 * status (WIFEXITED/WEXITSTATUS/WTERMSIG).
 * Returns 0, or -errno if the subprocess could not be started (exec failure
 * is reported as exit status 127 with a message in err).
 * Blocks the calling thread: call it outside weft_main, or inside
 * weft_blocking().
 */
HARNESS_FN int harness_run(const char *const argv[], const char *const envp_extra[],
                       char *out, size_t outsz, char *err, size_t errsz,
                       int *status)
{
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(pe, O_CLOEXEC) < 0) {
        int e = errno;
        close(po[0]);
        close(po[1]);
        return -e;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        return -e;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
            close(devnull);
        }
        dup2(po[1], 1);
        dup2(pe[1], 2);
        for (size_t i = 0; envp_extra && envp_extra[i]; i++) {
            const char *eq = strchr(envp_extra[i], '=');
            if (eq == NULL) {
                unsetenv(envp_extra[i]);
            } else {
                char name[256];
                size_t n = (size_t)(eq - envp_extra[i]);
                if (n >= sizeof name)
                    n = sizeof name - 1;
                memcpy(name, envp_extra[i], n);
                name[n] = '\0';
                setenv(name, eq + 1, 1);
            }
        }
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "harness_run: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    struct {
        int fd;
        char *buf;
        size_t cap, len;
    } s[2] = {{po[0], out, outsz, 0}, {pe[0], err, errsz, 0}};
    int open_n = 2;
    while (open_n > 0) {
        struct pollfd pf[2];
        int map[2], n = 0;
        for (int i = 0; i < 2; i++)
            if (s[i].fd >= 0) {
                pf[n] = (struct pollfd){.fd = s[i].fd, .events = POLLIN};
                map[n++] = i;
            }
        if (poll(pf, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int k = 0; k < n; k++) {
            if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            int i = map[k];
            char tmp[4096];
            ssize_t r = read(s[i].fd, tmp, sizeof tmp);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                close(s[i].fd);
                s[i].fd = -1;
                open_n--;
                continue;
            }
            if (s[i].buf && s[i].cap > 0) {
                size_t room = s[i].cap - 1 - s[i].len;
                size_t c = (size_t)r < room ? (size_t)r : room;
                memcpy(s[i].buf + s[i].len, tmp, c);
                s[i].len += c;
            }
        }
    }
    for (int i = 0; i < 2; i++) {
        if (s[i].fd >= 0)
            close(s[i].fd);
        if (s[i].buf && s[i].cap > 0)
            s[i].buf[s[i].len] = '\0';
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    if (status)
        *status = st;
    return 0;
}

/* harness_count_lines - number of lines in s containing needle. */
HARNESS_FN int harness_count_lines(const char *s, const char *needle)
{
    int n = 0;
    while (s && *s) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        char line[1024];
        size_t c = len < sizeof line - 1 ? len : sizeof line - 1;
        memcpy(line, s, c);
        line[c] = '\0';
        if (strstr(line, needle))
            n++;
        s = nl ? nl + 1 : s + len;
    }
    return n;
}

/* ------------------------------------------------------------ leak gate */

#define HARNESS_MAX_FDS 1024

/* harness_list_fds - the open fds of this process into fds (sorted as the
 * kernel lists them), minus the directory fd used to read them. */
HARNESS_FN int harness_list_fds(int *fds, int max)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0, self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != self && n < max)
            fds[n++] = fd;
    }
    closedir(d);
    return n;
}

/* harness_fd_excused - set by a test binary (weft_test.h): whether an fd
 * opened during the test belongs to the library under test for the
 * process's life (weft's symbolizer files, libunwind's pipe), not to the
 * test. NULL: none is. */
static int (*harness_fd_excused)(int fd);

/* harness_fdid - an fd and the file it names: a number closed and opened
 * again on another file is another fd. */
struct harness_fdid {
    int fd;
    dev_t dev;
    ino_t ino;
};

/* harness_list_fdids - harness_list_fds with each fd's identity; an fd
 * closed meanwhile is left out. Count, or -1 without /proc. */
HARNESS_FN int harness_list_fdids(struct harness_fdid *ids, int max)
{
    int fds[HARNESS_MAX_FDS];
    int n = harness_list_fds(fds, max < HARNESS_MAX_FDS ? max
                                                        : HARNESS_MAX_FDS);
    int k = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (fstat(fds[i], &st) == 0)
            ids[k++] = (struct harness_fdid){fds[i], st.st_dev, st.st_ino};
    }
    return n < 0 ? -1 : k;
}

/* harness_fdid_in - whether ids[0..n) holds fd, naming the same file. */
HARNESS_FN int harness_fdid_in(const struct harness_fdid *f,
                               const struct harness_fdid *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (ids[i].fd == f->fd && ids[i].dev == f->dev &&
            ids[i].ino == f->ino)
            return 1;
    return 0;
}

/* harness_leak_gate - fail if fds other than start[0..nstart) (and the
 * excused ones) are open, or if one of start[0..nstart) was closed (or
 * now names another file): a test, or the library under test, closed an
 * fd that was not its own. */
HARNESS_FN void harness_leak_gate(const struct harness_fdid *start, int nstart)
{
    struct harness_fdid now[HARNESS_MAX_FDS];
    int n = harness_list_fdids(now, HARNESS_MAX_FDS);
    if (n < 0)
        return; /* no /proc: no gate */
    char msg[HARNESS_MSG_MAX], gone[HARNESS_MSG_MAX];
    size_t len = 0, glen = 0;
    int leaks = 0, closed = 0;
    msg[0] = gone[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (harness_fdid_in(&now[i], start, nstart) ||
            (harness_fd_excused != NULL && harness_fd_excused(now[i].fd)))
            continue;
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", now[i].fd);
        ssize_t t = readlink(path, target, sizeof target - 1);
        target[t > 0 ? t : 0] = '\0';
        if (len < sizeof msg)
            len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%d (%s)",
                                    leaks ? ", " : "", now[i].fd, target);
        leaks++;
    }
    for (int i = 0; i < nstart; i++) {
        if (harness_fdid_in(&start[i], now, n))
            continue;
        if (glen < sizeof gone)
            glen += (size_t)snprintf(gone + glen, sizeof gone - glen, "%s%d",
                                     closed ? ", " : "", start[i].fd);
        closed++;
    }
    if (leaks && closed)
        HARNESS_FAIL("leak gate: %d fd%s open after the test that were not "
                     "open before it: %s; %d fd%s open before it closed or "
                     "replaced: %s",
                     leaks, leaks > 1 ? "s" : "", msg, closed,
                     closed > 1 ? "s" : "", gone);
    if (leaks)
        HARNESS_FAIL("leak gate: %d fd%s open after the test that were not "
                     "open before it: %s",
                     leaks, leaks > 1 ? "s" : "", msg);
    if (closed)
        HARNESS_FAIL("leak gate: %d fd%s open before the test closed or "
                     "replaced by it: %s",
                     closed, closed > 1 ? "s" : "", gone);
}

/* --------------------------------------------------------------- runner */

/* The runner blocks SIGCHLD and waits for it with sigtimedwait(); a test's
 * child gets the original mask back. */
static sigset_t harness_oldmask;

/* harness_child - body of a test's child process; never returns. */
__attribute__((noreturn)) HARNESS_FN void harness_child(const struct harness_test *t,
                                                    int capfd)
{
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigprocmask(SIG_SETMASK, &harness_oldmask, NULL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    dup2(capfd, 1);
    dup2(capfd, 2);
    close(capfd);
    setvbuf(stdout, NULL, _IOLBF, 0);
    setvbuf(stderr, NULL, _IONBF, 0);
    static struct harness_fdid start[HARNESS_MAX_FDS];
    int nstart = harness_list_fdids(start, HARNESS_MAX_FDS);
    harness_current = t->name;
    t->fn();
    fflush(stdout);
    harness_leak_gate(start, nstart > 0 ? nstart : 0);
    fflush(stdout);
    fflush(stderr);
    exit(0); /* exit(), not _exit(): LeakSanitizer checks at exit */
}

/* harness_dump_capture - copy the child's output as TAP comments; at most
 * the last 256 KiB. */
HARNESS_FN void harness_dump_capture(int fd)
{
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0)
        return;
    off_t from = size > 256 * 1024 ? size - 256 * 1024 : 0;
    if (from > 0)
        printf("# [... %lld bytes of output omitted ...]\n", (long long)from);
    lseek(fd, from, SEEK_SET);
    char buf[4096];
    int bol = 1;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < r; i++) {
            if (bol)
                fputs("# ", stdout);
            putchar(buf[i]);
            bol = buf[i] == '\n';
        }
    }
    if (!bol)
        putchar('\n');
}

/* harness_oneline - msg with newlines replaced, for a TAP directive. */
HARNESS_FN const char *harness_oneline(const char *msg, char *buf, size_t n)
{
    size_t i = 0;
    for (; msg[i] && i + 1 < n; i++)
        buf[i] = (msg[i] == '\n' || msg[i] == '#') ? ' ' : msg[i];
    buf[i] = '\0';
    return buf;
}

enum { HARNESS_PASS, HARNESS_FAILED, HARNESS_SKIPPED };

/* harness_run_one - fork, run t, wait with a timeout; print its TAP line. */
HARNESS_FN int harness_run_one(int num, const struct harness_test *t, double scale,
                           int verbose)
{
    char reason[HARNESS_MSG_MAX + 128], one[HARNESS_MSG_MAX];
    memset(harness_shm, 0, sizeof *harness_shm);
    FILE *cap = tmpfile();
    if (cap == NULL) {
        printf("not ok %d - %s # harness: tmpfile: %s\n", num, t->name,
               strerror(errno));
        return HARNESS_FAILED;
    }
    int capfd = fileno(cap);
    fflush(stdout);
    fflush(stderr);
    double t0 = harness_mono();
    pid_t pid = fork();
    if (pid < 0) {
        printf("not ok %d - %s # harness: fork: %s\n", num, t->name,
               strerror(errno));
        fclose(cap);
        return HARNESS_FAILED;
    }
    if (pid == 0)
        harness_child(t, capfd);
    setpgid(pid, pid); /* also in the child: whoever runs first */

    unsigned secs = (unsigned)(t->timeout * scale + 0.5);
    if (secs == 0)
        secs = 1;
    /* The timeout: SIGCHLD is blocked, so it stays pending between
     * waitpid() and sigtimedwait() and no exit is missed. On expiry the
     * process group gets SIGQUIT (weft prints a dump of every coroutine),
     * then SIGKILL 3 s later. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    double deadline = t0 + secs;
    int status = 0, timed_out = 0, killed = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            status = 0;
            break;
        }
        double left = deadline - harness_mono();
        if (left <= 0) {
            if (!timed_out) {
                timed_out = 1;
                kill(-pid, SIGQUIT);
                deadline = harness_mono() + 3;
            } else if (!killed) {
                killed = 1;
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
                deadline = harness_mono() + 3600;
            }
            continue;
        }
        struct timespec ts;
        ts.tv_sec = (time_t)left;
        ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
        sigtimedwait(&chld, NULL, &ts);
    }
    /* Reap anything the test left behind in its process group. */
    kill(-pid, SIGKILL);
    double dt = harness_mono() - t0;

    int result;
    reason[0] = '\0';
    char st[96];
    harness_status_str(status, st, sizeof st);
    if (timed_out) {
        result = HARNESS_FAILED;
        snprintf(reason, sizeof reason,
                 "timeout after %u s (SIGQUIT, then %s)", secs, st);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        result = HARNESS_PASS;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == HARNESS_EXIT_SKIP &&
               harness_shm->claimed) {
        result = HARNESS_SKIPPED;
        snprintf(reason, sizeof reason, "%s", harness_shm->msg);
    } else if (WIFEXITED(status) && harness_shm->claimed) {
        result = HARNESS_FAILED;
        snprintf(reason, sizeof reason, "%s", harness_shm->msg);
    } else if (WIFSIGNALED(status)) {
        result = HARNESS_FAILED;
        snprintf(reason, sizeof reason, "child %s", st);
    } else {
        result = HARNESS_FAILED;
        snprintf(reason, sizeof reason, "child %s%s", st,
                 WIFEXITED(status) && WEXITSTATUS(status) == 23
                     ? " (LeakSanitizer?)"
                     : "");
    }

    harness_oneline(reason, one, sizeof one);
    if (result == HARNESS_PASS)
        printf("ok %d - %s\n", num, t->name);
    else if (result == HARNESS_SKIPPED)
        printf("ok %d - %s # SKIP %s\n", num, t->name, one);
    else
        printf("not ok %d - %s # %s\n", num, t->name, one);
    printf("# %s: %.3f s\n", t->name, dt);
    if (result == HARNESS_FAILED || verbose)
        harness_dump_capture(capfd);
    fflush(stdout);
    fclose(cap);
    return result;
}

HARNESS_FN int harness_cmp_line(const void *a, const void *b)
{
    const struct harness_test *x = (const struct harness_test *)a;
    const struct harness_test *y = (const struct harness_test *)b;
    return (x->line > y->line) - (x->line < y->line);
}

HARNESS_FN int harness_env_on(const char *name)
{
    const char *s = getenv(name);
    return s != NULL && *s != '\0' && strcmp(s, "0") != 0;
}

/* harness_selected - whether name passes the filters argv[1..argc): it
 * contains one of the plain ones (or there are none) and none of those
 * written "!substring". */
HARNESS_FN int harness_selected(const char *name, int argc, char **argv)
{
    int plain = 0, hit = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '!') {
            if (strstr(name, argv[i] + 1) != NULL)
                return 0;
        } else {
            plain++;
            hit |= strstr(name, argv[i]) != NULL;
        }
    }
    return plain == 0 || hit;
}

/* harness_main - run the selected tests (see harness_selected and the top
 * of this file). Returns the process exit status. */
HARNESS_FN int harness_main(int argc, char **argv)
{
    qsort(harness_tests, (size_t)harness_ntests, sizeof harness_tests[0],
          harness_cmp_line);
    if (argc > 1 && (strcmp(argv[1], "-l") == 0 ||
                     strcmp(argv[1], "--list") == 0)) {
        for (int i = 0; i < harness_ntests; i++)
            printf("%s\n", harness_tests[i].name);
        return 0;
    }
    int sel[HARNESS_MAX_TESTS], nsel = 0;
    for (int i = 0; i < harness_ntests; i++)
        if (harness_selected(harness_tests[i].name, argc, argv))
            sel[nsel++] = i;
    setvbuf(stdout, NULL, _IOLBF, 0);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &harness_oldmask);
    if (nsel == 0) {
        printf("1..0 # SKIP no test matches the filters\n");
        printf("# 0 passed, 0 failed, 0 skipped\n");
        return 0;
    }
    printf("1..%d\n", nsel);
    int verbose = harness_env_on("HARNESS_VERBOSE");
    double scale = harness_timeout_scale();
    int counts[3] = {0, 0, 0};
    if (harness_env_on("HARNESS_NOFORK")) {
        for (int k = 0; k < nsel; k++) {
            harness_current = harness_tests[sel[k]].name;
            harness_tests[sel[k]].fn();
            printf("ok %d - %s\n", k + 1, harness_tests[sel[k]].name);
            counts[HARNESS_PASS]++;
        }
    } else {
        harness_shm = (struct harness_shared *)mmap(
            NULL, sizeof *harness_shm, PROT_READ | PROT_WRITE,
            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (harness_shm == MAP_FAILED) {
            perror("harness: mmap");
            return 2;
        }
        for (int k = 0; k < nsel; k++)
            counts[harness_run_one(k + 1, &harness_tests[sel[k]], scale,
                                   verbose)]++;
        munmap(harness_shm, sizeof *harness_shm);
        harness_shm = NULL;
    }
    printf("# %d passed, %d failed, %d skipped\n", counts[HARNESS_PASS],
           counts[HARNESS_FAILED], counts[HARNESS_SKIPPED]);
    fflush(stdout);
    return counts[HARNESS_FAILED] ? 1 : 0;
}

#ifndef HARNESS_NO_MAIN
int main(int argc, char **argv)
{
    return harness_main(argc, argv);
}
#endif

#endif /* WEFT_TESTS_HARNESS_H */
