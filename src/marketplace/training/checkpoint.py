"""Checkpoints as safetensors: base weights, optimizer state, progress.

A checkpoint is written to a temporary file beside its destination and
renamed over it, so a crash mid-write never destroys the previous one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..io import atomic_path

FORMAT = "marketplace-checkpoint/1"


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    meta: dict[str, Any]  # config, progress: anything JSON


def save_checkpoint(path: str | os.PathLike, model: dict[str, torch.Tensor], optimizer: dict[str, Any],
                    meta: dict[str, Any]) -> None:
    """Write atomically: tensors of model and optimizer state, the rest as JSON metadata."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.items()}
    plain = {}
    for key, value in optimizer.items():
        if isinstance(value, torch.Tensor):
            tensors[f"optimizer.{key}"] = value.detach().cpu().contiguous()
        elif isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
            for i, v in enumerate(value):
                tensors[f"optimizer.{key}.{i}"] = v.detach().cpu().contiguous()
            plain[f"__list__{key}"] = len(value)
        else:
            plain[key] = value
    metadata = {"format": FORMAT, "optimizer": json.dumps(plain), "meta": json.dumps(meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint, with a one-line error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({e}); delete it or pick another") from e
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a {FORMAT} checkpoint")
    try:
        plain = json.loads(metadata["optimizer"])
        meta = json.loads(metadata["meta"])
        optimizer = {}
        for key, value in plain.items():
            if key.startswith("__list__"):
                name = key[len("__list__"):]
                optimizer[name] = [tensors[f"optimizer.{name}.{i}"] for i in range(value)]
            else:
                optimizer[key] = value
        if not isinstance(meta, dict):
            raise TypeError("meta is not an object")
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{path} has damaged metadata ({type(e).__name__}: {e})") from e
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for k, v in tensors.items():
        if k.startswith("optimizer.") and k.count(".") == 1:
            optimizer[k[len("optimizer."):]] = v
    return Checkpoint(model, optimizer, meta)


def check_resume(path: str | os.PathLike, ckpt: Checkpoint, config) -> None:
    """Refuse, in one line, to resume `config` (a TrainConfig) from a checkpoint trained with other settings."""
    differences = config.resume_differences(ckpt.meta.get("config", {}))
    if differences:
        more = f" (and {len(differences) - 1} more: {'; '.join(differences[1:])})" if len(differences) > 1 else ""
        raise CheckpointError(f"{path} was trained with {differences[0]}{more}: resume with the same settings")
