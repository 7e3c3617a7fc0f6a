/*
 * weft.h - the whole public API of weft, Go's runtime for C.
 *
 * A program starts the runtime with weft_main(), which runs its function as
 * coroutine 1 on a pool of OS threads ("Ms") holding processors ("Ps", one
 * per CPU unless WEFTMAXPROCS says otherwise). Coroutines ("Gs") are cheap:
 * spawn thousands, block them on timers (and, with later modules, channels,
 * mutexes and sockets); the scheduler keeps every P busy.
 *
 * Conventions, for every function below:
 *  - Fallible calls return int (or int64_t/ssize_t): >= 0 is success, < 0 is
 *    a negative errno code (WEFT_EINVAL == -EINVAL ...) or a weft-only code
 *    at -4000 and below. weft never reports through errno: a coroutine can
 *    resume on another thread, and glibc lets the compiler cache errno's
 *    thread-local address across calls, so errno read after a blocking weft
 *    call may be another thread's.
 *  - Time is int64_t nanoseconds on the monotonic clock (weft_now()).
 *    Every blocking call has a deadline twin (_until / _dl); WEFT_FOREVER
 *    means no deadline.
 *  - "Blocks" means parks the calling coroutine; its thread goes on running
 *    other coroutines. Nothing here blocks a thread except where it says so.
 *  - Thread-local variables are per thread, not per coroutine: do not keep
 *    a pointer to one across a call that may block or yield.
 *
 * Environment, read once by weft_main():
 *  WEFTMAXPROCS=N  number of Ps (1..WEFT_MAXPROCS_LIMIT); default: the CPUs
 *                  this process may run on. A bad value prints one warning
 *                  line on stderr and the default is used.
 *  WEFTDEBUG=k=v,... comma-separated settings, as Go's GODEBUG:
 *                  schedtrace=MS   Go's "SCHED ..." line on stderr every MS
 *                  scheddetail=1   with it, a line per P, M and coroutine
 *                  sigquitdump=continue  SIGQUIT prints the dump and the
 *                                  program runs on (default: exit 2)
 *                  An unknown key or bad value prints one warning line
 *                  and is ignored.
 *  WEFTTRACEBACK=  what a fatal error (fault, stack overflow, deadlock,
 *                  internal error) prints, as Go's GOTRACEBACK: none,
 *                  single (default: the failing coroutine), all (every
 *                  coroutine), system (and weft's own frames, fp/sp/pc),
 *                  crash (as system, then abort() for a core dump). 0, 1,
 *                  2 mean none, all, system.
 *
 * While the runtime runs, as in a Go program: the soft RLIMIT_NOFILE is
 * raised to the hard limit (one fd per connection adds up), and SIGPIPE
 * is ignored unless the program set its own disposition. weft handles
 * SIGQUIT (Ctrl+\: the traceback of every coroutine, then exit status 2;
 * left alone if the program installed a handler), SIGSEGV, SIGBUS,
 * SIGFPE, SIGILL and SIGABRT on its threads (a fatal-error report; faults
 * elsewhere go to the previous handler), and uses SIGURG to stop threads
 * briefly while a dump reads their stacks (a SIGURG handler the program
 * had is still called for other SIGURGs; a raw blocking system call in a
 * coroutine may see EINTR then, as in Go). All are put back when
 * weft_main returns.
 */
#ifndef WEFT_H
#define WEFT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct addrinfo;

