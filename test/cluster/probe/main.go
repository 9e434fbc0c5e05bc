// The test node's probe: a static HTTP server in an otherwise empty image, so a test can ask
// a pod what the pod sees. Endpoints (all GET, JSON answers):
//
//	/healthz                 200 once serving (readiness and liveness)
//	/whoami                  hostname, the pod's addresses, how many times it started on its volume
//	/resolve?name=<dns name> the addresses the pod's resolver (its /etc/resolv.conf) returns
//	/fetch?url=<http url>    status and body of a GET made from inside the pod
//
// With DATA_DIR set, each start appends a line to $DATA_DIR/starts, so a test sees that a
// volume outlives the container and where its files land on the node.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	listen := os.Getenv("LISTEN")
	if listen == "" {
		listen = ":8080"
	}
	starts, err := recordStart(os.Getenv("DATA_DIR"))
	if err != nil {
		log.Fatalf("recording the start in DATA_DIR: %v", err)
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { reply(w, 200, map[string]string{"status": "ok"}) })
	http.HandleFunc("/whoami", func(w http.ResponseWriter, _ *http.Request) {
		host, _ := os.Hostname()
		reply(w, 200, map[string]any{"hostname": host, "addresses": addresses(), "starts": starts})
	})
	http.HandleFunc("/resolve", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, name)
		if err != nil {
			reply(w, 502, map[string]any{"name": name, "error": err.Error()})
			return
		}
		reply(w, 200, map[string]any{"name": name, "addresses": addrs})
	})
	http.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		target := r.URL.Query().Get("url")
		client := http.Client{Timeout: 5 * time.Second}
		res, err := client.Get(target)
		if err != nil {
			reply(w, 502, map[string]any{"url": target, "error": err.Error()})
			return
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		reply(w, 200, map[string]any{"url": target, "status": res.StatusCode, "body": string(body)})
	})
	log.Printf("probe listening on %s (start %d)", listen, starts)
	log.Fatal(http.ListenAndServe(listen, nil))
}

// recordStart appends this start to DATA_DIR/starts and returns how many starts it holds.
func recordStart(dir string) (int, error) {
	if dir == "" {
		return 0, nil
	}
	path := filepath.Join(dir, "starts")
	host, _ := os.Hostname()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	if _, err := fmt.Fprintf(f, "%s %s\n", host, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strings.Count(string(data), "\n"), nil
}

func addresses() []string {
	var out []string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok && !ipnet.IP.IsLoopback() {
			out = append(out, ipnet.IP.String())
		}
	}
	return out
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
