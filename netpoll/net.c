/*
 * net.c - the fd and socket calls of weft.h: each tries its system call
 * first and, on EAGAIN, parks in weft__pd_wait (fd.c) until the
 * netpoller reports the fd ready, then tries again (Go's internal/poll).
 *
 * Invariants:
 *  1. Every fd weft hands out is non-blocking and close-on-exec, and is
 *     registered with the poller before it is returned, so its opener is
 *     recorded (fd.c) and a wait on it cannot miss an edge.
 *  2. A call never reports through errno: each system call's errno is
 *     read at once, on the thread that made the call.
 *  3. Name resolution (getaddrinfo) runs inside weft_blocking, so a slow
 *     DNS answer costs a thread, not a P. Numeric addresses skip it.
 *  4. A spurious wake-up (fd.c invariant 3) only costs one more EAGAIN:
 *     every loop retries its call, connect double-checks with
 *     getpeername, and weft_fd_wait asks poll(2) what is ready.
 *  5. On TCP and Unix stream sockets (Linux), a read shorter than asked
 *     means the receive queue was empty when it returned, and each later
 *     arrival of data calls the socket's data-ready hook, which queues an
 *     edge-triggered epoll event. readsome relies on this to skip a
 *     read that could only fail with EAGAIN (saves a third of the
 *     syscalls of a request/response server). Pipes and adopted fds do
 *     not get this: not every kernel raises an edge per pipe write. Nor
 *     does a socket whose peer hung up: the FIN can share the last
 *     data's edge, so no edge would follow (fd.c's hup).
 *  6. One-buffer reads and writes use recv/send on those sockets: no trip
 *     through the VFS layer, 2% of the kernel's cycles per call (perf
 *     stat on examples/echo), and MSG_NOSIGNAL needs no SIGPIPE setup.
 *  7. With io_uring in use (uring.c), reads and writes on those sockets
 *     go through the P's ring instead (fd.c's weft__pd_uio): no EAGAIN,
 *     no readiness, no system call of their own. Everything else (accept,
 *     connect, adopted fds, pipes, weft_fd_wait) stays on epoll.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime.h"

/* The program's call site, recorded as an fd's opener (fd.c). The
 * public calls come in pairs (x, x_dl) over one static x_at taking it,
 * so both record the program's frame, not one of weft's own. */
#define CALLER ((uintptr_t)__builtin_return_address(0))

#define ACCEPT_BACKOFF_MIN_NS (5 * 1000000LL)
#define ACCEPT_BACKOFF_MAX_NS (1000 * 1000000LL)
#define WRITEV_WINDOW 64
#define UIO_MAX (1u << 30) /* bytes per io_uring request */

/* curg - the calling coroutine, or NULL outside one (or inside a
 * weft_syscall_enter bracket, where parking is not allowed). */
static inline struct g *curg(void)
{
    struct g *gp = weft__getg();
    return gp != NULL && !gp->syscallp ? gp : NULL;
}

/* ioprep - the common head of the blocking fd calls. *blocking is set
 * when epoll cannot wait on fd (a regular file): then the call is made
 * as is, as Go does for files. */
static int ioprep(int fd, struct pd **pd, uint32_t *seq, bool *plain,
                  uintptr_t pc)
{
    if (curg() == NULL)
        return WEFT_ENOTCORO;
    weft_checkpoint();
    *plain = false;
    int rc = weft__pd_adopt(fd, pd, seq, pc, PD_ADOPT);
    if (rc == WEFT_EPERM) {
        *plain = true;
        return 0;
    }
    return rc;
}

/* ioerr - a failed call's result: EBADF on an fd whose generation ended
 * while we used it means another coroutine weft_close'd it (a wake-up
 * raced the close), which is WEFT_ECLOSED, as if we had been parked. */
static inline int ioerr(struct pd *pd, uint32_t seq, bool plain, int err)
{
    if (err == EBADF && !plain && atomic_load(&pd->seq) != seq)
        return WEFT_ECLOSED;
    return -err;
}