#ifdef __cplusplus
extern "C" {
#endif

#if defined(WEFT_BUILDING) && defined(__GNUC__)
#define WEFT_EXTERN __attribute__((visibility("default")))
#else
#define WEFT_EXTERN
#endif

/* ---------------------------------------------------------------- errors */

#define WEFT_EPERM (-EPERM)
#define WEFT_EINVAL (-EINVAL)
#define WEFT_ENOMEM (-ENOMEM)
#define WEFT_EAGAIN (-EAGAIN)
#define WEFT_EBUSY (-EBUSY)
#define WEFT_ETIMEDOUT (-ETIMEDOUT)
#define WEFT_ECANCELED (-ECANCELED)
#define WEFT_EDEADLK (-EDEADLK)
#define WEFT_ENOENT (-ENOENT)
/* The call must be made from a weft coroutine, and was not. */
#define WEFT_ENOTCORO (-4001)
/* The runtime is not running (weft_main() has not started or has ended). */
#define WEFT_ENORUNTIME (-4002)
/* Closed: a send or close on a closed channel, a receive on a closed and
 * drained one, or a wait on an fd that weft_close() closed meanwhile. */
#define WEFT_ECLOSED (-4003)
/* A name did not resolve (weft_getaddrinfo, weft_dial): no such host or
 * service. */
#define WEFT_ENONAME (-4004)
/* I/O errors keep their errno: WEFT_EBADF (not an open fd), and the
 * kernel's own, e.g. -ECONNRESET, -EPIPE, -ECONNREFUSED, -EMFILE. */
#define WEFT_EBADF (-EBADF)

/*
 * weft_strerror - a one-line English description of err (a negative code).
 * weft_err_name - the code's name, "WEFT_EINVAL" style.
 * Both return static strings, never NULL; unknown codes give "unknown error"
 * and "WEFT_EUNKNOWN". Safe from any thread, never blocks.
 */
WEFT_EXTERN const char *weft_strerror(int err);
WEFT_EXTERN const char *weft_err_name(int err);

/* ------------------------------------------------------------- lifecycle */

#define WEFT_FOREVER INT64_MAX
#define WEFT_MAXPROCS_LIMIT 1024

typedef int (*weft_main_fn)(void *arg);
typedef void (*weft_fn)(void *arg);

/*
 * weft_main - start the runtime, run fn(arg) as coroutine 1, and return its
 * result once fn has returned and the runtime is shut down.
 *
 * The calling thread does not run coroutines: it starts the runtime's
 * threads and sleeps until fn returns, so it can always come back, even
 * when every runtime thread is stuck in a system call. Shutdown then works
 * like a Go program's exit: coroutines still
 * parked are abandoned (their stacks are freed without running them), every
 * runtime thread is joined and all runtime memory is released, so the
 * process is valgrind-clean. Coroutines still running on another thread are
 * waited for until they reach a weft call or weft_checkpoint(). A thread
 * blocked inside weft_syscall_enter()/exit() cannot be waited for: it is
 * detached and, when its call returns, parks forever; its coroutine's
 * memory is deliberately not freed.
 *
 * weft_main may be called again after it returns (one runtime at a time).
 *
 * Returns fn's result, or WEFT_EINVAL (fn is NULL), WEFT_EBUSY (a runtime is
 * already running in this process), WEFT_ENOMEM/-errno (could not start:
 * threads, memory). Blocks the calling thread for the life of the runtime.
 */
WEFT_EXTERN int weft_main(weft_main_fn fn, void *arg);

/*
 * Deadlock detection. When every coroutine is parked with nothing that
 * could wake it (no timer, no I/O, no thread in a syscall), weft prints
 * "fatal error: all goroutines are asleep - deadlock!" and every coroutine,
 * and exits with status 2, as Go does. Threads outside the runtime that
 * wake coroutines (weft_chan_trysend, weft_sem_release ... from a plain
 * thread) are invisible to that check: such a thread holds a reference
 * with weft_external_ref() while it may still wake someone, and drops it
 * with weft_external_unref(). Once any outside thread has woken a
 * coroutine, weft also stops reporting deadlocks for the rest of the run.
 * Both return 0, or WEFT_ENORUNTIME / WEFT_EINVAL (unref without ref).
 * Any thread, never block.
 */
WEFT_EXTERN int weft_external_ref(void);
WEFT_EXTERN int weft_external_unref(void);

/* ------------------------------------------------------------ coroutines */

/* Options for weft_go_opts(); zero-initialise and set what you need. */
typedef struct weft_go_opts_t {
    /* Usable stack bytes; 0 means the default, 256 KiB. Rounded up to the
     * page size; must lie in [WEFT_STACK_MIN, WEFT_STACK_MAX]. Only touched
     * pages use memory. Overflowing it is reported as a stack overflow of
     * this coroutine and ends the process. */
    size_t stack_size;
    /* Shown in dumps; NULL for none. Copied; at most 31 bytes are kept. */
    const char *name;
} weft_go_opts_t;

#define WEFT_STACK_DEFAULT ((size_t)256 * 1024)
#define WEFT_STACK_MIN ((size_t)16 * 1024)
#define WEFT_STACK_MAX ((size_t)1024 * 1024 * 1024)

/*
 * weft_go - spawn fn(arg) as a new coroutine with default options.
 * weft_go_opts - the same with options (opts may be NULL).
 *
 * The new coroutine is runnable at once and usually runs next on this P
 * (the caller goes on first). When fn returns, the coroutine ends. A
 * caller whose P already has a full run queue (256) yields once after
 * spawning, so its children run and hand their stacks back before it
 * spawns more: a spawn loop never builds an unbounded backlog of stacks.
 * Returns the new coroutine's id (> 0, never reused), or WEFT_EINVAL (fn is
 * NULL, stack size out of range), WEFT_ENOMEM (no memory for its stack),
 * WEFT_ENOTCORO (not called from a coroutine). Does not block, but honours
 * a pending preemption request (see weft_checkpoint).
 */
WEFT_EXTERN int64_t weft_go(weft_fn fn, void *arg);
WEFT_EXTERN int64_t weft_go_opts(weft_fn fn, void *arg,
                                 const weft_go_opts_t *opts);

/*
 * weft_yield - let other runnable coroutines run; the caller is queued
 * behind them. Returns at once when nothing else is runnable.
 * Returns 0, or WEFT_ENOTCORO.
 */
WEFT_EXTERN int weft_yield(void);

/* weft_self - the calling coroutine's id, or 0 outside any coroutine. */
WEFT_EXTERN int64_t weft_self(void);

/* weft_procs - the number of Ps of the running runtime, 0 if none. */
WEFT_EXTERN int weft_procs(void);

/* ----------------------------------------------------------------- time */

/* weft_now - monotonic time in nanoseconds. Any thread, never blocks. */
WEFT_EXTERN int64_t weft_now(void);

/*
 * weft_sleep - park the calling coroutine for at least ns nanoseconds.
 * weft_sleep_until - park it until weft_now() >= deadline; WEFT_FOREVER
 * parks it for good (it is then only freed by shutdown).
 * A duration <= 0 or a deadline already past returns at once.
 * Returns 0, or WEFT_ENOTCORO. Blocks (wait reason "sleep").
 */
WEFT_EXTERN int weft_sleep(int64_t ns);
WEFT_EXTERN int weft_sleep_until(int64_t deadline);

/* ------------------------------------------------------------ preemption */

/*
 * Preemption is cooperative. sysmon flags a coroutine that has run for more
 * than 10 ms without giving its P back; the flag is honoured by the next
 * weft call it makes, or by weft_checkpoint(). Put weft_checkpoint() in long
 * CPU-bound loops: it is one load and a predictable branch while nobody is
 * flagged, and a function call only while some coroutine is.
 */
WEFT_EXTERN extern uint32_t weft__attention;
WEFT_EXTERN void weft__checkpoint_slow(void);

static inline void weft_checkpoint(void)
{
    if (__builtin_expect(__atomic_load_n(&weft__attention, __ATOMIC_RELAXED) != 0, 0))
        weft__checkpoint_slow();
}

/* --------------------------------------------------------- system calls */

/*
 * weft_syscall_enter / weft_syscall_exit - bracket a call that may block
 * the thread (a blocking read(), a slow library call). Between them the
 * coroutine's P may be handed to another thread (after 20 us, when there is
 * other work), so other coroutines keep running. Make no weft calls between
 * the two except weft_now(). Pairs must not nest.
 * Return 0, or WEFT_ENOTCORO, or WEFT_EINVAL (exit without enter, enter
 * twice). weft_syscall_exit may block until a P is free.
 */
WEFT_EXTERN int weft_syscall_enter(void);
WEFT_EXTERN int weft_syscall_exit(void);

/*
 * weft_blocking - run fn(arg) between weft_syscall_enter() and
 * weft_syscall_exit() and return its result. Outside a coroutine, fn is
 * simply called. fn must not be NULL (returns WEFT_EINVAL).
 */
WEFT_EXTERN intptr_t weft_blocking(intptr_t (*fn)(void *arg), void *arg);

/* -------------------------------------------------------------- channels */

/*
 * weft_chan_t - Go's channel: a FIFO of fixed-size elements, unbuffered
 * (cap 0: a send waits for a receiver) or buffered. Safe from any number
 * of coroutines on any threads.
 *
 * Lifetime: weft_chan_new() returns a channel holding one reference.
 * weft_chan_free() closes it if it is still open (waking every blocked
 * sender with WEFT_ECLOSED and every receiver, which drain the buffer
 * first) and drops that reference; coroutines blocked on the channel hold
 * references of their own, so the memory goes when the last of them has
 * returned. So freeing a channel others are blocked on is safe. As with
 * free(), calling weft_chan_free() while another thread may be just
 * starting an operation on the channel, or using the pointer after it,
 * is a use-after-free; weft catches it when it can (WEFT_EINVAL) but
 * cannot always. A NULL channel gets WEFT_EINVAL from every call (in weft_select a
 * NULL channel is a case that is never ready, as a nil channel in Go).
 */
typedef struct weft_chan weft_chan_t;

/* weft_chan_new - a channel of elements of elemsize bytes (1..65536) and
 * capacity cap (0..2^31). Returns 0 and *out, or WEFT_EINVAL, WEFT_ENOMEM.
 * Any thread. */
WEFT_EXTERN int weft_chan_new(weft_chan_t **out, size_t elemsize, size_t cap);
/* weft_chan_free - close (if open) and drop the creator's reference.
 * Returns 0 or WEFT_EINVAL. Never blocks. */
WEFT_EXTERN int weft_chan_free(weft_chan_t *c);

/*
 * weft_chan_send - copy *elem into the channel, blocking until a receiver
 * takes it or there is buffer room (wait reason "chan send").
 * Returns 0, WEFT_ECLOSED (closed before or while waiting: the value was
 * not sent), WEFT_ETIMEDOUT (_dl: deadline passed), WEFT_EAGAIN (try: it
 * would block), WEFT_EINVAL, WEFT_ENOTCORO (blocking forms outside a
 * coroutine; trysend works from any thread).
 */
WEFT_EXTERN int weft_chan_send(weft_chan_t *c, const void *elem);
WEFT_EXTERN int weft_chan_send_dl(weft_chan_t *c, const void *elem,
                                  int64_t deadline);
WEFT_EXTERN int weft_chan_trysend(weft_chan_t *c, const void *elem);

/*
 * weft_chan_recv - take the next element into *elem (elem may be NULL to
 * discard it), blocking until there is one (wait reason "chan receive").
 * Returns 0, WEFT_ECLOSED (closed and drained: *elem is zeroed),
 * WEFT_ETIMEDOUT, WEFT_EAGAIN (try), WEFT_EINVAL, WEFT_ENOTCORO.
 */
WEFT_EXTERN int weft_chan_recv(weft_chan_t *c, void *elem);
WEFT_EXTERN int weft_chan_recv_dl(weft_chan_t *c, void *elem,
                                  int64_t deadline);
WEFT_EXTERN int weft_chan_tryrecv(weft_chan_t *c, void *elem);

/* weft_chan_close - no more sends: blocked senders get WEFT_ECLOSED,
 * blocked receivers drain then get WEFT_ECLOSED. Returns 0, WEFT_ECLOSED
 * (already closed), WEFT_EINVAL. Never blocks. */
WEFT_EXTERN int weft_chan_close(weft_chan_t *c);

/* weft_chan_len / weft_chan_cap - elements buffered / capacity; 0 for
 * NULL. A snapshot: others may change it at once. */
WEFT_EXTERN size_t weft_chan_len(weft_chan_t *c);
WEFT_EXTERN size_t weft_chan_cap(weft_chan_t *c);

/* ---------------------------------------------------------------- select */

enum { WEFT_SEND = 1, WEFT_RECV = 2 };

typedef struct weft_select_case {
    weft_chan_t *chan; /* NULL: this case is never ready */
    int op;            /* WEFT_SEND or WEFT_RECV */
    void *elem;        /* send: the value; recv: where to put it, or NULL */
    int result;        /* out, for the chosen case: 0 or WEFT_ECLOSED */
} weft_select_case_t;

/*
 * weft_select - wait until one of the n cases can proceed, do it, and
 * return its index. When several are ready one is chosen uniformly at
 * random (Go's select). The chosen case's result is 0, or WEFT_ECLOSED
 * (a receive from a closed, drained channel: elem zeroed; a send to a
 * closed channel: nothing sent). n == 0 blocks forever (wait reason
 * "select (no cases)"; only shutdown ends it).
 * weft_select_dl - the same, or WEFT_ETIMEDOUT once deadline passes.
 * weft_tryselect - Go's select with a default case: WEFT_EAGAIN if no
 * case is ready now. Any thread.
 * Errors: WEFT_EINVAL (cases NULL with n > 0, bad op, n > 65536),
 * WEFT_ENOTCORO (blocking forms outside a coroutine).
 */
WEFT_EXTERN int weft_select(weft_select_case_t *cases, size_t n);
WEFT_EXTERN int weft_select_dl(weft_select_case_t *cases, size_t n,
                               int64_t deadline);
WEFT_EXTERN int weft_tryselect(weft_select_case_t *cases, size_t n);

/* ------------------------------------------------------------------ sync */

/*
 * Sync objects are caller-allocated and need no destruction: declare them
 * with their static initializer (or zero them) and use them. They park
 * coroutines, never threads. Blocking calls need a coroutine
 * (WEFT_ENOTCORO otherwise); the try and release calls work anywhere.
 * NULL gets WEFT_EINVAL.
 */

/* weft_mutex_t - Go's sync.Mutex: brief spinning, then parking; a waiter
 * that has waited 1 ms switches the mutex to FIFO hand-off (starvation
 * mode) until the queue drains, so nobody starves. Not recursive. */
typedef struct weft_mutex {
    uint64_t opaque_[3];
} weft_mutex_t;
#define WEFT_MUTEX_INIT {{0, 0, 0}}

/* weft_mutex_lock - acquire (wait reason "sync.Mutex.Lock"). Returns 0,
 * WEFT_ETIMEDOUT (_dl), WEFT_EAGAIN (try), WEFT_EINVAL, WEFT_ENOTCORO.
 * When waiting closes a wait-for cycle through other coroutines (the
 * holder of mu waits, through a chain of holders, for a mutex the caller
 * holds), weft prints the cycle's coroutines on stderr, then waits as Go
 * would: another coroutine may still unlock one of the mutexes. Waits
 * with a deadline, and waiting for a mutex the caller locked itself (to
 * be unlocked elsewhere), are not reported. */
WEFT_EXTERN int weft_mutex_lock(weft_mutex_t *mu);
WEFT_EXTERN int weft_mutex_lock_dl(weft_mutex_t *mu, int64_t deadline);
WEFT_EXTERN int weft_mutex_trylock(weft_mutex_t *mu);
/* weft_mutex_unlock - release; may be called by another coroutine than
 * the locker (as in Go). WEFT_EPERM if it is not locked. */
WEFT_EXTERN int weft_mutex_unlock(weft_mutex_t *mu);

/* weft_rwmutex_t - Go's sync.RWMutex: many readers or one writer; a
 * waiting writer blocks new readers, so writers are not starved. Results
 * as for the mutex; rlock also returns WEFT_EAGAIN if 2^30 readers hold
 * it already. */
typedef struct weft_rwmutex {
    uint64_t opaque_[6];
} weft_rwmutex_t;
#define WEFT_RWMUTEX_INIT {{0, 0, 0, 0, 0, 0}}

WEFT_EXTERN int weft_rwmutex_rlock(weft_rwmutex_t *rw);
WEFT_EXTERN int weft_rwmutex_rlock_dl(weft_rwmutex_t *rw, int64_t deadline);
WEFT_EXTERN int weft_rwmutex_tryrlock(weft_rwmutex_t *rw);
WEFT_EXTERN int weft_rwmutex_runlock(weft_rwmutex_t *rw); /* EPERM */
WEFT_EXTERN int weft_rwmutex_lock(weft_rwmutex_t *rw);
WEFT_EXTERN int weft_rwmutex_lock_dl(weft_rwmutex_t *rw, int64_t deadline);
WEFT_EXTERN int weft_rwmutex_trylock(weft_rwmutex_t *rw);
WEFT_EXTERN int weft_rwmutex_unlock(weft_rwmutex_t *rw); /* EPERM */

/* weft_cond_t - Go's sync.Cond. wait atomically unlocks mu and parks
 * (wait reason "sync.Cond.Wait"), then relocks mu before returning, also
 * on timeout (WEFT_ETIMEDOUT). signal wakes one waiter, broadcast all;
 * both work from any thread and return 0 or WEFT_EINVAL. */
typedef struct weft_cond {
    uint64_t opaque_[4];
} weft_cond_t;
#define WEFT_COND_INIT {{0, 0, 0, 0}}

WEFT_EXTERN int weft_cond_wait(weft_cond_t *cv, weft_mutex_t *mu);
WEFT_EXTERN int weft_cond_wait_dl(weft_cond_t *cv, weft_mutex_t *mu,
                                  int64_t deadline);
WEFT_EXTERN int weft_cond_signal(weft_cond_t *cv);
WEFT_EXTERN int weft_cond_broadcast(weft_cond_t *cv);

/* weft_waitgroup_t - Go's sync.WaitGroup. add(delta) may be negative;
 * the counter going below zero or above INT32_MAX is WEFT_EINVAL (and
 * leaves it unchanged). Once wait has returned, the waitgroup may be
 * freed, even while the coroutine whose done released it is still
 * inside weft_waitgroup_done.
 * wait parks until the counter is zero (wait reason
 * "sync.WaitGroup.Wait"). */
typedef struct weft_waitgroup {
    uint64_t opaque_[2];
} weft_waitgroup_t;
#define WEFT_WAITGROUP_INIT {{0, 0}}

WEFT_EXTERN int weft_waitgroup_add(weft_waitgroup_t *wg, int64_t delta);
WEFT_EXTERN int weft_waitgroup_done(weft_waitgroup_t *wg);
WEFT_EXTERN int weft_waitgroup_wait(weft_waitgroup_t *wg);
WEFT_EXTERN int weft_waitgroup_wait_dl(weft_waitgroup_t *wg,
                                       int64_t deadline);

/* weft_once_t - Go's sync.Once: weft_once_do runs fn(arg) exactly once
 * over all callers; the others wait until it has returned. fn calling
 * weft_once_do on the same once gets WEFT_EDEADLK. */
typedef struct weft_once {
    uint64_t opaque_[4];
} weft_once_t;
#define WEFT_ONCE_INIT {{0, 0, 0, 0}}

WEFT_EXTERN int weft_once_do(weft_once_t *once, weft_fn fn, void *arg);

/* weft_sem_t - a counting semaphore. acquire takes one unit, parking
 * while there is none (wait reason "semacquire"); release adds n >= 1
 * and wakes waiters in FIFO order. WEFT_SEM_INIT(n) starts with n. */
typedef struct weft_sem {
    uint64_t opaque_[2];
} weft_sem_t;
#define WEFT_SEM_INIT(n) {{(uint64_t)(n), 0}}

WEFT_EXTERN int weft_sem_acquire(weft_sem_t *s);
WEFT_EXTERN int weft_sem_acquire_dl(weft_sem_t *s, int64_t deadline);
WEFT_EXTERN int weft_sem_tryacquire(weft_sem_t *s);
WEFT_EXTERN int weft_sem_release(weft_sem_t *s, uint32_t n);

/* ------------------------------------------------ file descriptors, sockets */

/*
 * Coroutines block on fds the way Go's goroutines block on net.Conn: the
 * call parks the coroutine (wait reason "IO wait") until the fd is ready,
 * and the runtime's one netpoller (epoll) wakes it. Reads and writes of
 * the sockets weft_accept and weft_dial return go through an io_uring per
 * P instead where the kernel has one (Linux 6.0 or later; WEFTDEBUG=
 * iouring=0 turns it off): the request is queued, the coroutine parks,
 * and one io_uring_enter sends a scheduling round's requests. The calls
 * below take ordinary fds, kept in non-blocking mode.
 *
 * Rules for every fd call:
 *  - An fd is weft's once it came from weft_listen/weft_accept/weft_dial or
 *    was handed over with weft_fd_open (the read/write/wait calls also
 *    adopt an fd they have not seen). Close it with weft_close, not
 *    close(2): weft_close wakes its waiters with WEFT_ECLOSED (cancelling
 *    their io_uring requests, which otherwise keep the socket open) and
 *    forgets the fd, so a later fd with the same number never wakes a
 *    coroutine that waited on the old one.
 *  - At most one coroutine reads and one writes an fd at a time (as Go
 *    serialises a conn's readers); another gets WEFT_EBUSY: on weft's
 *    sockets under io_uring as soon as the first one's call is under way,
 *    elsewhere when both would have to wait.
 *  - Deadlines are absolute weft_now() times. One that passes returns
 *    WEFT_ETIMEDOUT and leaves the fd usable. WEFT_FOREVER: none.
 *  - Errors are negative errnos (-ECONNRESET, -EPIPE, ...). Writes never
 *    raise SIGPIPE.
 *  - Outside a coroutine these calls return WEFT_ENOTCORO, except
 *    weft_close, weft_shutdown, weft_fd_open and weft_getaddrinfo, which
 *    work anywhere (weft_fd_open needs a running runtime).
 *  - weft_accept and weft_dial set TCP_NODELAY on TCP connections, as Go
 *    does: a request/response protocol should not wait for Nagle.
 * weft remembers which coroutine opened each fd and which waits on it,
 * for dumps and the leak detector.
 */
#define WEFT_READ 1
#define WEFT_WRITE 2

/*
 * weft_fd_open - hand an fd opened elsewhere (a pipe, an eventfd, a
 * library's socket) to weft: sets O_NONBLOCK and registers it with the
 * netpoller. Returns fd, or WEFT_EBADF (not open), WEFT_EPERM (a file
 * epoll cannot wait on, such as a regular file), WEFT_ENORUNTIME.
 * Adopting an fd twice is harmless. Does not block.
 */
WEFT_EXTERN int weft_fd_open(int fd);

/*
 * weft_fd_wait - park until fd is ready for events (WEFT_READ, WEFT_WRITE
 * or both), a hang-up or error counting as ready. Returns the ready
 * events (> 0), WEFT_ETIMEDOUT, WEFT_ECLOSED (weft_close'd meanwhile),
 * WEFT_EBADF, WEFT_EINVAL (events), WEFT_EBUSY (someone already waits on
 * that direction). Readiness is edge-triggered underneath: call it after
 * the fd's own call returned EAGAIN, as the calls below do.
 */
WEFT_EXTERN int weft_fd_wait(int fd, int events, int64_t deadline);

/*
 * weft_close - wake every coroutine waiting on fd (WEFT_ECLOSED), forget
 * it, and close(2) it. Returns 0, WEFT_EBADF, or close's error (the fd is
 * closed either way). Does not block.
 */
WEFT_EXTERN int weft_close(int fd);

/*
 * weft_listen - a listening socket. network: "tcp" (IPv6 and IPv4 when the
 * host is empty), "tcp4", "tcp6", or "unix" (address is a path; a leading
 * '@' names an abstract socket). address: "host:port", ":port",
 * "[v6addr]:port"; port 0 picks a free one (read it with getsockname).
 * SO_REUSEADDR is set. backlog <= 0 means SOMAXCONN. Returns the fd, or
 * WEFT_EINVAL (bad network or address), WEFT_ENONAME, or the errno of
 * socket/bind/listen. Resolves names without blocking a P.
 */
WEFT_EXTERN int weft_listen(const char *network, const char *address,
                            int backlog);

/*
 * weft_accept - the next connection on listening socket lfd, as accept(2)
 * (addr/addrlen may be NULL). Blocks. Returns the connection's fd
 * (non-blocking, close-on-exec), WEFT_ETIMEDOUT (_dl), WEFT_ECLOSED, or an
 * errno. When the process is out of fds (EMFILE/ENFILE) it waits, backing
 * off from 5 ms up to 1 s, and retries rather than spinning or failing.
 */
WEFT_EXTERN int weft_accept(int lfd, struct sockaddr *addr,
                            socklen_t *addrlen);
WEFT_EXTERN int weft_accept_dl(int lfd, struct sockaddr *addr,
                               socklen_t *addrlen, int64_t deadline);

/*
 * weft_dial - connect to address (same forms as weft_listen; a host name
 * is resolved without blocking a P, and each resolved address is tried in
 * turn). Blocks. Returns the connected fd, WEFT_ETIMEDOUT (_dl),
 * WEFT_ENONAME, WEFT_EINVAL, or the errno of the last attempt
 * (-ECONNREFUSED ...).
 */
WEFT_EXTERN int weft_dial(const char *network, const char *address);
WEFT_EXTERN int weft_dial_dl(const char *network, const char *address,
                             int64_t deadline);

/*
 * weft_read / weft_readv - read at most len bytes (as read(2)/readv(2)),
 * parking while none are available. Returns the count (> 0), 0 at end of
 * file (or at once when len is 0, as Go's Read of an empty buffer),
 * WEFT_ETIMEDOUT (_dl), WEFT_ECLOSED, WEFT_EBUSY, or an errno.
 */
WEFT_EXTERN ssize_t weft_read(int fd, void *buf, size_t len);
WEFT_EXTERN ssize_t weft_read_dl(int fd, void *buf, size_t len,
                                 int64_t deadline);
WEFT_EXTERN ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt);
WEFT_EXTERN ssize_t weft_readv_dl(int fd, const struct iovec *iov,
                                  int iovcnt, int64_t deadline);

