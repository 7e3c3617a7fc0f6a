/*
 * test_net.c - file descriptors and sockets through the public API
 * (weft.h, section "file descriptors, sockets"): echo over TCP (IPv4, IPv6,
 * dual stack) and Unix sockets (path and abstract), thousands of
 * connections across the Ps, read/accept/wait/write deadlines, weft_close
 * waking blocked calls, fd-number reuse after close, half-close, partial
 * writes to slow readers, error codes (refused, EPIPE without SIGPIPE,
 * reset, EBADF, bad networks and addresses, EBUSY, ENOTCORO), EMFILE
 * back-off in accept, weft_fd_wait on pipes and eventfds, name resolution
 * that does not hold a P, and idle ("slowloris") connections.
 *
 * Each test runs in its own forked child (harness.h); bodies run as the
 * main coroutine of their own runtime through run() (weft_test.h), under
 * the leak gate: a coroutine or fd a body leaves behind fails the test,
 * and so does (harness.h, when the child ends) an fd left open or closed
 * across weft_main, such as the runtime's own epoll and eventfd fds, which
 * exist only while it runs. Time bounds are generous and scaled by slow();
 * deadlines themselves are not scaled.
 *
 * The file defines getaddrinfo(), accept4() and recv() itself, passing
 * every call on to the next definition (libc, or a sanitizer's
 * interceptor): one test makes getaddrinfo sleep to check that resolution
 * gives up the P; the accept4 and recv counts show that an accept loop out
 * of fds and idle connections do not spin (counted calls, not CPU time).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <linux/io_uring.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "weft_test.h"

/* ------------------------------------------------------ getaddrinfo shim */

static _Atomic int gai_delay_ms; /* sleep this long in each call */
static _Atomic int gai_calls;    /* calls seen */

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *,
                      struct addrinfo **);

/* getaddrinfo - the test's interposer: counts calls, optionally blocks the
 * calling thread for gai_delay_ms (as a slow DNS server would), then calls
 * the real one. */
int getaddrinfo(const char *__restrict node, const char *__restrict service,
                const struct addrinfo *__restrict hints,
                struct addrinfo **__restrict res)
{
    static _Atomic(gai_fn) real;
    gai_fn f = atomic_load(&real);
    if (f == NULL) {
        f = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
        if (f == NULL)
            return EAI_SYSTEM;
        atomic_store(&real, f);
    }
    atomic_fetch_add(&gai_calls, 1);
    int d = atomic_load(&gai_delay_ms);
    if (d > 0) {
        struct timespec ts = {d / 1000, (long)(d % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    return f(node, service, hints, res);
}

/* accept4 and recv interposers: count calls, so "does not spin" is
 * asserted as a number of system calls, not as CPU time (which a loaded
 * machine or a sanitizer's own threads would decide). */
static _Atomic int64_t accept_calls, recv_calls;

typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    static _Atomic(accept4_fn) real;
    accept4_fn f = atomic_load(&real);
    if (f == NULL) {
        f = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
        if (f == NULL) {
            errno = ENOSYS;
            return -1;
        }
        atomic_store(&real, f);
    }
    atomic_fetch_add(&accept_calls, 1);
    return f(fd, addr, len, flags);
}

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    static _Atomic(recv_fn) real;
    recv_fn f = atomic_load(&real);
    if (f == NULL) {
        f = (recv_fn)dlsym(RTLD_NEXT, "recv");
        if (f == NULL) {
            errno = ENOSYS;
            return -1;
        }
        atomic_store(&real, f);
    }
    atomic_fetch_add(&recv_calls, 1);
    return f(fd, buf, n, flags);
}

/* ---------------------------------------------------------------- helpers */

/* after_ms - the deadline ms milliseconds from now, scaled by slow(). */
static int64_t after_ms(double ms)
{
    return weft_now() + (int64_t)(ms * (double)MS * slow());
}

static int64_t scaled(double ms)
{
    return (int64_t)(ms * (double)MS * slow());
}

static void wg_wait(weft_waitgroup_t *wg, double ms, const char *what)
{
    int r = weft_waitgroup_wait_dl(wg, after_ms(ms));
    if (r != 0)
        HARNESS_FAIL("%s: waitgroup wait returned %d (%s)", what, r,
                     weft_err_name(r));
}

static void go(weft_fn fn, void *arg)
{
    EXPECT_OK(weft_go(fn, arg));
}

/* raise_nofile - make the soft RLIMIT_NOFILE at least need if the hard
 * limit allows; returns the soft limit now in force. */
static long raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    if ((long)rl.rlim_cur < need) {
        rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || (long)rl.rlim_max >= need)
                          ? (rlim_t)need
                          : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        FAIL("getsockname(%d): %s", fd, strerror(errno));
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    FAIL("getsockname(%d): family %d", fd, ss.ss_family);
}

static _Atomic int path_seq;

/* unix_name - a fresh socket path (or abstract name, abstract != 0). */
static void unix_name(char *buf, size_t n, bool abstract)
{
    int k = atomic_fetch_add(&path_seq, 1);
    if (abstract)
        snprintf(buf, n, "@weft-net-%d-%d", (int)getpid(), k);
    else
        snprintf(buf, n, "/tmp/weft-net-%d-%d.sock", (int)getpid(), k);
    if (!abstract)
        unlink(buf);
}

static bool have_ipv6(void)
{
    int s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return false;
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    bool ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

enum { K_TCP4, K_TCP6, K_UNIX, K_SOCKETPAIR };
static const char *const kind_name[] = {"tcp4", "tcp6", "unix", "socketpair"};

/* conn_pair - two connected stream fds: the dialled end in *c, the
 * accepted end in *s (both weft's). */
static void conn_pair(int kind, int *c, int *s)
{
    if (kind == K_SOCKETPAIR) {
        int sp[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
        EXPECT_ERR(weft_fd_open(sp[0]), sp[0]);
        EXPECT_ERR(weft_fd_open(sp[1]), sp[1]);
        *c = sp[0];
        *s = sp[1];
        return;
    }
    char addr[160];
    const char *net = kind_name[kind];
    int l;
    if (kind == K_UNIX) {
        unix_name(addr, sizeof addr, false);
        l = weft_listen("unix", addr, 0);
    } else {
        l = weft_listen(net, kind == K_TCP4 ? "127.0.0.1:0" : "[::1]:0", 0);
    }
    EXPECT_OK(l);
    if (kind == K_TCP4)
        snprintf(addr, sizeof addr, "127.0.0.1:%d", local_port(l));
    else if (kind == K_TCP6)
        snprintf(addr, sizeof addr, "[::1]:%d", local_port(l));
    *c = weft_dial(net, addr);
    EXPECT_OK(*c);
    *s = weft_accept_dl(l, NULL, NULL, after_ms(5000));
    EXPECT_OK(*s);
    EXPECT_OK(weft_close(l));
    if (kind == K_UNIX)
        unlink(addr);
}

static void small_buffers(int fd)
{
    int v = 4096;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
}

static inline uint8_t pat(uint32_t seed, size_t i)
{
    uint32_t x = (uint32_t)i * 2654435761u ^ (seed + 1) * 0x9e3779b9u;
    x ^= x >> 15;
    x *= 0x2c1b3c6du;
    return (uint8_t)(x ^ (x >> 12));
}

static void fill(uint8_t *b, size_t n, uint32_t seed, size_t off)
{
    for (size_t i = 0; i < n; i++)
        b[i] = pat(seed, off + i);
}

/* check_pat - fail naming the first byte of b that is not the pattern. */
static void check_pat(const uint8_t *b, size_t n, uint32_t seed, size_t off,
                      const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != pat(seed, off + i))
            FAIL("%s: byte %zu is 0x%02x, expected 0x%02x", what, off + i,
                 b[i], pat(seed, off + i));
}

/* read_full - read exactly n bytes unless EOF or an error comes first;
 * returns the count read, or the error. */
static ssize_t read_full(int fd, void *buf, size_t n, int64_t dl)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = weft_read_dl(fd, (char *)buf + got, n - got, dl);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static uint32_t mix(uint32_t a, uint32_t b)
{
    uint32_t x = a * 0x85ebca6bu ^ b * 0xc2b2ae35u;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    return x;
}

/* --------------------------------------------------------------- echo */

struct echo_srv {
    int lfd;
    int nconn;
    int family; /* expected peer family, 0: any */
    weft_waitgroup_t wg;
};

struct echo_conn {
    int fd;
    struct echo_srv *srv;
};

/* echo_conn_fn - echo until EOF, then say "bye" on the still open write
 * side (the client only half-closed) and close. */
static void echo_conn_fn(void *arg)
{
    struct echo_conn *ec = arg;
    char *buf = malloc(65536);
    ASSERT(buf != NULL);
    for (;;) {
        ssize_t r = weft_read_dl(ec->fd, buf, 65536, after_ms(20000));
        if (r == 0)
            break;
        EXPECT_OK(r);
        size_t done = 0;
        EXPECT_ERR(weft_write(ec->fd, buf, (size_t)r, &done), r);
        ASSERT_EQ(done, r);
    }
    EXPECT_ERR(weft_write(ec->fd, "bye", 3, NULL), 3);
    EXPECT_OK(weft_close(ec->fd));
    free(buf);
    EXPECT_OK(weft_waitgroup_done(&ec->srv->wg));
    free(ec);
}

static void echo_accept_fn(void *arg)
{
    struct echo_srv *sv = arg;
    for (int i = 0; i < sv->nconn; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        memset(&ss, 0, sizeof ss);
        int fd = weft_accept_dl(sv->lfd, (struct sockaddr *)&ss, &len,
                                after_ms(20000));
        EXPECT_OK(fd);
        ASSERT_GT(len, 0);
        if (sv->family)
            ASSERT_EQ(ss.ss_family, sv->family);
        ASSERT(fcntl(fd, F_GETFL) & O_NONBLOCK);
        ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        struct echo_conn *ec = malloc(sizeof *ec);
        ASSERT(ec != NULL);
        ec->fd = fd;
        ec->srv = sv;
        go(echo_conn_fn, ec);
    }
    EXPECT_OK(weft_waitgroup_done(&sv->wg));
}

struct msg_writer {
    int fd;
    const uint8_t *buf;
    size_t n;
    weft_waitgroup_t wg;
};

static void msg_writer_fn(void *arg)
{
    struct msg_writer *w = arg;
    size_t done = 0;
    EXPECT_ERR(weft_write(w->fd, w->buf, w->n, &done), w->n);
    ASSERT_EQ(done, w->n);
    EXPECT_OK(weft_waitgroup_done(&w->wg));
}

struct echo_cfg {
    const char *lnet, *laddr; /* laddr "unix"/"@" for a fresh name */
    const char *dnet, *dfmt;  /* dial address with %d for the port */
    int family;
};

static int echo_body(void *arg)
{
    const struct echo_cfg *cfg = arg;
    char path[108], addr[160];
    const char *laddr = cfg->laddr;
    bool is_unix = strcmp(cfg->lnet, "unix") == 0;
    if (is_unix) {
        unix_name(path, sizeof path, laddr[0] == '@');
        laddr = path;
    }
    int l = weft_listen(cfg->lnet, laddr, 0);
    EXPECT_OK(l);
    ASSERT(fcntl(l, F_GETFL) & O_NONBLOCK);
    if (is_unix)
        snprintf(addr, sizeof addr, "%s", laddr);
    else
        snprintf(addr, sizeof addr, cfg->dfmt, local_port(l));

    enum { NCONN = 3 };
    struct echo_srv sv;
    memset(&sv, 0, sizeof sv);
    sv.lfd = l;
    sv.nconn = NCONN;
    sv.family = cfg->family;
    EXPECT_OK(weft_waitgroup_add(&sv.wg, 1 + NCONN));
    go(echo_accept_fn, &sv);

    static const size_t sizes[] = {1, 7, 1000, 4096, 65536, 300000};
    enum { MAXSZ = 300000 };
    uint8_t *out = malloc(MAXSZ), *in = malloc(MAXSZ);
    ASSERT(out != NULL && in != NULL);
    for (int c = 0; c < NCONN; c++) {
        int fd = weft_dial(cfg->dnet, addr);
        if (fd < 0)
            FAIL("weft_dial(\"%s\", \"%s\") = %d (%s)", cfg->dnet, addr, fd,
                 weft_err_name(fd));
        ASSERT(fcntl(fd, F_GETFL) & O_NONBLOCK);
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k];
            uint32_t seed = (uint32_t)(c * 100 + (int)k);
            fill(out, n, seed, 0);
            memset(in, 0, n);
            /* Write from another coroutine: the echo comes back while we
             * are still writing, and a reader and a writer on one fd are
             * allowed at once. */
            struct msg_writer w;
            memset(&w, 0, sizeof w);
            w.fd = fd;
            w.buf = out;
            w.n = n;
            EXPECT_OK(weft_waitgroup_add(&w.wg, 1));
            go(msg_writer_fn, &w);
            EXPECT_ERR(read_full(fd, in, n, after_ms(10000)), n);
            check_pat(in, n, seed, 0, "echoed bytes");
            wg_wait(&w.wg, 10000, "echo writer");
        }
        EXPECT_OK(weft_shutdown(fd, SHUT_WR));
        char bye[8];
        EXPECT_ERR(read_full(fd, bye, 3, after_ms(10000)), 3);
        ASSERT(memcmp(bye, "bye", 3) == 0);
        EXPECT_ERR(weft_read_dl(fd, bye, sizeof bye, after_ms(10000)), 0);
        EXPECT_OK(weft_close(fd));
    }
    wg_wait(&sv.wg, 20000, "echo server");
    EXPECT_OK(weft_close(l));
    if (is_unix && path[0] != '@')
        unlink(path);
    free(out);
    free(in);
    return 0;
}

