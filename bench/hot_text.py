"""Writes docker/hot-text.ld: the linker script that puts the code a running broker executes at
the front of its text, so that the pages it touches are few and adjacent.

Why: the kernel maps a binary's code in 64 KiB windows around each page fault ("fault-around").
The ~2.5 MB of code a broker runs (start-up, AWS SDK calls, the hit path, metrics, shutdown) is
spread over the whole ~7.5 MB text in link order, so nearly every window is touched and the whole
text stays resident. Gathered in one place, only those windows are.

How: the profiling build (the release code with symbols) runs under callgrind through start-up
with 10 databases from moto, requests of every kind (JSON and the other formats, TCP and the
Unix socket, 64 keep-alive connections of hits), the admin endpoints, and a drain on SIGTERM.
Every function it executed becomes an input-section pattern: Rust symbols with their hash as a
wildcard (the hash differs between the profiling build, `docker/build-release` and a plain
`cargo build --release`, and moves with every dependency bump; the price is that every instance
of a generic function comes along), C library functions by the archive member that holds them.
The hit path comes first, then the rest. build.rs passes the script to the linker for release
builds of the binary; code not listed keeps its place after it, and a stale script only costs
memory, never correctness.

Usage (after `bash bench/run` has installed moto and wrk; needs valgrind; about 3 minutes):
    .venv/moto/bin/python bench/hot_text.py
then rebuild (`bash bench/run` does). Re-run it after a change that moves much code (a
dependency bump, a new source or feature), and compare the RSS rows of `bash bench/run`.
"""

import glob
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench
from callgrind import dump, write_wrapper

OUTPUT = bench.ROOT / "docker" / "hot-text.ld"
# The static C libraries every release build here links (.cargo/config.toml); a build with glibc
# linked dynamically (`RUSTFLAGS=`) has them as shared libraries, and their patterns match nothing.
ARCHIVES = ("libc.a", "libm.a", "libgcc.a", "libgcc_eh.a")
# Every format a PostgreSQL database has (the bench's secrets are PostgreSQL ones).
FORMATS = ("json", "uri", "jdbc", "keyvalue", "env", "pgpass", "pgbouncer", "service")


def executed(path):
    """The symbol names of every function with a cost in one callgrind dump."""
    names = set()
    for line in Path(path).read_text(errors="replace").splitlines():
        match = re.match(r"^c?fn=\(\d+\)\s+([^\s']+)", line)
        if match and not match.group(1).startswith("0x"):
            names.add(match.group(1))
    return names


def run_scenario(binary, workdir):
    """Returns the functions run while serving hits, and all functions run."""
    out = workdir / "callgrind.out"
    wrapper = workdir / "broker-under-callgrind"
    write_wrapper(wrapper, binary, out, "--demangle=no --dump-line=no")
    socket = workdir / "broker.sock"
    moto = bench.Moto()
    try:
        moto.create_dbs(10)
        broker = bench.Broker(workdir, moto.port, 10, binary=wrapper,
                              server=f'[server.unix_socket]\npath = "{socket}"\nmode = "0600"\n')
        pid = broker.process.pid
        try:
            broker.ready_seconds()
            for i in range(10):
                broker.get(f"/credentials/db{i:04}")
            for name in FORMATS:
                broker.get(f"/credentials/db0000?format={name}")
            for path in ("/metrics", "/healthz", "/readyz", "/status"):
                subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{broker.admin}{path}"],
                               check=True)
            time.sleep(1)
            dump(pid, out, 1)
            subprocess.run(["wrk", "-t1", "-c64", "-d5s", "-H",
                            f"Authorization: Bearer {bench.TOKEN}",
                            f"http://{broker.api}/credentials/db0000"],
                           check=True, capture_output=True)
            for _ in range(20):
                subprocess.run(["curl", "-s", "-o", "/dev/null", "--unix-socket", str(socket),
                                "-H", f"Authorization: Bearer {bench.TOKEN}",
                                "http://broker/credentials/db0000"], check=True)
            time.sleep(1)
            dump(pid, out, 2)
        finally:
            broker.process.send_signal(signal.SIGTERM)
            broker.process.wait(timeout=120)
    finally:
        moto.close()
    dumps = sorted(glob.glob(f"{out}.{pid}*"))
    if len(dumps) < 3:
        raise SystemExit(f"hot_text: expected 3 callgrind dumps, found {dumps}")
    hits = executed(next(d for d in dumps if d.endswith(".2")))
    return hits, set().union(*(executed(d) for d in dumps))


