"""Continual learning from inference (docs/algorithm.md section 7).

A deployed market serves every request along one random path
(`continual.serving`). For each request the learner keeps the path and,
once the label is known, the loss; until then it keeps the path, the logits
and a reference to the input. Every K labelled records it reconciles them
exactly as V2 does over a training batch (standardized attribution of the K
losses, per-vendor sums over the recorded paths, unit direction, lr), which
updates the base weights and redraws the seeds. Serving goes on throughout.

The update is the optimizer's own `step(losses, paths)`: the learner is only
a different source of (path, loss) pairs, like a supervised batch or a
remote client that sends (step id, path, loss) and keeps its data.

With `baseline=True` each batch also runs the base weights: the answer
is theirs (no served prediction pays for a perturbation) and a record's
loss is the path's loss minus the base weights' loss on the same example.
That difference is what the path's perturbation did to this example; the
example's own difficulty, which otherwise dominates a single-example loss,
cancels. It costs one plain forward per batch; the update rule is unchanged.

With `mirrored=True` each request also runs along the mirror of its path
(every delta of the path negated) and a record's loss is half the
difference, a central difference: besides the example's difficulty, the
curvature along the perturbation (the same for +delta and -delta, and
most of what a single old, well-learned example's loss difference holds)
cancels, leaving the part that says which way is downhill. The
answer is the mean of the two outputs, the base weights' to second order.
It costs one more forward along the mirrored paths, like the baseline.

Stale records are discarded. A record belongs to the seeds it was served
with, identified by the optimizer's step counter. When an update redraws the
seeds, records of the old step that were not part of it (a label that
arrives after the update, a client's loss for an old step id, the surplus of
a batch past K) are dropped and counted in `stats["stale"]`; they are never
reconciled with deltas they were not made with.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import torch

from ..errors import MarketplaceError, UnknownRequestError
from ..optim import AdaptiveV2, MarketOptimizer
from .losses import LossFn, OutlierRule, drop_beyond_std, per_example_cross_entropy, relative_losses
from .serving import mirrored_weights, serve, vendor_weights


@dataclass
class Pending:
    """An unlabelled request: what it takes to compute its loss later."""

    step: int  # the optimizer step (the seeds) it was served with
    path: torch.Tensor  # int64 [N]
    logits: torch.Tensor | None  # [C]; None once it can no longer count (stale)
    input: Any = None  # a reference to the input (not saved by state_dict)
    reference: torch.Tensor | None = None  # [C], the base weights' or the mirrored path's logits


@dataclass
class Response:
    """What `ContinualLearner.serve` answers: logits [B, C], paths [B, N], request ids, step.

    logits are the answer: the path's, or the base weights' under a
    baseline (the mean of the path's and its mirror's when mirrored), when
    `path_logits` holds the path's (what is learned from) and `reference`
    what its loss is measured against.
    """

    logits: torch.Tensor
    paths: torch.Tensor
    ids: list
    step: int
    path_logits: torch.Tensor | None = None
    reference: torch.Tensor | None = None

    @property
    def probe_logits(self) -> torch.Tensor:
        """The logits of the random paths: the ones a record's loss is computed from."""
        return self.logits if self.path_logits is None else self.path_logits


