"""The fine-tuning study in its tiny form: a row per (task, method), a rerun resumes, a foreign base is refused."""

import json

import pytest
import torch
from torch import nn

from experiments.finetune import main
from experiments.lib.finetune_models import TASKS
from experiments.lib.finetune_report import score


def test_the_tiny_study_writes_a_row_per_task_and_method_and_resumes(small_data, tmp_path, capsys):
    out = tmp_path / "finetune"
    args = ["--tiny", "--data-dir", str(small_data), "--out", str(out)]
    report = main(args)
    expected = [(t, m) for t, task in TASKS.items() for m in task.methods]
    assert [(r["task"], r["method"]) for r in report["runs"]] == expected
    for name in ("finetune.json", "finetune.md", "finetune.png", "README.md", "resnet-base.safetensors",
                 "transformer-base.safetensors"):
        assert (out / name).is_file(), name
    assert (out / "finetune.png").stat().st_size > 1000
    table = (out / "finetune.md").read_text()
    for task, method in expected:
        assert f"| {task} | {method} |" in table
    saved = json.loads((out / "finetune.json").read_text())
    assert saved["machine"] and saved["torch"] and saved["threads"] == 1
    for run in saved["runs"]:
        assert run["curve"][0]["seconds"] == 0 and run["steps"] >= 1 and run["peak_mb"] > run["weights_mb"] > 0
    rank1 = next(r for r in saved["runs"] if (r["task"], r["method"]) == ("transformer-inverted", "v2-rank1"))
    assert rank1["lowrank"][1]["dense_matrices"] == ["self_attn.in_proj_weight", "self_attn.out_proj.weight"]
    assert "OMP_NUM_THREADS=1 uv run python experiments/finetune.py --tiny" in (out / "README.md").read_text()

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    capsys.readouterr()
    again = main(args)
    said = capsys.readouterr().out
    assert "reusing" in said and "read back" in said and "Adam steps," not in said
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps
    assert [r["after"] for r in again["runs"]] == [r["after"] for r in report["runs"]]


def test_a_base_made_with_other_settings_is_refused(small_data, tmp_path, capsys):
    args = ["--tiny", "--tasks", "ten-classes", "--methods", "backprop", "--data-dir", str(small_data),
            "--out", str(tmp_path)]
    main(args)
    with pytest.raises(SystemExit) as e:
        main([*args, "--pretrain-steps", "3"])
    message = str(e.value.code)
    assert message.startswith("error:") and "resnet-base.safetensors" in message and "steps=2, not 3" in message
    assert "\n" not in message


def test_the_score_is_the_share_of_backprops_gain_on_the_same_task():
    rows = [{"task": "a", "method": "backprop", "before": 50.0, "after": 70.0},
            {"task": "a", "method": "v2-dense", "before": 50.0, "after": 55.0},
            {"task": "b", "method": "backprop", "before": 50.0, "after": 49.0},
            {"task": "b", "method": "v2-rank1", "before": 50.0, "after": 52.0}]
    score(rows)
    assert rows[1]["gain"] == 5.0 and rows[1]["fraction_of_backprop_gain"] == 0.25
    assert rows[3]["fraction_of_backprop_gain"] is None  # backprop gained nothing: no share to take


def test_the_rate_decays_geometrically_with_the_seconds_spent_and_a_decayed_run_is_not_read_back_as_constant(
        small_data, tmp_path):
    from experiments.lib.finetune_methods import decayed

    assert decayed(0.0, 0.1) == 1.0 and decayed(1.0, 0.1) == pytest.approx(0.1)
    assert decayed(0.5, 0.01) == pytest.approx(0.1) and decayed(1.7, 0.1) == pytest.approx(0.1)
    args = ["--tiny", "--tasks", "inverted", "--methods", "v2-partial", "--data-dir", str(small_data),
            "--out", str(tmp_path)]
    main([*args, "--lr-decay", "1"])
    with pytest.raises(SystemExit) as e:
        main(args)  # the default decays
    assert "lr_decay=None, not 0.1" in str(e.value.code)
    with pytest.raises(SystemExit):
        main([*args, "--lr-decay", "0"])