/* ----------------------------------------------------------- fd calls */

WEFT_EXTERN int weft_fd_open(int fd)
{
    if (!weft__runtime_on())
        return WEFT_ENORUNTIME;
    struct pd *pd;
    uint32_t seq;
    int rc = weft__pd_adopt(fd, &pd, &seq,
                            CALLER, PD_ADOPT);
    return rc < 0 ? rc : fd;
}

WEFT_EXTERN int weft_close(int fd)
{
    if (fd < 0)
        return WEFT_EBADF;
    weft__pd_close(fd);
    if (close(fd) < 0 && errno != EINTR)
        return -errno; /* EINTR: Linux has closed it anyway */
    return 0;
}

WEFT_EXTERN int weft_shutdown(int fd, int how)
{
    return shutdown(fd, how) < 0 ? -errno : 0;
}

/* readymask - the WEFT_* bits of revents that answer a wait for events. */
static int readymask(short revents, int events)
{
    int r = 0;
    if ((events & WEFT_READ) &&
        (revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)))
        r |= WEFT_READ;
    if ((events & WEFT_WRITE) && (revents & (POLLOUT | POLLHUP | POLLERR)))
        r |= WEFT_WRITE;
    return r;
}

WEFT_EXTERN int weft_fd_wait(int fd, int events, int64_t deadline)
{
    if (events == 0 || (events & ~(WEFT_READ | WEFT_WRITE)))
        return WEFT_EINVAL;
    struct pd *pd;
    uint32_t seq;
    bool plain;
    int rc = ioprep(fd, &pd, &seq, &plain,
                    CALLER);
    if (rc < 0)
        return rc;
    /* One waiter per direction, even when the fd is ready already. */
    if (!plain && weft__pd_busy(pd, events))
        return WEFT_EBUSY;
    short want = (short)(((events & WEFT_READ) ? POLLIN | POLLRDHUP : 0) |
                         ((events & WEFT_WRITE) ? POLLOUT : 0));
    for (;;) {
        struct pollfd p = {.fd = fd, .events = want};
        int n = poll(&p, 1, 0);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0) {
            if (p.revents & POLLNVAL)
                return ioerr(pd, seq, plain, EBADF);
            int r = readymask(p.revents, events);
            if (r != 0)
                return r;
        }
        if (plain)
            return events; /* files are always ready */
        if ((rc = weft__pd_wait(pd, fd, seq, events, deadline)) < 0)
            return rc;
    }
}

/* ------------------------------------------------------- read / write */

/* iovtotal - the byte count of iov, or -1 if it is not a valid vector. */
static ssize_t iovtotal(const struct iovec *iov, int iovcnt)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX || (iov == NULL && iovcnt > 0))
        return -1;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > SSIZE_MAX - total)
            return -1;
        total += iov[i].iov_len;
    }
    return (ssize_t)total;
}

/*
 * readsome - weft_read and weft_readv: one read of at most len bytes
 * into iov. It skips the read that would only say EAGAIN (invariant 5):
 * on a stream socket weft made, a read that came back short emptied the
 * receive queue, and every later arrival of data raises an edge, which is
 * either noted already (READY: weft__pd_wait returns at once) or will
 * wake the wait. So the reader whose last read was short parks first.
 * Only the G that saw the short read trusts it: with concurrent readers
 * another may have left data behind.
 */