/*
 * weft_write / weft_writev - write all len bytes, parking while the fd
 * cannot take more. Returns len (the total, for writev) once every byte
 * is written, or an error (WEFT_ETIMEDOUT (_dl), WEFT_ECLOSED,
 * WEFT_EBUSY, -EPIPE, -ECONNRESET, ...); either way *done (if not NULL)
 * gets the number of bytes written, as Go's Write returns n with its
 * error. writev's iovcnt is at most IOV_MAX (WEFT_EINVAL otherwise).
 */
WEFT_EXTERN ssize_t weft_write(int fd, const void *buf, size_t len,
                               size_t *done);
WEFT_EXTERN ssize_t weft_write_dl(int fd, const void *buf, size_t len,
                                  size_t *done, int64_t deadline);
WEFT_EXTERN ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt,
                                size_t *done);
WEFT_EXTERN ssize_t weft_writev_dl(int fd, const struct iovec *iov,
                                   int iovcnt, size_t *done,
                                   int64_t deadline);

/*
 * weft_shutdown - shutdown(2) (SHUT_RD, SHUT_WR, SHUT_RDWR): half-close.
 * Returns 0 or an errno. Does not block.
 */
WEFT_EXTERN int weft_shutdown(int fd, int how);

/*
 * weft_getaddrinfo - getaddrinfo(3) run on a thread that gives up its P
 * while it waits (the resolver may block on DNS), so other coroutines go
 * on running (outside a coroutine it simply calls getaddrinfo).
 * Returns 0 (free *res with freeaddrinfo), WEFT_ENONAME (no
 * such host or service), WEFT_EAGAIN (temporary failure), WEFT_ENOMEM,
 * WEFT_EINVAL (other resolver errors, NULL node and service or res).
 */
