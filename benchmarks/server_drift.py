"""A drifting stream served over HTTP, learning on against learning off; the dress experiment through HTTP.

    nice -n 5 uv run python benchmarks/server_drift.py --checkpoint runs/mnist.safetensors

1. Drift. MNIST training images in a fixed random order, each rotated by an
   angle that grows by `--drift` degrees per 1,000 requests (0 at the start).
   A client replays the stream in batches against three servers started
   from the same checkpoint: two learn from feedback (each batch is
   labelled right after its predictions), one as section 7 describes
   (answers and records from the random paths), one with `--baseline`
   (answers from the base weights, records = path loss minus base loss),
   both with the same lr, probe width and K; the third serves plain
   inference with the base weights (learning off). Accuracy of the served
   predictions, window by window, is the accuracy on the current
   distribution (each request is predicted before its label is known). At
   the end all are tested on held-out test images at the final angle and
   upright.
2. Dress through HTTP. The first steps of `marketplace continual dress`
   (docs/algorithm.md section 7: 240 digits + 16 dresses per step, class 10 new,
   (the continual setting: 240 digits + 16 dresses per step, class 10 new,
   K = 256, lr 1e-2, whole-model unit vector) are sent to a server as
   predict + feedback, and the same steps run in process with
   `ContinualLearner`; the weights are compared.

Writes runs/bench/drift_cpu.{json,md,png} (`--out results/server/drift_cpu` updates the
committed one).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from marketplace import data
from marketplace.serving import Client
from marketplace.io import atomic_path, write_atomic, write_json
from marketplace.machine import machine_summary
from marketplace.serving.process import ServerProcess

RUNS = Path("runs") / "bench"  # default output: never over the committed results
TOKEN = "drift-token"


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 28, 28] rotated by `degrees` [B] about the centre (black fill) -> uint8 [B, 1, 28, 28]."""
    theta = degrees * math.pi / 180
    cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    x = images.float().unsqueeze(1)
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False).round().clamp(0, 255).to(torch.uint8)


