"""The learning server under load and under SIGKILL: throughput, latency, and nothing lost.

    nice -n 5 uv run python benchmarks/server.py            # ~3 minutes on 2 CPU cores

1. Load. Servers from the same checkpoint run side by side: the learning
   server as `marketplace serve` starts it (random paths, balanced over each
   micro-batch, every served request stored for its label), the same with
   `--independent` paths (section 7's draws: the grouped forward pads to
   the largest vendor group), the same with `--baseline` (one more forward:
   the base weights answer), and plain inference with the base weights
   (`--no-learning`). N concurrent clients (1, 8, 32) send predict requests
   of one raw uint8 image over loopback for a fixed time; the servers take
   turns, round by round (the order reversed every other round), so a busy
   machine slows them alike. Requests/s and p50/p99 latency; each learning
   server's ratio to plain.
2. Feedback. N clients predict a batch and label it at once: feedback
   records/s and latency.
3. Faults. 8 clients stream predict + feedback while the server is killed
   with SIGKILL and restarted on the same store, several times. Every
   acknowledged feedback is then looked up in the store: lost (acknowledged,
   not stored) and duplicated (stored twice) are counted, and the learner's
   own count (recorded + stale) is compared with the stored records.

Writes runs/bench/server_cpu.json and .md (`--out benchmarks/results/server_cpu` updates
the committed table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from marketplace.io import write_atomic, write_json
from marketplace.machine import machine_summary
from marketplace.serving.process import ServerProcess
from marketplace.training import TrainConfig, build_market, build_optimizer, save_checkpoint

RUNS = Path("runs") / "bench"  # default output: never over the committed results
TOKEN = "bench-token"


def write_checkpoint(path: Path, vendors: tuple[int, ...]) -> Path:
    """An untrained beautiful-MNIST market: the speed of serving does not depend on the weights."""
    config = TrainConfig(vendors=vendors, steps=1)
    market = build_market(config, torch.device("cpu"))
    save_checkpoint(path, market.state_dict(), build_optimizer(config, market).state_dict(),
                    {"config": dataclasses.asdict(config)})
    return path


def image_body(rng: np.random.Generator, batch: int) -> tuple[bytes, dict]:
    x = rng.integers(0, 256, size=(batch, 1, 28, 28), dtype=np.uint8)
    return x.tobytes(), {"Content-Type": "application/octet-stream", "X-Dtype": "uint8",
                         "X-Shape": f"{batch},1,28,28"}


async def predict_client(http: httpx.AsyncClient, deadline: float, latencies: list, errors: list, seed: int,
                         batch: int = 1, feedback: list | None = None) -> None:
    rng = np.random.default_rng(seed)
    while time.perf_counter() < deadline:
        body, headers = image_body(rng, batch)
        start = time.perf_counter()
        try:
            r = await http.post("/v1/predict", content=body, headers=headers)
        except httpx.HTTPError as e:
            errors.append(type(e).__name__)
            continue
        latencies.append(time.perf_counter() - start)
        if r.status_code != 200:
            errors.append(r.status_code)
            continue
        if feedback is not None:
            ids = [p["id"] for p in r.json()["predictions"]]
            records = [{"id": i, "label": int(y)} for i, y in zip(ids, rng.integers(0, 10, len(ids)))]
            start = time.perf_counter()
            f = await http.post("/v1/feedback", json=records, headers={"X-Token": TOKEN})
            if f.status_code == 200:
                feedback.append((time.perf_counter() - start, len(records)))
            else:
                errors.append(f.status_code)


def summary(latencies: list, seconds: float, errors: list, batch: int = 1) -> dict:
    ms = sorted(1000 * v for v in latencies) or [float("nan")]
    return {"requests": len(latencies), "requests_per_s": len(latencies) / seconds,
            "inputs_per_s": batch * len(latencies) / seconds, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "errors": len(errors)}


async def load(url: str, clients: int, seconds: float, batch: int = 1, with_feedback: bool = False) -> dict:
    latencies, errors, feedback = [], [], [] if with_feedback else None
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await http.post("/v1/predict", content=image_body(np.random.default_rng(0), 1)[0],
                        headers=image_body(np.random.default_rng(0), 1)[1])  # warm the connection and the model
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(predict_client(http, deadline, latencies, errors, seed, batch, feedback)
                               for seed in range(clients)))
        elapsed = time.perf_counter() - start
    out = summary(latencies, elapsed, errors, batch)
    if with_feedback:
        f_ms = sorted(1000 * t for t, _ in feedback) or [float("nan")]
        out.update({"feedback_requests": len(feedback), "feedback_records_per_s": sum(n for _, n in feedback) / elapsed,
                    "feedback_p50_ms": float(np.percentile(f_ms, 50)), "feedback_p99_ms": float(np.percentile(f_ms, 99))})
    return out


ARMS = {"plain": ("--no-learning",), "learning": ("--records", 256),
        "independent": ("--records", 256, "--independent"), "baseline": ("--records", 256, "--baseline")}


def bench_load(checkpoint: Path, root: Path, clients: list[int], seconds: float, rounds: int) -> dict:
    servers = {name: ServerProcess(checkpoint, root / name, *args, token=TOKEN, log=root / f"{name}.log")
               for name, args in ARMS.items()}
    learning = servers["learning"]
    table: dict = {}
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        for n in clients:
            runs = {name: [] for name in servers}
            for r in range(rounds):
                order = list(servers.items())
                for name, server in order if r % 2 == 0 else order[::-1]:
                    runs[name].append(asyncio.run(load(server.url, n, seconds)))
            table[n] = {name: {"requests_per_s": statistics.median(x["requests_per_s"] for x in rs),
                               "p50_ms": statistics.median(x["p50_ms"] for x in rs),
                               "p99_ms": statistics.median(x["p99_ms"] for x in rs),
                               "errors": sum(x["errors"] for x in rs), "rounds": rs}
                        for name, rs in runs.items()}
            plain = table[n]["plain"]["requests_per_s"]
            table[n]["ratios"] = {name: table[n][name]["requests_per_s"] / plain for name in servers if name != "plain"}
            print(f"{n:>3} clients: plain {plain:.0f} req/s; " + ", ".join(
                f"{name} {table[n][name]['requests_per_s']:.0f} req/s ({ratio:.2f}x)"
                for name, ratio in table[n]["ratios"].items()), flush=True)
        feedback = {n: asyncio.run(load(learning.url, n, seconds, batch=8, with_feedback=True)) for n in (1, 8)}
        for n, f in feedback.items():
            print(f"feedback, {n} clients: {f['feedback_records_per_s']:.0f} records/s, "
                  f"p50 {f['feedback_p50_ms']:.1f} ms", flush=True)
        learner = httpx.get(f"{learning.url}/v1/status").json()
    return {"predict": table, "feedback": feedback, "learner_after": learner}


async def fault_client(url: str, acked: set, stop: asyncio.Event, seed: int, counts: dict) -> None:
    rng = np.random.default_rng(seed)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not stop.is_set():
            try:
                body, headers = image_body(rng, 4)
                r = await http.post("/v1/predict", content=body, headers=headers)
                if r.status_code != 200:
                    counts["refused"] += 1
                    continue
                ids = [p["id"] for p in r.json()["predictions"]]
                f = await http.post("/v1/feedback", headers={"X-Token": TOKEN},
                                    json=[{"id": i, "label": int(y)} for i, y in zip(ids, rng.integers(0, 10, 4))])
                if f.status_code == 200:
                    acked.update(ids)
                else:
                    counts["refused"] += 1
            except httpx.HTTPError:
                counts["transport_errors"] += 1
                await asyncio.sleep(0.05)  # the server is down: try again shortly


async def faults(checkpoint: Path, root: Path, kills: int, period: float, clients: int) -> dict:
    server = ServerProcess(checkpoint, root / "faults", "--records", 64, "--checkpoint-every", 3, token=TOKEN,
                           log=root / "faults.log")
    await asyncio.to_thread(server.start)
    acked: set = set()
    counts = {"refused": 0, "transport_errors": 0}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(fault_client(server.url, acked, stop, seed, counts)) for seed in range(clients)]
    restarts = []
    for _ in range(kills):
        await asyncio.sleep(period)
        before = len(acked)
        server.kill()
        start = time.perf_counter()
        await asyncio.to_thread(server.start)
        status = httpx.get(f"{server.url}/v1/status").json()
        restarts.append({"acked_before_kill": before, "restart_s": round(time.perf_counter() - start, 2),
                         "step_after": status["step"], "replayed": status["replayed"]})
        print(f"kill {len(restarts)}: {before} acknowledged so far; back in {restarts[-1]['restart_s']} s "
              f"at step {status['step']}, {status['replayed']} records replayed", flush=True)
    await asyncio.sleep(period)
    stop.set()
    await asyncio.gather(*tasks)
    status = httpx.get(f"{server.url}/v1/status").json()
    server.stop()
    with sqlite3.connect(root / "faults" / "store.sqlite3") as db:
        stored = [r[0] for r in db.execute("SELECT request_id FROM records WHERE kind = 'feedback'")]
    lost = len(acked - set(stored))
    duplicated = len(stored) - len(set(stored))
    return {"kills": kills, "clients": clients, "seconds_between_kills": period, "acknowledged": len(acked),
            "stored": len(stored), "lost": lost, "duplicated": duplicated,
            "stored_not_acknowledged": len(set(stored) - acked),
            "learner_counted": status["recorded"] + status["stale"], "final_step": status["step"],
            "restarts": restarts, **counts}


def markdown(result: dict) -> str:
    lines = ["# The learning server under load and under SIGKILL", "",
             f"Machine: {result['machine']} (load average {result['load_average']} at the end; the load "
             "generator shares the cores, and other jobs may run beside it), so absolute numbers are noisy; "
             "the servers ran side by side, round by round, so their ratios are the figures to read.",
             f"Market {result['market']} (beautiful-MNIST CNN), one raw uint8 image per predict request, "
             f"{result['seconds']} s per setting, median of {result['rounds']} rounds, servers with 1 torch thread. "
             "learning: `marketplace serve` as it starts (balanced paths); independent: `--independent`; "
             "baseline: `--baseline`; plain: `--no-learning`.", "",
             "| clients | plain req/s | learning req/s (ratio) | independent req/s (ratio) | baseline req/s (ratio) "
             "| p50 / p99 ms: plain | learning |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n, row in result["load"]["predict"].items():
        pl, le = row["plain"], row["learning"]
        arms = " | ".join(f"{row[k]['requests_per_s']:.0f} ({row['ratios'][k]:.2f}x)"
                          for k in ("learning", "independent", "baseline"))
        lines.append(f"| {n} | {pl['requests_per_s']:.0f} | {arms} | {pl['p50_ms']:.1f} / {pl['p99_ms']:.1f} | "
                     f"{le['p50_ms']:.1f} / {le['p99_ms']:.1f} |")
    lines += ["", "Feedback (each client predicts 8 images, then labels them):", "",
              "| clients | feedback records/s | feedback p50 / p99 ms |", "| ---: | ---: | ---: |"]
    for n, f in result["load"]["feedback"].items():
        lines.append(f"| {n} | {f['feedback_records_per_s']:.0f} | {f['feedback_p50_ms']:.1f} / {f['feedback_p99_ms']:.1f} |")
    fa = result["faults"]
    lines += ["", f"Faults: {fa['clients']} clients streaming predict + feedback, SIGKILL every "
              f"{fa['seconds_between_kills']} s, {fa['kills']} times, restarted on the same store:", "",
              f"- acknowledged feedback records: {fa['acknowledged']}; found in the store: all but **{fa['lost']} lost**",
              f"- stored twice: **{fa['duplicated']}**; stored but never acknowledged (in flight at a kill): "
              f"{fa['stored_not_acknowledged']}",
              f"- the learner's count after the last restart (recorded + stale): {fa['learner_counted']} "
              f"= {fa['stored']} stored records", f"- final step {fa['final_step']}; restarts took "
              f"{', '.join(str(r['restart_s']) for r in fa['restarts'])} s", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vendors", default="4,4,4")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--period", type=float, default=3.0, help="seconds of load between kills")
    parser.add_argument("--out", default=str(RUNS / "server_cpu"),
                        help="default runs/bench/server_cpu; benchmarks/results/server_cpu is the committed one")
    args = parser.parse_args()
    vendors = tuple(int(v) for v in args.vendors.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = write_checkpoint(root / "market.safetensors", vendors)
        load_result = bench_load(checkpoint, root, [int(n) for n in args.clients.split(",")], args.seconds, args.rounds)
        fault_result = asyncio.run(faults(checkpoint, root, args.kills, args.period, clients=8))
    import os

    result = {"machine": machine_summary(), "load_average": ", ".join(f"{v:.1f}" for v in os.getloadavg()),
              "market": "x".join(map(str, vendors)), "seconds": args.seconds,
              "rounds": args.rounds, "python": sys.version.split()[0], "load": load_result, "faults": fault_result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out + ".json", result)
    write_atomic(args.out + ".md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
