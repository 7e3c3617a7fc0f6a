/*
 * test_metrics.c - weft_metrics_read / weft_metrics_write (metrics.c).
 *
 *  - read_*: bad input (NULL, a size below the first struct, no
 *    runtime), the size contract (bytes filled, a larger tail zeroed).
 *  - counters move by what a workload implies, on several Ps: spawns
 *    (created +N exactly, live up while they wait and back to 1),
 *    ping-pong (switches >= 2K, latency samples taken), an fd wait
 *    (netpoll waiters +1, then back), a held mutex and rwmutex (wait
 *    seconds grow by about the hold time), a long syscall (a hand-off),
 *    spawns from one P (steals).
 *  - text_*: Go's %g float forms; the exposition has every family, sorted,
 *    HELP and TYPE before samples, cumulative buckets with +Inf ==
 *    _count; and it passes the real `promtool check metrics` (skipped if
 *    promtool is missing).
 */
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "weft_test.h"

static struct weft_metrics snap(void)
{
    struct weft_metrics m;
    int r = weft_metrics_read(&m, sizeof m);
    ASSERT_EQ(r, (int)sizeof m);
    return m;
}

/* ------------------------------------------------------------ read_* */

static int bad_main(void *arg)
{
    (void)arg;
    struct weft_metrics m;
    EXPECT_ERR(weft_metrics_read(NULL, sizeof m), WEFT_EINVAL);
    EXPECT_ERR(weft_metrics_read(&m, 0), WEFT_EINVAL);
    /* Below the first published struct (which ended with the start
     * time); later fields only grow it. */
    EXPECT_ERR(weft_metrics_read(&m, offsetof(struct weft_metrics,
                                              process_start_time_ns)),
               WEFT_EINVAL);
    EXPECT_ERR(weft_metrics_write(-1), WEFT_EBADF);
    /* A newer caller's bigger struct: ours filled, the tail zeroed. */
    unsigned char big[sizeof m + 64];
    memset(big, 0xAA, sizeof big);
    ASSERT_EQ(weft_metrics_read((struct weft_metrics *)(void *)big,
                                sizeof big),
              (int)sizeof m);
    for (size_t i = sizeof m; i < sizeof big; i++)
        ASSERT_EQ(big[i], 0);
    memcpy(&m, big, sizeof m);
    ASSERT_EQ(m.procs, 3);
    ASSERT_GE(m.coroutines, 1);
    ASSERT_GE(m.threads, 1);
    ASSERT_EQ(m.sched_lat_bounds_ns[WEFT_METRICS_LAT_BUCKETS - 1], INT64_MAX);
    ASSERT_GT(m.process_start_time_ns, 0);
    ASSERT_GT(m.process_resident_memory_bytes, 0);
    ASSERT_GT(m.process_open_fds, 2);
    ASSERT_GT(m.process_max_fds, 0);
    return 0;
}

TEST(read_bad_input)
{
    struct weft_metrics m;
    EXPECT_ERR(weft_metrics_read(&m, sizeof m), WEFT_ENORUNTIME);
    EXPECT_ERR(weft_metrics_write(1), WEFT_ENORUNTIME);
    EXPECT_ERR(weft_metrics_read(NULL, sizeof m), WEFT_EINVAL);
    run(3, bad_main, NULL);
    EXPECT_ERR(weft_metrics_read(&m, sizeof m), WEFT_ENORUNTIME);
}

/* ------------------------------------------------------------ spawns */

#define NSPAWN 2000
static weft_chan_t *gate;
static weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;

static void waiter(void *arg)
{
    (void)arg;
    int v;
    weft_chan_recv(gate, &v);
    weft_waitgroup_done(&wg);
}