@pytest.mark.parametrize("kind", ["resnet", "transformer"])
def test_the_ends_and_tail_markets_add_the_first_layer_and_the_spec_before_the_head(kind):
    from types import SimpleNamespace

    from experiments.lib.finetune_methods import build_method
    from experiments.lib.finetune_models import build_base

    args = SimpleNamespace(vendor_counts=[2, 1, 2, 2], partial_lr=0.3, v2_lr=0.3, probe_scale=0.1, seed=0)
    counts, specs = {}, {}
    for method in ("v2-partial", "v2-ends", "v2-tail"):
        specs[method] = build_base(kind, 0)[1]()
        counts[method] = build_method(method, specs[method], args)[2]["perturbed_parameters"]
    first = next(m for m in specs["v2-ends"][0].modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert all(p.requires_grad for p in first.parameters())
    assert counts["v2-ends"] - counts["v2-partial"] == first.weight.numel()
    before_head = specs["v2-tail"][-2]
    assert all(p.requires_grad for p in before_head.parameters())
    assert counts["v2-tail"] - counts["v2-partial"] == sum(p.numel() for p in before_head.parameters() if p.dim() > 1)


def test_a_rate_per_spec_reaches_the_optimizer_and_a_wrong_count_is_refused():
    from types import SimpleNamespace

    from experiments.finetune import parse
    from experiments.lib.finetune_methods import build_method
    from experiments.lib.finetune_models import build_base

    assert parse(["--partial-lr", "0.3,0.3,0.3,0.15"]).partial_lr == [0.3, 0.3, 0.3, 0.15]
    assert parse(["--partial-lr", "0.2"]).partial_lr == 0.2
    for bad in ("0.3,0.15", "0.3,x,0.3,0.3", "0,0.3,0.3,0.3"):
        with pytest.raises(SystemExit):
            parse(["--partial-lr", bad])
    args = SimpleNamespace(vendor_counts=[2, 2, 2, 2], partial_lr=[0.4, 0.3, 0.2, 0.1], v2_lr=0.3,
                           probe_scale=0.1, seed=0)
    step, market, _ = build_method("v2-partial", build_base("resnet", 0)[1](), args)
    before = [p.detach().clone() for p in market.parameters()]
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    step(x, y, 0.5)
    moved, i = [], 0
    for spec in market.specs:
        params = [p for p in spec.parameters()]
        moved.append(float(torch.cat([(p.detach() - b).flatten() for p, b in
                                      zip(params, before[i:i + len(params)])]).norm()))
        i += len(params)
    assert moved == pytest.approx([0.2, 0.15, 0.1, 0.05], rel=1e-4)  # each spec's rate, times the decay's 0.5


def test_the_resnet_can_be_cut_with_its_stem_alone_and_counts_must_match_the_cut():
    from experiments.finetune import parse
    from experiments.lib.finetune_methods import build_method, run_settings
    from experiments.lib.finetune_models import build_base

    model, specs = build_base("resnet", 0, 5)
    five = specs()
    assert len(five) == 5 and five[0][0] is model[0] and len(five[0]) == 1  # the stem alone, sharing the weights
    assert sum(p.numel() for s in five for p in s.parameters()) == sum(p.numel() for p in model.parameters())
    args = parse(["--tasks", "inverted", "--resnet-specs", "5", "--vendors", "2,1,2,2,16",
                  "--partial-lr", "1.0,0.3,0.3,0.3,0.3"])
    assert args.vendor_counts == [2, 1, 2, 2, 16] and args.partial_lr == [1.0, 0.3, 0.3, 0.3, 0.3]
    assert run_settings("inverted", "v2-partial", {}, args)["resnet_specs"] == 5
    market, extra = build_method("v2-partial", build_base("resnet", 0, 5)[1](), args)[1:]
    block = sum(p.numel() for p in market.specs[1].parameters() if p.requires_grad)
    assert block > 0 and extra["perturbed_parameters"] == sum(
        p.numel() for p in market.parameters() if p.requires_grad) - block  # its one vendor never moves it
    assert "resnet_specs" not in run_settings("inverted", "v2-partial", {}, parse(["--tasks", "inverted"]))
    for bad in (["--resnet-specs", "5"],  # the transformer's tasks too
                ["--tasks", "inverted", "--resnet-specs", "5"],  # four vendor counts for five specs
                ["--tasks", "inverted", "--resnet-specs", "5", "--vendors", "2,1,2,2,16", "--partial-lr", "1,0.3"],
                ["--tasks", "inverted", "--resnet-specs", "6", "--vendors", "2,2,2,2,2,2"],
                ["--partial-adam-lr", "0"], ["--adam-lr", "-1e-3"], ["--pretrain-lr", "fast"]):
        with pytest.raises(SystemExit):
            parse(bad)


def test_adam_over_the_partial_estimate_moves_only_the_partial_numbers_each_by_its_rate():
    from types import SimpleNamespace

    from experiments.finetune import parse, plan
    from experiments.lib.finetune_methods import build_method
    from experiments.lib.finetune_models import build_base

    assert all(m != "v2-partial-adam" for _, m in plan(parse([])))  # a screen: not in the study
    assert plan(parse(["--methods", "v2-partial-adam"])) == [("ten-classes", "v2-partial-adam"),
                                                            ("inverted", "v2-partial-adam")]
    args = SimpleNamespace(vendor_counts=[2, 2, 2, 2], partial_lr=0.3, v2_lr=0.3, probe_scale=0.1, seed=0,
                           estimate_adam_lr=0.01)
    step, market, extra = build_method("v2-partial-adam", build_base("resnet", 0)[1](), args)
    partial = build_method("v2-partial", build_base("resnet", 0)[1](), args)[2]
    assert extra["perturbed_parameters"] == partial["perturbed_parameters"]
    before = {n: p.detach().clone() for n, p in market.named_parameters()}
    step(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), 0.5)
    for name, p in market.named_parameters():
        change = (p.detach() - before[name]).abs()
        if p.requires_grad:  # Adam's first step: every number with a nonzero estimate moves by its rate
            assert change.max() == pytest.approx(0.005, rel=1e-3), name
        else:
            assert change.max() == 0, name


