/*
 * sysmon.c - the system monitor: a thread without a P, as in Go's proc.go
 * sysmon, that watches the Ps from outside.
 *
 * Each tick it:
 *  1. retakes Ps whose M has been in a syscall for more than 20 us when
 *     there is other work for them (or for more than 10 ms regardless),
 *     and hands them to another M (handoffp);
 *  2. flags the G running on a P whose time slice (slicetick: Gs from
 *     runnext inherit it) is 10 ms old: preemption is cooperative,
 *     honoured at the G's next weft call or weft_checkpoint();
 *  3. starts an M when a timer is overdue and nobody is in the poller,
 *     or when a P has queued work while another P idles and no M spins;
 *  4. keeps weft__coarsenow fresh (the "waiting since" clock);
 *  5. polls the network when nobody has for 10 ms and some G waits on
 *     an fd (busy Ps poll only when they run out of work);
 *  6. every second, gives back the memory of stacks cached on the global
 *     free list for a full period (MADV_DONTNEED, top page kept);
 *  7. with WEFTDEBUG=schedtrace=MS, prints a schedtrace report
 *     (schedtrace.c) when MS have passed since the last one, the first
 *     on its first tick, as Go's sysmon does.
 * The tick starts at 20 us and doubles after 50 idle ticks, up to 10 ms.
 * When every P is idle, sysmon trims the free stacks and sleeps on
 * sched.sysmonnote until a P is taken (pidleget) or the runtime exits.
 * While schedtrace is on, no sleep, tick or idle, lasts past the next
 * report's time (Go instead never deep-sleeps then): the idle sleep has a
 * timeout, and a timed-out sleeper withdraws its sysmonwait with the same
 * exchange a waker uses to claim it, so exactly one of them owns the
 * wake-up (a waker that won is waited for: the note must not be left
 * set for the next sleep's clear to race with). With schedtrace off,
 * sysmon does exactly what it did without it (one branch per tick).
 *
 * sysmon reads P and G fields racily; it only acts through CAS (P status)
 * and atomic flags (g.preempt), and G descriptors are never freed while
 * the runtime runs, so a stale read is harmless.
 */
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"
#include "sanitizer.h"

extern _Atomic int64_t weft__coarsenow;

#define SYSCALL_RETAKE_NS 20000
#define FORCE_RETAKE_NS 10000000
#define PREEMPT_NS 10000000
#define TRIM_PERIOD_NS 1000000000
#define NETPOLL_STALE_NS 10000000

static pthread_t sysmon_thread;
static _Atomic bool sysmon_stop;

void weft__sysmon_wake(void)
{
    if (atomic_exchange(&weft__sched.sysmonwait, false))
        weft__notewakeup(&weft__sched.sysmonnote);
}

static uint32_t retake(int64_t now)
{
    uint32_t n = 0;
    for (int32_t i = 0; i < weft__gomaxprocs; i++) {
        struct p *pp = weft__allp[i];
        uint32_t st = LOAD(&pp->status);
        /* pp has switched since we flagged a G: the request is served,
         * or the G had left already and its flag must not linger. */
        if (pp->sm_preempted != NULL &&
            LOAD(&pp->schedtick) != pp->sm_preempttick) {
            weft__preempt_withdraw(pp->sm_preempted);
            pp->sm_preempted = NULL;
        }
        if (st == P_SYSCALL) {
            uint32_t t = LOAD(&pp->syscalltick);
            if (t != pp->sm_syscalltick) {
                pp->sm_syscalltick = t;
                pp->sm_syscallwhen = now;
                continue;
            }
            if (now - pp->sm_syscallwhen < SYSCALL_RETAKE_NS)
                continue;
            /* Leave it if it has nothing queued and other Ms can pick up
             * new work, unless the syscall has gone on for long. */
            if (weft__runqempty(pp) &&
                LOAD(&weft__sched.nmspinning) + LOAD(&weft__sched.npidle) >
                    0 &&
                now - pp->sm_syscallwhen < FORCE_RETAKE_NS)
                continue;
            if (atomic_compare_exchange_strong(&pp->status, &st, P_IDLE)) {
                STORE(&pp->m, NULL);
                STORE(&weft__sched.nhandoff, LOAD(&weft__sched.nhandoff) + 1);
                n++;
                weft__handoffp(pp);
            }
        } else if (st == P_RUNNING) {
            /* Work queued behind a running G while a P idles and nobody
             * looks for work: an M gave up in the instant this ring
             * looked empty, and no spawn or wakeup since has called
             * wakep. Go leaves such work stranded; start a spinner. */
            if (!weft__runqempty(pp) && LOAD(&weft__sched.npidle) > 0 &&
                LOAD(&weft__sched.nmspinning) == 0) {
                weft__wakep();
                n++;
            }
            /* A slice, not a switch: Gs handed on through runnext (a
             * ping-pong pair) keep their slice and are preempted after
             * 10 ms like one long-running G, or the rest of the P's
             * queue would wait for as long as they talk. */
            uint32_t t = LOAD(&pp->slicetick);
            /* sm_slicewhen 0: a P of this runtime not seen yet, whose
             * first G (main's, from runnext) may have started no slice. */
            if (t != pp->sm_slicetick || pp->sm_slicewhen == 0) {
                pp->sm_slicetick = t;
                pp->sm_slicewhen = now;
            } else if (now - pp->sm_slicewhen >= PREEMPT_NS) {
                pp->sm_preempted = weft__preemptone(pp);
                pp->sm_preempttick = LOAD(&pp->schedtick);
                pp->sm_slicewhen = now; /* ask again in 10 ms */
                n++;
            }
        }
    }
    return n;
}

