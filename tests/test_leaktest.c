/*
 * test_leaktest.c - the leak checks of weft.h ("leak checks") and
 * weft_leak.h: a coroutine blocked forever on a channel is caught with
 * goleak's text (panicparse-style regexes) and its stack; sockets, pipes
 * and files opened since the snapshot are caught with what they are and
 * who opened them; clean code passes; retries absorb coroutines that are
 * finishing; each ignore option works; the clean verify's time is
 * measured and printed (not asserted: CI machines are noisy); bad input
 * gets error codes. Many coroutines, several Ps.
 *
 * These bodies run with the gate off (gate_off): they check the checks
 * themselves, and clean up what they leak before returning.
 */
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <sys/socket.h>
#include <unistd.h>

#include "weft_leak.h"
#include "weft_test.h"

#define REPORT 65536
static char report[REPORT];

/* fast - few quick retries, the report into `report`. */
static struct weft_leak_opts fast(void)
{
    return (struct weft_leak_opts){
        .retries = 3, .max_sleep = 1 * MS, .buf = report, .bufsize = REPORT};
}

static void match(const char *re, const char *text)
{
    regex_t r;
    ASSERT_EQ(regcomp(&r, re, REG_EXTENDED | REG_NEWLINE), 0);
    int m = regexec(&r, text, 0, NULL, 0);
    regfree(&r);
    if (m != 0)
        FAIL("/%s/ does not match:\n%s", re, text);
}

static weft_chan_t *forever;

__attribute__((noinline)) static void leaky_worker(void *arg)
{
    (void)arg;
    weft_chan_recv(forever, NULL);
    __asm__ volatile("" ::: "memory"); /* no tail call */
}

static int leak_coroutines_body(void *arg)
{
    int n = (int)(intptr_t)arg;
    EXPECT_OK(weft_chan_new(&forever, sizeof(int), 0));
    weft_leak_snapshot_t *s;
    EXPECT_OK(weft_leak_snapshot(&s));
    for (int i = 0; i < n; i++)
        EXPECT_OK(weft_go(leaky_worker, NULL));
    struct weft_leak_opts o = fast();
    ASSERT_EQ(weft_leak_verify(s, &o), n);
    /* goleak's text, with panicparse's header, function and file rules
     * on the stack below it. */
    match("^found unexpected goroutines:$", report);
    match("^\\[Goroutine [0-9]+ in state chan receive, with weft_chan_recv "
          "on top of the stack:$",
          report);
    match("^leaky_worker\\(.*\\)$", report);
    match("^\t.+/test_leaktest\\.c:[0-9]+( \\+0x[0-9a-f]+)?$", report);
    match("^created by leak_coroutines_body in goroutine [0-9]+$", report);
    ASSERT_EQ(harness_count_lines(report, "Goroutine "), n);
    ASSERT(report[strlen(report) - 2] == ']');
    /* Let them go: now the retries see them end. */
    EXPECT_OK(weft_chan_close(forever));
    o = fast();
    o.retries = 0; /* the default 20 */
    ASSERT_EQ(weft_leak_verify(s, &o), 0);
    ASSERT_STR_EQ(report, "");
    weft_leak_snapshot_free(s);
    EXPECT_OK(weft_chan_free(forever));
    return 0;
}

TEST(catches_leaked_coroutine)
{
    gate_off = true;
    run(1, leak_coroutines_body, (void *)1);
    run(4, leak_coroutines_body, (void *)200);
}

/* ------------------------------------------------------------- fds */

__attribute__((noinline)) static void opens_socket(void *arg)
{
    _Atomic int *fd = arg; /* polled by leak_fds_body */
    int l = weft_listen("tcp4", "127.0.0.1:0", 0);
    EXPECT_OK(l);
    atomic_store(fd, l);
    __asm__ volatile("" ::: "memory");
}

