/*
 * fd.c - poll descriptors: what weft knows about each fd it waits on
 * (Go's pollDesc, runtime/netpoll.go), and the waits every fd call in
 * net.c parks in: for readiness (weft__pd_wait; netpoll_epoll.c reports
 * it through weft__pd_netready) and for an io_uring request's completion
 * (weft__pd_uio; uring.c reports CQEs through weft__pd_ucomplete).
 *
 * Each fd number has one pd, in a two-level table indexed by the number;
 * pds are never freed while the runtime lives, so a late event or a
 * racing close never touches freed memory. A pd holds:
 *
 *  rg, wg  the reader's and the writer's wait word, lock-free:
 *            PD_NIL    nobody waits, no readiness noted
 *            PD_READY  readiness arrived while nobody was parked
 *            PD_WAIT   a waiter is on its way to parking
 *            token     a parked waiter: (its G's registry index + 1) << 32
 *                      | the low 32 bits of its wait seq (park.c); the
 *                      + 1 keeps every token above PD_WAIT
 *  seq     the generation: bumped when the fd is adopted and when it is
 *          closed. The backend registers the fd with fd | seq << 32 as
 *          its event data, so an event from an earlier life of the same
 *          number is dropped.
 *  open    whether the current generation is registered.
 *  drained (stream sockets weft created) the G whose last read on the fd
 *          came back short (registry index + 1), or 0; see net.c.
 *  hup     the backend saw the peer hang up in this generation (set
 *          before the wake-up it comes with): net.c's short-read rule
 *          is off from then on.
 *
 * Invariants:
 *  1. A waiter moves its word NIL -> WAIT, checks the generation, parks,
 *     and in its park commit (after its context is saved) arms its
 *     deadline and publishes WAIT -> token. Every waker (I/O, close)
 *     swaps the word to READY and, if it took a token, claims the wait
 *     with weft__wait_claim_g; only the claim's winner readies the G.
 *     The deadline timer claims through park.c as for any other wait.
 *  2. If the commit finds READY instead of WAIT, a waker came between
 *     the check and the park: the G claims its own wait and does not
 *     sleep (if the timer claimed it first, the timer readies it).
 *  3. A woken waiter clears its word (token or READY -> NIL) and retries
 *     its system call, so a spurious wake-up costs one EAGAIN, never a
 *     wrong result. A waiter that gives up without the retry (timed
 *     out) leaves a READY in place for the next call. That is also why
 *     an event racing with a close and a reuse of the same number can at
 *     worst wake a waiter of the new fd for nothing.
 *  4. A waiter that finds the generation changed (the fd was weft_close'd,
 *     maybe reopened) returns WEFT_ECLOSED; close bumps seq before it
 *     swaps the words, so the waiter either sees the new seq or is woken.
 *  5. open/close of a pd take pd->lock (never held across a park); the
 *     wait and the wake paths take no lock.
 *  6. With io_uring on, a stream socket weft made is registered with
 *     epoll only when something first waits for its readiness (pollreg:
 *     connect, weft_fd_wait); its reads and writes never do.
 *  7. An io_uring request (weft__pd_uio) has one waker, its CQE, through
 *     the direction's tok word as invariant 1 has the fd words: the G
 *     publishes its token in its park commit, the completion swaps in
 *     UTOK_DONE and claims the token it took. Its deadline's timer and
 *     weft_close cancel it (uring.c invariants 3 and 5); either way the
 *     G returns only after the CQE: the kernel may be writing into the
 *     caller's buffer until then.
 *     A request that completed before its cancel keeps its result (a
 *     read's bytes are not lost), unless the fd was closed.
 *
 * Rejected: a lock per pd around the waits (simpler, but two atomic
 * read-modify-writes more per wake-up on the server hot path), and
 * storing G pointers in the words (a waker then cannot tell which wait of
 * the G it is waking once the G has timed out and waits again).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

#define PD_NIL ((uint64_t)0)
#define PD_READY ((uint64_t)1)
#define PD_WAIT ((uint64_t)2)

#define PD_BLOCK 1024
#define PD_TOP 4096 /* fds below 4M; the kernel's nr_open cap is 1M */

static struct pd *_Atomic pdtab[PD_TOP];
static wlock tablock;
static _Atomic int32_t nwaiters; /* Gs parked (or about to) on an fd */

