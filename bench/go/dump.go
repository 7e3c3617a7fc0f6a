// dump.go - the Go peer of bench/bench_dump.c: a process holding N parked
// goroutines, for bench/dump.sh to time Go's SIGQUIT dump of them.
//
// Usage: dump [N]      (default 100000; GOMAXPROCS from the environment)
//
// main locks stateMu, spawns N goroutines, waits (sync.WaitGroup) until
// every one has reached the call it parks in, sleeps 100 ms so the last
// ones are parked, prints "ready" on stdout and then sleeps forever
// (hour-long time.Sleep calls: a pending timer, so the runtime never
// declares a deadlock). dump.sh then sends SIGQUIT; Go prints "SIGQUIT:
// quit", every goroutine's traceback and the registers, and exits with
// status 2.
//
// Goroutine i takes path i%4, each 4 calls deep below its entry (worker),
// ending in a different wait; nothing ever wakes them:
//
//	0  worker -> serveConn -> readRequest -> <-reqCh       chan receive
//	1  worker -> runJob -> publish -> resCh <- v           chan send
//	2  worker -> pollEvents -> waitEvent -> select{evA,evB} select
//	3  worker -> updateState -> applyUpdate -> stateMu.Lock sync.Mutex
//
// bench_dump.c has the same functions, the same mix and the same order of
// steps. Every function is //go:noinline so the frames are real calls,
// as they are in C. Build with plain `go build` (GO111MODULE=off).
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

var (
	reqCh   = make(chan int) // nobody sends
	resCh   = make(chan int) // nobody receives
	evA     = make(chan int) // nobody sends
	evB     = make(chan int) // nobody sends
	stateMu sync.Mutex       // held by main for good
	parked  sync.WaitGroup
	sink    int // keeps results alive
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "dump(go): "+format+"\n", args...)
	os.Exit(1)
}

//go:noinline
func readRequest(id int) int {
	parked.Done()
	return <-reqCh + id
}

//go:noinline
func serveConn(id int) int {
	n := readRequest(id)
	return n + 1
}

//go:noinline
func publish(id int) int {
	parked.Done()
	resCh <- id
	return id
}

//go:noinline
func runJob(id int) int {
	n := publish(id)
	return n + 1
}

//go:noinline
func waitEvent(id int) int {
	parked.Done()
	select {
	case v := <-evA:
		return v + id
	case v := <-evB:
		return v - id
	}
}

//go:noinline
func pollEvents(id int) int {
	n := waitEvent(id)
	return n + 1
}

//go:noinline
func applyUpdate(id int) int {
	parked.Done()
	stateMu.Lock()
	stateMu.Unlock()
	return id
}

//go:noinline
func updateState(id int) int {
	n := applyUpdate(id)
	return n + 1
}

//go:noinline
func worker(id int) {
	var n int
	switch id % 4 {
	case 0:
		n = serveConn(id)
	case 1:
		n = runJob(id)
	case 2:
		n = pollEvents(id)
	default:
		n = updateState(id)
	}
	sink += n // never reached: nothing wakes a worker
}

func main() {
	n := 100000
	if len(os.Args) > 2 {
		fail("usage: dump [N]")
	}
	if len(os.Args) == 2 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fail("bad count %q", os.Args[1])
		}
		n = v
	}
	stateMu.Lock()
	parked.Add(n)
	for i := 0; i < n; i++ {
		go worker(i)
	}
	parked.Wait()
	time.Sleep(100 * time.Millisecond) // the last ones reach their park
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour)
	}
}