static int spawn_main(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_chan_new(&gate, sizeof(int), 0));
    struct weft_metrics a = snap();
    ASSERT_EQ(a.coroutines, 1);
    weft_waitgroup_add(&wg, NSPAWN);
    for (int i = 0; i < NSPAWN; i++)
        ASSERT_GT(weft_go(waiter, NULL), 0);
    wait_parked(0, WR_CHAN_RECEIVE, NSPAWN);
    struct weft_metrics b = snap();
    ASSERT_EQ(b.coroutines_created - a.coroutines_created, (uint64_t)NSPAWN);
    ASSERT_EQ(b.coroutines, NSPAWN + 1);
    EXPECT_OK(weft_chan_close(gate));
    EXPECT_OK(weft_waitgroup_wait(&wg));
    int64_t end = weft_now() + (int64_t)(5000 * MS * slow());
    struct weft_metrics c;
    while ((c = snap()).coroutines != 1 && weft_now() < end)
        weft_sleep(MS);
    ASSERT_EQ(c.coroutines, 1);
    ASSERT_EQ(c.coroutines_created, b.coroutines_created);
    weft_chan_free(gate);
    return 0;
}

TEST(spawn_counts)
{
    run(4, spawn_main, NULL);
}

/* --------------------------------------------------------- ping-pong */

#define NPING 200000
static weft_chan_t *ping, *pong;
static weft_waitgroup_t pong_wg = WEFT_WAITGROUP_INIT;

static void ponger(void *arg)
{
    (void)arg;
    int v;
    while (weft_chan_recv(ping, &v) == 0)
        weft_chan_send(pong, &v);
    weft_waitgroup_done(&pong_wg);
}

static int pingpong_main(void *arg)
{
    (void)arg;
    EXPECT_OK(weft_chan_new(&ping, sizeof(int), 0));
    EXPECT_OK(weft_chan_new(&pong, sizeof(int), 0));
    struct weft_metrics a = snap();
    weft_waitgroup_add(&pong_wg, 1);
    weft_go(ponger, NULL);
    for (int i = 0; i < NPING; i++) {
        EXPECT_OK(weft_chan_send(ping, &i));
        int v;
        EXPECT_OK(weft_chan_recv(pong, &v));
    }
    struct weft_metrics b = snap();
    weft_chan_close(ping);
    printf("switches %llu, latency samples %llu, sum %lld ns\n",
           (unsigned long long)(b.context_switches - a.context_switches),
           (unsigned long long)(b.sched_lat_count - a.sched_lat_count),
           (long long)(b.sched_lat_sum_ns - a.sched_lat_sum_ns));
    ASSERT_GE(b.context_switches - a.context_switches, 2ull * NPING);
    /* Each of the two Gs becomes runnable about NPING times; 1 in 256
     * of those is timed. */
    uint64_t samples = b.sched_lat_count - a.sched_lat_count;
    ASSERT_GE(samples, 2ull * NPING / 256 / 2);
    ASSERT_LE(samples, 4ull * NPING / 256 + 16);
    /* Count and sum consistent: every sample fits the histogram. */
    uint64_t sum = 0;
    for (int i = 0; i < WEFT_METRICS_LAT_BUCKETS; i++) {
        sum += b.sched_lat_counts[i];
        if (i > 0)
            ASSERT_GT(b.sched_lat_bounds_ns[i], b.sched_lat_bounds_ns[i - 1]);
    }
    ASSERT_EQ(sum, b.sched_lat_count);
    ASSERT_GT(b.sched_lat_sum_ns, 0);
    /* The mean lies inside the populated buckets' range. */
    int lo = 0, hi = WEFT_METRICS_LAT_BUCKETS - 1;
    while (b.sched_lat_counts[lo] == 0)
        lo++;
    while (b.sched_lat_counts[hi] == 0)
        hi--;
    double mean = (double)b.sched_lat_sum_ns / (double)b.sched_lat_count;
    ASSERT(mean <= (double)b.sched_lat_bounds_ns[hi]);
    ASSERT(lo == 0 || mean > (double)b.sched_lat_bounds_ns[lo - 1]);
    /* The ponger may still be reading ping (the leak gate lets it run
     * on after this body; ASan saw it use the freed channel). */
    EXPECT_OK(weft_waitgroup_wait(&pong_wg));
    weft_chan_free(ping);
    weft_chan_free(pong);
    return 0;
}

