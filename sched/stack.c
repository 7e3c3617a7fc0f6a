/*
 * stack.c - coroutine stacks.
 *
 * A stack is [lo, hi) for the coroutine plus a guard region [base, lo)
 * below it. Stacks of the default size are carved from slabs: one mmap of
 * SLAB_SLOTS slots, each slot a guard followed by the stack, so a slab
 * costs one VMA however many stacks it holds. Other sizes get a mapping of
 * their own. All mappings are MAP_NORESERVE: only touched pages use memory.
 *
 * Guards are installed with madvise(MADV_GUARD_INSTALL) (Linux >= 6.13):
 * no VMA split per stack, so a million stacks fit under vm.max_map_count.
 * A new slab gets the guards of all its slots in one process_madvise()
 * call (an iovec per slot), where the kernel takes MADV_GUARD_INSTALL
 * there; otherwise each slot is guarded when it is carved. On kernels
 * without guard markers we fall back to mprotect(PROT_NONE) and say so
 * once.
 * A guard is 64 KiB rather than one page so that a frame of up to 64 KiB
 * that skips the bottom of a stack still faults instead of silently
 * writing into the neighbouring slot.
 *
 * Invariants:
 *  1. Slab slots are handed out once and never returned to a slab: a
 *     default-size stack stays with its G descriptor, which is reused
 *     through the free lists (proc.c), and slabs are unmapped at shutdown.
 *  2. slablock guards the slab list and the current slab's next slot.
 *  3. Trimming (MADV_DONTNEED) keeps the top page, which every run of a
 *     coroutine touches first, and never the guard: guards survive
 *     MADV_DONTNEED.
 *
 * Rejected: one mmap per stack (a VMA each, and mprotect guards double
 * that: 32k stacks exhaust vm.max_map_count); a malloc'd stack (no guard).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "runtime.h"
#include "sanitizer.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define GUARD_SIZE WEFT__GUARD
#define SLAB_SLOTS 64

struct slab {
    struct slab *next;
    uintptr_t base;
    size_t len;
    int used;
    bool guarded; /* every slot's guard installed at creation */
};

size_t weft__pagesize;
static wlock slablock;
static struct slab *slabs; /* slablock */
static _Atomic int guardmode; /* 0 unknown, 1 madvise, 2 mprotect */
static int pidfd = -1;        /* for process_madvise; -1: not usable */

static const size_t slotsize = GUARD_SIZE + WEFT_STACK_DEFAULT;

void weft__stack_init(void)
{
    weft__pagesize = (size_t)sysconf(_SC_PAGESIZE);
#if defined(SYS_pidfd_open) && defined(SYS_process_madvise)
    if (pidfd < 0 && !weft__vg_on)
        pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
#endif
}

/* guardslab - install every slot's guard of a new slab in one call. */
static bool guardslab(uintptr_t base)
{
#if defined(SYS_process_madvise)
    if (pidfd < 0)
        return false;
    struct iovec iov[SLAB_SLOTS];
    for (int i = 0; i < SLAB_SLOTS; i++) {
        iov[i].iov_base = (void *)(base + (size_t)i * slotsize);
        iov[i].iov_len = GUARD_SIZE;
    }
    long r = syscall(SYS_process_madvise, pidfd, iov, SLAB_SLOTS,
                     MADV_GUARD_INSTALL, 0);
    if (r == (long)(GUARD_SIZE * SLAB_SLOTS))
        return true;
    /* Older kernel: no guard markers through process_madvise. Stop
     * trying; slots are guarded one by one. */
    close(pidfd);
    pidfd = -1;
#else
    (void)base;
#endif
    return false;
}

/* guard - make [addr, addr+len) fault on access. */
static int guard(uintptr_t addr, size_t len)
{
    int mode = LOAD(&guardmode);
    if (mode != 2) {
        if (madvise((void *)addr, len, MADV_GUARD_INSTALL) == 0) {
            STORE(&guardmode, 1);
            return 0;
        }
        if (mode == 0) {
            /* Valgrind and pre-6.13 kernels answer EINVAL. */
            int expect = 0;
            if (atomic_compare_exchange_strong(&guardmode, &expect, 2) &&
                !weft__vg_on)
                fprintf(stderr, "weft: MADV_GUARD_INSTALL unavailable "
                                "(Linux < 6.13); using mprotect guards, "
                                "one VMA per stack\n");
        }
    }
    return mprotect((void *)addr, len, PROT_NONE) == 0 ? 0 : -errno;
}

