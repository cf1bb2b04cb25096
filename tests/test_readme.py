"""The README: short, self-contained, and its library example runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_is_a_front_door():
    assert len(README.splitlines()) <= 200
    assert "../shared" not in README and "ALGORITHM.md" not in README
    assert "uv run pytest" in README
    assert "uv run marketplace train --vendors 4,4,4 --batch 128 --max-seconds 600 --device cpu" in README


def test_the_readme_example_trains(data_dir, monkeypatch, capsys):
    """The README's one Python block, run as written but for 5 steps instead of 300."""
    blocks = python_blocks(README)
    assert len(blocks) == 1, "the README holds one library example"
    code = blocks[0]
    assert "range(300)" in code
    monkeypatch.setenv("MARKETPLACE_DATA_DIR", str(data_dir))  # load_split finds the data without downloading
    exec(compile(code.replace("range(300)", "range(5)"), "README.md", "exec"), {"__name__": "readme"})
    accuracy = re.search(r"train accuracy ([\d.]+)%", capsys.readouterr().out)
    assert accuracy and 0.0 <= float(accuracy.group(1)) <= 100.0
