"""Training across processes and machines on torch.distributed, exchanging only seeds and losses.

Two axes (docs/algorithm.md section 8), each one collective per step:

- `DataAxis`: the same vendors on every rank, the batch split across ranks;
  one all-reduce of the P path losses.
- `ReplicaAxis`: different vendors on every rank (stream = rank), the same
  batch; one all-gather of seeds and per-vendor attribution sums, from
  which every rank rebuilds the others' deltas.

`init_from_env` joins the group torchrun describes (gloo on CPU, NCCL on
CUDA, a timeout on every collective); `Collectives` counts the bytes of
every collective; `check_same_weights` compares a hash of the weights
across ranks; `run_local` starts ranks on this machine for tests and
benchmarks. A distributed run is `marketplace.training.Trainer` given an
axis (`DistributedConfig.axis_for`), on every rank. See docs/distributed.md.
"""

from .check import WeightsDivergedError, check_same_weights, weights_hash
from .collectives import ByteCounter, Collectives, DistributedError, ring_bytes_sent
from .config import AXES, DistributedConfig
from .data_axis import AxisStep, DataAxis, shard_bounds
from .group import init_from_env, shutdown
from .local import RankFailure, free_port, run_local
from .replica_axis import ReplicaAxis

__all__ = [
    "AXES", "AxisStep", "ByteCounter", "Collectives", "DataAxis", "DistributedConfig", "DistributedError",
    "RankFailure", "ReplicaAxis", "WeightsDivergedError", "check_same_weights",
    "free_port", "init_from_env", "ring_bytes_sent", "run_local", "shard_bounds",
    "shutdown", "weights_hash",
]