static void *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* weft__stack_alloc - give s a stack of size usable bytes (already checked
 * against WEFT_STACK_MIN/MAX by the caller). Returns 0 or -ENOMEM. */
int weft__stack_alloc(struct stack *s, size_t size)
{
    size = (size + weft__pagesize - 1) & ~(weft__pagesize - 1);
    memset(s, 0, sizeof *s);
    uintptr_t base;
    if (size == WEFT_STACK_DEFAULT) {
        weft__lock(&slablock);
        struct slab *sl = slabs;
        if (sl == NULL || sl->used == SLAB_SLOTS) {
            size_t len = slotsize * SLAB_SLOTS;
            void *p = map(len);
            if (p == NULL) {
                weft__unlock(&slablock);
                return WEFT_ENOMEM;
            }
            sl = malloc(sizeof *sl);
            if (sl == NULL) {
                munmap(p, len);
                weft__unlock(&slablock);
                return WEFT_ENOMEM;
            }
            sl->base = (uintptr_t)p;
            sl->len = len;
            sl->used = 0;
            sl->guarded = guardslab(sl->base);
            sl->next = slabs;
            slabs = sl;
        }
        base = sl->base + (size_t)sl->used++ * slotsize;
        bool guarded = sl->guarded;
        weft__unlock(&slablock);
        s->slab = true;
        s->lo = base + GUARD_SIZE;
        s->hi = s->lo + size;
        if (guarded)
            return 0;
    } else {
        void *p = map(GUARD_SIZE + size);
        if (p == NULL)
            return WEFT_ENOMEM;
        base = (uintptr_t)p;
    }
    s->lo = base + GUARD_SIZE;
    s->hi = s->lo + size;
    int err = guard(base, GUARD_SIZE);
    if (err < 0) {
        if (!s->slab)
            munmap((void *)base, GUARD_SIZE + size);
        s->lo = s->hi = 0;
        return err;
    }
    return 0;
}

/* weft__stack_free - release a stack. Slab stacks are released with their
 * slab by weft__stack_fini (invariant 1). */
void weft__stack_free(struct stack *s)
{
    if (!s->slab && s->lo != 0) {
        /* A dead G's redzones stay poisoned (sanitizer.h 3); a later
         * mapping at this address (a dump's snapshot) must not see them. */
        if (__asan_unpoison_memory_region)
            __asan_unpoison_memory_region((void *)s->lo, s->hi - s->lo);
        munmap((void *)(s->lo - GUARD_SIZE), s->hi - s->lo + GUARD_SIZE);
    }
    s->lo = s->hi = 0;
}

/* weft__stack_trim - give back the memory of all but the top page. */
void weft__stack_trim(struct stack *s)
{
    if (s->hi - s->lo > weft__pagesize)
        madvise((void *)s->lo, s->hi - s->lo - weft__pagesize,
                MADV_DONTNEED);
}

bool weft__stack_guard_hit(const struct stack *s, uintptr_t addr)
{
    return s->lo != 0 && addr >= s->lo - GUARD_SIZE && addr < s->lo;
}

/* weft__stack_fini - release the runtime's stack resources; the slabs
 * only if unmap (not when a G abandoned in a syscall may still use its
 * stack). */
void weft__stack_fini(bool unmap)
{
    if (pidfd >= 0) {
        close(pidfd);
        pidfd = -1;
    }
    if (!unmap)
        return;
    weft__lock(&slablock);
    while (slabs != NULL) {
        struct slab *sl = slabs;
        slabs = sl->next;
        if (__asan_unpoison_memory_region) /* as in weft__stack_free */
            __asan_unpoison_memory_region((void *)sl->base, sl->len);
        munmap((void *)sl->base, sl->len);
        free(sl);
    }
    weft__unlock(&slablock);
}
