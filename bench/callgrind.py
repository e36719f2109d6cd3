"""User-space instructions per cache-hit GET, broker and static baseline, under callgrind.

Wall-clock numbers on a shared 2-core VM move by 10-20 % between runs; instruction counts move
by well under 1 %, so this is how changes to the hot path are compared. Each server runs under
`valgrind --tool=callgrind`; after 200 warm-up requests its counters are zeroed, 2,000
keep-alive `GET /credentials/db0000` (JSON, bearer token, cache hit) are sent one after
another, the counters are dumped and the total is divided by 2,000.

Usage (after `bash bench/run` has built the binaries; needs valgrind, `apt-get install
valgrind`):
    .venv/moto/bin/python bench/callgrind.py [BROKER_BINARY] [--breakdown]
With `--breakdown` (and a binary with symbols) it also prints where a request's instructions
go, by the broker's own modules, by crate, and the C library's allocator and copies, beside the
baseline's and the difference: the table in BENCHMARKS.md.
Build with `bash docker/build-release --profile profiling --bin credential-broker` (and
`--example static-baseline`) and pass
target/x86_64-unknown-linux-gnu/profiling/credential-broker (your host tuple) to get
the same code with symbols, for `callgrind_annotate` on the dump files it names; the baseline
beside it (`examples/static-baseline`) is used when it is there, else the release one.
"""

import glob
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench

REQUESTS = 2000
WARM_UP = 200


def send(port, count):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        connection.request("GET", "/credentials/db0000",
                           headers={"Authorization": f"Bearer {bench.TOKEN}"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"callgrind: status {response.status}")
    connection.close()


def write_wrapper(command, binary, out_prefix, options=""):
    """Writes `command`, a script that runs `binary` under callgrind with `options`, its dumps
    written to `<out_prefix>.<pid>[.<n>]` (exec keeps the pid: the wrapper's is valgrind's)."""
    command.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind {options} "
                       f"--callgrind-out-file={out_prefix}.%p {binary} \"$@\"\n")
    command.chmod(0o755)


def dump(pid, out_prefix, count):
    """Has callgrind process `pid` write what ran since its last dump (and zero its counters);
    returns its dump files, oldest first, once there are `count`."""
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while len(dumps := glob.glob(f"{out_prefix}.{pid}.*")) < count:
        if time.monotonic() > deadline:
            raise SystemExit("callgrind: no dump written")
        time.sleep(0.2)
    time.sleep(0.5)  # let the dump finish
    return sorted(dumps, key=lambda path: int(path.rsplit(".", 1)[1]))


def measure(pid, port, out_prefix):
    """Instructions per request of the callgrind process `pid`, serving on `port`."""
    send(port, WARM_UP)
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
    send(port, REQUESTS)
    last = dump(pid, out_prefix, 1)[-1]
    text = Path(last).read_text(errors="replace")
    return int(re.search(r"^summary: (\d+)", text, re.M).group(1)) / REQUESTS, last


def group(source, function):
    """Where instructions are counted: by the source file they come from (a line inlined from
    hyper counts as hyper's wherever it runs; standard library lines count as the crate of the
    function they were inlined into): the broker's own modules (`broker: audit`),
    crates (`hyper`), the standard library, and the C library's allocator and copies."""
    if source == "???":
        if re.match(r"(_int_|__libc_)?(malloc|free|realloc|calloc|cfree)\b|tcache|"
                    r"unlink_chunk|malloc_consolidate", function):
            return "glibc malloc / free"
        if re.match(r"__(mem|str)\w*|mem(cpy|move|set|cmp)\b", function):
            return "glibc mem* (copies, compares)"
        return "glibc, other (clock_gettime, locks, syscall wrappers)"
    crate = re.search(r"/registry/src/[^/]+/([A-Za-z0-9_-]+?)-\d+\.\d+[^/]*/", source)
    if crate:
        return crate.group(1)
    if source.startswith("/rustc/"):
        # Standard library code inlined into a function: counted as that function's crate.
        owner = re.match(r"<*(?:&(?:mut )?)?(\w+)::(\w+)", function)
        if not owner or owner.group(1) in ("core", "alloc", "std"):
            return "std / core / alloc"
        if owner.group(1) == "credential_broker":
            return f"broker: {owner.group(2)}"
        return owner.group(1)
    own = re.match(r"(?:.*/)?src/(\w+)", source)
    return f"broker: {own.group(1)}" if own else source


