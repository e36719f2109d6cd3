#!/usr/bin/env python3
"""Connect to PostgreSQL with credentials from credential-broker, surviving a password rotation.

Fetches GET {BROKER_URL}/credentials/{db}, connects with psycopg 3, and when the login is
rejected calls POST /credentials/{db}/refresh once (If-Match: the version that failed) and
connects again. Any other error, or a second rejected login, is fatal.

Environment: BROKER_URL (default http://127.0.0.1:2775), BROKER_TOKEN_FILE or BROKER_TOKEN,
BROKER_DB (or the first argument). Prints one JSON line: {"user", "refreshed", "version_id"}.
Needs only psycopg[binary] (see requirements.txt) and the standard library.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

import psycopg
from psycopg import errors

HTTP_TIMEOUT = 5  # seconds, per broker request
CONNECT_TIMEOUT = 5  # seconds, per database connection attempt
MAX_503_RETRIES = 5  # 503 answers (overloaded, credentials_expired) are retried this often
MAX_RETRY_AFTER = 5  # seconds; a longer Retry-After is capped

# The broker is on localhost: never send its token through an HTTP proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# SQLSTATE 28P01 (invalid_password) and 28000 (invalid_authorization_specification).
AUTH_ERRORS = (errors.InvalidPassword, errors.InvalidAuthorizationSpecification)


class BrokerError(Exception):
    """The broker answered with an error: HTTP status and the stable `code` from its JSON body."""

    def __init__(self, status, code, message):
        super().__init__(f"broker answered {status} {code}: {message}")
        self.status = status
        self.code = code


def is_auth_failure(err):
    """Whether a psycopg error means the database rejected the user name or password.

    psycopg raises the SQLSTATE classes above when it has the server's error fields. For a
    failed connection attempt libpq keeps only the message text, so psycopg raises a plain
    OperationalError without a sqlstate (psycopg/psycopg#1188). For those, the connection state
    tells: libpq sent a password and the server still refused the connection. Message text is
    never matched (the server localizes it).
    """
    if isinstance(err, AUTH_ERRORS):
        return True
    if err.sqlstate is not None or not isinstance(err, psycopg.OperationalError):
        return False
    return bool(getattr(err.pgconn, "used_password", False))


class BrokerClient:
    """Reads credentials from the broker and opens connections that survive one rotation."""

    def __init__(self, url, token, db):
        self.url = url.rstrip("/")
        self.token = token
        self.db = db

    @classmethod
    def from_env(cls, db=None):
        token_file = os.environ.get("BROKER_TOKEN_FILE")
        if token_file:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        else:
            token = os.environ.get("BROKER_TOKEN", "").strip()
        if not token:
            raise SystemExit("broker_client: set BROKER_TOKEN_FILE or BROKER_TOKEN")
        db = db or os.environ.get("BROKER_DB")
        if not db:
            raise SystemExit("broker_client: set BROKER_DB or pass the database name")
        return cls(os.environ.get("BROKER_URL", "http://127.0.0.1:2775"), token, db)

    def credentials(self):
        """The current credentials (a dict, as the broker's JSON body)."""
        return self._call("GET", f"/credentials/{self.db}", {})

    def refresh(self, failed_version):
        """Asks the broker to fetch again, naming the version the database rejected."""
        headers = {"If-Match": f'"{failed_version}"'}
        return self._call("POST", f"/credentials/{self.db}/refresh", headers)

    def wait_for_change(self, version, wait_seconds=30):
        """A long poll: the credentials once the broker serves another version than `version`,
        or None when `wait_seconds` passed without a change (304)."""
        headers = {"If-None-Match": f'"{version}"'}
        path = f"/credentials/{self.db}?wait={wait_seconds}s"
        return self._call("GET", path, headers, timeout=wait_seconds + HTTP_TIMEOUT)

    def _call(self, method, path, headers, timeout=HTTP_TIMEOUT):
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", **headers}
        for attempt in range(MAX_503_RETRIES + 1):
            request = urllib.request.Request(self.url + path, method=method, headers=headers)
            try:
                with OPENER.open(request, timeout=timeout) as response:
                    return json.load(response)
            except urllib.error.HTTPError as err:
                if err.code == 304:
                    return None
                if err.code == 503 and attempt < MAX_503_RETRIES:
                    delay = retry_after(err.headers.get("Retry-After"))
                    code = error_code(err)[0]
                    print(f"broker_client: {method} {path}: 503 {code}, retrying in {delay} s",
                          file=sys.stderr)
                    time.sleep(delay)
                    continue
                raise BrokerError(err.code, *error_code(err)) from None
        raise AssertionError("unreachable")

    def connect(self):
        """A connection and how it was made: (connection, credentials used, refreshed?)."""
        creds = self.credentials()
        try:
            return self._connect(creds), creds, False
        except psycopg.Error as err:
            if not is_auth_failure(err):
                raise
            print(f"broker_client: login rejected with version {creds['version_id']}, refreshing",
                  file=sys.stderr)
        creds = self.refresh(creds["version_id"])
        # A second rejection propagates: the broker has nothing newer to offer.
        return self._connect(creds), creds, True

    @staticmethod
    def _connect(creds):
        # Keyword arguments, not a connection string: the password needs no escaping.
        return psycopg.connect(
            host=creds["host"],
            port=creds["port"],
            dbname=creds["dbname"],
            user=creds["username"],
            password=creds["password"],
            connect_timeout=CONNECT_TIMEOUT,
        )


def retry_after(value):
    """Seconds to wait from a Retry-After header (delta-seconds), 1 when absent, capped."""
    try:
        return min(max(int(value), 0), MAX_RETRY_AFTER)
    except (TypeError, ValueError):
        return 1


def error_code(err):
    """(code, message) from the broker's `{"error": {"code", "message"}}` body."""
    try:
        body = json.loads(err.read() or b"{}")
        return body["error"]["code"], body["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return "unknown", f"HTTP {err.code} without an error body"


def main():
    client = BrokerClient.from_env(sys.argv[1] if len(sys.argv) > 1 else None)
    try:
        conn, creds, refreshed = client.connect()
    except BrokerError as err:
        print(f"broker_client: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # connection refused, timeout (urllib's URLError is an OSError)
        print(f"broker_client: broker unreachable: {err}", file=sys.stderr)
        return 1
    except psycopg.Error as err:
        # str() of a psycopg error is the server's or libpq's message: no password in it.
        print(f"broker_client: database error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    with conn:
        user = conn.execute("SELECT current_user").fetchone()[0]
    result = {"user": user, "refreshed": refreshed, "version_id": creds["version_id"]}
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
