/*
 * test_harness.c - tests of harness.h itself, without weft.
 *
 * The binary holds two sets of tests: the real ones and fixtures (names
 * starting with "fx_") that pass, fail, crash, time out, skip and leak on
 * purpose. main() keeps only the fixtures when HARNESS_FIXTURES is set;
 * the real tests run this binary that way (with harness_run) and check its
 * TAP output line by line.
 */
#define HARNESS_NO_MAIN
#include "harness.h"

#include <pthread.h>

/* ------------------------------------------------------------- fixtures */

TEST(fx_pass)
{
    ASSERT_EQ(2 + 2, 4);
    ASSERT_STR_EQ("a", "a");
    printf("output of a passing test\n");
}

TEST(fx_fail_eq)
{
    int x = 3;
    printf("context printed before the failure\n");
    ASSERT_EQ(x, 4);
}

TEST(fx_fail_str)
{
    ASSERT_STR_EQ("abc", "abd");
}

static void *fail_in_thread(void *arg)
{
    int64_t big = INT64_MAX;
    ASSERT_LT(big, -5);
    return NULL;
}

TEST(fx_fail_thread)
{
    pthread_t t;
    pthread_create(&t, NULL, fail_in_thread, NULL);
    pthread_join(t, NULL);
}

TEST(fx_abort)
{
    abort();
}

TEST(fx_sigterm)
{
    raise(SIGTERM);
}

TEST_TIMEOUT(fx_timeout, 1)
{
    for (;;)
        pause();
}

TEST(fx_skip)
{
    SKIP("not today (%d)", 7);
}

TEST(fx_leak_fd)
{
    int fd = open("/dev/null", O_RDONLY);
    ASSERT_GE(fd, 0);
}

TEST(fx_exit3)
{
    exit(3);
}

TEST(fx_close_fd)
{
    close(0); /* open when the test started */
}

/* --------------------------------------------------------- real tests */

static char out[64 * 1024], err[16 * 1024];

/* fixtures2 - run this binary's fixtures with the filters f1 and f2 (may
 * be NULL); returns the exit code (fails on a signal). */
static int fixtures2(const char *f1, const char *f2)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT_GT(n, 0);
    self[n] = '\0';
    const char *const argv[] = {self, f1, f2, NULL};
    const char *const env[] = {"HARNESS_FIXTURES=1", "HARNESS_TIMEOUT_SCALE",
                               "HARNESS_VERBOSE", "HARNESS_NOFORK", NULL};
    int status;
    ASSERT_EQ(harness_run(argv, env, out, sizeof out, err, sizeof err,
                          &status),
              0);
    printf("--- fixtures %s %s:\n%s--- stderr:\n%s---\n", f1,
           f2 ? f2 : "", out, err);
    ASSERT(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int fixtures(const char *filter)
{
    return fixtures2(filter, NULL);
}

/* line_with - the line of out starting with prefix, or fail. */
static const char *line_with(const char *prefix)
{
    static char line[4096];
    const char *s = out;
    size_t n = strlen(prefix);
    while (*s) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        if (len >= n && strncmp(s, prefix, n) == 0) {
            size_t c = len < sizeof line - 1 ? len : sizeof line - 1;
            memcpy(line, s, c);
            line[c] = '\0';
            return line;
        }
        s = nl ? nl + 1 : s + len;
    }
    FAIL("no line starting with \"%s\" in:\n%s", prefix, out);
}

TEST(harness_tap_output)
{
    ASSERT_EQ(fixtures("fx_"), 1);
    ASSERT(strncmp(out, "1..11\n", 6) == 0);
    ASSERT_STR_EQ(line_with("ok 1 "), "ok 1 - fx_pass");
    ASSERT_CONTAINS(line_with("not ok 2 - fx_fail_eq # "),
                    "test_harness.c:");
    ASSERT_CONTAINS(line_with("not ok 2 "),
                    "ASSERT_EQ(x, 4) failed: x = 3, 4 = 4");
    /* The child's output is shown for a failure, as comments... */
    ASSERT_CONTAINS(out, "\n# context printed before the failure\n");
    /* ...and not for a pass. */
    ASSERT(strstr(out, "output of a passing test") == NULL);
    ASSERT_CONTAINS(line_with("not ok 3 - fx_fail_str # "),
                    "\"abc\" = \"abc\", \"abd\" = \"abd\"");
    ASSERT_CONTAINS(line_with("not ok 4 - fx_fail_thread # "),
                    "big = 9223372036854775807, -5 = -5");
    ASSERT_CONTAINS(line_with("not ok 5 - fx_abort # "), "SIGABRT");
    ASSERT_CONTAINS(line_with("not ok 6 - fx_sigterm # "), "SIGTERM");
    ASSERT_CONTAINS(line_with("not ok 7 - fx_timeout # "), "timeout after 1 s");
    ASSERT_STR_EQ(line_with("ok 8 "), "ok 8 - fx_skip # SKIP not today (7)");
    ASSERT_CONTAINS(line_with("not ok 9 - fx_leak_fd # "), "leak gate");
    ASSERT_CONTAINS(line_with("not ok 9 "), "(/dev/null)");
    ASSERT_CONTAINS(line_with("not ok 10 - fx_exit3 # "), "exit 3");
    ASSERT_CONTAINS(line_with("not ok 11 - fx_close_fd # "),
                    "leak gate: 1 fd open before the test closed or replaced "
                    "by it: 0");
    ASSERT_STR_EQ(line_with("# 1 passed"), "# 1 passed, 9 failed, 1 skipped");
    /* The summary is the last line. */
    size_t len = strlen(out);
    ASSERT(len > 0 && out[len - 1] == '\n');
    ASSERT_CONTAINS(out, "\n# 1 passed, 9 failed, 1 skipped\n");
    ASSERT_EQ(len, (size_t)(strstr(out, "# 1 passed") - out) +
                       strlen("# 1 passed, 9 failed, 1 skipped\n"));
}

