/*
 * pipeline.c - Go's pipeline pattern with weft channels: a generator, a
 * pool of workers fanning out over a shared channel, a collector, a
 * WaitGroup to know when the workers are done, and a select with a
 * deadline that reports progress while the collector waits.
 *
 *     build/examples/pipeline [N]      (default N = 100000)
 */
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

#define NWORKERS 8

static weft_chan_t *numbers; /* generator -> workers */
static weft_chan_t *squares; /* workers -> collector */
static weft_waitgroup_t workers_done = WEFT_WAITGROUP_INIT;

static void generate(void *arg)
{
    long n = (long)arg;
    for (long i = 1; i <= n; i++)
        weft_chan_send(numbers, &i);
    weft_chan_close(numbers); /* workers drain it, then see WEFT_ECLOSED */
}

static void square(void *arg)
{
    (void)arg;
    long v;
    while (weft_chan_recv(numbers, &v) == 0) {
        long sq = v * v;
        weft_chan_send(squares, &sq);
    }
    weft_waitgroup_done(&workers_done);
}

/* Close squares once every worker has returned. */
static void closer(void *arg)
{
    (void)arg;
    weft_waitgroup_wait(&workers_done);
    weft_chan_close(squares);
}

static int run(void *arg)
{
    long n = (long)arg;
    if (weft_chan_new(&numbers, sizeof(long), 64) < 0 ||
        weft_chan_new(&squares, sizeof(long), 64) < 0)
        return 1;
    int64_t t0 = weft_now();
    weft_waitgroup_add(&workers_done, NWORKERS);
    for (int i = 0; i < NWORKERS; i++)
        weft_go(square, NULL);
    weft_go(generate, (void *)n);
    weft_go(closer, NULL);

    long sum = 0, got = 0, sq;
    weft_select_case_t c[1] = {{.chan = squares, .op = WEFT_RECV, .elem = &sq}};
    for (;;) {
        /* Wait at most 20 ms for the next square, then say how far we are. */
        int r = weft_select_dl(c, 1, weft_now() + 20 * 1000 * 1000);
        if (r == WEFT_ETIMEDOUT) {
            printf("  ... %ld of %ld squares so far\n", got, n);
            continue;
        }
        if (r < 0 || c[0].result == WEFT_ECLOSED)
            break; /* closed and drained: every worker is done */
        sum += sq;
        got++;
    }
    long want = n * (n + 1) * (2 * n + 1) / 6;
    printf("pipeline: %ld squares through %d workers on %d Ps in %.1f ms, "
           "sum %ld (%s)\n",
           got, NWORKERS, weft_procs(), (double)(weft_now() - t0) / 1e6, sum,
           sum == want ? "correct" : "WRONG");
    weft_chan_free(numbers);
    weft_chan_free(squares);
    return sum == want ? 0 : 1;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    if (n < 1 || n > 2000000) {
        fprintf(stderr, "usage: %s [N in 1..2000000]\n", argv[0]);
        return 2;
    }
    return weft_main(run, (void *)n);
}
