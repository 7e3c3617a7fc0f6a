// httpd.go - the Go peer of examples/httpd.c: a net/http server for
// bench/net.sh, driven by wrk and hey.
//
// Usage: httpd -port N   (listens on 127.0.0.1:N only)
//
// Routes (the contract examples/httpd.c answers the same way):
//
//	POST /sendjson  reads the request body (a small JSON document, read to
//	                its end and not otherwise checked) and answers 200 with
//	                Content-Type: application/json and the body
//	                {"message":"Hello, World!"}, encoded per request.
//	GET /           answers 200, text/plain, "hello\n".
//
// Anything else is 404; a wrong method on /sendjson is 405. Keep-alive is
// on (net/http's default). GOMAXPROCS comes from the environment (net.sh
// runs it with 1). Runs until killed; a listen error exits 1. Build with
// plain `go build` (GO111MODULE=off).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
)

type message struct {
	Message string `json:"message"`
}

func sendJSON(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	body, err := json.Marshal(message{Message: "Hello, World!"})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

func root(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "hello\n")
}

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1")
	flag.Parse()
	if *port <= 0 || *port > 65535 || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: httpd -port N")
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/sendjson", sendJSON)
	mux.HandleFunc("/", root)
	srv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", *port), Handler: mux}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintf(os.Stderr, "httpd(go): %v\n", err)
		os.Exit(1)
	}
}
