"""Checks the release build the image ships (docker/build-release): statically linked (no ELF
interpreter, so it runs on distroless/static), and able to resolve a host name through
/etc/hosts and fetch from Secrets Manager (moto, reached as `localhost`) with that static glibc.

Usage: .venv/moto/bin/python .ci/release_check.py BINARY
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench  # noqa: E402  (moto start-up and secrets, shared with the benchmark)


def fail(message):
    raise SystemExit(f"release-check: {message}")


def readelf(option, binary):
    return subprocess.run(["readelf", option, "--wide", str(binary)],
                          capture_output=True, text=True, check=True).stdout


def main():
    binary = Path(sys.argv[1])
    # A static PIE keeps a dynamic section for its own relocations, but names no interpreter
    # and no shared library.
    if "INTERP" in readelf("--program-headers", binary) or "(NEEDED)" in readelf("--dynamic", binary):
        fail(f"{binary} is dynamically linked (an ELF interpreter or NEEDED libraries)")
    print(f"release-check: {binary} is statically linked ({binary.stat().st_size / 2**20:.1f} MiB)")

    moto = bench.Moto()
    broker = None
    work = Path(tempfile.mkdtemp(prefix="release-check-"))
    try:
        moto.create_dbs(1)
        config = work / "broker.toml"
        config.write_text(f"""
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[auth]
disabled = true
[source]
kind = "secrets_manager"
[aws]
region = "us-east-1"
endpoint_url = "http://localhost:{moto.port}"
[databases.db0000]
secret_id = "bench/db0000"
""")
        log = work / "broker.log"
        env = {"PATH": os.environ["PATH"], "AWS_ACCESS_KEY_ID": "check",
               "AWS_SECRET_ACCESS_KEY": "check", "AWS_EC2_METADATA_DISABLED": "true",
               "NO_COLOR": "1"}
        broker = subprocess.Popen([str(binary), "--config", str(config)], env=env,
                                  stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (found := re.search(r"api=(\S+)", log.read_text())):
            if broker.poll() is not None or time.monotonic() > deadline:
                fail(f"the broker did not start:\n{log.read_text()}")
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://{found.group(1)}/credentials/db0000",
                                    timeout=20) as response:
            body = json.load(response)
        if response.status != 200 or body.get("username") != "app0":
            fail(f"unexpected answer {response.status}: keys {sorted(body)}")
        print("release-check: the static binary resolved localhost and served credentials from moto")
    finally:
        if broker:
            broker.terminate()
            broker.wait(timeout=20)
        moto.close()
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