def test_backprop_over_the_partial_numbers_trains_what_the_partial_market_perturbs_and_nothing_else():
    from types import SimpleNamespace

    from experiments.finetune import parse, plan
    from experiments.lib.finetune_methods import build_method, run_settings
    from experiments.lib.finetune_models import build_base

    assert all(m != "backprop-partial" for _, m in plan(parse([])))  # a screen: not in the study
    args = SimpleNamespace(vendor_counts=[2, 2, 2, 2], partial_lr=0.3, v2_lr=0.3, probe_scale=0.1, seed=0,
                           adam_lr=1e-3, batch=4, seconds=1.0, evals=1, test_images=10, threads=1, lr_decay=1.0)
    assert run_settings("inverted", "backprop-partial", {}, args)["trainable"] == "biases, norms and the head"
    args.partial_adam_lr = 0.01  # its own rate, the whole-model backprop keeping --adam-lr
    assert [run_settings("inverted", m, {}, args)["lr"] for m in ("backprop-partial", "backprop")] == [0.01, 1e-3]
    args.partial_adam_lr = None
    step, model, extra = build_method("backprop-partial", build_base("resnet", 0)[1](), args)
    partial = build_method("v2-partial", build_base("resnet", 0)[1](), args)[2]
    assert extra["trained_parameters"] == partial["perturbed_parameters"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and moved == {n for n, p in model.named_parameters() if p.requires_grad}


def test_a_study_of_screens_alone_writes_its_report_and_plot(small_data, tmp_path, capsys):
    out = tmp_path / "screens"
    report = main(["--tiny", "--tasks", "inverted", "--methods", "backprop,backprop-partial,v2-partial-adam",
                   "--partial-adam-lr", "0.003", "--data-dir", str(small_data), "--out", str(out)])
    assert [r["method"] for r in report["runs"]] == ["backprop", "v2-partial-adam", "backprop-partial"]
    assert (out / "finetune.png").stat().st_size > 0 and "backprop-partial" in (out / "finetune.md").read_text()
    text = (out / "finetune.md").read_text()
    assert "backprop-partial: Adam lr 0.003 on the biases, norms and the head only." in text
    assert "Backprop: Adam lr 0.001" in text