TEST(pingpong_switches_latency)
{
    run(2, pingpong_main, NULL);
}

/* ------------------------------------------------------------ netpoll */

static int pfd[2];
static _Atomic int readdone;

static void fdreader(void *arg)
{
    (void)arg;
    char c;
    ASSERT_EQ(weft_read(pfd[0], &c, 1), 1);
    atomic_store(&readdone, 1);
}

static int netpoll_main(void *arg)
{
    (void)arg;
    ASSERT_EQ(pipe2(pfd, O_NONBLOCK | O_CLOEXEC), 0);
    EXPECT_OK(weft_fd_open(pfd[0]));
    struct weft_metrics a = snap();
    ASSERT_EQ(a.netpoll_waiters, 0);
    weft_go(fdreader, NULL);
    wait_parked(0, WR_IO_WAIT, 1);
    ASSERT_EQ(snap().netpoll_waiters, 1);
    ASSERT_EQ(write(pfd[1], "x", 1), 1);
    int64_t end = weft_now() + (int64_t)(5000 * MS * slow());
    while (!atomic_load(&readdone) && weft_now() < end)
        weft_sleep(MS);
    ASSERT(atomic_load(&readdone));
    ASSERT_EQ(snap().netpoll_waiters, 0);
    weft_close(pfd[0]);
    close(pfd[1]);
    return 0;
}

TEST(netpoll_waiters)
{
    run(2, netpoll_main, NULL);
}

/* -------------------------------------------------------------- mutex */

#define HOLD (50 * MS)
static weft_mutex_t mu = WEFT_MUTEX_INIT;
static weft_rwmutex_t rw = WEFT_RWMUTEX_INIT;
static _Atomic int holding;

static void holder(void *arg)
{
    bool rwm = arg != NULL;
    if (rwm)
        weft_rwmutex_lock(&rw);
    else
        weft_mutex_lock(&mu);
    atomic_store(&holding, 1);
    /* The contender waits the whole HOLD: counted from its park. */
    wait_parked(0, rwm ? WR_SYNC_RWMUTEX_RLOCK : WR_SYNC_MUTEX_LOCK, 1);
    weft_sleep(HOLD);
    if (rwm)
        weft_rwmutex_unlock(&rw);
    else
        weft_mutex_unlock(&mu);
    weft_waitgroup_done(&wg);
}

static void contender(void *arg)
{
    bool rwm = arg != NULL;
    if (rwm) {
        weft_rwmutex_rlock(&rw);
        weft_rwmutex_runlock(&rw);
    } else {
        weft_mutex_lock(&mu);
        weft_mutex_unlock(&mu);
    }
    weft_waitgroup_done(&wg);
}

static void held(bool rwm, int64_t *waited, int64_t *took)
{
    struct weft_metrics a = snap();
    int64_t t0 = weft_now();
    atomic_store(&holding, 0);
    weft_waitgroup_add(&wg, 2);
    weft_go(holder, rwm ? &rw : NULL);
    while (!atomic_load(&holding))
        weft_sleep(100 * US);
    weft_go(contender, rwm ? &rw : NULL);
    EXPECT_OK(weft_waitgroup_wait(&wg));
    *took = weft_now() - t0;
    *waited = snap().mutex_wait_ns - a.mutex_wait_ns;
}

