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

int weft__netpoll_init(void);
void weft__netpoll_close(void);
struct g *weft__netpoll(int64_t delay);
void weft__netpoll_break(void);
bool weft__netpoll_waiters(void);
int32_t weft__netpoll_nwaiters(void); /* how many (metrics) */
int weft__netpoll_open(int fd, uint64_t data);
void weft__netpoll_disarm(int fd);

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
void weft__pd_init(void);
void weft__pd_fini(void);

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