static ssize_t readsome(int fd, const struct iovec *iov, int iovcnt,
                        size_t len, int64_t deadline, uintptr_t pc)
{
    struct pd *pd;
    uint32_t seq;
    bool plain;
    int rc = ioprep(fd, &pd, &seq, &plain, pc);
    if (rc < 0)
        return rc;
    /* As Go's Read of an empty buffer: a stream socket's recv of 0 bytes
     * would say EAGAIN until data came, and park for nothing. */
    if (len == 0)
        return 0;
    if (!plain && pd->stream && weft__uring_on) {
        struct uio io = {IORING_OP_READV, (void *)iov, (uint32_t)iovcnt, 0};
        if (iovcnt == 1)
            io = (struct uio){IORING_OP_RECV, iov[0].iov_base,
                              (uint32_t)(len < UIO_MAX ? len : UIO_MAX), 0};
        for (;;) {
            int32_t n = weft__pd_uio(pd, fd, seq, 0, &io, deadline);
            if (n != -EINTR && n != -EAGAIN)
                return n;
        }
    }
    uint32_t me = 0;
    if (!plain && pd->stream) {
        me = weft__getg()->idx + 1;
        /* Data and the peer's FIN can share one edge: after a hang-up,
         * a short read proves nothing, so read on to the 0. */
        if (LOAD(&pd->drained) == me &&
            !atomic_load(&pd->hup) &&
            (rc = weft__pd_wait(pd, fd, seq, WEFT_READ, deadline)) < 0)
            return rc;
    }
    for (;;) {
        ssize_t n;
        if (iovcnt != 1)
            n = readv(fd, iov, iovcnt);
        else if (me != 0) /* recv: invariant 6 */
            n = recv(fd, iov[0].iov_base, iov[0].iov_len, 0);
        else
            n = read(fd, iov[0].iov_base, iov[0].iov_len);
        if (n >= 0) {
            if (me != 0)
                STORE(&pd->drained, n > 0 && (size_t)n < len ? me : 0);
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN || plain)
            return ioerr(pd, seq, plain, errno);
        if ((rc = weft__pd_wait(pd, fd, seq, WEFT_READ, deadline)) < 0)
            return rc;
    }
}

static ssize_t read_at(int fd, void *buf, size_t len, int64_t deadline,
                       uintptr_t pc)
{
    if (len > SSIZE_MAX || (buf == NULL && len > 0))
        return WEFT_EINVAL;
    struct iovec v = {buf, len};
    return readsome(fd, &v, 1, len, deadline, pc);
}

WEFT_EXTERN ssize_t weft_read_dl(int fd, void *buf, size_t len,
                                 int64_t deadline)
{
    return read_at(fd, buf, len, deadline, CALLER);
}

WEFT_EXTERN ssize_t weft_read(int fd, void *buf, size_t len)
{
    return read_at(fd, buf, len, WEFT_FOREVER, CALLER);
}

static ssize_t readv_at(int fd, const struct iovec *iov, int iovcnt,
                        int64_t deadline, uintptr_t pc)
{
    ssize_t total = iovtotal(iov, iovcnt);
    if (total < 0)
        return WEFT_EINVAL;
    return readsome(fd, iov, iovcnt, (size_t)total, deadline, pc);
}

WEFT_EXTERN ssize_t weft_readv_dl(int fd, const struct iovec *iov,
                                  int iovcnt, int64_t deadline)
{
    return readv_at(fd, iov, iovcnt, deadline, CALLER);
}

WEFT_EXTERN ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt)
{
    return readv_at(fd, iov, iovcnt, WEFT_FOREVER, CALLER);
}

/*
 * writeall - weft_write and weft_writev: write all total bytes of iov.
 * The caller's iovecs are const: it writes through a window copied from
 * them, its first entry advanced past what is already written.
 */
