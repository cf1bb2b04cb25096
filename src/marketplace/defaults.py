"""The command line's defaults for the small CPU market, in one place that imports nothing.

DEFAULT_LR: from 400-step sweeps on MNIST at 4x4x4, batch 128 (docs/results.md, "Choosing
the rates"); the published 16-vendor setting is lr 0.1, probe scale 0.1.
CLI_CHEAP_VENDORS: `marketplace train --cheap-vendors`, the FLOP slack that buys
the cheap specs more vendors (docs/results.md, the protocol), within a bound on
memory (`training.cheap_vendors.MEMORY_FACTOR`); the run's first line names the
market it makes. The library (`TrainConfig.cheap_vendors = 0`, `Market`) keeps
the counts it is given.
CHEAP_SPEC_RATE: unless `--lr` is given, a v2 spec that cheap_vendors raised
trains at this fraction of the rate: its many vendors point its step better,
and the full rate overshoots (docs/results.md, "A rate per spec").
"""

DEFAULT_LR = {"v1": 0.003, "v2": 0.15, "adaptive": 0.15}
CLI_CHEAP_VENDORS = 0.1  # 4,4,4 -> 4x4x64, 7% more FLOPs
CHEAP_SPEC_RATE = 0.5  # 4x4x64 trains at 0.15, 0.15, 0.075
