/*
 * test_schedtrace.c - WEFTDEBUG / WEFTTRACEBACK parsing (debugvars.c) and
 * Go's scheduler trace (schedtrace.c, sysmon.c).
 *
 *  - parse_*: weft__debug_parse in-process (white box), stderr captured
 *    in a memfd: the values it sets, one warning line per bad item, a
 *    fuzz run against an independent oracle.
 *  - badenv_*: the same through a real program (schedprog debug): bad
 *    settings warn once each, the program runs and exits 0, good items
 *    mixed with bad ones still take effect.
 *  - runq_*: white box, WEFTMAXPROCS=1: the main coroutine queues Gs
 *    locally and globally without yielding, then calls weft__schedtrace
 *    with stderr on a pipe: the figures add up to exactly those Gs.
 *  - periodic_*: schedprog work|idle|yield with schedtrace=100 (and
 *    scheddetail=1): every line of stderr has Go's exact shape, the
 *    reports come every ~100 ms (also while every P idles, or while
 *    sysmon's tick has grown to 10 ms), and the detailed ones list
 *    every P, M and live coroutine.
 *
 * The path of schedprog comes from the SCHEDPROG environment variable
 * (set by meson), else it is looked up next to this binary.
 */
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "weft_test.h"

/* ------------------------------------------------------------ helpers */

static const char *schedprog(void)
{
    return harness_sibling("SCHEDPROG", "schedprog");
}

static char out[64 * 1024], err[4 * 1024 * 1024];
static double wall_ms; /* how long the last child ran */

/* prog - run `schedprog scenario` with env on top of ours (WEFTDEBUG,
 * WEFTTRACEBACK and WEFTMAXPROCS unset unless env sets them); asserts
 * it exits 0. Output in out/err. */
static void prog(const char *scenario, const char *const env[])
{
    const char *all[16];
    int n = 0;
    all[n++] = "WEFTDEBUG";
    all[n++] = "WEFTTRACEBACK";
    all[n++] = "WEFTMAXPROCS";
    for (int i = 0; env != NULL && env[i] != NULL && n < 15; i++)
        all[n++] = env[i];
    all[n] = NULL;
    const char *const argv[] = {schedprog(), scenario, NULL};
    int status = 0;
    double t0 = harness_mono();
    int r = harness_run(argv, all, out, sizeof out, err, sizeof err, &status);
    wall_ms = (harness_mono() - t0) * 1000;
    if (r < 0)
        FAIL("harness_run(%s %s): %s", argv[0], scenario, strerror(-r));
    char st[96];
    printf("schedprog %s (", scenario);
    for (int i = 3; i < n; i++)
        printf("%s%s", i > 3 ? " " : "", all[i]);
    printf("): %s, %.0f ms\n--- stdout:\n%s--- stderr:\n%s---\n",
           harness_status_str(status, st, sizeof st), wall_ms, out, err);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("schedprog %s: %s", scenario, st);
}

/* Lines of a buffer, split in place (the buffer is changed). */
#define MAXLINES 200000
static char *lines[MAXLINES];

static int split_lines(char *s)
{
    int n = 0;
    while (*s != '\0') {
        if (n == MAXLINES)
            FAIL("more than %d lines", MAXLINES);
        lines[n++] = s;
        char *nl = strchr(s, '\n');
        if (nl == NULL)
            FAIL("a line without its newline: \"%s\"", s);
        *nl = '\0';
        s = nl + 1;
    }
    return n;
}

/* A compiled POSIX extended regex with up to 12 groups. The patterns
 * are compiled once into static storage and never freed (LeakSanitizer
 * sees them reachable). */
struct rx {
    bool ready;
    regex_t re;
    regmatch_t m[13];
};

static void rx_init(struct rx *r, const char *pattern)
{
    if (r->ready)
        return;
    r->ready = true;
    int e = regcomp(&r->re, pattern, REG_EXTENDED);
    if (e != 0) {
        char msg[256];
        regerror(e, &r->re, msg, sizeof msg);
        FAIL("regcomp(%s): %s", pattern, msg);
    }
}

static bool rx_match(struct rx *r, const char *s)
{
    return regexec(&r->re, s, 13, r->m, 0) == 0;
}

/* rx_num - group i of the last match as a number. */
static int64_t rx_num(struct rx *r, const char *s, int i)
{
    if (r->m[i].rm_so < 0)
        FAIL("group %d did not match in \"%s\"", i, s);
    if (strncmp(s + r->m[i].rm_so, "nil", 3) == 0)
        return -1;
    return strtoll(s + r->m[i].rm_so, NULL, 10);
}

/* rx_str - group i of the last match into buf. */
static const char *rx_str(struct rx *r, const char *s, int i, char *buf,
                          size_t n)
{
    size_t len = (size_t)(r->m[i].rm_eo - r->m[i].rm_so);
    if (len >= n)
        len = n - 1;
    memcpy(buf, s + r->m[i].rm_so, len);
    buf[len] = '\0';
    return buf;
}