def archive_members():
    """The archive member of the static C libraries that defines each function."""
    archives = []
    for name in ARCHIVES:
        path = Path(subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                                   text=True, check=True).stdout.strip())
        if not path.is_file():
            continue
        if path.read_bytes().startswith(b"!<arch>"):
            archives.append(path)
        else:  # a linker script: libm.a is `GROUP ( libm-2.36.a libmvec.a )`
            archives += [path.parent / Path(ref).name
                         for ref in re.findall(r"[\w./+-]+\.a\b", path.read_text())]
    members = {}
    for path in archives:
        listing = subprocess.run(["nm", "-A", "--defined-only", path], capture_output=True,
                                 text=True, check=True).stdout
        for line in listing.splitlines():
            match = re.match(r"^[^:]+:([^:]+):\S* [tTwWiI] (\S+)$", line)
            if match:
                members.setdefault(match.group(2), f"*{path.name}:{match.group(1)}")
    return members


def pattern(name, members):
    """The input-section pattern that finds function `name` in any release build, or None."""
    if name in members:
        # The C library's code sections are all called `.text` (or `.text.<cpu feature>`).
        return f"{members[name]}(.text .text.*)"
    legacy = re.match(r"^(_ZN.*17h)[0-9a-f]{16}E", name)
    if legacy:
        symbol = legacy.group(1) + "*"
    elif name.startswith("_R"):
        # v0 mangling: the crate disambiguators (`Cs<hash>_`) differ between builds.
        symbol = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", re.sub(r"[.]llvm[.]\d+$", "", name)) + "*"
    elif re.fullmatch(r"[A-Za-z_][\w.$]*", name):
        symbol = name
    else:
        return None
    # LLVM puts functions it knows are cold (`#[cold]`) in `.text.unlikely.` sections.
    return f"*(.text.{symbol} .text.unlikely.{symbol})"


def main():
    if len(sys.argv) != 1:
        raise SystemExit(__doc__)
    for tool in ("valgrind", "callgrind_control", "wrk", "curl", "nm", "gcc"):
        if not shutil.which(tool):
            raise SystemExit(f"hot_text: {tool} is not installed "
                             "(apt-get install valgrind wrk curl binutils gcc)")
    subprocess.run(["bash", "docker/build-release", "--profile", "profiling", "--bin",
                    "credential-broker"], cwd=bench.ROOT, check=True)
    binary = bench.RELEASE.parent / "profiling" / "credential-broker"
    hits, run = run_scenario(binary, Path(tempfile.mkdtemp(prefix="hot-text-")))
    members = archive_members()
    lines = [pattern(name, members) for name in sorted(hits) + sorted(run - hits)]
    lines = list(dict.fromkeys(line for line in lines if line))
    OUTPUT.write_text(
        "/* Generated by bench/hot_text.py: the code a broker runs, the hit path first, at the\n"
        "   front of the text, so that the pages it touches are few (see that script). Passed to\n"
        f"   the linker by build.rs for release builds. {len(hits)} functions on the hit path,\n"
        f"   {len(run)} in all. */\n"
        "SECTIONS {\n  .text.hot : {\n"
        + "".join(f"    {line}\n" for line in lines)
        + "  }\n}\nINSERT BEFORE .text;\n"
    )
    print(f"hot_text: {len(run)} functions run ({len(hits)} on the hit path); "
          f"{len(lines)} patterns written to {OUTPUT}")


if __name__ == "__main__":
    main()
