/*
 * test_pprof.c - the goroutine, threadcreate, block and mutex profiles
 * and coroutine labels (profile/profiles.c), checked with the real
 * `go tool pprof` (never a parser of our own for the proto): every
 * profile is written inside a runtime to a file in /tmp, then read by
 * pprof after weft_main returned.
 *
 *  - goroutine_*: N coroutines parked in a known function show up as one
 *    sample of count N whose stack starts at the public call
 *    (weft_chan_recv <- blocker); the totals of -top, the debug=1 text
 *    and weft_profile_count agree.
 *  - labels_*: the API's limits and errors; inheritance by spawned
 *    coroutines (and theirs); -tagfocus selects exactly the labelled.
 *  - block_*: coroutines blocked a measured time: the profile's delay
 *    is within 20% of it; rate 0 records nothing; sampled rates.
 *  - mutex_*: a holder's stack is charged, the waiters' is not.
 *  - threadcreate_*: one record per M created.
 *  - badinput_*: documented errors, never a crash.
 *  - stress_*: many coroutines on several Ps, profiles taken while they
 *    churn labels, channels and mutexes.
 * Tests that need `go` skip when it is not on PATH.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "weft_test.h"

/* ------------------------------------------------------------ helpers */

#define NEED_GO()                                                              \
    do {                                                                       \
        if (!harness_have_tool("go"))                                          \
            SKIP("go (go tool pprof) is not installed");                       \
    } while (0)

static char pout[4 * 1024 * 1024], perr[256 * 1024];

/* pprof - `go tool pprof args...` (NULL-terminated); asserts exit 0. */
static const char *pprof(const char *a, ...)
{
    const char *argv[32] = {"go", "tool", "pprof"};
    int n = 3;
    va_list ap;
    va_start(ap, a);
    for (const char *s = a; s != NULL && n < 31; s = va_arg(ap, const char *))
        argv[n++] = s;
    va_end(ap);
    argv[n] = NULL;
    static const char *const env[] = {"PPROF_TMPDIR=/tmp", NULL};
    int status = 0;
    int r = harness_run(argv, env, pout, sizeof pout, perr, sizeof perr,
                        &status);
    if (r < 0)
        FAIL("go tool pprof: %s", strerror(-r));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("go tool pprof %s %s failed: %s", argv[3], argv[n - 1], perr);
    return pout;
}

static char paths[8][128];

/* tpath - a fresh file name for profile k of this test. */
static const char *tpath(int k, const char *tag)
{
    snprintf(paths[k], sizeof paths[k], "/tmp/weft-pprof-%d-%s",
             (int)getpid(), tag);
    return paths[k];
}

static void cleanup(void)
{
    for (int k = 0; k < 8; k++)
        if (paths[k][0])
            unlink(paths[k]);
}

/* writep - weft_profile_write(name, debug) into path; asserts 0. */
static void writep(const char *name, int debug, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    int r = weft_profile_write(name, fd, debug);
    close(fd);
    if (r != 0)
        FAIL("weft_profile_write(%s, %d) = %d (%s)", name, debug, r,
             weft_err_name(r));
}

static char *slurp(const char *path)
{
    static char buf[4 * 1024 * 1024];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    ASSERT_GE(n, 0);
    buf[n] = '\0';
    return buf;
}

/* total - N of -top's "Showing nodes accounting for X, P% of N total". */
static int64_t top_total(const char *out)
{
    const char *p = strstr(out, "% of ");
    if (p == NULL)
        FAIL("no total in -top output: %.400s", out);
    return strtoll(p + 5, NULL, 10);
}

/* top_shown - X of -top's "Showing nodes accounting for X, ...": what
 * the filters (-tagfocus ...) kept; the total stays the whole profile. */
static int64_t top_shown(const char *out)
{
    const char *p = strstr(out, "accounting for ");
    if (p == NULL)
        FAIL("no 'accounting for' in -top output: %.400s", out);
    return strtoll(p + 15, NULL, 10);
}

/*
 * rawsum - from `pprof -raw`: the sum of value idx over the samples
 * whose stack has a location naming func (any of its inline lines).
 */