class ContinualLearner:
    """Learns from the requests it serves: (path, loss) records -> V2 updates.

    optimizer: the market's optimizer (V2 for section 7; V1 also works);
    it owns the market, the seeds and the step counter. records: K, the
    labelled records per update. outliers: None, a number k (drop losses
    beyond k standard deviations, `drop_beyond_std`) or a function
    losses [K] -> keep mask [K]; dropped records still count towards K.
    loss_fn(logits [n, C], labels [n]) -> [n]: per-request loss.
    path_seed: seeds the generator that draws the serving paths.
    balanced: draw paths with an even spread of vendors per batch
    (`serving.balanced_paths`) instead of independently per request.
    baseline: answer with the base weights and learn from each path's loss
    minus theirs. mirrored: learn from half the difference between each
    path's loss and its mirror's (see the module docstring); one or the other.
    """

    def __init__(self, optimizer: MarketOptimizer, records: int = 256,
                 outliers: float | OutlierRule | None = None, loss_fn: LossFn = per_example_cross_entropy,
                 path_seed: int = 0, balanced: bool = False, baseline: bool = False, mirrored: bool = False):
        if not isinstance(optimizer, MarketOptimizer):
            raise TypeError(f"expected a market optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, AdaptiveV2):
            raise ValueError("AdaptiveV2 re-evaluates one batch along every path; served requests "
                             "cannot be re-run: use V2")
        if not isinstance(records, int) or isinstance(records, bool) or records < 2:
            raise ValueError(f"Invalid records: {records!r} (need at least 2 losses to standardize)")
        if baseline and mirrored:
            raise ValueError("baseline and mirrored are two references for a path's loss: choose one")
        self.optimizer = optimizer
        self.market = optimizer.market
        self.records = records
        self.outliers = outliers
        self._keep: OutlierRule | None = drop_beyond_std(outliers) if isinstance(outliers, (int, float)) \
            else outliers
        self.loss_fn = loss_fn
        self.balanced = balanced
        self.baseline = bool(baseline)
        self.mirrored = bool(mirrored)
        self.generator = torch.Generator().manual_seed(path_seed)
        self._losses: list[torch.Tensor] = []  # labelled records of the current step
        self._paths: list[torch.Tensor] = []
        self._count = 0
        self.pending: dict[Hashable, Pending] = {}
        self._ids = itertools.count()
        self.stats = {"served": 0, "recorded": 0, "stale": 0, "outliers": 0, "updates": 0}
        self._made: tuple = (None, {})  # (vendors, {mirrored: their weights per spec}): `_weights`

    @property
    def step(self) -> int:
        """The step id of the current seeds: a client quotes it with its (path, loss)."""
        return self.optimizer.steps

    @property
    def vendors(self):
        return self.optimizer.vendors

    @property
    def _referenced(self) -> bool:
        """Whether a record's loss is measured against reference logits (the base's or the mirror's)."""
        return self.baseline or self.mirrored

    @property
    def buffered(self) -> int:
        """Labelled records of the current step waiting for the next update (fewer than K)."""
        return self._count

    # -- requests ------------------------------------------------------------

    def serve(self, x: torch.Tensor, labels: torch.Tensor | None = None, ids: Sequence[Hashable] | None = None,
              inputs: Sequence[Any] | None = None) -> Response:
        """Answer a batch of requests, each along its own random path, and record them.

        x: [B, ...]. labels: int64 [B] when known now (the losses are
        recorded at once); otherwise the requests wait for `label(ids, ...)`
        under `ids` (default: fresh integers, returned), keeping their
        logits and `inputs[i]` (default: the row x[i]).
        """
        step, b = self.step, x.shape[0]
        if labels is not None:
            labels = torch.as_tensor(labels, device=x.device)
            if labels.shape != (b,):
                raise MarketplaceError(f"expected {b} labels for a batch of {b}, got shape {list(labels.shape)}")
        else:
            ids = list(ids) if ids is not None else None
            if ids is not None and len(ids) != b:
                raise MarketplaceError(f"expected {b} request ids for a batch of {b}, got {len(ids)}")
            clash = [i for i in ids if i in self.pending] if ids is not None else []
            if clash or (ids is not None and len(set(ids)) != len(ids)):
                raise MarketplaceError(f"request ids must be unique and not already waiting; "
                                       f"repeated: {clash[:5] or ids[:5]}")
        out = self._answer(serve(self.market, self.vendors, x, generator=self.generator, balanced=self.balanced), x)
        self.stats["served"] += b
        out.ids = list(ids) if ids is not None else [next(self._ids) for _ in range(b)]
        if labels is not None:
            self._record(self.losses(out.probe_logits, labels, out.reference), out.paths, step)
            return out
        refs = inputs if inputs is not None else x
        paths, reference = out.paths.cpu(), out.reference
        for i, rid in enumerate(out.ids):
            self.pending[rid] = Pending(step, paths[i], out.probe_logits[i], refs[i],
                                        None if reference is None else reference[i])
        return out

    def infer(self, x: torch.Tensor) -> Response:
        """Answer a batch along random paths, keeping nothing: the caller stores (step, path, logits).

        For a server whose waiting requests live in a durable store rather
        than in `pending`: it later turns a label into a loss with `loss_fn`
        and hands (losses, paths, step) to `record`. Counts `stats["served"]`;
        the ids in the answer are empty. The vendors' stacked weights are
        made once per set of vendors (`_weights`) and reused by every batch
        until the next update.
        """
        out = serve(self.market, self.vendors, x, generator=self.generator, balanced=self.balanced,
                    stacked=self._weights())
        self.stats["served"] += x.shape[0]
        return self._answer(out, x)

    def _weights(self, mirrored: bool = False) -> list:
        """The vendors' weights per spec as `serve` runs them (every delta negated when mirrored).

        Made once per set of vendors and kept until the next update or
        restore, which bring new vendors: the base weights change only there.
        """
        vendors, made = self._made
        if vendors is not self.vendors:
            vendors, made = self.vendors, {}
            self._made = (vendors, made)
        if mirrored not in made:
            make = mirrored_weights if mirrored else vendor_weights
            made[mirrored] = [make(self.market, k, vendors) for k in range(self.market.depth)]
        return made[mirrored]

    def _answer(self, out, x: torch.Tensor) -> Response:
        """The served paths' output -> the answer, with the reference a record's loss is measured against."""
        if self.baseline:
            with torch.no_grad():
                base = self.market(x)
            return Response(base, out.paths, [], self.step, path_logits=out.logits, reference=base)
        if self.mirrored:
            mirror = serve(self.market, self.vendors, x, paths=out.paths, stacked=self._weights(mirrored=True)).logits
            return Response((out.logits + mirror) / 2, out.paths, [], self.step, path_logits=out.logits,
                            reference=mirror)
        return Response(out.logits, out.paths, [], self.step)

    def losses(self, logits: torch.Tensor, labels: torch.Tensor,
               reference: torch.Tensor | None = None) -> torch.Tensor:
        """What a record learns from: the path's loss, minus the loss of the `reference` logits when given.

        The reference is the base weights' (a baseline) or the mirrored
        path's, whose difference is halved: a central difference.
        """
        losses = relative_losses(self.loss_fn, logits, labels, reference)
        return losses / 2 if self.mirrored and reference is not None else losses

    def label(self, ids: Sequence[Hashable], labels: torch.Tensor | Sequence[int]) -> int:
        """Labels for requests served earlier, in any order; returns how many were recorded.

        Requests served under older seeds are discarded (counted as stale).
        An id that is not waiting (never served, already labelled, or
        served with labels) raises UnknownRequestError and records nothing.
        """
        ids = list(ids)
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if len(ids) != labels.numel():
            raise MarketplaceError(f"{len(ids)} request ids but {labels.numel()} labels")
        unknown = [i for i in ids if i not in self.pending]
        if unknown or len(set(ids)) != len(ids):
            shown = ", ".join(map(repr, unknown[:5])) or "a repeated id"
            raise UnknownRequestError(
                f"{len(unknown) or 1} of {len(ids)} request ids are not waiting for a label ({shown}"
                f"{', ...' if len(unknown) > 5 else ''}): never served, served with labels, or labelled already")
        for rid, y in zip(ids, labels.tolist()):  # check every label before anything changes
            logits = self.pending[rid].logits
            if logits is not None and not 0 <= y < logits.shape[-1]:
                raise MarketplaceError(f"labels must lie in [0, {logits.shape[-1]}), got {y} for request {rid!r}")
        recorded = 0
        # Consecutive labels of the current step go in together; an update in between makes the rest stale.
        entries, values = [], []
        for rid, y in zip(ids, labels.tolist()):
            entry = self.pending.pop(rid)
            if entry.step != self.step or entry.logits is None:
                self.stats["stale"] += 1
                continue
            entries.append(entry)
            values.append(y)
            if self._count + len(entries) >= self.records:
                recorded += self._flush_labels(entries, values)
                entries, values = [], []
        if entries:
            recorded += self._flush_labels(entries, values)
        return recorded

    def _flush_labels(self, entries: list[Pending], labels: list[int]) -> int:
        logits = torch.stack([e.logits for e in entries])
        reference = torch.stack([e.reference for e in entries]) if self._referenced else None
        losses = self.losses(logits, torch.tensor(labels, dtype=torch.int64, device=logits.device), reference)
        return self._record(losses, torch.stack([e.path for e in entries]), entries[0].step)

    def record(self, losses: torch.Tensor, paths: torch.Tensor, step: int) -> int:
        """(step id, path, loss) from clients that ran their own forward pass; returns how many counted.

        losses: [n]; paths: int64 [n, N]. Records quoting another step than
        the current one are discarded as stale.
        """
        losses = torch.as_tensor(losses).reshape(-1)
        paths = torch.as_tensor(paths, dtype=torch.int64)
        if paths.shape != (losses.numel(), self.market.depth):
            raise MarketplaceError(f"expected paths [{losses.numel()}, {self.market.depth}], got {list(paths.shape)}")
        if bool(((paths < 0) | (paths >= torch.tensor(self.market.vendor_counts))).any()):
            raise MarketplaceError(f"paths name vendors outside the market {list(self.market.vendor_counts)}")
        return self._record(losses, paths, int(step))

    # -- reconciliation ------------------------------------------------------

    def _record(self, losses: torch.Tensor, paths: torch.Tensor, step: int) -> int:
        """Add records made with the seeds of `step`; update once K are in."""
        n = losses.numel()
        if step != self.step:
            self.stats["stale"] += n
            return 0
        take = min(n, self.records - self._count)
        self._losses.append(losses[:take].detach().float().cpu())
        self._paths.append(paths[:take].cpu())
        self._count += take
        self.stats["recorded"] += take
        if self._count >= self.records:
            self.update()
        self.stats["stale"] += n - take  # served with the seeds the update just replaced
        return take

    def update(self) -> bool:
        """Reconcile the records collected so far (normally K of them) and redraw the seeds.

        Returns False when there was nothing to learn from (fewer than two
        records left after dropping outliers) or the optimizer skipped a
        non-finite loss. The buffer is emptied either way.
        """
        if not self._count:
            return False
        losses, paths = torch.cat(self._losses), torch.cat(self._paths)
        self._losses, self._paths, self._count = [], [], 0
        if self._keep is not None:
            keep = self._keep(losses)
            self.stats["outliers"] += int((~keep).sum())
            losses, paths = losses[keep], paths[keep]
        if losses.numel() < 2:
            return False
        old_step = self.step
        updated = self.optimizer.step(losses, paths)
        self.stats["updates"] += int(updated)
        for entry in self.pending.values():  # they can no longer count: free their logits and inputs
            if entry.step == old_step:
                entry.logits, entry.input, entry.reference = None, None, None
        return updated

    # -- saving and restoring ------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state, the records of the current step, waiting requests (without inputs), counters.

        Flat: tensors, lists of tensors and JSON values, so it fits
        `marketplace.training.save_checkpoint` as well as `torch.save`.
        Request ids must then be ints or strings.
        """
        waiting = list(self.pending.items())
        live = [(rid, e) for rid, e in waiting if e.logits is not None]
        n_classes = live[0][1].logits.shape[-1] if live else 0
        state = {f"optimizer.{k}": v for k, v in self.optimizer.state_dict().items()}
        state.update({
            "records": self.records,
            "balanced": self.balanced,
            "baseline": self.baseline,
            "mirrored": self.mirrored,
            "generator": self.generator.get_state(),
            "next_id": self._peek_id(),
            "buffer_losses": torch.cat(self._losses) if self._losses else torch.zeros(0),
            "buffer_paths": torch.cat(self._paths) if self._paths else torch.zeros(0, self.market.depth, dtype=torch.int64),
            "pending_ids": [rid for rid, _ in live],
            "pending_steps": torch.tensor([e.step for _, e in live], dtype=torch.int64),
            "pending_paths": torch.stack([e.path for _, e in live]) if live
            else torch.zeros(0, self.market.depth, dtype=torch.int64),
            "pending_logits": torch.stack([e.logits.detach().cpu() for _, e in live]) if live
            else torch.zeros(0, n_classes),
            "pending_reference": torch.stack([e.reference.detach().cpu() for _, e in live])
            if live and self._referenced else torch.zeros(0, n_classes),
            "stale_ids": [rid for rid, e in waiting if e.logits is None],
            "stats": dict(self.stats),
        })
        return state

    def _peek_id(self) -> int:
        value = next(self._ids)
        self._ids = itertools.count(value)
        return value

    def load_state_dict(self, state: dict[str, Any]) -> None:
        opt_state = {k[len("optimizer."):]: v for k, v in state.items() if k.startswith("optimizer.")}
        self.optimizer.load_state_dict(opt_state)
        self.records = int(state["records"])
        self.balanced = bool(state.get("balanced", False))
        for name in ("baseline", "mirrored"):
            if bool(state.get(name, False)) != getattr(self, name):
                raise MarketplaceError(f"this state was saved by a learner with {name}={not getattr(self, name)}; "
                                       f"this one has {name}={getattr(self, name)}")
        self.generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8))
        self._ids = itertools.count(int(state["next_id"]))
        losses, paths = state["buffer_losses"], state["buffer_paths"]
        self._losses, self._paths, self._count = ([losses], [paths], losses.numel()) if losses.numel() else ([], [], 0)
        references = state.get("pending_reference", state.get("pending_base"))  # pending_base: older checkpoints
        references = list(references) if self._referenced else [None] * len(state["pending_ids"])
        self.pending = {
            rid: Pending(int(s), p, l, None, r)
            for rid, s, p, l, r in zip(state["pending_ids"], state["pending_steps"].tolist(),
                                       state["pending_paths"], state["pending_logits"], references)
        }
        self.pending.update({rid: Pending(-1, torch.zeros(0, dtype=torch.int64), None) for rid in state["stale_ids"]})
        self.stats = {k: int(v) for k, v in state["stats"].items()}

    def __repr__(self) -> str:
        rule = getattr(self._keep, "__name__", None)
        return (f"ContinualLearner({self.optimizer!r}, records={self.records}, outliers={rule}, "
                f"baseline={self.baseline}, mirrored={self.mirrored}, "
                f"step={self.step}, waiting={len(self.pending)})")
