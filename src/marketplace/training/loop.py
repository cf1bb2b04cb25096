"""Supervised training of a market on a named data set or a user's file, forward passes only.

`Trainer` is the one training loop, alone or as one rank of a process
group: the axis it is given decides how the ranks share a step
(`DataAxis`: the batch split across ranks; `ReplicaAxis`: the vendors
split), and without one it trains as a world of one. Batches and vendors
of step t are pure functions of (seed, t, rank, world size), so a run
resumed from a checkpoint is the same run as one never interrupted.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import torch

from ..distributed import AxisStep, Collectives, DataAxis, ReplicaAxis, check_same_weights, shard_bounds
from ..errors import CheckpointError, MarketplaceError
from ..functional import path_losses
from ..machine import resolve_device
from ..rng import derive_seeds
from ..vendors import BATCH_STREAM, Vendors
from .averaging import average_state, pop_average, weight_average
from .build import build_market, build_optimizer, data_shape, load_training_data, model_record
from .checkpoint import check_resume, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .hooks import Hook, StepRate
from .schedules import clock_schedule

Axis = Union[DataAxis, ReplicaAxis]


def batch_indices(seed: int, step: int, n: int, batch: int) -> torch.Tensor:
    """The examples of step `step`: drawn with replacement, a pure function of (seed, step)."""
    g = torch.Generator().manual_seed(int(derive_seeds(seed, BATCH_STREAM, step)[0]) & (2**63 - 1))
    return torch.randint(0, n, (batch,), generator=g)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000,
             comm: Collectives | None = None) -> tuple[float, float]:
    """Accuracy (percent) and mean cross-entropy of `model` on (x, y).

    comm: the ranks of a group share the work; each evaluates its contiguous
    slice of x, and one all-reduce of (correct, loss sum) gives all the result.
    """
    lo, hi = shard_bounds(len(x), comm.rank, comm.world_size) if comm is not None else (0, len(x))
    correct, loss = 0, 0.0
    for i in range(lo, hi, batch):
        j = min(i + batch, hi)
        logits = model(x[i:j]).float()
        correct += int((logits.argmax(1) == y[i:j]).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, y[i:j], reduction="sum"))
    if comm is not None:
        correct, loss = comm.all_reduce(torch.tensor([correct, loss], dtype=torch.float64), "eval").tolist()
    return 100.0 * correct / len(x), loss / len(x)


def finished(config, steps: int, seconds: float) -> bool:
    """Whether a run with `config.steps` and/or `config.max_seconds` is over."""
    if config.steps is not None and steps >= config.steps:
        return True
    return config.max_seconds is not None and seconds >= config.max_seconds


def leader_metrics(losses: torch.Tensor, paths: torch.Tensor, products: torch.Tensor,
                   y: torch.Tensor) -> dict[str, float]:
    """Loss and accuracy of the leader path (the base weights) on the training batch, best and mean loss."""
    leader = (paths == 0).all(dim=1).nonzero()
    i = int(leader[0, 0]) if len(leader) else int(torch.argmin(losses))
    return {"loss": float(losses[i]), "train_accuracy": 100.0 * float((products[i].argmax(1) == y).float().mean()),
            "best_loss": float(losses.min()), "mean_loss": float(losses.mean())}


def vendor_streams(axis: str, world_size: int) -> int:
    """How many ranks draw their own vendors each step: the replica axis's world size, else one."""
    return world_size if axis == "replica" else 1


def read_resume_state(path: str, config: TrainConfig, streams: int = 1) -> dict[str, Any]:
    """What a resumed run takes from its checkpoint, after checking that it continues the same run.

    streams: this run's `vendor_streams`; a replica run continues only over as many ranks, since
    the vendors of every step depend on them (the data axis's world size only splits the batch).
    """
    ckpt = load_checkpoint(path)
    check_resume(path, ckpt, config)
    group = ckpt.meta.get("distributed") or {}
    saved = vendor_streams(group.get("axis", "data"), int(group.get("world_size", 1)))
    if saved != streams:
        raise CheckpointError(f"{path} was trained with {saved} rank(s) drawing vendors each step, this run has "
                              f"{streams}: resume a replica-axis run on the replica axis over the same ranks")
    return {"model": ckpt.model, "optimizer": ckpt.optimizer, "seconds": float(ckpt.meta.get("seconds", 0.0)),
            "test_accuracy": ckpt.meta.get("test_accuracy")}


