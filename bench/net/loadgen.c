/*
 * loadgen.c - a single-threaded epoll load client for echo servers, the
 * client side of bench/net.sh.
 *
 * Usage:
 *   loadgen --port N [--host 127.0.0.1] --conns C --duration SECS
 *           [--warmup SECS] [--size 64] [--max-requests N]
 *           [--connect-timeout SECS] [--server-pid PID]
 *
 * Concepts:
 * - Lockstep: each of the C connections writes `size` bytes, waits until
 *   it has read `size` bytes back, checks they are the bytes it sent, and
 *   starts over. One request in flight per connection, so the offered load
 *   is set by C and the server's speed, and latency is one round trip.
 * - Phases: connect all C connections first (retrying, with backoff,
 *   while the server starts), then run the warmup (nothing recorded), then
 *   the measured window of `--duration` seconds (or until
 *   `--max-requests` requests completed in it, whichever is first).
 *   A request counts in the window when its response completes inside it.
 * - Latency goes into a log-linear histogram of nanoseconds (128 linear
 *   sub-buckets per power of two, under 1% error); p50 and p99 are read
 *   from it.
 * - With --server-pid, utime+stime of that process (all its threads,
 *   /proc/PID/stat) is read at the first and last instant of the measured
 *   window, so the server CPU per request covers exactly that window.
 *
 * Output: one line on stdout, key=value fields, e.g.
 *   loadgen conns=50 size=64 secs=5.000 requests=690000 rps=138000.0
 *   lat_mean_us=361.2 lat_p50_us=355.0 lat_p99_us=420.0 lat_max_us=900.1
 *   errors=0 stalled=0 server_cpu_us_per_req=6.912 server_cpu_util=0.954
 * (one line; wrapped here). The server fields print "-" without
 * --server-pid. Diagnostics go to stderr.
 *
 * Exit status: 0 when all went well; 1 on a usage error; 2 when the
 * connections could not all be made; 3 when any connection failed during
 * the run (read/write error, server closed it, wrong bytes echoed), a
 * request was outstanding for over a second at the end (stalled: the sign
 * of a lost wakeup in the server), or no request completed. The line is
 * still printed for status 3.
 *
 * Invariants:
 * 1. Only loopback addresses (127.0.0.0/8, ::1) are accepted: this is a
 *    load generator, it must not be pointed at another machine.
 * 2. Bounded: the process ends within connect-timeout + warmup + duration
 *    plus one poll interval, and after max-requests measured requests.
 * 3. A connection has at most one request in flight: `sent` < size means
 *    it is still writing (EPOLLOUT armed), else it is reading.
 *
 * Rejected alternatives: several client threads (the client then competes
 * with itself and with a one-core server for CPUs; one thread pinned to its
 * own core is easier to reason about), open-loop load (what the issue
 * measures is lockstep echo), reading the server's CPU from the shell
 * around the whole run (that counts the connect phase and the warmup).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NSEC INT64_C(1000000000)
#define MAX_CONNS 100000
#define MAX_SIZE (1 << 20)
#define MAX_SECS 3600.0
#define STALL_NS NSEC /* outstanding this long at the end: stalled */

/* Histogram: values below 2^SUB_BITS ns exact, then 2^(SUB_BITS-1)
 * buckets per power of two. Index s*HALF + (v >> s), s = shift. */
#define SUB_BITS 7
#define HALF (1 << (SUB_BITS - 1))
#define MAX_SHIFT 40 /* values up to ~2^47 ns, far beyond any run */
#define NBUCKETS ((MAX_SHIFT + 2) * HALF)

struct conn {
    int fd;
    int id;
    size_t sent;   /* bytes of the current request written */
    size_t got;    /* bytes of the current response read */
    int64_t start; /* when the current request's first byte went out */
    uint64_t done; /* requests completed in the measured window */
    int want_out;  /* EPOLLOUT armed: the request is partly written */
    int dead;      /* failed; no longer polled */
};

