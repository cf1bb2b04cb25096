"""Benchmarks of the market step, serving and distributed training: scripts, not part of the installed package.

Run them from a checkout (`uv run python benchmarks/NAME.py`); the code they
share is in `benchmarks.lib`. The core library never imports from here.
"""
