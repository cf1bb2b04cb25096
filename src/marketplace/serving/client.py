"""Python clients of `marketplace serve`: plain requests, and privacy mode where no data leaves the client.

    from marketplace.serving import Client, PrivateClient
    client = Client("http://127.0.0.1:8000", token)
    answer = client.predict(x)                  # x: [B, *input_shape] float (normalised) or uint8 pixels
    client.feedback(answer.ids, labels)         # later, in any order

    private = PrivateClient("http://127.0.0.1:8000", token)
    private.learn(x, y)                         # sends only (step, path, loss) per example

`PrivateClient` fetches the market (step, seeds, probe widths, the model
record) and the base weights of the step (cached by version, re-downloaded
only when the step changes), rebuilds the specs from the record and the
vendors from their seeds with the library's own `SeededVendors`, runs each
example along one random path with `continual.serve`, and reports the losses.
"""

from __future__ import annotations

from typing import Any, Sequence

import httpx
import numpy as np
import torch
from torch import nn

from ..continual import per_example_cross_entropy, serve
from ..errors import MarketplaceError, ServerError
from ..market import Market
from ..optim.forward_gradient import market_vendors
from ..vendors import SeededVendors, Vendors
from .answer import Answer


Prediction = Answer  # the name clients used before the server and client shared one answer type


class Client:
    """Predict and give feedback over HTTP. token: the server's secret (needed for feedback and reports)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 60.0,
                 http: httpx.Client | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http or httpx.Client(base_url=url, timeout=timeout, headers=headers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text.strip()[:200]
            raise ServerError(response.status_code, message)
        return response

    def predict(self, x: torch.Tensor | np.ndarray) -> Answer:
        """Serve a batch [B, ...]: uint8 inputs go as pixels, anything else as float32, both as raw bytes."""
        x = torch.as_tensor(x)
        dtype = "uint8" if x.dtype == torch.uint8 else "float32"
        body = x.detach().cpu().contiguous().to(torch.uint8 if dtype == "uint8" else torch.float32).numpy().tobytes()
        headers = {"Content-Type": "application/octet-stream", "X-Dtype": dtype,
                   "X-Shape": ",".join(map(str, x.shape))}
        return Answer.from_json(self._call("POST", "/v1/predict", content=body, headers=headers).json())

    def feedback(self, ids: Sequence[int], labels: Sequence[int] | torch.Tensor) -> dict[str, Any]:
        """Labels of earlier predictions; returns the server's counts once they are stored."""
        labels = torch.as_tensor(labels).reshape(-1).tolist()
        body = [{"id": int(i), "label": int(y)} for i, y in zip(ids, labels)]
        return self._call("POST", "/v1/feedback", json=body).json()

    def report(self, steps: Sequence[int], paths: torch.Tensor, losses: torch.Tensor) -> dict[str, Any]:
        """(step, path, loss) records computed here."""
        body = [{"step": int(s), "path": [int(v) for v in p], "loss": float(l)}
                for s, p, l in zip(steps, torch.as_tensor(paths).tolist(), torch.as_tensor(losses).tolist())]
        return self._call("POST", "/v1/report", json=body).json()

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status").json()

    def market(self) -> dict[str, Any]:
        return self._call("GET", "/v1/market").json()

    def checkpoint(self) -> dict[str, Any]:
        """Ask the server to checkpoint its learner now (admin)."""
        return self._call("POST", "/v1/admin/checkpoint").json()


class PrivateClient(Client):
    """Learns on the client's own data: only (step, path, loss) leave it.

    specs: the market's specs (`nn.Module`s), for a server without a model
    record (a user's market served from Python); by default they are rebuilt
    from the record the server hands out. seed: seeds the client's own
    random paths.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None,
                 specs: Sequence[nn.Module] | None = None, seed: int = 0, **kwargs):
        super().__init__(url, token, **kwargs)
        self.specs = list(specs) if specs is not None else None
        self.generator = torch.Generator().manual_seed(seed)
        self.info: dict[str, Any] | None = None
        self.local: Market | None = None
        self.vendors: Vendors | None = None
        self.downloads = 0  # weight downloads: once per step at most

    def refresh(self) -> dict[str, Any]:
        """The current market; weights are fetched only when its version differs from the cached one."""
        info = self.market()
        if self.info is None or info["version"] != self.info["version"]:
            headers = {"If-None-Match": f'"{self.info["version"]}"'} if self.info else {}
            response = self._call("GET", "/v1/weights", headers=headers)
            if response.status_code != 304:
                self._load(info, response.content)
            seeded = SeededVendors(tuple(torch.tensor(s, dtype=torch.int64) for s in info["seeds"]),
                                   tuple(info["sigma"]), info["sampling_seed"])
            self.vendors = market_vendors(self.local, seeded)  # low-rank factors for a low-rank server
            self.info = info
        return info

    def _load(self, info: dict[str, Any], blob: bytes) -> None:
        from safetensors.torch import load as load_bytes

        from .load import specs_of

        if self.local is None:
            specs = self.specs if self.specs is not None else specs_of(info["model"])
            self.local = Market(specs, info["vendors"], rank=int(info.get("rank", 0)))
        self.local.load_state_dict(load_bytes(blob))
        self.downloads += 1

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Each example along one random path of the current step: (step, paths [B, N], losses [B]).

        For a server with a baseline, each loss is relative to the base weights' loss on the same example.
        """
        info = self.refresh()
        x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
        out = serve(self.local, self.vendors, x, generator=self.generator)
        losses = per_example_cross_entropy(out.logits, y)
        if info.get("baseline"):
            with torch.no_grad():
                losses = losses - per_example_cross_entropy(self.local(x), y)
        return info["step"], out.paths, losses

    def learn(self, x: torch.Tensor, y: torch.Tensor, retries: int = 2) -> dict[str, Any]:
        """Compute the losses of (x, y) here and report them; recomputed when the step moved on meanwhile."""
        for attempt in range(retries + 1):
            step, paths, losses = self.losses(x, y)
            try:
                return self.report([step] * len(losses), paths, losses)
            except ServerError as e:
                if e.status != 409 or attempt == retries:
                    raise
        raise AssertionError("unreachable")
