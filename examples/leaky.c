/*
 * leaky.c - three classic leaks, and a healthy program, for weft's leak
 * monitor (weft_leakcheck_start, WEFTDEBUG=leakcheck=SECONDS) to find.
 *
 *     build/examples/leaky --mode socket|coroutine|fd|none
 *         [--seconds N] [--period MS] [--debug-addr ADDR]
 *
 * Every mode runs a small line server (one coroutine per connection,
 * answering each line until the peer hangs up) and drives it:
 *  socket     a client that reads its answer and never closes the
 *             connection: its fd stays open, and the server's coroutine
 *             waits for the next line forever. Coroutines and open fds
 *             climb together.
 *  coroutine  ask two workers, keep the first answer, forget the other
 *             worker: it blocks forever sending on a channel nobody
 *             reads. Coroutines climb, fds stay flat.
 *  fd         open a file, read it, drop it without close(2). Fds climb,
 *             coroutines stay flat.
 *  none       well-behaved clients whose number rises and falls every
 *             second (a load that oscillates): nothing is reported.
 * The monitor samples every --period milliseconds (default 200; 0: do not
 * start it here, e.g. to use WEFTDEBUG=leakcheck=1 instead) and writes a
 * report on stderr once growth has lasted several periods. With
 * --debug-addr (e.g. 127.0.0.1:6060) the debug server also answers
 * /debug/leaks and /metrics. The program stops after --seconds (default 5).
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft.h>

#define MS (1000 * 1000LL)

static struct {
    const char *mode;
    long seconds, period;
    const char *debug_addr;
    char addr[64]; /* the line server's "127.0.0.1:port" */
} cfg = {"none", 5, 200, NULL, ""};

/* ------------------------------------------------------- the line server */

/* conn - answer each line the peer sends with "ok\n" until it hangs up.
 * A peer that never hangs up keeps this coroutine parked in weft_read
 * ("IO wait") for ever: that is the socket leak's server side. */
static void conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[256];
    ssize_t n;
    while ((n = weft_read(fd, buf, sizeof buf)) > 0)
        if (weft_write(fd, "ok\n", 3, NULL) < 0)
            break;
    weft_close(fd);
}

static void server(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd < 0)
            return; /* WEFT_ECLOSED: the program is ending */
        if (weft_go(conn, (void *)(intptr_t)fd) < 0)
            weft_close(fd);
    }
}

/* ask - one request: dial, send a line, read the answer. Returns the
 * connected fd (the caller must close it) or -1. */
static int ask(void)
{
    int fd = weft_dial("tcp", cfg.addr);
    if (fd < 0)
        return -1;
    char buf[16];
    if (weft_write(fd, "hello\n", 6, NULL) < 0 ||
        weft_read(fd, buf, sizeof buf) <= 0) {
        weft_close(fd);
        return -1;
    }
    return fd;
}

/* ------------------------------------------------------------- the leaks */

/* BUG (socket): the answer is read, the connection is never closed. */
static void leaky_client(void *arg)
{
    (void)arg;
    ask(); /* should be: int fd = ask(); if (fd >= 0) weft_close(fd); */
}

struct job {
    weft_chan_t *answers; /* unbuffered: a send waits for a receiver */
    int worker;
};

static void worker(void *arg)
{
    struct job *j = arg;
    int answer = j->worker;
    /* BUG (coroutine): the second worker to answer waits here forever,
     * because the caller only ever receives once. A buffered channel of
     * two (weft_chan_new(&c, sizeof(int), 2)) would let it finish. */
    weft_chan_send(j->answers, &answer);
}

/* first_of_two - ask two workers, return the first answer. */
static int first_of_two(void)
{
    static struct job jobs[2 * 10000]; /* leaked with their workers */
    static int next;
    weft_chan_t *c;
    if (next + 2 > (int)(sizeof jobs / sizeof jobs[0]) ||
        weft_chan_new(&c, sizeof(int), 0) < 0)
        return -1;
    for (int w = 0; w < 2; w++) {
        jobs[next] = (struct job){c, w};
        weft_go(worker, &jobs[next++]);
    }
    int answer = -1;
    weft_chan_recv(c, &answer);
    return answer;
}

/* BUG (fd): the file is read and the fd dropped without close(2). */
static void read_config(void)
{
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    char buf[512];
    if (fd >= 0 && read(fd, buf, sizeof buf) < 0)
        perror("leaky: read");
    /* should be: close(fd); */
}

