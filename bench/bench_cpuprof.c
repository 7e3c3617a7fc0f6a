/*
 * bench_cpuprof.c - the cost of the CPU profiler (profile/cpuprof.c) on a
 * CPU-bound multi-P coroutine workload, profiling on against off in the
 * same run.
 *
 * Usage: bench_cpuprof overhead   (Ps from WEFTMAXPROCS; HZ=n, default 100)
 *
 * 4 coroutines per P hash integers in rounds of 4096 steps, yielding
 * after each round (so the scheduler runs too), and count rounds. The
 * main coroutine alternates windows of WINDOW_MS with the profiler off
 * and on (started before the window, stopped after it, the profile
 * written to /dev/null: the collector and the write are charged too),
 * ROUNDS pairs, and prints one benchstat line per mode with the median
 * ns per round of wall time and of process CPU time, then
 *     RATIO cpuprof on/off=<x>        wall ns/round, on over off
 *     RATIO cpuprof_cpu on/off=<x>    CPU ns/round, on over off
 * CPU time counts what the handlers and the collector cost even when
 * other processes share the machine; wall time is what a program sees.
 * The target is an overhead of at most 2% (x <= 1.02) at 100 Hz.
 * It checks that every window made progress and that every profile was
 * written.
 */
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROG "bench_cpuprof"
#include "bench.h"

#define WINDOW_MS 400
#define ROUNDS 7
#define STEPS 4096

static _Atomic uint64_t rounds;
static _Atomic bool quit;
static _Atomic uint64_t sink;
static weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;

static __attribute__((noinline)) uint64_t hash_round(uint64_t x)
{
    for (int i = 0; i < STEPS; i++) {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 29;
    }
    return x;
}

static void worker(void *arg)
{
    uint64_t x = (uintptr_t)arg;
    while (!atomic_load_explicit(&quit, memory_order_relaxed)) {
        x = hash_round(x);
        atomic_fetch_add_explicit(&rounds, 1, memory_order_relaxed);
        weft_yield();
    }
    atomic_fetch_add(&sink, x);
    weft_waitgroup_done(&wg);
}

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int overhead(void)
{
    const char *hzs = getenv("HZ");
    int hz = hzs ? atoi(hzs) : 100;
    int procs = 0;
    const char *mp = getenv("WEFTMAXPROCS");
    procs = mp ? atoi(mp) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0)
        return fail("open /dev/null");
    int n = 4 * procs;
    for (int i = 0; i < n; i++) {
        weft_waitgroup_add(&wg, 1);
        if (weft_go(worker, (void *)(uintptr_t)(i + 1)) < 0)
            return fail("weft_go");
    }
    weft_sleep(100 * MSEC); /* warm up: every P busy */
    double wall[2][ROUNDS], cpu[2][ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        for (int on = 0; on < 2; on++) {
            int mode = (r % 2) ? 1 - on : on; /* alternate which goes first */
            if (mode) {
                int e = weft_cpuprofile_start(hz);
                if (e < 0)
                    return fail("weft_cpuprofile_start: %s",
                                weft_strerror(e));
            }
            uint64_t r0 = atomic_load(&rounds);
            int64_t t0 = weft_now();
            double c0 = cpu_ns();
            weft_sleep(WINDOW_MS * MSEC);
            if (mode) {
                int e = weft_cpuprofile_stop(devnull);
                if (e < 0)
                    return fail("weft_cpuprofile_stop: %s",
                                weft_strerror(e));
            }
            double c1 = cpu_ns();
            int64_t t1 = weft_now();
            uint64_t done = atomic_load(&rounds) - r0;
            if (done == 0)
                return fail("no progress in a window");
            wall[mode][r] = (double)(t1 - t0) * procs / (double)done;
            cpu[mode][r] = (c1 - c0) / (double)done;
        }
    }
    atomic_store(&quit, true);
    weft_waitgroup_wait(&wg);
    close(devnull);
    double w0 = median(wall[0], ROUNDS), w1 = median(wall[1], ROUNDS);
    double k0 = median(cpu[0], ROUNDS), k1 = median(cpu[1], ROUNDS);
    printf("BenchmarkCPUProfile/impl=weft/prof=off/procs=%d\t%d\t%.1f "
           "ns/op\t%.1f cpu-ns/op\n",
           procs, ROUNDS, w0, k0);
    printf("BenchmarkCPUProfile/impl=weft/prof=on/hz=%d/procs=%d\t%d\t%.1f "
           "ns/op\t%.1f cpu-ns/op\n",
           hz, procs, ROUNDS, w1, k1);
    printf("RATIO cpuprof on/off=%.4f\n", w1 / w0);
    printf("RATIO cpuprof_cpu on/off=%.4f\n", k1 / k0);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct bench benches[] = {{"overhead", overhead}};
    return bench_main(benches, 1, argc, argv, "bench_cpuprof overhead");
}
