# weft - a thin Makefile over meson.
#
#   make demo     install missing packages, build, run the demo
#   make test     install missing packages, build, run every test suite in
#                 build/, an ASan+UBSan build and a TSan build, cross-build
#                 for aarch64 and run its tests under qemu, print the summary
#   make          build (build/: debugoptimized, -Werror)
#   make bench    benchmarks vs their Go peers, release build (build-release/):
#                 bench/run.sh, then bench/net.sh, then bench/dump.sh (the
#                 SIGQUIT dump of 100,000 parked coroutines vs Go's), then
#                 bench/profiling.sh (what profiling and the leak monitor
#                 cost)
#   make bench-net  the network benchmarks only (echo, httpd vs Go, libuv)
#   make asan     the test suites under ASan+UBSan only (build-asan/)
#   make valgrind the test suites of build/ under valgrind
#   make cross-aarch64  assemble sched/context_aarch64.S for aarch64
#   make clean    remove every build dir
#
# Package checks (scripts/deps.sh) run first; SKIP_DEPS=1 skips them. A build
# dir is set up once, when it lacks build.ninja; meson regenerates it when a
# meson.build changes. Change the options below, then `make clean`.

MESON ?= meson
NINJA ?= ninja
CROSS_CC ?= aarch64-linux-gnu-gcc

BUILD := build
ASAN_BUILD := build-asan
TSAN_BUILD := build-tsan
RELEASE_BUILD := build-release
CROSS_BUILD := build-cross

SETUP_OPTS_$(BUILD) := --buildtype=debugoptimized -Dwerror=true
SETUP_OPTS_$(ASAN_BUILD) := --buildtype=debug \
	-Db_sanitize=address,undefined -Db_lundef=false
SETUP_OPTS_$(TSAN_BUILD) := --buildtype=debug \
	-Db_sanitize=thread -Db_lundef=false -Dbench=false -Dexamples=false
SETUP_OPTS_$(RELEASE_BUILD) := --buildtype=release

MESON_TEST := $(MESON) test --print-errorlogs --num-processes 2
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	HARNESS_TIMEOUT_SCALE=3
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:suppressions=$(CURDIR)/tests/tsan.supp \
	HARNESS_TIMEOUT_SCALE=5
VALGRIND := valgrind -q --error-exitcode=99 --leak-check=full \
	--errors-for-leak-kinds=definite --show-leak-kinds=definite
VALGRIND_ENV := HARNESS_TIMEOUT_SCALE=20

# The demo: every example in DEMOS is built, then shown by its demo-NAME
# rule, in order. A new demo adds its name here and a demo-NAME rule.
DEMOS := hello pipeline httpd leaky

MAKEFLAGS += --no-print-directory
# meson and ninja parallelise; make's own steps must run in order.
.NOTPARALLEL:
.PHONY: all deps demo demo-build $(addprefix demo-,$(DEMOS)) test asan \
	valgrind bench bench-net cross-aarch64 clean

all: $(BUILD)/build.ninja
	@$(NINJA) -C $(BUILD) --quiet

deps:
ifeq ($(SKIP_DEPS),)
	@bash scripts/deps.sh
endif

# $(call setup,DIR): shell commands that set DIR up with SETUP_OPTS_DIR
# unless it has build.ninja. A dir without build.ninja holds no finished
# setup, so it is started afresh; meson's chatter goes to DIR/setup.log.
setup = { [ -f $(1)/build.ninja ] || { \
	echo "meson setup $(1) $(SETUP_OPTS_$(1))"; \
	rm -rf $(1) && mkdir -p $(1) && \
	$(MESON) setup $(1) $(SETUP_OPTS_$(1)) >$(1)/setup.log 2>&1 || \
	{ cat $(1)/setup.log; rm -f $(1)/build.ninja; false; }; }; }

%/build.ninja: | deps
	@$(call setup,$*)

# ------------------------------------------------------------------ demo

demo: demo-build $(addprefix demo-,$(DEMOS))

demo-build: $(BUILD)/build.ninja
	@$(NINJA) -C $(BUILD) --quiet $(addprefix examples/,$(DEMOS))

demo-hello: demo-build
	@echo "\$$ WEFTMAXPROCS=1 $(BUILD)/examples/hello"
	@WEFTMAXPROCS=1 $(BUILD)/examples/hello
	@echo
	@echo "\$$ $(BUILD)/examples/hello"
	@$(BUILD)/examples/hello

demo-pipeline: demo-build
	@echo
	@echo "\$$ $(BUILD)/examples/pipeline 200000"
	@$(BUILD)/examples/pipeline 200000

# The demo's server: examples/httpd under curl and hey (scripts/demo-httpd.sh).
demo-httpd: demo-build
	@echo
	@bash scripts/demo-httpd.sh $(BUILD)

# The leak monitor: examples/leaky's socket leak, found and classified
# (one report: the monitor samples every 200 ms and needs 12 samples).
demo-leaky: demo-build
	@echo
	@echo "\$$ $(BUILD)/examples/leaky --mode socket --seconds 3 --period 200"
	@$(BUILD)/examples/leaky --mode socket --seconds 3 --period 200 2>&1 | \
		awk '/^weft: leakcheck/ { n++ } n == 2 { exit } { print }'

# ----------------------------------------------------------------- tests