static int leak_fds_body(void *arg)
{
    (void)arg;
    weft_leak_snapshot_t *s;
    EXPECT_OK(weft_leak_snapshot(&s));
    _Atomic int sock_ = -1;
    int64_t opener = weft_go(opens_socket, &sock_);
    EXPECT_OK(opener);
    while (atomic_load(&sock_) < 0)
        weft_sleep(100 * US);
    int sock = atomic_load(&sock_);
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    char path[] = "/tmp/weft-leaktest-XXXXXX";
    int file = mkostemp(path, O_CLOEXEC);
    ASSERT_GE(file, 0);
    struct weft_leak_opts o = fast();
    ASSERT_EQ(weft_leak_verify(s, &o), 4); /* the opener has ended */
    match("^found unexpected file descriptors:$", report);
    char re[512];
    snprintf(re, sizeof re,
             "^fd %d \\(socket:\\[[0-9]+\\]\\) opened in goroutine %lld by "
             "opens_socket$",
             sock, (long long)opener);
    match(re, report);
    match("^\t.+/test_leaktest\\.c:[0-9]+", report);
    snprintf(re, sizeof re, "^fd %d \\(pipe:\\[[0-9]+\\]\\) not opened "
             "through weft$", p[0]);
    match(re, report);
    snprintf(re, sizeof re, "^fd %d \\(%s\\) not opened through weft$",
             file, path);
    match(re, report);
    /* A coroutine leak and an fd leak in one report. */
    unlink(path);
    close(file);
    close(p[0]);
    close(p[1]);
    EXPECT_OK(weft_close(sock));
    o = fast();
    ASSERT_EQ(weft_leak_verify(s, &o), 0);
    /* An fd number closed and reused for another file is new. */
    weft_leak_snapshot_free(s);
    return 0;
}

TEST(catches_leaked_fds)
{
    gate_off = true;
    run(2, leak_fds_body, NULL);
}

/* ------------------------------------------------------------ clean */

static void quick(void *arg)
{
    weft_waitgroup_done(arg);
}

static int clean_body(void *arg)
{
    (void)arg;
    weft_leak_snapshot_t *s;
    /* Timing: many clean verifies, with 1000 coroutines alive at the
     * snapshot (parked) and 20 fds open. */
    EXPECT_OK(weft_chan_new(&forever, sizeof(int), 0));
    for (int i = 0; i < 1000; i++)
        EXPECT_OK(weft_go(leaky_worker, NULL));
    EXPECT_OK(weft_leak_snapshot(&s));
    weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
    for (int i = 0; i < 100; i++) {
        weft_waitgroup_add(&wg, 1);
        EXPECT_OK(weft_go(quick, &wg));
    }
    weft_waitgroup_wait(&wg);
    int64_t worst = 0, sum = 0;
    int reps = 200;
    for (int i = 0; i < reps; i++) {
        int64_t t0 = weft_now();
        ASSERT_EQ(weft_leak_verify(s, NULL), 0);
        int64_t dt = weft_now() - t0;
        sum += dt;
        if (dt > worst)
            worst = dt;
    }
    printf("# clean verify: mean %.1f us, worst %.1f us (%d reps, 1000 "
           "coroutines at the snapshot, %d Ps)\n",
           (double)sum / reps / 1000.0, (double)worst / 1000.0, reps,
           weft_procs());
    /* The snapshot's own coroutines are ignored; WEFT_LEAK_ALL counts
     * them. */
    struct weft_leak_opts o = fast();
    o.flags = WEFT_LEAK_ALL | WEFT_LEAK_NO_FDS;
    ASSERT_EQ(weft_leak_verify(s, &o), 1000);
    EXPECT_OK(weft_chan_close(forever));
    /* All of them gone (retried: they need a turn to run), so none still
     * holds the channel when it is freed: the runtime's end would
     * abandon a straggler with its reference (LeakSanitizer saw that). */
    struct weft_leak_opts all = {.flags = WEFT_LEAK_ALL | WEFT_LEAK_NO_FDS};
    ASSERT_EQ(weft_leak_verify(s, &all), 0);
    weft_leak_snapshot_free(s);
    EXPECT_OK(weft_chan_free(forever));
    return 0;
}

TEST(passes_clean_code_and_timing)
{
    gate_off = true;
    run(1, clean_body, NULL);
    run(4, clean_body, NULL);
}

/* ---------------------------------------------------------- retries */

static void finishing(void *arg)
{
    (void)arg;
    weft_sleep(50 * MS);
}

static void lingering(void *arg)
{
    (void)arg;
    weft_sleep(3000 * MS); /* abandoned at the runtime's end (gate off) */
}

