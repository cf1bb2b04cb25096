import json

import torch

from benchmarks import poisoning
from tests.helpers import tiny_checkpoint


def test_each_adversary_reports_what_it_claims():
    losses = torch.tensor([0.1, 2.0, 7.0])
    paths = torch.tensor([[0, 1, 1], [1, 0, 0], [2, 2, 1]])
    assert torch.allclose(poisoning.adversarial("inverted", losses, paths), torch.tensor([7.0, 5.1, 0.1]))
    assert poisoning.adversarial("zero", losses, paths).tolist() == [0.0, 0.0, 0.0]
    assert bool(torch.isfinite(poisoning.adversarial("huge", losses, paths)).all())
    assert poisoning.adversarial("targeted", losses, paths).tolist() == [0.0, 10.0, 0.0]


def test_a_tiny_run_writes_every_condition_against_honest_and_off(tmp_path, data_dir):
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    result = poisoning.main(["--checkpoint", str(ckpt), "--requests", "128", "--window", "64", "--test", "32",
                             "--records", "32", "--adversaries", "huge,targeted", "--fractions", "0.3",
                             "--attributions", "zscore", "--out", str(tmp_path / "p")])
    rows = result["conditions"]
    assert [(r["adversary"], r["learning"]) for r in rows] == \
        [("none", False), ("none", True), ("huge", True), ("targeted", True)]
    assert all(r["updates"] > 0 for r in rows[1:]) and rows[0]["updates"] == 0
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["machine"] and "| zscore | huge | 30% |" in (tmp_path / "p.md").read_text()
