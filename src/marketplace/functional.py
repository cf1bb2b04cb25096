"""The algorithm as pure functions of tensors (docs/algorithm.md sections 4 and 5).

Nothing here holds state or draws random numbers: a test, a distributed
worker or an inference server can call these without an optimizer object.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .errors import MarketplaceError, NonFiniteLossError


def path_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every path, averaged over the batch, in float32.

    logits: [P, B, C]; target: int64 [B]. Returns [P].
    """
    if logits.dim() != 3:
        raise MarketplaceError(f"expected logits [paths, batch, classes], got shape {list(logits.shape)}")
    p, b, c = logits.shape
    if target.shape != (b,):
        raise MarketplaceError(f"expected {b} targets for a batch of {b}, got shape {list(target.shape)}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
        raise MarketplaceError(f"targets must lie in [0, {c}), got {int(target.min())}..{int(target.max())}")
    loss = F.cross_entropy(logits.reshape(p * b, c).float(), target.repeat(p), reduction="none")
    return loss.view(p, b).mean(dim=1)


def check_losses(losses: torch.Tensor, paths: torch.Tensor) -> None:
    """Raise a clear error for mismatched shapes or non-finite losses."""
    if losses.dim() != 1 or paths.dim() != 2 or paths.shape[0] != losses.shape[0]:
        raise MarketplaceError(
            f"expected losses [P] and paths [P, specs], got {list(losses.shape)} and {list(paths.shape)}"
        )
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        raise NonFiniteLossError(
            f"{int(bad.sum())} of {losses.numel()} path losses are NaN or infinite "
            f"(first on path {paths[bad.nonzero()[0, 0]].tolist()}); the weights were not updated: "
            "lower the learning rate or the probe scale"
        )


def standardized_attribution(losses: torch.Tensor) -> torch.Tensor:
    """A_i = -(L_i - mean) / std: positive for paths better than average.

    All-equal losses carry no information and give zeros, not NaN.
    """
    losses = losses.double()
    std = losses.std(unbiased=False) if losses.numel() > 1 else losses.new_zeros(())
    if not bool(std > 0):
        return torch.zeros_like(losses, dtype=torch.float32)
    return (-(losses - losses.mean()) / std).float()


def vendor_attribution(
    attribution: torch.Tensor, paths: torch.Tensor, counts: Sequence[int]
) -> list[torch.Tensor]:
    """a_{k,j} = sum of A_i over the paths that went through vendor j of spec k.

    attribution: [P]; paths: int64 [P, N]. Returns N tensors [M_k]. This is
    what keeps the update O(M x parameters) instead of O(P x parameters).
    """
    return [
        torch.zeros(m, dtype=attribution.dtype, device=attribution.device).index_add_(
            0, paths[:, k].to(attribution.device), attribution
        )
        for k, m in enumerate(counts)
    ]


def reconcile(vendor_attr: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """R_k = sum_j a_{k,j} delta_{k,j}: [M_k] x [M_k, numel] -> [numel]."""
    return vendor_attr.to(deltas.dtype) @ deltas


def unit_directions(reconciled: Sequence[torch.Tensor], per_spec: bool = True) -> list[torch.Tensor]:
    """G_k = R_k / ||R_k|| (per spec) or R_k / ||R|| (whole model); zero stays zero."""
    if per_spec:
        norms = [r.norm() for r in reconciled]
    else:
        total = torch.sqrt(sum((r.double().norm() ** 2 for r in reconciled), torch.zeros((), dtype=torch.float64)))
        norms = [total.to(r.dtype) for r in reconciled]
    return [r / n if bool(n > 0) else torch.zeros_like(r) for r, n in zip(reconciled, norms)]


def best_path(losses: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
    """The path of the lowest loss (ties: the first), int64 [N]."""
    return paths[int(torch.argmin(losses))]


def centered_rank_attribution(losses: torch.Tensor) -> torch.Tensor:
    """Fitness shaping: A_i from the rank of L_i, evenly spaced, mean 0, std 1; best path highest.

    Unlike z-scores, one outlier loss cannot dominate the step. Ties share
    their mean rank, so all-equal losses give zeros.
    """
    n = losses.numel()
    if n < 2:
        return torch.zeros_like(losses, dtype=torch.float32)
    losses = losses.double()
    below = (losses[None, :] < losses[:, None]).sum(1).double()
    ties = (losses[None, :] == losses[:, None]).sum(1).double()
    rank = below + (ties - 1) / 2  # 0 = lowest loss; mean rank for ties
    shaped = (n - 1) / 2 - rank
    std = shaped.std(unbiased=False)
    return (shaped / std).float() if bool(std > 0) else torch.zeros(n)


ATTRIBUTIONS = {"zscore": standardized_attribution, "rank": centered_rank_attribution}


def descent_directions(reconciled: Sequence[torch.Tensor], sigma: Sequence[float], direction: str = "unit",
                       per_spec: bool = True) -> list[torch.Tensor]:
    """The estimate as a gradient for torch.optim: -G_k ("unit") or -R_k / sigma_k ("raw").

    "unit" is V2's direction, so SGD with lr eta moves theta by eta G exactly
    as V2 does; "raw" keeps the length of R_k / sigma_k = sum_j a_kj u_kj
    (u uniform in [-1, 1]), which grows with the spread of the attributions
    and gives Adam's per-parameter scaling something to work on.
    """
    if direction == "unit":
        return [-g for g in unit_directions(reconciled, per_spec)]
    if direction == "raw":
        return [-r / s if s > 0 else torch.zeros_like(r) for r, s in zip(reconciled, sigma)]
    raise MarketplaceError(f"unknown direction {direction!r}; choose 'unit' or 'raw'")