WEFT_EXTERN int weft_getaddrinfo(const char *node, const char *service,
                                 const struct addrinfo *hints,
                                 struct addrinfo **res);

/* ------------------------------------------------------------ diagnostics */

/* Levels for weft_dump(): which coroutines, which frames. */
#define WEFT_DUMP_SINGLE 1 /* the calling coroutine only, user frames */
#define WEFT_DUMP_ALL 2    /* every coroutine, user frames */
#define WEFT_DUMP_SYSTEM 3 /* every coroutine, weft's own frames too, and
                            * each frame's fp/sp/pc */

/*
 * weft_dump - write the traceback of coroutines to fd in Go's format
 * (what Ctrl+\ prints, without the signal preamble; what Go's
 * runtime.Stack and /debug/pprof/goroutine?debug=2 print): the caller
 * first, then every other live coroutine, each as a header
 * "goroutine N [wait reason, M minutes]:" (an IO wait adds ", fd N", a
 * named coroutine ", name=..."), its frames (function, then
 * file:line +0xoffset from DWARF) and "created by F in goroutine P".
 * Coroutines running on other threads are briefly stopped by a signal
 * to read their stacks; one whose thread does not answer within 100 ms is
 * shown as "goroutine running on other thread; stack unavailable".
 * Callable from a coroutine or any thread (outside a coroutine there is
 * no caller to put first; WEFT_DUMP_SINGLE then prints nothing).
 * Returns 0, WEFT_EINVAL (bad level), WEFT_EBADF (fd < 0),
 * WEFT_ENORUNTIME, or the error of a failed write (the output stops
 * there). Blocks the calling thread while it works, and every thread
 * running coroutines waits meanwhile (a dump shows one instant). The
 * first dump reads debug information (tens of ms for a small program);
 * symbols, and the stacks of coroutines that have not run since, are
 * kept for the next one. Build with -g for file:line; frames of code
 * built with tail calls (-O2 without -fno-optimize-sibling-calls) may be
 * missing, as in any C traceback.
 */
