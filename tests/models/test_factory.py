"""A user's model factory named as MODULE:FACTORY or FILE.py:FACTORY."""

import sys

import pytest
from torch import nn

from marketplace.models import ModelError, build_model, canonical_source, split_sequential

FACTORIES = '''
from torch import nn

def specs(input_shape, classes):
    return [nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], 8)), nn.Linear(8, classes)]

def sequential():
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

def with_kwargs(**options):
    return [nn.Linear(options["input_shape"][0], options["classes"])]

def not_modules():
    return [nn.Linear(2, 2), "relu"]

def a_number():
    return 3

def broken():
    raise RuntimeError("out of coffee")

NOT_CALLABLE = 4
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(FACTORIES)
    return path


def test_file_factory_gets_the_shape_and_classes(user_file):
    specs = build_model(f"{user_file}:specs", 2, (1, 6), 3)
    assert [type(s).__name__ for s in specs] == ["Sequential", "Linear"] and specs[1].out_features == 3
    assert build_model(f"{user_file}:with_kwargs", 1, (5,), 4)[0].in_features == 5


def test_module_factory_is_imported_from_the_working_directory(user_file, monkeypatch):
    monkeypatch.chdir(user_file.parent)
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    assert len(build_model("my_models:specs", 2, (1, 6), 3)) == 2
    assert str(user_file.parent) not in sys.path  # added for the import only


def test_sequential_is_cut_by_split(user_file):
    specs = build_model(f"{user_file}:sequential", 2, (6,), 3, split=(2,))
    assert [len(s) for s in specs] == [2, 2]
    assert len(build_model(f"{user_file}:sequential", 1, (6,), 3)) == 1


@pytest.mark.parametrize("source,split,specs,message", [
    ("{f}:sequential", None, 3, "returns one nn.Sequential of 4 layers: give split with 2 layer indices"),
    ("{f}:sequential", (2, 2), 3, "must be increasing layer indices between 1 and 3"),
    ("{f}:sequential", (4,), 2, "must be increasing layer indices"),
    ("{f}:specs", (1,), 2, "split cuts an nn.Sequential, but"),
    ("{f}:not_modules", None, 2, "item 1 is a str, not an nn.Module"),
    ("{f}:a_number", None, 1, "returned a int: a factory returns a non-empty list of nn.Modules"),
    ("{f}:broken", None, 1, "the factory raised RuntimeError: out of coffee"),
    ("{f}:missing", None, 1, "has no 'missing'"),
    ("{f}:NOT_CALLABLE", None, 1, "NOT_CALLABLE is a int, not a function"),
    ("{d}/nope.py:build", None, 1, "no file"),
    ("no_such_module_xyz:build", None, 1, "cannot import no_such_module_xyz"),
])
def test_factory_mistakes_are_one_line(user_file, source, split, specs, message):
    with pytest.raises(ModelError) as info:
        build_model(source.format(f=user_file, d=user_file.parent), specs, (1, 6), 3, split=split)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_canonical_source_makes_file_paths_absolute(user_file, monkeypatch):
    monkeypatch.chdir(user_file.parent)
    assert canonical_source("my_models.py:specs") == f"{user_file}:specs"
    assert canonical_source("pkg.mod:build") == "pkg.mod:build"


def test_split_sequential_keeps_the_modules():
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    first, second = split_sequential(seq, (1,))
    assert first[0] is seq[0] and second[1] is seq[2]