static int retry_body(void *arg)
{
    (void)arg;
    weft_leak_snapshot_t *s;
    EXPECT_OK(weft_leak_snapshot(&s));
    for (int i = 0; i < 50; i++)
        EXPECT_OK(weft_go(finishing, NULL));
    int64_t t0 = weft_now();
    ASSERT_EQ(weft_leak_verify(s, NULL), 0); /* default: about 0.45 s */
    int64_t dt = weft_now() - t0;
    ASSERT_GE(dt, 40 * MS);
    printf("# 50 coroutines ending after 50 ms: verify took %.1f ms\n",
           (double)dt / 1e6);
    /* Without retries they are caught (sleepers that outlast the verify
     * by far: under TSan a verify's freeze alone can take 100 ms). */
    for (int i = 0; i < 5; i++)
        EXPECT_OK(weft_go(lingering, NULL));
    wait_parked(0, WR_SLEEP, 5); /* asleep, not still runnable */
    struct weft_leak_opts o = fast();
    o.retries = 1;
    o.max_sleep = 1;
    ASSERT_EQ(weft_leak_verify(s, &o), 5);
    match("in state sleep, with weft_sleep", report);
    weft_leak_snapshot_free(s);
    return 0;
}

TEST(retries_absorb_finishing_coroutines)
{
    gate_off = true;
    run(2, retry_body, NULL);
}

/* ----------------------------------------------------------- ignores */

__attribute__((noinline)) static void ignored_helper(void)
{
    weft_chan_recv(forever, NULL);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void deep_worker(void *arg)
{
    (void)arg;
    ignored_helper();
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void spawner(void *arg)
{
    EXPECT_OK(weft_go(leaky_worker, NULL));
    weft_waitgroup_done(arg);
}

static int ignore_body(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_chan_new(&forever, sizeof(int), 0));
    weft_leak_snapshot_t *s;
    EXPECT_OK(weft_leak_snapshot(&s));
    int64_t a = weft_go(leaky_worker, NULL); /* top: weft_chan_recv */
    EXPECT_OK(a);
    EXPECT_OK(weft_go(deep_worker, NULL));
    weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
    weft_waitgroup_add(&wg, 1);
    EXPECT_OK(weft_go(spawner, &wg)); /* its child: created by spawner */
    weft_waitgroup_wait(&wg);
    wait_parked(0, WR_CHAN_RECEIVE, 3);

    struct weft_leak_opts o = fast();
    o.flags = WEFT_LEAK_NO_FDS;
    ASSERT_EQ(weft_leak_verify(s, &o), 3);

    const char *top[] = {"weft_chan_recv", NULL};
    o.ignore_top = top;
    ASSERT_EQ(weft_leak_verify(s, &o), 0);
    const char *nottop[] = {"leaky_worker", NULL}; /* not on top */
    o.ignore_top = nottop;
    ASSERT_EQ(weft_leak_verify(s, &o), 3);
    o.ignore_top = NULL;

    const char *any[] = {"ignored_helper", NULL};
    o.ignore_any = any;
    ASSERT_EQ(weft_leak_verify(s, &o), 2);
    const char *any2[] = {"ignored_helper", "leaky_worker", NULL};
    o.ignore_any = any2;
    ASSERT_EQ(weft_leak_verify(s, &o), 0);
    o.ignore_any = NULL;

    const char *by[] = {"spawner", NULL};
    o.ignore_created_by = by;
    ASSERT_EQ(weft_leak_verify(s, &o), 2);
    o.ignore_created_by = NULL;

    o.ignore_ids = &a;
    o.nignore_ids = 1;
    ASSERT_EQ(weft_leak_verify(s, &o), 2);
    o.ignore_ids = NULL;
    o.nignore_ids = 0;

    /* Coroutines alive at a later snapshot are ignored by it. */
    weft_leak_snapshot_t *s2;
    EXPECT_OK(weft_leak_snapshot(&s2));
    ASSERT_EQ(weft_leak_verify(s2, &o), 0);

    EXPECT_OK(weft_chan_close(forever));
    ASSERT_EQ(weft_leak_verify(s, NULL), 0);
    weft_leak_snapshot_free(s);
    weft_leak_snapshot_free(s2);
    EXPECT_OK(weft_chan_free(forever));
    return 0;
}

TEST(ignore_options)
{
    gate_off = true;
    run(3, ignore_body, NULL);
}

/* ----------------------------------------------------- report to fd */

static int fd_body(void *arg)
{
    int *mfd = arg;
    EXPECT_OK(weft_chan_new(&forever, sizeof(int), 0));
    weft_leak_snapshot_t *s;
    EXPECT_OK(weft_leak_snapshot(&s));
    EXPECT_OK(weft_go(leaky_worker, NULL));
    /* Parked, not still runnable or switching away (ASan CI under load
     * once reported it mid-way: state chan receive, entry frame). */
    wait_parked(0, WR_CHAN_RECEIVE, 1);
    struct weft_leak_opts o = {.retries = 2, .max_sleep = MS, .fd = *mfd};
    ASSERT_EQ(weft_leak_verify(s, &o), 1);
    EXPECT_OK(weft_chan_close(forever));
    ASSERT_EQ(weft_leak_verify(s, NULL), 0);
    weft_leak_snapshot_free(s);
    EXPECT_OK(weft_chan_free(forever));
    return 0;
}

TEST(report_to_fd)
{
    int mfd = memfd_create("report", MFD_CLOEXEC);
    ASSERT_GE(mfd, 0);
    run(2, fd_body, &mfd);
    char buf[8192];
    ssize_t n = pread(mfd, buf, sizeof buf - 1, 0);
    ASSERT_GT(n, 0);
    buf[n] = '\0';
    match("^\\[Goroutine [0-9]+ in state chan receive, with weft_chan_recv "
          "on top of the stack:$",
          buf);
    close(mfd);
}

/* ------------------------------------------------------ weft_leak.h */

static int leaks_one(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_chan_new(&forever, sizeof(int), 0));
    EXPECT_OK(weft_go(leaky_worker, NULL));
    return 7;
}

