/*
 * echo.c - a TCP echo server, one coroutine per connection: the shape of
 * every weft network server. The accept loop spawns a coroutine for each
 * connection, and that coroutine reads and writes as if the socket were
 * blocking; while it waits, its thread serves the other connections.
 *
 *     build/examples/echo [--port N] [--procs N]   (default port 7000;
 *                                                  0 picks a free one)
 *     printf hello | nc -q1 127.0.0.1 7000
 *
 * --procs N sets WEFTMAXPROCS, the number of threads running coroutines.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

/* A connection's buffer lives on its coroutine's stack: nothing is
 * allocated per connection or per request. 16 KiB is one syscall's worth
 * for most reads, and a stack only uses the pages it touches. */
#define BUFSIZE (16 * 1024)

static void echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[BUFSIZE];

    for (;;) {
        /* Parks while there is nothing to read; meanwhile this thread
         * runs the other connections. */
        ssize_t n = weft_read(fd, buf, sizeof buf);
        if (n <= 0) /* 0: the peer closed; < 0: reset, etc. */
            break;
        /* weft_write writes all n bytes, parking while the socket's send
         * buffer is full, so a slow reader throttles only its own
         * connection. */
        if (weft_write(fd, buf, (size_t)n, NULL) < 0)
            break;
    }
    weft_close(fd);
}

/* local_port - the port a listening socket is bound to (after port 0
 * it is the one the kernel picked), or -1. */
static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return -1;
}

static int serve(void *arg)
{
    char addr[16];

    snprintf(addr, sizeof addr, ":%ld", (long)(intptr_t)arg);
    int lfd = weft_listen("tcp", addr, 0);
    if (lfd < 0) {
        fprintf(stderr, "echo: listen %s: %s\n", addr, weft_strerror(lfd));
        return 1;
    }
    printf("echo: listening on :%d (%d procs)\n", local_port(lfd),
           weft_procs());
    fflush(stdout); /* a script may be waiting for this line on a pipe */

    /* The default stack size on purpose: default stacks are recycled from
     * a cache, while any other size is mapped and unmapped per coroutine.
     * Naming the coroutine makes it recognisable in dumps. */
    weft_go_opts_t opts = {.name = "echo conn"};
    for (;;) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd == WEFT_ECLOSED)
            break;
        if (fd < 0) {
            /* weft_accept itself retries EINTR and ECONNABORTED and waits
             * out fd exhaustion; what is left (EPERM from a firewall,
             * ...) may pass. Pause so that an error that persists is not
             * a busy loop. */
            fprintf(stderr, "echo: accept: %s\n", weft_strerror(fd));
            weft_sleep(10 * 1000 * 1000);
            continue;
        }
        int64_t id = weft_go_opts(echo_conn, (void *)(intptr_t)fd, &opts);
        if (id < 0) {
            fprintf(stderr, "echo: weft_go: %s\n", weft_strerror((int)id));
            weft_close(fd);
        }
    }
    weft_close(lfd);
    return 0;
}

static void usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--port N] [--procs N]\n", prog);
    exit(2);
}

/* flag_num - the value of the flag at argv[*i], an integer in [lo, hi];
 * exits with the usage line when it is missing or bad. */
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
    long port = 7000;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0) {
            port = flag_num(argc, argv, &i, 0, 65535);
        } else if (strcmp(argv[i], "--procs") == 0) {
            flag_num(argc, argv, &i, 1, WEFT_MAXPROCS_LIMIT);
            /* weft_main reads WEFTMAXPROCS once, when it starts. */
            setenv("WEFTMAXPROCS", argv[i], 1);
        } else {
            usage(argv[0]);
        }
    }
    int rc = weft_main(serve, (void *)(intptr_t)port);
    if (rc < 0) {
        fprintf(stderr, "echo: weft_main: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
