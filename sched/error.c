/*
 * error.c - text for error codes, G statuses and wait reasons. The
 * status and wait-reason strings come from the X-macro lists in
 * runtime.h, so a dump always prints what the enums say.
 */
#include <stdio.h>
#include <string.h>

#include "runtime.h"

#define WEFT_ERRNO_LIST(X)                                                     \
    X(EPERM, "operation not permitted")                                        \
    X(EINVAL, "invalid argument")                                              \
    X(ENOMEM, "not enough memory")                                             \
    X(EAGAIN, "resource temporarily unavailable")                              \
    X(EBUSY, "resource busy")                                                  \
    X(ETIMEDOUT, "timed out")                                                  \
    X(ECANCELED, "operation canceled")                                        \
    X(EDEADLK, "deadlock: waiting would close a wait-for cycle")

#define WEFT_OWN_LIST(X)                                                       \
    X(ENOTCORO, "not called from a weft coroutine")                            \
    X(ENORUNTIME, "the weft runtime is not running")                          \
    X(ECLOSED, "closed")                                                      \
    X(ENONAME, "name not resolved")

/* errname - "WEFT_" + the errno's name, for errnos without a WEFT_
 * macro: built once per errno into a static table, so the result is a
 * static string like every other answer here. */
static const char *errname(int e)
{
    static char names[134][24];
    static _Atomic uint8_t state[134]; /* 0 unset, 1 being written, 2 set */
    const char *base = strerrorname_np(e);
    if (e >= 134)
        return base;
    uint8_t st = 0;
    if (atomic_compare_exchange_strong(&state[e], &st, 1)) {
        snprintf(names[e], sizeof names[e], "WEFT_%s", base);
        atomic_store(&state[e], 2);
    } else {
        while (atomic_load(&state[e]) != 2)
            ;
    }
    return names[e];
}

WEFT_EXTERN const char *weft_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define X(name, text)                                                          \
    case -name:                                                                \
        return text;
        WEFT_ERRNO_LIST(X)
#undef X
#define X(name, text)                                                          \
    case WEFT_##name:                                                          \
        return text;
        WEFT_OWN_LIST(X)
#undef X
    }
    /* Any other errno (I/O errors keep theirs): the C library's text. */
    if (err < 0 && err > -4000 && strerrordesc_np(-err) != NULL)
        return strerrordesc_np(-err);
    return "unknown error";
}

WEFT_EXTERN const char *weft_err_name(int err)
{
    switch (err) {
    case 0:
        return "0";
#define X(name, text)                                                          \
    case -name:                                                                \
        return "WEFT_" #name;
        WEFT_ERRNO_LIST(X)
#undef X
#define X(name, text)                                                          \
    case WEFT_##name:                                                          \
        return "WEFT_" #name;
        WEFT_OWN_LIST(X)
#undef X
    }
    if (err < 0 && err > -4000 && strerrorname_np(-err) != NULL)
        return errname(-err);
    return "WEFT_EUNKNOWN";
}

const char *weft__gstatus_string(uint32_t status)
{
    switch (status) {
#define X(name, num, str)                                                      \
    case num:                                                                  \
        return str;
        WEFT_GSTATUS_LIST(X)
#undef X
    }
    return "???";
}

static const char *const waitreasons[] = {
#define X(name, str) [name] = str,
    WEFT_WAITREASON_LIST(X)
#undef X
};

const char *weft__waitreason_string(int reason)
{
    if (reason < 0 || reason >= WR__COUNT)
        return "";
    return waitreasons[reason];
}