static double rawsum(const char *raw, const char *func, int idx, int *nsamp)
{
    /* Locations: "  id: 0xaddr M=1 fn file:line s=0" then inline lines. */
    static bool has[100000];
    memset(has, 0, sizeof has);
    const char *loc = strstr(raw, "\nLocations\n");
    if (loc == NULL)
        FAIL("no Locations in -raw output: %.400s", raw);
    char pat[256];
    snprintf(pat, sizeof pat, " %s ", func);
    long cur = -1;
    for (const char *l = loc + 11; *l && strncmp(l, "Mappings", 8) != 0;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char line[1024];
        snprintf(line, sizeof line, "%.*s ", (int)len, l);
        char *colon = strchr(line, ':');
        char *end;
        long id = strtol(line, &end, 10);
        if (colon != NULL && end == colon && id > 0)
            cur = id;
        if (cur > 0 && cur < 100000 && strstr(line, pat) != NULL)
            has[cur] = true;
        l += len + (e != NULL);
    }
    double sum = 0;
    int ns = 0;
    const char *smp = strstr(raw, "Samples:\n");
    if (smp == NULL)
        FAIL("no Samples in -raw output");
    smp = strchr(smp + 9, '\n') + 1; /* the sample types line */
    for (const char *l = smp; l < loc;) {
        const char *e = strchr(l, '\n');
        size_t len = (size_t)(e - l);
        char line[4096];
        snprintf(line, sizeof line, "%.*s", (int)len, l);
        l = e + 1;
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue; /* a label line */
        *colon = '\0';
        double v[2] = {0, 0};
        char *p = line;
        for (int i = 0; i < 2; i++)
            v[i] = strtod(p, &p);
        bool hit = false;
        for (char *q = colon + 1; *q;) {
            char *qe;
            long id = strtol(q, &qe, 10);
            if (qe == q)
                break;
            if (id > 0 && id < 100000 && has[id])
                hit = true;
            q = qe;
        }
        if (hit) {
            sum += v[idx];
            ns++;
        }
    }
    if (nsamp != NULL)
        *nsamp = ns;
    return sum;
}

/* ----------------------------------------------------- goroutine profile */

static weft_chan_t *gch;
static weft_waitgroup_t gwg = WEFT_WAITGROUP_INIT;

__attribute__((noinline)) static void blocker(void *arg)
{
    (void)arg;
    weft_chan_recv(gch, NULL);
    weft_waitgroup_done(&gwg);
    __asm__ volatile("" ::: "memory"); /* no tail call */
}

__attribute__((noinline)) static void otherblocker(void *arg)
{
    (void)arg;
    weft_chan_recv(gch, NULL);
    weft_waitgroup_done(&gwg);
    __asm__ volatile("" ::: "memory");
}

enum { NBLOCK = 100, NOTHER = 7 };
static int64_t gcount;

/* goroutine_profiles - the count into gcount, then the profile as proto
 * (paths[0]) and as debug=1 text (paths[1]). */
static void goroutine_profiles(void)
{
    gcount = weft_profile_count("goroutine");
    writep("goroutine", 0, paths[0]);
    writep("goroutine", 1, paths[1]);
}

static int goroutine_main(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_chan_new(&gch, 1, 0), 0);
    weft_waitgroup_add(&gwg, NBLOCK + NOTHER);
    for (int i = 0; i < NBLOCK; i++)
        ASSERT_GT(weft_go(blocker, NULL), 0);
    for (int i = 0; i < NOTHER; i++)
        ASSERT_GT(weft_go(otherblocker, NULL), 0);
    wait_parked(0, WR_CHAN_RECEIVE, NBLOCK + NOTHER);
    /* A coroutine counts as parked just before its M has switched away;
     * let the switches finish, so an M that does not answer the freeze
     * (TSan's idle ones) has no coroutine half-parked. */
    weft_sleep(10 * MS);
    goroutine_profiles();
    weft_chan_close(gch);
    weft_waitgroup_wait(&gwg);
    weft_chan_free(gch);
    return 0;
}

TEST(goroutine_parked_counts)
{
    NEED_GO();
    tpath(0, "g.pb");
    tpath(1, "g.txt");
    run(4, goroutine_main, NULL);
    ASSERT_EQ(gcount, NBLOCK + NOTHER + 1);
    /* -traces: one sample of count NBLOCK: weft_chan_recv, then blocker. */
    const char *t = pprof("-traces", paths[0], NULL);
    char want[128];
    snprintf(want, sizeof want, "%d   ", NBLOCK);
    const char *s = strstr(t, want);
    ASSERT(s != NULL);
    const char *end = strstr(s, "-----------+");
    ASSERT(end != NULL);
    const char *recv = strstr(s, "weft_chan_recv");
    const char *blk = strstr(s, "blocker");
    ASSERT(recv != NULL && blk != NULL && recv < blk && blk < end);
    ASSERT(strstr(s, "otherblocker") == NULL || strstr(s, "otherblocker") > end);
    /* No weft-internal frame other than the leaf's inlined ones. */
    ASSERT(strstr(t, "weft__park") == NULL);
    ASSERT(strstr(t, "weft__wait_park") == NULL);
    ASSERT(strstr(t, "weft__ctx_start") == NULL);
    /* -top: the total is every coroutine. */
    ASSERT_EQ(top_total(pprof("-top", paths[0], NULL)), gcount);
    int ns = 0;
    ASSERT_EQ((int64_t)rawsum(pprof("-raw", paths[0], NULL), "blocker", 0,
                              &ns),
              NBLOCK);
    ASSERT_EQ(ns, 1);
    ASSERT_EQ((int64_t)rawsum(pout, "otherblocker", 0, NULL), NOTHER);

    /* debug=1: Go's text; the counts add up to the total. */
    char *txt = slurp(paths[1]);
    char hdr[64];
    snprintf(hdr, sizeof hdr, "goroutine profile: total %" PRId64 "\n",
             gcount);
    ASSERT(strncmp(txt, hdr, strlen(hdr)) == 0);
    snprintf(want, sizeof want, "\n%d @ 0x", NBLOCK);
    s = strstr(txt, want);
    ASSERT(s != NULL);
    const char *f1 = strstr(s, "\n#\t0x");
    ASSERT(f1 != NULL);
    ASSERT(strncmp(strchr(f1 + 3, '\t') + 1, "weft_chan_recv+0x", 17) == 0);
    ASSERT(strstr(s, "\tblocker+0x") != NULL);
    int64_t sum = 0;
    for (const char *l = txt; (l = strchr(l, '\n')) != NULL;) {
        l++;
        if (*l >= '1' && *l <= '9')
            sum += strtoll(l, NULL, 10);
    }
    ASSERT_EQ(sum, gcount);
    ASSERT_EQ(top_total(pprof("-symbolize=none", "-top", paths[1], NULL)),
              gcount);
    if (!getenv("KEEP")) cleanup();
}

