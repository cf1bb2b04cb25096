"""Tests of marketplace.serving.store: served rows, the record log, its order, reopening."""

import torch

from marketplace.serving import Store


def test_served_rows_keep_step_path_and_logits_and_ids_continue_after_reopen(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    paths, logits = torch.tensor([[0, 1], [1, 0], [1, 1]]), torch.randn(3, 4)
    assert store.add_served(5, paths, logits) == [0, 1, 2]
    rows = store.served([2, 0, 99])
    assert set(rows) == {0, 2}
    assert rows[2].step == 5 and torch.equal(rows[2].path, paths[2]) and torch.equal(rows[2].logits, logits[2])
    store.close()
    again = Store(tmp_path / "s.sqlite3")  # what a restarted server sees
    assert again.add_served(6, paths[:1], logits[:1]) == [3]
    assert again.next_id == 4


def test_records_come_back_in_the_order_they_were_acknowledged_and_feedback_is_unique(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    first = store.add_records("feedback", [0, 0], torch.tensor([[0, 1], [1, 1]]), torch.tensor([0.5, 1.5]),
                              request_ids=[7, 3], labels=[1, 2])
    second = store.add_records("report", [1], torch.tensor([[1, 0]]), torch.tensor([0.25]))
    assert first[0] < first[1] < second[0] == store.last_seq()
    records = list(store.records_after(first[0]))
    assert [(r.step, r.loss) for r in records] == [(0, 1.5), (1, 0.25)]
    assert torch.equal(records[1].path, torch.tensor([1, 0]))
    assert store.labelled([3, 4, 7]) == {3, 7}
    assert store.counts() == {"served": 0, "feedback": 2, "report": 1}
    try:
        store.add_records("feedback", [0], torch.tensor([[0, 0]]), torch.tensor([1.0]), request_ids=[7], labels=[0])
        raise AssertionError("a second feedback for request 7 was stored")
    except Exception as e:  # sqlite3.IntegrityError: the UNIQUE column refuses it
        assert "UNIQUE" in str(e)
    assert store.counts()["feedback"] == 2  # the refused transaction left nothing behind


def test_base_logits_are_kept_and_a_store_without_their_column_gains_it(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "old.sqlite3")  # the served table as version 0.2.0 wrote it
    old.execute("CREATE TABLE served (id INTEGER PRIMARY KEY, step INTEGER NOT NULL, path BLOB NOT NULL, "
                "logits BLOB NOT NULL)")
    old.execute("INSERT INTO served VALUES (0, 0, ?, ?)", (bytes(8), torch.zeros(3).numpy().tobytes()))
    old.commit()
    old.close()
    store = Store(tmp_path / "old.sqlite3")
    paths, logits, base = torch.tensor([[1, 0]]), torch.randn(1, 3), torch.randn(1, 3)
    assert store.add_served(1, paths, logits, base) == [1]
    rows = store.served([0, 1])
    assert rows[0].base is None and torch.equal(rows[1].base, base[0]) and torch.equal(rows[1].logits, logits[0])


def test_pruning_forgets_superseded_steps_and_the_oldest_rows_and_ids_never_repeat(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.add_served(0, torch.zeros(3, 2, dtype=torch.int64), torch.randn(3, 4))
    store.add_served(1, torch.zeros(2, 2, dtype=torch.int64), torch.randn(2, 4))
    assert store.prune_served(step=1, keep=10) == 3  # step 0 is superseded
    assert set(store.served(range(5))) == {3, 4} and store.pruned_through == 2 and store.kept == 2
    assert store.prune_served(step=2, keep=10) == 2  # nothing served at step 2 yet: every row is superseded
    assert store.prune_served(step=2, keep=10) == 0
    store.close()
    again = Store(tmp_path / "s.sqlite3")
    assert (again.next_id, again.pruned_through, again.classes, again.counts()["served"]) == (5, 4, 4, 0)
    assert again.add_served(2, torch.zeros(5, 2, dtype=torch.int64), torch.randn(5, 4)) == [5, 6, 7, 8, 9]
    assert again.prune_served(step=2, keep=2) == 3  # the current step, but beyond the limit: the oldest go
    assert set(again.served(range(10))) == {8, 9}


def test_records_name_their_client_and_a_store_from_before_clients_gains_the_column(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "old.sqlite3")  # the records table as stores before clients wrote it
    old.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
                "request_id INTEGER UNIQUE, step INTEGER NOT NULL, path BLOB NOT NULL, loss REAL NOT NULL, "
                "label INTEGER, time REAL NOT NULL)")
    old.execute("INSERT INTO records (kind, request_id, step, path, loss, label, time) VALUES "
                "('feedback', 4, 0, ?, 0.5, 1, 0.0)", (bytes(8),))
    old.commit()
    old.close()
    store = Store(tmp_path / "old.sqlite3")
    assert store.counts_by_client() == {None: {"feedback": 1, "report": 0}}
    store.add_records("report", [0, 0], torch.zeros(2, 2, dtype=torch.int64), torch.tensor([1.0, 2.0]), client="alice")
    store.add_records("feedback", [0], torch.zeros(1, 2, dtype=torch.int64), torch.tensor([1.0]), request_ids=[5],
                      labels=[0], client="bob")
    assert [(r.seq, r.loss) for r in store.records_after(0)] == [(1, 0.5), (2, 1.0), (3, 2.0), (4, 1.0)]
    store.close()
    again = Store(tmp_path / "old.sqlite3")  # the counts are the log's, not memory's
    assert again.counts_by_client() == {None: {"feedback": 1, "report": 0}, "alice": {"feedback": 0, "report": 2},
                                        "bob": {"feedback": 1, "report": 0}}
    assert again.counts() == {"served": 0, "feedback": 2, "report": 2}