static ssize_t writeall(int fd, const struct iovec *iov, int iovcnt,
                        size_t total, size_t *done, int64_t deadline,
                        uintptr_t pc)
{
    struct pd *pd;
    uint32_t seq;
    bool plain;
    int rc = ioprep(fd, &pd, &seq, &plain, pc);
    if (rc < 0)
        return rc;
    bool stream = !plain && pd->stream; /* send: invariant 6 */
    bool uring = stream && weft__uring_on;
    struct iovec win[WRITEV_WINDOW];
    int i = 0;       /* first entry not fully written */
    size_t skip = 0; /* bytes of iov[i] already written */
    size_t off = 0;
    ssize_t ret = (ssize_t)total;
    while (off < total) {
        while (i < iovcnt && iov[i].iov_len == skip) {
            i++;
            skip = 0;
        }
        int k = 0;
        for (; k < WRITEV_WINDOW && i + k < iovcnt; k++)
            win[k] = iov[i + k];
        win[0].iov_base = (char *)win[0].iov_base + skip;
        win[0].iov_len -= skip;
        ssize_t n;
        if (uring) {
            /* MSG_WAITALL: the kernel goes on after a short send. */
            struct msghdr mh = {.msg_iov = win, .msg_iovlen = (size_t)k};
            struct uio io = {IORING_OP_SENDMSG, &mh, 1,
                             MSG_NOSIGNAL | MSG_WAITALL};
            if (k == 1)
                io = (struct uio){IORING_OP_SEND, win[0].iov_base,
                                  (uint32_t)(win[0].iov_len < UIO_MAX
                                                 ? win[0].iov_len
                                                 : UIO_MAX),
                                  MSG_NOSIGNAL | MSG_WAITALL};
            int32_t r = weft__pd_uio(pd, fd, seq, 1, &io, deadline);
            if (r < 0 && r != -EINTR && r != -EAGAIN) {
                ret = r;
                break;
            }
            n = r < 0 ? 0 : r;
        } else if (k != 1)
            n = writev(fd, win, k);
        else if (stream)
            n = send(fd, win[0].iov_base, win[0].iov_len, MSG_NOSIGNAL);
        else
            n = write(fd, win[0].iov_base, win[0].iov_len);
        if (n >= 0) {
            off += (size_t)n;
            size_t left = (size_t)n;
            while (left > 0) {
                size_t rest = iov[i].iov_len - skip;
                if (left < rest) {
                    skip += left;
                    break;
                }
                left -= rest;
                i++;
                skip = 0;
            }
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN || plain) {
            ret = ioerr(pd, seq, plain, errno);
            break;
        }
        if ((rc = weft__pd_wait(pd, fd, seq, WEFT_WRITE, deadline)) < 0) {
            ret = rc;
            break;
        }
    }
    if (done != NULL)
        *done = off;
    return ret;
}

static ssize_t write_at(int fd, const void *buf, size_t len, size_t *done,
                        int64_t deadline, uintptr_t pc)
{
    if (done != NULL)
        *done = 0;
    if (len > SSIZE_MAX || (buf == NULL && len > 0))
        return WEFT_EINVAL;
    struct iovec v = {(void *)buf, len};
    return writeall(fd, &v, 1, len, done, deadline, pc);
}

WEFT_EXTERN ssize_t weft_write_dl(int fd, const void *buf, size_t len,
                                  size_t *done, int64_t deadline)
{
    return write_at(fd, buf, len, done, deadline, CALLER);
}

WEFT_EXTERN ssize_t weft_write(int fd, const void *buf, size_t len,
                               size_t *done)
{
    return write_at(fd, buf, len, done, WEFT_FOREVER, CALLER);
}

static ssize_t writev_at(int fd, const struct iovec *iov, int iovcnt,
                         size_t *done, int64_t deadline, uintptr_t pc)
{
    if (done != NULL)
        *done = 0;
    ssize_t total = iovtotal(iov, iovcnt);
    if (total < 0)
        return WEFT_EINVAL;
    return writeall(fd, iov, iovcnt, (size_t)total, done, deadline, pc);
}

WEFT_EXTERN ssize_t weft_writev_dl(int fd, const struct iovec *iov,
                                   int iovcnt, size_t *done,
                                   int64_t deadline)
{
    return writev_at(fd, iov, iovcnt, done, deadline, CALLER);
}

WEFT_EXTERN ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt,
                                size_t *done)
{
    return writev_at(fd, iov, iovcnt, done, WEFT_FOREVER, CALLER);
}

/* ------------------------------------------------------ name resolution */

struct gai {
    const char *node, *service;
    const struct addrinfo *hints;
    struct addrinfo **res;
    int err; /* errno, for EAI_SYSTEM */
};

static intptr_t gai_call(void *arg)
{
    struct gai *a = arg;
    int rc = getaddrinfo(a->node, a->service, a->hints, a->res);
    a->err = errno;
    return rc;
}