/* ---------------------------------------------------- unavailable stacks */

/* A coroutine whose M blocks the freeze signal keeps running through a
 * goroutine profile: its stack cannot be read, and the sample must still
 * land on a node (with none, pprof counts it in the total and nowhere
 * else), carrying its labels. */
static _Atomic int spinstate; /* 1: spinning with SIGURG blocked; 2: stop */

__attribute__((noinline)) static void urgblocked(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_label_set("spin", "yes"), 0);
    sigset_t urg, old;
    sigemptyset(&urg);
    sigaddset(&urg, SIGURG);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &urg, &old), 0);
    atomic_store(&spinstate, 1);
    while (atomic_load(&spinstate) != 2)
        __asm__ volatile("" ::: "memory");
    ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    weft_waitgroup_done(&gwg);
}

static int unavailable_main(void *arg)
{
    (void)arg;
    weft_waitgroup_add(&gwg, 1);
    ASSERT_GT(weft_go(urgblocked, NULL), 0);
    while (atomic_load(&spinstate) != 1)
        weft_sleep(1 * MS);
    goroutine_profiles();
    atomic_store(&spinstate, 2);
    weft_waitgroup_wait(&gwg);
    return 0;
}

TEST(goroutine_unavailable_stack_named)
{
    NEED_GO();
    tpath(0, "u.pb");
    tpath(1, "u.txt");
    run(2, unavailable_main, NULL);
    ASSERT_EQ(gcount, 2);
    const char *top = pprof("-top", paths[0], NULL);
    ASSERT_EQ(top_total(top), 2);
    ASSERT_EQ(top_shown(top), 2);
    ASSERT(strstr(top, "weft.stack_unavailable") != NULL);
    ASSERT_EQ(top_shown(pprof("-tagfocus=spin=yes", "-nodefraction=0",
                              "-focus=weft.stack_unavailable", "-top",
                              paths[0], NULL)),
              1);
    /* debug=1 names it too, and go tool pprof reads the text. */
    char *txt = slurp(paths[1]);
    ASSERT(strstr(txt, "\tweft.stack_unavailable+0x0\n") != NULL);
    ASSERT(strstr(txt, "# labels: {\"spin\":\"yes\"}") != NULL);
    ASSERT_EQ(top_shown(pprof("-symbolize=none", "-top", paths[1], NULL)),
              2);
    if (!getenv("KEEP")) cleanup();
}

/* ---------------------------------------------------------------- labels */

static weft_chan_t *lch;
static weft_waitgroup_t lwg = WEFT_WAITGROUP_INIT;

