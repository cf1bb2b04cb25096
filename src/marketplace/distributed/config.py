"""What a distributed run adds to a training run's settings: how ranks share a step, and how they talk.

`Trainer(config, hooks, axis=dist.axis_for(comm), check_every=dist.check_every)`
is then the whole of a distributed run; the backend and timeout go to
`init_from_env`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from .collectives import Collectives
from .data_axis import DataAxis
from .replica_axis import ReplicaAxis

AXES = {"data": DataAxis, "replica": ReplicaAxis}


@dataclass
class DistributedConfig:
    axis: str = "data"  # data: split the batch; replica: split the vendors
    backend: str = "auto"  # auto, gloo, nccl
    timeout: float = 120.0  # seconds a collective waits for a peer
    check_every: int = 100  # steps between weights-hash checks

    def validate(self) -> None:
        """The axis and the checks; `init_from_env` checks the backend and timeout it is given."""
        checks.known("axis", self.axis, AXES)
        checks.at_least("check_every", self.check_every, 1)

    def axis_for(self, comm: Collectives) -> DataAxis | ReplicaAxis:
        """The axis this config names, over the group `comm` talks to."""
        self.validate()
        return AXES[self.axis](comm)