def breakdown(dump):
    """Instructions per request by [`group`], most first (needs a build with symbols). Entries
    callgrind lists with nearly the whole total are the frames still on the stack at the dump
    (thread start, the worker loop), not costs of their own, and are left out."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", dump],
                         capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"^([\d,]+) .*PROGRAM TOTALS", out, re.M).group(1).replace(",", ""))
    totals = {}
    for line in out.splitlines():
        match = re.match(r"^\s*([\d,]+) \([\d. %]+\)\s+(\S+?):(.+?)(?: \[.*\])?$", line)
        if not match:
            continue
        ir = int(match.group(1).replace(",", ""))
        if ir >= total * 0.9:
            continue
        key = group(match.group(2), match.group(3).strip())
        totals[key] = totals.get(key, 0) + ir
    return sorted(((ir / REQUESTS, key) for key, ir in totals.items()), reverse=True)


def print_breakdown(broken_down):
    """The breakdown table: each group's instructions per request in the broker and the
    baseline, and the difference; groups under 50 in both are summed into one row."""
    (broker_total, broker), (baseline_total, baseline) = (
        broken_down["broker"], broken_down["baseline"])
    broker, baseline = ({key: ir for ir, key in rows} for rows in (broker, baseline))
    print("| where (exclusive instructions, per request) | broker | baseline | difference |\n"
          "|---|---|---|---|")
    small = [0.0, 0.0]
    for key in sorted(broker.keys() | baseline.keys(),
                      key=lambda key: -max(broker.get(key, 0), baseline.get(key, 0))):
        ours, theirs = broker.get(key, 0), baseline.get(key, 0)
        if max(ours, theirs) < 50:
            small[0] += ours
            small[1] += theirs
            continue
        print(f"| {key} | {ours:,.0f} | {theirs:,.0f} | {ours - theirs:+,.0f} |")
    print(f"| every group under 50 | {small[0]:,.0f} | {small[1]:,.0f} | "
          f"{small[0] - small[1]:+,.0f} |")
    print(f"| all | {broker_total:,.0f} | {baseline_total:,.0f} | "
          f"{broker_total - baseline_total:+,.0f} |")


def main():
    if not shutil.which("valgrind"):
        raise SystemExit("callgrind: valgrind is not installed (apt-get install valgrind)")
    paths = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    binary = Path(paths[0] if paths else bench.BROKER).resolve()
    baseline_binary = binary.parent / "examples/static-baseline"
    if not baseline_binary.exists():
        baseline_binary = bench.BASELINE
    broken_down = {}
    workdir = Path(tempfile.mkdtemp(prefix="broker-callgrind-"))
    out_prefix = str(workdir / "callgrind.out")
    moto = bench.Moto()
    proxy = bench.CountingProxy(moto.port)
    try:
        moto.create_dbs(10)
        wrapper = workdir / "broker-under-callgrind"
        write_wrapper(wrapper, binary, out_prefix)
        bench.BROKER = wrapper
        broker = bench.Broker(workdir, proxy.port, 10)
        try:
            broker.ready_seconds()
            body = workdir / "body.json"
            body.write_bytes(broker.get("/credentials/db0000"))
            port = int(broker.api.rsplit(":", 1)[1])
            # exec keeps the pid: the wrapper's pid is valgrind's.
            per_request, dump = measure(broker.process.pid, port, out_prefix)
            print(f"broker   {per_request:9,.0f} instructions/request  ({dump})", flush=True)
            if "--breakdown" in sys.argv:
                broken_down["broker"] = (per_request, breakdown(dump))
        finally:
            broker.close()
        port = bench.free_port()
        baseline = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_prefix}.%p",
             str(baseline_binary), f"127.0.0.1:{port}", str(body), str(body)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            bench.wait_http(f"http://127.0.0.1:{port}/credentials/db0000", limit=60)
            per_request, dump = measure(baseline.pid, port, out_prefix)
            print(f"baseline {per_request:9,.0f} instructions/request  ({dump})")
            if "--breakdown" in sys.argv:
                broken_down["baseline"] = (per_request, breakdown(dump))
        finally:
            baseline.terminate()
            baseline.wait()
        if broken_down:
            print_breakdown(broken_down)
    finally:
        proxy.close()
        moto.close()


if __name__ == "__main__":
    os.chdir(bench.ROOT)
    main()
