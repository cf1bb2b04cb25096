"""The fine-tuning study's bases and tasks: the two models, the task data, and each base's backprop training.

A base is trained once by Adam and saved with its settings, so that every
method starts from the same weights and a rerun can reuse it; one made with
other settings is refused rather than silently mixed into the study.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from marketplace import data as datasets
from marketplace.errors import MarketplaceError
from marketplace.models.resnet import resnet_units, split_units
from marketplace.training import accuracy, batch_indices, load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class Task:
    base: str  # "resnet" or "transformer"
    dataset: str
    classes: tuple[int, ...]
    invert: bool
    methods: tuple[str, ...]
    title: str
    screens: tuple[str, ...] = ()  # methods run only when --methods names them: not part of the study


TASKS: dict[str, Task] = {
    "ten-classes": Task("resnet", "fashion-mnist", tuple(range(10)), False,
                        ("backprop", "v2-dense", "v2-rank1", "v2-rank4", "v2-partial", "v2-ends", "v2-tail"),
                        "ResNet-8, Fashion-MNIST: all ten classes", screens=("v2-partial-adam", "backprop-partial")),
    "inverted": Task("resnet", "fashion-mnist", tuple(range(9)), True,
                     ("backprop", "v2-dense", "v2-rank1", "v2-rank4", "v2-partial", "v2-ends", "v2-tail"),
                     "ResNet-8, Fashion-MNIST 0-8 inverted", screens=("v2-partial-adam", "backprop-partial")),
    "transformer-inverted": Task("transformer", "mnist", tuple(range(10)), True,
                                 ("backprop", "v2-dense", "v2-rank1", "v2-partial", "v2-ends", "v2-tail"),
                                 "Transformer, MNIST inverted"),
}
BASES = {"resnet": ("fashion-mnist", tuple(range(9))), "transformer": ("mnist", tuple(range(10)))}
TRANSFORMER = dict(d_model=64, heads=4, layers=2, feedforward=128)


class RowEmbedding(nn.Module):
    """An image [B, 1, H, W] as H tokens: each row of W pixels projected to d_model, plus a learned position."""

    def __init__(self, width: int, rows: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(width, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(rows, d_model))

    def forward(self, x):
        return self.proj(x.reshape(x.shape[0], -1, x.shape[-1])) + self.pos


class PoolHead(nn.Module):
    """Mean over the tokens, LayerNorm, linear: [B, T, d_model] -> [B, classes]."""

    def __init__(self, d_model: int, classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, classes)

    def forward(self, x):
        return self.fc(self.norm(x.mean(dim=1)))


class RowTransformer(nn.Module):
    """A `TransformerEncoder` classifier over an image's rows; `specs()` cuts it at its layers."""

    def __init__(self, d_model: int, heads: int, layers: int, feedforward: int, classes: int = 10):
        super().__init__()
        self.embed = RowEmbedding(28, 28, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, feedforward, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = PoolHead(d_model, classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)))

    def specs(self) -> list[nn.Module]:
        return [self.embed, *self.encoder.layers, self.head]


def build_base(kind: str, seed: int, specs: int = 4) -> tuple[nn.Module, Callable[[], list[nn.Module]]]:
    """A fresh model of `kind` from `seed`, and a function giving its specs (which share its weights).

    specs: how many the ResNet is cut into (5: the stem alone); the transformer always has 4.
    """
    torch.manual_seed(seed)
    if kind == "resnet":
        units = resnet_units("resnet8", 1, 10)
        return nn.Sequential(*units), lambda: [nn.Sequential(*group) for group in split_units(units, specs)]
    model = RowTransformer(**TRANSFORMER)
    return model, model.specs


def invert_(x: torch.Tensor) -> torch.Tensor:
    """1 - pixels, in place, in the normalised units load_data gives: ((1 - u) - mean) / std, u = x * std + mean."""
    return x.neg_().add_((1.0 - 2.0 * datasets.MEAN) / datasets.STD)