__attribute__((noinline)) static void grandkid(void *arg)
{
    (void)arg;
    char buf[16];
    ASSERT_EQ(weft_label_get("job", buf, sizeof buf), 5);
    ASSERT_STR_EQ(buf, "batch");
    weft_chan_recv(lch, NULL);
    weft_waitgroup_done(&lwg);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void labeled(void *arg)
{
    if ((intptr_t)arg == 0)
        ASSERT_EQ(weft_label_set("role", "special"), 0);
    weft_waitgroup_add(&lwg, 1);
    ASSERT_GT(weft_go(grandkid, NULL), 0);
    weft_chan_recv(lch, NULL);
    weft_waitgroup_done(&lwg);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void plain(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_label_get("job", NULL, 0), WEFT_ENOENT);
    weft_chan_recv(lch, NULL);
    weft_waitgroup_done(&lwg);
    __asm__ volatile("" ::: "memory");
}

enum { NLAB = 5, NPLAIN = 3 };

static int labels_main(void *arg)
{
    (void)arg;
    char key[300], buf[300];
    /* Errors and limits. */
    ASSERT_EQ(weft_label_set(NULL, "v"), WEFT_EINVAL);
    ASSERT_EQ(weft_label_set("", "v"), WEFT_EINVAL);
    memset(key, 'k', 256);
    key[256] = '\0';
    ASSERT_EQ(weft_label_set(key, "v"), WEFT_EINVAL);
    ASSERT_EQ(weft_label_set("k", key), WEFT_EINVAL);
    key[255] = '\0';
    ASSERT_EQ(weft_label_set(key, key), 0);
    ASSERT_EQ(weft_label_get(key, buf, sizeof buf), 255);
    ASSERT_STR_EQ(buf, key);
    ASSERT_EQ(weft_label_get(key, buf, 3), 255);
    ASSERT_STR_EQ(buf, "kk");
    ASSERT_EQ(weft_label_get(key, NULL, 0), 255);
    ASSERT_EQ(weft_label_get(NULL, buf, 3), WEFT_EINVAL);
    ASSERT_EQ(weft_label_get("k", NULL, 3), WEFT_EINVAL);
    ASSERT_EQ(weft_label_get("nope", buf, 3), WEFT_ENOENT);
    ASSERT_EQ(weft_label_set(key, NULL), 0);
    ASSERT_EQ(weft_label_get(key, buf, 3), WEFT_ENOENT);
    ASSERT_EQ(weft_label_set("absent", NULL), 0);
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof key, "k%02d", 63 - i); /* reverse order */
        ASSERT_EQ(weft_label_set(key, "x"), 0);
    }
    ASSERT_EQ(weft_label_set("k64", "x"), WEFT_EINVAL);
    ASSERT_EQ(weft_label_set("k10", "replaced"), 0); /* full, replace ok */
    ASSERT_EQ(weft_label_get("k10", buf, sizeof buf), 8);
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof key, "k%02d", i);
        ASSERT_EQ(weft_label_get(key, buf, sizeof buf), i == 10 ? 8 : 1);
        ASSERT_EQ(weft_label_set(key, NULL), 0);
    }
    ASSERT_EQ(weft_label_get("k00", buf, sizeof buf), WEFT_ENOENT);

    /* Inheritance. */
    ASSERT_EQ(weft_chan_new(&lch, 1, 0), 0);
    weft_waitgroup_add(&lwg, NLAB + NPLAIN);
    for (int i = 0; i < NPLAIN; i++)
        ASSERT_GT(weft_go(plain, NULL), 0);
    ASSERT_EQ(weft_label_set("job", "batch"), 0);
    ASSERT_EQ(weft_label_set("esc", "a\"b\\c\td"), 0);
    for (intptr_t i = 0; i < NLAB; i++)
        ASSERT_GT(weft_go(labeled, (void *)i), 0);
    wait_parked(0, WR_CHAN_RECEIVE, 2 * NLAB + NPLAIN);
    writep("goroutine", 0, paths[0]);
    writep("goroutine", 1, paths[1]);
    ASSERT_EQ(weft_label_set("esc", NULL), 0);
    weft_chan_close(lch);
    weft_waitgroup_wait(&lwg);
    weft_chan_free(lch);
    return 0;
}

TEST(labels_api_and_tagfocus)
{
    ASSERT_EQ(weft_label_set("a", "b"), WEFT_ENOTCORO);
    ASSERT_EQ(weft_label_get("a", NULL, 0), WEFT_ENOTCORO);
    NEED_GO();
    tpath(0, "l.pb");
    tpath(1, "l.txt");
    run(3, labels_main, NULL);
    /* main + NLAB children + NLAB grandchildren carry job=batch. */
    ASSERT_EQ(top_shown(pprof("-tagfocus=job=batch", "-nodefraction=0",
                              "-top", paths[0], NULL)),
              2 * NLAB + 1);
    ASSERT_EQ(top_shown(pprof("-tagfocus=role=special", "-nodefraction=0",
                              "-top", paths[0], NULL)),
              2);
    ASSERT_EQ(top_shown(pprof("-tagignore=job=batch", "-nodefraction=0",
                              "-top", paths[0], NULL)),
              NPLAIN);
    const char *t = pprof("-tags", paths[0], NULL);
    ASSERT(strstr(t, "batch") != NULL && strstr(t, "special") != NULL);
    char *txt = slurp(paths[1]);
    ASSERT(strstr(txt, "\n# labels: {\"esc\":\"a\\\"b\\\\c\\td\", "
                       "\"job\":\"batch\", \"role\":\"special\"}\n") != NULL);
    ASSERT(strstr(txt, "\n# labels: {\"esc\":\"a\\\"b\\\\c\\td\", "
                       "\"job\":\"batch\"}\n") != NULL);
    if (!getenv("KEEP")) cleanup();
}

/* ---------------------------------------------------------- block profile */

enum { NBW = 8 };
static weft_chan_t *bch;
static _Atomic int64_t bwaited; /* ns the blockwaiters measured */
static int64_t bfirst;           /* bwaited after the first round */
static weft_waitgroup_t bwg = WEFT_WAITGROUP_INIT;

__attribute__((noinline)) static void blockwait(void *arg)
{
    (void)arg;
    int64_t t0 = weft_now();
    weft_chan_recv(bch, NULL);
    atomic_fetch_add(&bwaited, weft_now() - t0);
    weft_waitgroup_done(&bwg);
    __asm__ volatile("" ::: "memory");
}

