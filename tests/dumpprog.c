/*
 * dumpprog.c - programs that crash or get signalled, for test_dump.c to
 * run in a subprocess and read the report of (like Go's
 * runtime/testdata/testprog): `dumpprog <scenario>`.
 *
 * Each scenario first starts bystanders (coroutines parked for good: three
 * identical ones on a channel, one asleep, one on a mutex), waits until
 * they are parked, and prints on stdout, flushed, one line per coroutine
 * the test must find in the report: "bystander N", "main N", and
 * "faulter N" / "spinner N" / "syscall N" as below. The report itself
 * goes to stderr, written by weft.
 *
 *  segv      a coroutine writes through the pointer 0x10 in fault_write.
 *  trap      a coroutine runs __builtin_trap() (SIGILL) in fault_trap: a
 *            fault no sanitizer takes over, for the WEFTTRACEBACK levels.
 *  overflow  a coroutine with a 64 KiB stack recurses in recurse_forever.
 *  quit      prints "ready", then serves stdin: "ping" answers "pong",
 *            "exit" (or EOF) returns 0. The test sends SIGQUIT.
 *  quitbusy  quit with WEFTMAXPROCS=4 and three more coroutines: two
 *            spinning (spin_pure, a plain C loop; spin_checkpoint, with
 *            weft_checkpoint) and one blocked in read() on a pipe inside
 *            weft_syscall_enter/exit (block_in_syscall).
 *
 * Exit status: whatever weft's report chooses (2, or SIGABRT for
 * WEFTTRACEBACK=crash); 0 for quit's "exit"; 1 if weft_main failed; 64
 * for a bad scenario.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft.h"

#include "runtime.h" /* white box: the G registry, to wait until parked */

#define MS ((int64_t)1000 * 1000)
#define NAMED __attribute__((noinline, noclone))

static weft_chan_t *never;
static weft_mutex_t held = WEFT_MUTEX_INIT;

static void say(const char *what, int64_t id)
{
    printf("%s %lld\n", what, (long long)id);
    fflush(stdout);
}

/* parked - coroutines parked now (any reason). */
static int parked(void)
{
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    size_t n = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += atomic_load(&weft__allg(chunks, i)->status) == G_WAITING;
    return k;
}

static NAMED void bystander_recv(void *arg)
{
    int v;
    weft_chan_recv(never, &v);
}

static NAMED void bystander_sleep(void *arg)
{
    weft_sleep_until(WEFT_FOREVER);
}

static NAMED void bystander_mutex(void *arg)
{
    weft_mutex_lock(&held);
}

/* bystanders - start the five and wait until they are parked. */
static NAMED void bystanders(void)
{
    if (weft_chan_new(&never, sizeof(int), 0) != 0 ||
        weft_mutex_lock(&held) != 0)
        exit(3);
    for (int i = 0; i < 3; i++)
        say("bystander", weft_go(bystander_recv, NULL));
    say("bystander", weft_go(bystander_sleep, NULL));
    say("bystander", weft_go(bystander_mutex, NULL));
    while (parked() < 5)
        weft_sleep(100 * 1000);
    say("main", weft_self());
}

/* ---------------------------------------------------------- faults */

static NAMED void fault_write(int *p)
{
    *(volatile int *)p = 1;
}

static NAMED void faulter_segv(void *arg)
{
    say("faulter", weft_self());
    fault_write((int *)(uintptr_t)0x10);
}

static NAMED void fault_trap(void)
{
    __builtin_trap();
}

static NAMED void faulter_trap(void *arg)
{
    say("faulter", weft_self());
    fault_trap();
}

/* Never set: makes the recursion look bounded to the compiler. */
static volatile int depth_limit = -1;

static NAMED int recurse_forever(int depth)
{
    volatile char buf[128];
    buf[0] = (char)depth;
    buf[sizeof buf - 1] = (char)depth;
    if (depth == depth_limit)
        return 0;
    return recurse_forever(depth + 1) + buf[0] + buf[sizeof buf - 1];
}