struct opts {
    const char *host;
    int port;
    int conns;
    double duration;
    double warmup;
    size_t size;
    uint64_t max_requests;
    double connect_timeout;
    long server_pid;
};

static uint64_t hist[NBUCKETS];
static unsigned char *pattern; /* what every request sends; immutable */
static unsigned char *scratch;

/* now_ns - the monotonic clock in nanoseconds. */
static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NSEC + ts.tv_nsec;
}

/* hist_index - the histogram bucket of V nanoseconds. */
static int hist_index(uint64_t v)
{
    if (v < (uint64_t)2 * HALF)
        return (int)v;
    int s = (63 - __builtin_clzll(v)) - (SUB_BITS - 1);
    if (s > MAX_SHIFT) {
        s = MAX_SHIFT;
        v = ((uint64_t)2 * HALF - 1) << s;
    }
    return s * HALF + (int)(v >> s);
}

/* hist_value - the midpoint of bucket I, in nanoseconds. */
static double hist_value(int i)
{
    if (i < 2 * HALF)
        return i;
    int s = i / HALF - 1;
    uint64_t lo = (uint64_t)(i - s * HALF) << s;
    return (double)lo + (double)(((uint64_t)1 << s) - 1) / 2.0;
}

/* hist_quantile - the value below which fraction Q of N samples lie. */
static double hist_quantile(double q, uint64_t n)
{
    uint64_t rank = (uint64_t)(q * (double)n);
    if (rank >= n)
        rank = n - 1;
    uint64_t seen = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += hist[i];
        if (seen > rank)
            return hist_value(i);
    }
    return 0;
}

/* server_cpu_ticks - utime+stime of process PID in clock ticks, or -1. */
static long long server_cpu_ticks(long pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm may hold spaces and parentheses: fields follow the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut, st;
    /* Fields 3..15: state ppid pgrp session tty tpgid flags minflt
     * cminflt majflt cmajflt utime stime. */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* parse_addr - fill SS from HOST and PORT; only loopback addresses. */
static int parse_addr(const char *host, int port, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        if ((ntohl(sin->sin_addr.s_addr) >> 24) != 127) {
            fprintf(stderr, "loadgen: %s is not a loopback address\n", host);
            return -1;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *len = sizeof *sin;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr)) {
            fprintf(stderr, "loadgen: %s is not a loopback address\n", host);
            return -1;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *len = sizeof *sin6;
        return 0;
    }
    fprintf(stderr,
            "loadgen: --host wants a numeric loopback address, "
            "not %s\n",
            host);
    return -1;
}

/* raise_nofile - make the soft RLIMIT_NOFILE at least WANT, within the
 * hard limit. Returns 0, or -1 when the hard limit is too low. */
static int raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= want)
        return 0;
    if (rl.rlim_cur == RLIM_INFINITY)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
        fprintf(stderr,
                "loadgen: need %llu file descriptors, hard limit is %llu\n",
                (unsigned long long)want, (unsigned long long)rl.rlim_max);
        return -1;
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("loadgen: setrlimit(RLIMIT_NOFILE)");
        return -1;
    }
    return 0;
}

/* connect_one - a blocking connect to ADDR that gives up at DEADLINE,
 * retrying with backoff while the server refuses (it may still be
 * starting). Returns the fd, made non-blocking with TCP_NODELAY, or -1. */
