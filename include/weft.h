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
 */
#ifndef WEFT_H
#define WEFT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

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
/* The call must be made from a weft coroutine, and was not. */
#define WEFT_ENOTCORO (-4001)
/* The runtime is not running (weft_main() has not started or has ended). */
#define WEFT_ENORUNTIME (-4002)

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
 * The calling thread becomes the runtime's first M and is given back when
 * fn returns. Shutdown then works like a Go program's exit: coroutines still
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

#ifdef __cplusplus
}
#endif
#endif /* WEFT_H */
