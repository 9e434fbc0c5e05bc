// The pod sandbox's process ("pause"): holds the pod's namespaces open, reaps the zombies
// of processes that share its PID namespace, and exits on SIGTERM/SIGINT. Built static
// (CGO_ENABLED=0) into an otherwise empty image by scripts/tools.sh.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