static void echo_both(const struct echo_cfg *cfg)
{
    run(1, echo_body, (void *)cfg);
    run(2, echo_body, (void *)cfg);
}

TEST(echo_tcp4)
{
    static const struct echo_cfg cfg = {"tcp4", "127.0.0.1:0", "tcp4",
                                        "127.0.0.1:%d", AF_INET};
    echo_both(&cfg);
    /* ":port" with an empty host listens on every address. */
    static const struct echo_cfg any = {"tcp4", ":0", "tcp4", "127.0.0.1:%d",
                                        AF_INET};
    echo_both(&any);
}

TEST(echo_tcp6)
{
    if (!have_ipv6())
        SKIP("no IPv6 loopback");
    static const struct echo_cfg cfg = {"tcp6", "[::1]:0", "tcp6", "[::1]:%d",
                                        AF_INET6};
    echo_both(&cfg);
}

TEST(echo_tcp_dual_stack)
{
    /* "tcp" with an empty host: IPv6 and IPv4 (IPv4 only without v6). */
    static const struct echo_cfg v4 = {"tcp", ":0", "tcp", "127.0.0.1:%d", 0};
    echo_both(&v4);
    static const struct echo_cfg v4b = {"tcp", ":0", "tcp4", "127.0.0.1:%d",
                                        0};
    echo_both(&v4b);
    if (have_ipv6()) {
        static const struct echo_cfg v6 = {"tcp", ":0", "tcp", "[::1]:%d", 0};
        echo_both(&v6);
    }
}

TEST(echo_unix_path)
{
    static const struct echo_cfg cfg = {"unix", "unix", "unix", NULL, AF_UNIX};
    echo_both(&cfg);
}

TEST(echo_unix_abstract)
{
    static const struct echo_cfg cfg = {"unix", "@", "unix", NULL, AF_UNIX};
    echo_both(&cfg);
}

/* ---------------------------------------------------------- readv/writev */

static int iov_body(void *arg)
{
    int kind = (int)(intptr_t)arg;
    int c, s;
    conn_pair(kind, &c, &s);
    uint8_t a[3], b[1000], d[50000];
    fill(a, sizeof a, 1, 0);
    fill(b, sizeof b, 1, sizeof a);
    fill(d, sizeof d, 1, sizeof a + sizeof b);
    struct iovec wv[4] = {{a, sizeof a}, {NULL, 0}, {b, sizeof b}, {d, sizeof d}};
    size_t total = sizeof a + sizeof b + sizeof d, done = 0;
    EXPECT_ERR(weft_writev(c, wv, 4, &done), total);
    ASSERT_EQ(done, total);
    uint8_t *in = calloc(1, total);
    ASSERT(in != NULL);
    size_t got = 0;
    while (got < total) {
        /* Three uneven buffers per call. */
        size_t left = total - got, n1 = left < 5 ? left : 5;
        size_t n2 = left - n1 < 777 ? left - n1 : 777;
        struct iovec rv[3] = {{in + got, n1},
                              {in + got + n1, n2},
                              {in + got + n1 + n2, left - n1 - n2}};
        ssize_t r = weft_readv_dl(s, rv, 3, after_ms(5000));
        EXPECT_OK(r);
        ASSERT_GT(r, 0);
        got += (size_t)r;
    }
    check_pat(in, total, 1, 0, "readv");
    free(in);
    /* Nothing to read or write: 0 at once, iov NULL allowed. */
    EXPECT_ERR(weft_readv_dl(s, NULL, 0, after_ms(5000)), 0);
    struct iovec empty[2] = {{NULL, 0}, {NULL, 0}};
    EXPECT_ERR(weft_readv_dl(s, empty, 2, after_ms(5000)), 0);
    EXPECT_ERR(weft_read_dl(s, NULL, 0, after_ms(5000)), 0);
    EXPECT_ERR(weft_writev(c, NULL, 0, &done), 0);
    ASSERT_EQ(done, 0);
    struct iovec many[1];
    many[0].iov_base = a;
    many[0].iov_len = 1;
    EXPECT_ERR(weft_writev(c, many, IOV_MAX + 1, &done), WEFT_EINVAL);
    EXPECT_ERR(weft_writev(c, many, -1, &done), WEFT_EINVAL);
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(s));
    return 0;
}

TEST(readv_writev)
{
    run(1, iov_body, (void *)(intptr_t)K_TCP4);
    run(2, iov_body, (void *)(intptr_t)K_SOCKETPAIR);
}

/* ------------------------------------------------------ many connections */

struct mc {
    int lfd;
    int n, rounds;
    uint32_t maxsz, seed;
    char addr[64];
    weft_waitgroup_t cwg, swg;
    _Atomic int clients_ok;
    _Atomic int64_t bytes;
};

struct mc_conn {
    struct mc *m;
    int id, fd;
};

/* Server side of one connection: frames of (u32 len, u32 tag, payload);
 * answers with (len, tag ^ 0xa5a5a5a5, each payload byte + 1). */
static void mc_server_conn(void *arg)
{
    struct mc_conn *cc = arg;
    struct mc *m = cc->m;
    uint8_t *buf = malloc(m->maxsz + 8);
    ASSERT(buf != NULL);
    for (;;) {
        uint32_t hdr[2];
        ssize_t r = read_full(cc->fd, hdr, 8, after_ms(60000));
        if (r == 0)
            break;
        EXPECT_ERR(r, 8);
        uint32_t len = hdr[0];
        ASSERT(len >= 1 && len <= m->maxsz);
        EXPECT_ERR(read_full(cc->fd, buf + 8, len, after_ms(60000)), len);
        for (uint32_t i = 0; i < len; i++)
            buf[8 + i]++;
        hdr[1] ^= 0xa5a5a5a5u;
        memcpy(buf, hdr, 8);
        EXPECT_ERR(weft_write(cc->fd, buf, 8 + len, NULL), 8 + len);
    }
    EXPECT_OK(weft_close(cc->fd));
    free(buf);
    free(cc);
    EXPECT_OK(weft_waitgroup_done(&m->swg));
}

static void mc_acceptor(void *arg)
{
    struct mc *m = arg;
    for (int i = 0; i < m->n; i++) {
        int fd = weft_accept_dl(m->lfd, NULL, NULL, after_ms(60000));
        if (fd < 0)
            FAIL("accept %d of %d: %d (%s)", i, m->n, fd, weft_err_name(fd));
        struct mc_conn *cc = malloc(sizeof *cc);
        ASSERT(cc != NULL);
        cc->m = m;
        cc->id = i;
        cc->fd = fd;
        go(mc_server_conn, cc);
    }
    EXPECT_OK(weft_waitgroup_done(&m->swg));
}

static void mc_client(void *arg)
{
    struct mc_conn *cc = arg;
    struct mc *m = cc->m;
    int fd = weft_dial("tcp4", m->addr);
    if (fd < 0)
        FAIL("client %d: dial: %d (%s)", cc->id, fd, weft_err_name(fd));
    uint8_t *out = malloc(m->maxsz), *in = malloc(m->maxsz + 8);
    ASSERT(out != NULL && in != NULL);
    for (int r = 0; r < m->rounds; r++) {
        uint32_t s = mix(m->seed, (uint32_t)(cc->id * 131 + r));
        uint32_t len = 1 + s % m->maxsz;
        uint32_t hdr[2] = {len, s};
        fill(out, len, s, 0);
        struct iovec iov[2] = {{hdr, 8}, {out, len}};
        EXPECT_ERR(weft_writev(fd, iov, 2, NULL), 8 + len);
        EXPECT_ERR(read_full(fd, in, 8 + len, after_ms(60000)), 8 + len);
        uint32_t rh[2];
        memcpy(rh, in, 8);
        ASSERT_EQ(rh[0], len);
        ASSERT_EQ(rh[1], s ^ 0xa5a5a5a5u);
        for (uint32_t i = 0; i < len; i++)
            if (in[8 + i] != (uint8_t)(pat(s, i) + 1))
                FAIL("client %d round %d: byte %u is 0x%02x, expected "
                     "0x%02x",
                     cc->id, r, i, in[8 + i], (uint8_t)(pat(s, i) + 1));
        atomic_fetch_add(&m->bytes, len);
    }
    EXPECT_OK(weft_close(fd));
    free(out);
    free(in);
    atomic_fetch_add(&m->clients_ok, 1);
    EXPECT_OK(weft_waitgroup_done(&m->cwg));
    free(cc);
}

struct mc_cfg {
    int n, rounds;
    uint32_t maxsz, seed;
};

static int mc_body(void *arg)
{
    const struct mc_cfg *cfg = arg;
    struct mc *m = calloc(1, sizeof *m);
    ASSERT(m != NULL);
    m->n = cfg->n;
    m->rounds = cfg->rounds;
    m->maxsz = cfg->maxsz;
    m->seed = cfg->seed;
    m->lfd = weft_listen("tcp4", "127.0.0.1:0", 4096);
    EXPECT_OK(m->lfd);
    snprintf(m->addr, sizeof m->addr, "127.0.0.1:%d", local_port(m->lfd));
    EXPECT_OK(weft_waitgroup_add(&m->swg, m->n + 1));
    EXPECT_OK(weft_waitgroup_add(&m->cwg, m->n));
    go(mc_acceptor, m);
    for (int i = 0; i < m->n; i++) {
        struct mc_conn *cc = malloc(sizeof *cc);
        ASSERT(cc != NULL);
        cc->m = m;
        cc->id = i;
        cc->fd = -1;
        go(mc_client, cc);
    }
    wg_wait(&m->cwg, 120000, "clients");
    wg_wait(&m->swg, 30000, "server");
    ASSERT_EQ(atomic_load(&m->clients_ok), m->n);
    ASSERT_GT(atomic_load(&m->bytes), m->n);
    EXPECT_OK(weft_close(m->lfd));
    free(m);
    return 0;
}

TEST_TIMEOUT(many_conns, 600)
{
    long want = SANITIZED ? 1000 : 2000;
    long lim = raise_nofile(2 * want + 64);
    int n = (int)(lim >= 2 * want + 64 ? want : (lim - 64) / 2);
    if (n < 100)
        SKIP("RLIMIT_NOFILE %ld is too low", lim);
    const struct mc_cfg cfgs[] = {
        {n, 8, 64, 1},
        {n, 4, 4096, 2},
        {n, 3, 16384, 3},
    };
    for (int procs = 2; procs >= 1; procs--)
        for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++)
            run(procs, mc_body, (void *)&cfgs[i]);
}

/* ------------------------------------------------------------ deadlines */

struct delayed_write {
    int fd;
    int64_t delay;
    const char *data;
    _Atomic int written;
    weft_waitgroup_t wg;
};

static void delayed_write_fn(void *arg)
{
    struct delayed_write *dw = arg;
    weft_sleep(dw->delay);
    atomic_store(&dw->written, 1);
    size_t n = strlen(dw->data);
    EXPECT_ERR(weft_write(dw->fd, dw->data, n, NULL), n);
    EXPECT_OK(weft_waitgroup_done(&dw->wg));
}

/* expect_timeout_at - the call that just returned WEFT_ETIMEDOUT for dl
 * did so after dl and not much later. */
static void expect_timeout_at(int64_t dl, const char *what)
{
    int64_t t = weft_now();
    if (t < dl)
        FAIL("%s: timed out %lld us before its deadline", what,
             (long long)((dl - t) / US));
    if (t - dl > scaled(250))
        FAIL("%s: timed out %lld ms after its deadline", what,
             (long long)((t - dl) / MS));
}

