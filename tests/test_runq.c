/*
 * test_runq.c - white-box tests of the run queues (sched/runq.c) without
 * the scheduler: fake Ps owned by plain threads, fake Gs that are only
 * ids. The property under test is the one the scheduler relies on: under
 * any interleaving of owner puts/gets, runnext swaps, steals of half a
 * ring (runnext included), spills to the global queue and global gets,
 * every G comes out exactly once.
 *
 * Each thread owns one P and, at random (seeded per thread and per
 * round), spawns new Gs into it (with or without runnext), runs (takes)
 * from it, steals from another P into it, or takes from the global queue.
 * A taken G is marked in a table; at the end every queue is drained and
 * every mark must be exactly 1.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"
#include "runtime.h"

enum { NP = 4, PERTHREAD = 60000 };

struct world {
    int np;                      /* Ps in use */
    struct p *ps[NP];
    struct g *gs;                /* all fake Gs; id = index */
    _Atomic uint8_t *taken;      /* times each G came out */
    _Atomic int64_t next;        /* next G to spawn */
    int64_t total;
    unsigned seed;
};

struct worker {
    struct world *w;
    int idx;
    bool runningstatus;
};

static void take(struct world *w, struct g *gp)
{
    ASSERT(gp != NULL);
    int64_t id = gp->id;
    ASSERT(id >= 0 && id < w->total);
    uint8_t before = atomic_fetch_add(&w->taken[id], 1);
    if (before != 0)
        ASSERT_EQ(before, 0); /* taken twice */
}

/* world_init - np empty Ps, total fake Gs (id = index), a fresh sched. */
static void world_init(struct world *w, int np, int64_t total, unsigned seed)
{
    memset(w, 0, sizeof *w);
    w->np = np;
    w->seed = seed;
    w->total = total;
    w->gs = calloc((size_t)total, sizeof *w->gs);
    w->taken = calloc((size_t)total, sizeof *w->taken);
    ASSERT(w->gs != NULL && w->taken != NULL);
    for (int64_t i = 0; i < total; i++)
        w->gs[i].id = i;
    memset(&weft__sched, 0, sizeof weft__sched);
    weft__gomaxprocs = np;
    for (int i = 0; i < np; i++) {
        w->ps[i] = aligned_alloc(CACHELINE, sizeof(struct p));
        ASSERT(w->ps[i] != NULL);
        memset(w->ps[i], 0, sizeof(struct p));
        w->ps[i]->id = i;
    }
}

/* world_finish - drain every queue (a G put by an owner after another
 * thread drained, the global queue), check that every G came out exactly
 * once, free the world. */
static void world_finish(struct world *w)
{
    for (int i = 0; i < w->np; i++)
        for (struct g *gp; (gp = weft__runqget(w->ps[i], NULL)) != NULL;)
            take(w, gp);
    for (;;) {
        weft__lock(&weft__sched.lock);
        struct g *gp = weft__globrunqget(w->ps[0], 0);
        weft__unlock(&weft__sched.lock);
        if (gp == NULL)
            break;
        take(w, gp);
        for (struct g *g2; (g2 = weft__runqget(w->ps[0], NULL)) != NULL;)
            take(w, g2);
    }
    ASSERT_EQ(LOAD(&weft__sched.runqsize), 0);
    for (int64_t i = 0; i < w->total; i++)
        if (LOAD(&w->taken[i]) != 1)
            ASSERT_EQ(LOAD(&w->taken[i]), 1); /* lost (0) or twice */
    for (int i = 0; i < w->np; i++) {
        ASSERT(weft__runqempty(w->ps[i]));
        free(w->ps[i]);
    }
    free(w->gs);
    free((void *)w->taken);
}

static void *work(void *arg)
{
    struct worker *wk = arg;
    struct world *w = wk->w;
    struct p *pp = w->ps[wk->idx];
    unsigned seed = w->seed * 7919u + (unsigned)wk->idx;
    STORE(&pp->status, wk->runningstatus ? P_RUNNING : P_IDLE);
    for (;;) {
        unsigned r = (unsigned)rand_r(&seed) % 100;
        if (r < 45) {
            /* spawn a burst: long enough to fill the ring and spill */
            int n = 1 + rand_r(&seed) % 40;
            for (int i = 0; i < n; i++) {
                int64_t id = atomic_fetch_add(&w->next, 1);
                if (id >= w->total)
                    goto drain;
                weft__runqput(pp, &w->gs[id], rand_r(&seed) % 3 == 0);
            }
        } else if (r < 80) {
            struct g *gp = weft__runqget(pp, NULL);
            if (gp != NULL)
                take(w, gp);
        } else if (r < 95) {
            if (!weft__runqempty(pp))
                continue; /* the scheduler steals only into an empty ring */
            struct p *victim = w->ps[rand_r(&seed) % NP];
            if (victim == pp)
                continue;
            struct g *gp = weft__runqsteal(pp, victim, rand_r(&seed) % 2);
            if (gp != NULL)
                take(w, gp);
        } else if (weft__runqempty(pp)) {
            /* the scheduler takes a batch only into an empty ring */
            weft__lock(&weft__sched.lock);
            struct g *gp = weft__globrunqget(pp, rand_r(&seed) % 3);
            weft__unlock(&weft__sched.lock);
            if (gp != NULL)
                take(w, gp);
        }
    }
drain:
    /* Own queue only: others drain theirs; the global one at the end. */
    for (struct g *gp; (gp = weft__runqget(pp, NULL)) != NULL;)
        take(w, gp);
    return NULL;
}

