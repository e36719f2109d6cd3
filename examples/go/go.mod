module example.com/credential-broker/examples/go

go 1.19

// The versions Debian 12 ships (golang-github-jackc-pgx-v4-dev, golang-github-jackc-pgconn-dev),
// which CI builds this example with in GOPATH mode; newer v4 releases work the same.
require (
	github.com/jackc/pgconn v1.11.0
	github.com/jackc/pgx/v4 v4.15.0
)