/* Go 1.20-1.25's shapes (shared/go-formats.md section 1), exactly. */
#define SUMMARY_RE(procs, list)                                               \
    "^SCHED ([0-9]+)ms: gomaxprocs=" procs " idleprocs=([0-9]+) "             \
    "threads=([0-9]+) spinningthreads=([0-9]+) needspinning=([01]) "          \
    "idlethreads=([0-9]+) runqueue=([0-9]+) " list "$"
#define SUMMARY2_RE SUMMARY_RE("2", "\\[([0-9]+) ([0-9]+)\\]")
#define DETAIL_RE(procs)                                                      \
    "^SCHED ([0-9]+)ms: gomaxprocs=" procs " idleprocs=([0-9]+) "             \
    "threads=([0-9]+) spinningthreads=([0-9]+) needspinning=([01]) "          \
    "idlethreads=([0-9]+) runqueue=([0-9]+) gcwaiting=false "                 \
    "nmidlelocked=0 stopwait=0 sysmonwait=(false|true)$"
#define P_RE                                                                  \
    "^  P([0-9]+): status=([012]) schedtick=([0-9]+) syscalltick=([0-9]+) "  \
    "m=(nil|[0-9]+) runqsize=([0-9]+) gfreecnt=([0-9]+) timerslen=([0-9]+)$"
#define M_RE                                                                  \
    "^  M([0-9]+): p=(nil|[0-9]+) curg=(nil|[0-9]+) mallocing=0 "            \
    "throwing=0 preemptoff= locks=0 dying=0 spinning=(false|true) "           \
    "blocked=(false|true) lockedg=nil$"
#define G_RE                                                                  \
    "^  G([0-9]+): status=(1|2|3|4|6)\\((.*)\\) m=(nil|[0-9]+) "              \
    "lockedm=nil$"

static bool known_waitreason(const char *s)
{
    for (int i = 0; i < WR__COUNT; i++)
        if (strcmp(weft__waitreason_string(i), s) == 0)
            return true;
    return false;
}

/* ---------------------------------------------- capturing our stderr */

/* Run f(arg) with fd 2 on a memfd (no pipe: thousands of warnings must
 * not block on a full pipe nobody reads yet); the text into buf. */
static void capture(void (*f)(void *), void *arg, char *buf, size_t n)
{
    int fd = memfd_create("stderr", MFD_CLOEXEC);
    ASSERT(fd >= 0);
    int saved = dup(2);
    ASSERT(saved >= 0);
    ASSERT_EQ(dup2(fd, 2), 2);
    f(arg);
    ASSERT_EQ(dup2(saved, 2), 2);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_CUR);
    ASSERT(size >= 0);
    if ((size_t)size >= n)
        FAIL("captured %lld bytes, more than %zu", (long long)size, n - 1);
    ASSERT_EQ(pread(fd, buf, (size_t)size, 0), size);
    buf[size] = '\0';
    close(fd);
}

/* ------------------------------------------------------------ parsing */

static void do_parse(void *arg)
{
    (void)arg;
    weft__debug_parse();
}

/* setvar - name=val, or unset for NULL. */
static void setvar(const char *name, const char *val)
{
    if (val == NULL)
        unsetenv(name);
    else
        setenv(name, val, 1);
}

static char perr[1 << 20];

/* parse - weft__debug_parse with these variables; returns the number of
 * warning lines, each checked to be one well-formed line. */
static int parse(const char *debug, const char *traceback)
{
    setvar("WEFTDEBUG", debug);
    setvar("WEFTTRACEBACK", traceback);
    capture(do_parse, NULL, perr, sizeof perr);
    int n = 0;
    for (const char *s = perr; *s != '\0'; n++) {
        const char *nl = strchr(s, '\n');
        if (nl == NULL)
            FAIL("warning without a newline: \"%s\"", s);
        if (strncmp(s, "weft: WEFTDEBUG: ", 17) != 0 &&
            strncmp(s, "weft: WEFTTRACEBACK=", 20) != 0)
            FAIL("not a warning line: \"%.*s\"", (int)(nl - s), s);
        if (nl - s > 400)
            FAIL("a warning line of %d bytes", (int)(nl - s));
        s = nl + 1;
    }
    return n;
}

struct pcase {
    const char *debug, *traceback;
    int schedtrace, scheddetail, sigquitcontinue, traceback_level;
    int warnings;
};

