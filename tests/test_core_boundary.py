"""The lab stays outside the library: no core module imports the experiment or benchmark code."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "marketplace"
RESEARCH = ("experiments", "benchmarks", "marketplace.experiments")


def imported_modules(path: Path) -> list[str]:
    """Absolute names of every module `path` imports, relative imports resolved against its package."""
    package = ["marketplace", *path.parent.relative_to(PACKAGE).parts]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def core_modules() -> list[str]:
    return sorted(".".join(["marketplace", *p.relative_to(PACKAGE).with_suffix("").parts]).removesuffix(".__init__")
                  for p in PACKAGE.rglob("*.py"))


def test_no_core_module_imports_research_code():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        bad = [m for m in imported_modules(path) if m.split(".")[0] in RESEARCH[:2] or m.startswith(RESEARCH[2])]
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    assert not offenders, offenders


def test_the_package_holds_no_research_package():
    assert not (PACKAGE / "experiments").exists()
    assert all(not m.startswith("marketplace.experiments") for m in core_modules())


def test_importing_every_core_module_loads_no_research_code():
    modules = [m for m in core_modules() if m != "marketplace.__main__"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('experiments', 'benchmarks')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=PACKAGE.parents[1])  # the checkout: experiments/ and benchmarks/ would import from here
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_products_count_is_defined_once():
    """P_k (upstream products times vendors) is written in `marketplace.cost.products` only."""
    from marketplace import Market
    from marketplace.cost import products
    from marketplace.models import beautiful_mnist

    market = Market(beautiful_mnist(3), [3, 2, 2], [0, 2, 1])
    assert market.num_products() == list(products([3, 2, 2], [0, 2, 1])) == [3, 4, 2]
    assert [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
            if "upstream = m * (s or upstream)" in p.read_text()] == ["cost.py"]
