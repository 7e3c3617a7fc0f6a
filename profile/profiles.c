/*
 * profiles.c - the goroutine, threadcreate, block and mutex profiles,
 * weft_profile_write/count, the block and mutex rates, and coroutine
 * labels. (Skeleton: filled in by issue 6's profile work.)
 */
#include "pprof.h"
#include "runtime.h"

WEFT_EXTERN int weft_profile_write(const char *name, int fd, int debug)
{
    return -ENOSYS;
}

WEFT_EXTERN int64_t weft_profile_count(const char *name)
{
    return -ENOSYS;
}

WEFT_EXTERN int64_t weft_set_block_profile_rate(int64_t rate)
{
    return 0;
}

WEFT_EXTERN int weft_set_mutex_profile_fraction(int rate)
{
    return 0;
}

WEFT_EXTERN int weft_label_set(const char *key, const char *value)
{
    return -ENOSYS;
}

WEFT_EXTERN int weft_label_get(const char *key, char *buf, size_t n)
{
    return -ENOSYS;
}

void weft__labels_ref(struct weft__labels *l) {}
void weft__labels_unref(struct weft__labels *l) {}