static int deadline_body(void *arg)
{
    (void)arg;
    char buf[16];
    int c, s;
    conn_pair(K_TCP4, &c, &s);

    /* weft_read_dl on a connection the peer never writes. */
    int64_t dl = weft_now() + 100 * MS;
    EXPECT_ERR(weft_read_dl(c, buf, sizeof buf, dl), WEFT_ETIMEDOUT);
    expect_timeout_at(dl, "weft_read_dl");
    /* Already past: at once. */
    int64_t t0 = weft_now();
    EXPECT_ERR(weft_read_dl(c, buf, sizeof buf, t0 - 1), WEFT_ETIMEDOUT);
    EXPECT_ERR(weft_read_dl(c, buf, sizeof buf, 0), WEFT_ETIMEDOUT);
    ASSERT_LT(weft_now() - t0, scaled(50));
    /* Still usable: data written later is read. */
    struct delayed_write dw;
    memset(&dw, 0, sizeof dw);
    dw.fd = s;
    dw.delay = 30 * MS;
    dw.data = "later";
    EXPECT_OK(weft_waitgroup_add(&dw.wg, 1));
    go(delayed_write_fn, &dw);
    EXPECT_ERR(read_full(c, buf, 5, after_ms(5000)), 5);
    ASSERT(memcmp(buf, "later", 5) == 0);
    ASSERT(atomic_load(&dw.written));
    wg_wait(&dw.wg, 5000, "delayed writer");
    /* A second timeout on the same fd, then data before the deadline. */
    dl = weft_now() + 50 * MS;
    EXPECT_ERR(weft_read_dl(c, buf, sizeof buf, dl), WEFT_ETIMEDOUT);
    expect_timeout_at(dl, "second weft_read_dl");
    EXPECT_ERR(weft_write(s, "x", 1, NULL), 1);
    EXPECT_ERR(weft_read_dl(c, buf, sizeof buf, weft_now() + 5000 * MS), 1);
    ASSERT_EQ(buf[0], 'x');
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(s));

    /* weft_accept_dl. */
    int l = weft_listen("tcp4", "127.0.0.1:0", 0);
    EXPECT_OK(l);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", local_port(l));
    dl = weft_now() + 100 * MS;
    EXPECT_ERR(weft_accept_dl(l, NULL, NULL, dl), WEFT_ETIMEDOUT);
    expect_timeout_at(dl, "weft_accept_dl");
    t0 = weft_now();
    EXPECT_ERR(weft_accept_dl(l, NULL, NULL, t0 - MS), WEFT_ETIMEDOUT);
    ASSERT_LT(weft_now() - t0, scaled(50));
    c = weft_dial("tcp4", addr);
    EXPECT_OK(c);
    s = weft_accept_dl(l, NULL, NULL, after_ms(5000));
    EXPECT_OK(s);
    EXPECT_OK(weft_close(s));
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(l));

    /* weft_fd_wait on a pipe. */
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    EXPECT_ERR(weft_fd_open(p[0]), p[0]);
    EXPECT_ERR(weft_fd_open(p[1]), p[1]);
    dl = weft_now() + 100 * MS;
    EXPECT_ERR(weft_fd_wait(p[0], WEFT_READ, dl), WEFT_ETIMEDOUT);
    expect_timeout_at(dl, "weft_fd_wait");
    t0 = weft_now();
    EXPECT_ERR(weft_fd_wait(p[0], WEFT_READ, t0 - 1), WEFT_ETIMEDOUT);
    ASSERT_LT(weft_now() - t0, scaled(50));
    ASSERT_EQ(write(p[1], "y", 1), 1);
    int r = weft_fd_wait(p[0], WEFT_READ, after_ms(5000));
    EXPECT_OK(r);
    ASSERT(r & WEFT_READ);
    EXPECT_ERR(weft_read(p[0], buf, sizeof buf), 1);
    EXPECT_OK(weft_close(p[0]));
    EXPECT_OK(weft_close(p[1]));
    return 0;
}

TEST(deadlines)
{
    run(1, deadline_body, NULL);
    run(2, deadline_body, NULL);
}

/* A dial whose SYN is dropped (the listener's accept queue is full) times
 * out at its deadline. */
static int dial_dl_body(void *arg)
{
    int *blocked = arg;
    int l = weft_listen("tcp4", "127.0.0.1:0", 1);
    EXPECT_OK(l);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", local_port(l));
    int fds[32], n = 0;
    *blocked = 0;
    while (n < 32) {
        int64_t dl = weft_now() + 300 * MS;
        int fd = weft_dial_dl("tcp4", addr, dl);
        if (fd == WEFT_ETIMEDOUT) {
            expect_timeout_at(dl, "weft_dial_dl");
            *blocked = 1;
            break;
        }
        if (fd < 0)
            FAIL("dial %d: %d (%s)", n, fd, weft_err_name(fd));
        fds[n++] = fd;
    }
    for (int i = 0; i < n; i++)
        EXPECT_OK(weft_close(fds[i]));
    EXPECT_OK(weft_close(l));
    return 0;
}

TEST(dial_deadline)
{
    int blocked = 0;
    run(2, dial_dl_body, &blocked);
    if (!blocked)
        SKIP("32 connects to a backlog-1 listener all completed: this "
             "kernel does not drop SYNs on a full accept queue");
}

/* ------------------------------------------------------ close while blocked */

enum { OP_READ, OP_WRITE, OP_ACCEPT, OP_WAIT };
static const char *const op_name[] = {"read", "write", "accept", "fd_wait"};

#define BIGWRITE ((size_t)32 << 20)

struct blk {
    int fd, op;
    _Atomic int finished;
    int64_t result, t_ret;
    size_t done;
    char data[64];
    weft_waitgroup_t *wg;
};

static void blk_fn(void *arg)
{
    struct blk *b = arg;
    switch (b->op) {
    case OP_READ:
        b->result = weft_read(b->fd, b->data, sizeof b->data);
        break;
    case OP_WRITE: {
        uint8_t *big = calloc(1, BIGWRITE);
        ASSERT(big != NULL);
        b->result = weft_write(b->fd, big, BIGWRITE, &b->done);
        free(big);
        break;
    }
    case OP_ACCEPT:
        b->result = weft_accept(b->fd, NULL, NULL);
        break;
    case OP_WAIT:
        b->result = weft_fd_wait(b->fd, WEFT_READ, WEFT_FOREVER);
        break;
    }
    b->t_ret = weft_now();
    atomic_store(&b->finished, 1);
    EXPECT_OK(weft_waitgroup_done(b->wg));
}

/* start_blocked - spawn b and wait until it is parked in its call (IO
 * wait: a fixed sleep let a loaded machine close the fd before the call
 * began); fails if it returned instead. */
static void start_blocked(struct blk *b)
{
    int64_t id = weft_go(blk_fn, b);
    ASSERT_GT(id, 0);
    int64_t end = after_ms(5000);
    while (parked_count(id, WR_IO_WAIT) < 1) {
        if (atomic_load(&b->finished))
            FAIL("weft_%s returned %lld (%s) instead of blocking",
                 op_name[b->op], (long long)b->result,
                 b->result < 0 ? weft_err_name((int)b->result)
                               : "no error");
        if (weft_now() > end)
            FAIL("weft_%s never parked", op_name[b->op]);
        weft_sleep(100 * US);
    }
}

struct closer {
    int fd, result;
};

static void *closer_thread(void *arg)
{
    struct closer *cl = arg;
    cl->result = weft_close(cl->fd);
    return NULL;
}

static int close_blocked_body(void *arg)
{
    int via_thread = (int)(intptr_t)arg;
    for (int op = OP_READ; op <= OP_WAIT; op++) {
        weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
        struct blk b;
        memset(&b, 0, sizeof b);
        b.op = op;
        b.wg = &wg;
        int other = -1, l = -1;
        switch (op) {
        case OP_READ:
            conn_pair(K_TCP4, &b.fd, &other);
            break;
        case OP_WRITE:
            conn_pair(K_SOCKETPAIR, &b.fd, &other);
            small_buffers(b.fd);
            small_buffers(other);
            break;
        case OP_ACCEPT:
            l = weft_listen("tcp4", "127.0.0.1:0", 0);
            EXPECT_OK(l);
            b.fd = l;
            break;
        case OP_WAIT: {
            int p[2];
            ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
            EXPECT_ERR(weft_fd_open(p[0]), p[0]);
            b.fd = p[0];
            other = p[1];
            break;
        }
        }
        EXPECT_OK(weft_waitgroup_add(&wg, 1));
        start_blocked(&b);
        int64_t t0 = weft_now();
        struct closer cl = {b.fd, -1};
        pthread_t th;
        if (via_thread)
            ASSERT_EQ(pthread_create(&th, NULL, closer_thread, &cl), 0);
        else
            cl.result = weft_close(b.fd);
        int r = weft_waitgroup_wait_dl(&wg, after_ms(2000));
        if (via_thread)
            pthread_join(th, NULL);
        if (r != 0)
            FAIL("weft_%s still blocked 2 s after weft_close(%d)%s",
                 op_name[op], b.fd, via_thread ? " from a plain thread" : "");
        EXPECT_OK(cl.result);
        if (b.result != WEFT_ECLOSED)
            FAIL("blocked weft_%s: %lld (%s) after weft_close, expected "
                 "WEFT_ECLOSED",
                 op_name[op], (long long)b.result,
                 b.result < 0 ? weft_err_name((int)b.result) : "no error");
        if (b.t_ret - t0 > scaled(200))
            FAIL("weft_%s woke %lld ms after weft_close", op_name[op],
                 (long long)((b.t_ret - t0) / MS));
        if (op == OP_WRITE) {
            ASSERT_GT(b.done, 0);
            ASSERT_LT(b.done, BIGWRITE);
        }
        /* The number is closed and forgotten. */
        char c;
        EXPECT_ERR(weft_read_dl(b.fd, &c, 1, weft_now() + MS), WEFT_EBADF);
        if (other >= 0)
            EXPECT_OK(weft_close(other));
    }
    return 0;
}

TEST(close_wakes_blocked)
{
    run(1, close_blocked_body, (void *)0);
    run(2, close_blocked_body, (void *)0);
}

TEST(close_from_thread_wakes_blocked)
{
    run(1, close_blocked_body, (void *)1);
    run(2, close_blocked_body, (void *)1);
}

/* A reader and a writer blocked on one fd: weft_close wakes both. */
static int close_both_body(void *arg)
{
    (void)arg;
    weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
    struct blk rd, wr;
    int c, s;
    conn_pair(K_SOCKETPAIR, &c, &s);
    small_buffers(c);
    small_buffers(s);
    memset(&rd, 0, sizeof rd);
    memset(&wr, 0, sizeof wr);
    rd.fd = wr.fd = c;
    rd.op = OP_READ;
    wr.op = OP_WRITE;
    rd.wg = wr.wg = &wg;
    EXPECT_OK(weft_waitgroup_add(&wg, 2));
    start_blocked(&rd);
    start_blocked(&wr);
    EXPECT_OK(weft_close(c));
    wg_wait(&wg, 2000, "reader and writer after weft_close");
    EXPECT_ERR(rd.result, WEFT_ECLOSED);
    EXPECT_ERR(wr.result, WEFT_ECLOSED);
    EXPECT_OK(weft_close(s));
    return 0;
}

TEST(close_wakes_reader_and_writer)
{
    run(1, close_both_body, NULL);
    run(2, close_both_body, NULL);
}

/* ------------------------------------------------------------- fd reuse */

struct reuse_w {
    int fd;
    int use_wait; /* weft_fd_wait instead of weft_read */
    int64_t dl;
    int64_t result;
    char data[8];
    weft_waitgroup_t *wg;
};

static void reuse_fn(void *arg)
{
    struct reuse_w *w = arg;
    if (w->use_wait) {
        w->result = weft_fd_wait(w->fd, WEFT_READ, w->dl);
        if (w->result > 0) {
            ssize_t r = weft_read_dl(w->fd, w->data, sizeof w->data, w->dl);
            if (r != 1)
                w->result = r < 0 ? r : -1000 - r;
        }
    } else {
        w->result = weft_read_dl(w->fd, w->data, sizeof w->data, w->dl);
    }
    EXPECT_OK(weft_waitgroup_done(w->wg));
}

