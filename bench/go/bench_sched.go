// bench_sched.go - the Go peer of bench/bench_sched.c.
//
// The same four workloads, with the same structure, so that bench/run.sh can
// divide weft's figure by Go's:
//
//	spawn   spawn N goroutines that each bump an atomic counter, then wait
//	        (runtime.Gosched loop) until all have run; ns per spawn+complete.
//	yield   2 goroutines each calling runtime.Gosched() M times; ns per
//	        Gosched (elapsed / total calls). main sleeps meanwhile.
//	parked  N goroutines parked for good on a channel receive; VmRSS growth
//	        per goroutine, read from /proc/self/status after runtime.GC().
//	fanout  T CPU-bound tasks of integer hashing; total ns until the last
//	        finishes. run.sh runs it with GOMAXPROCS=1 and 2 for the speedup.
//
// GOMAXPROCS comes from the environment. Output is one benchstat line per
// run, e.g. "BenchmarkSpawn/impl=go/procs=2\t1000000\t132.0 ns/op"; a wrong
// result exits with status 1. Build with plain `go build` (GO111MODULE=off).
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const (
	spawnN  = 1000000
	yieldM  = 5000000
	parkedN = 1000000
	fanoutT = 10000
	fanoutK = 40000 // hashing rounds per fan-out task
	// The sum of every task's hash; bench_sched.c checks the same constant.
	fanoutSum = 0x35965451c4518a43
)

func procs() int { return runtime.GOMAXPROCS(0) }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "bench_sched(go): "+format+"\n", args...)
	os.Exit(1)
}

// vmRSS returns the process's resident set size in bytes.
func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fail("open /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmRSS:") {
			fields := strings.Fields(line[len("VmRSS:"):])
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				fail("bad VmRSS line %q", line)
			}
			return kb * 1024
		}
	}
	fail("no VmRSS in /proc/self/status")
	return 0
}

var spawnDone int64

func spawnOne() { atomic.AddInt64(&spawnDone, 1) }

func benchSpawn() {
	start := time.Now()
	for i := 0; i < spawnN; i++ {
		go spawnOne()
	}
	for atomic.LoadInt64(&spawnDone) != spawnN {
		runtime.Gosched()
	}
	el := time.Since(start).Nanoseconds()
	if n := atomic.LoadInt64(&spawnDone); n != spawnN {
		fail("spawn: done=%d, want %d", n, spawnN)
	}
	fmt.Printf("BenchmarkSpawn/impl=go/procs=%d\t%d\t%.1f ns/op\n",
		procs(), spawnN, float64(el)/spawnN)
}

var (
	yieldCalls    int64
	yieldFinished int64
	yieldEnd      int64 // ns since yieldBase, set by the last yielder
	yieldBase     time.Time
)

func yielder() {
	for i := 0; i < yieldM; i++ {
		runtime.Gosched()
	}
	atomic.AddInt64(&yieldCalls, yieldM)
	if atomic.AddInt64(&yieldFinished, 1) == 2 {
		atomic.StoreInt64(&yieldEnd, time.Since(yieldBase).Nanoseconds())
	}
}

func benchYield() {
	yieldBase = time.Now()
	go yielder()
	go yielder()
	for atomic.LoadInt64(&yieldFinished) != 2 {
		time.Sleep(time.Millisecond)
	}
	calls := atomic.LoadInt64(&yieldCalls)
	if calls != 2*yieldM {
		fail("yield: %d calls, want %d", calls, 2*yieldM)
	}
	el := atomic.LoadInt64(&yieldEnd)
	fmt.Printf("BenchmarkYield/impl=go/procs=%d\t%d\t%.1f ns/op\n",
		procs(), calls, float64(el)/float64(calls))
}

var parkedCount int64

func parker(ch chan struct{}) {
	atomic.AddInt64(&parkedCount, 1)
	<-ch
}

func benchParked() {
	ch := make(chan struct{})
	runtime.GC()
	before := vmRSS()
	for i := 0; i < parkedN; i++ {
		go parker(ch)
	}
	for atomic.LoadInt64(&parkedCount) != parkedN {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the last ones reach the receive
	runtime.GC()
	after := vmRSS()
	fmt.Printf("BenchmarkParkedRSS/impl=go\t%d\t%d B/op\n",
		parkedN, (after-before)/parkedN)
	runtime.KeepAlive(ch)
}

// fanoutHash is the work of one fan-out task: a chain of multiply-xorshift
// rounds (splitmix64's finaliser). bench_sched.c has the same arithmetic.
func fanoutHash(seed uint64) uint64 {
	x := seed*0x9e3779b97f4a7c15 + 1
	for k := uint64(0); k < fanoutK; k++ {
		x ^= x >> 31
		x *= 0xbf58476d1ce4e5b9
		x ^= x >> 29
		x += k
	}
	return x
}

var (
	fanoutAcc      uint64
	fanoutFinished int64
	fanoutEnd      int64 // ns since fanoutBase, set by the last task
	fanoutBase     time.Time
)

func fanoutTask(i int) {
	atomic.AddUint64(&fanoutAcc, fanoutHash(uint64(i)))
	if atomic.AddInt64(&fanoutFinished, 1) == fanoutT {
		atomic.StoreInt64(&fanoutEnd, time.Since(fanoutBase).Nanoseconds())
	}
}

func benchFanout() {
	fanoutBase = time.Now()
	for i := 0; i < fanoutT; i++ {
		go fanoutTask(i)
	}
	for atomic.LoadInt64(&fanoutFinished) != fanoutT {
		time.Sleep(time.Millisecond)
	}
	sum := atomic.LoadUint64(&fanoutAcc)
	if sum != fanoutSum {
		fail("fanout: checksum %#x, want %#x", sum, uint64(fanoutSum))
	}
	fmt.Printf("BenchmarkFanout/impl=go/procs=%d\t1\t%d ns/op\n",
		procs(), atomic.LoadInt64(&fanoutEnd))
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: bench_sched spawn|yield|parked|fanout")
	}
	switch os.Args[1] {
	case "spawn":
		benchSpawn()
	case "yield":
		benchYield()
	case "parked":
		benchParked()
	case "fanout":
		benchFanout()
	default:
		fail("unknown benchmark %q", os.Args[1])
	}
}
