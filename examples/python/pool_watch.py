#!/usr/bin/env python3
"""A psycopg_pool ConnectionPool that keeps serving through password rotations.

A thread long-polls credential-broker (GET /credentials/{db}?wait=30s with If-None-Match). When
the version changes, the pool's connection parameters (a callable, psycopg_pool 3.3) return the
new password, so new connections use it, and the pool is drained: idle connections opened with
the old password are closed at once, busy ones when they are returned. A login rejected anyway
(the rotation reached the database before the broker) refreshes the credentials and retries once.

Environment: as broker_client.py (BROKER_URL, BROKER_TOKEN_FILE or BROKER_TOKEN, BROKER_DB), and
RUN_SECONDS (how long to run queries; 0, the default: until SIGTERM or SIGINT) and QUERY_RATE
(queries a second, default 50). Prints JSON lines, never a password:
  {"event":"ready","version_id":...}                     the pool is open
  {"event":"switched","version_id":...,"via":"watch"}    new connections use a new version
  {"event":"done","queries":N,"failed":F,"switches":S}   at the end; the exit status is 1 if F > 0
Needs psycopg[binary] and psycopg-pool (see requirements.txt).
"""

import json
import os
import signal
import sys
import threading
import time

import psycopg
from psycopg_pool import ConnectionPool

from broker_client import CONNECT_TIMEOUT, BrokerClient, BrokerError, is_auth_failure

POOL_SIZE = 4
WORKERS = 2
APPLICATION_NAME = "pool-watch-python"


def emit(**fields):
    print(json.dumps(fields, separators=(",", ":")), flush=True)


class Credentials:
    """The credentials new connections use, replaced when the broker serves a new version."""

    def __init__(self, client):
        self.client = client
        self.lock = threading.Lock()
        self.creds = client.credentials()
        self.switches = 0
        self.pool = None

    def version(self):
        with self.lock:
            return self.creds["version_id"]

    def connection_kwargs(self):
        """What the pool calls before each new connection."""
        with self.lock:
            c = self.creds
        return {"host": c["host"], "port": c["port"], "dbname": c["dbname"],
                "user": c["username"], "password": c["password"],
                "connect_timeout": CONNECT_TIMEOUT, "application_name": APPLICATION_NAME}

    def update(self, creds, via):
        """Switches to `creds` if they are another version; retires the old connections."""
        with self.lock:
            if creds is None or creds["version_id"] == self.creds["version_id"]:
                return False
            self.creds = creds
            self.switches += 1
        emit(event="switched", version_id=creds["version_id"], via=via)
        if self.pool is not None:
            self.pool.drain()
        return True

    def watch(self, stop):
        """Long-polls the broker until `stop` is set; errors wait a second and go on."""
        while not stop.is_set():
            try:
                self.update(self.client.wait_for_change(self.version()), "watch")
            except (BrokerError, OSError, ValueError) as err:
                print(f"pool_watch: watching the broker: {err}", file=sys.stderr)
                stop.wait(1)


def make_connection_class(credentials):
    """A connection class whose connect() refreshes once when the login is rejected."""

    class RefreshingConnection(psycopg.Connection):
        @classmethod
        def connect(cls, conninfo="", **kwargs):
            try:
                return super().connect(conninfo, **kwargs)
            except psycopg.Error as err:
                if not is_auth_failure(err):
                    raise
            failed = credentials.version()
            print(f"pool_watch: login rejected with version {failed}, refreshing", file=sys.stderr)
            credentials.update(credentials.client.refresh(failed), "refresh")
            return super().connect(conninfo, **{**kwargs, **credentials.connection_kwargs()})

    return RefreshingConnection


def run_queries(pool, stop, interval, counts, lock):
    while not stop.is_set():
        started = time.monotonic()
        try:
            with pool.connection(timeout=CONNECT_TIMEOUT) as conn:
                conn.execute("SELECT 1").fetchone()
            outcome = "queries"
        except psycopg.Error as err:
            print(f"pool_watch: query failed: {type(err).__name__}: {err}", file=sys.stderr)
            outcome = "failed"
        with lock:
            counts[outcome] += 1
        stop.wait(max(0.0, interval - (time.monotonic() - started)))


def main():
    client = BrokerClient.from_env(sys.argv[1] if len(sys.argv) > 1 else None)
    run_seconds = float(os.environ.get("RUN_SECONDS", "0"))
    rate = float(os.environ.get("QUERY_RATE", "50"))
    try:
        credentials = Credentials(client)
    except (BrokerError, OSError) as err:
        print(f"pool_watch: {err}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pool = ConnectionPool(kwargs=credentials.connection_kwargs, min_size=POOL_SIZE,
                          max_size=POOL_SIZE, open=False,
                          connection_class=make_connection_class(credentials))
    credentials.pool = pool
    with pool:
        pool.wait(timeout=10)
        emit(event="ready", version_id=credentials.version())
        threading.Thread(target=credentials.watch, args=(stop,), daemon=True).start()
        counts, lock = {"queries": 0, "failed": 0}, threading.Lock()
        workers = [threading.Thread(target=run_queries, args=(pool, stop, WORKERS / rate, counts, lock))
                   for _ in range(WORKERS)]
        for worker in workers:
            worker.start()
        if run_seconds > 0:
            stop.wait(run_seconds)
        else:
            while not stop.wait(1):
                pass
        stop.set()
        for worker in workers:
            worker.join()
    emit(event="done", queries=counts["queries"], failed=counts["failed"],
         switches=credentials.switches)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