def accuracy_of(client: Client, images: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> float:
    correct = sum(int((client.predict(images[i:i + batch]).classes == labels[i:i + batch]).sum())
                  for i in range(0, len(images), batch))
    return 100.0 * correct / len(images)


def drift(checkpoint: str, root: Path, args) -> dict:
    images, labels = data.load_split("mnist", "train")
    test_x, test_y = data.load_split("mnist", "test")
    test_x, test_y = test_x[: args.test], test_y[: args.test]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[: args.requests]
    learn = ("--records", args.records, "--lr", args.lr, "--probe-scale", args.probe_scale, "--checkpoint-every", 50,
             "--attribution", args.attribution)
    servers = {"baseline": ServerProcess(checkpoint, root / "baseline", *learn, "--baseline", token=TOKEN,
                                         log=root / "baseline.log"),
               "paths": ServerProcess(checkpoint, root / "paths", *learn, token=TOKEN, log=root / "paths.log"),
               "off": ServerProcess(checkpoint, root / "off", "--no-learning", token=TOKEN, log=root / "off.log")}
    windows, hits = [], dict.fromkeys(servers, 0)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        clients = {}
        for name, server in servers.items():
            stack.enter_context(server)
            clients[name] = stack.enter_context(Client(server.url, TOKEN))
        for first in range(0, args.requests, args.batch):
            idx = order[first:first + args.batch]
            angles = args.drift * (first + torch.arange(len(idx), dtype=torch.float32)) / 1000
            x, y = rotate(images[idx], angles), labels[idx]
            for name, client in clients.items():
                served = client.predict(x)
                hits[name] += int((served.classes == y).sum())
                if name != "off":
                    client.feedback(served.ids, y)
            done = first + len(idx)
            if done % args.window < args.batch or done == args.requests:
                n = done - sum(w["requests"] for w in windows)
                windows.append({"end": done, "requests": n, "angle": float(angles[-1]),
                                **{k: 100.0 * v / n for k, v in hits.items()}})
                hits = dict.fromkeys(servers, 0)
                print(f"{done:>6} requests, angle {float(angles[-1]):5.1f} deg: "
                      + ", ".join(f"{k} {windows[-1][k]:.1f}%" for k in servers), flush=True)
        final = float(args.drift * args.requests / 1000)
        tests = {}
        for name, angle in (("final_angle", final), ("upright", 0.0)):
            x = rotate(test_x, torch.full((len(test_x),), angle))
            tests[name] = {"angle": angle, **{k: accuracy_of(c, x, test_y) for k, c in clients.items()}}
        status = {k: clients[k].status() for k in ("baseline", "paths")}
    half = windows[len(windows) // 2:]
    return {"windows": windows, "test": tests, "learners": status, "seconds": round(time.perf_counter() - start, 1),
            "second_half_mean": {k: sum(w[k] for w in half) / len(half) for k in servers}}


def dress_through_http(checkpoint: str, root: Path, steps: int) -> dict:
    """The first `steps` steps of the dress experiment, over HTTP and in process, from the same seeds."""
    from marketplace.continual.experiment import ContinualConfig, ContinualRun

    config = ContinualConfig(experiment="dress", checkpoint=checkpoint, steps=steps, device="cpu", seed=0,
                             attribution="zscore")  # the published settings
    run = ContinualRun(config)
    start = {n: v.clone() for n, v in run.market.state_dict().items()}
    k = config.old_per_step + config.new_per_step
    server = ServerProcess(checkpoint, root / "dress", "--classes", 11, "--records", k, "--lr", config.lr,
                           "--probe-scale", config.probe_scale, "--unit", config.unit, "--seed", config.seed,
                           "--attribution", config.attribution, "--independent", "--max-batch", k, "--max-request", k,
                           token=TOKEN, log=root / "dress.log")
    with server, Client(server.url, TOKEN) as client:
        for step in range(steps):
            x, y = run.batch(step)
            answer = client.predict(x)  # float32 bytes: the same inputs, bit for bit
            client.feedback(answer.ids, y)
            run.learner.serve(x, labels=y)
        from safetensors.torch import load as load_bytes

        served = load_bytes(client._call("GET", "/v1/weights").content)
        status = client.status()
    diff = max(float((served[n] - v).abs().max()) for n, v in run.market.state_dict().items())
    moved = max(float((v - start[n]).abs().max()) for n, v in run.market.state_dict().items())
    return {"steps": steps, "records_per_update": k, "server_step": status["step"], "in_process_step": run.learner.step,
            "max_abs_weight_difference": diff, "max_abs_weight_change": moved, "equal": diff == 0.0}


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = result["drift"]["windows"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = [v["end"] for v in w]
    ax.plot(xs, [v["baseline"] for v in w], marker="o", markersize=3, label="learning, --baseline")
    ax.plot(xs, [v["paths"] for v in w], marker="o", markersize=3, label="learning, answers and records from paths")
    ax.plot(xs, [v["off"] for v in w], marker="o", markersize=3, label="learning off (base weights)")
    ax.set_xlabel("requests served")
    ax.set_ylabel(f"accuracy of served predictions per {result['window']} requests (%)")
    twin = ax.twinx()
    twin.plot(xs, [v["angle"] for v in w], color="gray", linestyle=":", label="rotation (degrees)")
    twin.set_ylabel("rotation of the current images (degrees)")
    ax.set_title(f"Rotating MNIST over HTTP: +{result['drift_deg_per_1000']} deg per 1,000 requests")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def markdown(r: dict) -> str:
    d = r["drift"]
    lines = ["# A drifting stream through the learning server", "",
             f"Machine: {r['machine']} (load average {r['load_average']}, other jobs running beside it); "
             "the figures below count requests, not seconds, so the load does not change them.",
             f"Checkpoint: {r['checkpoint']} (MNIST test accuracy {r['checkpoint_test_accuracy']}). Stream: "
             f"{r['requests']} MNIST training images in batches of {r['batch']}, rotated by "
             f"+{r['drift_deg_per_1000']} degrees per 1,000 requests; the learning servers update every "
             f"{r['records']} labelled records (lr {r['lr']}, probe scale {r['probe_scale']}, "
             "whole-model unit vector).",
             "", "Accuracy of the served predictions (%), per window of requests:", "",
             "| requests | angle | learning, --baseline | learning, paths | learning off |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {w['end']} | {w['angle']:.1f} | {w['baseline']:.1f} | {w['paths']:.1f} | {w['off']:.1f} |"
              for w in d["windows"]]
    t, m = d["test"], d["second_half_mean"]

    def three(v):
        return f"--baseline {v['baseline']:.1f}%, paths {v['paths']:.1f}%, off {v['off']:.1f}%"

    lines += ["", f"Second half of the stream, mean window accuracy: {three(m)}.",
              f"Held-out test images ({r['test']}) at the final angle ({t['final_angle']['angle']:.0f} degrees): "
              f"{three(t['final_angle'])}; upright: {three(t['upright'])}.",
              "Learners at the end: " + "; ".join(f"{k}: step {v['step']}, {v['recorded']} records learned from, "
                                                  f"{v['stale']} stale" for k, v in d["learners"].items())
              + ". Plot: [drift_cpu.png](drift_cpu.png).", ""]
    if "dress" in r:
        s = r["dress"]
        lines += ["## The dress experiment through HTTP", "",
                  f"{s['steps']} steps of `continual dress` (K = {s['records_per_update']}) sent as predict + "
                  f"feedback, against the same steps in process: server step {s['server_step']}, in-process step "
                  f"{s['in_process_step']}; largest weight difference {s['max_abs_weight_difference']:.3g} "
                  f"(the weights moved by up to {s['max_abs_weight_change']:.3g}).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a trained `marketplace train` MNIST checkpoint")
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--drift", type=float, default=0.75, help="degrees of rotation per 1,000 requests")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--probe-scale", type=float, default=0.3)
    parser.add_argument("--window", type=int, default=5000)
    parser.add_argument("--test", type=int, default=1000, help="held-out test images at the end")
    parser.add_argument("--dress-steps", type=int, default=10)
    parser.add_argument("--attribution", default="zscore", choices=["zscore", "rank"],
                        help="the drift's learning servers (the committed results: zscore, as published)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RUNS / "drift_cpu"),
                        help="default runs/bench/drift_cpu; results/server/drift_cpu is the committed one")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the servers run 1 thread too: the in-process dress run then computes alike
    from marketplace.training import load_checkpoint

    result = {"machine": machine_summary(), "shared_machine": True, "checkpoint": Path(args.checkpoint).name,
              "checkpoint_test_accuracy": load_checkpoint(args.checkpoint).meta.get("test_accuracy"),
              "requests": args.requests, "batch": args.batch, "drift_deg_per_1000": args.drift,
              "records": args.records, "lr": args.lr, "probe_scale": args.probe_scale, "window": args.window,
              "test": args.test}
    with tempfile.TemporaryDirectory() as tmp:
        result["drift"] = drift(args.checkpoint, Path(tmp), args)
        if args.dress_steps:
            result["dress"] = dress_through_http(args.checkpoint, Path(tmp), args.dress_steps)
    result["load_average"] = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    plot(result, out.with_suffix(".png"))
    write_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
