/*
 * test_leakcheck.c - the run-time leak monitor (profile/leakcheck.c).
 *
 *  - classify_*: examples/leaky (path in $LEAKY; skipped without it) run
 *    in a subprocess with a 100 ms period: each leak mode is reported on
 *    stderr with its own headline and no other; none (a load that rises
 *    and falls every second) reports nothing.
 *  - weftdebug_*: WEFTDEBUG=leakcheck= bad values warn once and are
 *    ignored (the monitor is off: weft_leakcheck_stop says so); a good
 *    value starts it (weft_leakcheck_start then says busy).
 *  - api_bad_input: periods out of range, no runtime, stop when off,
 *    bad fd, double start.
 *  - inprocess_*: a coroutine leak made here (coroutines parked on a
 *    channel, 20 ms period) is suspected: the /metrics text says so,
 *    passes promtool, and the report page shows the group and its stack;
 *    /debug/leaks answers over HTTP. Every coroutine is released before
 *    the test ends (the harness's leak gate).
 */
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "weft_test.h"

static char out[256 * 1024], err[256 * 1024];

/* leaky - run examples/leaky with args and extra env; stderr in err. */
static void leaky(const char *mode, const char *seconds, const char *period,
                  const char *env)
{
    const char *prog = getenv("LEAKY");
    if (prog == NULL || access(prog, X_OK) != 0)
        SKIP("no examples/leaky ($LEAKY)");
    const char *const argv[] = {prog,      "--mode",   mode,
                                "--seconds", seconds, "--period",
                                period,    NULL};
    const char *const envp[] = {env, NULL};
    int status = 0;
    int r = harness_run(argv, env != NULL ? envp : NULL, out, sizeof out,
                        err, sizeof err, &status);
    ASSERT_EQ(r, 0);
    printf("stderr:\n%s\n", err);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
}

#define H_SOCKET "suspected socket/fd leak"
#define H_COROUTINE "suspected coroutine leak"
#define H_FD "suspected fd leak outside coroutines"

TEST(classify_socket)
{
    leaky("socket", "3", "100", NULL);
    ASSERT_CONTAINS(err, H_SOCKET);
    ASSERT(strstr(err, H_COROUTINE) == NULL && strstr(err, H_FD) == NULL);
    ASSERT_CONTAINS(err, "[IO wait]");
    ASSERT_CONTAINS(err, "fds those coroutines opened or wait on:\n  fd ");
    ASSERT_CONTAINS(err, "goroutine ");
    ASSERT_CONTAINS(err, "conn(...)");
}

TEST(classify_coroutine)
{
    leaky("coroutine", "3", "100", NULL);
    ASSERT_CONTAINS(err, H_COROUTINE);
    ASSERT(strstr(err, H_SOCKET) == NULL && strstr(err, H_FD) == NULL);
    ASSERT_CONTAINS(err, "[chan send] oldest ");
    ASSERT_CONTAINS(err, "created at first_of_two");
    ASSERT_CONTAINS(err, "worker(...)");
}

TEST(classify_fd)
{
    leaky("fd", "3", "100", NULL);
    ASSERT_CONTAINS(err, H_FD);
    ASSERT(strstr(err, H_SOCKET) == NULL &&
           strstr(err, H_COROUTINE) == NULL);
    ASSERT_CONTAINS(err, "/stat\n");
}

TEST(none_oscillating_load)
{
    leaky("none", "5", "100", NULL);
    ASSERT(strstr(err, "weft: leakcheck") == NULL);
}

/* --------------------------------------------------------- WEFTDEBUG */

static int off_main(void *arg)
{
    (void)arg;
    EXPECT_ERR(weft_leakcheck_stop(), WEFT_EINVAL); /* not started */
    return 0;
}

static int on_main(void *arg)
{
    (void)arg;
    EXPECT_ERR(weft_leakcheck_start(100 * MS), WEFT_EBUSY);
    return 0;
}

