"""Micro-batching: concurrent predict requests become one batched random-path forward.

Requests wait in a queue; the batcher takes the first, then whatever
arrives within `window` seconds (or is already waiting) up to `max_batch`
inputs, runs them as one forward on the engine thread, and hands each
request its rows. While a forward runs, new requests queue up, so under
load the batches fill without waiting for the window.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable

import torch

from .answer import Answer


class MicroBatcher:
    """run: the batched forward (inputs [B, ...] -> an `Answer` for the B rows); each request gets its rows."""

    def __init__(self, run: Callable[[torch.Tensor], Answer], executor: Executor, max_batch: int,
                 window: float, on_batch: Callable[[int], None] = lambda n: None):
        self.run, self.executor = run, executor
        self.max_batch, self.window, self.on_batch = max_batch, window, on_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def submit(self, x: torch.Tensor) -> Answer:
        """Wait for the answer to x: its rows of a batched forward."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((x, future))
        return await future

    async def _collect(self, carried=None) -> tuple[list, object]:
        """The next batch of queued requests; a request that would overflow it is carried to the next."""
        loop = asyncio.get_running_loop()
        first = carried if carried is not None else await self.queue.get()
        items, size, carry = [first], first[0].shape[0], None
        deadline = loop.time() + self.window
        while size < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if size + item[0].shape[0] > self.max_batch:
                carry = item
                break
            items.append(item)
            size += item[0].shape[0]
        return items, carry

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry = None
        while True:
            items, carry = await self._collect(carry)
            items = [(x, f) for x, f in items if not f.cancelled()]
            if not items:
                continue
            batch = torch.cat([x for x, _ in items]) if len(items) > 1 else items[0][0]
            self.on_batch(batch.shape[0])
            try:
                result = await loop.run_in_executor(self.executor, self.run, batch)
            except Exception as e:  # the requests fail alike; the batcher goes on
                for _, f in items:
                    if not f.done():
                        f.set_exception(e)
                continue
            start = 0
            for x, f in items:
                if not f.done():
                    f.set_result(result[start:start + x.shape[0]])
                start += x.shape[0]