static int block_main(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_set_block_profile_rate(5), 0);
    ASSERT_EQ(weft_set_block_profile_rate(1), 5);
    ASSERT_EQ(weft_chan_new(&bch, 1, 0), 0);
    weft_waitgroup_add(&bwg, NBW);
    for (int i = 0; i < NBW; i++)
        ASSERT_GT(weft_go(blockwait, NULL), 0);
    wait_parked(0, WR_CHAN_RECEIVE, NBW);
    weft_sleep(100 * MS);
    char c = 0;
    for (int i = 0; i < NBW; i++)
        ASSERT_EQ(weft_chan_send(bch, &c), 0);
    weft_waitgroup_wait(&bwg);
    bfirst = atomic_load(&bwaited);
    ASSERT_GE(weft_profile_count("block"), 1);
    writep("block", 0, paths[0]);
    writep("block", 1, paths[1]);
    /* Off: nothing more is recorded. */
    ASSERT_EQ(weft_set_block_profile_rate(0), 1);
    ASSERT(weft__contention_hook == NULL);
    int64_t before = weft_profile_count("block");
    weft_waitgroup_add(&bwg, NBW);
    for (int i = 0; i < NBW; i++)
        ASSERT_GT(weft_go(blockwait, NULL), 0);
    wait_parked(0, WR_CHAN_RECEIVE, NBW);
    weft_sleep(20 * MS);
    for (int i = 0; i < NBW; i++)
        ASSERT_EQ(weft_chan_send(bch, &c), 0);
    weft_waitgroup_wait(&bwg);
    ASSERT_EQ(weft_profile_count("block"), before);
    writep("block", 0, paths[2]);
    weft_chan_free(bch);
    return 0;
}

TEST(block_delay_within_20pct)
{
    NEED_GO();
    tpath(0, "b.pb");
    tpath(1, "b.txt");
    tpath(2, "b2.pb");
    run(4, block_main, NULL);
    int ns = 0;
    double delay = rawsum(pprof("-raw", paths[0], NULL), "blockwait", 1, &ns);
    double count = rawsum(pout, "blockwait", 0, NULL);
    ASSERT_EQ((int64_t)count, NBW);
    /* The first round: each waited 100 ms or more, as it measured
     * itself (a loaded machine wakes them late; the profile must say so). */
    double measured = (double)bfirst;
    ASSERT_GE(measured, NBW * 100.0 * MS);
    ASSERT_GE(delay, measured * 0.8);
    ASSERT_LE(delay, measured * 1.2);
    /* The same numbers after switching off (nothing new). */
    double delay2 = rawsum(pprof("-raw", paths[2], NULL), "blockwait", 1,
                           NULL);
    ASSERT_EQ((int64_t)delay2, (int64_t)delay);
    const char *t = pprof("-traces", paths[0], NULL);
    const char *recv = strstr(t, "weft_chan_recv");
    ASSERT(recv != NULL && strstr(recv, "blockwait") != NULL);
    /* debug=1: Go's contention text, which pprof loads. */
    char *txt = slurp(paths[1]);
    ASSERT(strncmp(txt, "--- contention:\ncycles/second=1000000000\n", 41) ==
           0);
    ASSERT(strstr(txt, "\tblockwait+0x") != NULL);
    pprof("-symbolize=none", "-raw", paths[1], NULL);
    ASSERT(strstr(pout, "contentions/count delay/nanoseconds") != NULL);
    if (!getenv("KEEP")) cleanup();
}

/* Sampled: 2000 waits of ~1 ms at rate 10 ms: each is kept with
 * probability 1/10 and then counts 10 events of 10 ms, so the totals
 * stay unbiased (Go 1.19's saveblockevent). */
static int sampled_main(void *arg)
{
    (void)arg;
    weft_set_block_profile_rate(10 * MS);
    ASSERT_EQ(weft_chan_new(&bch, 1, 0), 0);
    atomic_store(&bwaited, 0);
    int rounds = SANITIZED ? 50 : 200, per = 10;
    char c = 0;
    for (int r = 0; r < rounds; r++) {
        weft_waitgroup_add(&bwg, per);
        for (int i = 0; i < per; i++)
            ASSERT_GT(weft_go(blockwait, NULL), 0);
        wait_parked(0, WR_CHAN_RECEIVE, per);
        weft_sleep(1 * MS);
        for (int i = 0; i < per; i++)
            ASSERT_EQ(weft_chan_send(bch, &c), 0);
        weft_waitgroup_wait(&bwg);
    }
    writep("block", 0, paths[0]);
    weft_chan_free(bch);
    *(int *)arg = rounds * per;
    return 0;
}