class Data:
    """The train and test splits of each data set, loaded once (through `data.load_data`, looked up at call time)."""

    def __init__(self, data_dir: str | None):
        self.data_dir, self.cache = data_dir, {}

    def split(self, name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if (name, split) not in self.cache:
            self.cache[name, split] = datasets.load_data(name, split, self.data_dir, torch.device("cpu"))
        return self.cache[name, split]

    def task(self, dataset: str, classes: tuple[int, ...], inverted: bool, test_images: int) -> dict[str, torch.Tensor]:
        out = {}
        for split in ("train", "test"):
            x, y = self.split(dataset, split)
            keep = torch.isin(y, torch.tensor(classes))
            x, y = x[keep], y[keep]  # a copy of its own: inverted in place
            if split == "test":
                x, y = x[:test_images], y[:test_images]
            out[f"x_{split}"], out[f"y_{split}"] = (invert_(x) if inverted else x), y
        return out


def base_settings(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    dataset, classes = BASES[kind]
    arch = {"model": "resnet8 (GroupNorm)"} if kind == "resnet" else {"model": "transformer", **TRANSFORMER}
    return {**arch, "dataset": dataset, "classes": list(classes), "outputs": 10, "optimizer": "adam",
            "steps": args.pretrain_steps, "batch": args.batch, "lr": args.pretrain_lr, "seed": args.seed}


def differences(saved: dict, wanted: dict) -> list[str]:
    plain = lambda v: json.loads(json.dumps(v))
    return [f"{k}={plain(saved.get(k))!r}, not {plain(v)!r}"
            for k, v in wanted.items() if plain(saved.get(k)) != plain(v)]


def check_base(path: Path, settings: dict) -> dict | None:
    """The saved base's metadata when it matches `settings`; None when there is none; exits on a mismatch."""
    if not path.exists():
        return None
    try:
        meta = load_checkpoint(path).meta
    except MarketplaceError as e:
        sys.exit(f"error: {e}")
    diff = differences(meta.get("settings", {}), settings)
    if diff:
        sys.exit(f"error: {path} was made with {'; '.join(diff)}: use another --out, or delete it to make a new base")
    return meta


def make_base(kind: str, path: Path, settings: dict, data: Data, args) -> dict:
    """Train the base by Adam on its data set's classes and save it with its settings; its metadata."""
    dataset, classes = BASES[kind]
    d = data.task(dataset, classes, False, args.test_images)
    model, _ = build_base(kind, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.pretrain_lr)
    model.train()
    start, every = time.perf_counter(), max(1, args.pretrain_steps // 5)
    for step in range(args.pretrain_steps):
        idx = batch_indices(args.seed, step, len(d["x_train"]), args.batch)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(d["x_train"][idx]), d["y_train"][idx]).backward()
        opt.step()
        if (step + 1) % every == 0:
            print(f"{kind} base: {step + 1}/{args.pretrain_steps} Adam steps, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    acc = accuracy(model, d["x_test"], d["y_test"], batch=500)[0]
    meta = {"settings": settings, "seconds": round(seconds, 2), "test_accuracy": acc, "test_images": len(d["x_test"])}
    save_checkpoint(path, model.state_dict(), {}, meta)
    print(f"{kind} base: {acc:.2f}% on {len(d['x_test'])} test images of {dataset} {describe(classes)} "
          f"after {args.pretrain_steps} Adam steps ({seconds:.0f} s); saved {path}", flush=True)
    return meta


def load_specs(kind: str, path: Path, seed: int, resnet_specs: int = 4) -> list[nn.Module]:
    model, specs = build_base(kind, seed, resnet_specs)
    model.load_state_dict(load_checkpoint(path).model)
    return specs()


def describe(classes) -> str:
    classes = list(classes)
    contiguous = classes == list(range(classes[0], classes[-1] + 1))
    return f"classes {classes[0]}-{classes[-1]}" if contiguous else f"classes {classes}"
