"""The image, built and run as users run it, with podman: the runtime stage of docker/Dockerfile
on a local stand-in for gcr.io/distroless/static-debian12:nonroot (no registry is reachable),
from the release binary docker/build-release made. The container runs read-only, with every
capability dropped, no new privileges, as 65532, its configuration and token mounted read-only,
on the host's network next to moto. Checks: it serves credentials; `podman healthcheck run` fails
while a database is not fetched and passes once it is; `podman stop` drains and exits 0. Reports
the image size (at most 15 MB), the time from `podman run` to healthy and the container's RSS.

Usage: .venv/moto/bin/python .ci/container_check.py BINARY
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import bench  # noqa: E402  (moto start-up, free ports)

BASE = "gcr.io/distroless/static-debian12:nonroot"
IMAGE = "localhost/credential-broker:container-check"
NAME = "credential-broker-container-check"
TOKEN = "container-check-token-0123456789"
MAX_IMAGE_BYTES = 15_000_000

# What the stand-in base holds, as the real one does for this binary: the CA bundle, and
# /etc/passwd and /etc/group naming root, nobody and nonroot (65532). Nothing else: no shell.
PASSWD = ("root:x:0:0:root:/root:/sbin/nologin\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
          "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


def fail(message):
    raise SystemExit(f"container-check: {message}")


class Podman:
    """podman with this machine's settings (TESTING.md) and a storage of its own."""

    def __init__(self, scratch):
        conf = scratch / "containers.conf"
        conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n'
                        'events_logger = "file"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.base = ["podman", "--root", str(scratch / "storage"), "--runroot", str(scratch / "run"),
                     "--storage-driver", "vfs", "--runtime", "runc"]

    def run(self, *args, check=True, timeout=600):
        result = subprocess.run(self.base + list(args), env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            fail(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def healthy(self):
        return self.run("healthcheck", "run", NAME, check=False, timeout=30).returncode == 0


def build(podman, scratch, binary):
    base = scratch / "base"
    base.mkdir()
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", base / "ca-certificates.crt")
    (base / "passwd").write_text(PASSWD)
    (base / "group").write_text(GROUP)
    (base / "Containerfile").write_text(
        "FROM scratch\n"
        "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
        "COPY passwd /etc/passwd\n"
        "COPY group /etc/group\n")
    podman.run("build", "--format", "docker", "-t", BASE, str(base))
    prebuilt = ROOT / "docker/prebuilt"
    shutil.rmtree(prebuilt, ignore_errors=True)
    (prebuilt / "pgbouncer-run").mkdir(parents=True)
    shutil.copy(binary, prebuilt / "credential-broker")
    started = time.monotonic()
    podman.run("build", "--format", "docker", "-f", "docker/Dockerfile",
               "--build-arg", "BINARY_FROM=prebuilt", "-t", IMAGE, str(ROOT))
    took = time.monotonic() - started
    shutil.rmtree(prebuilt)
    size = int(podman.run("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip())
    print(f"container-check: image built in {took:.1f} s, {size / 1e6:.2f} MB")
    if size > MAX_IMAGE_BYTES:
        fail(f"the image is {size / 1e6:.2f} MB, over {MAX_IMAGE_BYTES / 1e6:.0f} MB")
    return size


def configure(scratch, moto_port, databases):
    """The mounted configuration directory and token file, readable by 65532 only where needed."""
    etc = scratch / "etc"
    shutil.rmtree(etc, ignore_errors=True)
    etc.mkdir()
    api, admin = bench.free_port(), bench.free_port()
    tables = "".join(f'[databases.{db}]\nsecret_id = "ci/{db}"\n' for db in databases)
    (etc / "config.toml").write_text(f"""
[server]
listen = "127.0.0.1:{api}"
admin_listen = "127.0.0.1:{admin}"
shutdown_grace = "5s"
[auth]
token_file = "/run/secrets/broker-token"
[source]
kind = "secrets_manager"
[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{moto_port}"
[upstream]
backoff_initial = "200ms"
backoff_max = "1s"
[log]
format = "json"
{tables}""")
    os.chmod(etc / "config.toml", 0o644)
    token = scratch / "token"
    token.write_text(TOKEN + "\n")
    os.chown(token, 65532, 65532)
    os.chmod(token, 0o400)
    return etc, token, api, admin


def start(podman, etc, token):
    podman.run("rm", "-f", NAME, check=False)
    return podman.run(
        "run", "-d", "--name", NAME, "--network", "host", "--read-only", "--cap-drop=ALL",
        "--security-opt", "no-new-privileges", "--user", "65532:65532",
        "-v", f"{etc}:/etc/credential-broker:ro", "-v", f"{token}:/run/secrets/broker-token:ro",
        "-e", "AWS_ACCESS_KEY_ID=container-check", "-e", "AWS_SECRET_ACCESS_KEY=container-check",
        "-e", "AWS_EC2_METADATA_DISABLED=true", IMAGE)


def wait(condition, limit, what):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            fail(f"{what} within {limit} s")
        time.sleep(0.1)


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def secret(moto, db):
    password = f"container-{db}-{os.urandom(6).hex()}"
    moto.client.create_secret(Name=f"ci/{db}",
                              SecretString=json.dumps({"username": "app", "password": password}))
    return password


def main():
    binary = Path(sys.argv[1])
    scratch = Path(tempfile.mkdtemp(prefix="container-check-"))
    podman = Podman(scratch)
    moto = bench.Moto()
    try:
        size = build(podman, scratch, binary)

        # Run 1: time from `podman run` to healthy, with its database in place.
        password = secret(moto, "orders")
        etc, token, api, admin = configure(scratch, moto.port, ["orders"])
        started = time.monotonic()
        start(podman, etc, token)
        wait(podman.healthy, 30, "the container was not healthy")
        to_healthy = time.monotonic() - started
        request = urllib.request.Request(f"http://127.0.0.1:{api}/credentials/orders",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.load(response)
        if body.get("password") != password:
            fail("the container did not serve the secret's password")
        for _ in range(200):
            urllib.request.urlopen(request, timeout=5).read()
        pid = podman.run("inspect", NAME, "--format", "{{.State.Pid}}").stdout.strip()
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        rss_kib = int(status["VmRSS"].split()[0])
        if status["Uid"].split()[0] != "65532":
            fail(f"the broker runs as uid {status['Uid'].split()[0]}, not 65532")
        if int(status["CapEff"], 16) != 0 or int(status["CapPrm"], 16) != 0:
            fail(f"the broker holds capabilities: {status['CapEff'].strip()}")
        if status["NoNewPrivs"].strip() != "1":
            fail("no_new_privs is not set")
        mounts = Path(f"/proc/{pid}/mounts").read_text().splitlines()
        root = next(line.split() for line in mounts if line.split()[1] == "/")
        if "ro" not in root[3].split(","):
            fail(f"the root file system is not read-only: {root}")
        podman.run("stop", "-t", "10", NAME)
        code = podman.run("inspect", NAME, "--format", "{{.State.ExitCode}}").stdout.strip()
        logged = podman.run("logs", NAME)
        logs = logged.stdout + logged.stderr
        if code != "0" or "drained; exiting" not in logs:
            fail(f"podman stop: exit code {code}, logs:\n{logs}")
        if password in logs:
            fail("the password is in the container's log")
        print(f"container-check: healthy {to_healthy:.2f} s after podman run; served credentials "
              f"as uid 65532 on a read-only root with no capabilities; RSS after 200 requests "
              f"{rss_kib / 1024:.1f} MiB; podman stop drained and exited 0")

        # Run 2: unhealthy while a database is not fetched, healthy once it is.
        etc, token, api, admin = configure(scratch, moto.port, ["orders", "reports"])
        start(podman, etc, token)
        wait(lambda: answers(f"http://127.0.0.1:{admin}/healthz"), 30, "the admin listener did not answer")
        if podman.healthy():
            fail("the health check passed with a database not fetched")
        secret(moto, "reports")
        wait(podman.healthy, 30, "the container did not become healthy once its database existed")
        podman.run("stop", "-t", "10", NAME)
        print("container-check: podman healthcheck run failed while a database was missing and "
              f"passed once it existed; image {size / 1e6:.2f} MB")
    finally:
        podman.run("rm", "-f", NAME, check=False)
        moto.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
