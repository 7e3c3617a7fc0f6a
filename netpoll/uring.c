/*
 * uring.c - an io_uring per P for the reads and writes of the stream
 * sockets weft made (accepted or dialled): the request goes into the P's
 * submission queue, the coroutine parks, and the completion readies it.
 * On a busy server one io_uring_enter submits a whole scheduling round's
 * requests, where the epoll path makes a recv and a send system call per
 * request (docs/HACKING.md has the measurements). This file owns the
 * rings; fd.c owns the wait protocol on top (weft__pd_uio) and net.c
 * decides which calls come here.
 *
 * Rings are set up with COOP_TASKRUN and neither SINGLE_ISSUER nor
 * DEFER_TASKRUN: an M's requests complete through task work queued to
 * that M's thread, run at its next kernel entry or exit, or at once if it
 * sleeps (the kernel wakes an interruptibly sleeping task for task work;
 * COOP only spares a running one the interrupt). So any M may submit on
 * any P's ring and Ms may sleep in a futex or in epoll with requests
 * outstanding. Without COOP_TASKRUN every completion interrupted the
 * submitting thread: measured 5-10% more CPU per request than epoll.
 *
 * Invariants:
 *  1. A ring's submission side belongs to the M holding its P: only it
 *     queues SQEs (weft__uring_sqe) and submits them (weft__uring_flush).
 *     SQEs wait in the ring past the kernel-visible tail until a flush,
 *     which happens when the P runs out of work, every 16th schedule,
 *     before its M enters a blocking system call, and when the queue is
 *     full; never from the coroutine whose SQE it is before it parked.
 *  2. The completion side is taken by whoever wins the ring's reap flag
 *     (the P's M in findrunnable, the poller, sysmon): each CQE goes to
 *     fd.c (weft__pd_ucomplete), which readies the waiter.
 *  3. Each queued request has a state word in its pd (struct pdu):
 *     QUEUED -> SUBMITTING (flush, before the enter) -> INFLIGHT (after
 *     the kernel consumed it) -> DONE (its CQE). weft_close marks a
 *     QUEUED one, which the flush turns into a NOP, and cancels an
 *     INFLIGHT one with IORING_REGISTER_SYNC_CANCEL; so a request never
 *     reaches the kernel after its fd was closed, and a reused fd number
 *     never receives an old request.
 *  4. Each ring's fd is in the epoll set (level-triggered): a sleeping
 *     poller wakes for completions as for readiness.
 *  5. Deadlines: a request that did not complete as it was sent (reads
 *     that wait for data; writes almost never do) gets a timer on the
 *     sending P, whose firing cancels it as weft_close does (the timer
 *     carries the user_data, so a late firing cancels nothing newer).
 *     The sender marks the request ARMING from before the enter until
 *     the timer is added, and the G, woken by a CQE that may come first,
 *     waits for that mark to go before it deletes the timer: so the
 *     request's fields stay put while the sender reads them, and no
 *     timer stays armed past its request. A timer for every request
 *     (kernel linked timeouts, prepared and disarmed even for a send
 *     that completes at once) cost httpd, whose every read and write has
 *     a deadline, ~8% more cycles per request than epoll.
 *
 * Off (epoll for everything) when the kernel lacks what this needs
 * (COOP_TASKRUN, SYNC_CANCEL: Linux 6.0), when io_uring is refused
 * (seccomp, sysctl kernel.io_uring_disabled), under valgrind (it cannot
 * see the kernel write the rings), or with WEFTDEBUG=iouring=0.
 */
#include <linux/io_uring.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"

#define SQ_ENTRIES 256
#define CQ_ENTRIES 8192 /* completions in flight at once before overflow */

