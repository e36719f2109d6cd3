// Command broker_client connects to PostgreSQL with credentials from credential-broker and
// survives a password rotation.
//
// It fetches GET {BROKER_URL}/credentials/{db}, connects with pgx v4, and when the login is
// rejected (SQLSTATE 28P01 or 28000) calls POST /credentials/{db}/refresh once (If-Match: the
// version that failed) and connects again. Any other error, or a second rejection, is fatal.
//
// Environment: BROKER_URL (default http://127.0.0.1:2775), BROKER_TOKEN_FILE or BROKER_TOKEN,
// BROKER_DB (or the first argument). Prints one JSON line: {"user","refreshed","version_id"}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
)

const (
	httpTimeout    = 5 * time.Second // per broker request
	connectTimeout = 5 * time.Second // per database connection attempt
	max503Retries  = 5               // 503 answers (overloaded, credentials_expired) are retried this often
	maxRetryAfter  = 5 * time.Second // a longer Retry-After is capped
)

// Credentials is the part of the broker's JSON body this client uses.
type Credentials struct {
	Host      *string `json:"host"`
	Port      *int    `json:"port"`
	DBName    *string `json:"dbname"`
	Username  string  `json:"username"`
	Password  string  `json:"password"`
	VersionID string  `json:"version_id"`
}

// String keeps the password out of any %v formatting.
func (c Credentials) String() string {
	return fmt.Sprintf("Credentials{user=%s version_id=%s}", c.Username, c.VersionID)
}

// BrokerError is an error answer: the HTTP status and the stable code from its JSON body.
type BrokerError struct {
	Status  int
	Code    string
	Message string
}

func (e *BrokerError) Error() string {
	return fmt.Sprintf("broker answered %d %s: %s", e.Status, e.Code, e.Message)
}

// Client reads credentials from the broker and opens connections that survive one rotation.
type Client struct {
	URL, Token, DB string
	HTTP           *http.Client
}

// NewClientFromEnv reads BROKER_URL, BROKER_TOKEN_FILE or BROKER_TOKEN, and BROKER_DB.
func NewClientFromEnv(db string) (*Client, error) {
	token := strings.TrimSpace(os.Getenv("BROKER_TOKEN"))
	if path := os.Getenv("BROKER_TOKEN_FILE"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		token = strings.TrimSpace(string(data))
	}
	if token == "" {
		return nil, errors.New("set BROKER_TOKEN_FILE or BROKER_TOKEN")
	}
	if db == "" {
		db = os.Getenv("BROKER_DB")
	}
	if db == "" {
		return nil, errors.New("set BROKER_DB or pass the database name")
	}
	base := os.Getenv("BROKER_URL")
	if base == "" {
		base = "http://127.0.0.1:2775"
	}
	return &Client{
		URL:   strings.TrimRight(base, "/"),
		Token: token,
		DB:    db,
		// The broker is on localhost: never send its token through a proxy.
		HTTP: &http.Client{Timeout: httpTimeout, Transport: &http.Transport{Proxy: nil}},
	}, nil
}

// Credentials returns the current credentials.
func (c *Client) Credentials(ctx context.Context) (Credentials, error) {
	return c.call(ctx, http.MethodGet, "", "")
}

// Refresh asks the broker to fetch again, naming the version the database rejected.
func (c *Client) Refresh(ctx context.Context, failedVersion string) (Credentials, error) {
	return c.call(ctx, http.MethodPost, "/refresh", failedVersion)
}

