module nox.dev/test/cluster/pause

go 1.24