TEST(harness_filter)
{
    ASSERT_EQ(fixtures("fx_pass"), 0);
    ASSERT(strncmp(out, "1..1\nok 1 - fx_pass\n# fx_pass: ", 30) == 0);
    ASSERT_EQ(harness_count_lines(out, "ok "), 1);
    ASSERT_CONTAINS(out, " s\n# 1 passed, 0 failed, 0 skipped\n");
}

TEST(harness_filter_skip_only)
{
    ASSERT_EQ(fixtures("fx_skip"), 0);
    ASSERT_CONTAINS(out, "# 0 passed, 0 failed, 1 skipped\n");
    ASSERT_EQ(fixtures("no such test"), 0);
    ASSERT_CONTAINS(out, "1..0");
}

TEST(harness_filter_exclude)
{
    /* Two plain filters select either; "!x" excludes. */
    ASSERT_EQ(fixtures2("fx_pass", "fx_skip"), 0);
    ASSERT(strncmp(out, "1..2\n", 5) == 0);
    ASSERT_CONTAINS(out, "# 1 passed, 0 failed, 1 skipped\n");
    ASSERT_EQ(fixtures2("fx_", "!fx_"), 0);
    ASSERT_CONTAINS(out, "1..0");
    ASSERT_EQ(fixtures2("!fx_fail", "!fx_timeout"), 1);
    ASSERT(strncmp(out, "1..7\n", 5) == 0);
    ASSERT(strstr(out, "fx_fail") == NULL);
    ASSERT(strstr(out, "fx_timeout") == NULL);
}

TEST(harness_run_captures)
{
    const char *const argv[] = {"sh", "-c",
                                "echo \"$A/$B\"; echo oops >&2; exit 5",
                                NULL};
    const char *const env[] = {"A=1", "B", NULL};
    setenv("B", "should be unset", 1);
    int status;
    ASSERT_EQ(harness_run(argv, env, out, sizeof out, err, sizeof err,
                          &status),
              0);
    ASSERT_STR_EQ(out, "1/\n");
    ASSERT_STR_EQ(err, "oops\n");
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 5);
    /* Truncation keeps a NUL. */
    char small[4];
    const char *const argv2[] = {"sh", "-c", "echo 123456789", NULL};
    ASSERT_EQ(harness_run(argv2, NULL, small, sizeof small, NULL, 0, &status),
              0);
    ASSERT_STR_EQ(small, "123");
    /* Exec failure: 127 and a message. */
    const char *const argv3[] = {"/nonexistent/prog", NULL};
    ASSERT_EQ(harness_run(argv3, NULL, out, sizeof out, err, sizeof err,
                          &status),
              0);
    ASSERT_EQ(WEXITSTATUS(status), 127);
    ASSERT_CONTAINS(err, "/nonexistent/prog");
    /* Death by a signal. */
    const char *const argv4[] = {"sh", "-c", "kill -SEGV $$", NULL};
    ASSERT_EQ(harness_run(argv4, NULL, out, sizeof out, err, sizeof err,
                          &status),
              0);
    ASSERT(WIFSIGNALED(status));
    ASSERT_STR_EQ(harness_signame(WTERMSIG(status)), "SIGSEGV");
}

int main(int argc, char **argv)
{
    int fixtures_only = getenv("HARNESS_FIXTURES") != NULL;
    int n = 0;
    for (int i = 0; i < harness_ntests; i++)
        if ((strncmp(harness_tests[i].name, "fx_", 3) == 0) == fixtures_only)
            harness_tests[n++] = harness_tests[i];
    harness_ntests = n;
    return harness_main(argc, argv);
}
