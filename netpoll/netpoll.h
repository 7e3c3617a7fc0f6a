/*
 * netpoll.h - the contract between the scheduler and a poller backend
 * (netpoll_epoll.c on Linux). Go's netpoll.go, reduced to what the
 * scheduler needs:
 *
 *  weft__netpoll_init()   create the poller; 0 or -errno. Called once
 *                         per weft_main before any M runs.
 *  weft__netpoll_close()  release it; no M may be polling.
 *  weft__netpoll(delay)    wait for I/O readiness: delay < 0 blocks until
 *                         woken, 0 only looks, > 0 blocks at most delay
 *                         ns. Returns the Gs made ready, linked through
 *                         schedlink, or NULL. At most one M
 *                         calls it with delay != 0 at a time (the one that
 *                         set sched.lastpoll to 0).
 *  weft__netpoll_break()  make a blocked weft__netpoll return soon. Any
 *                         thread, async-signal-safe; coalesced.
 *  weft__netpoll_waiters() whether any G waits on I/O: the scheduler
 *                         only blocks in the poller when there is I/O or
 *                         a timer to wait for (fd.c counts them).
 *  weft__netpoll_open(fd, data)
 *                         register fd, edge-triggered for reading and
 *                         writing; its events report data to
 *                         weft__pd_netready. 0 or -errno.
 *  weft__netpoll_disarm(fd) unregister fd (it is about to be closed).
 *
 * uring.c, the io_uring per P for stream sockets (see its top comment):
 *  weft__uring_init(epfd, tag) / weft__uring_close(), weft__uring_on
 *  (whether it is in use), weft__uring_sqe / _flush on the caller's own
 *  P (pp->uringq counts what is queued), weft__uring_reap(P id) / _reapall from anywhere,
 *  weft__uring_cancel.
 *
 * fd.c, the poll descriptors on top (see its top comment):
 *  weft__pd_adopt, weft__pd_wait, weft__pd_busy, weft__pd_close as
 *  documented there; weft__pd_netready(data, r, w, hup, &list) is the
 *  backend's report of readiness; weft__pd_init raises the soft fd
 *  limit for the runtime's life, weft__pd_fini forgets every fd.
 */
#ifndef WEFT_NETPOLL_H
#define WEFT_NETPOLL_H

#include <stdbool.h>
#include <stdint.h>

struct g;
struct p;

int weft__netpoll_init(void);
void weft__netpoll_close(void);
struct g *weft__netpoll(int64_t delay);
void weft__netpoll_break(void);
bool weft__netpoll_waiters(void);
int32_t weft__netpoll_nwaiters(void); /* how many (metrics) */
int weft__netpoll_open(int fd, uint64_t data);
void weft__netpoll_disarm(int fd);

/* One direction's io_uring request (uring.c invariant 3, fd.c's
 * weft__pd_uio). st is gen << U_GEN | flags | state: gen counts the
 * requests of this pd and direction, so a late compare-and-swap meant
 * for one request never lands on the next. */
enum {
    U_IDLE, U_QUEUED, U_SUBMITTING, U_INFLIGHT, U_DONE,
    U_STATE = 7,
    U_CANCEL = 8,  /* a deadline or a close cancelled it */
    U_NOP = 16,    /* cancelled before the kernel saw it */
    U_ARMING = 32, /* its sender is arming its deadline timer */
    U_GEN = 6,
};
#define UTOK_DONE ((uint64_t)1)
struct pdu {
    _Atomic uint32_t st;  /* see above */
    _Atomic int32_t ring; /* the P id whose ring has it */
    _Atomic uint32_t seq; /* the pd generation it was queued for */
    /* Set by the G before it queues the request; read by the P that
     * sends it before the G may go on (uring.c invariant 5). */
    uint64_t ud;          /* its user_data */
    int64_t deadline;     /* WEFT_FOREVER: none */
    struct timer tm;      /* the deadline, armed only if the request
                           * did not complete as it was sent */
    int32_t res;          /* the CQE's, published by tok = UTOK_DONE */
    bool drained;         /* the last request came back short (the G
                           * that owns the direction writes it) */
    _Atomic uint64_t tok; /* 0, UTOK_DONE, or the parked G's token */
};

/* A poll descriptor (fd.c owns it; see its top comment). */
struct pd {
    _Atomic uint64_t rg, wg; /* wait words */
    _Atomic uint32_t seq;    /* generation */
    _Atomic bool open;       /* lock writes */
    bool stream;             /* lock writes: a socket weft made, whose every
                              * arrival of data raises an edge (net.c) */
    _Atomic uint32_t drained; /* net.c: see weft_read_dl */
    _Atomic bool hup;        /* the peer shut its side down (sticky for
                              * this generation): a short read no longer
                              * means a later edge will come */
    _Atomic bool polled;     /* registered with epoll in this generation
                              * (streams with io_uring only on demand) */
    struct pdu u[2];         /* io_uring reads [0] and writes [1] */
    wlock lock;              /* adopt and close */
    /* Who opened it, for dumps and the leak detector (lock writes). */
    int64_t openerid;
    uintptr_t openpc;
    int64_t openedat;
};
enum { PD_ADOPT, PD_NEW, PD_NEWSTREAM };
int weft__pd_adopt(int fd, struct pd **pdp, uint32_t *seqp, uintptr_t pc,
                   int how);
bool weft__pd_busy(struct pd *pd, int mode);
int weft__pd_wait(struct pd *pd, int fd, uint32_t seq, int mode,
                  int64_t deadline);
bool weft__pd_close(int fd);
void weft__pd_netready(uint64_t data, bool r, bool w, bool hup,
                       struct g **list);
void weft__pd_ucomplete(uint64_t ud, int32_t res, struct g **list);
struct uio {
    uint8_t op;     /* IORING_OP_RECV, _SEND, _READV, _SENDMSG */
    void *addr;     /* buffer, iovec array or msghdr */
    uint32_t len;   /* bytes, or iovec count */
    uint32_t flags; /* msg_flags */
};
int32_t weft__pd_uio(struct pd *pd, int fd, uint32_t seq, int dir,
                     const struct uio *io, int64_t deadline);
void weft__pd_init(void);
void weft__pd_fini(void);

struct io_uring_sqe;
extern bool weft__uring_on;
void weft__uring_init(int epfd, uint64_t tag);
void weft__uring_close(void);
struct io_uring_sqe *weft__uring_sqe(struct p *pp, struct pdu *d);
void weft__uring_flush(struct p *pp);
struct g *weft__uring_reap(int32_t i, struct g *list);
struct g *weft__uring_reapall(struct g *list);
void weft__uring_cancel(struct pdu *d, uint32_t gen, uint64_t ud);

/* An fd weft has open, as weft__fds saw it (the leak detector's view). */
struct fdinfo {
    int fd;
    int64_t openerid;  /* the G that opened/adopted it, 0: not a G */
    uintptr_t openpc;  /* the weft_* call site that did */
    int64_t openedat;  /* weft__nanotime() then */
    int64_t readerid;  /* G ids parked reading / writing it, 0: none */
    int64_t writerid;
};
/* weft__fds - every fd weft has open (adopted and not weft_close'd; an
 * fd closed behind weft's back with close(2) stays listed until its
 * number is reused), in fd order. Racy but safe, any thread. Returns the
 * count with *out malloc'd (free it), or WEFT_ENOMEM. */
long weft__fds(struct fdinfo **out);

#endif