/* pdlookup - fd's pd, or NULL if its block was never allocated. */
static inline struct pd *pdlookup(int fd)
{
    if ((unsigned)fd >= (unsigned)PD_TOP * PD_BLOCK)
        return NULL;
    struct pd *blk = __atomic_load_n(&pdtab[fd / PD_BLOCK], __ATOMIC_ACQUIRE);
    return blk ? &blk[fd % PD_BLOCK] : NULL;
}

static struct pd *pdget(int fd)
{
    struct pd *pd = pdlookup(fd);
    if (pd != NULL || fd < 0 || fd >= PD_TOP * PD_BLOCK)
        return pd;
    weft__lock(&tablock);
    struct pd *blk = LOAD(&pdtab[fd / PD_BLOCK]);
    if (blk == NULL) {
        blk = calloc(PD_BLOCK, sizeof *blk);
        if (blk != NULL)
            __atomic_store_n(&pdtab[fd / PD_BLOCK], blk, __ATOMIC_RELEASE);
    }
    weft__unlock(&tablock);
    return blk ? &blk[fd % PD_BLOCK] : NULL;
}

bool weft__netpoll_waiters(void)
{
    return LOAD(&nwaiters) > 0;
}

int32_t weft__netpoll_nwaiters(void)
{
    return LOAD(&nwaiters);
}

static struct rlimit oldnofile;
static bool nofileraised;

/* weft__pd_init - raise the soft fd limit to the hard one for the
 * runtime's life, as Go 1.19 does at start-up: a server of coroutines
 * holds an fd per connection, and 1024 is the usual soft default. */
void weft__pd_init(void)
{
    struct rlimit rl;
    nofileraised = false;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        oldnofile = rl;
        rl.rlim_cur = rl.rlim_max;
        nofileraised = setrlimit(RLIMIT_NOFILE, &rl) == 0;
    }
}

/* A new runtime starts with no fd known (its epoll instance is new). */
void weft__pd_fini(void)
{
    /* Back to the program's own limit, unless it changed it meanwhile
     * (then it knows what it wants). */
    struct rlimit rl;
    if (nofileraised && getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        rl.rlim_cur == oldnofile.rlim_max && rl.rlim_max == oldnofile.rlim_max)
        setrlimit(RLIMIT_NOFILE, &oldnofile);
    nofileraised = false;
    for (int i = 0; i < PD_TOP; i++) {
        free(LOAD(&pdtab[i]));
        STORE(&pdtab[i], NULL);
    }
    STORE(&nwaiters, 0);
}

/* weft__pd_adopt - fd's pd, registering the fd with the poller first if
 * this generation has not been. how: PD_ADOPT (an fd from elsewhere: set
 * O_NONBLOCK), PD_NEW (weft just made it non-blocking), PD_NEWSTREAM (and
 * it is a stream socket, see pd.stream). *seqp gets the
 * generation. Returns 0, WEFT_EBADF (also for an fd beyond the table),
 * WEFT_EPERM (epoll cannot wait on it: a regular file), WEFT_ENOMEM. */
int weft__pd_adopt(int fd, struct pd **pdp, uint32_t *seqp, uintptr_t pc,
                   int how)
{
    if (fd < 0)
        return WEFT_EBADF;
    struct pd *pd = pdget(fd);
    if (pd == NULL) /* beyond any fd the kernel hands out, or no memory */
        return fd >= PD_TOP * PD_BLOCK ? WEFT_EBADF : WEFT_ENOMEM;
    *pdp = pd;
    if (likely(__atomic_load_n(&pd->open, __ATOMIC_ACQUIRE))) {
        *seqp = __atomic_load_n(&pd->seq, __ATOMIC_ACQUIRE);
        return 0;
    }
    int err = 0;
    weft__lock(&pd->lock);
    if (!LOAD(&pd->open)) {
        int fl = how == PD_ADOPT ? fcntl(fd, F_GETFL) : O_NONBLOCK;
        if (fl < 0) {
            err = -errno;
        } else if (!(fl & O_NONBLOCK) &&
                   fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            err = -errno;
        } else {
            uint32_t seq = LOAD(&pd->seq) + 1;
            STORE(&pd->rg, PD_NIL);
            STORE(&pd->wg, PD_NIL);
            STORE(&pd->drained, 0);
            STORE(&pd->hup, false);
            pd->stream = how == PD_NEWSTREAM;
            STORE(&pd->seq, seq);
            /* A stream whose reads and writes go through io_uring is
             * registered only if something waits for its readiness
             * (pollreg): otherwise every arrival of data would also run
             * epoll's callback, and wake a sleeping poller for nothing. */
            bool lazy = pd->stream && weft__uring_on;
            STORE(&pd->polled, !lazy);
            if (!lazy)
                err = weft__netpoll_open(fd, (uint64_t)(uint32_t)fd |
                                                 (uint64_t)seq << 32);
            if (err == 0) {
                struct g *gp = weft__getg();
                pd->openerid = gp ? gp->id : 0;
                pd->openpc = pc;
                pd->openedat = weft__nanotime();
                __atomic_store_n(&pd->open, true, __ATOMIC_RELEASE);
            }
        }
    }
    *seqp = LOAD(&pd->seq);
    weft__unlock(&pd->lock);
    return err;
}

