"""Research runs around the algorithm: scripts, not part of the installed package.

An experiment here is a named set of training runs whose logs become one
figure and one table (`python experiments/NAME.py`); the code they share is
in `experiments.lib`. The core library never imports from here.
"""