/* ------------------------------------------------------ the healthy load */

/* polite_client - a request that holds its connection a while, then
 * closes it: the server's coroutine ends too. */
static void polite_client(void *arg)
{
    int64_t hold = (int64_t)(intptr_t)arg;
    int fd = ask();
    weft_sleep(hold);
    if (fd >= 0)
        weft_close(fd);
}

/* load - how many clients to start this tick: a triangle wave from 1 to
 * 9 and back every second, so coroutines and fds rise and fall. */
static int load(int64_t elapsed)
{
    int64_t phase = elapsed % (1000 * MS);
    int64_t up = phase < 500 * MS ? phase : 1000 * MS - phase;
    return 1 + (int)(8 * up / (500 * MS));
}

/* ------------------------------------------------------------------ main */

static int run(void *arg)
{
    (void)arg;
    int lfd = weft_listen("tcp4", "127.0.0.1:0", 0);
    if (lfd < 0) {
        fprintf(stderr, "leaky: listen: %s\n", weft_strerror(lfd));
        return 1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(lfd, (struct sockaddr *)&ss, &sl);
    snprintf(cfg.addr, sizeof cfg.addr, "127.0.0.1:%d",
             ntohs(((struct sockaddr_in *)&ss)->sin_port));
    weft_go(server, (void *)(intptr_t)lfd);
    if (cfg.debug_addr != NULL) {
        int port = weft_debug_serve(cfg.debug_addr);
        if (port < 0)
            fprintf(stderr, "leaky: debug server: %s\n", weft_strerror(port));
        else
            printf("leaky: debug server on port %d: /debug/leaks\n", port);
    }
    if (cfg.period > 0) {
        int e = weft_leakcheck_start(cfg.period * MS);
        if (e < 0)
            fprintf(stderr, "leaky: leakcheck: %s\n", weft_strerror(e));
    }
    printf("leaky: mode %s for %lds, leakcheck every %ldms\n", cfg.mode,
           cfg.seconds, cfg.period);
    fflush(stdout);

    /* One tick every 20 ms: 50 requests (or files) a second. */
    int64_t start = weft_now();
    while (weft_now() - start < cfg.seconds * 1000 * MS) {
        if (strcmp(cfg.mode, "socket") == 0) {
            weft_go(leaky_client, NULL);
        } else if (strcmp(cfg.mode, "coroutine") == 0) {
            first_of_two();
        } else if (strcmp(cfg.mode, "fd") == 0) {
            read_config();
        } else {
            int n = load(weft_now() - start);
            for (int i = 0; i < n; i++)
                weft_go(polite_client, (void *)(intptr_t)(100 * MS));
        }
        weft_sleep(20 * MS);
    }
    if (cfg.debug_addr != NULL)
        weft_debug_stop();
    weft_close(lfd); /* the leaked coroutines are abandoned at exit */
    return 0;
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s --mode socket|coroutine|fd|none [--seconds N] "
            "[--period MS] [--debug-addr ADDR]\n",
            prog);
    exit(2);
}

static long flag_num(int argc, char **argv, int *i, long lo, long hi)
{
    char *end;
    if (++*i >= argc)
        usage(argv[0]);
    long v = strtol(argv[*i], &end, 10);
    if (*argv[*i] == '\0' || *end != '\0' || v < lo || v > hi)
        usage(argv[0]);
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc) {
            cfg.mode = argv[++i];
            if (strcmp(cfg.mode, "socket") != 0 &&
                strcmp(cfg.mode, "coroutine") != 0 &&
                strcmp(cfg.mode, "fd") != 0 && strcmp(cfg.mode, "none") != 0)
                usage(argv[0]);
        } else if (strcmp(argv[i], "--seconds") == 0) {
            cfg.seconds = flag_num(argc, argv, &i, 1, 3600);
        } else if (strcmp(argv[i], "--period") == 0) {
            cfg.period = flag_num(argc, argv, &i, 0, 3600 * 1000);
        } else if (strcmp(argv[i], "--debug-addr") == 0 && i + 1 < argc) {
            cfg.debug_addr = argv[++i];
        } else {
            usage(argv[0]);
        }
    }
    int rc = weft_main(run, NULL);
    if (rc < 0) {
        fprintf(stderr, "leaky: weft_main: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
