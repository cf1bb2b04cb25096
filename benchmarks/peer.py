"""Side by side with a peer: EvoTorch's PGPE + ClipUp against V2 on the same CNN, at equal wall time.

    uv run --extra peer python benchmarks/peer.py --tune --seconds 60    # short tuning runs of PGPE (validation split)
    uv run --extra peer python benchmarks/peer.py --tune --seconds 100 --settings "16,0.3,0.01,32;8,0.3,0.01,32" \
        --out benchmarks/results/peer_tuning2_cpu.json                   # a second round around the best
    uv run --extra peer python benchmarks/peer.py --seconds 600 --threads 1 --pgpe 16,0.3,0.02,32   # peer_cpu.*

The peer is what a researcher would pick instead of the market: PGPE
(Sehnke et al. 2010) with the ClipUp optimizer (Toklu et al. 2020), from
EvoTorch (NNAISENSE), on the beautiful-MNIST CNN as one vector of all its
parameters, its population evaluated in one batched computation (vmap over
`functional_call`, as the market evaluates its vendors). Our side: V2 with
the CLI defaults (`--vendors 4,4,4` with `--cheap-vendors 0.1`, which
trains 4x4x64: 64 vendors on the cheap last spec at half the rate; batch
128, lr 0.15, 0.15, 0.075, probe scale 0.03, as in peer_head_half_cpu.*;
the committed peer_cpu.* ran when the head had the full 0.15, and
peer_4x4x32_cpu.* before that, with `--cheap-vendors 0.05`, 4x4x32) and V2
with the published rates (lr 0.1, probe scale 0.1) on a 4x4x4 market.

Fairness on a shared machine: the methods run in one process, interleaved
step by step (the one with the least training time so far goes next), so
every method sees the same load over the run; each gets `--seconds` of its
own training time; evaluations are not counted. Step t of every method
trains on the same batch (`batch_indices(seed, t)`); all start from the
same initial weights. `--tune` trains on the first 55,000 training images
and scores on the last 5,000 (never the test set).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from marketplace import V2, Market, beautiful_mnist, data, path_losses
from marketplace.defaults import DEFAULT_LR
from marketplace.io import write_atomic
from marketplace.machine import machine_summary
from marketplace.market import SpecLayout
from marketplace.training import batch_indices
from marketplace.training.cheap_vendors import raised_rates

RESULTS = Path(__file__).resolve().parent / "results"  # the committed tuning, read for the best setting
RUNS = Path("runs") / "bench"  # default output: never over the committed results


def initial_specs(depth: int, seed: int):
    """The beautiful-MNIST CNN split `depth` ways; the same weights for every depth and method."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return beautiful_mnist(depth=depth)


class MarketMethod:
    """V2 on a market of the CNN: the project's side."""

    def __init__(self, name: str, seed: int, vendors=(4, 4, 4), lr=0.15, probe_scale=0.03, decay=1e-5, batch=128):
        self.name, self.batch_size = name, batch
        self.settings = {"algorithm": "V2", "vendors": "x".join(map(str, vendors)), "batch": batch, "lr": lr,
                         "probe_scale": probe_scale, "decay": decay}
        self.market = Market(initial_specs(len(vendors), seed), list(vendors))
        self.optimizer = V2(self.market, lr=lr, probe_scale=probe_scale, decay=decay, seed=seed)

    def warm_up(self, x: torch.Tensor) -> None:
        """The batched computation once, untimed, so one-time set-up does not count as training time."""
        self.market.evaluate(x, self.optimizer.vendors)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        out = self.market.evaluate(x, self.optimizer.vendors)
        self.optimizer.step(path_losses(out.products, y), out.paths)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.market(x)


