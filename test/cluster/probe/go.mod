module nox.dev/test/cluster/probe

go 1.24