/* gtoken - the token naming gp's wait wseq in a wait word. */
static inline uint64_t gtoken(struct g *gp, uint64_t wseq)
{
    return ((uint64_t)gp->idx + 1) << 32 | (uint32_t)wseq;
}

/* claimtoken - claim the wait named by token t (invariants 1 and 7);
 * the G, if won, goes on *list (through schedlink). */
static void claimtoken(uint64_t t, struct g **list)
{
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    struct g *gp = weft__allg(chunks, (size_t)(t >> 32) - 1);
    if (weft__wait_claim_g(gp, (uint32_t)t)) {
        gp->schedlink = *list;
        *list = gp;
    }
}

/* waitcheck - a waiter's check once its word is taken: WEFT_ECLOSED if
 * pd's generation is no longer seq (seq-cst: pairs with close's bump,
 * invariant 4), WEFT_ETIMEDOUT if the deadline passed, else 0. */
static int waitcheck(struct pd *pd, uint32_t seq, int64_t deadline)
{
    if (atomic_load(&pd->seq) != seq)
        return WEFT_ECLOSED;
    if (deadline != WEFT_FOREVER && deadline <= weft__nanotime())
        return WEFT_ETIMEDOUT;
    return 0;
}

/* wake - a waker's half of invariant 1 on word w; a claimed G goes on
 * *list (through schedlink). */
static void wake(_Atomic uint64_t *w, struct g **list)
{
    uint64_t old = LOAD(w);
    do {
        if (old == PD_READY)
            return;
    } while (!atomic_compare_exchange_weak(w, &old, PD_READY));
    if (old > PD_WAIT)
        claimtoken(old, list);
}

/* weft__pd_netready - the backend's report: the fd registered with data
 * is ready to read (r) and/or write (w), hup: the peer hung up. Claimed
 * Gs are pushed on *list. */
void weft__pd_netready(uint64_t data, bool r, bool w, bool hup,
                       struct g **list)
{
    struct pd *pd = pdlookup((int)(uint32_t)data);
    if (pd == NULL || LOAD(&pd->seq) != (uint32_t)(data >> 32))
        return;
    /* Before the wake: the reader it wakes must see it (net.c). */
    if (hup)
        atomic_store(&pd->hup, true);
    if (r)
        wake(&pd->rg, list);
    if (w)
        wake(&pd->wg, list);
}

struct pdpark {
    _Atomic uint64_t *w[2];
    int nw;
    uint64_t token;
    int64_t deadline;
};

/* commit - the G's half of invariants 1 and 2, after its switch. */
static bool commit(struct g *gp, void *argp)
{
    struct pdpark pa = *(struct pdpark *)argp; /* on gp's stack: copy */
    weft__wait_arm(gp, pa.deadline);
    bool raced = false;
    for (int i = 0; i < pa.nw; i++) {
        uint64_t want = PD_WAIT;
        if (!atomic_compare_exchange_strong(pa.w[i], &want, pa.token))
            raced = true;
    }
    if (!raced)
        return true;
    /* A waker came first: do not sleep, unless the timer has already
     * claimed (and so readies) the G. */
    return !weft__wait_claim_g(gp, (uint32_t)pa.token);
}

/* clearword - after the wait: drop our token, and a WAIT we never
 * published. A READY goes too if retry: the caller retries its call,
 * which takes the readiness (invariant 3). A wait that ends without a
 * retry (timed out, or past its deadline before it parked) leaves it:
 * it came after the timeout, and a reader whose last read was short
 * parks before it reads (net.c invariant 5), so a READY cleared here
 * left data unread until the next edge (test read_deadline_races_data,
 * TSan, on epoll). */
static void clearword(_Atomic uint64_t *w, uint64_t token, bool retry)
{
    uint64_t v = LOAD(w);
    if (v == token || v == PD_WAIT || (retry && v == PD_READY))
        atomic_compare_exchange_strong(w, &v, PD_NIL);
}