TEST(block_sampled_unbiased)
{
    NEED_GO();
    tpath(0, "bs.pb");
    int n = 0;
    run(2, sampled_main, &n);
    double delay = rawsum(pprof("-raw", paths[0], NULL), "blockwait", 1, NULL);
    double count = rawsum(pout, "blockwait", 0, NULL);
    double measured = (double)atomic_load(&bwaited);
    /* ~n/10 samples kept (sd ~ 1/sqrt(n/10)): within 2x either way. */
    ASSERT_GE(delay, measured / 2);
    ASSERT_LE(delay, measured * 2);
    ASSERT_GE(count, n / 2.0 * 0.5);
    ASSERT_LE(count, n * 2.0 * 2);
    if (!getenv("KEEP")) cleanup();
}

/* ---------------------------------------------------------- mutex profile */

static weft_mutex_t mu = WEFT_MUTEX_INIT;
static weft_waitgroup_t mwg = WEFT_WAITGROUP_INIT;
static _Atomic bool holding;

__attribute__((noinline)) static void waiter(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        while (!atomic_load(&holding))
            weft_sleep(100 * US);
        weft_mutex_lock(&mu);
        weft_mutex_unlock(&mu);
        weft_sleep(1 * MS);
    }
    weft_waitgroup_done(&mwg);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void holder(int rounds, int nw)
{
    for (int r = 0; r < rounds; r++) {
        weft_mutex_lock(&mu);
        atomic_store(&holding, true);
        wait_parked(0, WR_SYNC_MUTEX_LOCK, nw);
        weft_sleep(20 * MS);
        atomic_store(&holding, false);
        weft_mutex_unlock(&mu);
        weft_sleep(5 * MS);
    }
    __asm__ volatile("" ::: "memory");
}

enum { NMW = 6 };

static int mutex_main(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_set_mutex_profile_fraction(1), 0);
    ASSERT_EQ(weft_set_mutex_profile_fraction(-1), 1);
    ASSERT(weft__contention_hook != NULL);
    weft_waitgroup_add(&mwg, NMW);
    for (int i = 0; i < NMW; i++)
        ASSERT_GT(weft_go(waiter, NULL), 0);
    holder(5, NMW);
    weft_waitgroup_wait(&mwg);
    ASSERT_GE(weft_profile_count("mutex"), 1);
    writep("mutex", 0, paths[0]);
    writep("mutex", 1, paths[1]);
    ASSERT_EQ(weft_set_mutex_profile_fraction(0), 1);
    ASSERT(weft__contention_hook == NULL);
    return 0;
}

TEST(mutex_charges_holder)
{
    NEED_GO();
    tpath(0, "m.pb");
    tpath(1, "m.txt");
    run(4, mutex_main, NULL);
    double hd = rawsum(pprof("-raw", paths[0], NULL), "holder", 1, NULL);
    double wd = rawsum(pout, "waiter", 1, NULL);
    double hc = rawsum(pout, "holder", 0, NULL);
    /* Each round, the first waiter waited ~20 ms on the holder. */
    ASSERT_GE(hc, 5);
    ASSERT_GE(hd, 5 * 20.0 * MS * 0.8);
    ASSERT_LE(wd, hd / 10);
    const char *t = pprof("-traces", paths[0], NULL);
    const char *u = strstr(t, "weft_mutex_unlock");
    ASSERT(u != NULL && strstr(u, "holder") != NULL);
    ASSERT(strstr(t, "weft_mutex_lock") == NULL); /* waiters' side */
    char *txt = slurp(paths[1]);
    ASSERT(strncmp(txt,
                   "--- mutex:\ncycles/second=1000000000\nsampling "
                   "period=1\n",
                   53) == 0);
    ASSERT(strstr(txt, "\tholder+0x") != NULL);
    pprof("-symbolize=none", "-raw", paths[1], NULL);
    if (!getenv("KEEP")) cleanup();
}

/* An rwmutex charges its holders too, both ways: a writer's hold that
 * readers waited out (weft_rwmutex_unlock wakes them), and a reader's
 * hold that a writer waited out (weft_rwmutex_runlock releases it), as
 * Go's mutex profile charges RWMutex.Unlock and RUnlock. */
static weft_rwmutex_t rwm = WEFT_RWMUTEX_INIT;
enum { NRW = 4 };

static void rw_reader(void *arg)
{
    (void)arg;
    weft_rwmutex_rlock(&rwm);
    weft_rwmutex_runlock(&rwm);
    weft_waitgroup_done(&mwg);
}

static void rw_writer(void *arg)
{
    (void)arg;
    weft_rwmutex_lock(&rwm);
    weft_rwmutex_unlock(&rwm);
    weft_waitgroup_done(&mwg);
}

