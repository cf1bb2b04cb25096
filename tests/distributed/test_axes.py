"""Tests of marketplace.distributed's axes and checks: 2 and 3 gloo ranks on the CPU, forked from this process.

Each rank is a forked child (`run_local`), so starting one costs no second
`import torch`. A small MLP on random data; the command line's tests are in
tests/cli/test_train_distributed.py.
"""

from __future__ import annotations

import os
import signal
import time
import warnings

import pytest
import torch

from marketplace import V1, V2, AdaptiveV2, Market, path_losses
from marketplace.distributed import (
    AXES, Collectives, DataAxis, DistributedError, RankFailure, ReplicaAxis, WeightsDivergedError,
    check_same_weights, init_from_env, ring_bytes_sent, run_local, shard_bounds, shutdown, weights_hash,
)
from marketplace.functional import NonFiniteLossError, standardized_attribution, unit_directions
from marketplace.models import mlp
from marketplace.training import batch_indices
from marketplace.vendors import draw_vendors

from helpers import assert_close, succeeded

VENDORS = (3, 3)  # P = 9 paths
BATCH, STEPS, SEED = 10, 3, 0
OPTIMIZERS = {
    "v1": lambda m: V1(m, lr=0.05, seed=SEED),
    "v2": lambda m: V2(m, lr=0.2, probe_scale=0.5, decay=0.01, seed=SEED),
    "adaptive": lambda m: AdaptiveV2(m, lr=0.2, probe_scale=0.5, meta_lr=0.5, seed=SEED),
}


def problem():
    """A small classification problem and a 2-spec MLP market, the same in every process."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        market = Market(mlp([8, 16, 3]), vendors=list(VENDORS))
    return market, x, y


def evaluator(market, x, y):
    return lambda vendors: (lambda out: (path_losses(out.products, y), out.paths))(market.evaluate(x, vendors))


def batch(x, y, step, rows=slice(None)):
    idx = batch_indices(SEED, step, len(x), BATCH)[rows]
    return x[idx], y[idx]


def state(market) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in market.state_dict().items()}


def single_process(algorithm: str) -> dict[str, torch.Tensor]:
    """The reference: one process, the full batch, the optimizer's own step."""
    market, x, y = problem()
    opt = OPTIMIZERS[algorithm](market)
    for step in range(STEPS):
        evaluate = evaluator(market, *batch(x, y, step))
        losses, paths = evaluate(opt.vendors)
        opt.step(losses, paths, closure=evaluate)
    return state(market)


def train_ranks(rank, world, axis_name, algorithm, timeout=30.0):
    """One rank: STEPS steps on `axis_name`, then the weights-hash check."""
    comm = init_from_env(timeout=timeout)
    try:
        market, x, y = problem()
        opt = OPTIMIZERS[algorithm](market)
        axis = AXES[axis_name](comm)
        for step in range(STEPS):
            axis.step(opt, evaluator(market, *batch(x, y, step, axis.shard(BATCH))), BATCH)
        check_same_weights(market, comm, opt.steps)
        return {"state": state(market), "payload": dict(comm.counter.payload), "calls": dict(comm.counter.calls)}
    finally:
        shutdown()


def assert_identical(states):
    for r, s in enumerate(states[1:], start=1):
        for k in s:
            assert torch.equal(s[k], states[0][k]), f"rank {r} differs from rank 0 in {k}"


# -- the data axis -------------------------------------------------------------


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("algorithm", ["v2", "v1", "adaptive"])
def test_data_axis_equals_a_single_process_run_and_sends_p_floats(world, algorithm):
    reference = single_process(algorithm)  # first: the ranks inherit a warmed-up torch
    results = succeeded(run_local(train_ranks, world, "data", algorithm, timeout=60))
    states = [r["state"] for r in results]
    assert_identical(states)
    assert_close(states[0], reference)  # the losses only differ in summation order
    passes = 2 if algorithm == "adaptive" else 1  # the adaptive rate's second pass is all-reduced too
    paths = VENDORS[0] * VENDORS[1]
    for r in results:
        assert r["calls"]["step"] == STEPS * passes
        assert r["payload"]["step"] == STEPS * passes * paths * 4  # P float32 per pass
        assert r["payload"]["check"] == 8  # one int64 hash


