"""Helpers shared by the test files (not tests themselves)."""

import json
import sys

import torch

from marketplace.cli import main


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `marketplace ARGS` run in-process; a normal return is exit code 0."""
    monkeypatch.setattr(sys, "argv", ["marketplace", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    """The last non-empty line of stdout, parsed as JSON."""
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "nothing on stdout"
    return json.loads(lines[-1])


def assert_user_error(code: int, out: str, err: str, *hints: str) -> None:
    """Exit 2, exactly one line on stderr starting with 'error:', no traceback."""
    assert "Traceback" not in err + out, err
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("error:"), lines[0]
    for hint in hints:
        assert hint in lines[0], lines[0]


def succeeded(results):
    """The results of `run_local`, after asserting that no rank failed."""
    from marketplace.distributed import RankFailure

    failures = [r for r in results if isinstance(r, RankFailure)]
    assert not failures, "\n".join(f"rank {f.rank}: {f.error} {f.message}" for f in failures)
    return results


def assert_close(a, b, atol=1e-5):
    """Two state dicts equal within float tolerance, key by key."""
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-5, msg=lambda m: f"{k}: {m}")


def tiny_checkpoint(path, vendors=(2, 2, 2), seed=0):
    """A `marketplace train`-format checkpoint of an untrained CNN market, written without data (fast)."""
    import dataclasses

    from marketplace.training import TrainConfig, build_market, build_optimizer, save_checkpoint

    config = TrainConfig(vendors=tuple(vendors), steps=1, seed=seed)
    market = build_market(config, torch.device("cpu"))
    save_checkpoint(path, market.state_dict(), build_optimizer(config, market).state_dict(),
                    {"config": dataclasses.asdict(config)})
    return path


class ServerProcess:
    """`marketplace serve` in a subprocess on 127.0.0.1 and a free port; `start()` waits until it answers."""

    def __init__(self, checkpoint, store, *args, token="test-token", threads=1):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.args = [sys.executable, "-m", "marketplace", "serve", str(checkpoint), "--store", str(store),
                     "--port", str(self.port), "--token", token, "--threads", str(threads), *map(str, args)]
        self.proc = None

    def start(self, timeout=90.0):
        import os
        import subprocess
        import time

        import httpx

        env = {**os.environ, "MARKETPLACE_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(self.args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/v1/status", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("the server did not answer in time")

    def kill(self):
        """SIGKILL: no shutdown hook runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        """SIGTERM: the server checkpoints its learner and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:
                self.kill()
        return self.proc.returncode if self.proc else None
