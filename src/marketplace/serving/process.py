"""`marketplace serve` in a subprocess: for tests, benchmarks and notebooks that need a real server.

    with ServerProcess("runs/a.safetensors", "runs/store", "--records", 64) as server:
        Client(server.url, server.token).predict(x)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """One `marketplace serve CHECKPOINT --store STORE ARGS` on 127.0.0.1; `start()` waits until it answers.

    The port stays the same across restarts, so clients can retry the same
    URL after `kill()` (SIGKILL, no shutdown hook) or `stop()` (SIGTERM: the
    learner is checkpointed first).
    """

    def __init__(self, checkpoint: str | Path, store: str | Path, *args, token: str = "test-token",
                 threads: int = 1, port: int | None = None, log: str | Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.log = log
        self.args = [sys.executable, "-m", "marketplace", "serve", str(checkpoint), "--store", str(store),
                     "--port", str(self.port), "--token", token, "--threads", str(threads), *map(str, args)]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "ServerProcess":
        import httpx

        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        out = open(self.log, "a") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = Path(self.log).read_text()[-2000:] if self.log else "(no log; pass log=...)"
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {tail}")
            try:
                if httpx.get(f"{self.url}/v1/status", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL: nothing of the server's own runs; what survives is what was on disk."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> int | None:
        """SIGTERM: uvicorn shuts down and the learner is checkpointed; SIGKILL after 60 s."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
