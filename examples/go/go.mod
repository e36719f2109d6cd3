module example.com/credential-broker/examples/go

go 1.25

require github.com/jackc/pgx/v5 v5.10.0