struct uring {
    int fd;
    /* Shared with the kernel. */
    _Atomic uint32_t *sqhead, *sqtail, *sqflags;
    uint32_t sqmask;
    struct io_uring_sqe *sqes;
    _Atomic uint32_t *cqhead, *cqtail;
    uint32_t cqmask;
    struct io_uring_cqe *cqes;
    void *ringmem, *sqemem;
    size_t ringsz, sqesz;
    /* Owner (invariant 1): SQEs written up to tail, the P's uringq of
     * them not yet visible to the kernel, and whose they are. */
    uint32_t tail;
    struct pdu *queued[SQ_ENTRIES];
    /* invariant 2 */
    _Alignas(CACHELINE) _Atomic bool reaping;
};

bool weft__uring_on;
static struct uring **rings; /* one per P, by P id */
static int32_t nrings;

static int enter(int fd, unsigned n, unsigned flags)
{
    long r = syscall(__NR_io_uring_enter, fd, n, 0, flags, NULL, 0);
    return r < 0 ? -errno : (int)r;
}

static void ringfree(struct uring *r)
{
    if (r == NULL)
        return;
    if (r->sqemem != NULL)
        munmap(r->sqemem, r->sqesz);
    if (r->ringmem != NULL)
        munmap(r->ringmem, r->ringsz);
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

static struct uring *ringnew(void)
{
    struct uring *r = aligned_alloc(CACHELINE, sizeof *r);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof *r);
    struct io_uring_params p = {
        .flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL |
                 IORING_SETUP_CQSIZE,
        .cq_entries = CQ_ENTRIES,
    };
    r->fd = (int)syscall(__NR_io_uring_setup, SQ_ENTRIES, &p);
    if (r->fd < 0 || !(p.features & IORING_FEAT_SINGLE_MMAP) ||
        !(p.features & IORING_FEAT_NODROP) || p.sq_entries != SQ_ENTRIES) {
        ringfree(r);
        return NULL;
    }
    size_t sqsz = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
    size_t cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    r->ringsz = sqsz > cqsz ? sqsz : cqsz;
    r->ringmem = mmap(NULL, r->ringsz, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    r->sqesz = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqemem = mmap(NULL, r->sqesz, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->ringmem == MAP_FAILED || r->sqemem == MAP_FAILED) {
        if (r->ringmem == MAP_FAILED)
            r->ringmem = NULL;
        if (r->sqemem == MAP_FAILED)
            r->sqemem = NULL;
        ringfree(r);
        return NULL;
    }
    char *m = r->ringmem;
    r->sqhead = (_Atomic uint32_t *)(m + p.sq_off.head);
    r->sqtail = (_Atomic uint32_t *)(m + p.sq_off.tail);
    r->sqflags = (_Atomic uint32_t *)(m + p.sq_off.flags);
    r->sqmask = *(uint32_t *)(m + p.sq_off.ring_mask);
    uint32_t *array = (uint32_t *)(m + p.sq_off.array);
    for (uint32_t i = 0; i < p.sq_entries; i++)
        array[i] = i; /* SQE slot i is always array entry i */
    r->sqes = r->sqemem;
    r->cqhead = (_Atomic uint32_t *)(m + p.cq_off.head);
    r->cqtail = (_Atomic uint32_t *)(m + p.cq_off.tail);
    r->cqmask = *(uint32_t *)(m + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(m + p.cq_off.cqes);
    r->tail = LOAD(r->sqtail);
    return r;
}

/* synccancel - cancel the requests on ring fd matching user_data ud
 * (flags IORING_ASYNC_CANCEL_ANY|ALL: every one), waiting until they are
 * cancelled (their CQEs may come later). 0, -ENOENT (none: finished
 * already), -errno. */
static int synccancel(int fd, uint64_t ud, uint32_t flags)
{
    struct io_uring_sync_cancel_reg reg = {
        .addr = ud,
        .fd = -1,
        .flags = flags,
        .timeout = {.tv_sec = -1, .tv_nsec = -1},
    };
    for (;;) {
        long r = syscall(__NR_io_uring_register, fd,
                         IORING_REGISTER_SYNC_CANCEL, &reg, 1);
        if (r >= 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

void weft__uring_close(void)
{
    for (int32_t i = 0; i < nrings; i++) {
        /* Parked coroutines are abandoned at the end: nothing may write
         * into their stacks once those are freed. */
        if (rings[i] != NULL)
            synccancel(rings[i]->fd, 0,
                       IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
        ringfree(rings[i]);
    }
    free(rings);
    rings = NULL;
    nrings = 0;
    weft__uring_on = false;
}

/* weft__uring_init - a ring per P, each registered in epfd with event
 * data tag | P id; all or none (then weft__uring_on stays false). */
void weft__uring_init(int epfd, uint64_t tag)
{
    weft__uring_on = false;
    if (weft__debug.nouring || weft__vg_on)
        return;
    rings = calloc((size_t)weft__gomaxprocs, sizeof *rings);
    if (rings == NULL)
        return;
    nrings = weft__gomaxprocs;
    for (int32_t i = 0; i < nrings; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag | (uint64_t)i};
        if ((rings[i] = ringnew()) == NULL ||
            epoll_ctl(epfd, EPOLL_CTL_ADD, rings[i]->fd, &ev) < 0) {
            weft__uring_close();
            return;
        }
    }
    /* SYNC_CANCEL (6.0) is how deadlines and closes reach a request: a
     * kernel without it answers EINVAL, one with it ENOENT here. */
    if (synccancel(rings[0]->fd, UINT64_MAX, 0) != -ENOENT) {
        weft__uring_close();
        return;
    }
    weft__uring_on = true;
}

/* expire - a request's deadline passed: cancel it, if it is still the
 * request gen (its CQE wakes the G). Timer context. */
static void expire(void *arg, uint64_t ud, int64_t now)
{
    (void)now;
    weft__uring_cancel(arg, (uint32_t)(ud >> 32), ud);
}

/* weft__uring_flush - hand pp's queued SQEs to the kernel (owner of pp,
 * on g0 or on a coroutine that has not queued its own yet). */
void weft__uring_flush(struct p *pp)
{
    struct uring *r = rings[pp->id];
    uint32_t n = pp->uringq;
    if (n == 0)
        return;
    uint32_t first = r->tail - n;
    uint32_t st[SQ_ENTRIES];
    for (uint32_t k = 0; k < n; k++) {
        struct pdu *d = r->queued[k];
        uint32_t s = LOAD(&d->st); /* QUEUED, maybe CANCEL: ours to move */
        for (;;) {
            uint32_t to = (s & ~(uint32_t)U_STATE) | U_SUBMITTING;
            if (s & U_CANCEL)
                to |= U_NOP;
            else if (d->deadline != WEFT_FOREVER) /* invariant 5 */
                to |= U_ARMING;
            if (atomic_compare_exchange_strong(&d->st, &s, to)) {
                st[k] = to;
                break;
            }
        }
        if (!(st[k] & U_NOP))
            continue;
        /* Cancelled while queued (invariant 3): a NOP completes it. */
        struct io_uring_sqe *sqe = &r->sqes[(first + k) & r->sqmask];
        uint64_t ud = sqe->user_data;
        memset(sqe, 0, sizeof *sqe);
        sqe->opcode = IORING_OP_NOP;
        sqe->user_data = ud;
    }
    __atomic_store_n(r->sqtail, r->tail, __ATOMIC_RELEASE);
    for (;;) {
        uint32_t left = r->tail - __atomic_load_n(r->sqhead, __ATOMIC_ACQUIRE);
        if (left == 0)
            break;
        int k = enter(r->fd, left, 0);
        if (k > 0 || k == -EINTR)
            continue;
        if (k == 0 || k == -EAGAIN || k == -EBUSY) {
            /* Out of kernel memory or completions backed up: make room
             * and let someone reap. */
            struct g *list = weft__uring_reap(pp->id, NULL);
            if (list != NULL)
                weft__netpoll_inject(list);
            sched_yield();
            continue;
        }
        weft__throw("weft: io_uring_enter failed");
    }
    for (uint32_t k = 0; k < n; k++) {
        struct pdu *d = r->queued[k];
        uint32_t s = st[k];
        /* A CQE may have made it DONE already; a canceller marks only a
         * request that is not SUBMITTING, so s is still exact if not. */
        bool waits = atomic_compare_exchange_strong(
            &d->st, &s, (s & ~(uint32_t)U_STATE) | U_INFLIGHT);
        if (!(st[k] & U_ARMING))
            continue;
        /* It waits: now its deadline needs a timer (invariant 5). */
        if (waits)
            weft__timer_add(pp, &d->tm, d->deadline, expire, d, d->ud);
        atomic_fetch_and(&d->st, ~(uint32_t)U_ARMING);
    }
    pp->uringq = 0;
}

/* weft__uring_sqe - a zeroed SQE on pp's ring for d's request (owner of
 * pp), queued until the next flush; d->st must be U_QUEUED. */
struct io_uring_sqe *weft__uring_sqe(struct p *pp, struct pdu *d)
{
    struct uring *r = rings[pp->id];
    if (pp->uringq == SQ_ENTRIES ||
        r->tail - __atomic_load_n(r->sqhead, __ATOMIC_ACQUIRE) >= SQ_ENTRIES)
        weft__uring_flush(pp);
    struct io_uring_sqe *sqe = &r->sqes[r->tail & r->sqmask];
    memset(sqe, 0, sizeof *sqe);
    r->queued[pp->uringq++] = d;
    r->tail++;
    STORE(&d->ring, pp->id);
    return sqe;
}

/* weft__uring_reap - take ring i's completions (if no one else is):
 * the Gs they ready are pushed on list, which is returned. */
struct g *weft__uring_reap(int32_t i, struct g *list)
{
    struct uring *r = rings[i];
    if (LOAD(r->cqtail) == LOAD(r->cqhead) &&
        !(LOAD(r->sqflags) & IORING_SQ_CQ_OVERFLOW))
        return list;
    bool f = false;
    if (!atomic_compare_exchange_strong(&r->reaping, &f, true))
        return list;
    for (;;) {
        uint32_t head = LOAD(r->cqhead);
        uint32_t tail = __atomic_load_n(r->cqtail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            struct io_uring_cqe *c = &r->cqes[head & r->cqmask];
            weft__pd_ucomplete(c->user_data, c->res, &list);
        }
        __atomic_store_n(r->cqhead, head, __ATOMIC_RELEASE);
        /* The kernel keeps what did not fit; it moves it in on an enter
         * with GETEVENTS. */
        if (!(LOAD(r->sqflags) & IORING_SQ_CQ_OVERFLOW))
            break;
        enter(r->fd, 0, IORING_ENTER_GETEVENTS);
    }
    STORE(&r->reaping, false);
    return list;
}

struct g *weft__uring_reapall(struct g *list)
{
    for (int32_t i = 0; i < nrings; i++)
        list = weft__uring_reap(i, list);
    return list;
}

/* weft__uring_cancel - d's request number gen, if the kernel has it, is
 * cancelled; its CQE still comes (invariant 3). Any thread. */
void weft__uring_cancel(struct pdu *d, uint32_t gen, uint64_t ud)
{
    for (;;) {
        uint32_t s = LOAD(&d->st);
        if (s >> U_GEN != gen || (s & U_CANCEL) ||
            (s & U_STATE) == U_DONE || (s & U_STATE) == U_IDLE)
            return;
        if ((s & U_STATE) == U_SUBMITTING) {
            sched_yield(); /* its M is inside io_uring_enter */
            continue;
        }
        if (!atomic_compare_exchange_strong(&d->st, &s, s | U_CANCEL))
            continue;
        if ((s & U_STATE) == U_INFLIGHT)
            synccancel(rings[LOAD(&d->ring)]->fd, ud, 0);
        return;
    }
}
