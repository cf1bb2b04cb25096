"""The averaging screen: every span scored on one trajectory, the spans' averages as `--average` keeps them."""

import json

from experiments.averaging import main


def test_the_screen_scores_the_base_and_each_span_on_one_trajectory(small_data, tmp_path):
    out = tmp_path / "screen.jsonl"
    main(["--steps", "3", "--every", "2", "--spans", "2,50", "--data-dir", str(small_data), "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3]  # every 2 steps and the last
    assert all({"base", "average2", "average50"} <= set(r) for r in rows)
    assert all(0 <= r[k] <= 100 for r in rows for k in ("base", "average2", "average50"))