static int mutex_main(void *arg)
{
    (void)arg;
    int64_t waited, took;
    held(false, &waited, &took);
    printf("mutex: waited %lld ns of %lld\n", (long long)waited,
           (long long)took);
    ASSERT_GE(waited, HOLD);
    ASSERT_LE(waited, took);
    held(true, &waited, &took);
    printf("rwmutex: waited %lld ns of %lld\n", (long long)waited,
           (long long)took);
    ASSERT_GE(waited, HOLD);
    ASSERT_LE(waited, took);
    /* Uncontended locking adds nothing. */
    struct weft_metrics a = snap();
    for (int i = 0; i < 1000; i++) {
        weft_mutex_lock(&mu);
        weft_mutex_unlock(&mu);
    }
    ASSERT_EQ(snap().mutex_wait_ns, a.mutex_wait_ns);
    return 0;
}

TEST(mutex_wait_seconds)
{
    run(3, mutex_main, NULL);
}

/* --------------------------------------------- hand-offs and steals */

static void busy(void *arg)
{
    (void)arg;
    int64_t end = weft_now() + 2 * MS;
    while (weft_now() < end)
        weft_checkpoint();
    weft_waitgroup_done(&wg);
}

/* Stays in its syscall until sysmon has handed its P off (it retakes
 * one after 20 us when there is other work), at most 10 s: a fixed 50 ms
 * was not always enough on a loaded machine, where sysmon itself may not
 * get a CPU in time. */
static void sleeper_in_syscall(void *arg)
{
    uint64_t before = *(uint64_t *)arg;
    weft_syscall_enter();
    for (int i = 0; i < 2000; i++) {
        usleep(5 * 1000);
        struct weft_metrics m;
        if (weft_metrics_read(&m, sizeof m) > 0 &&
            m.syscall_handoffs > before)
            break;
    }
    weft_syscall_exit();
    weft_waitgroup_done(&wg);
}

static int handoff_main(void *arg)
{
    (void)arg;
    struct weft_metrics a = snap();
    weft_waitgroup_add(&wg, 1 + 64);
    weft_go(sleeper_in_syscall, &a.syscall_handoffs);
    for (int i = 0; i < 64; i++)
        weft_go(busy, NULL);
    EXPECT_OK(weft_waitgroup_wait(&wg));
    struct weft_metrics b = snap();
    printf("handoffs %llu steals %llu threads %lld\n",
           (unsigned long long)(b.syscall_handoffs - a.syscall_handoffs),
           (unsigned long long)(b.steals - a.steals), (long long)b.threads);
    ASSERT_GE(b.syscall_handoffs - a.syscall_handoffs, 1ull);
    ASSERT_GE(b.steals - a.steals, 1ull);
    ASSERT_GE(b.threads, 2);
    return 0;
}

TEST(handoffs_and_steals)
{
    run(4, handoff_main, NULL);
}

/* ---------------------------------------------------------------- text */