def test_shards_cover_the_batch_once():
    for batch, world in [(10, 3), (8, 2), (3, 3), (7, 4)]:
        bounds = [shard_bounds(batch, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == batch
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("axis_name", ["data", "replica"])
@pytest.mark.parametrize("algorithm", ["v1", "v2"])
def test_a_world_of_one_is_the_single_process_run_bit_for_bit(axis_name, algorithm):
    market, x, y = problem()
    opt = OPTIMIZERS[algorithm](market)
    axis = AXES[axis_name](Collectives())  # no process group: collectives are identities
    for step in range(STEPS):
        axis.step(opt, evaluator(market, *batch(x, y, step)), BATCH)
    reference = single_process(algorithm)
    for k, v in state(market).items():
        assert torch.equal(v, reference[k]), k


# -- the replica axis ----------------------------------------------------------


def replica_reference(world: int, algorithm: str) -> dict[str, torch.Tensor]:
    """The replica update written out naively: every path of every rank, no per-vendor sums."""
    market, x, y = problem()
    opt = OPTIMIZERS[algorithm](market)  # only for its rates and probe widths
    for step in range(STEPS):
        xb, yb = batch(x, y, step)
        widths = opt.probe_widths()
        runs = []
        for r in range(world):
            vendors = draw_vendors(SEED, step, VENDORS, widths, stream=r)
            out = market.evaluate(xb, vendors)
            runs.append((vendors, path_losses(out.products, yb), out.paths))
        numels = [layout.numel for layout in market.layouts]
        if algorithm == "v2":
            total = [torch.zeros(n) for n in numels]
            for vendors, losses, paths in runs:
                for a, path in zip(standardized_attribution(losses), paths.tolist()):
                    for k, j in enumerate(path):
                        total[k] += a * vendors.deltas(k, numels[k], torch.device("cpu"))[j]
            for k, g in enumerate(unit_directions(total)):
                market.add_(k, opt.lr[k] * g)
        else:
            vendors, losses, paths = min(runs, key=lambda run: float(run[1].min()))
            for k, j in enumerate(paths[int(torch.argmin(losses))].tolist()):
                market.add_(k, vendors.deltas(k, numels[k], torch.device("cpu"))[j])
        opt.lr = [lr * (1 - opt.decay) for lr in opt.lr]
    return state(market)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("algorithm", ["v2", "v1"])
def test_replica_axis_gives_identical_weights_and_the_naive_update(world, algorithm):
    reference = replica_reference(world, algorithm)
    results = succeeded(run_local(train_ranks, world, "replica", algorithm, timeout=60))
    assert_identical([r["state"] for r in results])
    assert_close(results[0]["state"], reference)
    vendors, specs = sum(VENDORS), len(VENDORS)
    per_step = (1 + 2 * vendors) * 8 if algorithm == "v2" else (2 + specs) * 8  # int64 words, see replica_axis
    for r in results:
        assert r["payload"]["step"] == STEPS * per_step


def test_replica_ranks_draw_different_vendors():
    market, _, _ = problem()
    opt = OPTIMIZERS["v2"](market)
    seeds = [ReplicaAxis(Collectives(rank=r, world_size=3)).vendors(opt).seeds for r in range(3)]
    assert seeds[0][0][0] == 0  # the leader everywhere
    assert len({tuple(torch.cat(s).tolist()) for s in seeds}) == 3
    assert all(torch.equal(a, b) for a, b in zip(seeds[0], opt.vendors.seeds))  # rank 0 = the optimizer's own


def test_replica_axis_refuses_the_adaptive_rate():
    market, _, _ = problem()
    with pytest.raises(Exception, match="data axis only"):
        ReplicaAxis(Collectives()).check(OPTIMIZERS["adaptive"](market), BATCH)


def nan_on_one_rank(rank, world, axis_name, on_nonfinite):
    comm = init_from_env(timeout=30)
    try:
        market, x, y = problem()
        opt = V2(market, lr=0.2, probe_scale=0.5, seed=SEED, on_nonfinite=on_nonfinite)
        axis = AXES[axis_name](comm)
        for step in range(2):
            evaluate = evaluator(market, *batch(x, y, step, axis.shard(BATCH)))
            if rank == 1 and step == 1:  # a poisoned evaluation on one rank only
                evaluate = (lambda ev: lambda v: (ev(v)[0] * float("nan"), ev(v)[1]))(evaluate)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    axis.step(opt, evaluate, BATCH)
            except NonFiniteLossError as e:
                return {"error": str(e), "steps": opt.steps}
        check_same_weights(market, comm, opt.steps)
        return {"skipped": opt.skipped, "steps": opt.steps, "warned": "skipped" in str(caught[0].message)}
    finally:
        shutdown()


@pytest.mark.parametrize("axis_name", ["data", "replica"])
def test_a_nan_on_one_rank_stops_or_skips_every_rank_alike(axis_name):
    for rank, r in enumerate(succeeded(run_local(nan_on_one_rank, 2, axis_name, "raise", timeout=60))):
        assert r["steps"] == 1 and "NaN" in r["error"], (rank, r)
    for rank, r in enumerate(succeeded(run_local(nan_on_one_rank, 2, axis_name, "skip", timeout=60))):
        assert r == {"skipped": 1, "steps": 2, "warned": True}, (rank, r)


# -- the weights check, the byte counter -----------------------------------------


def diverge(rank, world):
    comm = init_from_env(timeout=30)
    try:
        market, _, _ = problem()
        check_same_weights(market, comm, step=0)  # identical at start-up
        if rank == 2:
            with torch.no_grad():
                next(market.parameters())[0, 0] += 1e-6
        try:
            check_same_weights(market, comm, step=7)
        except WeightsDivergedError as e:
            return str(e)
        return "no error"
    finally:
        shutdown()


def test_weights_check_names_the_ranks_that_diverged():
    messages = succeeded(run_local(diverge, 3, timeout=60))
    for message in messages:
        assert "step 7" in message and "rank(s) [2] differ from rank(s) [0, 1]" in message, message


def test_weights_hash_sees_every_bit():
    market, _, _ = problem()
    before = weights_hash(market)
    assert weights_hash(market) == before
    with torch.no_grad():
        p = next(market.parameters())
        p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(1.0))
    assert weights_hash(market) != before


def test_byte_counter_counts_payload_and_ring_bytes():
    comm = Collectives(world_size=1)
    comm.all_reduce(torch.zeros(9), "step")
    comm.all_gather(torch.zeros(5, dtype=torch.int64), "step")
    assert comm.counter.calls["step"] == 2 and comm.counter.payload["step"] == 9 * 4 + 5 * 8
    assert ring_bytes_sent("all_reduce", 400, 4) == 600  # 2 (n-1)/n x size
    assert ring_bytes_sent("all_gather", 400, 4) == 1200  # (n-1) x size
    assert ring_bytes_sent("all_reduce", 400, 1) == 0


# -- a rank that dies or stalls ---------------------------------------------------


def die_or_stall(rank, world, victim, how, timeout):
    comm = init_from_env(timeout=timeout)
    try:
        market, x, y = problem()
        opt = OPTIMIZERS["v2"](market)
        axis = DataAxis(comm)
        for step in range(100):
            if step == 2 and rank == victim:
                if how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(timeout + 1.5)  # stall past the others' timeout
            start = time.monotonic()
            try:
                axis.step(opt, evaluator(market, *batch(x, y, step, axis.shard(BATCH))), BATCH)
            except DistributedError as e:
                return {"step": step, "seconds": time.monotonic() - start, "message": str(e)}
        return {"step": None}
    finally:
        shutdown()


@pytest.mark.parametrize("how, world", [("kill", 3), ("stall", 2)])
def test_a_dead_or_stalled_rank_ends_the_run_within_the_timeout(how, world):
    timeout, victim = 3.0, 1
    results = run_local(die_or_stall, world, victim, how, timeout, timeout=40)
    if how == "kill":
        assert isinstance(results[victim], RankFailure) and results[victim].exitcode == -signal.SIGKILL
    for rank, result in enumerate(results):
        if rank == victim:
            continue
        assert not isinstance(result, RankFailure), result
        assert result["step"] == 2, result
        assert result["seconds"] < timeout + 2, result
        assert f"rank {rank} of {world}" in result["message"] and "timeout 3 s" in result["message"]


# -- the command line ---------------------------------------------------------------