static int reuse_body(void *arg)
{
    (void)arg;
    int iters = SANITIZED ? 150 : 500, reused = 0;
    for (int it = 0; it < iters; it++) {
        weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
        int use_pipe = it & 1, use_wait = (it >> 1) & 1;
        int late_write = (it >> 2) & 1;
        int a[2], b[2];
        if (use_pipe)
            ASSERT_EQ(pipe2(a, O_CLOEXEC), 0);
        else
            ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a),
                      0);
        EXPECT_ERR(weft_fd_open(a[0]), a[0]);
        struct reuse_w w1, w2;
        memset(&w1, 0, sizeof w1);
        memset(&w2, 0, sizeof w2);
        w1.fd = a[0];
        w1.use_wait = use_wait;
        w1.dl = after_ms(5000);
        w1.wg = &wg;
        EXPECT_OK(weft_waitgroup_add(&wg, 1));
        int64_t id1 = weft_go(reuse_fn, &w1);
        EXPECT_OK(id1);
        wait_parked(id1, WR_IO_WAIT, 1);
        int old = a[0];
        EXPECT_OK(weft_close(a[0]));
        /* No yield from here to the new waiter: at 1 P the old waiter has
         * not run yet when its fd number is reused and made readable. */
        if (use_pipe)
            ASSERT_EQ(pipe2(b, O_CLOEXEC), 0);
        else
            ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b),
                      0);
        reused += b[0] == old;
        if (!late_write)
            ASSERT_EQ(write(b[1], "N", 1), 1);
        w2.fd = b[0];
        w2.use_wait = use_wait;
        w2.dl = after_ms(5000);
        w2.wg = &wg;
        EXPECT_OK(weft_waitgroup_add(&wg, 1));
        go(reuse_fn, &w2);
        if (late_write) {
            weft_sleep(200 * US);
            ASSERT_EQ(write(b[1], "N", 1), 1);
        }
        wg_wait(&wg, 10000, "fd reuse waiters");
        if (w1.result != WEFT_ECLOSED)
            FAIL("iteration %d (%s, %s, %s write): waiter on the closed fd "
                 "%d got %lld (%s), expected WEFT_ECLOSED",
                 it, use_pipe ? "pipe" : "socketpair",
                 use_wait ? "fd_wait" : "read", late_write ? "late" : "early",
                 old, (long long)w1.result,
                 w1.result < 0 ? weft_err_name((int)w1.result) : "data");
        if (use_wait ? w2.result <= 0 : w2.result != 1)
            FAIL("iteration %d (%s, %s, %s write): waiter on the new fd %d "
                 "(reused: %s) got %lld (%s), expected the byte",
                 it, use_pipe ? "pipe" : "socketpair",
                 use_wait ? "fd_wait" : "read", late_write ? "late" : "early",
                 b[0], b[0] == old ? "yes" : "no", (long long)w2.result,
                 w2.result < 0 ? weft_err_name((int)w2.result) : "?");
        ASSERT_EQ(w2.data[0], 'N');
        EXPECT_OK(weft_close(b[0]));
        EXPECT_OK(weft_close(b[1]));
        EXPECT_OK(weft_close(a[1]));
    }
    if (reused < iters / 2)
        FAIL("the new fd reused the closed number only %d of %d times",
             reused, iters);
    return 0;
}

TEST_TIMEOUT(fd_reuse_after_close, 120)
{
    run(1, reuse_body, NULL);
    run(2, reuse_body, NULL);
}

/* ------------------------------------------------------------ half-close */

static int half_close_body(void *arg)
{
    int kind = (int)(intptr_t)arg;
    int c, s;
    char buf[32];
    conn_pair(kind, &c, &s);
    EXPECT_ERR(weft_write(c, "request", 7, NULL), 7);
    EXPECT_OK(weft_shutdown(c, SHUT_WR));
    EXPECT_ERR(read_full(s, buf, 7, after_ms(5000)), 7);
    ASSERT(memcmp(buf, "request", 7) == 0);
    EXPECT_ERR(weft_read_dl(s, buf, sizeof buf, after_ms(5000)), 0);
    EXPECT_ERR(weft_read_dl(s, buf, sizeof buf, after_ms(5000)), 0); /* sticky */
    /* The half-closed side can still read; the peer can still write. */
    EXPECT_ERR(weft_write(s, "response", 8, NULL), 8);
    EXPECT_ERR(read_full(c, buf, 8, after_ms(5000)), 8);
    ASSERT(memcmp(buf, "response", 8) == 0);
    /* Writing on the shut side fails (and raises no SIGPIPE). */
    ssize_t r = weft_write(c, "x", 1, NULL);
    if (r != -EPIPE)
        FAIL("write after SHUT_WR on %s: %zd (%s), expected -EPIPE",
             kind_name[kind], r, weft_err_name((int)r));
    EXPECT_OK(weft_shutdown(s, SHUT_WR));
    EXPECT_ERR(weft_read_dl(c, buf, sizeof buf, after_ms(5000)), 0);
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(s));
    return 0;
}

TEST(half_close)
{
    signal(SIGPIPE, SIG_DFL);
    for (int p = 1; p <= 2; p++) {
        run(p, half_close_body, (void *)(intptr_t)K_TCP4);
        run(p, half_close_body, (void *)(intptr_t)K_UNIX);
        run(p, half_close_body, (void *)(intptr_t)K_SOCKETPAIR);
    }
}

/* ------------------------------------------------------- partial writes */

#define BIG ((size_t)8 << 20)

struct big_writer {
    int fd, use_iov;
    const uint8_t *buf;
    size_t n;
    ssize_t result;
    size_t done;
    weft_waitgroup_t wg;
};

static void big_writer_fn(void *arg)
{
    struct big_writer *w = arg;
    if (w->use_iov) {
        /* Uneven pieces, so partial writes end inside and between them. */
        static const size_t lens[] = {1, ((size_t)1 << 20) - 1, 3,
                                      (size_t)2 << 20, 17, 0, 4093};
        struct iovec iov[8];
        size_t off = 0;
        int k = 0;
        for (; k < 7; k++) {
            iov[k].iov_base = (void *)(w->buf + off);
            iov[k].iov_len = lens[k];
            off += lens[k];
        }
        iov[k].iov_base = (void *)(w->buf + off);
        iov[k].iov_len = w->n - off;
        w->result = weft_writev(w->fd, iov, 8, &w->done);
    } else {
        w->result = weft_write(w->fd, w->buf, w->n, &w->done);
    }
    EXPECT_OK(weft_waitgroup_done(&w->wg));
}

static int slow_reader_body(void *arg)
{
    int kind = (int)(intptr_t)arg & 0xff, use_iov = (int)(intptr_t)arg >> 8;
    int c, s;
    conn_pair(kind, &c, &s);
    uint8_t *buf = malloc(BIG);
    ASSERT(buf != NULL);
    fill(buf, BIG, 77, 0);
    struct big_writer w;
    memset(&w, 0, sizeof w);
    w.fd = c;
    w.use_iov = use_iov;
    w.buf = buf;
    w.n = BIG;
    EXPECT_OK(weft_waitgroup_add(&w.wg, 1));
    go(big_writer_fn, &w);
    uint8_t chunk[1000];
    size_t total = 0;
    int reads = 0;
    while (total < BIG) {
        ssize_t r = weft_read_dl(s, chunk, sizeof chunk, after_ms(10000));
        EXPECT_OK(r);
        ASSERT_GT(r, 0);
        if (total + (size_t)r > BIG)
            FAIL("read %zu bytes past the %zu written", total + (size_t)r - BIG,
                 BIG);
        check_pat(chunk, (size_t)r, 77, total, "slow reader");
        total += (size_t)r;
        if (++reads % 128 == 0)
            weft_sleep(MS);
    }
    wg_wait(&w.wg, 10000, "big writer");
    EXPECT_ERR(w.result, BIG);
    ASSERT_EQ(w.done, BIG);
    EXPECT_ERR(weft_read_dl(s, chunk, 1, weft_now() + 20 * MS), WEFT_ETIMEDOUT);
    free(buf);
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(s));
    return 0;
}

TEST_TIMEOUT(partial_writes_slow_reader, 180)
{
    for (int p = 1; p <= 2; p++)
        for (int iov = 0; iov <= 1; iov++) {
            run(p, slow_reader_body, (void *)(intptr_t)(K_SOCKETPAIR | iov << 8));
            run(p, slow_reader_body, (void *)(intptr_t)(K_TCP4 | iov << 8));
        }
}

struct rest_reader {
    int fd;
    size_t from, n;
    weft_waitgroup_t wg;
};

static void rest_reader_fn(void *arg)
{
    struct rest_reader *rr = arg;
    uint8_t *in = malloc(65536);
    ASSERT(in != NULL);
    size_t got = 0;
    while (got < rr->n) {
        size_t want = rr->n - got < 65536 ? rr->n - got : 65536;
        ssize_t r = weft_read_dl(rr->fd, in, want, after_ms(10000));
        EXPECT_OK(r);
        ASSERT_GT(r, 0);
        check_pat(in, (size_t)r, 5, rr->from + got, "rest of the stream");
        got += (size_t)r;
    }
    free(in);
    EXPECT_OK(weft_waitgroup_done(&rr->wg));
}

static int write_deadline_body(void *arg)
{
    int kind = (int)(intptr_t)arg;
    int c, s;
    conn_pair(kind, &c, &s);
    uint8_t *buf = malloc(BIG), *in = malloc(65536);
    ASSERT(buf != NULL && in != NULL);
    fill(buf, BIG, 5, 0);
    size_t done = (size_t)-1;
    int64_t dl = weft_now() + 100 * MS;
    ssize_t r = weft_write_dl(c, buf, BIG, &done, dl);
    EXPECT_ERR(r, WEFT_ETIMEDOUT);
    expect_timeout_at(dl, "weft_write_dl");
    ASSERT_GT(done, 0);
    ASSERT_LT(done, BIG);
    /* The reader gets exactly the bytes reported written. */
    size_t total = 0;
    while (total < done) {
        size_t want = done - total < 65536 ? done - total : 65536;
        r = weft_read_dl(s, in, want, after_ms(3000));
        if (r <= 0)
            FAIL("%s: read %zu of the %zu bytes weft_write_dl reported, "
                 "then %zd (%s)",
                 kind_name[kind], total, done, r, weft_err_name((int)r));
        check_pat(in, (size_t)r, 5, total, "bytes before the deadline");
        total += (size_t)r;
    }
    r = weft_read_dl(s, in, 65536, weft_now() + scaled(100));
    if (r != WEFT_ETIMEDOUT)
        FAIL("%s: weft_write_dl reported %zu bytes but the reader got %zd "
             "more (%s)",
             kind_name[kind], done, r, r < 0 ? weft_err_name((int)r) : "");
    /* The fd is still usable: the rest goes through once someone reads. */
    struct rest_reader rr;
    memset(&rr, 0, sizeof rr);
    rr.fd = s;
    rr.from = done;
    rr.n = BIG - done;
    EXPECT_OK(weft_waitgroup_add(&rr.wg, 1));
    go(rest_reader_fn, &rr);
    size_t d2 = 0;
    EXPECT_ERR(weft_write_dl(c, buf + done, BIG - done, &d2, after_ms(10000)),
               BIG - done);
    ASSERT_EQ(d2, BIG - done);
    wg_wait(&rr.wg, 10000, "rest reader");
    free(buf);
    free(in);
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(s));
    return 0;
}

TEST(write_deadline_reports_done)
{
    for (int p = 1; p <= 2; p++) {
        run(p, write_deadline_body, (void *)(intptr_t)K_SOCKETPAIR);
        run(p, write_deadline_body, (void *)(intptr_t)K_TCP4);
    }
}

/* --------------------------------------------------------------- errors */

static int refused_body(void *arg)
{
    (void)arg;
    int l = weft_listen("tcp4", "127.0.0.1:0", 0);
    EXPECT_OK(l);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", local_port(l));
    EXPECT_OK(weft_close(l));
    EXPECT_ERR(weft_dial("tcp4", addr), -ECONNREFUSED);
    EXPECT_ERR(weft_dial_dl("tcp4", addr, after_ms(5000)), -ECONNREFUSED);
    char upath[108];
    unix_name(upath, sizeof upath, false);
    int r = weft_dial("unix", upath);
    if (r != -ENOENT && r != -ECONNREFUSED)
        FAIL("dial unix %s (no such file): %d (%s)", upath, r,
             weft_err_name(r));
    return 0;
}

TEST(err_connection_refused)
{
    run(1, refused_body, NULL);
    run(2, refused_body, NULL);
}