@dataclass
class Trainer:
    """One training run: data, market, optimizer and the loop over steps.

    axis: how the ranks of a process group share each step, e.g.
    `DataAxis(init_from_env())`; None trains alone on `config.device`. In a
    group every rank runs this same loop; rank 0 alone keeps the hooks and
    reads and writes checkpoints. check_every: steps between checks that
    every rank still holds bit-identical weights.
    """

    config: TrainConfig
    hooks: Sequence[Hook] = field(default_factory=tuple)
    axis: Axis | None = None
    check_every: int = 100

    def __post_init__(self):
        self.config.validate()
        cfg = self.config
        if self.check_every < 1:
            raise MarketplaceError(f"check_every must be >= 1, got {self.check_every}")
        self.distributed = self.axis is not None  # a group's settings go into checkpoints and the summary
        if self.axis is None:
            self.axis = DataAxis(Collectives(train_device=resolve_device(cfg.device)))
        self.comm = self.axis.comm
        self.device = self.comm.train_device
        self.hooks = list(self.hooks) if self.comm.rank == 0 else []
        shape, classes = data_shape(cfg)  # the model's mistakes before the data's (a download, say)
        self.model_record = model_record(cfg, shape, classes)
        self.market = build_market(cfg, self.device, shape, classes)
        self.x_train, self.y_train = load_training_data(cfg, "train", self.device)
        x_test, y_test = load_training_data(cfg, "test", self.device)
        self.x_test, self.y_test = x_test[: cfg.eval_samples], y_test[: cfg.eval_samples]
        self.x_test_full, self.y_test_full = x_test, y_test
        self.optimizer = build_optimizer(cfg, self.market)
        self.clock = clock_schedule(self.optimizer)  # a schedule over --max-seconds follows rank 0's clock
        self.axis.check(self.optimizer, cfg.batch)
        self.averaged = weight_average(self.market, cfg.average) if cfg.average else None
        self.seconds_before = 0.0  # training time of earlier runs resumed from
        self.test_accuracy: float | None = None
        if cfg.resume and cfg.checkpoint:
            self.load(cfg.checkpoint, missing_ok=True)
        check_same_weights(self.market, self.comm, self.optimizer.steps)

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights a run scores and inference loads: the average when one is kept, else the market's."""
        return self.market if self.averaged is None else self.averaged.module

    # -- checkpoints: rank 0 reads and writes them -------------------------------

    def save(self, path: str, seconds: float) -> None:
        meta = {"config": dataclasses.asdict(self.config), "seconds": seconds,
                "test_accuracy": self.test_accuracy, "model": self.model_record}
        if self.distributed:
            meta["distributed"] = {"axis": self.axis.name, "backend": self.comm.backend, "timeout": self.comm.timeout,
                                   "check_every": self.check_every, "world_size": self.comm.world_size}
        optimizer = self.optimizer.state_dict()
        if self.averaged is not None:
            optimizer = {**optimizer, **average_state(self.averaged)}
        save_checkpoint(path, self.market.state_dict(), optimizer, meta)

    def load(self, path: str, missing_ok: bool = False) -> bool:
        """Continue the run saved at `path`; False when missing_ok and there is no file yet.

        Rank 0 reads the file and sends it to the others (start-up only, so it
        need only be on rank 0's disk); its refusal stops every rank.
        """
        state, error = None, None
        if self.comm.rank == 0 and not (missing_ok and not Path(path).exists()):
            try:
                streams = vendor_streams(self.axis.name, self.comm.world_size)
                state = read_resume_state(path, self.config, streams)
            except MarketplaceError as e:
                error = e
        if self.comm.world_size > 1:
            state, message = self.comm.broadcast_object((state, str(error) if error else None), "startup")
            if message and error is None:
                raise CheckpointError(message)
        if error is not None:
            raise error
        if state is None:
            return False
        try:
            self.market.load_state_dict(state["model"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{path} holds a different model than vendors {list(self.config.vendors)}: "
                                  f"{first}", fields=("vendors",)) from e
        optimizer = dict(state["optimizer"])
        averaged = pop_average(optimizer)
        self.optimizer.load_state_dict(optimizer)
        if self.averaged is not None and averaged:
            self.averaged.load_state_dict({k: v.to(self.device) for k, v in averaged.items()})
        elif self.averaged is not None:  # a checkpoint from before the run kept one: it starts at the loaded weights
            self.averaged = weight_average(self.market, self.config.average)
        self.seconds_before, self.test_accuracy = state["seconds"], state["test_accuracy"]
        return True

    def _checkpoint(self, seconds: float) -> None:
        if self.comm.rank == 0:
            self.save(self.config.checkpoint, seconds)

    # -- the loop ------------------------------------------------------------

    def path_losses(self, x: torch.Tensor, y: torch.Tensor, vendors: Vendors):
        out = self.market.evaluate(x, vendors)
        return path_losses(out.products, y), out.paths, out.products

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's examples of step `step`: its shard of the step's batch."""
        cfg = self.config
        idx = batch_indices(cfg.seed, step, len(self.x_train), cfg.batch)[self.axis.shard(cfg.batch)]
        idx = idx.to(self.device)
        return self.x_train[idx], self.y_train[idx]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[AxisStep, torch.Tensor]:
        """One update over the axis; also the products of the first pass [P, B, classes], for the metrics."""
        seen: dict[str, torch.Tensor] = {}

        def evaluate(vendors: Vendors) -> tuple[torch.Tensor, torch.Tensor]:
            losses, paths, products = self.path_losses(x, y, vendors)
            seen.setdefault("products", products)
            return losses, paths

        result = self.axis.step(self.optimizer, evaluate, self.config.batch)
        return result, seen["products"]

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
            x, y = self.batch(step)
            result, products = self.step(x, y)
            if self.averaged is not None:
                self.averaged.update_parameters(self.market)
            metrics: dict[str, Any] = {}
            if self.hooks and ((step + 1) % cfg.log_every == 0 or step == 0):
                metrics = leader_metrics(result.losses, result.paths, products, y)
            done = self._done(elapsed())
            if opt.steps % cfg.eval_every == 0 and not done:  # the last one is on the full test set
                self.test_accuracy, test_loss = accuracy(self.evaluated, self.x_test, self.y_test, comm=comm)
                metrics.update(test_accuracy=self.test_accuracy, test_loss=test_loss)
            if opt.steps % self.check_every == 0 and not done:
                check_same_weights(self.market, comm, opt.steps)
            metrics = rate.stamp(metrics, opt.steps, elapsed(), opt.lr[0])
            for hook in self.hooks:
                hook.on_step(metrics)
            if cfg.checkpoint and (opt.steps % cfg.checkpoint_every == 0 or done):
                self._checkpoint(elapsed())
        seconds = elapsed()
        check_same_weights(self.market, comm, opt.steps)
        self.test_accuracy, test_loss = accuracy(self.evaluated, self.x_test_full, self.y_test_full, comm=comm)
        if cfg.checkpoint:
            self._checkpoint(seconds)
        summary = self.summary(test_loss, seconds, opt.steps - first_step)
        for hook in self.hooks:
            hook.on_end(summary)
        return summary

    def _done(self, seconds: float) -> bool:
        """After --steps, or when rank 0's clock passes --max-seconds (sent to all: the ranks must agree).

        A schedule on the clock is moved to the same seconds, so every rank steps at the same rate.
        """
        cfg = self.config
        if cfg.steps is not None and self.optimizer.steps >= cfg.steps:
            return True
        if cfg.max_seconds is None:
            return False
        seconds = float(self.comm.broadcast(torch.tensor([seconds], dtype=torch.float64), "control")[0])
        if self.clock is not None:
            self.clock.now = seconds
        return seconds >= cfg.max_seconds

    def summary(self, test_loss: float, seconds: float, steps_run: int) -> dict[str, Any]:
        """The run's results; the vendors are the counts trained, after cheap_vendors."""
        cfg, opt = self.config, self.optimizer
        out = {"test_accuracy": self.test_accuracy, "test_loss": test_loss, "steps": opt.steps,
               "seconds": round(seconds, 3), "skipped_steps": opt.skipped, "dataset": cfg.data or cfg.dataset,
               "model": cfg.model, "algorithm": cfg.algorithm, "vendors": list(self.market.vendor_counts),
               "batch": cfg.batch, "device": str(self.device)}
        if cfg.average:
            out["averaged_over_steps"] = cfg.average
        if self.distributed:
            counter = self.comm.counter
            per_step = lambda d: round(d.get("step", 0) / steps_run, 1) if steps_run else 0.0
            out.update(axis=self.axis.name, world_size=self.comm.world_size, backend=self.comm.backend or "none",
                       bytes_per_step=per_step(counter.payload), wire_bytes_per_step=per_step(counter.sent),
                       bytes=counter.as_dict())
        return out


def train(config: TrainConfig, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train and return the summary (test_accuracy in percent, steps, seconds, ...)."""
    return Trainer(config, hooks).run()