# $(call suite,DIR,ENV,MESON_TEST_ARGS): shell commands that set up and
# build DIR and run its test suites. A stale test log must not stand in for
# a run that did not happen, so it goes first.
suite = rm -f $(1)/meson-logs/testlog.json; \
	echo "== test suites: $(1)"; \
	$(call setup,$(1)) && $(NINJA) -C $(1) --quiet && \
	$(2) $(MESON_TEST) -C $(1) --no-rebuild $(3)

# Every step runs even when one fails; summary.sh sets the exit status and
# prints the last line, "TOTAL: N passed, N failed, N skipped".
test: deps
	@$(call suite,$(BUILD)); \
	$(call suite,$(ASAN_BUILD),$(ASAN_ENV),--timeout-multiplier 3); \
	$(call suite,$(TSAN_BUILD),$(TSAN_ENV),--timeout-multiplier 5); \
	echo "== cross-aarch64"; \
	$(CROSS_CHECK) && cross=0 || cross=$$?; \
	echo; \
	bash scripts/summary.sh $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) \
		--check cross-aarch64=$$cross

asan: deps
	@$(call suite,$(ASAN_BUILD),$(ASAN_ENV),--timeout-multiplier 3); \
	bash scripts/summary.sh $(ASAN_BUILD)

# Uses the tests' own "valgrind" test setup when one is defined.
valgrind: $(BUILD)/build.ninja
	@rm -f $(BUILD)/meson-logs/testlog-valgrind.json
	@$(NINJA) -C $(BUILD) --quiet
	@if grep -qs "add_test_setup('valgrind'" meson.build */meson.build; \
	then how="--setup valgrind"; else how="--wrapper '$(VALGRIND)'"; fi; \
	eval $(VALGRIND_ENV) $(MESON_TEST) -C $(BUILD) --no-rebuild \
		--timeout-multiplier 20 $$how; \
	bash scripts/summary.sh $(BUILD)/meson-logs/testlog-valgrind.json

# Assembles the aarch64 context switch with the cross compiler: a check
# that it stays valid while the tests run on x86-64 only.
# The whole runtime, C and assembly, compiled for aarch64 and linked into
# a static archive: the arch-specific parts (context_aarch64.S, ctx_make)
# must build there with the same warnings as at home.
# Under emulation the heavy and timing-ratio tests are left out.
CROSS_SKIP := '!stress' '!spawn_1m' '!fairness'
CROSS_SRC := $(wildcard sched/*.c netpoll/*.c profile/*.c) \
	sched/context_aarch64.S
CROSS_CHECK = mkdir -p $(CROSS_BUILD) && \
	for f in $(CROSS_SRC); do \
	$(CROSS_CC) -c -std=gnu11 -O2 -Wall -Wextra -Werror -Wno-unused-parameter \
	-Iinclude -Isched -Inetpoll -Iprofile -D_GNU_SOURCE -DWEFT_BUILDING=1 \
	-fPIC $$f -o $(CROSS_BUILD)/$$(echo $$f | tr / _).o || exit 1; done && \
	aarch64-linux-gnu-ar rcs $(CROSS_BUILD)/libweft.a $(CROSS_BUILD)/*.o && \
	echo "ok: the runtime cross-compiles for aarch64 ($(CROSS_BUILD)/libweft.a)" && \
	for t in test_runq test_sched; do \
	$(CROSS_CC) -O2 -static -std=gnu11 -D_GNU_SOURCE -Iinclude -Isched \
	-Inetpoll -Iprofile tests/$$t.c $(CROSS_BUILD)/libweft.a -lpthread \
	-o $(CROSS_BUILD)/$$t || exit 1; \
	HARNESS_TIMEOUT_SCALE=5 qemu-aarch64 $(CROSS_BUILD)/$$t $(CROSS_SKIP) \
	> $(CROSS_BUILD)/$$t.tap 2>&1; rc=$$?; \
	grep -E '^not ok|^\# [0-9]+ passed' $(CROSS_BUILD)/$$t.tap; \
	[ $$rc = 0 ] || exit 1; done && \
	echo "ok: test_runq and test_sched pass on aarch64 under qemu-aarch64"

cross-aarch64: | deps
	@$(CROSS_CHECK)

# ----------------------------------------------------------------- bench

# bench/run.sh runs each benchmark against its Go peer, bench/net.sh the
# echo and HTTP servers against Go and libuv (server and client pinned to
# CPUs 0 and 1), bench/dump.sh times the SIGQUIT dump of 100,000 parked
# coroutines against Go's and weft's second weft_dump against its first,
# bench/profiling.sh what profiling costs (CPU profile under httpd load,
# block/mutex profiles, the contention-hook checks against a build
# without them in $(RELEASE_BUILD)-nohook, httpd with the leak monitor at
# 1 s against without it); each prints benchstat lines and RATIO lines,
# and exits 1 if any run failed. `make bench` runs all four even when one
# fails.
bench: $(RELEASE_BUILD)/build.ninja
	@$(NINJA) -C $(RELEASE_BUILD) --quiet
	@rc=0; bash bench/run.sh $(RELEASE_BUILD) || rc=1; \
	echo; bash bench/net.sh $(RELEASE_BUILD) || rc=1; \
	echo; bash bench/dump.sh $(RELEASE_BUILD) || rc=1; \
	echo; bash bench/profiling.sh $(RELEASE_BUILD) || rc=1; exit $$rc

bench-net: $(RELEASE_BUILD)/build.ninja
	@$(NINJA) -C $(RELEASE_BUILD) --quiet
	@bash bench/net.sh $(RELEASE_BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(RELEASE_BUILD) $(CROSS_BUILD) \
	    $(RELEASE_BUILD)-nohook