TEST(parse_table)
{
    static const struct pcase cases[] = {
        {NULL, NULL, 0, 0, 0, TB_SINGLE, 0},
        {"schedtrace=100", NULL, 100, 0, 0, TB_SINGLE, 0},
        {"schedtrace=0", NULL, 0, 0, 0, TB_SINGLE, 0},
        {"schedtrace=007", NULL, 7, 0, 0, TB_SINGLE, 0},
        {"schedtrace=2147483647", NULL, INT32_MAX, 0, 0, TB_SINGLE, 0},
        {"schedtrace=100,scheddetail=1,sigquitdump=continue", NULL, 100, 1,
         1, TB_SINGLE, 0},
        {"scheddetail=1,scheddetail=0", NULL, 0, 0, 0, TB_SINGLE, 0},
        {"sigquitdump=continue,sigquitdump=exit", NULL, 0, 0, 0, TB_SINGLE,
         0},
        {",schedtrace=100,", NULL, 100, 0, 0, TB_SINGLE, 0},
        {"schedtrace=50,schedtrace=70", NULL, 70, 0, 0, TB_SINGLE, 0},
        /* empty items are no items */
        {"", NULL, 0, 0, 0, TB_SINGLE, 0},
        {",,,", NULL, 0, 0, 0, TB_SINGLE, 0},
        {",", NULL, 0, 0, 0, TB_SINGLE, 0},
        /* one warning per bad item, the rest applies */
        {"foo=1", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"foo", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"=", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"=5", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"==", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"SCHEDTRACE=10", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=abc", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=-5", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=+5", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace= 5", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=5 ", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=10x", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=0x10", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=1e3", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=5=5", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=2147483648", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=99999999999999999999999999", NULL, 0, 0, 0, TB_SINGLE,
         1},
        {"scheddetail=2", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"scheddetail=true", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"scheddetail=", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"sigquitdump=maybe", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"sigquitdump=EXIT", NULL, 0, 0, 0, TB_SINGLE, 1},
        {" schedtrace=5", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"foo\nbar=1", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"schedtrace=\x01\x7f\"\\", NULL, 0, 0, 0, TB_SINGLE, 1},
        {"foo=1,schedtrace=50,scheddetail=2,bar,sigquitdump=continue", NULL,
         50, 0, 1, TB_SINGLE, 3},
        {"schedtrace=50,schedtrace=x", NULL, 50, 0, 0, TB_SINGLE, 1},
        {"scheddetail=1,,bogus=3,,schedtrace=-1,schedtrace=20", NULL, 20, 1,
         0, TB_SINGLE, 2},
        /* WEFTTRACEBACK */
        {NULL, "none", 0, 0, 0, TB_NONE, 0},
        {NULL, "single", 0, 0, 0, TB_SINGLE, 0},
        {NULL, "all", 0, 0, 0, TB_ALL, 0},
        {NULL, "system", 0, 0, 0, TB_SYSTEM, 0},
        {NULL, "crash", 0, 0, 0, TB_CRASH, 0},
        {NULL, "0", 0, 0, 0, TB_NONE, 0},
        {NULL, "1", 0, 0, 0, TB_ALL, 0},
        {NULL, "2", 0, 0, 0, TB_SYSTEM, 0},
        {NULL, "", 0, 0, 0, TB_SINGLE, 0},
        {NULL, "bogus", 0, 0, 0, TB_SINGLE, 1},
        {NULL, "3", 0, 0, 0, TB_SINGLE, 1},
        {NULL, "ALL", 0, 0, 0, TB_SINGLE, 1},
        {NULL, "all ", 0, 0, 0, TB_SINGLE, 1},
        {NULL, "all,system", 0, 0, 0, TB_SINGLE, 1},
        {"foo", "bar", 0, 0, 0, TB_SINGLE, 2},
        {"schedtrace=10", "all", 10, 0, 0, TB_ALL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct pcase *c = &cases[i];
        /* Dirty state first: every parse must start from the defaults. */
        parse("schedtrace=999,scheddetail=1,sigquitdump=continue", "crash");
        int w = parse(c->debug, c->traceback);
        printf("WEFTDEBUG=%s WEFTTRACEBACK=%s -> %d %d %d %d, %d "
               "warning(s):\n%s",
               c->debug ? c->debug : "(unset)",
               c->traceback ? c->traceback : "(unset)",
               (int)weft__debug.schedtrace, (int)weft__debug.scheddetail,
               (int)weft__debug.sigquitcontinue, weft__debug.traceback, w,
               perr);
        ASSERT_EQ(weft__debug.schedtrace, c->schedtrace);
        ASSERT_EQ(weft__debug.scheddetail, c->scheddetail);
        ASSERT_EQ(weft__debug.sigquitcontinue, c->sigquitcontinue);
        ASSERT_EQ(weft__debug.traceback, c->traceback_level);
        ASSERT_EQ(w, c->warnings);
    }
}

TEST(parse_messages)
{
    ASSERT_EQ(parse("foo=1", NULL), 1);
    ASSERT_STR_EQ(perr, "weft: WEFTDEBUG: unknown setting \"foo=1\", "
                        "ignored\n");
    ASSERT_EQ(parse("schedtrace=abc", NULL), 1);
    ASSERT_STR_EQ(perr, "weft: WEFTDEBUG: schedtrace=\"abc\" is not a number "
                        "of milliseconds, ignored\n");
    ASSERT_EQ(parse("schedtrace=-5", NULL), 1);
    ASSERT_STR_EQ(perr, "weft: WEFTDEBUG: schedtrace=\"-5\" is not a number "
                        "of milliseconds, ignored\n");
    ASSERT_EQ(parse("schedtrace=2147483648", NULL), 1);
    ASSERT_STR_EQ(perr, "weft: WEFTDEBUG: schedtrace=\"2147483648\" is more "
                        "than 2147483647 milliseconds, ignored\n");
    ASSERT_EQ(parse("schedtrace", NULL), 1);
    ASSERT_STR_EQ(perr, "weft: WEFTDEBUG: schedtrace has no value (want "
                        "schedtrace=...), ignored\n");
    ASSERT_EQ(parse("scheddetail=2", NULL), 1);
    ASSERT_STR_EQ(perr, "weft: WEFTDEBUG: scheddetail=\"2\" is not 0 or 1, "
                        "ignored\n");
    ASSERT_EQ(parse("sigquitdump=maybe", NULL), 1);
    ASSERT_STR_EQ(perr, "weft: WEFTDEBUG: sigquitdump=\"maybe\" is not exit "
                        "or continue, ignored\n");
    ASSERT_EQ(parse("a\nb\"c\\", NULL), 1);
    ASSERT_STR_EQ(perr, "weft: WEFTDEBUG: unknown setting "
                        "\"a\\x0ab\\\"c\\\\\", ignored\n");
    ASSERT_EQ(parse(NULL, "bogus"), 1);
    ASSERT_STR_EQ(perr, "weft: WEFTTRACEBACK=\"bogus\" is not none, single, "
                        "all, system, crash, 0, 1 or 2; using single\n");
}

/* Long inputs: one bounded line per bad item, never a crash. */
TEST(parse_long)
{
    size_t n = 1 << 20;
    char *s = malloc(n + 1);
    ASSERT(s != NULL);
    memset(s, 'a', n);
    s[n] = '\0';
    ASSERT_EQ(parse(s, s), 2);
    memcpy(s, "schedtrace=", 11);
    memset(s + 11, '9', n - 11);
    ASSERT_EQ(parse(s, NULL), 1);
    ASSERT_CONTAINS(perr, "is more than 2147483647 milliseconds");
    /* 5000 bad items and good ones between them */
    size_t k = 0;
    for (int i = 0; i < 5000; i++)
        k += (size_t)sprintf(s + k, "x%d,schedtrace=%d,", i, i);
    ASSERT_EQ(parse(s, NULL), 5000);
    ASSERT_EQ(weft__debug.schedtrace, 4999);
    free(s);
}

/* oracle_bad - whether a WEFTDEBUG item is bad, computed independently of
 * debugvars.c (from the spec in the top comment there). */
static bool oracle_bad(const char *s, size_t len)
{
    const char *eq = memchr(s, '=', len);
    if (eq == NULL)
        return true;
    size_t k = (size_t)(eq - s), v = len - k - 1;
    const char *val = eq + 1;
    if (k == 10 && memcmp(s, "schedtrace", 10) == 0) {
        if (v == 0)
            return true;
        unsigned long long x = 0;
        for (size_t i = 0; i < v; i++) {
            if (val[i] < '0' || val[i] > '9')
                return true;
            if (x <= INT32_MAX)
                x = x * 10 + (unsigned)(val[i] - '0');
        }
        return x > INT32_MAX;
    }
    if (k == 11 && memcmp(s, "scheddetail", 11) == 0)
        return !(v == 1 && (val[0] == '0' || val[0] == '1'));
    if (k == 11 && memcmp(s, "sigquitdump", 11) == 0)
        return !((v == 4 && memcmp(val, "exit", 4) == 0) ||
                 (v == 8 && memcmp(val, "continue", 8) == 0));
    return true;
}

TEST(parse_fuzz)
{
    static const char *const pieces[] = {
        "schedtrace", "scheddetail", "sigquitdump", "=", "=", ",", ",", "0",
        "1", "2", "100", "-", "exit", "continue", "x", "\n", "\x01", "\xff",
        "2147483647", "2147483648", " ", "\"", "\\", "99999999999"};
    const size_t npieces = sizeof pieces / sizeof pieces[0];
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    char s[2048];
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = 0;
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int npick = (int)(seed >> 60) * 3;
        for (int i = 0; i < npick; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            const char *p = pieces[(seed >> 33) % npieces];
            size_t pl = strlen(p);
            if (len + pl >= sizeof s)
                break;
            memcpy(s + len, p, pl);
            len += pl;
        }
        s[len] = '\0';
        int bad = 0;
        for (const char *p = s; *p != '\0';) {
            const char *c = strchr(p, ',');
            size_t il = c ? (size_t)(c - p) : strlen(p);
            if (il > 0 && oracle_bad(p, il))
                bad++;
            p += il;
            if (*p == ',')
                p++;
        }
        int w = parse(s, NULL);
        if (w != bad)
            FAIL("WEFTDEBUG=\"%s\": %d warnings, the oracle says %d "
                 "bad items; stderr:\n%s",
                 s, w, bad, perr);
    }
}