/* weft__pd_wait - park until pd (fd's, generation seq) is ready for
 * mode (WEFT_READ and/or WEFT_WRITE) or deadline passes. Returns 0 (retry
 * the call), WEFT_ETIMEDOUT, WEFT_ECLOSED, WEFT_EBUSY (another G waits on
 * that direction). fd is only for dumps ("IO wait, fd N"). */
/* pollreg - register pd's fd (generation seq) with epoll if adopt left
 * that for later. */
static int pollreg(struct pd *pd, int fd, uint32_t seq)
{
    if (likely(__atomic_load_n(&pd->polled, __ATOMIC_ACQUIRE)))
        return 0;
    int err = 0;
    weft__lock(&pd->lock);
    if (LOAD(&pd->seq) != seq || !LOAD(&pd->open))
        err = WEFT_ECLOSED;
    else if (!LOAD(&pd->polled) &&
             (err = weft__netpoll_open(fd, (uint64_t)(uint32_t)fd |
                                               (uint64_t)seq << 32)) == 0)
        __atomic_store_n(&pd->polled, true, __ATOMIC_RELEASE);
    weft__unlock(&pd->lock);
    return err;
}

int weft__pd_wait(struct pd *pd, int fd, uint32_t seq, int mode,
                  int64_t deadline)
{
    int err = pollreg(pd, fd, seq);
    if (err < 0)
        return err;
    struct pdpark pa = {.nw = 0, .deadline = deadline};
    if (mode & WEFT_READ)
        pa.w[pa.nw++] = &pd->rg;
    if (mode & WEFT_WRITE)
        pa.w[pa.nw++] = &pd->wg;
    for (int i = 0; i < pa.nw; i++) {
        uint64_t old = LOAD(pa.w[i]);
        for (;;) {
            if (old == PD_READY) {
                if (atomic_compare_exchange_weak(pa.w[i], &old, PD_NIL)) {
                    for (int j = 0; j < i; j++)
                        clearword(pa.w[j], PD_WAIT, true);
                    return 0;
                }
                continue;
            }
            if (old != PD_NIL) {
                for (int j = 0; j < i; j++)
                    clearword(pa.w[j], PD_WAIT, false);
                return WEFT_EBUSY;
            }
            if (atomic_compare_exchange_weak(pa.w[i], &old, PD_WAIT))
                break;
        }
    }
    /* After the WAIT stores (invariant 4). */
    int rc = waitcheck(pd, seq, deadline);
    if (rc != 0) {
        for (int i = 0; i < pa.nw; i++)
            clearword(pa.w[i], PD_WAIT, false);
        return rc;
    }
    struct g *gp = weft__getg();
    pa.token = gtoken(gp, weft__wait_prepare(gp));
    __atomic_store_n(&gp->waitfd, fd, __ATOMIC_RELAXED);
    atomic_fetch_add(&nwaiters, 1);
    weft__park(commit, &pa, WR_IO_WAIT);
    atomic_fetch_sub(&nwaiters, 1);
    bool timedout = (atomic_load(&gp->waitstate) & 3) == WS_TIMEDOUT;
    if (!timedout && deadline != WEFT_FOREVER)
        weft__timer_del(&gp->timer); /* a late firing fails its CAS */
    for (int i = 0; i < pa.nw; i++)
        clearword(pa.w[i], pa.token, !timedout);
    if (atomic_load(&pd->seq) != seq)
        return WEFT_ECLOSED;
    return timedout ? WEFT_ETIMEDOUT : 0;
}

/* ------------------------------------------------------- io_uring */

/* udata - the user_data of fd's request gen in direction dir: its CQE
 * finds the pd by number, and checks gen. */
static inline uint64_t udata(int fd, int dir, uint32_t gen)
{
    return (uint64_t)gen << 32 | (uint64_t)(uint32_t)fd << 1 | (uint64_t)dir;
}

struct upark {
    _Atomic uint64_t *tok;
    uint64_t token;
};

/* ucommit - the G's half of invariant 7, after its switch. */
static bool ucommit(struct g *gp, void *argp)
{
    struct upark pa = *(struct upark *)argp; /* on gp's stack: copy */
    uint64_t zero = 0;
    if (atomic_compare_exchange_strong(pa.tok, &zero, pa.token))
        return true;
    /* The CQE came first: do not sleep. */
    return !weft__wait_claim_g(gp, (uint32_t)pa.token);
}

