import json

import torch

from benchmarks.lib.suite import Suite, TINY, run_suite, summary_table


def test_tiny_suite_runs_every_part_and_leaves_json(small_data, tmp_path):
    """The GPU suite end to end at toy sizes on the CPU: every part but the pytest subprocess runs."""
    out = tmp_path / "out"
    suite = Suite(TINY, [out], budget_s=600, device=torch.device("cpu"), data_dir=str(small_data),
                  skip=("cuda_tests",))
    results = run_suite(suite, tmp_path / "work")
    parts = results["parts"]
    assert parts["cuda_tests"]["status"] == "skipped"
    assert {n: p["status"] for n, p in parts.items() if n != "cuda_tests"} == {
        n: "ok" for n in ("step_speed", "v2_train", "v2_default", "backprop", "serving", "philox", "continual_dress",
                          "v2_pretrain_no9", "continual_nine", "v2_default_cosine", "v2_train_wide", "v2_sweep")}
    assert sorted(parts["v2_train"]["test_accuracy_at"]) == [TINY.eval_every, TINY.train_steps]
    default = parts["v2_default"]  # the CLI's defaults: cheap vendors on the head, lr 0.15, probe scale 0.03
    head = int(default["market"].split("x")[-1])
    assert default["market"].startswith("2x2x") and head > 2 and default["asked"] == "2,2,2"
    assert default["settings"]["lr"] == 0.15 and default["steps"] == TINY.train_steps
    assert default["goal"]["reached"]["step"] == TINY.goal_eval_every  # the tiny goal (0%) is met at the first test
    assert parts["v2_default_cosine"]["schedule"] == "cosine"
    assert sorted(parts["v2_sweep"]["runs"]) == ["lr 0.3 constant", "lr 0.3 cosine"]
    assert all(run["steps"] == TINY.train_steps for run in parts["v2_sweep"]["runs"].values())
    variants = [r["variant"] for r in parts["step_speed"]["rows"] if r["name"] == "market V2 step"]
    assert variants == list(TINY.variants)
    saved = json.loads((out / "gpu_suite.json").read_text())
    assert saved["parts"].keys() == parts.keys() and saved["device"]
    assert (out / "gpu_suite.md").read_text().startswith("# GPU suite: ")
    assert "| continual_nine | ok |" in summary_table(results)


def test_parts_that_do_not_fit_the_budget_are_skipped_with_a_reason(tmp_path):
    suite = Suite(TINY, [tmp_path], budget_s=1.0, device=torch.device("cpu"))
    result = suite.part("slow", 30.0, lambda: {"never": "run"})
    assert result["status"] == "skipped" and "needs ~30 s" in result["reason"]
    broken = suite.part("broken", 0.0, lambda: 1 / 0)
    assert broken["status"] == "error" and "ZeroDivisionError" in broken["error"]
    saved = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert saved["parts"]["slow"]["status"] == "skipped"  # written after every part


def test_the_script_refuses_unknown_parts(capsys):
    import importlib.util
    from pathlib import Path

    import pytest

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"
    spec = importlib.util.spec_from_file_location("gpu_suite", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit) as info:
        script.main(["--only", "step_speed,warp_drive", "--device", "cpu"])
    assert info.value.code == 2 and "warp_drive" in capsys.readouterr().err


def test_the_cuda_tests_collect_without_the_packages_the_gpu_machine_lacks(tmp_path):
    """The GPU machine has no FastAPI, httpx, MLflow or platformdirs: a module with CUDA tests must not need them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    modules = sorted(str(p.relative_to(root)) for p in (root / "tests").rglob("test_*.py")
                     if "mark.cuda" in p.read_text())
    assert modules, "no CUDA tests found"
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn', 'httpx', 'mlflow', 'platformdirs'):\n"
        "            raise ImportError('not on the GPU machine: ' + name)\n"
        "sys.meta_path.insert(0, Refuse())\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root / 'src'}"}
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p", "no:cacheprovider", *modules]
    out = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "error" not in out.stdout.lower()
