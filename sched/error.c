/*
 * error.c - text for error codes, G statuses and wait reasons. The
 * status and wait-reason strings come from the X-macro lists in
 * runtime.h, so a dump always prints what the enums say.
 */
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
    X(ECLOSED, "channel closed")

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