__attribute__((noinline)) static void rw_write_holder(void)
{
    weft_rwmutex_lock(&rwm);
    weft_waitgroup_add(&mwg, NRW);
    for (int i = 0; i < NRW; i++)
        ASSERT_GT(weft_go(rw_reader, NULL), 0);
    wait_parked(0, WR_SYNC_RWMUTEX_RLOCK, NRW);
    weft_sleep(30 * MS);
    weft_rwmutex_unlock(&rwm);
    weft_waitgroup_wait(&mwg);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void rw_read_holder(void)
{
    weft_rwmutex_rlock(&rwm);
    weft_waitgroup_add(&mwg, 1);
    ASSERT_GT(weft_go(rw_writer, NULL), 0);
    wait_parked(0, WR_SYNC_RWMUTEX_LOCK, 1);
    weft_sleep(30 * MS);
    weft_rwmutex_runlock(&rwm);
    weft_waitgroup_wait(&mwg);
    __asm__ volatile("" ::: "memory");
}

static int rwmutex_main(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_set_mutex_profile_fraction(1), 0);
    rw_write_holder();
    rw_read_holder();
    writep("mutex", 0, paths[0]);
    ASSERT_EQ(weft_set_mutex_profile_fraction(0), 1);
    return 0;
}

TEST(mutex_charges_rwmutex_holders)
{
    NEED_GO();
    tpath(0, "rw.pb");
    run(2, rwmutex_main, NULL);
    pprof("-raw", paths[0], NULL);
    double wd = rawsum(pout, "rw_write_holder", 1, NULL);
    double wc = rawsum(pout, "rw_write_holder", 0, NULL);
    double rd = rawsum(pout, "rw_read_holder", 1, NULL);
    /* Each of the NRW readers waited ~30 ms on the writer; the writer
     * ~30 ms on the reader. */
    ASSERT_GE(wc, NRW);
    ASSERT_GE(wd, NRW * 30.0 * MS * 0.8);
    ASSERT_GE(rd, 30.0 * MS * 0.8);
    const char *t = pprof("-traces", paths[0], NULL);
    ASSERT_CONTAINS(t, "weft_rwmutex_unlock");
    ASSERT_CONTAINS(t, "weft_rwmutex_runlock");
    if (!getenv("KEEP")) cleanup();
}

/* ----------------------------------------------------------- threadcreate */

__attribute__((noinline)) static void spinner(void *arg)
{
    int64_t end = weft_now() + 30 * MS;
    while (weft_now() < end)
        ;
    weft_waitgroup_done(arg);
}

static int64_t tcount, tms;

static int threadcreate_main(void *arg)
{
    (void)arg;
    weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
    weft_waitgroup_add(&wg, 8);
    for (int i = 0; i < 8; i++)
        weft_go(spinner, &wg);
    weft_waitgroup_wait(&wg);
    weft__lock(&weft__sched.lock);
    tms = 0;
    for (struct m *mp = weft__sched.allm; mp != NULL; mp = mp->alllink)
        tms++;
    weft__unlock(&weft__sched.lock);
    tcount = weft_profile_count("threadcreate");
    writep("threadcreate", 0, paths[0]);
    writep("threadcreate", 1, paths[1]);
    return 0;
}

TEST(threadcreate_one_per_m)
{
    NEED_GO();
    tpath(0, "t.pb");
    tpath(1, "t.txt");
    run(4, threadcreate_main, NULL);
    ASSERT_GE(tms, 2);
    ASSERT_EQ(tcount, tms);
    ASSERT_EQ(top_total(pprof("-top", paths[0], NULL)), tcount);
    pprof("-raw", paths[0], NULL);
    ASSERT(strstr(pout, "weft_main") != NULL);
    char *txt = slurp(paths[1]);
    char hdr[64];
    snprintf(hdr, sizeof hdr, "threadcreate profile: total %" PRId64 "\n",
             tcount);
    ASSERT(strncmp(txt, hdr, strlen(hdr)) == 0);
    ASSERT_EQ(top_total(pprof("-symbolize=none", "-top", paths[1], NULL)),
              tcount);
    if (!getenv("KEEP")) cleanup();
}

/* -------------------------------------------------------------- bad input */

static intptr_t joiner(void *arg)
{
    return pthread_join(*(pthread_t *)arg, NULL);
}

static void *plainthread(void *arg)
{
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    *(int *)arg = weft_profile_write("goroutine", fd, 1);
    close(fd);
    return NULL;
}

static int badinput_main(void *arg)
{
    (void)arg;
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(weft_profile_write(NULL, fd, 0), WEFT_EINVAL);
    ASSERT_EQ(weft_profile_write("heap", fd, 0), WEFT_EINVAL);
    ASSERT_EQ(weft_profile_write("goroutine", fd, -1), WEFT_EINVAL);
    ASSERT_EQ(weft_profile_write("goroutine", fd, 3), WEFT_EINVAL);
    ASSERT_EQ(weft_profile_write("block", -1, 0), WEFT_EBADF);
    ASSERT_EQ(weft_profile_write("goroutine", 987, 0), WEFT_EBADF);
    ASSERT_EQ(weft_profile_count(NULL), WEFT_EINVAL);
    ASSERT_EQ(weft_profile_count("cpu"), WEFT_EINVAL);
    ASSERT_EQ(weft_profile_count("goroutine"), 1);
    for (int d = 0; d <= 2; d++) {
        ASSERT_EQ(weft_profile_write("goroutine", fd, d), 0);
        ASSERT_EQ(weft_profile_write("threadcreate", fd, d), 0);
        ASSERT_EQ(weft_profile_write("block", fd, d), 0);
        ASSERT_EQ(weft_profile_write("mutex", fd, d), 0);
    }
    close(fd);
    /* A closed pipe: the write's error (SIGPIPE is ignored). */
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    close(p[0]);
    ASSERT_EQ(weft_profile_write("goroutine", p[1], 1), -EPIPE);
    ASSERT_EQ(weft_profile_write("threadcreate", p[1], 0), -EPIPE);
    close(p[1]);
    /* From a plain thread while the runtime runs. */
    pthread_t th;
    int r = 1;
    ASSERT_EQ(pthread_create(&th, NULL, plainthread, &r), 0);
    ASSERT_EQ(weft_blocking(joiner, &th), 0);
    ASSERT_EQ(r, 0);
    return 0;
}