/* weft__pd_uio - do io on pd (fd's, generation seq) through the P's
 * io_uring, parked until its CQE (invariant 7): dir 0 reads, 1 writes.
 * Returns the CQE's result (bytes or -errno), WEFT_ETIMEDOUT,
 * WEFT_ECLOSED, WEFT_EBUSY (another G does io that way on fd). */
int32_t weft__pd_uio(struct pd *pd, int fd, uint32_t seq, int dir,
                     const struct uio *io, int64_t deadline)
{
    struct pdu *d = &pd->u[dir];
    uint32_t s = LOAD(&d->st), gen;
    for (;;) {
        if ((s & U_STATE) != U_IDLE) {
            if (LOAD(&d->seq) == seq)
                return WEFT_EBUSY;
            /* The request of an earlier life of this number, cancelled
             * by its close, has not seen its CQE yet: a moment. Sleep,
             * not yield: the CQE is taken when some P runs dry. */
            weft_sleep(10000); /* 10 us */
            if (atomic_load(&pd->seq) != seq)
                return WEFT_ECLOSED;
            s = LOAD(&d->st);
            continue;
        }
        gen = (s >> U_GEN) + 1;
        if (atomic_compare_exchange_weak(&d->st, &s, gen << U_GEN | U_QUEUED))
            break;
    }
    STORE(&d->seq, seq);
    STORE(&d->tok, 0);
    /* After QUEUED: close reads the state after its bump. */
    int32_t rc = waitcheck(pd, seq, deadline);
    if (rc != 0) {
        atomic_store(&d->st, gen << U_GEN | U_IDLE);
        return rc;
    }
    d->ud = udata(fd, dir, gen);
    d->deadline = deadline;
    struct io_uring_sqe *sqe = weft__uring_sqe(weft__getm()->p, d);
    sqe->opcode = io->op;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)io->addr;
    sqe->len = io->len;
    sqe->msg_flags = io->flags;
    sqe->user_data = d->ud;
    /* The last read came back short: the queue was empty then, and most
     * likely still is, so skip the recv that would fail and arm the poll
     * at once: -2.5% kernel cycles per request on examples/echo. */
    if (d->drained && io->op == IORING_OP_RECV)
        sqe->ioprio = IORING_RECVSEND_POLL_FIRST;

    struct g *gp = weft__getg();
    __atomic_store_n(&gp->waitfd, fd, __ATOMIC_RELAXED);
    atomic_fetch_add(&nwaiters, 1);
    struct upark pa = {&d->tok, gtoken(gp, weft__wait_prepare(gp))};
    weft__park(ucommit, &pa, WR_IO_WAIT);
    atomic_fetch_sub(&nwaiters, 1);
    if (atomic_load(&d->tok) != UTOK_DONE) /* its CQE is the only waker */
        weft__throw("weft: io_uring wait woken before its completion");
    s = atomic_load(&d->st);
    if (deadline != WEFT_FOREVER) { /* uring.c invariant 5 */
        while (s & U_ARMING) { /* its sender is a few instructions on */
            weft_yield();
            s = atomic_load(&d->st);
        }
        weft__timer_del(&d->tm);
    }
    int32_t res = d->res;
    d->drained = io->op == IORING_OP_RECV && res > 0 && (uint32_t)res < io->len;
    /* Release: the next owner of the direction sees res read. */
    __atomic_store_n(&d->st, gen << U_GEN | U_IDLE, __ATOMIC_RELEASE);
    bool closed = atomic_load(&pd->seq) != seq;
    if (closed && ((s & U_NOP) || res < 0))
        return WEFT_ECLOSED;
    if ((s & U_CANCEL) && res == -ECANCELED) /* by its deadline */
        return WEFT_ETIMEDOUT;
    return res;
}

/* weft__pd_ucomplete - uring.c's report of a CQE (user_data ud, result
 * res): the request is DONE, its G, if parked, goes on *list. */
void weft__pd_ucomplete(uint64_t ud, int32_t res, struct g **list)
{
    struct pd *pd = pdlookup((int)((uint32_t)ud >> 1));
    if (pd == NULL)
        return;
    struct pdu *d = &pd->u[ud & 1];
    uint32_t s = LOAD(&d->st);
    do {
        if (s >> U_GEN != (uint32_t)(ud >> 32) ||
            (s & U_STATE) == U_IDLE || (s & U_STATE) == U_DONE)
            return; /* cannot happen: one CQE per request */
    } while (!atomic_compare_exchange_weak(
        &d->st, &s, (s & ~(uint32_t)U_STATE) | U_DONE));
    d->res = res;
    uint64_t t = atomic_exchange(&d->tok, UTOK_DONE);
    if (t > UTOK_DONE)
        claimtoken(t, list);
}