static int gaierr(int rc, int err)
{
    switch (rc) {
    case 0:
        return 0;
    case EAI_NONAME:
    case EAI_SERVICE:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return WEFT_ENONAME;
    case EAI_AGAIN:
        return WEFT_EAGAIN;
    case EAI_MEMORY:
        return WEFT_ENOMEM;
    case EAI_SYSTEM:
        return err > 0 ? -err : WEFT_EINVAL;
    default:
        return WEFT_EINVAL;
    }
}

WEFT_EXTERN int weft_getaddrinfo(const char *node, const char *service,
                                 const struct addrinfo *hints,
                                 struct addrinfo **res)
{
    if ((node == NULL && service == NULL) || res == NULL)
        return WEFT_EINVAL;
    struct gai a = {node, service, hints, res, 0};
    return gaierr((int)weft_blocking(gai_call, &a), a.err);
}

/* -------------------------------------------------------- addresses */

struct addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* netfamily - the address family a network name asks for; -1 if bad. */
static int netfamily(const char *network)
{
    if (network == NULL)
        return -1;
    if (strcmp(network, "tcp") == 0)
        return AF_UNSPEC;
    if (strcmp(network, "tcp4") == 0)
        return AF_INET;
    if (strcmp(network, "tcp6") == 0)
        return AF_INET6;
    if (strcmp(network, "unix") == 0)
        return AF_UNIX;
    return -1;
}

static int unixaddr(const char *path, struct addr *a)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un->sun_path)
        return WEFT_EINVAL;
    memset(un, 0, sizeof *un);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n);
    if (path[0] == '@') /* abstract: no trailing NUL in the name */
        un->sun_path[0] = '\0';
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
                         (path[0] == '@' ? 0 : 1));
    return 0;
}

/* splithostport - "host:port", ":port" or "[v6]:port" into host (may be
 * empty) and port. */
static int splithostport(const char *address, char *host, size_t hostsz,
                         char *port, size_t portsz)
{
    const char *colon, *h = address;
    size_t hl;
    if (address[0] == '[') {
        const char *end = strchr(address, ']');
        if (end == NULL || end[1] != ':')
            return WEFT_EINVAL;
        h = address + 1;
        hl = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(address, ':');
        if (colon == NULL)
            return WEFT_EINVAL;
        hl = (size_t)(colon - address);
        if (memchr(address, ':', hl) != NULL)
            return WEFT_EINVAL; /* bare IPv6 needs brackets */
    }
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (hl >= hostsz || pl == 0 || pl >= portsz)
        return WEFT_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, p, pl + 1);
    /* A numeric port must be a port: getaddrinfo accepts 99999. */
    if (p[strspn(p, "0123456789")] == '\0') {
        char *endp;
        long v = strtol(p, &endp, 10);
        if (pl > 5 || v > 65535)
            return WEFT_EINVAL;
    }
    return 0;
}

/* resolve - the addresses of network/address, for listening (passive)
 * or dialing. Returns a getaddrinfo list in *res (free with
 * freeaddrinfo), or an error. */
static int resolve(int family, const char *address, bool passive,
                   struct addrinfo **res)
{
    char host[256], port[32];
    int rc = splithostport(address, host, sizeof host, port, sizeof port);
    if (rc < 0)
        return rc;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    const char *node = host;
    if (host[0] == '\0') {
        if (!passive)
            node = family == AF_INET6 ? "::1" : "127.0.0.1"; /* as Go */
        else
            node = NULL;
    }
    /* Numeric hosts need no resolver, so no thread hand-off. */
    struct in6_addr tmp;
    if (node == NULL || inet_pton(AF_INET, node, &tmp) == 1 ||
        inet_pton(AF_INET6, node, &tmp) == 1) {
        hints.ai_flags |= AI_NUMERICHOST;
        return gaierr(getaddrinfo(node, port, &hints, res), errno);
    }
    return weft_getaddrinfo(node, port, &hints, res);
}