static int epipe_body(void *arg)
{
    (void)arg;
    static uint8_t buf[65536];
    /* TCP: the peer closed; the first writes may still be accepted. */
    int c, s;
    conn_pair(K_TCP4, &c, &s);
    EXPECT_OK(weft_close(s));
    ssize_t r = 0;
    for (int i = 0; i < 200 && r >= 0; i++) {
        r = weft_write_dl(c, buf, sizeof buf, NULL, after_ms(5000));
        if (r >= 0)
            weft_sleep(5 * MS);
    }
    if (r != -EPIPE && r != -ECONNRESET)
        FAIL("tcp write to a closed peer: %zd (%s)", r, weft_err_name((int)r));
    EXPECT_OK(weft_close(c));
    /* Unix socketpair: at once. */
    conn_pair(K_SOCKETPAIR, &c, &s);
    EXPECT_OK(weft_close(s));
    size_t done = 99;
    EXPECT_ERR(weft_write(c, buf, 10, &done), -EPIPE);
    ASSERT_EQ(done, 0);
    EXPECT_OK(weft_close(c));
    /* A pipe whose read end is closed: no MSG_NOSIGNAL here. */
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    close(p[0]);
    done = 99;
    EXPECT_ERR(weft_write(p[1], "x", 1, &done), -EPIPE);
    ASSERT_EQ(done, 0);
    struct iovec iov = {buf, 4};
    EXPECT_ERR(weft_writev(p[1], &iov, 1, NULL), -EPIPE);
    EXPECT_OK(weft_close(p[1]));
    return 0;
}

TEST(err_epipe_without_sigpipe)
{
    /* Default disposition: a SIGPIPE would kill the child. */
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    run(1, epipe_body, NULL);
    run(2, epipe_body, NULL);
}

