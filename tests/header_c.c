/*
 * header_c.c - <weft.h> on its own compiles as strict C11 (-std=c11
 * -pedantic -Werror, see meson.build), and every function it declares is
 * exported by libweft (this links against the shared library).
 */
#include <weft.h>
#include <weft_leak.h>

#include <string.h>

int main(void)
{
    /* Taking each address makes the link fail for a missing export. */
    void (*fns[])(void) = {
        (void (*)(void))weft_strerror,      (void (*)(void))weft_err_name,
        (void (*)(void))weft_main,          (void (*)(void))weft_go,
        (void (*)(void))weft_go_opts,       (void (*)(void))weft_yield,
        (void (*)(void))weft_self,          (void (*)(void))weft_procs,
        (void (*)(void))weft_now,           (void (*)(void))weft_sleep,
        (void (*)(void))weft_sleep_until,   (void (*)(void))weft__checkpoint_slow,
        (void (*)(void))weft_syscall_enter, (void (*)(void))weft_syscall_exit,
        (void (*)(void))weft_blocking,      (void (*)(void))weft_leak_snapshot,
        (void (*)(void))weft_leak_verify,   (void (*)(void))weft_leak_snapshot_free,
        (void (*)(void))weft_leak_main,     (void (*)(void))weft_leak_check,
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (fns[i] == 0)
            return 1;
    weft_checkpoint();
    return strcmp(weft_err_name(WEFT_EINVAL), "WEFT_EINVAL") != 0;
}
