/*
 * header_cpp.cpp - <weft.h> on its own compiles as C++11 (-std=c++11
 * -pedantic -Werror, see meson.build), and every function it declares is
 * exported by libweft (this links against the shared library).
 */
#include <weft.h>
#include <weft_leak.h>

#include <cstring>

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
        (void (*)(void))weft_blocking,
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (fns[i] == nullptr)
            return 1;
    weft_checkpoint();
    return std::strcmp(weft_err_name(WEFT_EINVAL), "WEFT_EINVAL") != 0;
}
