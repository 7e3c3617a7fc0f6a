// echo.go - the Go peer of examples/echo.c: a TCP echo server, one
// goroutine per connection, for bench/net.sh.
//
// Usage: echo -port N   (listens on 127.0.0.1:N only)
//
// Each connection's goroutine reads into its own 4 KiB buffer and writes
// back what it read until the client closes. net.Conn sets TCP_NODELAY.
// GOMAXPROCS comes from the environment (net.sh runs it with 1). It prints
// nothing while serving and runs until killed; a listen error exits 1.
// Build with plain `go build` (GO111MODULE=off), as bench/net.sh does.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
)

func serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1")
	flag.Parse()
	if *port <= 0 || *port > 65535 || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: echo -port N")
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo(go): %v\n", err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				continue
			}
			fmt.Fprintf(os.Stderr, "echo(go): accept: %v\n", err)
			os.Exit(1)
		}
		go serve(c)
	}
}
