"""The ResNet experiment in a tiny form: three runs, equal steps and equal time, a table and a plot."""

import json

from experiments.lib.resnet import main


def test_resnet_experiment_writes_its_results(small_data, tmp_path):
    out = tmp_path / "resnet"
    results = main(["--dataset", "mnist", "--data-dir", str(small_data), "--vendors", "2,2,2,2", "--steps", "2",
                    "--batch", "4", "--eval-every", "1", "--late-eval-every", "1", "--eval-samples", "20",
                    "--max-backprop-steps", "4", "--out", str(out)])
    names = [r["run"] for r in results["runs"]]
    assert names == ["v2-2x2x2x2", "sgd", "adam"]
    v2_seconds = results["runs"][0]["end"]["seconds"]
    for run in results["runs"][1:]:
        assert run["equal_steps"]["step"] == 2
        assert run["end"]["seconds"] >= v2_seconds or run["end"]["step"] == 4  # ran to V2's time or the cap
    assert json.loads((out / "resnet.json").read_text())["machine"]
    table = (out / "resnet.md").read_text()
    assert "shared" in table and "| sgd at V2's wall time |" in table
    assert (out / "resnet.png").stat().st_size > 1000
    assert len((out / "v2.jsonl").read_text().splitlines()) == 2
