// bench_sync.go - the Go peer of bench/bench_sync.c.
//
// A standalone program, like bench_sched.go beside it: build each file on
// its own (`go build bench_sync.go`, GO111MODULE=off), as bench/run.sh does.
//
// The same four workloads, with the same structure, so that bench/run.sh can
// divide weft's figure by Go's:
//
//	pingpong  goroutines A and B bounce an int over two unbuffered
//	          channels: A sends i on ping and expects i+1 on pong, N
//	          times, then closes ping; B answers until ping is closed.
//	          A times its loop. ns per round trip.
//	chanbuf   a producer sends 0..N-1 (int64) into a channel of capacity
//	          128 and closes it; a consumer ranges over it, counting and
//	          summing, and stamps the end. Items per second, from main's
//	          start before the spawns to the consumer's last receive.
//	mutex     G goroutines each Lock a sync.Mutex, increment a shared
//	          counter and Unlock, M times; ns per Lock+Unlock.
//	select2   two buffered channels of capacity M, each filled with
//	          0..M-1 before the clock starts; one goroutine runs M
//	          two-case receive selects (both always ready). Each channel's
//	          values must arrive in order and each case must win 45..55%.
//	          ns per select.
//
// GOMAXPROCS comes from the environment. Output is one benchstat line per
// run, e.g. "BenchmarkPingPong/impl=go/procs=1\t1000000\t215.3 ns/op"; a
// wrong result exits with status 1.
//
// BENCH_PROFILE=1, as in bench_sync.c: runtime.SetBlockProfileRate(1) and
// runtime.SetMutexProfileFraction(1) before the benchmark, "/profile=on"
// at the end of the benchstat name, then "# profile block=N mutex=M"
// (the records in each profile at the end).
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

const (
	pingpongN  = 1000000  // round trips
	chanbufN   = 10000000 // items
	chanbufCap = 128
	mutexG     = 4
	mutexM     = 1000000 // Lock/Unlock pairs per goroutine
	selectM    = 1000000 // selects
)

func procs() int { return runtime.GOMAXPROCS(0) }

// profSuffix ends the benchstat name: "/profile=on" under BENCH_PROFILE=1.
var profSuffix = ""

// profileOn records every blocking event and every mutex contention from
// here on, under BENCH_PROFILE=1.
func profileOn() {
	if os.Getenv("BENCH_PROFILE") != "1" {
		return
	}
	runtime.SetBlockProfileRate(1)
	runtime.SetMutexProfileFraction(1)
	profSuffix = "/profile=on"
}

// profileReport prints the records in each profile under BENCH_PROFILE=1.
func profileReport() {
	if profSuffix == "" {
		return
	}
	fmt.Printf("# profile block=%d mutex=%d\n",
		pprof.Lookup("block").Count(), pprof.Lookup("mutex").Count())
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "bench_sync(go): "+format+"\n", args...)
	os.Exit(1)
}

// Workers count themselves out in finished; main polls it (1 ms sleeps),
// as weft's main does. Stamps are ns since base.
var (
	finished int64
	tStart   int64
	tEnd     int64
	base     time.Time
)

func since() int64 { return time.Since(base).Nanoseconds() }

func waitFinished(n int64) {
	for atomic.LoadInt64(&finished) != n {
		time.Sleep(time.Millisecond)
	}
}

// ------------------------------------------------------------- pingpong

func ppA(ping chan<- int, pong <-chan int) {
	start := since()
	for i := 0; i < pingpongN; i++ {
		ping <- i
		v, ok := <-pong
		if !ok || v != i+1 {
			fail("pingpong: round %d: got %d (ok=%v), want %d", i, v, ok, i+1)
		}
	}
	atomic.StoreInt64(&tEnd, since())
	atomic.StoreInt64(&tStart, start)
	close(ping)
	atomic.AddInt64(&finished, 1)
}

func ppB(ping <-chan int, pong chan<- int) {
	answered := 0
	for v := range ping {
		pong <- v + 1
		answered++
	}
	if answered != pingpongN {
		fail("pingpong: B answered %d, want %d", answered, pingpongN)
	}
	close(pong)
	atomic.AddInt64(&finished, 1)
}