WEFT_EXTERN int weft_dump(int fd, int level);

/* -------------------------------------------------------------- profiles */

/*
 * Profiles in pprof's format (`go tool pprof` reads them with no binary:
 * every location carries its function, file and line). Names, as Go's:
 *  "goroutine"     every live coroutine's stack, with its labels
 *  "threadcreate"  the stacks that created the runtime's threads
 *  "block"         where coroutines waited on channels, select and sync
 *                  objects, and for how long (needs
 *                  weft_set_block_profile_rate; as in Go, sleeps and
 *                  socket waits are left out)
 *  "mutex"         how long waiters waited for a weft_mutex_t/rwmutex,
 *                  charged to the stack that unlocked it (needs
 *                  weft_set_mutex_profile_fraction)
 *
 * weft_profile_write - write profile name to fd. debug: 0 gzip'd
 * profile.proto; 1 Go's legacy text with symbolized "#" lines; 2
 * ("goroutine"; the others write 1, as Go) the traceback of every
 * coroutine, as weft_dump WEFT_DUMP_ALL. Stacks start at the public weft
 * call (weft_chan_recv, not the scheduler inside it). fd may be blocking
 * or not: on a non-blocking fd a coroutine parks in weft_fd_wait (and
 * gets WEFT_EBUSY if another coroutine already waits to write it), a
 * plain thread waits in poll(2). Returns 0, WEFT_EINVAL (NULL or unknown
 * name, bad debug), WEFT_EBADF, WEFT_ENORUNTIME ("goroutine" only: the
 * others can be written after weft_main returned), WEFT_EBUSY (a dump is
 * stuck, or see above), WEFT_ENOMEM, or a failed write's error.
 * Blocks while it writes; "goroutine" stops every thread briefly, as
 * weft_dump does.
 */