static int connect_one(const struct sockaddr_storage *addr, socklen_t len,
                       int64_t deadline)
{
    int64_t backoff = NSEC / 100;
    for (;;) {
        int64_t left = deadline - now_ns();
        if (left <= 0) {
            fprintf(stderr, "loadgen: connect: timed out\n");
            return -1;
        }
        int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            perror("loadgen: socket");
            return -1;
        }
        /* connect() honours SO_SNDTIMEO: a full backlog drops our SYN. */
        struct timeval tv = {.tv_sec = left / NSEC,
                             .tv_usec = (left % NSEC) / 1000 + 1};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, (const struct sockaddr *)addr, len) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            struct timeval zero = {0, 0};
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero);
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            return fd;
        }
        int err = errno;
        close(fd);
        if (err != ECONNREFUSED && err != EINTR && err != EAGAIN &&
            err != EINPROGRESS && err != ETIMEDOUT) {
            fprintf(stderr, "loadgen: connect: %s\n", strerror(err));
            return -1;
        }
        struct timespec ts = {.tv_sec = backoff / NSEC,
                              .tv_nsec = backoff % NSEC};
        nanosleep(&ts, NULL);
        if (backoff < NSEC / 5)
            backoff *= 2;
    }
}

/* arm - set C's epoll interest: EPOLLIN, plus EPOLLOUT when OUT. */
static int arm(int ep, struct conn *c, int out)
{
    if (c->want_out == out)
        return 0;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
                             .data.ptr = c};
    c->want_out = out;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* kill_conn - count an error on C, say why, stop polling it. */
static void kill_conn(int ep, struct conn *c, const char *why, int err,
                      uint64_t *errors)
{
    if (err)
        fprintf(stderr, "loadgen: conn %d: %s: %s\n", c->id, why,
                strerror(err));
    else
        fprintf(stderr, "loadgen: conn %d: %s\n", c->id, why);
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    c->dead = 1;
    (*errors)++;
}

/* pump_write - write what is left of C's request. Returns 0, or -1 when
 * the connection died. */
static int pump_write(int ep, struct conn *c, size_t size, uint64_t *errors)
{
    while (c->sent < size) {
        ssize_t n =
            send(c->fd, pattern + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (arm(ep, c, 1) != 0) {
                kill_conn(ep, c, "epoll_ctl", errno, errors);
                return -1;
            }
            return 0;
        }
        kill_conn(ep, c, "send", n < 0 ? errno : EIO, errors);
        return -1;
    }
    if (arm(ep, c, 0) != 0) {
        kill_conn(ep, c, "epoll_ctl", errno, errors);
        return -1;
    }
    return 0;
}

/* start_request - begin C's next request at time NOW. */
static int start_request(int ep, struct conn *c, size_t size, int64_t now,
                         uint64_t *errors)
{
    c->sent = 0;
    c->got = 0;
    c->start = now;
    return pump_write(ep, c, size, errors);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --port N [--host 127.0.0.1] --conns C "
            "--duration SECS\n"
            "               [--warmup SECS] [--size 64] [--max-requests N]\n"
            "               [--connect-timeout SECS] [--server-pid PID]\n");
}