TEST(text_float_format)
{
    static const struct {
        double v;
        const char *s;
    } cases[] = {
        {8163328, "8.163328e+06"},
        {1e-9, "1e-09"},
        {1e-7, "1e-07"},
        {2e-7, "2e-07"},
        {123456, "123456"},
        {1e6, "1e+06"},
        {0.0001, "0.0001"},
        {0.00001, "1e-05"},
        {1.5, "1.5"},
        {100, "100"},
        {1, "1"},
        {0, "0"},
        {-2.5, "-2.5"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1e21, "1e+21"},
        {18446744073709551615.0, "1.8446744073709552e+19"},
        {12345.678, "12345.678"},
        {1.044e-05, "1.044e-05"},
        {1e100, "1e+100"},
        {5e-324, "5e-324"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        weft__metrics_fmtg(buf, sizeof buf, cases[i].v);
        ASSERT_STR_EQ(buf, cases[i].s);
    }
    weft__metrics_fmtg(buf, sizeof buf, 1.0 / 0.0);
    ASSERT_STR_EQ(buf, "+Inf");
    weft__metrics_fmtg(buf, sizeof buf, 0.0 / 0.0);
    ASSERT_STR_EQ(buf, "NaN");
}

static char text[256 * 1024];

static void spin(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        weft_yield();
    weft_waitgroup_done(&wg);
}

/* text_main - some work on several Ps, then the text into text[]. */
static int text_main(void *arg)
{
    (void)arg;
    weft_waitgroup_add(&wg, 100);
    for (int i = 0; i < 100; i++)
        weft_go(spin, NULL);
    EXPECT_OK(weft_waitgroup_wait(&wg));
    int fd = memfd_create("metrics", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    EXPECT_OK(weft_metrics_write(fd));
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    ASSERT_GT(n, 0);
    text[n] = '\0';
    close(fd);
    return 0;
}

static const char *const required[] = {
    "process_cpu_seconds_total counter",
    "process_max_fds gauge",
    "process_open_fds gauge",
    "process_resident_memory_bytes gauge",
    "process_start_time_seconds gauge",
    "process_virtual_memory_bytes gauge",
    "process_virtual_memory_max_bytes gauge",
    "weft_context_switches_total counter",
    "weft_coroutines gauge",
    "weft_coroutines_created_total counter",
    "weft_fds gauge",
    "weft_leak_suspected gauge",
    "weft_mutex_wait_seconds_total counter",
    "weft_netpoll_waiters gauge",
    "weft_open_fds gauge",
    "weft_procs gauge",
    "weft_sched_latencies_seconds histogram",
    "weft_steals_total counter",
    "weft_syscall_handoffs_total counter",
    "weft_threads gauge",
};

TEST(text_families)
{
    run(3, text_main, NULL);
    printf("%s", text);
    /* Every required family, with HELP then TYPE, in sorted order. */
    char prev[128] = "";
    const char *at = text;
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        char want[160];
        snprintf(want, sizeof want, "\n# TYPE %s\n", required[i]);
        const char *t = strstr(text, want + 1) == text ? text
                                                       : strstr(text, want);
        if (t == NULL)
            FAIL("no line '# TYPE %s'", required[i]);
        ASSERT(t >= at);
        at = t;
    }
    size_t nt = 0;
    for (char *l = text; *l != '\0'; l = strchr(l, '\n') + 1) {
        char name[128];
        if (sscanf(l, "# TYPE %127s", name) == 1) {
            ASSERT(strcmp(prev, name) < 0);
            snprintf(prev, sizeof prev, "%s", name);
            nt++;
        }
        if (strchr(l, '\n') == NULL)
            FAIL("text does not end with a newline");
    }
    ASSERT_EQ(nt, sizeof required / sizeof required[0]);
    /* Histogram: cumulative buckets, +Inf == _count. */
    unsigned long long last = 0, v, count = 0;
    int nb = 0;
    bool inf = false;
    for (char *l = strstr(text, "weft_sched_latencies_seconds_bucket");
         l != NULL && strncmp(l, "weft_sched_latencies_seconds_bucket", 35) == 0;
         l = strchr(l, '\n') + 1) {
        char le[32];
        ASSERT_EQ(sscanf(l, "weft_sched_latencies_seconds_bucket{le=\"%31[^\"]\"} %llu",
                         le, &v),
                  2);
        ASSERT_GE(v, last);
        last = v;
        nb++;
        inf = strcmp(le, "+Inf") == 0;
    }
    ASSERT_EQ(nb, WEFT_METRICS_LAT_BUCKETS);
    ASSERT(inf);
    const char *c = strstr(text, "\nweft_sched_latencies_seconds_count ");
    ASSERT(c != NULL);
    ASSERT_EQ(sscanf(c + 1, "weft_sched_latencies_seconds_count %llu", &count),
              1);
    ASSERT_EQ(count, last);
    ASSERT_GT(count, 0ull);
    ASSERT_CONTAINS(text, "\nweft_procs 3\n");
    ASSERT_CONTAINS(text, "weft_sched_latencies_seconds_bucket{le=\"1e-07\"}");
}

TEST(text_promtool)
{
    run(3, text_main, NULL);
    promtool_check(text);
}