class PGPEMethod:
    """EvoTorch PGPE + ClipUp on the CNN as one flat parameter vector: the peer."""

    def __init__(self, name: str, seed: int, popsize=16, max_speed=0.15, center_lr=None, stdev_init=0.01,
                 stdev_lr=0.1, batch=64):
        from evotorch import Problem
        from evotorch.algorithms import PGPE

        logging.getLogger("evotorch").setLevel(logging.WARNING)  # it announces every problem's dtype and device

        (self.model,) = initial_specs(1, seed)
        self.layout = SpecLayout.of(self.model)
        params = dict(self.model.named_parameters())
        center = torch.cat([params[n].detach().reshape(-1) for n in self.layout.names])
        center_lr = max_speed / 2 if center_lr is None else center_lr  # ClipUp's recommended ratio
        self.settings = {"algorithm": "PGPE + ClipUp (EvoTorch)", "batch": batch, "popsize": popsize,
                         "max_speed": max_speed,
                         "center_learning_rate": center_lr, "stdev_init": stdev_init,
                         "stdev_learning_rate": stdev_lr, "symmetric": True, "ranking": "centered",
                         "parameters": int(center.numel())}
        self.name, self.batch_size, self.popsize = name, batch, popsize
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None
        method = self

        class MinibatchLoss(Problem):
            """Mean cross-entropy of each solution on the current minibatch, the population at once."""

            def _evaluate_batch(self, solutions):
                x, y = method.batch
                flat = solutions.values  # [popsize, numel]
                logits = method.population_logits(flat, x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(len(flat)),
                                       reduction="none").view(len(flat), -1).mean(1)
                solutions.set_evals(loss)

        torch.manual_seed(seed)  # EvoTorch samples from torch's global generator
        self.problem = MinibatchLoss("min", solution_length=int(center.numel()), initial_bounds=(-1e-3, 1e-3),
                                     dtype=torch.float32, device="cpu", seed=seed)
        self.searcher = PGPE(self.problem, popsize=popsize, center_learning_rate=center_lr,
                             stdev_learning_rate=stdev_lr, stdev_init=stdev_init, optimizer="clipup",
                             optimizer_config={"max_speed": max_speed}, center_init=center, symmetric=True,
                             ranking_method="centered")

    def population_logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[popsize, numel] solutions on x [B, ...] -> logits [popsize, B, classes], one batched computation."""
        return vmap(lambda p: functional_call(self.model, self.layout.split(p), (x,)))(flat)

    def warm_up(self, x: torch.Tensor) -> None:
        center = self.searcher.status["center"].reshape(1, -1)
        self.population_logits(center.expand(self.popsize, -1), x)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One generation: EvoTorch updates the center from the previous population, then samples and scores one."""
        self.batch = (x, y)
        with torch.no_grad():
            self.searcher.step()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        center = self.searcher.status["center"]
        return functional_call(self.model, self.layout.split(center.reshape(-1)), (x,))