/* parse_opts - fill O from the command line; returns 0 or -1. */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longs[] = {
        {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},
        {"conns", required_argument, NULL, 'c'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"size", required_argument, NULL, 's'},
        {"max-requests", required_argument, NULL, 'n'},
        {"connect-timeout", required_argument, NULL, 't'},
        {"server-pid", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct opts){.host = "127.0.0.1",
                       .port = -1,
                       .conns = -1,
                       .duration = -1,
                       .warmup = 1.0,
                       .size = 64,
                       .max_requests = UINT64_C(1000000000),
                       .connect_timeout = 10.0,
                       .server_pid = -1};
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        errno = 0;
        end = NULL;
        switch (ch) {
        case 'p':
            o->port = (int)strtol(optarg, &end, 10);
            break;
        case 'H':
            o->host = optarg;
            break;
        case 'c':
            o->conns = (int)strtol(optarg, &end, 10);
            break;
        case 'd':
            o->duration = strtod(optarg, &end);
            break;
        case 'w':
            o->warmup = strtod(optarg, &end);
            break;
        case 's':
            o->size = (size_t)strtoul(optarg, &end, 10);
            break;
        case 'n':
            o->max_requests = strtoull(optarg, &end, 10);
            break;
        case 't':
            o->connect_timeout = strtod(optarg, &end);
            break;
        case 'P':
            o->server_pid = strtol(optarg, &end, 10);
            break;
        default:
            usage();
            return -1;
        }
        if (end && (errno != 0 || *end != '\0' || end == optarg)) {
            fprintf(stderr, "loadgen: bad number: %s\n", optarg);
            return -1;
        }
    }
    if (optind != argc || o->port <= 0 || o->port > 65535 || o->conns < 1 ||
        o->conns > MAX_CONNS || !(o->duration > 0) || o->duration > MAX_SECS ||
        !(o->warmup >= 0) || o->warmup > MAX_SECS || o->size < 1 ||
        o->size > MAX_SIZE || o->max_requests < 1 ||
        !(o->connect_timeout > 0) || o->connect_timeout > MAX_SECS) {
        usage();
        fprintf(stderr,
                "  --port 1..65535, --conns 1..%d, --duration "
                "(0, %g], --warmup [0, %g], --size 1..%d\n",
                MAX_CONNS, MAX_SECS, MAX_SECS, MAX_SIZE);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_opts(argc, argv, &o) != 0)
        return 1;
    struct sockaddr_storage addr;
    socklen_t alen;
    if (parse_addr(o.host, o.port, &addr, &alen) != 0)
        return 1;
    if (raise_nofile((rlim_t)o.conns + 32) != 0)
        return 2;
    if (o.server_pid > 0 && server_cpu_ticks(o.server_pid) < 0) {
        fprintf(stderr, "loadgen: cannot read /proc/%ld/stat\n", o.server_pid);
        return 1;
    }

    pattern = malloc(o.size);
    scratch = malloc(o.size);
    struct conn *conns = calloc((size_t)o.conns, sizeof *conns);
    struct epoll_event *evs = calloc((size_t)o.conns, sizeof *evs);
    if (!pattern || !scratch || !conns || !evs) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 2;
    }
    for (size_t i = 0; i < o.size; i++)
        pattern[i] = (unsigned char)('a' + (i * 7 + 3) % 26);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("loadgen: epoll_create1");
        return 2;
    }

    /* Phase 1: connect everything. */
    int64_t deadline = now_ns() + (int64_t)(o.connect_timeout * NSEC);
    for (int i = 0; i < o.conns; i++) {
        struct conn *c = &conns[i];
        c->id = i;
        c->fd = connect_one(&addr, alen, deadline);
        if (c->fd < 0) {
            fprintf(stderr, "loadgen: connected %d of %d to %s:%d\n", i,
                    o.conns, o.host, o.port);
            return 2;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
            perror("loadgen: epoll_ctl");
            return 2;
        }
    }

    /* Phases 2 and 3: warmup, then the measured window. */
    uint64_t errors = 0, requests = 0;
    int64_t t0 = now_ns();
    for (int i = 0; i < o.conns; i++)
        start_request(ep, &conns[i], o.size, t0, &errors);
    int64_t warm_end = t0 + (int64_t)(o.warmup * NSEC);
    int64_t win_start = -1, win_end = -1;
    long long cpu0 = -1, cpu1 = -1;
    double lat_sum = 0, lat_max = 0;
    int measuring = 0;
    for (;;) {
        int64_t now = now_ns();
        if (!measuring && now >= warm_end) {
            measuring = 1;
            memset(hist, 0, sizeof hist);
            if (o.server_pid > 0)
                cpu0 = server_cpu_ticks(o.server_pid);
            win_start = now_ns();
            win_end = win_start + (int64_t)(o.duration * NSEC);
            now = win_start;
        }
        if (measuring && (now >= win_end || requests >= o.max_requests)) {
            if (o.server_pid > 0)
                cpu1 = server_cpu_ticks(o.server_pid);
            win_end = now_ns();
            break;
        }
        int64_t until = measuring ? win_end : warm_end;
        int timeout_ms = (int)((until - now + 999999) / 1000000);
        int n = epoll_wait(ep, evs, o.conns, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("loadgen: epoll_wait");
            return 2;
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            if (c->dead)
                continue;
            if (c->sent < o.size) {
                if (pump_write(ep, c, o.size, &errors) != 0)
                    continue;
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            /* Read what there is; the server echoes while we still write
             * only for sizes beyond the socket buffer. */
            size_t want = o.size - c->got;
            ssize_t r = read(c->fd, scratch, want);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r < 0) {
                kill_conn(ep, c, "read", errno, &errors);
                continue;
            }
            if (r == 0) {
                kill_conn(ep, c, "server closed the connection", 0, &errors);
                continue;
            }
            if ((size_t)r > c->sent - c->got ||
                memcmp(scratch, pattern + c->got, (size_t)r) != 0) {
                kill_conn(ep, c, "echoed bytes differ from those sent", 0,
                          &errors);
                continue;
            }
            c->got += (size_t)r;
            if (c->got < o.size)
                continue;
            int64_t t = now_ns();
            if (measuring) {
                double lat = (double)(t - c->start);
                hist[hist_index((uint64_t)(t - c->start))]++;
                lat_sum += lat;
                if (lat > lat_max)
                    lat_max = lat;
                requests++;
                c->done++;
                if (requests >= o.max_requests)
                    break; /* the loop's top ends the window */
            }
            start_request(ep, c, o.size, t, &errors);
        }
    }

    /* A live connection whose request has waited over STALL_NS. */
    uint64_t stalled = 0;
    for (int i = 0; i < o.conns; i++) {
        if (!conns[i].dead && win_end - conns[i].start > STALL_NS) {
            stalled++;
            if (stalled <= 5)
                fprintf(stderr,
                        "loadgen: conn %d: request outstanding for %.3f s "
                        "(%zu of %zu bytes sent, %zu back)\n",
                        i, (double)(win_end - conns[i].start) / NSEC,
                        conns[i].sent, o.size, conns[i].got);
        }
    }

    double secs = (double)(win_end - win_start) / NSEC;
    double rps = requests / secs;
    char cpu_req[32] = "-", cpu_util[32] = "-";
    if (cpu0 >= 0 && cpu1 >= 0 && requests > 0) {
        double cpu_s = (double)(cpu1 - cpu0) / (double)sysconf(_SC_CLK_TCK);
        snprintf(cpu_req, sizeof cpu_req, "%.3f", cpu_s * 1e6 / requests);
        snprintf(cpu_util, sizeof cpu_util, "%.3f", cpu_s / secs);
    } else if (o.server_pid > 0) {
        fprintf(stderr, "loadgen: server %ld: no CPU figure (gone?)\n",
                o.server_pid);
        errors++;
    }
    printf("loadgen conns=%d size=%zu secs=%.3f requests=%" PRIu64
           " rps=%.1f lat_mean_us=%.1f lat_p50_us=%.1f lat_p99_us=%.1f"
           " lat_max_us=%.1f errors=%" PRIu64 " stalled=%" PRIu64
           " server_cpu_us_per_req=%s server_cpu_util=%s\n",
           o.conns, o.size, secs, requests, rps,
           requests ? lat_sum / requests / 1e3 : 0.0,
           requests ? hist_quantile(0.50, requests) / 1e3 : 0.0,
           requests ? hist_quantile(0.99, requests) / 1e3 : 0.0, lat_max / 1e3,
           errors, stalled, cpu_req, cpu_util);
    fflush(stdout);
    for (int i = 0; i < o.conns; i++)
        if (!conns[i].dead)
            close(conns[i].fd);
    close(ep);
    free(conns);
    free(evs);
    free(pattern);
    free(scratch);
    if (errors || stalled || requests == 0) {
        if (requests == 0)
            fprintf(stderr, "loadgen: no request completed\n");
        return 3;
    }
    return 0;
}