static void reset_peer(int s)
{
    struct linger lg = {1, 0};
    ASSERT_EQ(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    EXPECT_OK(weft_close(s));
}

static int reset_body(void *arg)
{
    (void)arg;
    char buf[16];
    /* Reset before the read. */
    int c, s;
    conn_pair(K_TCP4, &c, &s);
    reset_peer(s);
    weft_sleep(20 * MS);
    EXPECT_ERR(weft_read_dl(c, buf, sizeof buf, after_ms(5000)), -ECONNRESET);
    EXPECT_OK(weft_close(c));
    /* Reset while a reader is parked. */
    weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
    struct blk b;
    memset(&b, 0, sizeof b);
    conn_pair(K_TCP4, &c, &s);
    b.fd = c;
    b.op = OP_READ;
    b.wg = &wg;
    EXPECT_OK(weft_waitgroup_add(&wg, 1));
    start_blocked(&b);
    reset_peer(s);
    wg_wait(&wg, 2000, "reader after the peer's reset");
    EXPECT_ERR(b.result, -ECONNRESET);
    EXPECT_OK(weft_close(c));
    return 0;
}

TEST(err_reset)
{
    run(1, reset_body, NULL);
    run(2, reset_body, NULL);
}

static int ebadf_body(void *arg)
{
    (void)arg;
    char buf[4];
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    close(p[0]);
    close(p[1]);
    const int bad[] = {p[0], p[1], -1, -12345, 100000, INT_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = bad[i];
        struct iovec iov = {buf, 1};
        /* Name the fd and the call on failure. */
#define EXPECT_EBADF(call)                                                    \
    do {                                                                      \
        int64_t r_ = (int64_t)(call);                                         \
        if (r_ != WEFT_EBADF)                                                 \
            FAIL("fd %d: %s = %lld (%s), expected WEFT_EBADF", fd, #call,     \
                 (long long)r_, r_ < 0 ? weft_err_name((int)r_) : "");        \
    } while (0)
        EXPECT_EBADF(weft_read(fd, buf, 1));
        EXPECT_EBADF(weft_read_dl(fd, buf, 1, weft_now() + MS));
        EXPECT_EBADF(weft_readv(fd, &iov, 1));
        EXPECT_EBADF(weft_write(fd, buf, 1, NULL));
        EXPECT_EBADF(weft_writev(fd, &iov, 1, NULL));
        EXPECT_EBADF(weft_fd_wait(fd, WEFT_READ, weft_now() + MS));
        EXPECT_EBADF(weft_accept_dl(fd, NULL, NULL, weft_now() + MS));
        EXPECT_EBADF(weft_fd_open(fd));
        EXPECT_EBADF(weft_close(fd));
        EXPECT_EBADF(weft_shutdown(fd, SHUT_WR));
#undef EXPECT_EBADF
    }
    /* An fd weft_close'd. */
    int c, s;
    conn_pair(K_SOCKETPAIR, &c, &s);
    EXPECT_OK(weft_close(c));
    EXPECT_ERR(weft_read(c, buf, 1), WEFT_EBADF);
    EXPECT_ERR(weft_close(c), WEFT_EBADF);
    EXPECT_OK(weft_close(s));
    /* Wrong kinds of fd. */
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    EXPECT_ERR(weft_shutdown(p[0], SHUT_RD), -ENOTSOCK);
    int r = weft_accept_dl(p[0], NULL, NULL, weft_now() + 10 * MS);
    if (r != -ENOTSOCK && r != WEFT_EINVAL)
        FAIL("accept on a pipe: %d (%s)", r, weft_err_name(r));
    EXPECT_OK(weft_close(p[0]));
    EXPECT_OK(weft_close(p[1]));
    return 0;
}

TEST(err_ebadf)
{
    run(1, ebadf_body, NULL);
}

/* expect_bad - r is WEFT_EINVAL or WEFT_ENONAME. */
#define expect_bad(call)                                                      \
    do {                                                                      \
        int r_ = (call);                                                      \
        if (r_ != WEFT_EINVAL && r_ != WEFT_ENONAME) {                        \
            if (r_ >= 0)                                                      \
                weft_close(r_);                                               \
            FAIL("%s = %d (%s), expected WEFT_EINVAL or WEFT_ENONAME", #call, \
                 r_, weft_err_name(r_));                                      \
        }                                                                     \
    } while (0)

static int bad_addr_body(void *arg)
{
    (void)arg;
    EXPECT_ERR(weft_listen("udp9", ":0", 0), WEFT_EINVAL);
    EXPECT_ERR(weft_dial("udp9", "127.0.0.1:1"), WEFT_EINVAL);
    EXPECT_ERR(weft_listen("", ":0", 0), WEFT_EINVAL);
    EXPECT_ERR(weft_listen(NULL, ":0", 0), WEFT_EINVAL);
    EXPECT_ERR(weft_dial(NULL, "127.0.0.1:1"), WEFT_EINVAL);
    EXPECT_ERR(weft_dial_dl(NULL, "127.0.0.1:1", after_ms(1000)), WEFT_EINVAL);
    static const char *const bad[] = {"nohost", "1.2.3.4:99999", "[::1",
                                      "1.2.3.4:-1", "1.2.3.4:65536",
                                      "[::1]:99999", "::1:80:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *a = bad[i];
        expect_bad(weft_dial("tcp", a));
        expect_bad(weft_dial_dl("tcp4", a, after_ms(1000)));
        expect_bad(weft_listen("tcp", a, 0));
    }
    expect_bad(weft_dial("tcp", NULL));
    expect_bad(weft_listen("tcp", NULL, 0));
    expect_bad(weft_listen("unix", NULL, 0));
    expect_bad(weft_listen("unix", "", 0));
    /* A unix path longer than sun_path. */
    char longp[300];
    memset(longp, 'x', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    expect_bad(weft_listen("unix", longp, 0));
    expect_bad(weft_dial("unix", longp));

    /* getaddrinfo's own failures, without DNS: a numeric-only lookup of a
     * name, and an unknown service. */
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    EXPECT_ERR(weft_getaddrinfo("nohost", "80", &hints, &res), WEFT_ENONAME);
    hints.ai_flags = 0;
    EXPECT_ERR(weft_getaddrinfo("127.0.0.1", "no-such-service-weft", &hints,
                                &res),
               WEFT_ENONAME);
    EXPECT_ERR(weft_getaddrinfo(NULL, NULL, &hints, &res), WEFT_EINVAL);
    EXPECT_ERR(weft_getaddrinfo("127.0.0.1", "80", &hints, NULL), WEFT_EINVAL);
    ASSERT(res == NULL);
    return 0;
}

TEST(err_bad_network_and_address)
{
    run(1, bad_addr_body, NULL);
}

static int events_body(void *arg)
{
    (void)arg;
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    EXPECT_ERR(weft_fd_open(p[0]), p[0]);
    EXPECT_ERR(weft_fd_wait(p[0], 0, after_ms(1000)), WEFT_EINVAL);
    EXPECT_ERR(weft_fd_wait(p[0], 4, after_ms(1000)), WEFT_EINVAL);
    EXPECT_ERR(weft_fd_wait(p[0], -1, after_ms(1000)), WEFT_EINVAL);
    EXPECT_ERR(weft_fd_wait(p[0], WEFT_READ | 8, after_ms(1000)), WEFT_EINVAL);
    EXPECT_OK(weft_close(p[0]));
    EXPECT_OK(weft_close(p[1]));
    return 0;
}

TEST(err_fd_wait_bad_events)
{
    run(1, events_body, NULL);
}

struct second {
    int fd, op;
    int64_t result;
    weft_waitgroup_t wg;
};

static void second_fn(void *arg)
{
    struct second *sc = arg;
    char c = 'z';
    if (sc->op == OP_READ)
        sc->result = weft_read_dl(sc->fd, &c, 1, weft_now() + 500 * MS);
    else
        sc->result = weft_write_dl(sc->fd, &c, 1, NULL, weft_now() + 500 * MS);
    EXPECT_OK(weft_waitgroup_done(&sc->wg));
}

static int ebusy_body(void *arg)
{
    (void)arg;
    int c, s;
    char buf[64];
    conn_pair(K_SOCKETPAIR, &c, &s);
    small_buffers(c);
    small_buffers(s);
    weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
    struct blk rd, wr;
    memset(&rd, 0, sizeof rd);
    memset(&wr, 0, sizeof wr);
    rd.fd = wr.fd = c;
    rd.op = OP_READ;
    wr.op = OP_WRITE;
    rd.wg = wr.wg = &wg;
    EXPECT_OK(weft_waitgroup_add(&wg, 1));
    start_blocked(&rd);

    /* A second reader, from another coroutine and from this one. */
    struct second sc;
    memset(&sc, 0, sizeof sc);
    sc.fd = c;
    sc.op = OP_READ;
    EXPECT_OK(weft_waitgroup_add(&sc.wg, 1));
    int64_t t0 = weft_now();
    go(second_fn, &sc);
    wg_wait(&sc.wg, 3000, "second reader");
    EXPECT_ERR(sc.result, WEFT_EBUSY);
    ASSERT_LT(weft_now() - t0, scaled(200));
    EXPECT_ERR(weft_read_dl(c, buf, 1, after_ms(1000)), WEFT_EBUSY);
    EXPECT_ERR(weft_fd_wait(c, WEFT_READ, after_ms(1000)), WEFT_EBUSY);
    EXPECT_ERR(weft_fd_wait(c, WEFT_READ | WEFT_WRITE, after_ms(1000)),
               WEFT_EBUSY);
    /* The other direction is free. */
    EXPECT_ERR(weft_write(c, "q", 1, NULL), 1);

    /* A parked writer makes a second writer busy. */
    EXPECT_OK(weft_waitgroup_add(&wg, 1));
    start_blocked(&wr);
    memset(&sc, 0, sizeof sc);
    sc.fd = c;
    sc.op = OP_WRITE;
    EXPECT_OK(weft_waitgroup_add(&sc.wg, 1));
    go(second_fn, &sc);
    wg_wait(&sc.wg, 3000, "second writer");
    EXPECT_ERR(sc.result, WEFT_EBUSY);
    EXPECT_ERR(weft_fd_wait(c, WEFT_WRITE, after_ms(1000)), WEFT_EBUSY);

    /* The first reader gets its data; then the read slot is free again. */
    EXPECT_ERR(weft_write(s, "hi", 2, NULL), 2);
    int64_t end = after_ms(2000);
    while (!atomic_load(&rd.finished)) {
        if (weft_now() > end)
            FAIL("first reader not woken by data");
        weft_sleep(MS);
    }
    EXPECT_ERR(rd.result, 2);
    ASSERT(memcmp(rd.data, "hi", 2) == 0);
    EXPECT_ERR(weft_read_dl(c, buf, 1, weft_now() + 10 * MS), WEFT_ETIMEDOUT);
    /* And after that timeout, free again. */
    EXPECT_ERR(weft_read_dl(c, buf, 1, weft_now() + 10 * MS), WEFT_ETIMEDOUT);
    EXPECT_OK(weft_close(c));
    wg_wait(&wg, 2000, "writer after close");
    EXPECT_ERR(wr.result, WEFT_ECLOSED);
    /* Drain what got through (the 'q' and part of the big write). */
    EXPECT_OK(weft_close(s));
    return 0;
}

TEST(err_ebusy_second_waiter)
{
    run(1, ebusy_body, NULL);
    run(2, ebusy_body, NULL);
}

/* notcoro_calls - every blocking fd call from a non-coroutine. */
static void notcoro_calls(int fd)
{
    char buf[4];
    struct iovec iov = {buf, 1};
    struct addrinfo *res = NULL;
    EXPECT_ERR(weft_read(fd, buf, 1), WEFT_ENOTCORO);
    EXPECT_ERR(weft_read_dl(fd, buf, 1, 0), WEFT_ENOTCORO);
    EXPECT_ERR(weft_readv(fd, &iov, 1), WEFT_ENOTCORO);
    EXPECT_ERR(weft_readv_dl(fd, &iov, 1, 0), WEFT_ENOTCORO);
    EXPECT_ERR(weft_write(fd, buf, 1, NULL), WEFT_ENOTCORO);
    EXPECT_ERR(weft_write_dl(fd, buf, 1, NULL, 0), WEFT_ENOTCORO);
    EXPECT_ERR(weft_writev(fd, &iov, 1, NULL), WEFT_ENOTCORO);
    EXPECT_ERR(weft_writev_dl(fd, &iov, 1, NULL, 0), WEFT_ENOTCORO);
    EXPECT_ERR(weft_fd_wait(fd, WEFT_READ, 0), WEFT_ENOTCORO);
    EXPECT_ERR(weft_accept(fd, NULL, NULL), WEFT_ENOTCORO);
    EXPECT_ERR(weft_accept_dl(fd, NULL, NULL, 0), WEFT_ENOTCORO);
    EXPECT_ERR(weft_dial("tcp4", "127.0.0.1:1"), WEFT_ENOTCORO);
    EXPECT_ERR(weft_dial_dl("tcp4", "127.0.0.1:1", 0), WEFT_ENOTCORO);
    EXPECT_ERR(weft_listen("tcp4", "127.0.0.1:0", 0), WEFT_ENOTCORO);
    /* weft_getaddrinfo works anywhere (weft.h): outside a coroutine it is
     * plain getaddrinfo. */
    res = NULL;
    int r = weft_getaddrinfo("localhost", "80", NULL, &res);
    EXPECT_OK(r);
    if (res == NULL)
        HARNESS_FAIL("weft_getaddrinfo outside a coroutine gave no address");
    else
        freeaddrinfo(res);
}

static void *notcoro_thread(void *arg)
{
    int *sp = arg;
    notcoro_calls(sp[0]);
    /* These three work anywhere. */
    EXPECT_ERR(weft_fd_open(sp[0]), sp[0]);
    EXPECT_OK(weft_shutdown(sp[1], SHUT_WR));
    return NULL;
}

static intptr_t join_fn(void *arg)
{
    return pthread_join(*(pthread_t *)arg, NULL) == 0 ? 0 : -1;
}

static int notcoro_body(void *arg)
{
    (void)arg;
    int sp[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, notcoro_thread, sp), 0);
    EXPECT_OK(weft_blocking(join_fn, &t));
    char c;
    EXPECT_ERR(weft_read_dl(sp[0], &c, 1, after_ms(1000)), 0); /* SHUT_WR */
    EXPECT_OK(weft_close(sp[0]));
    EXPECT_OK(weft_close(sp[1]));
    return 0;
}

/* Data and the FIN in one edge: a reader parked in weft_read, woken by
 * "ab" + shutdown sent back to back (often one epoll event), reads the 2
 * bytes short of its buffer; its next read must see the end of file, not
 * wait for an edge that will never come (the short-read rule of net.c). */
struct finedge {
    int fd;
    int64_t n1, n2;
    weft_waitgroup_t wg;
};

static void finedge_reader(void *arg)
{
    struct finedge *f = arg;
    char buf[64];
    f->n1 = weft_read_dl(f->fd, buf, sizeof buf, after_ms(5000));
    f->n2 = weft_read_dl(f->fd, buf, sizeof buf, after_ms(2000));
    weft_waitgroup_done(&f->wg);
}

static int finedge_body(void *arg)
{
    int kind = (int)(intptr_t)arg;
    for (int i = 0; i < 100; i++) {
        int c, s;
        conn_pair(kind, &c, &s);
        struct finedge f = {.fd = s};
        EXPECT_OK(weft_waitgroup_add(&f.wg, 1));
        int64_t id = weft_go(finedge_reader, &f);
        EXPECT_OK(id);
        wait_parked(id, WR_IO_WAIT, 1); /* the reader parks first */
        /* Plain calls: nothing between them lets the poller in. */
        ASSERT_EQ(send(c, "ab", 2, MSG_NOSIGNAL), 2);
        ASSERT_EQ(shutdown(c, SHUT_WR), 0);
        wg_wait(&f.wg, 10000, "fin-edge reader");
        /* The bug shows as n2 == WEFT_ETIMEDOUT after the 2 s deadline. */
        if (f.n1 != 2 || f.n2 != 0)
            FAIL("round %d: reads gave %lld then %lld, expected 2 then 0", i,
                 (long long)f.n1, (long long)f.n2);
        EXPECT_OK(weft_close(c));
        EXPECT_OK(weft_close(s));
    }
    return 0;
}

TEST(read_fin_same_edge)
{
    run(1, finedge_body, (void *)(intptr_t)K_TCP4);
    run(2, finedge_body, (void *)(intptr_t)K_UNIX);
}

TEST(err_notcoro)
{
    int sp[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    /* Before any runtime. */
    notcoro_calls(sp[0]);
    EXPECT_ERR(weft_fd_open(sp[0]), WEFT_ENORUNTIME);
    EXPECT_OK(weft_shutdown(sp[1], SHUT_WR));
    char c;
    ASSERT_EQ(read(sp[0], &c, 1), 0);
    EXPECT_OK(weft_close(sp[0]));
    EXPECT_OK(weft_close(sp[1]));
    /* From a plain thread while a runtime runs. */
    run(2, notcoro_body, NULL);
    /* And after it ended. */
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    notcoro_calls(sp[0]);
    EXPECT_ERR(weft_fd_open(sp[0]), WEFT_ENORUNTIME);
    EXPECT_OK(weft_close(sp[0]));
    EXPECT_OK(weft_close(sp[1]));
}

/* --------------------------------------------------------------- EMFILE */

struct emf {
    int lfd, k;
    int64_t dl; /* per accept */
    _Atomic int accepted;
    _Atomic int64_t err;
    int fds[8];
    weft_waitgroup_t wg;
};

static void emf_acceptor(void *arg)
{
    struct emf *e = arg;
    for (int i = 0; i < e->k; i++) {
        int fd = weft_accept_dl(e->lfd, NULL, NULL, e->dl);
        if (fd < 0) {
            atomic_store(&e->err, fd);
            break;
        }
        e->fds[i] = fd;
        atomic_fetch_add(&e->accepted, 1);
    }
    EXPECT_OK(weft_waitgroup_done(&e->wg));
}

/* fill_fds - open copies of /dev/null until EMFILE; returns how many. */
static int fill_fds(int *fds, int max)
{
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC), n = 0;
    ASSERT(devnull >= 0);
    fds[n++] = devnull;
    for (;;) {
        int f = fcntl(devnull, F_DUPFD_CLOEXEC, 0);
        if (f < 0) {
            if (errno != EMFILE)
                FAIL("dup: %s", strerror(errno));
            break;
        }
        if (n == max)
            FAIL("more than %d fds below RLIMIT_NOFILE", max);
        fds[n++] = f;
    }
    return n;
}

static int emfile_body(void *arg)
{
    (void)arg;
    enum { K = 4, MAXFILL = 1024 };
    struct emf *e = calloc(1, sizeof *e);
    ASSERT(e != NULL);
    e->k = K;
    e->dl = WEFT_FOREVER;
    e->lfd = weft_listen("tcp4", "127.0.0.1:0", 0);
    EXPECT_OK(e->lfd);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", local_port(e->lfd));
    int cl[K];
    for (int i = 0; i < K; i++) {
        cl[i] = weft_dial("tcp4", addr);
        EXPECT_OK(cl[i]);
    }
    int *fill = malloc(MAXFILL * sizeof *fill);
    ASSERT(fill != NULL);
    int nfill = fill_fds(fill, MAXFILL);
    EXPECT_OK(weft_waitgroup_add(&e->wg, 1));
    go(emf_acceptor, e);
    /* The acceptor is out of fds: it must back off (5 ms doubling), not
     * spin or fail: a handful of accept4 calls in 300 ms, not thousands. */
    int64_t a0 = atomic_load(&accept_calls);
    weft_sleep(300 * MS);
    int64_t a1 = atomic_load(&accept_calls);
    if (atomic_load(&e->err) != 0)
        FAIL("weft_accept failed while out of fds: %lld (%s)",
             (long long)atomic_load(&e->err),
             weft_err_name((int)atomic_load(&e->err)));
    ASSERT_EQ(atomic_load(&e->accepted), 0);
    ASSERT_GT(a1 - a0, 0); /* it did retry */
    if (a1 - a0 > 20)
        FAIL("accept loop spins while out of fds: %lld accept4 calls in "
             "300 ms", (long long)(a1 - a0));
    /* Free the table: the pending connections are accepted. */
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    free(fill);
    int64_t t0 = weft_now();
    wg_wait(&e->wg, 5000, "acceptor after fds were freed");
    if (atomic_load(&e->err) != 0)
        FAIL("weft_accept failed: %lld (%s)", (long long)atomic_load(&e->err),
             weft_err_name((int)atomic_load(&e->err)));
    ASSERT_EQ(atomic_load(&e->accepted), K);
    ASSERT_LT(weft_now() - t0, scaled(2500));
    /* Accept order need not be dial order: write on every client first. */
    for (int i = 0; i < K; i++)
        EXPECT_ERR(weft_write(cl[i], "ping", 4, NULL), 4);
    for (int i = 0; i < K; i++) {
        char b[4];
        EXPECT_ERR(read_full(e->fds[i], b, 4, after_ms(5000)), 4);
        ASSERT(memcmp(b, "ping", 4) == 0);
    }
    for (int i = 0; i < K; i++) {
        EXPECT_OK(weft_close(cl[i]));
        EXPECT_OK(weft_close(e->fds[i]));
    }
    EXPECT_OK(weft_close(e->lfd));
    free(e);
    return 0;
}

/* with_nofile - run fn with the soft RLIMIT_NOFILE at soft. It is set
 * inside the runtime: weft_main raises the soft limit to the hard one as
 * it starts (weft.h), and puts back the limit it found when it ends. */
struct nofile_arg {
    rlim_t soft;
    weft_main_fn fn;
};

static int nofile_body(void *arg)
{
    struct nofile_arg *na = arg;
    struct rlimit old, rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    ASSERT_EQ(old.rlim_cur, old.rlim_max); /* raised by weft_main */
    rl = old;
    rl.rlim_cur = na->soft;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    int r = na->fn(NULL);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
    return r;
}

static void with_nofile(rlim_t soft, weft_main_fn fn, int procs)
{
    struct nofile_arg na = {soft, fn};
    run(procs, nofile_body, &na);
}

static int nofile_check_body(void *arg)
{
    (void)arg;
    struct rlimit rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    ASSERT_EQ(rl.rlim_cur, rl.rlim_max);
    return 0;
}

TEST(nofile_raised_while_running)
{
    struct rlimit old, rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    if (old.rlim_max <= 64)
        SKIP("hard RLIMIT_NOFILE %ld", (long)old.rlim_max);
    rl = old;
    rl.rlim_cur = 64;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    run(1, nofile_check_body, NULL);
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    ASSERT_EQ(rl.rlim_cur, (rlim_t)64); /* put back */
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
}

TEST(emfile_accept_backs_off)
{
    with_nofile(64, emfile_body, 2);
    with_nofile(64, emfile_body, 1);
}

static int emfile_dl_body(void *arg)
{
    (void)arg;
    int l = weft_listen("tcp4", "127.0.0.1:0", 0);
    EXPECT_OK(l);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", local_port(l));
    int c = weft_dial("tcp4", addr);
    EXPECT_OK(c);
    int fill[1024];
    int nfill = fill_fds(fill, 1024);
    int64_t dl = weft_now() + 200 * MS;
    int r = weft_accept_dl(l, NULL, NULL, dl);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    if (r >= 0)
        weft_close(r);
    if (r != WEFT_ETIMEDOUT)
        FAIL("weft_accept_dl while out of fds: %d (%s), expected "
             "WEFT_ETIMEDOUT",
             r, weft_err_name(r));
    expect_timeout_at(dl, "weft_accept_dl out of fds");
    r = weft_accept_dl(l, NULL, NULL, after_ms(5000));
    EXPECT_OK(r);
    EXPECT_OK(weft_close(r));
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(l));
    return 0;
}

TEST(emfile_accept_deadline)
{
    with_nofile(64, emfile_dl_body, 2);
}

/* ------------------------------------------------------ fd_wait, adopt */

