"""The answer to a batch of inputs: made by the engine, cut per request, sent as JSON, read by the client.

One type all the way out, so the rows a client reads are the rows the
engine served: `Engine.predict` returns an `Answer`, the micro-batcher hands
each request its slice (`answer[start:stop]`), the app sends `to_json()`,
and `Client.predict` returns `Answer.from_json(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Answer:
    """ids: request ids for feedback (None entries, or None, when not learning); paths: int64 [B, N];
    step: the seeds that served it; probabilities: [B, C]; logits: [B, C], on the server only."""

    ids: list | None
    paths: torch.Tensor
    step: int
    logits: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None

    def __post_init__(self):
        if self.probabilities is None and self.logits is not None:
            self.probabilities = torch.softmax(self.logits.float(), dim=-1)

    @property
    def classes(self) -> torch.Tensor:
        """The most probable class of each input: int64 [B]."""
        return self.probabilities.argmax(-1)

    def __len__(self) -> int:
        return self.paths.shape[0]

    def __getitem__(self, rows: slice) -> "Answer":
        """The answer to some of the inputs (one request's rows of a micro-batch)."""
        if not isinstance(rows, slice):
            raise TypeError("an Answer is cut with a slice of rows")
        cut = lambda t: None if t is None else t[rows]  # noqa: E731
        return Answer(None if self.ids is None else self.ids[rows], self.paths[rows], self.step,
                      cut(self.logits), cut(self.probabilities))

    def to_json(self) -> dict[str, Any]:
        """The HTTP body: the step, and per input its id, class, probabilities, path and step."""
        ids = self.ids if self.ids is not None else [None] * len(self)
        return {"step": self.step, "predictions": [
            {"id": i, "class": c, "probabilities": p, "path": path, "step": self.step}
            for i, c, p, path in zip(ids, self.classes.tolist(), self.probabilities.tolist(), self.paths.tolist())]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Answer":
        """What `to_json` wrote (the client's side: probabilities, no logits)."""
        rows = doc["predictions"]
        return cls([r["id"] for r in rows], torch.tensor([r["path"] for r in rows], dtype=torch.int64),
                   doc["step"], probabilities=torch.tensor([r["probabilities"] for r in rows]))