static NAMED void faulter_overflow(void *arg)
{
    say("faulter", weft_self());
    recurse_forever(0);
}

static int fault_main(void *arg)
{
    bystanders();
    weft_go_opts_t o = {0};
    o.stack_size = 64 * 1024;
    if (weft_go_opts((weft_fn)arg, NULL, &o) < 0)
        return 3;
    for (;;)
        weft_sleep(1000 * MS);
}

/* ------------------------------------------------------------ SIGQUIT */

static _Atomic int stop;
static int syspipe[2];

static NAMED void spin_pure(void *arg)
{
    uint64_t x = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        x = x * 6364136223846793005ull + 1442695040888963407ull;
    *(volatile uint64_t *)arg = x;
}

static NAMED void spin_checkpoint(void *arg)
{
    uint64_t x = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        weft_checkpoint();
    }
    *(volatile uint64_t *)arg = x;
}

static NAMED void block_in_syscall(void *arg)
{
    char c;
    weft_syscall_enter();
    ssize_t r = read(syspipe[0], &c, 1);
    weft_syscall_exit();
    (void)r;
}

/* serve - answer stdin until "exit" or EOF. */
static NAMED int serve(void)
{
    char buf[256];
    size_t have = 0;
    for (;;) {
        ssize_t r = weft_read(0, buf + have, sizeof buf - 1 - have);
        if (r < 0)
            fprintf(stderr, "dumpprog: reading stdin: %s\n",
                    weft_strerror((int)r));
        if (r <= 0)
            return r < 0;
        have += (size_t)r;
        buf[have] = '\0';
        char *nl;
        while ((nl = strchr(buf, '\n')) != NULL) {
            *nl = '\0';
            if (strcmp(buf, "exit") == 0)
                return 0;
            if (strcmp(buf, "ping") == 0) {
                printf("pong\n");
                fflush(stdout);
            }
            size_t used = (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, have - used + 1);
            have -= used;
        }
        if (have == sizeof buf - 1)
            have = 0;
    }
}

static int quit_main(void *arg)
{
    bool busy = arg != NULL;
    static uint64_t sink;
    bystanders();
    if (busy) {
        if (pipe(syspipe) != 0)
            return 3;
        say("spinner", weft_go(spin_pure, &sink));
        say("spinner", weft_go(spin_checkpoint, &sink));
        int64_t id = weft_go(block_in_syscall, NULL);
        say("syscall", id);
        weft_sleep(50 * MS); /* all three on their Ms, in their loops */
    }
    printf("ready\n");
    fflush(stdout);
    int r = serve();
    if (busy) {
        atomic_store(&stop, 1);
        if (write(syspipe[1], "x", 1) != 1)
            return 4;
        weft_sleep(20 * MS);
    }
    return r;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: dumpprog <scenario>\n");
        return 64;
    }
    const char *s = argv[1];
    int r;
    if (strcmp(s, "segv") == 0) {
        r = weft_main(fault_main, (void *)faulter_segv);
    } else if (strcmp(s, "trap") == 0) {
        r = weft_main(fault_main, (void *)faulter_trap);
    } else if (strcmp(s, "overflow") == 0) {
        r = weft_main(fault_main, (void *)faulter_overflow);
    } else if (strcmp(s, "quit") == 0) {
        r = weft_main(quit_main, NULL);
    } else if (strcmp(s, "quitbusy") == 0) {
        setenv("WEFTMAXPROCS", "4", 1);
        r = weft_main(quit_main, (void *)1);
    } else {
        fprintf(stderr, "dumpprog: unknown scenario %s\n", s);
        return 64;
    }
    if (r != 0)
        fprintf(stderr, "dumpprog: weft_main returned %d (%s)\n", r,
                weft_err_name(r));
    return r == 0 ? 0 : 1;
}
