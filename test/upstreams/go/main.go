// An upstream for the path differential test (test/e2e/path-matching.test.ts) that routes
// the way Go's net/http ServeMux does: case-sensitive, ";" part of a segment's name, unclean
// paths redirected. Each answer names the resource that served it in the x-resource header
// (HEAD answers have no body).
//
//	nox-path-upstream-go <port>
package main

import (
	"fmt"
	"net/http"
	"os"
)

func resource(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-resource", name)
		w.Header().Set("content-type", "application/json")
		fmt.Fprintf(w, "{\"resource\":%q}", name)
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nox-path-upstream-go <port>")
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.Handle("/admin", resource("admin"))
	mux.Handle("/admin/", resource("admin"))
	mux.Handle("/public/", resource("public"))
	mux.Handle("/public/reports/", resource("reports"))
	mux.Handle("/public/reports", resource("reports"))
	mux.Handle("/api/", resource("api"))
	mux.Handle("/health", resource("health"))
	mux.Handle("/", resource("other"))
	addr := "127.0.0.1:" + os.Args[1]
	fmt.Println("listening on " + addr)
	if err := http.ListenAndServe(addr, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
