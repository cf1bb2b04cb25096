"""Are the weights the same on every rank? One all-gather of an 8-byte hash.

Both axes rely on every rank applying bit-identical updates. A rank that
drifts (another torch version, a non-deterministic kernel, a bug) would
silently train a different model; the check turns that into a loud error
that names the ranks.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import torch
from torch import nn

from ..errors import WeightsDivergedError
from .collectives import Collectives


def weights_hash(module: nn.Module) -> int:
    """A 64-bit hash (as a signed int) of every tensor of the state dict: names, dtypes, shapes, bits."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest(), "little", signed=True)


def check_same_weights(module: nn.Module, comm: Collectives, step: int) -> None:
    """Raise WeightsDivergedError on every rank unless all ranks hold the same weights.

    The ranks that hold the most common weights (ties: rank 0's) are taken as
    the reference; the error names the others. A world of one has nothing
    to compare and sends nothing.
    """
    if comm.world_size == 1:
        return
    hashes = comm.all_gather(torch.tensor([weights_hash(module)], dtype=torch.int64), "check")[:, 0].tolist()
    if len(set(hashes)) == 1:
        return
    counts = Counter(hashes)
    reference = max(counts, key=lambda h: (counts[h], h == hashes[0]))
    agree = [r for r, h in enumerate(hashes) if h == reference]
    differ = [r for r, h in enumerate(hashes) if h != reference]
    raise WeightsDivergedError(
        f"weights diverged at step {step}: rank(s) {differ} differ from rank(s) {agree} "
        f"({len(counts)} distinct weight sets over {len(hashes)} ranks); the run cannot continue"
    )
