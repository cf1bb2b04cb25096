"""Poisoned reports: a learning server's stream with 0%, 10% and 30% adversarial clients, per attribution rule.

    OMP_NUM_THREADS=1 uv run python benchmarks/poisoning.py \\
        --checkpoint results/continual/bases/digits.safetensors

The stream is the drifting one of `benchmarks/server_drift.py`: MNIST
training images in a fixed order, rotated by an angle that grows with the
requests served, so a learning server has something to learn that a frozen
one does not. Ten clients share it in privacy mode: each takes a batch of
requests (a client picked at random per batch), gets each request's step and
path from `predict`, computes the path's loss on its own label and sends
(step, path, loss) with `report`, under its own name. An adversarial client
sends losses of one kind instead:

- inverted: each loss mirrored within the range of the batch's true ones: bad paths look good;
- zero: 0 for every path: every path it saw looks perfect;
- huge: the largest finite float32 (3.4e38), trying to swamp the step;
- targeted: 0 for paths through vendor 1 of the last spec, 10 for the rest,
  pushing the update towards that vendor.

By default the server runs with a baseline: every answer is the base
weights', and a client reports its path's loss minus the base weights' loss
on the same example (what `PrivateClient` sends to such a server), so the
served accuracy of a learning server and of a frozen one compare directly.
`--no-baseline` serves along the random paths instead.

Each condition is the server's own learning logic (`serving.Engine`, with its
store on disk) driven in process: HTTP adds nothing to what is learned
(`tests/continual/test_through_server.py`). Accuracy is that of the served
predictions as the honest clients see them (each is predicted before its
label is known), over the second half of the stream, and of held-out test
images at the final angle. Learning off is the base weights throughout.

Writes runs/bench/poisoning_cpu.{json,md} (`--out benchmarks/results/poisoning_cpu`
updates the committed one).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.server_drift import rotate  # noqa: E402
from marketplace import data  # noqa: E402
from marketplace.continual.serving import serve  # noqa: E402
from marketplace.io import write_atomic, write_json  # noqa: E402
from marketplace.machine import machine_summary  # noqa: E402
from marketplace.serving.config import ServerConfig  # noqa: E402
from marketplace.serving.load import engine_from_checkpoint  # noqa: E402
from marketplace.serving.schemas import normalize_pixels  # noqa: E402

RUNS = Path("runs") / "bench"  # default output: never over the committed results
CLIENTS = 10
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def adversarial(kind: str, losses: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
    """What an adversarial client reports instead of the true losses [n] of its paths [n, N]."""
    if kind == "inverted":  # mirrored within the client's own range: nothing out of the ordinary to spot
        return losses.max() + losses.min() - losses
    if kind == "zero":
        return torch.zeros_like(losses)
    if kind == "huge":
        return torch.full_like(losses, FLOAT32_MAX)
    if kind == "targeted":
        return torch.where(paths[:, -1] == 1, 0.0, 10.0)
    raise ValueError(f"unknown adversary {kind!r}")


def run_condition(args, stream, test, attribution: str, kind: str | None, fraction: float,
                  learning: bool = True) -> dict:
    """One server over the whole stream; accuracy of its answers and at the end."""
    images, labels, angles = stream
    bad = set(range(round(fraction * CLIENTS))) if kind else set()
    picker = torch.Generator().manual_seed(args.seed + 1)
    with tempfile.TemporaryDirectory() as store:
        config = ServerConfig(records=args.records, lr=args.lr, probe_scale=args.probe_scale, seed=args.seed,
                              attribution=attribution, learning=learning, baseline=args.baseline and learning,
                              store=store, token="bench",
                              checkpoint_every=10_000, device="cpu")
        engine = engine_from_checkpoint(args.checkpoint, config)
        hits, windows, refused, start = [], [], 0, time.perf_counter()
        for first in range(0, len(images), args.batch):
            x = normalize_pixels(images[first:first + args.batch], engine.pixels)
            y = labels[first:first + args.batch]
            answer = engine.predict(x)
            logits = answer.logits.float()
            hits.append(int((logits.argmax(1) == y).sum()))
            if learning:
                client = int(torch.randint(CLIENTS, (1,), generator=picker))
                paths = answer.paths
                losses = F.cross_entropy(logits, y, reduction="none")
                if args.baseline:  # the answer was the base weights': the client runs the path itself
                    path_logits = serve(engine.market, engine.learner.vendors, x, paths=paths).logits.float()
                    losses = F.cross_entropy(path_logits, y, reduction="none") - losses
                if client in bad:
                    losses = adversarial(kind, losses, paths)
                try:
                    engine.report([answer.step] * len(y), paths, losses, client=f"client-{client}")
                except Exception as e:  # a refused report is part of what is measured
                    refused += 1
                    if refused == 1:
                        print(f"  a report was refused: {e}", flush=True)
            done = first + len(y)
            if done % args.window < args.batch or done == len(images):
                windows.append({"end": done, "angle": float(angles[done - 1]),
                                "accuracy": 100.0 * sum(hits) / (args.batch * len(hits))})
                hits = []
        test_x, test_y = test
        with torch.no_grad():
            final = engine.market(normalize_pixels(test_x, engine.pixels)).argmax(1)
        updates = engine.learner.stats["updates"]
        engine.close()
    half = windows[len(windows) // 2:]
    return {"attribution": attribution, "adversary": kind or "none", "fraction": fraction if kind else 0.0,
            "learning": learning, "second_half": sum(w["accuracy"] for w in half) / len(half),
            "test_final_angle": 100.0 * float((final == test_y).float().mean()), "updates": updates,
            "refused_reports": refused, "windows": windows, "seconds": round(time.perf_counter() - start, 1)}


def markdown(r: dict) -> str:
    rows = r["conditions"]
    off = next(c for c in rows if not c["learning"])
    honest = {c["attribution"]: c for c in rows if c["learning"] and c["adversary"] == "none"}
    lines = ["# Poisoned reports against the learning server", "",
             f"Machine: {r['machine']}. Checkpoint: {r['checkpoint']}. Stream: {r['requests']} MNIST training "
             f"images in batches of {r['batch']}, rotated by +{r['drift_deg_per_1000']} degrees per 1,000 requests, "
             f"shared by {CLIENTS} clients in privacy mode (step, path, loss); an update every {r['records']} "
             f"records, lr {r['lr']}, probe scale {r['probe_scale']}, whole-model unit vector, "
             f"{'answers from the base weights (baseline)' if r['baseline'] else 'answers along random paths'}. "
             f"Test: the first {r['test']} test images at the final angle. Figures count "
             "requests, not seconds.", "",
             f"Learning off: {off['second_half']:.1f}% over the second half of the stream, "
             f"{off['test_final_angle']:.1f}% on held-out images at the final angle.", "",
             "| attribution | adversary | adversarial clients | second half (%) | vs honest-only | vs learning off "
             "| test at final angle (%) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in rows:
        if not c["learning"]:
            continue
        h = honest[c["attribution"]]
        lines.append(f"| {c['attribution']} | {c['adversary']} | {100 * c['fraction']:.0f}% | {c['second_half']:.1f} "
                     f"| {c['second_half'] - h['second_half']:+.1f} | {c['second_half'] - off['second_half']:+.1f} "
                     f"| {c['test_final_angle']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="results/continual/bases/digits.safetensors")
    p.add_argument("--requests", type=int, default=30_000)
    p.add_argument("--drift", type=float, default=1.5, help="degrees of rotation per 1,000 requests")
    p.add_argument("--batch", type=int, default=32, help="requests per predict (one client's batch)")
    p.add_argument("--records", type=int, default=160, help="K, records per update")
    p.add_argument("--lr", type=float, default=0.15)
    p.add_argument("--probe-scale", type=float, default=0.3)
    p.add_argument("--window", type=int, default=5000)
    p.add_argument("--test", type=int, default=10_000, help="held-out test images at the end")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="answer with the base weights; clients report path loss minus base loss (default on)")
    p.add_argument("--attributions", default="zscore,rank")
    p.add_argument("--adversaries", default="inverted,zero,huge,targeted")
    p.add_argument("--fractions", default="0.1,0.3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RUNS / "poisoning_cpu"),
                   help="default runs/bench/poisoning_cpu; benchmarks/results/poisoning_cpu is the committed one")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    images, labels = data.load_split("mnist", "train")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:args.requests]
    angles = args.drift * torch.arange(args.requests, dtype=torch.float32) / 1000
    stream = (rotate(images[order], angles), labels[order], angles)
    test_x, test_y = data.load_split("mnist", "test")
    final = float(angles[-1])
    test = (rotate(test_x[:args.test], torch.full((args.test,), final)), test_y[:args.test])
    plan = [("zscore", None, 0.0, False)]
    for attribution in args.attributions.split(","):
        plan.append((attribution, None, 0.0, True))
        for kind in args.adversaries.split(","):
            for fraction in (float(f) for f in args.fractions.split(",")):
                plan.append((attribution, kind, fraction, True))
    result = {"machine": machine_summary(), "checkpoint": Path(args.checkpoint).name, "requests": args.requests,
              "batch": args.batch, "drift_deg_per_1000": args.drift, "records": args.records, "lr": args.lr,
              "probe_scale": args.probe_scale, "baseline": args.baseline, "clients": CLIENTS, "test": args.test, "conditions": []}
    for i, (attribution, kind, fraction, learning) in enumerate(plan):
        c = run_condition(args, stream, test, attribution, kind, fraction, learning)
        result["conditions"].append(c)
        print(f"[{i + 1}/{len(plan)}] {attribution:6} {c['adversary']:8} {100 * fraction:3.0f}%"
              f"{'' if learning else ' (learning off)'}: second half {c['second_half']:.1f}%, "
              f"test {c['test_final_angle']:.1f}%, {c['updates']} updates, {c['seconds']} s", flush=True)
    result["load_average"] = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    write_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