TEST(badinput_errors)
{
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    /* No runtime: the goroutine profile needs one; the recorded ones
     * can be written after the runtime ended. */
    ASSERT_EQ(weft_profile_write("goroutine", fd, 0), WEFT_ENORUNTIME);
    ASSERT_EQ(weft_profile_count("goroutine"), WEFT_ENORUNTIME);
    ASSERT_EQ(weft_profile_write("nope", fd, 0), WEFT_EINVAL);
    ASSERT_EQ(weft_profile_write("block", fd, 1), 0);
    ASSERT_EQ(weft_profile_count("mutex"), 0);
    ASSERT_EQ(weft_set_mutex_profile_fraction(-5), 0);
    ASSERT_EQ(weft_set_block_profile_rate(-5), 0);
    close(fd);
    run(2, badinput_main, NULL);
}

/* ----------------------------------------------------------------- stress */

static weft_mutex_t smu = WEFT_MUTEX_INIT;
static _Atomic bool sstop;
static int64_t scounter;

__attribute__((noinline)) static void churner(void *arg)
{
    weft_chan_t *c = arg;
    char key[8], val[8];
    for (int i = 0; !atomic_load(&sstop); i++) {
        snprintf(key, sizeof key, "k%d", i % 5);
        snprintf(val, sizeof val, "v%d", i % 3);
        ASSERT_EQ(weft_label_set(key, (i & 4) ? NULL : val), 0);
        weft_mutex_lock(&smu);
        scounter++;
        weft_mutex_unlock(&smu);
        char x = 0;
        if (i & 1)
            weft_chan_send_dl(c, &x, weft_now() + 1 * MS);
        else
            weft_chan_recv_dl(c, &x, weft_now() + 1 * MS);
        if (i % 16 == 0)
            weft_yield();
    }
    weft_waitgroup_done(&gwg);
    __asm__ volatile("" ::: "memory");
}

static int stress_main(void *arg)
{
    (void)arg;
    int n = SANITIZED ? 300 : 3000;
    weft_set_block_profile_rate(1);
    weft_set_mutex_profile_fraction(2);
    ASSERT_EQ(weft_label_set("stress", "yes"), 0);
    weft_chan_t *c;
    ASSERT_EQ(weft_chan_new(&c, 1, 4), 0);
    weft_waitgroup_add(&gwg, n);
    for (int i = 0; i < n; i++)
        ASSERT_GT(weft_go(churner, c), 0);
    for (int k = 0; k < 4; k++) {
        writep("goroutine", 0, paths[0]);
        writep("goroutine", 1, paths[1]);
        writep("block", 0, paths[2]);
        writep("mutex", 1, paths[3]);
        weft_sleep(10 * MS);
    }
    atomic_store(&sstop, true);
    weft_waitgroup_wait(&gwg);
    weft_chan_free(c);
    weft_set_block_profile_rate(0);
    weft_set_mutex_profile_fraction(0);
    *(int *)arg = n;
    return 0;
}

TEST_TIMEOUT(stress_profiles_while_churning, 120)
{
    NEED_GO();
    tpath(0, "s.pb");
    tpath(1, "s.txt");
    tpath(2, "sb.pb");
    tpath(3, "sm.txt");
    int n = 0;
    run(8, stress_main, &n);
    /* Every churner carries stress=yes (inherited); main does too. */
    int64_t all = top_total(pprof("-top", paths[0], NULL));
    ASSERT_EQ(top_shown(pprof("-tagfocus=stress=yes", "-nodefraction=0",
                              "-top", paths[0], NULL)),
              all);
    ASSERT_GE(all, n + 1);
    char *txt = slurp(paths[1]);
    int64_t total = strtoll(txt + strlen("goroutine profile: total "), NULL,
                            10);
    ASSERT_GE(total, n + 1);
    int64_t sum = 0;
    for (const char *l = txt; (l = strchr(l, '\n')) != NULL;) {
        l++;
        if (*l >= '1' && *l <= '9')
            sum += strtoll(l, NULL, 10);
    }
    ASSERT_EQ(sum, total);
    pprof("-raw", paths[2], NULL);
    pprof("-symbolize=none", "-raw", paths[3], NULL);
    if (!getenv("KEEP")) cleanup();
}
