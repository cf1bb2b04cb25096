"""Learning from inference (docs/algorithm.md section 7), without HTTP.

`serving.serve` runs each request along its own random path in one batched
forward; `learner.ContinualLearner` keeps (path, loss) records, the losses
made by `losses`, and turns every K of them into a V2 update. `experiment`
runs the published experiments, one module each (`dress`, `nine`), on the
streams of `stream`, starting from the checkpoints `pretrain` makes.
"""

from .learner import ContinualLearner, UnknownRequestError
from .losses import drop_beyond_std, per_example_cross_entropy, relative_losses
from .serving import Served, balanced_paths, random_paths, serve

__all__ = ["ContinualLearner", "Served", "UnknownRequestError", "drop_beyond_std", "per_example_cross_entropy",
           "relative_losses", "balanced_paths", "random_paths", "serve"]