func (c *Client) call(ctx context.Context, method, suffix, ifMatch string) (Credentials, error) {
	target := c.URL + "/credentials/" + url.PathEscape(c.DB) + suffix
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, target, nil)
		if err != nil {
			return Credentials{}, err
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
		req.Header.Set("Accept", "application/json")
		if ifMatch != "" {
			req.Header.Set("If-Match", strconv.Quote(ifMatch))
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return Credentials{}, err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return Credentials{}, err
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			var creds Credentials
			err := json.Unmarshal(body, &creds)
			return creds, err
		}
		brokerErr := errorFromBody(resp.StatusCode, body)
		if resp.StatusCode == http.StatusServiceUnavailable && attempt < max503Retries {
			delay := retryAfter(resp.Header.Get("Retry-After"))
			fmt.Fprintf(os.Stderr, "broker_client: %s %s: 503 %s, retrying in %s\n",
				method, req.URL.Path, brokerErr.Code, delay)
			select {
			case <-time.After(delay):
				continue
			case <-ctx.Done():
				return Credentials{}, ctx.Err()
			}
		}
		return Credentials{}, brokerErr
	}
}

func errorFromBody(status int, body []byte) *BrokerError {
	var parsed struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &parsed) != nil || parsed.Error.Code == "" {
		return &BrokerError{status, "unknown", fmt.Sprintf("HTTP %d without an error body", status)}
	}
	return &BrokerError{status, parsed.Error.Code, parsed.Error.Message}
}

// retryAfter reads a Retry-After header (delta-seconds): 1 s when absent, capped.
func retryAfter(value string) time.Duration {
	seconds, err := strconv.Atoi(strings.TrimSpace(value))
	if err != nil {
		return time.Second
	}
	delay := time.Duration(seconds) * time.Second
	if delay < 0 {
		return 0
	}
	if delay > maxRetryAfter {
		return maxRetryAfter
	}
	return delay
}

// IsAuthFailure tells whether the database rejected the user name or password.
func IsAuthFailure(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000")
}

// Connect connects, refreshing once if the database rejects the login. It returns the
// connection, the credentials it used and whether it had to refresh.
func (c *Client) Connect(ctx context.Context) (*pgx.Conn, Credentials, bool, error) {
	creds, err := c.Credentials(ctx)
	if err != nil {
		return nil, creds, false, err
	}
	conn, err := open(ctx, creds)
	if err == nil || !IsAuthFailure(err) {
		return conn, creds, false, err
	}
	fmt.Fprintf(os.Stderr, "broker_client: login rejected with version %s, refreshing\n", creds.VersionID)
	if creds, err = c.Refresh(ctx, creds.VersionID); err != nil {
		return nil, creds, true, err
	}
	// A second rejection is returned as it is: the broker has nothing newer to offer.
	conn, err = open(ctx, creds)
	return conn, creds, true, err
}

func open(ctx context.Context, creds Credentials) (*pgx.Conn, error) {
	if creds.Host == nil || creds.Port == nil || creds.DBName == nil {
		return nil, errors.New("the broker knows no host, port or database name for this database")
	}
	// Only host, port and database go through a connection string; user and password are set
	// on the parsed config, so they need no escaping.
	dsn := url.URL{
		Scheme:   "postgres",
		Host:     net.JoinHostPort(*creds.Host, strconv.Itoa(*creds.Port)),
		Path:     "/" + *creds.DBName,
		RawQuery: url.Values{"connect_timeout": {strconv.Itoa(int(connectTimeout.Seconds()))}}.Encode(),
	}
	config, err := pgx.ParseConfig(dsn.String())
	if err != nil {
		return nil, err
	}
	config.User = creds.Username
	config.Password = creds.Password
	return pgx.ConnectConfig(ctx, config)
}

func run() error {
	db := ""
	if len(os.Args) > 1 {
		db = os.Args[1]
	}
	client, err := NewClientFromEnv(db)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, creds, refreshed, err := client.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
		return err
	}
	line, err := json.Marshal(struct {
		User      string `json:"user"`
		Refreshed bool   `json:"refreshed"`
		VersionID string `json:"version_id"`
	}{user, refreshed, creds.VersionID})
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	return nil
}

func main() {
	if err := run(); err != nil {
		// pgx's connect errors name host, user and database, never the password.
		fmt.Fprintf(os.Stderr, "broker_client: %v\n", err)
		os.Exit(1)
	}
}