/* weft__pd_busy - whether another G waits on pd in a direction of mode
 * (racy: weft_fd_wait's early answer; weft__pd_wait decides for real). */
bool weft__pd_busy(struct pd *pd, int mode)
{
    return ((mode & WEFT_READ) && LOAD(&pd->rg) >= PD_WAIT) ||
           ((mode & WEFT_WRITE) && LOAD(&pd->wg) >= PD_WAIT);
}

/* waiterid - the id of the G parked on word w, 0 if none (racy: a G
 * descriptor is never freed, so at worst the id is a moment stale). */
__attribute__((no_sanitize("thread"))) static int64_t
waiterid(_Atomic uint64_t *w)
{
    uint64_t t = LOAD(w);
    if (t <= PD_WAIT)
        return 0;
    size_t idx = (size_t)(t >> 32) - 1;
    if (idx >= __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE))
        return 0;
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    /* By hand, as schedtrace.c: an out-of-line weft__allg (-O0) is
     * instrumented, and TSan cannot see the acquire of allglen above. */
    return chunks != NULL ? chunks[idx / ALLG_CHUNK][idx % ALLG_CHUNK].id
                          : 0;
}

long weft__fds(struct fdinfo **out)
{
    size_t n = 0, cap = 0;
    struct fdinfo *v = NULL;
    for (int b = 0; b < PD_TOP; b++) {
        struct pd *blk = __atomic_load_n(&pdtab[b], __ATOMIC_ACQUIRE);
        for (int i = 0; blk != NULL && i < PD_BLOCK; i++) {
            struct pd *pd = &blk[i];
            if (!__atomic_load_n(&pd->open, __ATOMIC_ACQUIRE))
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                struct fdinfo *nv = realloc(v, cap * sizeof *v);
                if (nv == NULL) {
                    free(v);
                    return WEFT_ENOMEM;
                }
                v = nv;
            }
            /* Under the lock: adopt writes the opener fields under it. */
            weft__lock(&pd->lock);
            if (LOAD(&pd->open))
                v[n++] = (struct fdinfo){
                    .fd = b * PD_BLOCK + i,
                    .openerid = pd->openerid,
                    .openpc = pd->openpc,
                    .openedat = pd->openedat,
                    .readerid = waiterid(&pd->rg)
                                    ?: waiterid(&pd->u[0].tok),
                    .writerid = waiterid(&pd->wg)
                                    ?: waiterid(&pd->u[1].tok),
                };
            weft__unlock(&pd->lock);
        }
    }
    *out = v;
    return (long)n;
}

/* weft__pd_close - end fd's generation: waiters get WEFT_ECLOSED, later
 * events of this generation are dropped. Returns whether fd was open. */
bool weft__pd_close(int fd)
{
    struct pd *pd = pdlookup(fd);
    if (pd == NULL || !__atomic_load_n(&pd->open, __ATOMIC_ACQUIRE))
        return false;
    weft__lock(&pd->lock);
    bool was = LOAD(&pd->open);
    struct g *list = NULL;
    if (was) {
        STORE(&pd->open, false);
        atomic_fetch_add(&pd->seq, 1); /* seq-cst: invariant 4 */
        wake(&pd->rg, &list);
        wake(&pd->wg, &list);
        if (LOAD(&pd->polled))
            weft__netpoll_disarm(fd);
        STORE(&pd->polled, false);
    }
    weft__unlock(&pd->lock);
    /* io_uring requests of this generation end with their CQE (invariant
     * 7), so before the number can be reused. A request under way is of
     * this generation or an earlier one already cancelled (cancelling
     * that again does nothing): no newer one can exist yet. */
    for (int dir = 0; was && dir < 2; dir++) {
        struct pdu *d = &pd->u[dir];
        uint32_t s = atomic_load(&d->st); /* seq-cst: after the bump */
        uint32_t st = s & U_STATE;
        if (st != U_IDLE && st != U_DONE)
            weft__uring_cancel(d, s >> U_GEN, udata(fd, dir, s >> U_GEN));
    }
    while (list != NULL) {
        struct g *gp = list;
        list = gp->schedlink;
        weft__ready_any(gp);
    }
    return was;
}
