"""Research around the algorithm: the articles' experiment runs, backprop baselines, plots, cost and speed.

`runs` names the experiments (`marketplace experiment NAME`) and trains
their runs; `baselines` trains the same CNN with backprop on the same
batches; `plot` draws and tabulates run logs; `cost` counts products and
FLOPs of a market (docs/algorithm.md section 3); `speed` times the market step
against a per-vendor loop, backprop and inference (`marketplace bench`).
"""
