"""kill -9 a learning server mid-stream and restart it: every acknowledged record is there exactly once."""

import sqlite3
import threading
import time

import httpx
import torch

from helpers import tiny_checkpoint

from marketplace.serving import Client, ServerError
from marketplace.serving.process import ServerProcess
from marketplace.training import load_checkpoint

K = 4


def stream(url, token, acked, stop):
    """predict 2 inputs, then label them, until stopped or the server dies; acked gets (id, step) replies."""
    g = torch.Generator().manual_seed(0)
    with Client(url, token, timeout=10) as client:
        while not stop.is_set():
            try:
                answer = client.predict(torch.randn(2, 1, 28, 28, generator=g))
                reply = client.feedback(answer.ids, torch.randint(0, 10, (2,), generator=g))
            except (httpx.HTTPError, ServerError):
                return
            acked.append((answer.ids, reply["step"]))


def last_seq(store):
    with sqlite3.connect(store / "store.sqlite3") as db:
        return db.execute("SELECT MAX(seq) FROM records").fetchone()[0]


def stored_feedback(store):
    with sqlite3.connect(store / "store.sqlite3") as db:
        ids = [r[0] for r in db.execute("SELECT request_id FROM records WHERE kind = 'feedback'")]
    return ids


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(tmp_path):
    checkpoint, store = tiny_checkpoint(tmp_path / "tiny.safetensors"), tmp_path / "store"
    args = ("--records", K, "--checkpoint-every", 2, "--batch-window-ms", 1)
    server = ServerProcess(checkpoint, store, *args).start()
    acked, stop = [], threading.Event()
    worker = threading.Thread(target=stream, args=(server.url, server.token, acked, stop))
    worker.start()
    deadline = time.monotonic() + 20
    while len(acked) < 12 and time.monotonic() < deadline:  # at least 6 updates in, then kill while it streams
        time.sleep(0.05)
    server.kill()
    stop.set()
    worker.join(15)
    assert len(acked) >= 12, "the stream made too little progress before the kill"

    again = ServerProcess(checkpoint, store, *args).start()
    try:
        status = httpx.get(f"{again.url}/v1/status").json()
        stored = stored_feedback(store)
        assert len(stored) == len(set(stored))  # no record twice
        assert {i for ids, _ in acked for i in ids} <= set(stored)  # every acknowledged one is there
        assert status["recorded"] + status["stale"] == len(stored)  # and the learner counted each once
        assert status["step"] >= acked[-1][1]

        # A kill at rest: the restarted server has the same step and the same weights, byte for byte.
        with Client(again.url, again.token) as client:
            more = K - 1 - client.status()["records_waiting"]  # one short of an update: no checkpoint has them
            assert more >= 1
            answer = client.predict(torch.zeros(more, 1, 28, 28))
            assert min(answer.ids) > max(stored)  # ids go on; none is reused
            client.feedback(answer.ids, list(range(more)))
            step = client.status()["step"]
            blob = httpx.get(f"{again.url}/v1/weights", headers={"X-Token": again.token}).content
    finally:
        again.kill()
    third = ServerProcess(checkpoint, store, *args).start()
    try:
        status = httpx.get(f"{third.url}/v1/status").json()
        assert status["step"] == step and status["replayed"] >= K - 1  # the waiting records, replayed
        assert httpx.get(f"{third.url}/v1/weights", headers={"X-Token": third.token}).content == blob
    finally:
        third.stop()  # uvicorn shuts down gracefully, then re-raises SIGTERM (exit status -15)
    # SIGTERM checkpointed the learner with every record applied: the next start replays none.
    saved = load_checkpoint(store / "learner.safetensors")
    assert saved.meta["applied_seq"] == last_seq(store) and saved.optimizer["optimizer.steps"] == step
