"""A continual experiment driven through `marketplace serve` by HTTP clients, labels sent late and shuffled.

    OMP_NUM_THREADS=1 uv run python experiments/continual_server.py nine \\
        --checkpoint results/continual/bases/no9.safetensors --steps 2000 --out runs/continual-server/nine

Each step the stream's 256 images (the same as the in-process run's at that
step) are split among `--clients` clients that ask for predictions at once;
then every label goes back in a shuffled order, split among the clients
again, so the server sees them late and out of order. The server makes one
V2 update from the 256 records, as the in-process learner does. With
`--private` the clients instead compute their own losses (`PrivateClient`:
only step, path and loss leave them). Every `--eval-every` steps the
server's weights are fetched and validated here, on the same images as the
in-process run. The server's store makes the run durable: run the same
command with `--resume` to go on from the server's last step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes

from marketplace.continual.config import ContinualConfig
from marketplace.continual.experiment import ContinualRun, validate
from marketplace.continual.report import PrintProgress, plot_log
from marketplace.io import write_atomic
from marketplace.serving import Client, PrivateClient
from marketplace.serving.process import ServerProcess
from marketplace.training import JsonLog


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=["dress", "dress-class10", "nine"])
    p.add_argument("--checkpoint", required=True, help="the base to serve")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--private", action="store_true", help="clients report (step, path, loss) only")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--probe-scale", type=float, default=1.0)
    p.add_argument("--vendors", default="4,4,4")
    p.add_argument("--baseline", action="store_true", help="learn from path loss minus the base weights' loss")
    p.add_argument("--attribution", default="zscore", choices=["zscore", "rank"],
                   help="zscore (V2, as published, as the in-process runs) or rank (the server's default)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/continual-server")
    p.add_argument("--resume", action="store_true", help="go on with the server store in --out")
    return p.parse_args(argv)


def served_step(run: ContinualRun, clients: list, step: int, private: bool, shuffle: torch.Generator) -> dict:
    """One step through the server; the counts of correct answers of old and new images (none if private)."""
    x, y = run.batch(step)
    parts = list(zip(x.chunk(len(clients)), y.chunk(len(clients))))
    with ThreadPoolExecutor(len(clients)) as pool:
        if private:
            results = list(pool.map(lambda c, p: c.learn(*p), clients, parts))
            return {"updates": sum(r["updates"] for r in results)}
        answers = list(pool.map(lambda c, p: c.predict(p[0]), clients, parts))
        ids = [i for a in answers for i in a.ids]
        classes = torch.cat([a.classes for a in answers])
        order = torch.randperm(len(ids), generator=shuffle)
        chunks = [order[i::len(clients)] for i in range(len(clients))]
        results = list(pool.map(lambda c, o: c.feedback([ids[i] for i in o], y[o]), clients, chunks))
    correct = (classes == y.cpu()).float()
    n_old = run.config.old_per_step
    return {"updates": sum(r["updates"] for r in results), "old_correct": float(correct[:n_old].sum()),
            "new_correct": float(correct[n_old:].sum())}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    out = Path(args.out)
    store, log = out / "store", out / f"{args.experiment}.jsonl"
    if store.exists() and not args.resume:
        sys.exit(f"error: {store} holds a run already: pass --resume to continue it, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    vendors = tuple(int(v) for v in args.vendors.split(","))
    config = ContinualConfig(experiment=args.experiment, checkpoint=args.checkpoint, steps=args.steps,
                             vendors=vendors, lr=args.lr, probe_scale=args.probe_scale, baseline=args.baseline,
                             attribution=args.attribution, eval_every=args.eval_every,
                             eval_samples=args.eval_samples, log_every=args.log_every, seed=args.seed,
                             device="cpu", data_dir=args.data_dir)
    run = ContinualRun(config)  # the stream and the validation sets; its market holds the server's weights
    classes = ["--classes", "11"] if args.experiment == "dress-class10" else []
    server = ServerProcess(args.checkpoint, store, "--records", 256, "--lr", args.lr, "--probe-scale",
                           args.probe_scale, "--unit", "model", "--seed", args.seed, "--vendors", args.vendors,
                           "--attribution", args.attribution, *(["--baseline"] if args.baseline else []),
                           "--independent", *classes, log=out / "server.log").start()
    if not args.resume:
        log.unlink(missing_ok=True)
    kind = PrivateClient if args.private else Client
    clients = [kind(server.url, server.token, seed=args.seed + i) if args.private else kind(server.url, server.token)
               for i in range(args.clients)]
    hooks = [PrintProgress(), JsonLog(log)]
    try:
        step = clients[0].status()["step"]

        def check() -> dict:
            blob = clients[0]._call("GET", "/v1/weights").content
            run.market.load_state_dict(load_bytes(blob))
            return validate(run.market, run.data, args.eval_samples)

        start_val = validate(run.market, run.data) if step == 0 else None
        for hook in hooks:
            hook.on_start(config, run.market, step)
        if step == 0:
            for hook in hooks:
                hook.on_step({"step": 0, "seconds": 0.0, **check()})
        shuffle = torch.Generator().manual_seed(args.seed)
        window = {"old_correct": 0.0, "new_correct": 0.0, "steps": 0}
        clock = time.perf_counter()
        while step < args.steps:
            result = served_step(run, clients, step, args.private, shuffle)
            if result["updates"] != 1:
                raise RuntimeError(f"step {step} made {result['updates']} updates, not one")
            step += 1
            for key in ("old_correct", "new_correct"):
                window[key] += result.get(key, 0.0)
            window["steps"] += 1
            metrics = {"step": step, "seconds": time.perf_counter() - clock}
            if step % args.log_every == 0 or step % args.eval_every == 0 or step == args.steps:
                if not args.private:
                    metrics["learn_old_accuracy"] = 100 * window["old_correct"] / (240 * window["steps"])
                    metrics["learn_new_accuracy"] = 100 * window["new_correct"] / (16 * window["steps"])
                window = dict.fromkeys(window, 0.0)
                if step % args.eval_every == 0 or step == args.steps:
                    metrics.update(check())
            for hook in hooks:
                hook.on_step(metrics)
        check()
        end_val = validate(run.market, run.data)
        status = clients[0].status()
    finally:
        for c in clients:
            c.close()
        server.stop()
    summary = {"experiment": args.experiment, "through": "private clients" if args.private else "HTTP clients",
               "steps": args.steps, "clients": args.clients, "val_old_end": end_val["val_old_accuracy"],
               "val_new_end": end_val["val_new_accuracy"], "server": status}
    if start_val:
        summary.update(val_old_start=start_val["val_old_accuracy"], val_new_start=start_val["val_new_accuracy"])
    summary["seconds_this_process"] = round(time.perf_counter() - clock, 1)
    for hook in hooks:
        hook.on_end({**summary, "old": run.data.old_name, "new": run.data.new_name, "device": "cpu",
                     "seconds": summary["seconds_this_process"], "val_old_start": summary.get("val_old_start", float("nan")),
                     "val_new_start": summary.get("val_new_start", float("nan"))})
    write_atomic(out / f"{args.experiment}.json", json.dumps(summary, indent=2) + "\n")
    plot_log(log, out / f"{args.experiment}.png", title=f"{args.experiment} through the server")
    return summary


if __name__ == "__main__":
    main()