func benchPingPong() {
	base = time.Now()
	ping, pong := make(chan int), make(chan int)
	go ppB(ping, pong)
	go ppA(ping, pong)
	waitFinished(2)
	el := atomic.LoadInt64(&tEnd) - atomic.LoadInt64(&tStart)
	fmt.Printf("BenchmarkPingPong/impl=go/procs=%d%s\t%d\t%.1f ns/op\n",
		procs(), profSuffix, pingpongN, float64(el)/pingpongN)
	profileReport()
}

// -------------------------------------------------------------- chanbuf

func cbProducer(c chan<- int64) {
	for i := int64(0); i < chanbufN; i++ {
		c <- i
	}
	close(c)
	atomic.AddInt64(&finished, 1)
}

func cbConsumer(c <-chan int64) {
	var n, sum int64
	for v := range c {
		if v != n { // one producer: values arrive in order
			fail("chanbuf: item %d is %d", n, v)
		}
		sum += v
		n++
	}
	atomic.StoreInt64(&tEnd, since())
	const want = int64(chanbufN) * (chanbufN - 1) / 2
	if n != chanbufN || sum != want {
		fail("chanbuf: received %d items summing to %d, want %d summing to %d",
			n, sum, chanbufN, want)
	}
	atomic.AddInt64(&finished, 1)
}

func benchChanBuf() {
	c := make(chan int64, chanbufCap)
	base = time.Now()
	go cbConsumer(c)
	go cbProducer(c)
	waitFinished(2)
	el := atomic.LoadInt64(&tEnd)
	fmt.Printf("BenchmarkChanBuf/impl=go/procs=%d%s\t%d\t%.0f items/s\n",
		procs(), profSuffix, chanbufN, float64(chanbufN)*1e9/float64(el))
	profileReport()
}

// ---------------------------------------------------------------- mutex

var (
	mxMu      sync.Mutex
	mxCounter int64 // guarded by mxMu
)

func mxWorker() {
	for i := 0; i < mutexM; i++ {
		mxMu.Lock()
		mxCounter++
		mxMu.Unlock()
	}
	if atomic.AddInt64(&finished, 1) == mutexG {
		atomic.StoreInt64(&tEnd, since())
	}
}

func benchMutex() {
	base = time.Now()
	for i := 0; i < mutexG; i++ {
		go mxWorker()
	}
	waitFinished(mutexG)
	mxMu.Lock()
	counter := mxCounter
	mxMu.Unlock()
	const total = int64(mutexG) * mutexM
	if counter != total {
		fail("mutex: counter %d, want %d", counter, total)
	}
	el := atomic.LoadInt64(&tEnd)
	fmt.Printf("BenchmarkMutex/impl=go/procs=%d%s\t%d\t%.1f ns/op\n",
		procs(), profSuffix, total, float64(el)/float64(total))
	profileReport()
}

// -------------------------------------------------------------- select2

func benchSelect2() {
	a, b := make(chan int, selectM), make(chan int, selectM)
	for i := 0; i < selectM; i++ {
		a <- i
		b <- i
	}
	var next [2]int // the value each channel must deliver next
	start := time.Now()
	for i := 0; i < selectM; i++ {
		var k, v int
		var ok bool
		select {
		case v, ok = <-a:
			k = 0
		case v, ok = <-b:
			k = 1
		}
		if !ok {
			fail("select2: select %d: case %d: channel closed", i, k)
		}
		if v != next[k] {
			fail("select2: select %d: case %d gave %d, want %d", i, k, v, next[k])
		}
		next[k]++
	}
	el := time.Since(start).Nanoseconds()
	for k := 0; k < 2; k++ {
		if next[k] < selectM*45/100 || next[k] > selectM*55/100 {
			fail("select2: case %d chosen %d times of %d: not uniform",
				k, next[k], selectM)
		}
	}
	fmt.Printf("BenchmarkSelect2/impl=go/procs=%d%s\t%d\t%.1f ns/op\n",
		procs(), profSuffix, selectM, float64(el)/selectM)
	profileReport()
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: bench_sync pingpong|chanbuf|mutex|select2")
	}
	profileOn()
	switch os.Args[1] {
	case "pingpong":
		benchPingPong()
	case "chanbuf":
		benchChanBuf()
	case "mutex":
		benchMutex()
	case "select2":
		benchSelect2()
	default:
		fail("unknown benchmark %q", os.Args[1])
	}
}