/* netprep - the common head of weft_listen and weft_dial: checks the
 * arguments and the caller, then fills *ua (unix) or *res (TCP, free it
 * with freeaddrinfo). Returns the family (AF_UNIX, AF_INET, AF_INET6 or
 * AF_UNSPEC for "tcp") or an error. */
static int netprep(const char *network, const char *address, bool passive,
                   struct addr *ua, struct addrinfo **res)
{
    int family = netfamily(network);
    if (family < 0 || address == NULL)
        return WEFT_EINVAL;
    if (curg() == NULL)
        return WEFT_ENOTCORO;
    weft_checkpoint();
    int rc = family == AF_UNIX ? unixaddr(address, ua)
                               : resolve(family, address, passive, res);
    return rc < 0 ? rc : family;
}

static void tcpopts(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ------------------------------------------------------------ listen */

static int listenon(int family, const struct sockaddr *sa, socklen_t len,
                    int backlog, bool v6only, uintptr_t pc)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (family != AF_UNIX)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) {
        int v = v6only;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v);
    }
    int rc = 0;
    if (bind(fd, sa, len) < 0 ||
        listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0) {
        rc = -errno;
    } else {
        struct pd *pd;
        uint32_t seq;
        rc = weft__pd_adopt(fd, &pd, &seq, pc, PD_NEW);
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

WEFT_EXTERN int weft_listen(const char *network, const char *address,
                            int backlog)
{
    uintptr_t pc = CALLER;
    struct addr ua;
    struct addrinfo *res;
    int family = netprep(network, address, true, &ua, &res);
    if (family < 0)
        return family;
    if (family == AF_UNIX)
        return listenon(AF_UNIX, (struct sockaddr *)&ua.ss, ua.len, backlog,
                        false, pc);
    /* "tcp" on every address: one IPv6 socket that takes IPv4 too, else
     * (no IPv6 here) the first address getaddrinfo gave. */
    int rc = WEFT_ENONAME;
    bool wildcard = address[0] == ':' || strncmp(address, "[]:", 3) == 0;
    if (family == AF_UNSPEC && wildcard) {
        struct sockaddr_in6 any6;
        memset(&any6, 0, sizeof any6);
        any6.sin6_family = AF_INET6;
        any6.sin6_addr = in6addr_any;
        for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
            if (ai->ai_family == AF_INET) {
                any6.sin6_port = ((struct sockaddr_in *)ai->ai_addr)->sin_port;
                break;
            }
            if (ai->ai_family == AF_INET6) {
                any6.sin6_port =
                    ((struct sockaddr_in6 *)ai->ai_addr)->sin6_port;
                break;
            }
        }
        rc = listenon(AF_INET6, (struct sockaddr *)&any6, sizeof any6,
                      backlog, false, pc);
        if (rc >= 0 || (rc != -EAFNOSUPPORT && rc != -EADDRNOTAVAIL)) {
            freeaddrinfo(res);
            return rc;
        }
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (wildcard && family == AF_UNSPEC && ai->ai_family != AF_INET)
            continue;
        rc = listenon(ai->ai_family, ai->ai_addr, ai->ai_addrlen, backlog,
                      ai->ai_family == AF_INET6, pc);
        if (rc >= 0)
            break;
    }
    freeaddrinfo(res);
    return rc;
}

/* ------------------------------------------------------------ accept */

