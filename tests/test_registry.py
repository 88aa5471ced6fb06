"""The method registry is the one list of methods: help, errors, pipeline validation, the test
matrix and the bench tables all read it, so adding a method is one file and one registry line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from erase.cli import main
from erase.methods import REGISTRY, Method

ROOT = Path(__file__).resolve().parent.parent


def test_no_hand_kept_list_of_method_names_outside_the_registry():
    names = sorted(REGISTRY, key=len, reverse=True)
    word = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])")
    offenders = []
    for path in [*ROOT.glob("erase/**/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("tests/*.py")]:
        if path.is_relative_to(ROOT / "erase/methods"):
            continue
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if len(set(word.findall(line))) >= 3:
                offenders.append(f"{path.relative_to(ROOT)}:{k}: {line.strip()}")
    assert not offenders, "method names listed by hand (read erase.methods instead):\n" + "\n".join(offenders)


@pytest.fixture
def dummy(monkeypatch):
    """One registry line for a method file that lives in tests/."""
    monkeypatch.setitem(REGISTRY, "dummy", Method("dummy", "tests.dummy_method"))
    return REGISTRY["dummy"]


def test_a_registered_method_shows_in_help(dummy, capsys):
    with pytest.raises(SystemExit):
        main(["concept", "--help"])
    assert "dummy" in capsys.readouterr().out


def test_a_registered_method_passes_pipeline_validation(dummy, tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text("name: p\nstages:\n  - erase: {concept: red, method: dummy, set: {shrink: 0.1}}\n")
    assert main(["run", str(f), "--validate"]) == 0, capsys.readouterr().err
    f.write_text("name: p\nstages:\n  - erase: {concept: red, method: dummy, set: {grow: 1}}\n")
    assert main(["run", str(f), "--validate"]) == 2
    assert "dummy has no setting 'grow'" in capsys.readouterr().err


def test_a_registered_method_runs_through_the_test_matrix(dummy):
    from tests import test_methods

    assert "dummy" in test_methods.one_per_file()
    test_methods.test_method_changes_only_its_parameters_and_stays_finite("dummy", "sd1")
    test_methods.test_fixed_seed_gives_identical_weights("dummy")


def test_a_method_of_the_other_kind_is_refused_with_the_registry_list(capsys, tmp_path):
    from erase.methods import names

    assert (
        main(["untrain", "--forget", "toy:color=red:n=4", "--method", "uce", "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert "use `erase concept`" in err and ", ".join(names("untraining")) in err
