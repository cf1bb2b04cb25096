"""The training loop of `marketplace train-distributed`, one copy per rank.

It reuses the single-process pieces of `marketplace.training` (config, data,
market, optimizer, batches, accuracy) and the checkpoint format, and adds
what a group of ranks needs: an axis that turns a rank's evaluation into
the shared update, rank-0-only hooks and checkpoints, a stop decision every
rank agrees on, test evaluations split across ranks, and the weights-hash
check at start-up, every `check_every` steps and at the end.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import data
from ..errors import MarketplaceError
from ..functional import path_losses
from ..training import (CheckpointError, Hook, StepRate, TrainConfig, accuracy, batch_indices, build_market,
                        build_optimizer, leader_metrics, load_checkpoint, save_checkpoint)
from ..training.checkpoint import check_resume
from .check import check_same_weights
from .collectives import Collectives
from .data_axis import DataAxis, shard_bounds
from .replica_axis import ReplicaAxis

AXES = {"data": DataAxis, "replica": ReplicaAxis}


@dataclass
class DistributedConfig:
    axis: str = "data"  # data: split the batch; replica: split the vendors
    backend: str = "auto"  # auto, gloo, nccl
    timeout: float = 120.0  # seconds a collective waits for a peer
    check_every: int = 100  # steps between weights-hash checks

    def validate(self) -> None:
        if self.axis not in AXES:
            raise MarketplaceError(f"unknown axis {self.axis!r}; choose from {', '.join(AXES)}")
        if self.check_every < 1:
            raise MarketplaceError(f"--check-every must be >= 1, got {self.check_every}")


@torch.no_grad()
def sharded_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                     comm: Collectives) -> tuple[float, float]:
    """`training.accuracy` over all ranks: each takes a slice, one all-reduce of 2 numbers."""
    start, stop = shard_bounds(len(x), comm.rank, comm.world_size)
    n = stop - start
    acc, loss = accuracy(model, x[start:stop], y[start:stop]) if n else (0.0, 0.0)
    totals = comm.all_reduce(torch.tensor([round(acc * n / 100), loss * n], dtype=torch.float64), "eval")
    return 100.0 * float(totals[0]) / len(x), float(totals[1]) / len(x)


class DistributedTrainer:
    """One rank of a distributed run. hooks (progress bar, logs) are kept on rank 0 only."""

    def __init__(self, config: TrainConfig, dist_config: DistributedConfig, comm: Collectives,
                 hooks: Sequence[Hook] = ()):
        config.validate()
        dist_config.validate()
        self.config, self.dist, self.comm = config, dist_config, comm
        self.hooks = list(hooks) if comm.rank == 0 else []
        self.device = comm.train_device
        self.x_train, self.y_train = data.load_data(config.dataset, "train", config.data_dir, self.device)
        x_test, y_test = data.load_data(config.dataset, "test", config.data_dir, self.device)
        self.x_test, self.y_test = x_test[: config.eval_samples], y_test[: config.eval_samples]
        self.x_test_full, self.y_test_full = x_test, y_test
        self.market = build_market(config, self.device)
        self.optimizer = build_optimizer(config, self.market)
        self.axis = AXES[dist_config.axis](comm)
        self.axis.check(self.optimizer, config.batch)
        self.seconds_before, self.test_accuracy = 0.0, None
        if config.resume and config.checkpoint:
            self._resume(config.checkpoint)
        check_same_weights(self.market, comm, self.optimizer.steps)

    # -- checkpoints: rank 0 reads and writes, the others receive --------------

    def _resume(self, path: str) -> None:
        """Rank 0 loads the checkpoint (if there is one) and broadcasts weights and optimizer state."""
        state: dict[str, Any] = {"loaded": False}
        if self.comm.rank == 0 and Path(path).exists():
            try:
                ckpt = load_checkpoint(path)
                check_resume(path, ckpt, self.config)
                state = {"loaded": True, "model": ckpt.model, "optimizer": ckpt.optimizer,
                         "seconds": float(ckpt.meta.get("seconds", 0.0)),
                         "test_accuracy": ckpt.meta.get("test_accuracy")}
            except CheckpointError as e:
                state = {"error": str(e)}
        # Start-up only: the weights cross the wire once, so a checkpoint on rank 0's disk is enough.
        state = self.comm.broadcast_object(state, "startup")
        if "error" in state:
            raise CheckpointError(state["error"])
        if not state["loaded"]:
            return
        try:
            self.market.load_state_dict(state["model"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(
                f"{path} holds a different model than --vendors {list(self.config.vendors)}: {first}") from e
        self.optimizer.load_state_dict(state["optimizer"])
        self.seconds_before, self.test_accuracy = state["seconds"], state["test_accuracy"]

    def save(self, path: str, seconds: float) -> None:
        if self.comm.rank != 0:
            return
        meta = {"config": dataclasses.asdict(self.config), "seconds": seconds, "test_accuracy": self.test_accuracy,
                "distributed": {**dataclasses.asdict(self.dist), "world_size": self.comm.world_size}}
        save_checkpoint(path, self.market.state_dict(), self.optimizer.state_dict(), meta)

    # -- the loop ----------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg, opt, comm = self.config, self.optimizer, self.comm
        for hook in self.hooks:
            hook.on_start(cfg, self.market, opt.steps)
        start, first_step = time.perf_counter(), opt.steps
        elapsed = lambda: self.seconds_before + time.perf_counter() - start
        rate = StepRate(opt.steps, elapsed())
        done = self._done(elapsed())
        while not done:
            step = opt.steps
            idx = batch_indices(cfg.seed, step, len(self.x_train), cfg.batch)[self.axis.shard(cfg.batch)]
            idx = idx.to(self.device)
            x, y = self.x_train[idx], self.y_train[idx]
            seen: dict[str, torch.Tensor] = {}

            def evaluate(vendors):
                out = self.market.evaluate(x, vendors)
                seen.setdefault("products", out.products)  # the first pass, for the train metrics
                return path_losses(out.products, y), out.paths

            result = self.axis.step(opt, evaluate, cfg.batch)
            log = bool(self.hooks) and ((step + 1) % cfg.log_every == 0 or step == 0)
            metrics = leader_metrics(result.losses, result.paths, seen["products"], y) if log else {}
            done = self._done(elapsed())
            if opt.steps % cfg.eval_every == 0 and not done:  # the last one is on the full test set
                self.test_accuracy, test_loss = sharded_accuracy(self.market, self.x_test, self.y_test, comm)
                if self.hooks:
                    metrics.update(test_accuracy=self.test_accuracy, test_loss=test_loss)
            if opt.steps % self.dist.check_every == 0 and not done:
                check_same_weights(self.market, comm, opt.steps)
            metrics = rate.stamp(metrics, opt.steps, elapsed(), opt.lr[0])
            for hook in self.hooks:
                hook.on_step(metrics)
            if cfg.checkpoint and opt.steps % cfg.checkpoint_every == 0 and not done:
                self.save(cfg.checkpoint, elapsed())
        seconds = elapsed()
        check_same_weights(self.market, comm, opt.steps)
        self.test_accuracy, test_loss = sharded_accuracy(self.market, self.x_test_full, self.y_test_full, comm)
        if cfg.checkpoint:
            self.save(cfg.checkpoint, seconds)
        summary = self._summary(test_loss, seconds, opt.steps - first_step)
        for hook in self.hooks:
            hook.on_end(summary)
        return summary

    def _done(self, seconds: float) -> bool:
        """Stop after --steps, or when rank 0's clock passes --max-seconds (broadcast: the ranks must agree)."""
        cfg = self.config
        if cfg.steps is not None and self.optimizer.steps >= cfg.steps:
            return True
        if cfg.max_seconds is None:
            return False
        flag = torch.tensor([seconds >= cfg.max_seconds], dtype=torch.uint8)
        return bool(self.comm.broadcast(flag, "control")[0])

    def _summary(self, test_loss: float, seconds: float, steps_run: int) -> dict[str, Any]:
        cfg, counter = self.config, self.comm.counter
        per_step = lambda d: round(d.get("step", 0) / steps_run, 1) if steps_run else 0.0
        return {"test_accuracy": self.test_accuracy, "test_loss": test_loss, "steps": self.optimizer.steps,
                "seconds": round(seconds, 3), "skipped_steps": self.optimizer.skipped,
                "dataset": cfg.dataset, "algorithm": cfg.algorithm, "vendors": list(cfg.vendors),
                "batch": cfg.batch, "device": str(self.device), "axis": self.dist.axis,
                "world_size": self.comm.world_size, "backend": self.comm.backend or "none",
                "bytes_per_step": per_step(counter.payload), "wire_bytes_per_step": per_step(counter.sent),
                "bytes": counter.as_dict()}
