module nox.dev/test/upstreams/go

go 1.22
