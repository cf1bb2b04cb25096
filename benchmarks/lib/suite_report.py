"""The GPU suite's short table (printed last) and markdown: one line per part with its headline figures."""

from __future__ import annotations

from .speed import ORIGINAL_MS


def summary_table(results: dict) -> str:
    """The short table printed last: one line per part with its headline figures."""
    lines = ["| part | status | s | figures |", "|---|---|---|---|"]
    for name, r in results["parts"].items():
        lines.append(f"| {name} | {r['status']} | {r.get('seconds', '-')} | {_headline(name, r)} |")
    return "\n".join(lines)


def _headline(name: str, r: dict) -> str:
    if r["status"] == "skipped":
        return r["reason"]
    if r["status"] == "error":
        return r["error"]
    if name == "cuda_tests":
        return r["summary"]
    if name.startswith("step_speed"):
        best: dict[int, dict] = {}
        for row in r["rows"]:
            if row["name"] == "market V2 step" and (row["vendors"] not in best or row["ms"] < best[row["vendors"]]["ms"]):
                best[row["vendors"]] = row
        return "; ".join(f"{m} vendors: fastest {b['variant']} {b['ms']:.2f} ms ({b['ms'] / ORIGINAL_MS:.2f}x of 88 ms)"
                         for m, b in best.items())
    if name == "v2_sweep":
        return f"{r['market']}: " + "; ".join(
            f"{k} {v['test_accuracy_at'][max(v['test_accuracy_at'], key=int)]:.2f}% at {v['steps']}"
            if isinstance(v, dict) else f"{k} {v}" for k, v in r["runs"].items())
    if name.startswith("v2_"):
        acc = ", ".join(f"{k}: {v:.2f}%" for k, v in sorted(r["test_accuracy_at"].items(), key=lambda kv: int(kv[0])))
        head = f"{r['market']} {r['steps']} steps, {r['ms_per_step']:.1f} ms/step; test {acc}"
        if "goal" in r:
            g, hit = r["goal"], r["goal"]["reached"]
            head += (f"; {g['test_accuracy']:g}% at step {hit['step']}, {hit['training_s']:.1f} s training, "
                     f"{hit['wall_s']:.1f} s from launch" if hit else f"; {g['test_accuracy']:g}% not reached")
        return head
    if name == "backprop":
        return "; ".join(f"{a} {v['steps']} steps {v['test_accuracy']:.2f}% {v['ms_per_step']:.1f} ms/step"
                         for a, v in r.items() if isinstance(v, dict))
    if name == "serving":
        return "; ".join(f"batch {b}: iid {v['vs_plain']['iid']:.2f}x, balanced {v['vs_plain']['balanced']:.2f}x of plain"
                         for b, v in r.items() if isinstance(v, dict))
    if name == "philox":
        compiled = f", compiled {r['compiled_ms']:.2f} ms (bit-equal: {r['compiled_equal']})" if "compiled_ms" in r else ""
        return f"{r['values']:,} values ({r['vendors']} vendors): eager {r['eager_ms']:.2f} ms{compiled}"
    if name.startswith("continual"):
        return (f"{r['steps']} of {r['asked_steps']} steps ({r['steps_per_second']:.1f}/s): new {r['val_new_start']:.1f} -> "
                f"{r['val_new_end']:.1f}%, old {r['val_old_start']:.1f} -> {r['val_old_end']:.1f}%")
    return ""


def markdown(results: dict) -> str:
    parts = results["parts"]
    text = (f"# GPU suite: {results['device']}\n\n{results['started']}, torch {results['torch']}, "
            f"size {results['size']}, budget {results['budget_s']:.0f} s, {results.get('elapsed_s', 0)} s used. "
            f"Machine: {results['machine']}.\n\n{summary_table(results)}\n")
    for name in ("step_speed", "step_speed_compiled"):
        if parts.get(name, {}).get("status") == "ok":
            text += f"\n## {name}\n\nbatch {parts[name]['batch']}, depth 3\n\n{parts[name]['table']}\n"
    return text
