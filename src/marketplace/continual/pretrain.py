"""Where a continual run starts: pre-training with classes left out, and a checkpoint's market widened."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import MarketplaceError
from ..functional import path_losses
from ..market import Market
from ..training import Hook, Trainer, TrainConfig, load_checkpoint, market_from_checkpoint, save_checkpoint


@dataclass
class ExcludingTrainer(Trainer):
    """`Trainer` whose loss ignores the examples of `exclude` (cross-entropy's ignore_index).

    The excluded images stay in the batches; only their loss is left out,
    so their output slot is never trained towards or away from. Test
    accuracy is measured on the other classes.
    """

    exclude: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if self.exclude:
            keep = ~torch.isin(self.y_test_full, torch.tensor(self.exclude, device=self.device))
            self.x_test_full, self.y_test_full = self.x_test_full[keep], self.y_test_full[keep]
            self.x_test, self.y_test = self.x_test_full[: self.config.eval_samples], self.y_test_full[: self.config.eval_samples]

    def path_losses(self, x, y, vendors):
        out = self.market.evaluate(x, vendors)
        keep = ~torch.isin(y, torch.tensor(self.exclude, device=y.device)) if self.exclude else slice(None)
        return path_losses(out.products[:, keep], y[keep]), out.paths, out.products

    def save(self, path: str, seconds: float) -> None:
        meta = {"config": dataclasses.asdict(self.config), "seconds": seconds,
                "test_accuracy": self.test_accuracy, "exclude": list(self.exclude)}
        save_checkpoint(path, self.market.state_dict(), self.optimizer.state_dict(), meta)


# The held-out-9 experiment's pre-training (`marketplace continual pretrain`): the published rates, lr 0.1
# and probes at lr x 0.1, validated on 10,000 test images; a continual `nine` run starts from its checkpoint.
PRETRAIN = TrainConfig(lr=0.1, probe_scale=0.1, eval_samples=10_000, checkpoint="runs/no9.safetensors")


def pretrain(config: TrainConfig, exclude: Sequence[int] = (), hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """`marketplace train` with the classes `exclude` left out of the loss; returns its summary."""
    summary = ExcludingTrainer(config, hooks, exclude=tuple(exclude)).run()
    summary["exclude"] = list(exclude)
    return summary


def widen_head(market: Market, classes: int) -> Market:
    """A market whose last Linear layer has `classes` outputs; new rows are the mean of the old ones.

    A new class's logit then starts as the mean of the old logits, below
    their maximum, so no old prediction changes.
    """
    head = market.specs[-1]
    linears = [(name, m) for name, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise MarketplaceError("the last spec has no Linear layer to widen")
    name, old = linears[-1]
    if classes < old.out_features:
        raise MarketplaceError(f"cannot narrow the head from {old.out_features} to {classes} outputs")
    if classes == old.out_features:
        return market
    new = nn.Linear(old.in_features, classes, bias=old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        new.weight[old.out_features:] = old.weight.mean(0)
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
            new.bias[old.out_features:] = old.bias.mean()
    if not name:  # the spec is the Linear layer itself
        head = new
    else:
        *parents, last = name.split(".")
        parent = head
        for part in parents:
            parent = getattr(parent, part)
        setattr(parent, last, new)
    return Market(list(market.specs[:-1]) + [head], market.vendor_counts, market.sampling).to(market.device)


def load_market(path: str, device: torch.device, classes: int) -> tuple[Market, dict[str, Any]]:
    """The market of a `marketplace train` checkpoint, its head widened to `classes`."""
    ckpt = load_checkpoint(path)
    return widen_head(market_from_checkpoint(ckpt, path, device), classes), ckpt.meta
