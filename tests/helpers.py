"""Helpers shared by the test files (not tests themselves).

Imports nothing the GPU machine lacks (FastAPI, httpx, MLflow): the CUDA tests
of every module that uses these helpers must still be collected there.
"""

import json
import sys

import torch
from torch.func import functional_call

from marketplace.cli import main
from marketplace.training import Hook, TrainConfig


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


def path_reference(market, vendors, path, x):
    """One path alone, spec by spec, with plainly built per-vendor weights: no vmap, no stacking.

    The reference every batched route is tested against. A parameter-free spec runs as it is.
    """
    for k, (spec, j) in enumerate(zip(market.specs, path)):
        layout = market.layouts[k]
        if not layout.numel:
            x = spec(x)
            continue
        delta = vendors.deltas(k, layout.numel, x.device)[j]
        base = dict(spec.named_parameters())  # frozen ones (requires_grad=False): read as they are
        params = {n: base[n] + d for n, d in layout.split(delta).items()}
        x = functional_call(spec, params, (x,))
    return x


def toy_problem(seed=0, examples=256, vendors=(4, 4)):
    """A small separable classification problem (x [examples, 8], 3 classes) and a 2-spec MLP market."""
    from marketplace import Market
    from marketplace.models import mlp

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(examples, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        market = Market(mlp([8, 16, 3]), vendors=list(vendors))
    return market, x, y


def train_config(data_dir, **overrides) -> TrainConfig:
    """A tiny run: 2x2x2 market, batch 8, CPU, 200 test examples."""
    base = dict(vendors=(2, 2, 2), batch=8, steps=3, eval_samples=200, device="cpu", data_dir=str(data_dir))
    base.update(overrides)
    return TrainConfig(**base)


def assert_same_weights(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


class StopAt(Hook):
    """Simulate a crash (or a runaway loop) by raising after a given step."""

    class Crash(Exception):
        pass

    def __init__(self, step: int):
        self.step = step

    def on_step(self, metrics):
        if metrics["step"] >= self.step:
            raise StopAt.Crash(f"stopped at step {metrics['step']}")


def no9_base(monkeypatch, capsys, data_dir, path):
    """A digits-0-8 base (9 left out of the loss) from one training step of a 2x2x2 market: cheap mechanics."""
    code, out, err = run_cli(monkeypatch, capsys, "continual", "pretrain", "--exclude", "9", "--vendors", "2,2,2",
                             "--steps", "1", "--batch", "8", "--eval-samples", "50", "--device", "cpu", "--quiet",
                             "--data-dir", data_dir, "--checkpoint", path)
    assert code == 0, err
    return path