static int clean_one(void *arg)
{
    (void)arg;
    return 5;
}

TEST(header_helpers)
{
    int res = 0;
    ASSERT_EQ(weft_leak_main(clean_one, NULL, NULL, &res), 0);
    ASSERT_EQ(res, 5);
    struct weft_leak_opts o = fast();
    set_procs(2);
    ASSERT_EQ(weft_leak_main(leaks_one, NULL, &o, &res), 1);
    ASSERT_EQ(res, 7);
    match("leaky_worker", report);
    ASSERT_EQ(weft_leak_main(NULL, NULL, NULL, NULL), WEFT_EINVAL);
}

/* -------------------------------------------------------- bad input */

static int bad_body(void *arg)
{
    (void)arg;
    EXPECT_ERR(weft_leak_snapshot(NULL), WEFT_EINVAL);
    weft_leak_snapshot_t *s;
    EXPECT_OK(weft_leak_snapshot(&s));
    EXPECT_ERR(weft_leak_verify(NULL, NULL), WEFT_EINVAL);
    struct weft_leak_opts o = {.flags = 64};
    EXPECT_ERR(weft_leak_verify(s, &o), WEFT_EINVAL);
    o = (struct weft_leak_opts){
        .flags = WEFT_LEAK_NO_FDS | WEFT_LEAK_NO_COROUTINES};
    EXPECT_ERR(weft_leak_verify(s, &o), WEFT_EINVAL);
    o = (struct weft_leak_opts){.retries = -1};
    EXPECT_ERR(weft_leak_verify(s, &o), WEFT_EINVAL);
    o = (struct weft_leak_opts){.max_sleep = -1};
    EXPECT_ERR(weft_leak_verify(s, &o), WEFT_EINVAL);
    o = (struct weft_leak_opts){.bufsize = 10};
    EXPECT_ERR(weft_leak_verify(s, &o), WEFT_EINVAL);
    o = (struct weft_leak_opts){.nignore_ids = 1};
    EXPECT_ERR(weft_leak_verify(s, &o), WEFT_EINVAL);
    o = (struct weft_leak_opts){.fd = -1};
    EXPECT_ERR(weft_leak_verify(s, &o), WEFT_EBADF);
    weft_leak_snapshot_free(s);
    weft_leak_snapshot_free(NULL);
    return 0;
}

static void *from_thread(void *arg)
{
    weft_leak_snapshot_t *s;
    EXPECT_ERR(weft_leak_snapshot(&s), WEFT_ENOTCORO);
    EXPECT_ERR(weft_leak_verify(arg, NULL), WEFT_ENOTCORO);
    return NULL;
}

static intptr_t join_thread(void *arg)
{
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, from_thread, arg), 0);
    pthread_join(t, NULL);
    return 0;
}

static int notcoro_body(void *arg)
{
    (void)arg;
    weft_leak_snapshot_t *s;
    EXPECT_OK(weft_leak_snapshot(&s));
    weft_blocking(join_thread, s); /* a plain thread, not an M */
    weft_leak_snapshot_free(s);
    return 0;
}

TEST(bad_input)
{
    weft_leak_snapshot_t *s = NULL;
    EXPECT_ERR(weft_leak_snapshot(&s), WEFT_ENORUNTIME);
    EXPECT_ERR(weft_leak_verify((weft_leak_snapshot_t *)&s, NULL),
               WEFT_ENORUNTIME);
    run(2, bad_body, NULL);
    run(2, notcoro_body, NULL);
}
