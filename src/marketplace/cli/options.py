"""Each command-line option declared once, its default read from the config dataclass that owns the value.

`option(TrainConfig, "batch", "examples per step")` is `--batch` with
TrainConfig's default, so a default lives only in its config; the options
several commands share (seed, vendors, lr, ...) are made here by one
function each, given the config (or a config instance: a command's own
defaults) they read from. `FLAGS` remembers the flag of each field whose
flag is not `--field-name`, so that `for_cli` can show a library error's
fields as the flags a user typed.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional

import typer

FLAGS: dict[str, str] = {}  # field -> its flag, where that is not --field-name (per_spec -> --unit)


def flag(field: str) -> str:
    """The flag that sets `field`: `probe_scale` -> `--probe-scale`."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def default(config: Any, field: str) -> Any:
    """`field`'s default in `config`: a dataclass (its declared default) or an instance (its value)."""
    if isinstance(config, type):
        declared = {f.name: f for f in dataclasses.fields(config)}[field]
        return declared.default_factory() if declared.default is dataclasses.MISSING else declared.default
    return getattr(config, field)


def option(config: Any, field: str, help: str | None = None, *flags: str,
           show: Optional[Callable[[Any], Any]] = None, **kwargs: Any) -> Any:
    """A typer Option for `config`'s `field`, its default read from the config.

    flags: as typer takes them (default: --field-name). show: the field's
    value as the option spells it (`(4, 4, 4)` -> `"4,4,4"`).
    """
    if flags and flags[0].split("/")[0] != "--" + field.replace("_", "-"):
        FLAGS[field] = flags[0].split("/")[0]
    value = default(config, field)
    return typer.Option(show(value) if show else value, *flags, help=help, **kwargs)


def for_cli(error: Exception) -> str:
    """An error's message with each field it names (`error.fields`) shown as its flag.

    Only a field's first mention, where the library puts it: what follows may quote a user's text.
    """
    message = str(error)
    for field in getattr(error, "fields", ()):
        # the word alone: not inside another name, a path or a quoted value
        message = re.sub(rf"(?<![\w\-/.:'\"~]){re.escape(field)}(?![\w\-/:'\"]|\.\w)", flag(field), message, count=1)
    return message


# -- values as the command line spells them ---------------------------------------------------------------------

def join(values) -> str | None:
    """(4, 4, 4) -> "4,4,4"; None stays None."""
    return None if values is None else ",".join(str(v) for v in values)


def unit_of(per_spec: bool) -> str:
    """TrainConfig.per_spec as --unit spells it."""
    return "spec" if per_spec else "model"


# -- the options several commands share ------------------------------------------------------------------------

def seed(config, help: str = "seeds the model, the batches and every vendor"):
    return option(config, "seed", help)


def vendors(config, help: str = "vendors per spec, e.g. 4,4,4"):
    return option(config, "vendors", help, show=join)


def lr(config, help: str = "learning rate"):
    return option(config, "lr", help)


def probe_scale(config, help: str = "vendors probe at lr * probe_scale"):
    return option(config, "probe_scale", help)


def unit(config, help: str = "unit vector per 'spec' or over the whole 'model'"):
    """--unit: TrainConfig keeps it as per_spec, the continual and serving configs as the word."""
    if "per_spec" in {f.name for f in dataclasses.fields(config)}:
        return option(config, "per_spec", help, "--unit", show=unit_of)
    return option(config, "unit", help)


def attribution(config, help: str = "how a step's losses are scored: zscore (V2) or rank (centred ranks)"):
    return option(config, "attribution", help)


def batch(config, help: str = "examples per step"):
    return option(config, "batch", help)


def steps(config, help: str = "stop after this many steps"):
    return option(config, "steps", help)


def max_seconds(config, help: str = "stop after this much wall time"):
    return option(config, "max_seconds", help)


def dataset(config, help: str = "mnist, fashion-mnist or cifar10 (see --data for your own)"):
    return option(config, "dataset", help)


def decay(config, help: str = "lr <- lr * (1 - decay) every step"):
    return option(config, "decay", help)


def device(config, help: str = "auto (CUDA if present), cpu, cuda, cuda:1, ..."):
    return option(config, "device", help)


def data_dir(config, help: str = "directory with the IDX files (else $MARKETPLACE_DATA_DIR, the cache, a download)"):
    return option(config, "data_dir", help)


def eval_every(config, help: str = "steps between test evaluations (base weights, or their --average)"):
    return option(config, "eval_every", help)


def eval_samples(config, help: str = "test examples used by the evaluations during training (the final one uses all)"):
    return option(config, "eval_samples", help)


def checkpoint_every(config, help: str = "steps between checkpoints"):
    return option(config, "checkpoint_every", help)


def resume(config, help: str = "continue from --checkpoint if it exists"):
    return option(config, "resume", help)


def records(config, help: str = "K, records per update"):
    return option(config, "records", help)


def balanced(config, help: str, *flags: str):
    return option(config, "balanced", help, *flags)


def baseline(config, help: str = "learn from each path's loss minus the base weights' loss"):
    return option(config, "baseline", help)


def mirrored(config, help: str = "learn from half the difference between each path's loss and its mirror's "
                                  "(every delta negated): one more forward, like --baseline"):
    return option(config, "mirrored", help)


# -- how a command reports: options of the command, not of a config --------------------------------------------

def log(help: str = "append a JSON line per logged step to this file"):
    return typer.Option(None, help=help)


def json_out(help: str = "print one final JSON line with the results"):
    return typer.Option(False, "--json", help=help)


def quiet(help: str = "no progress bar"):
    return typer.Option(False, help=help)