struct ev_thread {
    int fd;
    uint64_t value;
    _Atomic int written;
};

static void *ev_writer(void *arg)
{
    struct ev_thread *et = arg;
    struct timespec ts = {0, 30 * 1000 * 1000};
    nanosleep(&ts, NULL);
    atomic_store(&et->written, 1);
    if (write(et->fd, &et->value, 8) != 8)
        FAIL("eventfd write: %s", strerror(errno));
    return NULL;
}

struct drainer {
    int fd;
    _Atomic int drained;
    weft_waitgroup_t wg;
};

static void drainer_fn(void *arg)
{
    struct drainer *d = arg;
    static char buf[65536];
    weft_sleep(30 * MS);
    atomic_store(&d->drained, 1);
    EXPECT_OK(weft_read(d->fd, buf, sizeof buf));
    EXPECT_OK(weft_waitgroup_done(&d->wg));
}

static int fdwait_body(void *arg)
{
    (void)arg;
    char buf[256];
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    EXPECT_ERR(weft_fd_open(p[0]), p[0]);
    EXPECT_ERR(weft_fd_open(p[1]), p[1]);
    EXPECT_ERR(weft_fd_open(p[0]), p[0]); /* twice is harmless */
    ASSERT(fcntl(p[0], F_GETFL) & O_NONBLOCK);
    ASSERT(fcntl(p[1], F_GETFL) & O_NONBLOCK);

    int r = weft_fd_wait(p[1], WEFT_WRITE, after_ms(1000));
    EXPECT_OK(r);
    ASSERT(r & WEFT_WRITE);
    ASSERT_EQ(r & ~(WEFT_READ | WEFT_WRITE), 0);

    /* A reader waits for a later writer. */
    struct delayed_write dw;
    memset(&dw, 0, sizeof dw);
    dw.fd = p[1];
    dw.delay = 30 * MS;
    dw.data = "w";
    EXPECT_OK(weft_waitgroup_add(&dw.wg, 1));
    go(delayed_write_fn, &dw);
    r = weft_fd_wait(p[0], WEFT_READ, after_ms(5000));
    EXPECT_OK(r);
    ASSERT(r & WEFT_READ);
    ASSERT(atomic_load(&dw.written));
    EXPECT_ERR(weft_read(p[0], buf, sizeof buf), 1);
    wg_wait(&dw.wg, 5000, "delayed writer");

    /* Write readiness: fill the pipe, wait, drain from elsewhere. */
    ssize_t w;
    while ((w = write(p[1], buf, sizeof buf)) > 0)
        ;
    ASSERT_EQ(errno, EAGAIN);
    EXPECT_ERR(weft_fd_wait(p[1], WEFT_WRITE, weft_now() + 50 * MS),
               WEFT_ETIMEDOUT);
    struct drainer dr;
    memset(&dr, 0, sizeof dr);
    dr.fd = p[0];
    EXPECT_OK(weft_waitgroup_add(&dr.wg, 1));
    go(drainer_fn, &dr);
    r = weft_fd_wait(p[1], WEFT_WRITE, after_ms(5000));
    EXPECT_OK(r);
    ASSERT(r & WEFT_WRITE);
    ASSERT(atomic_load(&dr.drained));
    wg_wait(&dr.wg, 5000, "drainer");

    /* A hang-up counts as ready. */
    while (weft_read_dl(p[0], buf, sizeof buf, weft_now() + 5 * MS) > 0)
        ;
    EXPECT_OK(weft_close(p[1]));
    r = weft_fd_wait(p[0], WEFT_READ, after_ms(1000));
    EXPECT_OK(r);
    ASSERT_GT(r, 0);
    EXPECT_ERR(weft_read_dl(p[0], buf, sizeof buf, after_ms(1000)), 0);
    EXPECT_OK(weft_close(p[0]));

    /* An eventfd, written by a plain thread. */
    int efd = eventfd(0, EFD_CLOEXEC);
    ASSERT(efd >= 0);
    EXPECT_ERR(weft_fd_open(efd), efd);
    ASSERT(fcntl(efd, F_GETFL) & O_NONBLOCK);
    r = weft_fd_wait(efd, WEFT_READ | WEFT_WRITE, after_ms(1000));
    EXPECT_OK(r);
    ASSERT_EQ(r, WEFT_WRITE); /* counter 0: writable, not readable */
    EXPECT_ERR(weft_fd_wait(efd, WEFT_READ, weft_now() + 20 * MS),
               WEFT_ETIMEDOUT);
    struct ev_thread et = {efd, 5, 0};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, ev_writer, &et), 0);
    r = weft_fd_wait(efd, WEFT_READ, after_ms(5000));
    EXPECT_OK(r);
    ASSERT(r & WEFT_READ);
    ASSERT(atomic_load(&et.written));
    uint64_t v = 0;
    EXPECT_ERR(weft_read(efd, &v, 8), 8);
    ASSERT_EQ(v, 5);
    pthread_join(th, NULL);
    /* weft_read itself parks on the empty eventfd. */
    et.value = 7;
    atomic_store(&et.written, 0);
    ASSERT_EQ(pthread_create(&th, NULL, ev_writer, &et), 0);
    EXPECT_ERR(weft_read_dl(efd, &v, 8, after_ms(5000)), 8);
    ASSERT_EQ(v, 7);
    ASSERT(atomic_load(&et.written));
    pthread_join(th, NULL);
    EXPECT_OK(weft_close(efd));

    /* Files epoll cannot wait on. */
    char tmpl[] = "/tmp/weft-net-XXXXXX";
    int f = mkstemp(tmpl);
    ASSERT(f >= 0);
    unlink(tmpl);
    EXPECT_ERR(weft_fd_open(f), WEFT_EPERM);
    ASSERT(fcntl(f, F_GETFD) >= 0); /* still open, still the caller's */
    close(f);
    return 0;
}

TEST(fd_wait_pipe_eventfd)
{
    run(1, fdwait_body, NULL);
    run(2, fdwait_body, NULL);
}

/* ----------------------------------------------------- names, resolver */

struct ticker {
    _Atomic int stop;
    _Atomic int64_t ticks;
    weft_waitgroup_t wg;
};

static void ticker_fn(void *arg)
{
    struct ticker *tk = arg;
    while (!atomic_load(&tk->stop)) {
        weft_sleep(MS);
        atomic_fetch_add(&tk->ticks, 1);
    }
    EXPECT_OK(weft_waitgroup_done(&tk->wg));
}

struct resolve_out {
    int gai_used; /* weft_getaddrinfo went through getaddrinfo() */
};

static void exchange(int c, int s)
{
    char b[8];
    EXPECT_ERR(weft_write(c, "abc", 3, NULL), 3);
    EXPECT_ERR(read_full(s, b, 3, after_ms(5000)), 3);
    ASSERT(memcmp(b, "abc", 3) == 0);
}

static int resolve_body(void *arg)
{
    struct resolve_out *out = arg;
    int l = weft_listen("tcp4", "127.0.0.1:0", 0);
    EXPECT_OK(l);
    int port = local_port(l);
    char addr[64];
    snprintf(addr, sizeof addr, "localhost:%d", port);

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    EXPECT_OK(weft_getaddrinfo("localhost", "80", &hints, &res));
    ASSERT(res != NULL);
    ASSERT_EQ(res->ai_family, AF_INET);
    struct sockaddr_in *sin = (struct sockaddr_in *)res->ai_addr;
    ASSERT_EQ(ntohs(sin->sin_port), 80);
    ASSERT_EQ(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    freeaddrinfo(res);

    /* Dial by name ("tcp" may try ::1 first, refused, then 127.0.0.1). */
    int c = weft_dial("tcp", addr);
    if (c < 0)
        FAIL("weft_dial(\"tcp\", \"%s\") = %d (%s)", addr, c,
             weft_err_name(c));
    int s = weft_accept_dl(l, NULL, NULL, after_ms(5000));
    EXPECT_OK(s);
    exchange(c, s);
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(s));

    /* A resolver that blocks its thread for 300 ms must not stop a
     * ticker (at 1 P, the only other coroutine). */
    struct ticker tk;
    memset(&tk, 0, sizeof tk);
    EXPECT_OK(weft_waitgroup_add(&tk.wg, 1));
    go(ticker_fn, &tk);
    weft_sleep(10 * MS);
    int calls0 = atomic_load(&gai_calls);
    atomic_store(&gai_delay_ms, 300);
    int64_t k0 = atomic_load(&tk.ticks), t0 = weft_now();
    EXPECT_OK(weft_getaddrinfo("localhost", "80", &hints, &res));
    int64_t k1 = atomic_load(&tk.ticks), t1 = weft_now();
    freeaddrinfo(res);
    int calls1 = atomic_load(&gai_calls);
    c = weft_dial("tcp4", addr);
    int64_t k2 = atomic_load(&tk.ticks), t2 = weft_now();
    int calls2 = atomic_load(&gai_calls);
    atomic_store(&gai_delay_ms, 0);
    EXPECT_OK(c);
    s = weft_accept_dl(l, NULL, NULL, after_ms(5000));
    EXPECT_OK(s);
    exchange(c, s);
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(s));
    atomic_store(&tk.stop, 1);
    wg_wait(&tk.wg, 5000, "ticker");
    out->gai_used = calls1 > calls0;
    if (calls1 > calls0) {
        ASSERT_GE(t1 - t0, 290 * MS);
        if (k1 - k0 < 3) /* 1 ms ticks: ~300 when the P is free, 0 if held */
            FAIL("the ticker ticked %lld times in %lld ms of "
                 "weft_getaddrinfo: the resolver held the P",
                 (long long)(k1 - k0), (long long)((t1 - t0) / MS));
    }
    if (calls2 > calls1 && k2 - k1 < 3)
        FAIL("the ticker ticked %lld times in %lld ms of weft_dial by "
             "name: the resolver held the P",
             (long long)(k2 - k1), (long long)((t2 - t1) / MS));
    EXPECT_OK(weft_close(l));
    return 0;
}

TEST(dial_by_name_and_resolver_off_the_p)
{
    struct resolve_out out = {0};
    run(1, resolve_body, &out);
    run(2, resolve_body, &out);
    if (!out.gai_used)
        SKIP("weft_getaddrinfo did not call getaddrinfo(): the off-P check "
             "did not run (resolution itself passed)");
}

/* ------------------------------------------------------------ slowloris */

struct sl {
    int lfd, n;
    int64_t dl;
    char addr[64];
    _Atomic int connected, timedout;
    _Atomic int64_t other, maxlate;
    weft_waitgroup_t swg, cwg;
};

struct sl_conn {
    struct sl *sl;
    int fd;
};

static void sl_server_conn(void *arg)
{
    struct sl_conn *sc = arg;
    struct sl *sl = sc->sl;
    char c;
    ssize_t r = weft_read_dl(sc->fd, &c, 1, sl->dl);
    int64_t t = weft_now();
    if (r == WEFT_ETIMEDOUT && t >= sl->dl) {
        atomic_fetch_add(&sl->timedout, 1);
        int64_t late = t - sl->dl, m = atomic_load(&sl->maxlate);
        while (late > m && !atomic_compare_exchange_weak(&sl->maxlate, &m, late))
            ;
    } else {
        atomic_store(&sl->other, r == WEFT_ETIMEDOUT ? -1000000 : r);
    }
    EXPECT_OK(weft_close(sc->fd));
    free(sc);
    EXPECT_OK(weft_waitgroup_done(&sl->swg));
}

static void sl_acceptor(void *arg)
{
    struct sl *sl = arg;
    for (int i = 0; i < sl->n; i++) {
        int fd = weft_accept_dl(sl->lfd, NULL, NULL, after_ms(20000));
        EXPECT_OK(fd);
        struct sl_conn *sc = malloc(sizeof *sc);
        ASSERT(sc != NULL);
        sc->sl = sl;
        sc->fd = fd;
        go(sl_server_conn, sc);
    }
    EXPECT_OK(weft_waitgroup_done(&sl->swg));
}

static void sl_client(void *arg)
{
    struct sl *sl = arg;
    int fd = weft_dial("tcp4", sl->addr);
    EXPECT_OK(fd);
    atomic_fetch_add(&sl->connected, 1);
    char c;
    /* Send nothing; the server cuts us at its deadline: EOF. */
    ssize_t r = weft_read_dl(fd, &c, 1, after_ms(20000));
    if (r != 0)
        FAIL("idle client: %zd (%s), expected EOF from the server's cut", r,
             weft_err_name((int)r));
    EXPECT_OK(weft_close(fd));
    EXPECT_OK(weft_waitgroup_done(&sl->cwg));
}