/* -------------------------------------------- bad settings, for real */

static int count_prefix(const char *s, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = s; *p != '\0';) {
        if (strncmp(p, prefix, pl) == 0)
            n++;
        const char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return n;
}

TEST(badenv_each_warns_once_and_runs)
{
    static const struct {
        const char *val;
        int warnings;
    } cases[] = {
        {"foo=1", 1},         {"schedtrace=abc", 1}, {"schedtrace=-5", 1},
        {"scheddetail=2", 1}, {"sigquitdump=maybe", 1},
        {"", 0},              {",,,", 0},             {"=", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char var[128];
        snprintf(var, sizeof var, "WEFTDEBUG=%s", cases[i].val);
        const char *const env[] = {var, NULL};
        prog("debug", env);
        ASSERT_STR_EQ(out, "schedtrace=0 scheddetail=0 sigquitcontinue=0 "
                           "traceback=1\nok\n");
        /* nothing on stderr but the warnings */
        ASSERT_EQ(count_prefix(err, ""), cases[i].warnings);
        ASSERT_EQ(count_prefix(err, "weft: WEFTDEBUG: "), cases[i].warnings);
    }
}

TEST(badenv_good_items_still_apply)
{
    static struct rx sum;
    rx_init(&sum, SUMMARY2_RE);
    {
        const char *const env[] = {
            "WEFTDEBUG=foo=1,schedtrace=50,scheddetail=2,"
            "sigquitdump=continue",
            "WEFTMAXPROCS=2", NULL};
        prog("debug", env);
        ASSERT_STR_EQ(out, "schedtrace=50 scheddetail=0 sigquitcontinue=1 "
                           "traceback=1\nok\n");
        ASSERT_EQ(count_prefix(err, "weft: WEFTDEBUG: "), 2);
        int n = split_lines(err), sched = 0;
        for (int i = 0; i < n; i++) {
            if (strncmp(lines[i], "weft: ", 6) == 0)
                continue;
            if (!rx_match(&sum, lines[i]))
                FAIL("not a summary line: \"%s\"", lines[i]);
            sched++;
        }
        /* 250 ms at 50 ms: at least a few */
        ASSERT_GE(sched, 2);
    }
    {
        const char *const env[] = {
            "WEFTDEBUG=scheddetail=1,bogus=3,schedtrace=50",
            "WEFTTRACEBACK=all", "WEFTMAXPROCS=2", NULL};
        prog("debug", env);
        ASSERT_STR_EQ(out, "schedtrace=50 scheddetail=1 sigquitcontinue=0 "
                           "traceback=2\nok\n");
        ASSERT_EQ(count_prefix(err, "weft: WEFTDEBUG: "), 1);
        ASSERT_GE(count_prefix(err, "SCHED "), 2);
        ASSERT_GE(count_prefix(err, "  P0: "), 2);
        ASSERT_GE(count_prefix(err, "  M"), 2);
        ASSERT_GE(count_prefix(err, "  G1: "), 2);
    }
}

TEST(badenv_traceback_warns_once)
{
    const char *const env[] = {"WEFTTRACEBACK=bogus", NULL};
    prog("debug", env);
    ASSERT_STR_EQ(out, "schedtrace=0 scheddetail=0 sigquitcontinue=0 "
                       "traceback=1\nok\n");
    ASSERT_EQ(count_prefix(err, ""), 1);
    ASSERT_EQ(count_prefix(err, "weft: WEFTTRACEBACK=\"bogus\" "), 1);
}

/* ------------------------------------------------- white box: run queues */

static char terr[1 << 20];

static void do_trace(void *arg)
{
    weft__schedtrace(arg != NULL);
}

static _Atomic int ran; /* how many nothing()s have run */

static void nothing(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
}

static _Atomic int received; /* how many receive()s have returned */

static void receive(void *arg)
{
    int v;
    weft_chan_recv((weft_chan_t *)arg, &v);
    atomic_fetch_add(&received, 1);
}

struct sender {
    weft_chan_t *c;
    int k;
    int sent;
};

/* A plain thread (no M, no P): a G it readies goes to the global queue
 * (weft__ready_any). */
static void *send_from_outside(void *arg)
{
    struct sender *s = arg;
    for (int i = 0; i < s->k; i++) {
        int v = i;
        if (weft_chan_trysend(s->c, &v) == 0)
            s->sent++;
    }
    return NULL;
}

struct runq_case {
    int local;  /* Gs spawned without yielding: runnext + ring */
    int global; /* Gs readied from outside: the global queue */
};

/* check_trace - the summary and the detailed report of a single-P
 * runtime whose main G runs while exactly c->local Gs sit on P0 and
 * c->global on the global queue. */
static void check_trace(const struct runq_case *c)
{
    static struct rx sum, det, pl, gl, ml;
    rx_init(&sum, SUMMARY_RE("1", "\\[([0-9]+)\\]"));
    rx_init(&det, DETAIL_RE("1"));
    rx_init(&pl, P_RE);
    rx_init(&gl, G_RE);
    rx_init(&ml, M_RE);

    capture(do_trace, NULL, terr, sizeof terr);
    printf("%s", terr);
    int n = split_lines(terr);
    ASSERT_EQ(n, 1);
    if (!rx_match(&sum, lines[0]))
        FAIL("not a summary line: \"%s\"", lines[0]);
    ASSERT_EQ(rx_num(&sum, lines[0], 7), c->global); /* runqueue */
    ASSERT_EQ(rx_num(&sum, lines[0], 8), c->local);  /* [P0] */
    ASSERT_EQ(rx_num(&sum, lines[0], 2), 0);         /* idleprocs */
    ASSERT_EQ(rx_num(&sum, lines[0], 5), 0);         /* needspinning */

    capture(do_trace, "detail", terr, sizeof terr);
    n = split_lines(terr);
    ASSERT_GE(n, 3);
    if (!rx_match(&det, lines[0]))
        FAIL("not a detailed line: \"%s\"", lines[0]);
    ASSERT_EQ(rx_num(&det, lines[0], 7), c->global);
    if (!rx_match(&pl, lines[1]))
        FAIL("not a P line: \"%s\"", lines[1]);
    ASSERT_EQ(rx_num(&pl, lines[1], 1), 0);
    ASSERT_EQ(rx_num(&pl, lines[1], 2), P_RUNNING);
    ASSERT_EQ(rx_num(&pl, lines[1], 6), c->local); /* runqsize */
    int64_t p0m = rx_num(&pl, lines[1], 5);
    ASSERT_GE(p0m, 0);
    int i = 2, ms = 0, runnable = 0, running = 0;
    bool p0m_listed = false;
    for (; i < n && rx_match(&ml, lines[i]); i++, ms++)
        if (rx_num(&ml, lines[i], 1) == p0m) {
            p0m_listed = true;
            /* the M of P0 runs G1 on P0 */
            ASSERT_EQ(rx_num(&ml, lines[i], 2), 0);
            ASSERT_EQ(rx_num(&ml, lines[i], 3), weft_self());
        }
    ASSERT(p0m_listed);
    ASSERT_GE(ms, 1);
    for (; i < n; i++) {
        if (!rx_match(&gl, lines[i]))
            FAIL("not a G line: \"%s\"", lines[i]);
        char reason[64];
        if (!known_waitreason(rx_str(&gl, lines[i], 3, reason,
                                     sizeof reason)))
            FAIL("unknown wait reason in \"%s\"", lines[i]);
        int64_t st = rx_num(&gl, lines[i], 2);
        runnable += st == G_RUNNABLE;
        if (st == G_RUNNING) {
            running++;
            ASSERT_EQ(rx_num(&gl, lines[i], 1), weft_self());
            ASSERT_EQ(rx_num(&gl, lines[i], 4), p0m);
        } else {
            ASSERT_EQ(rx_num(&gl, lines[i], 4), -1); /* m=nil */
        }
    }
    ASSERT_EQ(running, 1);
    /* Every runnable G is counted in a queue, and only those. */
    ASSERT_EQ(runnable, c->local + c->global);
}

#define DISTURBED 100 /* runq_main: sysmon preempted us, try again */

static int runq_main(void *arg)
{
    const struct runq_case *c = arg;
    weft_chan_t *ch = NULL;
    EXPECT_OK(weft_chan_new(&ch, sizeof(int), 0));
    for (int i = 0; i < c->global; i++)
        ASSERT_GT(weft_go(receive, ch), 0);
    if (c->global > 0)
        wait_parked(0, WR_CHAN_RECEIVE, c->global);
    /* From here on no yield: the Gs stay where they are put. Spawning
     * puts each in runnext and moves the one before to the ring. A
     * spawn can take 150 us under TSan: sysmon would see P0 stuck on
     * this G for 10 ms and preempt it at its next spawn. So this G
     * starts a new time slice on P0 as a scheduler tick would (white
     * box; it runs on P0, whose owner is the only writer). */
    struct p *pp = weft__getm()->p;
    for (int i = 0; i < c->local; i++) {
        ASSERT_GT(weft_go(nothing, NULL), 0);
        STORE(&pp->slicetick, LOAD(&pp->slicetick) + 1);
    }
    if (c->global > 0) {
        /* Blocks this M (and its only P) in pthread_join: nobody runs
         * the readied Gs, they stay on the global queue. */
        struct sender s = {ch, c->global, 0};
        pthread_t t;
        ASSERT_EQ(pthread_create(&t, NULL, send_from_outside, &s), 0);
        ASSERT_EQ(pthread_join(t, NULL), 0);
        ASSERT_EQ(s.sent, c->global);
    }
    /* With one P, a spawned G that ran means this G was preempted (a
     * machine busy enough to stall it for 10 ms): queues moved. Else
     * nothing ran, nor can until we make a weft call. */
    bool disturbed = atomic_load(&ran) != 0;
    if (!disturbed)
        check_trace(c);
    /* Let them all run out (a receiver holds a channel reference). */
    while (atomic_load(&ran) < c->local ||
           atomic_load(&received) < c->global)
        weft_sleep(100 * US);
    EXPECT_OK(weft_chan_free(ch));
    return disturbed ? DISTURBED : 0;
}

static void runq_test(int local, int global)
{
    unsetenv("WEFTDEBUG"); /* no sysmon report into our capture */
    struct runq_case c = {local, global};
    for (int tries = 1;; tries++) {
        atomic_store(&ran, 0);
        atomic_store(&received, 0);
        int r = run_ret(1, runq_main, &c);
        if (r == 0)
            return;
        if (r != DISTURBED)
            FAIL("weft_main returned %d (%s)", r, weft_err_name(r));
        printf("try %d: preempted while spawning, again\n", tries);
        if (tries == 10)
            FAIL("preempted while spawning %d times in a row", tries);
    }
}

TEST(runq_local_only)
{
    runq_test(200, 0);
}

TEST(runq_one)
{
    runq_test(1, 0);
}

TEST(runq_empty)
{
    runq_test(0, 0);
}

TEST(runq_local_and_global)
{
    runq_test(100, 40);
}

TEST(runq_global_only)
{
    runq_test(0, 25);
}

/* --------------------------------------------------- periodic reports */

struct sched_line {
    int64_t ms;
    int64_t idleprocs, threads, spinning, idlethreads, runqueue;
};

/* check_summary - every line of err is a summary line with 2 Ps; returns
 * how many, with their figures in sl. */
static int check_summaries(struct sched_line *sl, int max)
{
    static struct rx sum;
    rx_init(&sum, SUMMARY2_RE);
    int n = split_lines(err);
    if (n > max)
        FAIL("%d lines", n);
    for (int i = 0; i < n; i++) {
        const char *s = lines[i];
        if (!rx_match(&sum, s))
            FAIL("line %d is not Go's summary shape: \"%s\"", i + 1, s);
        sl[i] = (struct sched_line){
            rx_num(&sum, s, 1), rx_num(&sum, s, 2), rx_num(&sum, s, 3),
            rx_num(&sum, s, 4), rx_num(&sum, s, 6), rx_num(&sum, s, 7)};
        ASSERT_LE(sl[i].idleprocs, 2);
        ASSERT_LE(sl[i].spinning, sl[i].threads);
        ASSERT_LE(sl[i].idlethreads, sl[i].threads);
        ASSERT_LE(rx_num(&sum, s, 8), RUNQ_SIZE + 1);
        ASSERT_LE(rx_num(&sum, s, 9), RUNQ_SIZE + 1);
    }
    return n;
}

/* check_timing - reports at 0 ms, then every ~100 ms (never early, late
 * by a tick or a busy machine's stall), as many as the child's life
 * allows and about as many as 600 ms of it gives. */
static void check_timing(const int64_t *ms, int n)
{
    double sl = slow();
    printf("%d reports in %.0f ms (slow factor %.1f)\n", n, wall_ms, sl);
    ASSERT_GE(n, 4);
    ASSERT_LE(n, (int)(wall_ms / 100) + 2);
    ASSERT_EQ(ms[0], 0);
    for (int i = 1; i < n; i++) {
        int64_t d = ms[i] - ms[i - 1];
        if (d < 90 || d > 100 + (int64_t)(100 * sl))
            FAIL("reports %d and %d are %lld ms apart (at %lld and %lld)",
                 i, i + 1, (long long)d, (long long)ms[i - 1],
                 (long long)ms[i]);
    }
}

static struct sched_line sls[4096];
static int64_t sms[4096];

TEST(periodic_summary)
{
    const char *const env[] = {"WEFTDEBUG=schedtrace=100", "WEFTMAXPROCS=2",
                               NULL};
    prog("work", env);
    int n = check_summaries(sls, 4096);
    for (int i = 0; i < n; i++)
        sms[i] = sls[i].ms;
    check_timing(sms, n);
    /* The spinners keep both Ps busy after the start. */
    ASSERT_EQ(sls[n - 2].idleprocs, 0);
}

/* Every P idle, sysmon in its deep sleep: the reports still come. */
TEST(periodic_idle)
{
    const char *const env[] = {"WEFTDEBUG=schedtrace=100", "WEFTMAXPROCS=2",
                               NULL};
    prog("idle", env);
    int n = check_summaries(sls, 4096);
    for (int i = 0; i < n; i++)
        sms[i] = sls[i].ms;
    check_timing(sms, n);
    ASSERT_EQ(sls[n - 2].idleprocs, 2);
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A busy P and nothing for sysmon to do: its tick grows to 10 ms, and
 * the reports must not be late by up to a tick each (sysmon sleeps no
 * longer than the next report's time): the median gap is 100 ms. */
TEST(periodic_on_time)
{
    const char *const env[] = {"WEFTDEBUG=schedtrace=100", "WEFTMAXPROCS=2",
                               NULL};
    prog("yield", env);
    int n = check_summaries(sls, 4096);
    for (int i = 0; i < n; i++)
        sms[i] = sls[i].ms;
    check_timing(sms, n);
    ASSERT_GE(n, 6);
    int64_t gaps[4096];
    for (int i = 1; i < n; i++)
        gaps[i - 1] = sms[i] - sms[i - 1];
    qsort(gaps, (size_t)n - 1, sizeof gaps[0], cmp64);
    printf("median gap %lld ms\n", (long long)gaps[(n - 1) / 2]);
    ASSERT_LE(gaps[(n - 1) / 2], 100 + (int64_t)slow());
}

#define MAXIDS 16

TEST(periodic_detail)
{
    const char *const env[] = {"WEFTDEBUG=schedtrace=100,scheddetail=1",
                               "WEFTMAXPROCS=2", NULL};
    prog("work", env);
    int64_t ids[MAXIDS];
    int nids = 0;
    for (const char *p = out; (p = strstr(p, "id ")) != NULL; p += 3) {
        ASSERT_LT(nids, MAXIDS);
        ids[nids++] = strtoll(p + 3, NULL, 10);
    }
    ASSERT_EQ(nids, 8);

    static struct rx det, pl, ml, gl;
    rx_init(&det, DETAIL_RE("2"));
    rx_init(&pl, P_RE);
    rx_init(&ml, M_RE);
    rx_init(&gl, G_RE);
    int n = split_lines(err), i = 0, nrep = 0, complete = 0;
    bool seen_all = false;
    while (i < n) {
        /* the detailed line */
        const char *s = lines[i++];
        if (!rx_match(&det, s))
            FAIL("line %d is not a detailed SCHED line: \"%s\"", i, s);
        ASSERT_LT(nrep, 4096);
        sms[nrep++] = rx_num(&det, s, 1);
        int64_t threads = rx_num(&det, s, 3);
        /* exactly gomaxprocs P lines, in order */
        int64_t pm[2];
        for (int k = 0; k < 2; k++, i++) {
            if (i >= n || !rx_match(&pl, lines[i]))
                FAIL("line %d is not P%d's: \"%s\"", i + 1, k,
                     i < n ? lines[i] : "(end)");
            ASSERT_EQ(rx_num(&pl, lines[i], 1), k);
            pm[k] = rx_num(&pl, lines[i], 5);
        }
        /* M lines, distinct ids, P links to Ms that exist */
        int64_t mids[64];
        int nm = 0;
        for (; i < n && rx_match(&ml, lines[i]); i++) {
            ASSERT_LT(nm, 64);
            mids[nm] = rx_num(&ml, lines[i], 1);
            for (int k = 0; k < nm; k++)
                ASSERT_NE(mids[k], mids[nm]);
            int64_t p = rx_num(&ml, lines[i], 2);
            ASSERT(p >= -1 && p < 2);
            nm++;
        }
        /* Ms are registered under sched.lock with mcount, but read
         * racily here: equal once they are all started. sysmon starts
         * before the first M, so the first report may list none. */
        if (sms[nrep - 1] >= 100) {
            ASSERT_GE(nm, 1);
            ASSERT_EQ(nm, threads);
        }
        for (int k = 0; k < 2; k++) {
            bool found = pm[k] < 0;
            for (int j = 0; j < nm; j++)
                found |= mids[j] == pm[k];
            if (!found)
                FAIL("P%d's m=%lld is not among the M lines", k,
                     (long long)pm[k]);
        }
        /* G lines up to the next report */
        bool live[MAXIDS] = {false};
        for (; i < n && strncmp(lines[i], "SCHED ", 6) != 0; i++) {
            const char *g = lines[i];
            if (!rx_match(&gl, g))
                FAIL("line %d is not a G line: \"%s\"", i + 1, g);
            char reason[64];
            if (!known_waitreason(rx_str(&gl, g, 3, reason, sizeof reason)))
                FAIL("unknown wait reason in \"%s\"", g);
            int64_t id = rx_num(&gl, g, 1), st = rx_num(&gl, g, 2);
            for (int k = 0; k < nids; k++)
                if (ids[k] == id && st != G_DEAD)
                    live[k] = true;
        }
        bool all = true;
        for (int k = 0; k < nids; k++)
            all &= live[k];
        /* Once every coroutine of the child has started, none ends:
         * every later report lists them all. */
        if (seen_all && !all)
            FAIL("report %d (%lld ms) misses a live coroutine", nrep,
                 (long long)sms[nrep - 1]);
        seen_all |= all;
        complete += all;
    }
    check_timing(sms, nrep);
    ASSERT_GE(complete, 3);
}