WEFT_EXTERN int weft_profile_write(const char *name, int fd, int debug);

/*
 * weft_profile_count - the count /debug/pprof/ shows for name: live
 * coroutines, threads created, or records in the block/mutex profile.
 * Returns it, or WEFT_EINVAL (unknown name), WEFT_ENORUNTIME. Never
 * blocks.
 */
WEFT_EXTERN int64_t weft_profile_count(const char *name);

/*
 * weft_cpuprofile_start - sample every running thread's stack hz times a
 * second of its CPU time (0: 100, Go's default; at most 1000), until
 * weft_cpuprofile_stop. Each thread has its own CPU-time timer, so busy
 * threads are sampled fairly however many there are. Samples carry the
 * running coroutine's labels; time in the scheduler itself is charged to
 * a frame "weft.scheduler". Uses SIGPROF while it runs: a system call
 * a running coroutine makes may then fail with EINTR where SA_RESTART
 * does not apply (as under Go's profiler). Returns 0, WEFT_EBUSY (a
 * profile is already running, as Go's "cpu profiling already in use",
 * or the program has its own SIGPROF handler, which weft never
 * replaces; SIG_DFL or SIG_IGN is taken over and put back at stop),
 * WEFT_EINVAL (hz out of range), WEFT_ENORUNTIME, WEFT_EAGAIN (no
 * thread for the collector), -ENOSYS (built without protobuf-c/zlib).
 * Never blocks.
 *
 * weft_cpuprofile_stop - stop sampling and write the profile to fd as
 * gzip'd profile.proto (fd < 0: discard it). Any thread. Returns 0,
 * WEFT_EINVAL (no profile running), WEFT_ENOMEM, or a failed write's
 * error. Blocks while it writes. A profile still running when
 * weft_main returns is stopped and discarded.
 */
WEFT_EXTERN int weft_cpuprofile_start(int hz);
WEFT_EXTERN int weft_cpuprofile_stop(int fd);

/*
 * weft_set_block_profile_rate - as Go's runtime.SetBlockProfileRate:
 * record, on average, one blocking event per rate nanoseconds spent
 * blocked (1: every event; <= 0: off, the default). Sleeps are not
 * recorded. Returns the previous rate. Never blocks.
 *
 * weft_set_mutex_profile_fraction - as Go's
 * runtime.SetMutexProfileFraction: record on average 1 in rate
 * contention events (0: off, the default; < 0: only read). Returns the
 * previous rate. Never blocks.
 */
WEFT_EXTERN int64_t weft_set_block_profile_rate(int64_t rate);
WEFT_EXTERN int weft_set_mutex_profile_fraction(int rate);

/*
 * weft_label_set - set the label key=value on the calling coroutine (NULL
 * value: remove key). Coroutines it spawns afterwards inherit its labels;
 * goroutine and CPU profiles carry them, so `go tool pprof -tagfocus`
 * selects by them. Returns 0, WEFT_EINVAL (NULL or empty key, key or
 * value over 255 bytes, more than 64 labels), WEFT_ENOTCORO, WEFT_ENOMEM.
 * Never blocks.
 *
 * weft_label_get - copy the value of key on the calling coroutine into
 * buf (n bytes, NUL-terminated, truncated to fit). Returns the value's
 * length, WEFT_EINVAL (NULL key, or buf NULL with n > 0), WEFT_ENOENT (no
 * such label), WEFT_ENOTCORO. Never blocks.
 */