static int accept_at(int lfd, struct sockaddr *addr, socklen_t *addrlen,
                     int64_t deadline, uintptr_t pc)
{
    if ((addr == NULL) != (addrlen == NULL))
        return WEFT_EINVAL;
    struct pd *pd;
    uint32_t seq;
    bool plain;
    int rc = ioprep(lfd, &pd, &seq, &plain, pc);
    if (rc < 0)
        return rc;
    if (plain)
        return -ENOTSOCK;
    int64_t backoff = 0;
    for (;;) {
        /* Into our own buffer: its family says whether to set TCP
         * options without a getsockname. */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            struct pd *cpd;
            uint32_t cseq;
            if ((rc = weft__pd_adopt(fd, &cpd, &cseq, pc, PD_NEWSTREAM)) <
                0) {
                close(fd);
                return rc;
            }
            if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
                tcpopts(fd);
            if (addr != NULL) { /* accept(2)'s contract: truncate */
                memcpy(addr, &ss, sl < *addrlen ? sl : *addrlen);
                *addrlen = sl;
            }
            return fd;
        }
        int err = errno;
        switch (err) {
        case EINTR:
        case ECONNABORTED:
            continue;
        case EAGAIN:
            backoff = 0;
            if ((rc = weft__pd_wait(pd, lfd, seq, WEFT_READ, deadline)) < 0)
                return rc;
            continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM: {
            /* Out of fds: the connection waits in the backlog while we
             * back off, as Go's http.Server does; never spin. */
            backoff = backoff == 0 ? ACCEPT_BACKOFF_MIN_NS : backoff * 2;
            if (backoff > ACCEPT_BACKOFF_MAX_NS)
                backoff = ACCEPT_BACKOFF_MAX_NS;
            int64_t until = weft_now() + backoff;
            if (deadline != WEFT_FOREVER && until >= deadline) {
                weft_sleep_until(deadline);
                return WEFT_ETIMEDOUT;
            }
            weft_sleep_until(until);
            continue;
        }
        default:
            return ioerr(pd, seq, plain, err);
        }
    }
}

WEFT_EXTERN int weft_accept_dl(int lfd, struct sockaddr *addr,
                               socklen_t *addrlen, int64_t deadline)
{
    return accept_at(lfd, addr, addrlen, deadline, CALLER);
}

WEFT_EXTERN int weft_accept(int lfd, struct sockaddr *addr,
                            socklen_t *addrlen)
{
    return accept_at(lfd, addr, addrlen, WEFT_FOREVER, CALLER);
}

/* -------------------------------------------------------------- dial */

/* connectone - one connection attempt; the fd or an error. */
static int connectone(const struct sockaddr *sa, socklen_t len,
                      int64_t deadline, uintptr_t pc)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (fd < 0)
        return -errno;
    struct pd *pd;
    uint32_t seq;
    int rc = weft__pd_adopt(fd, &pd, &seq, pc, PD_NEWSTREAM);
    if (rc < 0)
        goto fail;
    if (connect(fd, sa, len) == 0)
        goto ok;
    if (errno != EINPROGRESS && errno != EINTR) {
        rc = -errno;
        goto fail;
    }
    for (;;) {
        if ((rc = weft__pd_wait(pd, fd, seq, WEFT_WRITE, deadline)) < 0)
            goto fail;
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
            rc = -errno;
            goto fail;
        }
        if (soerr == EINPROGRESS || soerr == EALREADY || soerr == EINTR)
            continue;
        if (soerr != 0) {
            rc = -soerr;
            goto fail;
        }
        /* No error may still mean "not yet" after a spurious wake-up. */
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0)
            break;
    }
ok:
    if (sa->sa_family != AF_UNIX)
        tcpopts(fd);
    return fd;
fail:
    weft__pd_close(fd);
    close(fd);
    return rc;
}

static int dial_at(const char *network, const char *address,
                   int64_t deadline, uintptr_t pc)
{
    struct addr ua;
    struct addrinfo *res;
    int family = netprep(network, address, false, &ua, &res);
    if (family < 0)
        return family;
    if (family == AF_UNIX)
        return connectone((struct sockaddr *)&ua.ss, ua.len, deadline, pc);
    int rc = WEFT_ENONAME;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        rc = connectone(ai->ai_addr, ai->ai_addrlen, deadline, pc);
        if (rc >= 0 || rc == WEFT_ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    return rc;
}

WEFT_EXTERN int weft_dial_dl(const char *network, const char *address,
                             int64_t deadline)
{
    return dial_at(network, address, deadline, CALLER);
}

WEFT_EXTERN int weft_dial(const char *network, const char *address)
{
    return dial_at(network, address, WEFT_FOREVER, CALLER);
}