static int slowloris_body(void *arg)
{
    (void)arg;
    struct sl *sl = calloc(1, sizeof *sl);
    ASSERT(sl != NULL);
    sl->n = 200;
    sl->lfd = weft_listen("tcp4", "127.0.0.1:0", 1024);
    EXPECT_OK(sl->lfd);
    snprintf(sl->addr, sizeof sl->addr, "127.0.0.1:%d", local_port(sl->lfd));
    sl->dl = weft_now() + scaled(300) + 400 * MS;
    EXPECT_OK(weft_waitgroup_add(&sl->swg, sl->n + 1));
    EXPECT_OK(weft_waitgroup_add(&sl->cwg, sl->n));
    go(sl_acceptor, sl);
    for (int i = 0; i < sl->n; i++)
        go(sl_client, sl);
    int64_t end = after_ms(10000);
    while (atomic_load(&sl->connected) < sl->n) {
        if (weft_now() > end)
            FAIL("only %d of %d idle clients connected",
                 atomic_load(&sl->connected), sl->n);
        weft_sleep(MS);
    }
    if (weft_now() >= sl->dl)
        FAIL("setting up %d connections took past the deadline", sl->n);
    int64_t r0 = atomic_load(&recv_calls);
    wg_wait(&sl->swg, 10000, "server conns");
    int64_t r1 = atomic_load(&recv_calls);
    wg_wait(&sl->cwg, 10000, "clients");
    if (atomic_load(&sl->other) != 0)
        FAIL("an idle connection's read returned %lld instead of timing out "
             "(-1000000: WEFT_ETIMEDOUT before the deadline)",
             (long long)atomic_load(&sl->other));
    ASSERT_EQ(atomic_load(&sl->timedout), sl->n);
    if (atomic_load(&sl->maxlate) > scaled(500))
        FAIL("a read deadline fired %lld ms late",
             (long long)(atomic_load(&sl->maxlate) / MS));
    /* Each idle connection is one parked reader on each side: a couple
     * of recv calls apiece until the deadline, not a polling loop. */
    if (r1 - r0 > 4 * sl->n)
        FAIL("%d idle connections made %lld recv calls while waiting", sl->n,
             (long long)(r1 - r0));
    EXPECT_OK(weft_close(sl->lfd));
    free(sl);
    return 0;
}

TEST(slowloris_idle_conns)
{
    raise_nofile(1024);
    run(2, slowloris_body, NULL);
    run(1, slowloris_body, NULL);
}

/* ---------------------------------------------- io_uring (and epoll) */

/* The io_uring path (netpoll/uring.c) must really be in use where the
 * kernel offers it, or every test above would test epoll twice. */
static int uring_on_body(void *arg)
{
    *(bool *)arg = weft__uring_on;
    return 0;
}

TEST(iouring_in_use_where_available)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(__NR_io_uring_setup, 4, &p);
    const char *dbg = getenv("WEFTDEBUG");
    bool off = dbg != NULL && strstr(dbg, "iouring=0") != NULL;
    if (fd < 0)
        SKIP("io_uring_setup: %s", strerror(errno));
    close((int)fd);
    bool on = false;
    run(2, uring_on_body, &on);
    if (on != !off)
        FAIL("WEFTDEBUG=%s, kernel has io_uring: weft__uring_on is %d",
             dbg ? dbg : "(unset)", on);
}

/* weft_close of a TCP connection with a blocked reader (or writer)
 * really closes it: the peer reads EOF (an io_uring request holds its
 * own reference to the socket until it is cancelled). */
static int close_eof_body(void *arg)
{
    (void)arg;
    for (int op = OP_READ; op <= OP_WRITE; op++) {
        weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
        struct blk b;
        memset(&b, 0, sizeof b);
        b.op = op;
        b.wg = &wg;
        int peer;
        conn_pair(K_TCP4, &b.fd, &peer);
        if (op == OP_WRITE) {
            small_buffers(b.fd);
            small_buffers(peer);
        }
        EXPECT_OK(weft_waitgroup_add(&wg, 1));
        start_blocked(&b);
        EXPECT_OK(weft_close(b.fd));
        wg_wait(&wg, 2000, "blocked call after weft_close");
        EXPECT_ERR(b.result, WEFT_ECLOSED);
        /* Drain what the writer got out, then the end of the stream. */
        char buf[65536];
        int64_t dl = after_ms(2000);
        ssize_t r;
        while ((r = weft_read_dl(peer, buf, sizeof buf, dl)) > 0)
            ;
        if (r != 0 && r != -ECONNRESET)
            FAIL("peer of a weft_close'd blocked %s: read %zd (%s), "
                 "expected EOF",
                 op_name[op], r, r < 0 ? weft_err_name((int)r) : "");
        EXPECT_OK(weft_close(peer));
    }
    return 0;
}

TEST(close_blocked_peer_sees_eof)
{
    run(1, close_eof_body, NULL);
    run(2, close_eof_body, NULL);
}

/* A reader queues its request and, before the P sends it, another
 * coroutine closes the fd (on one P the closer runs straight after the
 * reader parks, unless that switch happens to be the 16th, which sends
 * the queue: then it is the in-flight case). The request must never
 * reach the kernel with that fd number: the fd opened next reuses it
 * and must not lose a byte to it. */
static int close_queued_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 64; i++) {
        weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
        struct blk b;
        memset(&b, 0, sizeof b);
        b.op = OP_READ;
        b.wg = &wg;
        int peer;
        conn_pair(K_TCP4, &b.fd, &peer);
        EXPECT_OK(weft_waitgroup_add(&wg, 1));
        ASSERT_GT(weft_go(blk_fn, &b), 0);
        /* One P: the first yield runs the reader up to its park. */
        for (int k = 0; k <= i % 4; k++)
            weft_yield();
        ASSERT(parked_count(0, WR_IO_WAIT) == 1 || atomic_load(&b.finished));
        int fd = b.fd;
        EXPECT_OK(weft_close(fd));
        /* The same number again, straight away. */
        int c2, s2;
        conn_pair(K_TCP4, &c2, &s2);
        EXPECT_ERR(weft_write(s2, "abc", 3, NULL), 3);
        char got[3];
        EXPECT_ERR(read_full(c2, got, 3, after_ms(2000)), 3);
        ASSERT(memcmp(got, "abc", 3) == 0);
        wg_wait(&wg, 2000, "reader of the closed fd");
        if (b.result != WEFT_ECLOSED && b.result != WEFT_EBADF)
            FAIL("round %d: read on an fd closed under it returned %lld",
                 i, (long long)b.result);
        EXPECT_OK(weft_close(c2));
        EXPECT_OK(weft_close(s2));
        EXPECT_OK(weft_close(peer));
    }
    return 0;
}

TEST(close_before_request_sent)
{
    run(1, close_queued_body, NULL);
}

/* Data racing read deadlines: a writer sends numbered bytes at random
 * moments around a reader's short deadlines. Whatever times out, every
 * byte arrives once and in order (a cancelled request consumes none). */
struct race_w {
    int fd;
    uint32_t seed;
    int n;
    weft_waitgroup_t wg;
};

static void race_writer_fn(void *arg)
{
    struct race_w *w = arg;
    uint32_t x = w->seed;
    for (int i = 0; i < w->n; i++) {
        x = x * 1664525u + 1013904223u;
        weft_sleep((int64_t)(x >> 8) % (2 * MS));
        uint8_t c = (uint8_t)i;
        EXPECT_ERR(weft_write(w->fd, &c, 1, NULL), 1);
    }
    EXPECT_OK(weft_waitgroup_done(&w->wg));
}

static int deadline_race_body(void *arg)
{
    uint32_t seed = (uint32_t)(uintptr_t)arg;
    int c, s;
    conn_pair(K_TCP4, &c, &s);
    struct race_w w = {.fd = s, .seed = seed, .n = 300};
    EXPECT_OK(weft_waitgroup_add(&w.wg, 1));
    go(race_writer_fn, &w);
    int next = 0, timeouts = 0;
    int64_t end = after_ms(5000); /* within the harness's own limit */
    while (next < w.n) {
        if (weft_now() > end)
            FAIL("seed %u: byte %d never came", seed, next);
        uint8_t buf[8];
        ssize_t r = weft_read_dl(c, buf, sizeof buf, weft_now() + MS);
        if (r == WEFT_ETIMEDOUT) {
            timeouts++;
            continue;
        }
        ASSERT_GT(r, 0);
        for (ssize_t k = 0; k < r; k++, next++)
            if (buf[k] != (uint8_t)next)
                FAIL("seed %u: byte %d is %u", seed, next, buf[k]);
    }
    wg_wait(&w.wg, 5000, "writer");
    ASSERT_GT(timeouts, 0); /* the race was run */
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(s));
    return 0;
}

TEST(read_deadline_races_data)
{
    for (uint32_t seed = 1; seed <= 4; seed++) {
        run(1, deadline_race_body, (void *)(uintptr_t)seed);
        run(2, deadline_race_body, (void *)(uintptr_t)(seed + 100));
    }
}

/* weft_fd_wait on a socket weft made (io_uring leaves those off epoll
 * until something waits for readiness). */
static int fd_wait_stream_body(void *arg)
{
    (void)arg;
    int c, s;
    conn_pair(K_TCP4, &c, &s);
    int r = weft_fd_wait(c, WEFT_WRITE, after_ms(2000));
    ASSERT(r > 0 && (r & WEFT_WRITE));
    EXPECT_ERR(weft_fd_wait(c, WEFT_READ, weft_now() + 20 * MS),
               WEFT_ETIMEDOUT);
    struct delayed_write dw;
    memset(&dw, 0, sizeof dw);
    dw.fd = s;
    dw.delay = 20 * MS;
    dw.data = "ping";
    EXPECT_OK(weft_waitgroup_add(&dw.wg, 1));
    go(delayed_write_fn, &dw);
    r = weft_fd_wait(c, WEFT_READ, after_ms(2000));
    ASSERT(r > 0 && (r & WEFT_READ));
    char buf[8];
    EXPECT_ERR(weft_read(c, buf, sizeof buf), 4);
    ASSERT(memcmp(buf, "ping", 4) == 0);
    wg_wait(&dw.wg, 2000, "delayed writer");
    EXPECT_OK(weft_close(c));
    EXPECT_OK(weft_close(s));
    return 0;
}

TEST(fd_wait_on_weft_socket)
{
    run(1, fd_wait_stream_body, NULL);
    run(2, fd_wait_stream_body, NULL);
}

/* A P that never runs dry (coroutines that only yield) still does its
 * io_uring I/O: every 16th switch sends the queue, and sysmon's poll
 * takes the completions (every 10 ms at worst, as Go's network waits on
 * such a P). Without the sends the requests would never leave. */
struct spinner {
    _Atomic bool *stop;
    weft_waitgroup_t *wg;
};

static void yielder_fn(void *arg)
{
    struct spinner *sp = arg;
    while (!atomic_load(sp->stop))
        weft_yield();
    EXPECT_OK(weft_waitgroup_done(sp->wg));
}

static void echo_once_fn(void *arg)
{
    int fd = *(int *)arg;
    char buf[16];
    ssize_t n;
    while ((n = weft_read(fd, buf, sizeof buf)) > 0)
        EXPECT_ERR(weft_write(fd, buf, (size_t)n, NULL), n);
}

static int busy_p_body(void *arg)
{
    bool *skipped = arg;
    if (!weft__uring_on) {
        *skipped = true;
        return 0;
    }
    int c, s;
    conn_pair(K_TCP4, &c, &s);
    go(echo_once_fn, &s);
    _Atomic bool stop = false;
    weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
    struct spinner sp = {&stop, &wg};
    EXPECT_OK(weft_waitgroup_add(&wg, 4));
    for (int i = 0; i < 4; i++)
        go(yielder_fn, &sp);
    int64_t dl = after_ms(10000);
    for (int i = 0; i < 100; i++) {
        char m[4] = {(char)i, 1, 2, 3}, got[4];
        EXPECT_ERR(weft_write_dl(c, m, 4, NULL, dl), 4);
        ssize_t r = read_full(c, got, 4, dl);
        if (r != 4)
            FAIL("round trip %d beside 4 yielding coroutines: %zd (%s)", i,
                 r, r < 0 ? weft_err_name((int)r) : "short");
        ASSERT(memcmp(m, got, 4) == 0);
    }
    atomic_store(&stop, true);
    wg_wait(&wg, 2000, "yielders");
    EXPECT_OK(weft_close(c)); /* the echo coroutine reads EOF and ends */
    weft_sleep(10 * MS);
    EXPECT_OK(weft_close(s));
    return 0;
}

TEST(io_progress_on_a_busy_p)
{
    bool skipped = false;
    run(1, busy_p_body, &skipped);
    if (skipped)
        SKIP("io_uring is off");
}
