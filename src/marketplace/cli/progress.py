"""Progress of a command's long work on stderr: a rich bar on a terminal, plain lines elsewhere.

rich draws nothing into a pipe or a captured stream until the end, so off a
terminal each step (at most one every `every` seconds, and the last) is a
line of its own; stdout stays for the command's result.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress(label: str, total: int, console: Console | None = None,
             every: float = 5.0) -> Iterator[Callable[[], None]]:
    """`with progress("align: batch", 8) as tick:` then `tick()` as each of the 8 parts begins."""
    console = console or Console(stderr=True)
    if console.is_terminal:
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=console, transient=True)
        task = bar.add_task(label, total=total)
        begun = [False]

        def tick() -> None:  # a part begins: the one before it is done
            if begun[0]:
                bar.advance(task)
            begun[0] = True

        with bar:
            yield tick
        return
    start, said, count = time.monotonic(), [float("-inf")], [0]

    def tick() -> None:
        count[0] += 1
        now = time.monotonic()
        if now - said[0] >= every or count[0] == total:
            said[0] = now
            console.print(f"{label} {count[0]}/{total} ({now - start:.0f} s)", highlight=False, soft_wrap=True)

    yield tick