WEFT_EXTERN int weft_label_set(const char *key, const char *value);
WEFT_EXTERN int weft_label_get(const char *key, char *buf, size_t n);

/* ------------------------------------------------------------- metrics */

/*
 * weft_metrics_write - the runtime's metrics in Prometheus text
 * exposition format (version 0.0.4) to fd, as /metrics serves them.
 * fd as for weft_profile_write. Returns 0, WEFT_EBADF, WEFT_ENORUNTIME,
 * WEFT_EBUSY (see weft_profile_write), or a failed write's error.
 * Blocks while it writes.
 */
WEFT_EXTERN int weft_metrics_write(int fd);

/*
 * struct weft_metrics - the same figures as numbers. Counters (_total in
 * the text) only grow while a runtime runs and start at 0 with each
 * weft_main. Fields are only ever added at the end: a program built
 * against an older weft.h passes its smaller size and gets the prefix it
 * knows. Times are int64_t nanoseconds; -1: unavailable (no /proc).
 */
#define WEFT_METRICS_LAT_BUCKETS 23
struct weft_metrics {
    /* Scheduler. */
    int64_t coroutines;         /* live: spawned and not yet returned */
    int64_t threads;            /* Ms (OS threads running coroutines) */
    int64_t procs;              /* Ps (WEFTMAXPROCS) */
    uint64_t coroutines_created;
    uint64_t context_switches;  /* scheduler ticks: a coroutine switched
                                 * in, or a yield with nothing else to run */
    uint64_t steals;            /* successful steals from another P */
    uint64_t syscall_handoffs;  /* Ps taken from a thread in a syscall */
    int64_t netpoll_waiters;    /* coroutines parked on an fd */
    int64_t mutex_wait_ns;      /* time mutex/rwmutex waiters spent
                                 * blocked (contended slow path only) */
    /* Scheduling latency, runnable to running, 1 in 256 transitions of
     * each coroutine: sched_lat_counts[i] samples (not cumulative) took
     * at most sched_lat_bounds_ns[i] and more than the bound before; the
     * last bound is INT64_MAX (+Inf). */
    uint64_t sched_lat_count;   /* == the sum of the counts */
    int64_t sched_lat_sum_ns;
    int64_t sched_lat_bounds_ns[WEFT_METRICS_LAT_BUCKETS];
    uint64_t sched_lat_counts[WEFT_METRICS_LAT_BUCKETS];
    /* Process (Prometheus client_golang's process collector). */
    int64_t process_cpu_ns;            /* user + system */
    int64_t process_open_fds;
    int64_t process_max_fds;           /* RLIMIT_NOFILE soft limit */
    int64_t process_virtual_memory_bytes;
    int64_t process_virtual_memory_max_bytes; /* RLIMIT_AS; INT64_MAX:
                                               * unlimited */
    int64_t process_resident_memory_bytes;
    int64_t process_start_time_ns;     /* since the epoch */
    /* Leak detector (weft_leakcheck_start): open fds by kind, from
     * /proc/self/fd (-1: unavailable); fds opened through weft; 1 while
     * the monitor suspects a leak of that kind (0 otherwise, or off). */
    int64_t open_fds_socket, open_fds_pipe, open_fds_file, open_fds_other;
    int64_t weft_fds;
    int64_t leak_suspected_socket, leak_suspected_coroutine,
        leak_suspected_fd;
};

/*
 * weft_metrics_read - fill *m with the runtime's metrics; size is
 * sizeof *m as the caller knows it (ABI growth, see above). Returns the
 * bytes filled (min(size, sizeof(struct weft_metrics)); a larger tail is
 * zeroed), or WEFT_EINVAL (m NULL, or size smaller than the first
 * version of the struct), WEFT_ENORUNTIME. Any thread, while weft_main
 * runs (a thread outside the runtime must not race its shutdown); the
 * figures are read without stopping the scheduler, so they agree with
 * each other only approximately, like a schedtrace line.
 */
WEFT_EXTERN int weft_metrics_read(struct weft_metrics *m, size_t size);

/* ---------------------------------------------------------- leak check */

/*
 * The leak monitor (also started by WEFTDEBUG=leakcheck=SECONDS when
 * weft_main starts). Every period a thread of its own, outside the
 * scheduler, counts the live coroutines grouped by spawn site and state
 * (wait reason), and the process's open fds by kind (socket, pipe, file,
 * other) from /proc/self/fd. Coroutines are counted without stopping
 * anything; stacks are read (every thread stopped for a moment, as
 * weft_dump) only to write a report.
 *
 * A series is growing when its floor, the smallest of its last 8
 * samples, has not fallen over the last 4 periods, rose in at least 3
 * of them, by at least max(4, 5%) in all, and those 8 samples all
 * exceed the 4 before them: a load that rises and falls within about 8
 * periods moves the peaks, not the floor. A steady leak is reported
 * after 12 samples.
 * Coroutines and fds growing together: suspected socket (fd) leak;
 * coroutines alone: coroutine leak; fds alone: fd leak outside
 * coroutines. A suspicion is written to stderr as one block when it
 * starts or changes kind, again only when the growth has doubled since
 * the last block, and ends once nothing has grown for 4 periods.
 *
 * weft_leakcheck_start - start the monitor with a period of period_ns
 * (10 ms .. 1 hour). Any thread while a runtime runs. Returns 0,
 * WEFT_EINVAL (period out of range), WEFT_EBUSY (already running),
 * WEFT_ENORUNTIME (also once the main coroutine has returned),
 * WEFT_ENOMEM, WEFT_EAGAIN (no thread). Never blocks. The monitor
 * ends with the runtime (when the main coroutine returns).
 *
 * weft_leakcheck_stop - stop it and forget its samples. Returns 0,
 * WEFT_EINVAL (not running). Blocks the calling thread until the
 * monitor's thread ends (at most one sample or report).
 *
 * weft_leakcheck_write - the report /debug/leaks serves, as text, to fd
 * (fd as for weft_profile_write): the samples, the coroutine groups with
 * one stack each (Go's dump format), the fds weft opened with who opened
 * and waits on each, and any suspicion. With the monitor off it takes
 * one sample then. Returns 0, WEFT_EBADF, WEFT_ENORUNTIME, WEFT_ENOMEM,
 * WEFT_EBUSY (a dump is stuck), or a failed write's error. Blocks while
 * it writes; stops every thread briefly to read stacks.
 */
WEFT_EXTERN int weft_leakcheck_start(int64_t period_ns);
WEFT_EXTERN int weft_leakcheck_stop(void);
WEFT_EXTERN int weft_leakcheck_write(int fd);