@torch.no_grad()
def accuracy(method, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    correct = sum(int((method.logits(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
                  for i in range(0, len(x), batch))
    return 100.0 * correct / len(x)


def race(methods, seconds: float, train, test, seed: int, eval_every: float = 60.0, eval_samples: int = 2000,
         log=print) -> list[dict]:
    """Interleave the methods step by step until each has trained `seconds`; evaluate along the way.

    Step t of a method trains on `batch_indices(seed, t, n, method.batch_size)`: methods with the same
    batch size see the same examples. Each method runs its batched computation once untimed first.
    """
    x_train, y_train = train
    x_test, y_test = test
    with torch.no_grad():
        for m in methods:
            m.warm_up(x_train[: m.batch_size])
    state = {m.name: {"steps": 0, "seconds": 0.0, "next_eval": eval_every, "curve": []} for m in methods}
    while True:
        running = [m for m in methods if state[m.name]["seconds"] < seconds]
        if not running:
            break
        m = min(running, key=lambda m: state[m.name]["seconds"])
        s = state[m.name]
        idx = batch_indices(seed, s["steps"], len(x_train), m.batch_size)
        start = time.perf_counter()
        m.step(x_train[idx], y_train[idx])
        s["seconds"] += time.perf_counter() - start
        s["steps"] += 1
        if s["seconds"] >= s["next_eval"] and s["seconds"] < seconds:
            acc = accuracy(m, x_test[:eval_samples], y_test[:eval_samples])
            s["curve"].append({"seconds": round(s["seconds"], 1), "steps": s["steps"], "accuracy": acc})
            s["next_eval"] += eval_every
            log(f"{m.name:<28} {s['seconds']:6.0f} s {s['steps']:5d} steps  {acc:.2f}% (first {eval_samples})")
    results = []
    for m in methods:
        s = state[m.name]
        acc = accuracy(m, x_test, y_test)
        log(f"{m.name:<28} done: {s['steps']} steps in {s['seconds']:.0f} s, {acc:.2f}% on {len(x_test):,}")
        results.append({"name": m.name, "settings": m.settings, "steps": s["steps"],
                        "seconds": round(s["seconds"], 1), "accuracy": acc, "curve": s["curve"]})
    return results


# (popsize, ClipUp max speed, stdev_init, batch): one change at a time around the first row. The first
# row follows the ClipUp paper's rules of thumb (center lr = max speed / 2; radius sqrt(d) x stdev, here ~3,
# of the order of 15 x max speed).
TUNING = [
    (16, 0.15, 0.01, 64),
    (8, 0.15, 0.01, 64), (32, 0.15, 0.01, 64),
    (16, 0.075, 0.01, 64), (16, 0.3, 0.01, 64),
    (16, 0.15, 0.003, 64), (16, 0.15, 0.03, 64),
    (16, 0.15, 0.01, 32), (16, 0.15, 0.01, 128),
]


def pgpe(setting, seed: int) -> PGPEMethod:
    popsize, speed, stdev, batch = setting
    return PGPEMethod(f"PGPE pop {popsize} speed {speed:g} stdev {stdev:g} batch {batch}", seed, popsize=popsize,
                      max_speed=speed, stdev_init=stdev, batch=batch)


def parse_setting(text: str) -> tuple[int, float, float, int]:
    pop, speed, stdev, batch = text.split(",")
    return int(pop), float(speed), float(stdev), int(batch)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training time of each method")
    parser.add_argument("--tune", action="store_true", help="race the PGPE settings of TUNING on a validation split")
    parser.add_argument("--pgpe", default=None, help="popsize,max_speed,stdev_init,batch for the comparison "
                        "(default: the best of the tuning file, else the first row of TUNING)")
    parser.add_argument("--settings", default=None, help="with --tune: the settings to race instead of TUNING, "
                        "popsize,max_speed,stdev_init,batch separated by ';'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=float, default=60.0, help="seconds of training between evaluations")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-examples", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/peer[_tuning]_cpu.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = data.load_data("mnist", "train", args.data_dir, torch.device("cpu"))
    if args.train_examples:
        x, y = x[: args.train_examples], y[: args.train_examples]
    tuning_path = RESULTS / "peer_tuning_cpu.json"
    if args.tune:
        train, test = (x[:-5000], y[:-5000]), (x[-5000:], y[-5000:])
        grid = [parse_setting(t) for t in args.settings.split(";")] if args.settings else TUNING
        methods = [pgpe(s, args.seed) for s in grid]
        out = Path(args.out) if args.out else RUNS / "peer_tuning_cpu.json"
    else:
        train, test = (x, y), data.load_data("mnist", "test", args.data_dir, torch.device("cpu"))
        if args.pgpe:
            setting = parse_setting(args.pgpe)
        elif tuning_path.exists():
            best = max(json.loads(tuning_path.read_text())["results"], key=lambda r: r["accuracy"])["settings"]
            setting = (best["popsize"], best["max_speed"], best["stdev_init"], best["batch"])
        else:
            setting = TUNING[0]
        cli_rates = raised_rates(DEFAULT_LR["v2"], (4, 4, 4), (4, 4, 64))  # the CLI's: the raised head at half
        methods = [MarketMethod("V2 4x4x64 (CLI defaults)", args.seed, vendors=(4, 4, 64), lr=cli_rates),
                   MarketMethod("V2 4x4x4 (published rates)", args.seed, lr=0.1, probe_scale=0.1),
                   pgpe(setting, args.seed)]
        out = Path(args.out) if args.out else RUNS / "peer_cpu.json"
    load_before = os.getloadavg()
    start = time.perf_counter()
    results = race(methods, args.seconds, train, test, args.seed, args.eval_every)
    report = {
        "machine": machine_summary(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": round(time.perf_counter() - start, 1), "seconds_per_method": args.seconds,
        "seed": args.seed, "tuning": args.tune,
        "evaluated_on": "last 5,000 training images (validation)" if args.tune else "the 10,000 test images",
        "results": results,
    }
    write_atomic(out, json.dumps(report, indent=1))
    write_atomic(out.with_suffix(".md"), markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return report


def markdown(report: dict) -> str:
    lines = [
        f"# {'Tuning PGPE + ClipUp' if report['tuning'] else 'V2 beside PGPE + ClipUp'} at equal wall time",
        "",
        f"{report['machine']}; {report['date']}. Load average {report['load_average_before'][0]} "
        f"before, {report['load_average_after'][0]} after, on {os.cpu_count()} cores (every method shares the same load). "
        f"The methods ran interleaved in one process, {report['seconds_per_method']:.0f} s of training each "
        f"(evaluations not counted), seed {report['seed']}; accuracy of the final "
        f"weights (PGPE: the center) on {report['evaluated_on']}.",
        "" if report["tuning"] else "\nPGPE's settings were tuned on a validation split "
        "(peer_tuning*_cpu.md, rounds 1-4); discussion: docs/alignment.md, 'A peer at equal wall time'.",
        "",
        "| method | settings | steps | accuracy % | curve (s: accuracy on 2,000) |",
        "|---|---|---:|---:|---|",
    ]
    for r in report["results"]:
        settings = ", ".join(f"{k} {v}" for k, v in r["settings"].items() if k != "algorithm")
        curve = "; ".join(f"{c['seconds']:.0f}: {c['accuracy']:.1f}" for c in r["curve"])
        lines.append(f"| {r['name']} | {settings} | {r['steps']:,} | {r['accuracy']:.2f} | {curve} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