static void round_(unsigned seed, bool runningstatus)
{
    struct world w;
    world_init(&w, NP, (int64_t)NP * PERTHREAD, seed);
    pthread_t th[NP];
    struct worker wk[NP];
    for (int i = 0; i < NP; i++) {
        wk[i] = (struct worker){&w, i, runningstatus};
        ASSERT_EQ(pthread_create(&th[i], NULL, work, &wk[i]), 0);
    }
    for (int i = 0; i < NP; i++)
        pthread_join(th[i], NULL);
    world_finish(&w);
}

TEST_TIMEOUT(runq_concurrent_steal_many_seeds, 300)
{
    for (unsigned seed = 1; seed <= 24; seed++)
        round_(seed, false);
}

/* With the victim marked running, runnext steals back off for a few
 * microseconds first (the owner is probably about to run it). */
TEST_TIMEOUT(runq_steal_runnext_from_running_p, 300)
{
    for (unsigned seed = 100; seed < 104; seed++)
        round_(seed, true);
}

/* Focused contention: one owner putting and getting as fast as it can on
 * its P, two thieves stealing from it in tight loops into their own Ps
 * and taking what they stole. This is where a missing CAS shows. */
struct hammer {
    struct world *w;
    int idx;
    _Atomic bool *stop;
};

static void *owner(void *arg)
{
    struct hammer *h = arg;
    struct world *w = h->w;
    struct p *pp = w->ps[0];
    unsigned seed = w->seed;
    for (;;) {
        int n = 1 + rand_r(&seed) % 8;
        for (int i = 0; i < n; i++) {
            int64_t id = atomic_fetch_add(&w->next, 1);
            if (id >= w->total)
                goto out;
            weft__runqput(pp, &w->gs[id], rand_r(&seed) % 4 == 0);
        }
        int k = rand_r(&seed) % 8;
        for (int i = 0; i < k; i++) {
            struct g *gp = weft__runqget(pp, NULL);
            if (gp == NULL)
                break;
            take(w, gp);
        }
    }
out:
    STORE(h->stop, true);
    return NULL;
}

static void *thief(void *arg)
{
    struct hammer *h = arg;
    struct world *w = h->w;
    struct p *mine = w->ps[h->idx];
    while (!LOAD(h->stop)) {
        struct g *gp = weft__runqsteal(mine, w->ps[0], true);
        if (gp == NULL)
            continue;
        take(w, gp);
        while ((gp = weft__runqget(mine, NULL)) != NULL)
            take(w, gp);
    }
    return NULL;
}

TEST_TIMEOUT(runq_owner_vs_thieves, 300)
{
    for (unsigned seed = 1; seed <= 8; seed++) {
        struct world w;
        world_init(&w, 3, 400000, seed);
        _Atomic bool stop = false;
        struct hammer hs[3] = {{&w, 0, &stop}, {&w, 1, &stop}, {&w, 2, &stop}};
        pthread_t th[3];
        ASSERT_EQ(pthread_create(&th[0], NULL, owner, &hs[0]), 0);
        ASSERT_EQ(pthread_create(&th[1], NULL, thief, &hs[1]), 0);
        ASSERT_EQ(pthread_create(&th[2], NULL, thief, &hs[2]), 0);
        for (int i = 0; i < 3; i++)
            pthread_join(th[i], NULL);
        world_finish(&w);
    }
}

TEST(runq_fifo_and_runnext)
{
    memset(&weft__sched, 0, sizeof weft__sched);
    weft__gomaxprocs = 1;
    struct p *pp = aligned_alloc(CACHELINE, sizeof(struct p));
    ASSERT(pp != NULL);
    memset(pp, 0, sizeof *pp);
    static struct g gs[600];
    for (int i = 0; i < 600; i++)
        gs[i].id = i;
    /* ring is FIFO */
    for (int i = 0; i < 10; i++)
        weft__runqput(pp, &gs[i], false);
    ASSERT_EQ(weft__runqlen(pp), 10);
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(weft__runqget(pp, NULL)->id, i);
    ASSERT(weft__runqget(pp, NULL) == NULL);
    /* runnext runs first; a new runnext kicks the old one to the tail */
    weft__runqput(pp, &gs[0], false);
    weft__runqput(pp, &gs[1], true);
    weft__runqput(pp, &gs[2], true);
    ASSERT_EQ(weft__runqget(pp, NULL)->id, 2);
    ASSERT_EQ(weft__runqget(pp, NULL)->id, 0);
    ASSERT_EQ(weft__runqget(pp, NULL)->id, 1);
    ASSERT(weft__runqempty(pp));
    /* overflow: 257th put spills half the ring plus the new G */
    for (int i = 0; i < RUNQ_SIZE + 1; i++)
        weft__runqput(pp, &gs[i], false);
    ASSERT_EQ(LOAD(&weft__sched.runqsize), RUNQ_SIZE / 2 + 1);
    ASSERT_EQ(weft__runqlen(pp), RUNQ_SIZE / 2);
    /* the oldest went to the global queue, in order */
    weft__lock(&weft__sched.lock);
    struct g *gp = weft__globrunqget(pp, 1);
    weft__unlock(&weft__sched.lock);
    ASSERT_EQ(gp->id, 0);
    free(pp);
}