/* ---------------------------------------------------------- debug server */

/*
 * weft_debug_serve - serve Go's /debug/pprof/ endpoints and /metrics over
 * HTTP on addr ("host:port"; port 0 picks a free one), as coroutines of
 * this runtime: `go tool pprof http://ADDR/debug/pprof/profile?seconds=10`
 * works against it. Serve loopback unless you mean to expose profiles:
 * addr is used exactly as given. Must be called from a coroutine; returns
 * once listening, with the bound port (> 0), or WEFT_EINVAL (NULL or
 * malformed addr), WEFT_EBUSY (already serving), WEFT_ENOTCORO, or the
 * error of listen (-EADDRINUSE ...). The server runs until
 * weft_debug_stop() or the end of the runtime (which releases its fds and
 * memory; a later runtime may serve again).
 * Endpoints: /debug/pprof/ (Go's index page), /debug/pprof/{goroutine,
 * block,mutex,threadcreate}?debug=0|1|2, /debug/pprof/profile?seconds=N
 * (1..3600, default 30; 500 "cpu profiling already in use" if a CPU
 * profile runs), /debug/pprof/cmdline, /debug/pprof/symbol (GET, POST),
 * /metrics, /debug/leaks (weft_leakcheck_write). One request per
 * connection; heads of at most 8 KiB and 100 headers (431), bodies of at
 * most 64 KiB (413), the whole request within 10 s (408), at most 64
 * connections at once; GET, HEAD and POST (405).
 *
 * weft_debug_stop - close the listener and the open connections; returns
 * 0, WEFT_EINVAL (not serving), WEFT_ENOTCORO. Blocks until the server's
 * coroutines are gone.
 */
WEFT_EXTERN int weft_debug_serve(const char *addr);
WEFT_EXTERN int weft_debug_stop(void);

/* ----------------------------------------------------------- leak checks */

/*
 * Leak regression tests, as Go's uber-go/goleak: take a snapshot when a
 * test starts, verify when it ends. Verify reports every coroutine that
 * was not alive at the snapshot and is still alive, and every fd that was
 * not open at the snapshot (listed in /proc/self/fd) and is still open,
 * after retries with back-off for the ones that are merely finishing.
 * Fds weft's own symbolizer keeps for the process's life (ELF and debug
 * files, libunwind's pipe: opened by the first dump or profile) are never
 * reported.
 *
 * The report, for coroutines, is goleak's text:
 *   found unexpected goroutines:
 *   [Goroutine 7 in state chan receive, with weft_chan_recv on top of the stack:
 *   weft_chan_recv(...)
 *   	/src/chan.c:210 +0x1f
 *   worker(...)
 *   ...
 *   created by main_body in goroutine 1
 *   	/src/t.c:40 +0x5
 *    Goroutine 8 in state ...]
 * each stack as weft_dump prints it (WEFT_DUMP_ALL). The "top of the
 * stack" is its first printed frame: the weft_* call it is blocked in.
 * For fds:
 *   found unexpected file descriptors:
 *   fd 9 (socket:[123456]) opened in goroutine 7 by client
 *   	/src/t.c:52 +0x2a
 *   fd 10 (/tmp/x.log) not opened through weft
 */
typedef struct weft_leak_snapshot weft_leak_snapshot_t;

#define WEFT_LEAK_ALL 1u            /* also coroutines alive at the
                                     * snapshot (goleak without
                                     * IgnoreCurrent) */
#define WEFT_LEAK_NO_FDS 2u         /* coroutines only */
#define WEFT_LEAK_NO_COROUTINES 4u  /* fds only */

/* What a verify ignores, how long it retries, where the report goes.
 * All zero (or a NULL pointer) is the default. Function names are
 * matched exactly against the names a dump prints. */
struct weft_leak_opts {
    const char *const *ignore_top;  /* NULL-terminated: a coroutine whose
                                     * top frame is one of these */
    const char *const *ignore_any;  /* ... with one of these anywhere in
                                     * its stack (weft's frames too) */
    const char *const *ignore_created_by; /* ... spawned from one of
                                     * these functions ("created by") */
    const int64_t *ignore_ids;      /* these coroutine ids */
    size_t nignore_ids;
    int retries;                    /* looks after the first; 0: 20 */
    int64_t max_sleep;              /* back-off cap, ns; 0: 100 ms. The
                                     * sleeps go 1 us, 2 us, 4 us ... up
                                     * to it: about 0.45 s by default */
    unsigned flags;                 /* WEFT_LEAK_* */
    int fd;                         /* write the report here; 0: don't */
    char *buf;                      /* and/or copy it here (NUL-terminated,
                                     * truncated to bufsize) */
    size_t bufsize;
};

/*
 * weft_leak_snapshot - record the coroutines alive and the fds open now.
 * Must be called from a coroutine. Returns 0 with *out set (free it
 * with weft_leak_snapshot_free), or WEFT_EINVAL (out NULL),
 * WEFT_ENOTCORO, WEFT_ENORUNTIME, WEFT_ENOMEM. Does not park; lists
 * /proc/self/fd.
 *
 * weft_leak_verify - the coroutines and fds new since s and still alive,
 * ignoring the caller and what opts says, looked at again after sleeps
 * of 1 us doubling up to opts->max_sleep, opts->retries times, before
 * they count as leaked. Returns how many leaked (coroutines plus fds; 0:
 * clean, and then nothing is written), or WEFT_EINVAL (s NULL, unknown
 * flags, both NO_ flags, retries or max_sleep negative, buf NULL with
 * bufsize > 0, an ignore list given with nignore_ids but ids NULL),
 * WEFT_EBADF (opts->fd < 0), WEFT_ENOTCORO, WEFT_ENORUNTIME,
 * WEFT_ENOMEM, WEFT_EBUSY (a dump is stuck), or a failed write's error.
 * Parks the calling coroutine between looks. A look costs an allocation
 * and a /proc/self/fd listing; only when a candidate coroutine exists
 * does it stop every thread briefly (as weft_dump) to read stacks. On a
 * clean run it returns after one look, in well under 5 ms.
 *
 * weft_leak_snapshot_free - free s (NULL: nothing). Any thread.
 */
WEFT_EXTERN int weft_leak_snapshot(weft_leak_snapshot_t **out);
WEFT_EXTERN int weft_leak_verify(const weft_leak_snapshot_t *s,
                                 const struct weft_leak_opts *opts);
WEFT_EXTERN void weft_leak_snapshot_free(weft_leak_snapshot_t *s);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_H */
