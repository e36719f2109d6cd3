"""The credential-broker benchmark: cache-hit throughput and latency against a static axum
baseline, memory, start-up time, binary size and upstream (Secrets Manager) call counts.

Run through `bash bench/run`, which builds the release binaries and installs wrk and moto. Every
process it starts listens on 127.0.0.1 and is stopped before it exits. Upstream calls are counted
by a proxy of its own between the broker and moto, not by the broker's own metrics.
"""

import argparse
import asyncio
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
HOST = subprocess.run(
    ["rustc", "--print", "host-tuple"], capture_output=True, text=True, check=True
).stdout.strip()
# Where docker/build-release, and a plain `cargo build --release` (.cargo/config.toml: glibc
# linked statically, an explicit target), put the release build; bench/run checks they agree.
RELEASE = ROOT / "target" / HOST / "release"
# The same broker with glibc linked dynamically (`RUSTFLAGS=`), built by bench/run to compare.
DYNAMIC_BROKER = ROOT / "target/dynamic" / HOST / "release/credential-broker"
BROKER = Path(os.environ.get("BENCH_BROKER", RELEASE / "credential-broker"))
BASELINE = RELEASE / "examples/static-baseline"
MOTO = ROOT / ".venv/moto/bin/moto_server"
TOKEN = "bench-token-0123456789abcdef"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, limit=30.0, status=200):
    """Polls `url` until it answers `status`; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == status:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"bench: {url} did not answer {status} within {limit} s")


class CountingProxy:
    """An HTTP proxy in front of moto that counts calls by AWS operation."""

    def __init__(self, upstream_port):
        self.counts = {}
        self.lock = threading.Lock()
        proxy = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                try:
                    self.forward()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the broker went away mid-answer

            def forward(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                target = self.headers.get("x-amz-target", "")
                operation = target.rsplit(".", 1)[-1] if target else ""
                if not operation:
                    match = re.search(rb"Action=([A-Za-z]+)", body)
                    operation = match.group(1).decode() if match else "unknown"
                with proxy.lock:
                    proxy.counts[operation] = proxy.counts.get(operation, 0) + 1
                if not hasattr(local, "conn"):
                    local.conn = http.client.HTTPConnection("127.0.0.1", upstream_port)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                local.conn.request("POST", self.path, body, headers)
                response = local.conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, operation):
        with self.lock:
            return self.counts.get(operation, 0)

    def close(self):
        self.server.shutdown()


class Moto:
    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen(
            [str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{self.port}/moto-api/")
        self.client = boto3.client(
            "secretsmanager",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

    def create_dbs(self, count):
        for i in range(count):
            self.client.create_secret(
                Name=f"bench/db{i:04}",
                SecretString=json.dumps(
                    {
                        "username": f"app{i}",
                        "password": f"bench-password-{i}-{os.urandom(8).hex()}",
                        "engine": "postgres",
                        "host": f"db{i}.cluster-abc123.eu-central-1.rds.amazonaws.com",
                        "port": 5432,
                        "dbname": "app",
                    }
                ),
            )

    def latency_ms(self):
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            self.client.get_secret_value(SecretId="bench/db0000")
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    def close(self):
        self.process.terminate()
        self.process.wait()


# The environment of the broker and the AWS agent: bench credentials, no instance metadata,
# and the token of the AWS agent's API (the agent's, and the broker's where configured).
AWS_ENV = {
    "PATH": os.environ["PATH"],
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_TOKEN": TOKEN,
}


class Broker:
    """The release broker with `dbs` databases behind the counting proxy."""

    def __init__(self, workdir, proxy_port, dbs, ttl="5m", warm=True, extra="",
                 describe_interval="10m", binary=None, server=""):
        token = workdir / "token"
        token.write_text(TOKEN + "\n")
        databases = "".join(
            f'[databases.db{i:04}]\nsecret_id = "bench/db{i:04}"\n' for i in range(dbs)
        )
        config = workdir / f"broker-{dbs}.toml"
        config.write_text(
            f"""
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_connections = 4096
max_concurrent_requests = 2048
max_waiters = 2048
{server}
{extra}
[auth]
token_file = "{token}"
[cache]
ttl = "{ttl}"
capacity = {max(dbs, 10)}
warm = {str(warm).lower()}
[rotation]
describe_interval = "{describe_interval}"
[source]
kind = "secrets_manager"
[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{proxy_port}"
[log]
format = "json"
level = "info"
{databases}"""
        )
        self.log = workdir / f"broker-{dbs}.log"
        env = {
            **AWS_ENV,
            # glibc allocator settings (MALLOC_ARENA_MAX, ...) pass through, for experiments.
            **{k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        }
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(binary or BROKER), "--config", str(config)],
            env=env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        listening = self._wait_log("listening")
        self.api = listening["api"]
        self.admin = listening["admin"]
        self.agent = listening.get("aws_agent")

    def _wait_log(self, message, limit=30.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                fields = event.get("fields", event)
                if fields.get("message") == message:
                    return fields
            if self.process.poll() is not None:
                raise SystemExit(f"bench: broker exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.002)
        raise SystemExit(f"bench: broker never logged {message!r}")

    def ready_seconds(self):
        """Seconds from process start to the first `/readyz` 200."""
        wait_http(f"http://{self.admin}/readyz", limit=120)
        return time.monotonic() - self.started

    def get(self, path):
        request = urllib.request.Request(
            f"http://{self.api}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def rss_mib(self):
        return rss_mib(self.process.pid)

    def rss_split(self):
        return rss_split(self.process.pid)

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)


class Agent:
    """The AWS Secrets Manager Agent (`AGENT_BIN`), caching the same secrets from the same moto
    behind the counting proxy."""

    def __init__(self, binary, workdir, proxy_port):
        self.port = free_port()
        config = workdir / "agent.toml"
        config.write_text(
            f'http_port = {self.port}\nregion = "us-east-1"\nttl_seconds = 3600\n'
            'validate_credentials = false\nlog_to_file = false\nlog_level = "error"\n')
        env = {**AWS_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy_port}"}
        self.log = workdir / "agent.log"
        self.process = subprocess.Popen([str(binary), "--config", str(config)], env=env,
                                        stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/secretsmanager/get?secretId=bench/db0000"
        self.header = f"X-Aws-Parameters-Secrets-Token: {TOKEN}"
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(self.url, headers=dict([self.header.split(": ")]))
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: the AWS agent did not serve: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def cpu_seconds(pid):
    """User plus system CPU seconds `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("bench: no VmRSS")


def rss_split(pid):
    """Where the resident memory is: heap and stacks (anonymous) and mapped binary (file)."""
    kib = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            kib[key] = int(value.split()[0])
    return f"anon {kib['RssAnon'] / 1024:.1f} MiB, file {kib['RssFile'] / 1024:.1f} MiB"


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url, connections, seconds, script=None, header=f"Authorization: Bearer {TOKEN}",
        extra=()):
    """Runs wrk with `header` and the `extra` headers; returns (requests/s, p50 ms, p99 ms)."""
    threads = 1 if connections == 1 else 2
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
               "-H", header, *(arg for h in extra for arg in ("-H", h)), url]
    if script:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def percentile(p):
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()
        return float(value) * UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        raise SystemExit(f"bench: wrk saw errors against {url}:\n{out}")
    return rps, percentile(50), percentile(99)


async def concurrent_cold_gets(api, path, count):
    """Sends `count` GETs at once, each on its own connection; returns their status codes."""
    host, port = api.rsplit(":", 1)
    gate = asyncio.Event()

    async def one():
        reader, writer = await asyncio.open_connection(host, int(port))
        await gate.wait()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        status = (await reader.readline()).split()[1]
        await reader.read()
        writer.close()
        return int(status)

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await asyncio.sleep(0.5)  # every connection is open before the first request goes out
    gate.set()
    return await asyncio.gather(*tasks)


class Contender:
    """One server in a cache-hit comparison: its process, and how to load it for some seconds
    (returning requests/s, and p50 and p99 latency in ms where the client measures them)."""

    def __init__(self, pid, load):
        self.pid = pid
        self.load = load


def wrk_load(url, header=f"Authorization: Bearer {TOKEN}", close=False):
    """Loads `url` with wrk; with `close`, every request on a new connection."""
    extra = ("Connection: close",) if close else ()
    return lambda connections, seconds: wrk(url, connections, seconds, header=header,
                                            extra=extra)


UNIX_LOAD = RELEASE / "examples/unix-load"


def unix_load(socket_path, path, keepalive):
    """Loads `path` over the Unix socket at `socket_path` with bench/unix_load.rs."""

    def load(connections, seconds):
        out = subprocess.run(
            [str(UNIX_LOAD), str(socket_path), path, str(connections), str(seconds),
             "keepalive" if keepalive else "close", f"Authorization: Bearer {TOKEN}"],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"bench: unix-load failed against {socket_path}: {out.stderr}")
        return float(out.stdout.split()[-1]), None, None

    return load


class Turns:
    """`args.slices` slices of `args.seconds` for each of the `contenders`, taking turns (the
    order rotating each round, so that each goes first as often as the others), so that a
    slowdown of the shared machine lands on all; ratios are of all requests served, which
    move far less between runs than any one slice does. Holds each
    contender's requests/s (`rate`), CPU per request in us (`per_request`), latencies of each
    slice, and the ratio of `numerator` to `denominator` in each slice."""

    def __init__(self, args, contenders, connections, numerator, denominator):
        served = {who: 0.0 for who in contenders}
        cpu = {who: 0.0 for who in contenders}
        self.p50s, self.p99s = ({who: [] for who in contenders} for _ in range(2))
        self.ratios = []
        for contender in contenders.values():
            contender.load(connections, 1)  # warm-up (the agent API's first read is a miss)
        names = list(contenders)
        for index in range(args.slices):
            order = names[index % len(names):] + names[:index % len(names)]
            rps = {}
            for who in order:
                used = cpu_seconds(contenders[who].pid)
                rps[who], p50, p99 = contenders[who].load(connections, args.seconds)
                cpu[who] += cpu_seconds(contenders[who].pid) - used
                served[who] += rps[who] * args.seconds
                if p50 is not None:
                    self.p50s[who].append(p50)
                    self.p99s[who].append(p99)
            self.ratios.append(rps[numerator] / rps[denominator])
        elapsed = args.slices * args.seconds
        self.rate = {who: served[who] / elapsed for who in contenders}
        self.per_request = {who: cpu[who] / served[who] * 1e6 for who in contenders}

    def spread(self, quartiles=True):
        """The slices' ratios: lowest to highest and, with enough of them, the quartiles."""
        text = f" (slices: {min(self.ratios):.2f}-{max(self.ratios):.2f}"
        if quartiles and len(self.ratios) >= 4:
            low, middle, high = statistics.quantiles(self.ratios, n=4)
            text += f", median {middle:.2f}, quartiles {low:.2f}-{high:.2f}"
        return text + ")"


def cache_hit_rows(rows, args, contenders, name, connections, target=1.0):
    """Appends the requests/s, CPU and latency rows of `name` (`GET json, 16 conn`, say) for
    the `contenders` (`broker`, `baseline` and, where it applies, `agent`)."""
    turns = Turns(args, contenders, connections, "broker", "baseline")
    rate, per_request, spread = turns.rate, turns.per_request, turns.spread()
    p50s, p99s = turns.p50s, turns.p99s
    agent_ratio = (f"; agent {rate['agent'] / rate['baseline']:.2f} x baseline"
                   if "agent" in contenders else "")

    def column(who, text):
        return text(who) if who in contenders else ""

    rows.append((f"{name}: requests/s",
                 *(column(who, lambda w: f"{rate[w]:,.0f}") for who in COLUMNS),
                 f"{rate['broker'] / rate['baseline']:.2f} x baseline" + spread
                 + (f" (target >= {target})" if target else "") + agent_ratio))
    rows.append((f"{name}: CPU per request (user + sys)",
                 *(column(who, lambda w: f"{per_request[w]:.1f} us") for who in COLUMNS), ""))
    if p50s["broker"]:
        p50 = {who: statistics.median(p50s[who]) for who in contenders}
        p99 = {who: statistics.median(p99s[who]) for who in contenders}
        rows.append((f"{name}: p50 / p99 latency (median slice)",
                     *(column(who, lambda w: f"{p50[w]:.3f} / {p99[w]:.3f} ms")
                       for who in COLUMNS),
                     f"p99 {p99['broker'] - p99['baseline']:+.3f} ms vs baseline "
                     "(target <= +0.5)"))


# The table's server columns, in order.
COLUMNS = ("broker", "baseline", "agent")


def agent_rows(rows, args, broker, connections):
    """Appends the requests/s row of cache hits on the broker's AWS agent API against its own
    API, same secret, same process, taking turns as above."""
    pid = broker.process.pid
    turns = Turns(args, {
        "agent": Contender(pid, wrk_load(
            f"http://{broker.agent}/secretsmanager/get?secretId=bench/db0000",
            header=f"X-Aws-Parameters-Secrets-Token: {TOKEN}")),
        "native": Contender(pid, wrk_load(f"http://{broker.api}/credentials/db0000")),
    }, connections, "agent", "native")
    a_rps, n_rps = turns.rate["agent"], turns.rate["native"]
    rows.append((f"the broker's AWS agent API, GET /secretsmanager/get, {connections} conn: "
                 "requests/s", f"{a_rps:,.0f} (native /credentials: {n_rps:,.0f})", "", "",
                 f"{a_rps / n_rps:.2f} x the native endpoint{turns.spread(quartiles=False)} "
                 "(target >= 0.95)"))


class HeldPolls:
    """`count` long polls (or, with `stream`, event streams) held open against `broker` from a
    thread of their own, each on its own connection, a long poll asked again when answered;
    ready once the broker's waiters gauge shows them all."""

    def __init__(self, broker, path, version, count, stream=False):
        self.answered = 0
        self.loop = asyncio.new_event_loop()
        self.stop = None
        if stream:
            request = (f"GET {path}/events HTTP/1.1\r\nHost: {broker.api}\r\n"
                       f"Authorization: Bearer {TOKEN}\r\n\r\n")
        else:
            request = (f"GET {path}?wait=5m HTTP/1.1\r\nHost: {broker.api}\r\n"
                       f"Authorization: Bearer {TOKEN}\r\nIf-None-Match: \"{version}\"\r\n\r\n")
        hold = self._stream if stream else self._hold
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(hold(broker.api, request.encode(), count),),
            daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://{broker.admin}/metrics", timeout=5) as response:
                text = response.read().decode()
            if re.search(rf"^credential_broker_waiters {count}$", text, re.M):
                return
            time.sleep(0.1)
        raise SystemExit(f"bench: the broker never held {count} long polls")

    async def _hold(self, api, request, count):
        self.stop = asyncio.Event()
        host, port = api.rsplit(":", 1)

        async def one():
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                while True:
                    writer.write(request)
                    await writer.drain()
                    await reader.readline()  # the status line
                    length = 0
                    while (line := await reader.readline()) not in (b"\r\n", b""):
                        name, _, value = line.decode().partition(":")
                        if name.lower() == "content-length":
                            length = int(value)
                    await reader.readexactly(length)
                    self.answered += 1
            finally:
                writer.close()

        await self._until_stopped([asyncio.create_task(one()) for _ in range(count)])

    async def _stream(self, api, request, count):
        """Holds `count` event streams; `answered` counts the `version` events after the first
        of each stream (none while nothing rotates)."""
        self.stop = asyncio.Event()
        host, port = api.rsplit(":", 1)

        async def one():
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(request)
                await writer.drain()
                seen = 0
                while line := await reader.readline():
                    if line.startswith(b"event: version"):
                        seen += 1
                        if seen > 1:
                            self.answered += 1
            finally:
                writer.close()

        await self._until_stopped([asyncio.create_task(one()) for _ in range(count)])

    async def _until_stopped(self, tasks):
        await self.stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self):
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=30)


def machine():
    cpu = next(
        (l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
         if l.startswith("model name")),
        platform.processor(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    import moto

    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}; "
            f"{rustc}; {wrk_version.split(' Copyright')[0]}; moto {moto.__version__}; "
            "load generator, broker and moto share the cores")


def out_of_page_cache(binary):
    """Writes `binary` back and drops it from the page cache, so that a broker started next
    reads it afresh, as after an image pull or a reboot. A file the build (or a copy) has just
    written sits in the cache in the large blocks it was written in, which Linux 6.18 maps whole
    on a page fault: the same broker measured up to 0.7 MiB more RSS from a fresh copy."""
    fd = os.open(binary, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def rss_after_load(workdir, proxy_port, binary, seconds):
    """RSS of a broker with 10 warm databases after `seconds` of cache hits from 64
    connections, and where it is; the binary read afresh (see [`out_of_page_cache`])."""
    out_of_page_cache(binary)
    broker = Broker(workdir, proxy_port, 10, ttl="1h", describe_interval="1h", binary=binary)
    try:
        broker.ready_seconds()
        for i in range(10):
            broker.get(f"/credentials/db{i:04}")
        warm = broker.rss_mib()
        wrk(f"http://{broker.api}/credentials/db0000", 64, seconds)
        time.sleep(1)
        return warm, broker.rss_mib(), broker.rss_split()
    finally:
        broker.close()


def scrape(admin, times=20):
    """Median seconds of `times` scrapes of `/metrics`, and the size of the last one."""
    took, size = [], 0
    for _ in range(times):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
            size = len(response.read())
        took.append(time.perf_counter() - started)
    return statistics.median(took), size


def recorded_ratios(path):
    """The `x baseline` ratio of every row in the table between the markers of `path`."""
    text = Path(path).read_text() if Path(path).exists() else ""
    table = text.split(BEGIN, 1)[1].split(END, 1)[0] if BEGIN in text else ""
    ratios = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2:
            match = re.match(r"([\d.]+) x baseline", cells[-1])
            if match:
                ratios[cells[0]] = float(match.group(1))
    return ratios


def check(rows, recorded):
    """Compares each row's ratio to the recorded one; returns the rows more than 5 % below."""
    fallen = []
    for row in rows:
        match = re.match(r"([\d.]+) x baseline", row[-1])
        if not match or row[0] not in recorded:
            continue
        now, before = float(match.group(1)), recorded[row[0]]
        verdict = "FALLEN" if now < before * 0.95 else "ok"
        print(f"{verdict:6} {row[0]}: {now:.2f} x baseline, recorded {before:.2f}")
        if verdict != "ok":
            fallen.append(row[0])
    return fallen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=2, help="length of each wrk slice")
    parser.add_argument("--slices", type=int, default=20,
                        help="slices per server in each cache-hit row")
    parser.add_argument("--steady-seconds", type=int, default=60,
                        help="length of each steady-load upstream-count run")
    parser.add_argument("--load-seconds", type=int, default=20,
                        help="length of the 64-connection load before RSS after load is measured")
    parser.add_argument("--many", type=int, default=1000, help="databases in the memory run")
    parser.add_argument("--waiters", type=int, default=1000,
                        help="long polls (and event streams) held open in the rows that measure "
                        "cache hits beside them")
    parser.add_argument("--output", help="the file the table is written into (default "
                        "BENCHMARKS.md; a smoke run writes none unless given one)")
    parser.add_argument("--agent-only", action="store_true",
                        help="only the rows of the broker's AWS agent API, printed and not "
                        "written (for work on that path)")
    parser.add_argument("--check", action="store_true",
                        help="only the rows with a ratio to the baseline, compared with those "
                        "recorded in BENCHMARKS.md: exits 1 when one is more than 5 %% below, "
                        "writes nothing (for use before a commit that touches the request path)")
    parser.add_argument("--smoke", action="store_true",
                        help="1 s runs, 20 dbs, 20 long polls, 10 s steady: checks the harness, "
                        "not the numbers")
    args = parser.parse_args()
    recorded_in = args.output or str(ROOT / "BENCHMARKS.md")
    if not args.smoke and not args.output:
        args.output = recorded_in
    if args.smoke:
        args.seconds, args.slices, args.steady_seconds, args.many, args.waiters = 1, 2, 10, 20, 20
        args.load_seconds = 2
    agent_bin = os.environ.get("AGENT_BIN")
    if agent_bin and not os.access(agent_bin, os.X_OK):
        raise SystemExit(f"bench: AGENT_BIN={agent_bin} is not an executable (bench/README.md "
                         "says how to build the AWS agent)")
    recorded = recorded_ratios(recorded_in) if args.check else {}
    if args.check and not recorded:
        raise SystemExit(f"bench: --check needs a recorded run in {recorded_in}")
    rows = []  # (measurement, broker, baseline, agent, ratio / target)

    workdir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    finished = False
    moto = Moto()
    proxy = CountingProxy(moto.port)
    processes = []

    def start(process):
        processes.append(process)
        return process

    def stop(process):
        processes.remove(process)
        (process.close if hasattr(process, "close") else process.terminate)()
        if not hasattr(process, "close"):
            process.wait()

    try:
        moto.create_dbs(max(args.many, 10))
        moto_ms = moto.latency_ms()
        rows.append(("stripped release binary (docker/build-release)",
                     f"{BROKER.stat().st_size / 2**20:.1f} MiB", "", "",
                     f"target <= 12 MB; the same as a plain `cargo build --release`; with glibc "
                     f"linked dynamically: {DYNAMIC_BROKER.stat().st_size / 2**20:.1f} MiB"))

        # Start-up, 10 dbs warm, then the cache-hit runs against the same broker. Its ttl and
        # DescribeSecret interval are longer than the runs: a background refresh would make moto
        # (Python, on the same two cores) take CPU from whichever server is being measured.
        broker_socket = workdir / "broker.sock"
        broker = start(Broker(
            workdir, proxy.port, 10, ttl="1h", describe_interval="1h",
            server=f'[server.unix_socket]\npath = "{broker_socket}"\nmode = "0600"\n',
            extra='[compat.aws_agent]\nlisten = "127.0.0.1:0"\nttl = "1h"\n'
                  'secrets = ["bench/*"]\n'))
        if args.agent_only:
            for connections in (16, 64):
                agent_rows(rows, args, broker, connections)
            for row in rows:
                print(" | ".join(row))
            finished = True
            return 0
        ready = broker.ready_seconds()
        for i in range(10):
            broker.get(f"/credentials/db{i:04}")
        if not args.check:
            rows.append(("start-up to /readyz 200 (10 dbs warmed)", f"{ready * 1000:.0f} ms",
                         "", "", f"moto GetSecretValue median {moto_ms:.1f} ms"))
            rows.append(("RSS after warm-up, 10 dbs", f"{broker.rss_mib():.1f} MiB", "", "",
                         f"target <= 10 MB; {broker.rss_split()}"))

        bodies = {}
        for fmt, query in (("json", ""), ("uri", "?format=uri")):
            body = broker.get(f"/credentials/db0000{query}")
            path = workdir / f"body.{fmt}"
            path.write_bytes(body)
            bodies[fmt] = path
        baseline_port = free_port()
        baseline_socket = workdir / "baseline.sock"
        baselines = {}
        for where in (f"127.0.0.1:{baseline_port}", f"unix:{baseline_socket}"):
            baselines[where] = start(subprocess.Popen(
                [str(BASELINE), where, str(bodies["json"]), str(bodies["uri"])],
                stdout=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{baseline_port}/credentials/db0000")
        baseline = baselines[f"127.0.0.1:{baseline_port}"]
        unix_baseline = baselines[f"unix:{baseline_socket}"]
        agent = start(Agent(agent_bin, workdir, proxy.port)) if agent_bin else None

        def tcp(query="", close=False, with_agent=True, server=None):
            server = server or broker
            contenders = {
                "broker": Contender(server.process.pid, wrk_load(
                    f"http://{server.api}/credentials/db0000{query}", close=close)),
                "baseline": Contender(baseline.pid, wrk_load(
                    f"http://127.0.0.1:{baseline_port}/credentials/db0000{query}", close=close)),
            }
            if agent and with_agent:
                contenders["agent"] = Contender(agent.process.pid, wrk_load(
                    agent.url, header=agent.header, close=close))
            return contenders

        calls_before = proxy.count("GetSecretValue")
        for connections in (1, 16, 64):
            cache_hit_rows(rows, args, tcp(), f"GET json, {connections} conn", connections)
        for connections in (1, 16, 64):
            cache_hit_rows(rows, args, tcp("?format=uri", with_agent=False),
                           f"GET uri, {connections} conn", connections)
        cache_hit_rows(rows, args, tcp(close=True),
                       "GET json, 16 conn, a new connection per request", 16)
        for keepalive, how in ((True, "keep-alive"), (False, "a new connection per request")):
            cache_hit_rows(rows, args, {
                "broker": Contender(broker.process.pid,
                                    unix_load(broker_socket, "/credentials/db0000", keepalive)),
                "baseline": Contender(unix_baseline.pid,
                                      unix_load(baseline_socket, "/credentials/db0000", keepalive)),
            }, f"GET json over the Unix socket, 16 conn, {how}", 16)
        hit_calls = proxy.count("GetSecretValue") - calls_before
        # What the audit trail (on by default, to stderr: a line per read, identical reads a
        # thread answers within one millisecond sharing one with their count) costs: the same
        # rows against a broker of its own with it off (its warm-up fetches come after the
        # count above). Not the default configuration, so no target.
        quiet_dir = workdir / "audit-off"
        quiet_dir.mkdir()
        quiet = start(Broker(quiet_dir, proxy.port, 10, ttl="1h", describe_interval="1h",
                             extra='[audit]\noutput = "off"\n'))
        quiet.ready_seconds()
        quiet.get("/credentials/db0000")
        for connections in (16, 64):
            cache_hit_rows(rows, args, tcp(with_agent=False, server=quiet),
                           f"GET json, {connections} conn, audit trail off", connections,
                           target=None)
        stop(quiet)
        if args.check:
            finished = True
            fallen = check(rows, recorded)
            print(f"bench: {len(fallen)} of the rows fell more than 5 % below their record"
                  if fallen else "bench: no row fell more than 5 % below its record")
            return 1 if fallen else 0
        rows.append(("upstream calls during all cache-hit runs", str(hit_calls), "", "",
                     "expected 0"))
        for connections in (16, 64):
            agent_rows(rows, args, broker, connections)
        rows.append(("RSS after the cache-hit runs, 10 dbs", f"{broker.rss_mib():.1f} MiB",
                     f"{rss_mib(baseline.pid):.1f} MiB",
                     f"{rss_mib(agent.process.pid):.1f} MiB" if agent else "",
                     f"broker: {broker.rss_split()}"))
        if agent:
            stop(agent)
        # The same with long polls (?wait=5m, If-None-Match: the served version), then event
        # streams, held open: requests waiting for a rotation must not slow cache hits down.
        version = json.loads(broker.get("/credentials/db0000"))["version_id"]
        for stream, what in ((False, "long polls"), (True, "event streams")):
            held = start(HeldPolls(broker, "/credentials/db0000", version, args.waiters, stream))
            label = f"{args.waiters:,} {what} held"
            for connections in (16, 64):
                cache_hit_rows(rows, args, tcp(with_agent=False),
                               f"GET json, {connections} conn, {label}", connections)
            rows.append((f"RSS with {label}, 10 dbs", f"{broker.rss_mib():.1f} MiB", "", "",
                         broker.rss_split()))
            rows.append((f"{what} answered during those runs", str(held.answered), "", "",
                         "expected 0 (no new version)"))
            stop(held)
        for process in (baseline, unix_baseline, broker):
            stop(process)

        # RSS after load, measured on a broker of its own: the build that docker/build-release
        # and a plain `cargo build --release` make, and the dynamically linked one beside it.
        for what, binary, target in (
                ("docker/build-release and plain `cargo build --release`", BROKER,
                 "target <= 10 MB (9.5 MiB)"),
                ("glibc linked dynamically, `RUSTFLAGS=`", DYNAMIC_BROKER, "for comparison")):
            warm, after, split = rss_after_load(workdir, proxy.port, binary, args.load_seconds)
            rows.append((f"RSS after {args.load_seconds} s of cache hits from 64 conn, 10 dbs "
                         f"({what})", f"{after:.1f} MiB", "", "",
                         f"{target}; {warm:.1f} MiB before the load; {split}"))

        # Many databases, all warmed: start-up, memory and the metrics scrape.
        out_of_page_cache(BROKER)
        many = start(Broker(workdir, proxy.port, args.many))
        many_ready = many.ready_seconds()
        for i in range(args.many):
            many.get(f"/credentials/db{i:04}")
        rows.append((f"RSS after warm-up, {args.many} dbs", f"{many.rss_mib():.1f} MiB", "", "",
                     f"target <= 25 MB; ready after {many_ready:.1f} s; {many.rss_split()}"))
        took, size = scrape(many.admin)
        rows.append((f"GET /metrics, {args.many} dbs: time (median of 20) and size",
                     f"{took * 1000:.1f} ms, {size / 1024:,.0f} KiB", "", "", ""))
        stop(many)

        # 1000 concurrent cold requests for one db.
        cold = start(Broker(workdir, proxy.port, 10, warm=False))
        before = proxy.count("GetSecretValue")
        statuses = asyncio.run(concurrent_cold_gets(cold.api, "/credentials/db0003", 1000))
        calls = proxy.count("GetSecretValue") - before
        ok = sum(1 for s in statuses if s == 200)
        rows.append(("1000 concurrent cold GETs, one db: upstream calls", str(calls), "", "",
                     f"expected 1; {ok} x 200"))
        stop(cold)

        # Upstream calls at steady load: 10 dbs, ttl 10 s, two request rates.
        script = workdir / "rotate.lua"
        script.write_text(
            'local n = 0\nrequest = function()\n  n = n + 1\n'
            '  return wrk.format("GET", string.format("/credentials/db%04d", n % 10))\nend\n'
        )
        ttl = 10
        for connections in (1, 64):
            steady = start(Broker(workdir, proxy.port, 10, ttl=f"{ttl}s"))
            steady.ready_seconds()
            time.sleep(3)  # past the start-up DescribeSecret round, which follows readiness
            before = {op: proxy.count(op) for op in ("GetSecretValue", "DescribeSecret")}
            rps, _, _ = wrk(f"http://{steady.api}/credentials/db0000", connections,
                            args.steady_seconds, script)
            per_hour = {op: (proxy.count(op) - before[op]) * 3600 / args.steady_seconds
                        for op in before}
            rows.append((f"upstream calls per hour, 10 dbs, ttl {ttl} s, {rps:,.0f} req/s",
                         f"{per_hour['GetSecretValue']:,.0f} GetSecretValue", "", "",
                         f"dbs x 3600 / ttl = {10 * 3600 // ttl:,} (refresh-ahead at 80-90 % "
                         f"of ttl: ~{10 * 3600 / (0.85 * ttl):,.0f}); "
                         f"{per_hour['DescribeSecret']:,.0f} DescribeSecret/h (10 dbs x 6/h at "
                         "describe_interval 10m)"))
            stop(steady)
        finished = True
    finally:
        for process in processes:
            (process.close if hasattr(process, "close") else process.terminate)()
        proxy.close()
        moto.close()
        # The broker logs are kept only when the run failed.
        if finished:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench: logs kept in {workdir}", file=sys.stderr)

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    peer = (f"the AWS agent is `{Path(agent_bin).name}` (AGENT_BIN), answering "
            "`GET /secretsmanager/get` from its cache" if agent_bin else
            "no AWS agent (AGENT_BIN unset)")
    table = [
        f"Run {stamp}{' (smoke run: numbers not meaningful)' if args.smoke else ''} by "
        f"`bash bench/run`; each cache-hit row is {args.slices} slices of {args.seconds} s per "
        "server, taking turns (requests/s and the ratio over all slices); "
        f"{peer}. Machine: {machine()}.",
        "",
        "| measurement | broker | static axum baseline | AWS agent | ratio / target |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    text = "\n".join(table)
    print(text)
    if not args.output:
        print("bench: smoke run, the table is not written (--output FILE writes it)")
        return 0
    output = Path(args.output)
    existing = output.read_text() if output.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in existing:
        existing += f"\n{BEGIN}\n{END}\n"
    head, rest = existing.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    output.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"bench: wrote {output}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