/* weftdebug - run main under WEFTDEBUG=v with stderr captured in err. */
static void weftdebug(const char *v, weft_main_fn fn)
{
    setenv("WEFTDEBUG", v, 1);
    fflush(stderr);
    int saved = dup(2);
    char path[] = "/tmp/weft-leakcheck-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    dup2(fd, 2);
    run(2, fn, NULL);
    dup2(saved, 2);
    close(saved);
    unsetenv("WEFTDEBUG");
    ssize_t n = pread(fd, err, sizeof err - 1, 0);
    err[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    printf("WEFTDEBUG=%s: stderr: %s\n", v, err);
}

TEST(weftdebug_bad_values)
{
    static const char *const bad[] = {"leakcheck=abc", "leakcheck=-1",
                                      "leakcheck=1.5", "leakcheck=3601",
                                      "leakcheck="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        weftdebug(bad[i], off_main);
        ASSERT_CONTAINS(err, "weft: WEFTDEBUG: ");
        ASSERT_CONTAINS(err, "leakcheck=");
        ASSERT_CONTAINS(err, ", ignored\n");
        ASSERT(strchr(err, '\n') == strrchr(err, '\n')); /* one line */
    }
}

TEST(weftdebug_good_value)
{
    weftdebug("leakcheck=1", on_main);
    ASSERT_STR_EQ(err, "");
    weftdebug("leakcheck=0", off_main);
    ASSERT_STR_EQ(err, "");
}

/* --------------------------------------------------------------- API */

static int api_main(void *arg)
{
    (void)arg;
    EXPECT_ERR(weft_leakcheck_start(0), WEFT_EINVAL);
    EXPECT_ERR(weft_leakcheck_start(-1), WEFT_EINVAL);
    EXPECT_ERR(weft_leakcheck_start(9 * MS), WEFT_EINVAL);
    EXPECT_ERR(weft_leakcheck_start(3601 * 1000 * MS), WEFT_EINVAL);
    EXPECT_ERR(weft_leakcheck_stop(), WEFT_EINVAL);
    EXPECT_ERR(weft_leakcheck_write(-1), WEFT_EBADF);
    EXPECT_OK(weft_leakcheck_start(10 * MS));
    EXPECT_ERR(weft_leakcheck_start(10 * MS), WEFT_EBUSY);
    EXPECT_OK(weft_leakcheck_stop());
    EXPECT_ERR(weft_leakcheck_stop(), WEFT_EINVAL);
    EXPECT_OK(weft_leakcheck_start(3600 * 1000 * MS));
    return 0; /* left running: weft_main's end stops it */
}

TEST(api_bad_input)
{
    EXPECT_ERR(weft_leakcheck_start(100 * MS), WEFT_ENORUNTIME);
    EXPECT_ERR(weft_leakcheck_write(1), WEFT_ENORUNTIME);
    run(2, api_main, NULL);
    EXPECT_ERR(weft_leakcheck_stop(), WEFT_EINVAL); /* ended with it */
}

/* --------------------------------------------------------- in process */

static weft_chan_t *never;
static char page[256 * 1024];
static char metrics[256 * 1024];

static void parked(void *arg)
{
    (void)arg;
    int v;
    weft_chan_recv(never, &v); /* until the channel is closed */
}

/* readall - fd's whole content from offset 0 into buf. */
static void readall(int fd, char *buf, size_t cap)
{
    ssize_t n = pread(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
}

static int leak_main(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_chan_new(&never, sizeof(int), 0));
    EXPECT_OK(weft_leakcheck_start(20 * MS));
    /* Two coroutines parked every 20 ms: 12 samples see the floor rise. */
    struct weft_metrics m = {0};
    for (int i = 0; i < 200; i++) {
        weft_go(parked, NULL);
        weft_go(parked, NULL);
        weft_sleep(10 * MS);
        ASSERT_GT(weft_metrics_read(&m, sizeof m), 0);
        if (m.leak_suspected_coroutine == 1 && i > 30)
            break;
    }
    ASSERT_EQ(m.leak_suspected_coroutine, 1);
    ASSERT_EQ(m.leak_suspected_socket, 0);
    ASSERT_EQ(m.leak_suspected_fd, 0);
    int fd = memfd_create("metrics", 0);
    ASSERT_GE(fd, 0);
    EXPECT_OK(weft_metrics_write(fd));
    readall(fd, metrics, sizeof metrics);
    close(fd);
    fd = memfd_create("leaks", 0);
    ASSERT_GE(fd, 0);
    EXPECT_OK(weft_leakcheck_write(fd));
    readall(fd, page, sizeof page);
    close(fd);
    EXPECT_OK(weft_leakcheck_stop());
    EXPECT_OK(weft_chan_close(never));
    while (weft_profile_count("goroutine") > 1)
        weft_sleep(MS);
    weft_chan_free(never);
    return 0;
}

TEST(inprocess_coroutine_leak)
{
    run(2, leak_main, NULL);
    printf("%s\n%s\n", metrics, page);
    ASSERT_CONTAINS(metrics, "\nweft_leak_suspected{kind=\"coroutine\"} 1\n");
    ASSERT_CONTAINS(metrics, "# TYPE weft_open_fds gauge\n"
                             "weft_open_fds{kind=\"file\"} ");
    ASSERT_CONTAINS(page, "verdict: coroutine");
    ASSERT_CONTAINS(page, H_COROUTINE);
    ASSERT_CONTAINS(page, "[chan receive] oldest ");
    ASSERT_CONTAINS(page, "created at leak_main at ");
    ASSERT_CONTAINS(page, " [chan receive]:\nweft_chan_recv(...)");
    ASSERT_CONTAINS(page, "\nparked(...)\n");
}

TEST(inprocess_metrics_promtool)
{
    run(2, leak_main, NULL);
    promtool_check(metrics);
}

/* /debug/leaks over HTTP, monitor off: one sample taken then. */
static char resp[256 * 1024];

static int http_main(void *arg)
{
    (void)arg;
    int port = weft_debug_serve("127.0.0.1:0");
    ASSERT_GT(port, 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    int fd = weft_dial("tcp", addr);
    ASSERT_GE(fd, 0);
    const char req[] = "GET /debug/leaks HTTP/1.1\r\nHost: x\r\n"
                       "Connection: close\r\n\r\n";
    ASSERT_EQ(weft_write(fd, req, sizeof req - 1, NULL),
              (ssize_t)(sizeof req - 1));
    size_t n = 0;
    ssize_t r;
    while (n < sizeof resp - 1 &&
           (r = weft_read(fd, resp + n, sizeof resp - 1 - n)) > 0)
        n += (size_t)r;
    resp[n] = '\0';
    weft_close(fd);
    EXPECT_OK(weft_debug_stop());
    return 0;
}

TEST(debug_leaks_http)
{
    run(2, http_main, NULL);
    printf("%s\n", resp);
    ASSERT(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0);
    ASSERT_CONTAINS(resp, "Content-Type: text/plain");
    ASSERT_CONTAINS(resp, "\r\n\r\nleakcheck: off");
    ASSERT_CONTAINS(resp, "\nsamples (oldest first):\n");
    ASSERT_CONTAINS(resp, "\nfds opened through weft (");
    ASSERT_CONTAINS(resp, "opened by goroutine 1 at weft_debug_serve");
}