/* trimstacks - trim free Gs' stacks that sat on the global list since at
 * least minage ago. The batches are taken whole so the lock is not held
 * across the madvise calls; spawners meanwhile allocate fresh Gs. */
static void trimstacks(int64_t now, int64_t minage)
{
    weft__lock(&weft__sched.gflock);
    struct g *batches = weft__sched.gfree;
    int32_t n = LOAD(&weft__sched.ngfree);
    weft__sched.gfree = NULL;
    STORE(&weft__sched.ngfree, 0);
    weft__unlock(&weft__sched.gflock);
    if (batches == NULL)
        return;
    struct g *last = NULL;
    for (struct g *b = batches; b != NULL; b = b->nextbatch) {
        for (struct g *gp = b; gp != NULL; gp = gp->schedlink) {
            /* waitsince < 0: freed at -waitsince, not trimmed since. */
            if (gp->waitsince < 0 && now + gp->waitsince >= minage) {
                weft__stack_trim(&gp->stk);
                gp->waitsince = 0;
            }
        }
        last = b;
    }
    weft__lock(&weft__sched.gflock);
    last->nextbatch = weft__sched.gfree;
    weft__sched.gfree = batches;
    STORE(&weft__sched.ngfree, LOAD(&weft__sched.ngfree) + n);
    weft__unlock(&weft__sched.gflock);
}

static void *sysmon(void *arg)
{
    (void)arg;
    int64_t delay = 20000, lasttrim = weft__nanotime();
    /* weft__debug is set before this thread starts and fixed after. */
    const int64_t traceperiod = (int64_t)weft__debug.schedtrace * 1000000;
    const bool tracedetail = weft__debug.scheddetail;
    int64_t lasttrace = 0; /* 0: no report yet, one is due at once */
    uint32_t idle = 0;
    while (!LOAD(&sysmon_stop)) {
        if (idle == 0)
            delay = 20000;
        else if (idle > 50 && delay < 10000000)
            delay *= 2;
        struct timespec ts = {0, delay};
        if (traceperiod > 0 && lasttrace != 0) {
            /* Wake in time for the next report. */
            int64_t left = lasttrace + traceperiod - weft__nanotime();
            if (left < delay)
                ts.tv_nsec = left > 0 ? left : 0;
        }
        nanosleep(&ts, NULL);
        if (LOAD(&sysmon_stop))
            break;
        int64_t now = weft__nanotime();
        STORE(&weft__coarsenow, now);

        if (traceperiod > 0 &&
            (lasttrace == 0 || lasttrace + traceperiod <= now)) {
            lasttrace = now;
            weft__schedtrace(tracedetail);
        }

        if (LOAD(&weft__sched.npidle) == weft__gomaxprocs) {
            trimstacks(now, 0);
            weft__lock(&weft__sched.lock);
            bool sleep = LOAD(&weft__sched.npidle) == weft__gomaxprocs &&
                         !LOAD(&sysmon_stop);
            if (sleep) {
                weft__noteclear(&weft__sched.sysmonnote);
                STORE(&weft__sched.sysmonwait, true);
            }
            weft__unlock(&weft__sched.lock);
            if (sleep && traceperiod > 0) {
                /* Until the next report at most (see the top). */
                int64_t left = lasttrace + traceperiod - weft__nanotime();
                if (!weft__notetsleep(&weft__sched.sysmonnote, left) &&
                    !atomic_exchange(&weft__sched.sysmonwait, false))
                    weft__notesleep(&weft__sched.sysmonnote);
                STORE(&weft__coarsenow, weft__nanotime());
            } else if (sleep) {
                weft__notesleep(&weft__sched.sysmonnote);
                STORE(&weft__coarsenow, weft__nanotime());
            }
            /* The tick is not reset: a server that idles between
             * requests would otherwise keep sysmon at 20 us forever. */
            continue;
        }

        uint32_t n = retake(now);
        weft__metrics_tick();
        /* Busy Ps poll only when they run dry: poll for them if nobody
         * has for 10 ms, so I/O waiters are not starved (Go's sysmon). */
        int64_t lp = LOAD(&weft__sched.lastpoll);
        if (lp != 0 && lp + NETPOLL_STALE_NS < now &&
            weft__netpoll_waiters() &&
            atomic_compare_exchange_strong(&weft__sched.lastpoll, &lp, now)) {
            /* Not counted as activity (n): a busy server finds work
             * here every time, and must not keep sysmon at its 20 us
             * tick, waking a thread that shares the server's CPUs. */
            weft__netpoll_inject(weft__netpoll(0));
        }
        int64_t next = weft__timersleep_until();
        if (next != 0 && next < now && LOAD(&weft__sched.lastpoll) != 0 &&
            LOAD(&weft__sched.npidle) > 0) {
            weft__startm(NULL, false);
            n++;
        }
        idle = n ? 0 : idle + 1;
        if (now - lasttrim >= TRIM_PERIOD_NS) {
            trimstacks(now, TRIM_PERIOD_NS);
            lasttrim = now;
        }
    }
    return NULL;
}

int weft__sysmon_start(void)
{
    STORE(&sysmon_stop, false);
    int err = pthread_create(&sysmon_thread, NULL, sysmon, NULL);
    return err ? -err : 0;
}

void weft__sysmon_stop(void)
{
    STORE(&sysmon_stop, true);
    weft__lock(&weft__sched.lock);
    weft__sysmon_wake();
    weft__unlock(&weft__sched.lock);
    pthread_join(sysmon_thread, NULL);
}
