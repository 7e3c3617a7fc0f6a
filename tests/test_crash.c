/*
 * test_crash.c - behaviour that ends or configures a whole process, tested
 * through the crashprog helper (crashprog.c) run in a subprocess:
 * stack overflow reports, WEFTMAXPROCS parsing.
 *
 * The path of crashprog comes from the CRASHPROG environment variable (set
 * by meson), else it is looked up next to this binary.
 */
#include <sched.h>
#include <stdlib.h>

#include "weft.h"

#include "harness.h"

static const char *crashprog(void)
{
    return harness_sibling("CRASHPROG", "crashprog");
}

static char out[64 * 1024], err[256 * 1024];

/* crash - run `crashprog scenario` with env (may be NULL); returns the wait
 * status; output in out/err. */
static int crash(const char *scenario, const char *const env[])
{
    const char *const argv[] = {crashprog(), scenario, NULL};
    int status = 0;
    int r = harness_run(argv, env, out, sizeof out, err, sizeof err, &status);
    if (r < 0)
        FAIL("harness_run(%s %s): %s", argv[0], scenario, strerror(-r));
    return status;
}

static void show(const char *what, int status)
{
    char st[96];
    printf("%s: %s\n--- stdout:\n%s--- stderr:\n%s---\n", what,
           harness_status_str(status, st, sizeof st), out, err);
}

/* ------------------------------------------------------- stack overflow */

/* check_overflow - run the scenario and check Go's report:
 * "goroutine N stack overflow: stack size S bytes", exit status 2. */
static void check_overflow(const char *scenario, size_t size)
{
    int status = crash(scenario, NULL);
    show(scenario, status);
    long long id = 0;
    if (sscanf(out, "id %lld", &id) != 1)
        FAIL("crashprog %s did not print the coroutine id; stdout: %s",
             scenario, out);
    ASSERT_GT(id, 1);
    if (WIFSIGNALED(status))
        FAIL("crashprog %s died by %s instead of reporting the overflow",
             scenario, harness_signame(WTERMSIG(status)));
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 2);
    char want[128];
    snprintf(want, sizeof want, "goroutine %lld stack overflow: stack size %zu bytes",
             id, size);
    ASSERT_CONTAINS(err, want);
}

TEST(stack_overflow_64k)
{
    check_overflow("stackoverflow", 64 * 1024);
}

TEST(stack_overflow_default)
{
    check_overflow("stackoverflow_default", WEFT_STACK_DEFAULT);
}

TEST(stack_overflow_procs2)
{
    check_overflow("stackoverflow_procs2", 64 * 1024);
}

/* ------------------------------------------------------------- deadlock */

static void check_deadlock(const char *scenario)
{
    int status = crash(scenario, NULL);
    show(scenario, status);
    ASSERT_CONTAINS(out, "parking main");
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 2);
    ASSERT_CONTAINS(err, "fatal error: all goroutines are asleep - deadlock!");
    /* every coroutine is listed, main first among the parked ones */
    ASSERT_CONTAINS(err, "goroutine 1 [sleep]:");
    int n = 0;
    for (const char *p = err; (p = strstr(p, "[sleep]:")) != NULL; p++)
        n++;
    ASSERT_EQ(n, 4);
}

TEST(deadlock_reported)
{
    check_deadlock("deadlock");
}

TEST(deadlock_reported_procs2)
{
    check_deadlock("deadlock_procs2");
}

TEST(timer_sleepers_are_not_a_deadlock)
{
    int status = crash("sleepers", NULL);
    show("sleepers", status);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_CONTAINS(out, "ok");
    if (strstr(err, "deadlock") != NULL)
        FAIL("a false deadlock report: %s", err);
}

TEST(external_ref_suppresses_deadlock)
{
    int status = crash("extref", NULL);
    show("extref", status);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_CONTAINS(out, "outsider done");
    if (strstr(err, "deadlock") != NULL)
        FAIL("a deadlock was reported while an external ref was held");
}

TEST(nilderef_is_not_a_stack_overflow)
{
    int status = crash("nilderef", NULL);
    show("nilderef", status);
    ASSERT(!(WIFEXITED(status) && WEXITSTATUS(status) == 0));
    ASSERT_CONTAINS(out, "id ");  /* the scenario ran, then faulted */
    /* weft's report or ASan's (SEGV), or UBSan's, which sees the store
     * first when it halts on error. */
    if (strstr(err, "SEGV") == NULL && strstr(err, "null pointer") == NULL)
        FAIL("no report of the NULL write:\n%s", err);
    if (strstr(err, "stack overflow") != NULL)
        FAIL("a NULL write was reported as a stack overflow:\n%s", err);
}

/* --------------------------------------------------------- WEFTMAXPROCS */

static int default_procs(void)
{
    cpu_set_t set;
    ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    return CPU_COUNT(&set);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* maxprocs - run the maxprocs scenario with WEFTMAXPROCS set to val (NULL:
 * unset); returns what it printed. */
static int maxprocs(const char *val)
{
    char var[64];
    snprintf(var, sizeof var, "WEFTMAXPROCS%s%s", val ? "=" : "",
             val ? val : "");
    const char *const env[] = {var, NULL};
    int status = crash("maxprocs", env);
    show(var, status);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    char *end;
    long n = strtol(out, &end, 10);
    if (end == out || *end != '\n')
        FAIL("%s: crashprog maxprocs printed \"%s\"", var, out);
    return (int)n;
}

TEST(maxprocs_default)
{
    ASSERT_EQ(maxprocs(NULL), default_procs());
    ASSERT_STR_EQ(err, "");
}

TEST(maxprocs_valid)
{
    const char *vals[] = {"1", "2", "3", "7", "1024"};
    const int want[] = {1, 2, 3, 7, WEFT_MAXPROCS_LIMIT};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        ASSERT_EQ(maxprocs(vals[i]), want[i]);
        /* A good value: no warning. */
        ASSERT_STR_EQ(err, "");
    }
}

static void check_bad(const char *val)
{
    ASSERT_EQ(maxprocs(val), default_procs());
    /* Exactly one line on stderr, and it names the variable. */
    ASSERT_EQ(count_lines(err), 1);
    ASSERT_EQ(harness_count_lines(err, "WEFTMAXPROCS"), 1);
}

TEST(maxprocs_invalid_warns_once)
{
    const char *vals[] = {"0", "-1", "abc", "99999", "1025", "3abc",
                          "99999999999999999999"};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        check_bad(vals[i]);
}

TEST(maxprocs_empty_warns_once)
{
    check_bad("");
}

/* The runtime starts and stops cleanly in a fresh process. */
TEST(crashprog_ok)
{
    int status = crash("ok", NULL);
    show("ok", status);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_STR_EQ(out, "ok\n");
    ASSERT_STR_EQ(err, "");
}
