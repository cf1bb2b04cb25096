"""Tests of marketplace.serving.batcher: concurrent requests become one forward, in order, within the limit."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import torch

from marketplace.serving.batcher import MicroBatcher
from marketplace.serving import Answer


def run_requests(sizes, max_batch, window=0.05):
    forwards = []

    def forward(x):
        forwards.append(x.shape[0])
        return Answer(list(range(x.shape[0])), torch.zeros(x.shape[0], 1, dtype=torch.int64), 0, logits=x * 2)

    async def main():
        batcher = MicroBatcher(forward, ThreadPoolExecutor(1), max_batch, window)
        batcher.start()
        try:
            xs = [torch.full((n, 3), float(i)) for i, n in enumerate(sizes)]
            answers = await asyncio.gather(*(batcher.submit(x) for x in xs), return_exceptions=True)
        finally:
            await batcher.stop()
        return xs, answers

    xs, answers = asyncio.run(main())
    return forwards, xs, answers


def test_concurrent_requests_share_one_forward_and_get_their_own_rows():
    forwards, xs, answers = run_requests([1, 3, 2, 1], max_batch=64)
    assert forwards == [7]
    start = 0
    for x, out in zip(xs, answers):
        assert torch.equal(out.logits, 2 * x) and out.ids == list(range(start, start + len(x)))
        start = (start + len(x)) % forwards[0]


def test_a_full_batch_leaves_the_rest_for_the_next_forward():
    forwards, xs, answers = run_requests([3, 3, 3], max_batch=6)
    assert forwards == [6, 3]
    start = 0
    for x, out in zip(xs, answers):
        assert torch.equal(out.logits, 2 * x) and out.ids == list(range(start, start + len(x)))
        start = (start + len(x)) % forwards[0]


def test_a_failed_forward_fails_its_requests_and_the_batcher_goes_on():
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        if len(calls) == 1:
            raise RuntimeError("boom")
        return Answer(None, torch.zeros(x.shape[0], 1, dtype=torch.int64), 0, logits=x)

    async def main():
        batcher = MicroBatcher(forward, ThreadPoolExecutor(1), 8, 0.05)
        batcher.start()
        try:
            failed = await asyncio.gather(batcher.submit(torch.ones(1, 2)), batcher.submit(torch.ones(1, 2)),
                                          return_exceptions=True)
            later = await batcher.submit(torch.ones(2, 2))
        finally:
            await batcher.stop()
        return failed, later

    failed, out = asyncio.run(main())
    assert [type(e) for e in failed] == [RuntimeError, RuntimeError] and calls == [2, 2]
    assert out.ids is None and torch.equal(out.logits, torch.ones(2, 2))
