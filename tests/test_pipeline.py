"""Pipeline files, `erase run`, the audit grid and the report, as a user meets them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from erase.cli import main

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "pipelines").glob("**/*.yaml"))

# A whole pipeline in seconds: UCE is closed form, and every image is drawn in 2 sampling steps.
TINY = """
name: tiny
concepts: toy
judge: toy
stages:
  - load: {model: toy}
  - erase: {concept: red, method: uce, anchor: "a blue {shape}"}
  - score: {seeds: "1000", steps: 2}
  - relearn:
      optimizers: {sgd: [0.03], adam: [0.001]}
      steps: 2
      eval_every: 1
      seeds: [0]
      examples: 2
      eval_seeds: "1000"
      other_seeds: "1000"
      eval_steps: 2
      oracle: none         # mechanics; the calibration has its own test (test_relearn_toy.py)
  - audit: {seeds: "1000", steps: 2, erased_prompts: 2, neighbours: 1, unrelated: 1}
  - report: {title: tiny report}
"""


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_pipeline_validates(path, capsys):
    assert main(["run", str(path), "--validate"]) == 0, capsys.readouterr().err
    assert "valid" in capsys.readouterr().out


def test_shipped_pipelines_cover_the_toy_world_and_real_models():
    names = {p.stem for p in SHIPPED}
    assert {"toy-demo", "toy-shape", "toy-style", "toy-untrain", "toy-study"} <= names
    assert {"sd-esd-artist", "sd-uce-imagenette", "sd-ca", "sd-salun-imagenette"} <= names


BAD = [
    ("name: x\nstages: [erase: {concept: red}\n", "not valid YAML"),
    ("name: x\nstages:\n  - erase: {concept: red}\n  - polish: {}\n", "unknown stage 'polish'"),
    ("name: x\nstages:\n  - relearn: {steps: 5}\n", "needs an erase, untrain or use stage before it"),
    (
        "name: x\nstages:\n  - use: {run: no/such/run}\n  - relearn: {}\n",
        "stages[0].use.run: delta no/such/run does not exist",
    ),
    (
        "name: x\nstages:\n  - use: {run: erase/toy/oracles/color=red}\n  - score: {}\n",
        "a used edit was scored when it was made",
    ),
    ("name: x\nstages:\n  - erase: {concept: red, steps: ten}\n", "stages[0].erase.steps"),
    ("name: x\nconcepts: prompts/nope.yaml\nstages:\n  - erase: {concept: red}\n", "concepts:"),
    ("name: x\nstages:\n  - erase: {concept: red, method: esd-z}\n", "stages[0].erase.method"),
    ("name: x\nstages:\n  - erase: {concept: red, method: ga}\n", "(untraining) method"),
    ("name: x\nstages:\n  - erase: {concept: red, colour: 3}\n", "is not a field here"),
    ("name: x\nstages:\n  - erase: {concept: purple}\n", "'purple' is not in"),
    (
        "name: x\nstages:\n  - erase: {concept: red}\n  - relearn: {optimizers: {rmsprop: [1]}}\n",
        "optimizers",
    ),
    ("stages:\n  - erase: {concept: red}\n", "name: is required"),
    ("- just a list\n", "a YAML mapping"),
    (
        "name: x\nstages:\n  - erase: {concept: red}\n  - report: {}\n  - audit: {}\n",
        "must be the last stage",
    ),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m for _, m in BAD])
def test_bad_pipeline_is_one_line_naming_file_and_field(text, message, tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    out = tmp_path / "run"
    assert main(["run", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("erase: error:"), err
    assert str(f) in err and message in err, err
    assert not out.exists()


def test_a_study_run_refers_to_an_earlier_run_by_name(tmp_path):
    """``lrs_from: run:NAME`` and ``oracle: run:NAME`` are that run's relearning folder in the study,
    an attack's ``calibration: run:NAME`` its attack folder."""
    from erase.pipeline import load_pipeline_file, plan

    f = tmp_path / "p.yaml"
    f.write_text(
        "name: x\nstages:\n  - use: {run: erase/toy/oracles/color=red}\n"
        "  - relearn: {optimizers: {sgd: []}, lrs_from: 'run:sweep', oracle: 'run:calib', seeds: [0]}\n"
    )
    steps = dict(plan(load_pipeline_file(f), tmp_path / "study" / "x"))
    job = steps["relearn"]
    assert job.lrs_from == str(tmp_path / "study" / "sweep" / "relearn")
    assert job.oracle == str(tmp_path / "study" / "calib" / "relearn")
    assert job.run == "erase/toy/oracles/color=red" and job.concept == "red"
    f.write_text(
        "name: x\nstages:\n  - use: {run: erase/toy/oracles/color=red}\n"
        "  - attack: {attack: [plain], calibration: 'run:calib'}\n"
    )
    job = dict(plan(load_pipeline_file(f), tmp_path / "study" / "x"))["attack"]
    assert job.calibration == tmp_path / "study" / "calib" / "attack"


def test_missing_pipeline_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    f = root / "tiny.yaml"
    f.write_text(TINY)
    out = root / "run"
    assert main(["run", str(f), "--out", str(out)]) == 0
    return f, out


def test_run_writes_every_stage_and_the_report(tiny_run):
    _f, out = tiny_run
    state = json.loads((out / "pipeline.json").read_text())
    assert state["status"] == "done"
    assert [s["name"] for s in state["stages"]] == ["load", "erase", "score", "relearn", "audit", "report"]
    assert all(s["status"] == "done" for s in state["stages"])
    for rel in [
        "erase/delta.safetensors",
        "erase/record.json",
        "relearn/relearn.json",
        "relearn/relearn.png",
        "relearn/relearned-sgd-lr0.03.safetensors",
        "relearn/relearned-adam-lr0.001.safetensors",
        "audit/audit.png",
        "audit/audit.json",
        "report.html",
        "report.md",
    ]:
        assert (out / rel).is_file(), rel
    record = json.loads((out / "erase/record.json").read_text())
    # Each stage's record names the command that reruns it alone, not `erase run`.
    assert record["argv"][:2] == ["concept", "red"]
    assert record["results"]["before"]["settings"]["seeds"] == [1000]
    audit = json.loads((out / "audit/audit.json").read_text())
    labels = [c["label"] for c in audit["config"]["columns"]]
    assert labels[:2] == ["base", "erased (uce)"] and len(labels) == 4
    html = (out / "report.html").read_text()
    for heading in [
        "What was done",
        "Before and after",
        "Audit grid",
        "Relearning attack",
        "Reproducibility",
    ]:
        assert heading in html
    assert "declared kind: unlearning" in html.lower()
    assert html.count("data:image/png;base64,") == 2  # self-contained: grid and curves embedded
    md = (out / "report.md").read_text()
    assert "](audit/audit.png)" in md and "](relearn/relearn.png)" in md


def test_finished_run_needs_overwrite_and_resume_skips_done_stages(tiny_run, tmp_path, capsys, monkeypatch):
    f, out = tiny_run
    assert main(["run", str(f), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err

    # A crash in the audit stage: the stages before it stay done, the run says where it failed.
    run = tmp_path / "run"
    shutil.copytree(out, run)
    shutil.rmtree(run / "audit")
    state = json.loads((run / "pipeline.json").read_text())
    for s in state["stages"][4:]:
        s["status"] = "pending"
    state["status"] = "failed"
    (run / "pipeline.json").write_text(json.dumps(state))
    erase_record = (run / "erase/record.json").stat().st_mtime_ns
    assert main(["run", str(f), "--out", str(run)]) == 2  # neither --resume nor --overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["run", str(f), "--out", str(run), "--resume"]) == 0
    said = capsys.readouterr().out
    assert "== erase: done in an earlier run, skipped" in said and "== audit: erase audit" in said
    assert (run / "erase/record.json").stat().st_mtime_ns == erase_record
    assert json.loads((run / "pipeline.json").read_text())["status"] == "done"


def test_a_failing_stage_is_recorded(tmp_path, capsys, monkeypatch):
    import erase.jobs as jobs
    from erase.errors import EraseError

    f = tmp_path / "p.yaml"
    f.write_text(TINY.replace("  - score:", "  - score:").split("  - relearn:")[0])
    out = tmp_path / "run"

    def broken(cfg):
        raise EraseError("the disk is full")

    monkeypatch.setitem(jobs.JOBS, jobs.ConceptJob, broken)
    assert main(["run", str(f), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "erase: error: the disk is full"
    state = json.loads((out / "pipeline.json").read_text())
    assert state["status"] == "failed" and state["reason"] == "stage erase: the disk is full"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="needs Chromium (.ci/run installs Debian's chromium)")
def test_report_renders_with_grid_and_plots_in_a_browser(tiny_run, tmp_path):
    """Open report.html as a reviewer would and look at the screenshot where the figures are."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    _, out = tiny_run
    shot = tmp_path / "report.png"
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
    ]
    flags += ["--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=flags)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((out / "report.html").resolve().as_uri())
        loaded = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        boxes = {alt: page.locator(f"img[alt='{alt}']").bounding_box() for alt, _ in loaded}
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert dict(loaded) == {"audit grid": True, "relearning curves": True}
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    for alt, box in boxes.items():
        assert box["width"] > 400 and box["height"] > 150, (alt, box)
        x, y, w, h = (int(box[k]) for k in ("x", "y", "width", "height"))
        crop = img[y : y + h, x : x + w]
        assert crop.std() > 20, f"{alt} is blank in the screenshot"
        # Both figures hold saturated colour (drawn shapes, coloured curves), not just text on white.
        saturation = crop.max(-1) - crop.min(-1)
        assert (saturation > 100).mean() > 0.002, f"{alt} shows no colour in the screenshot"


def test_audit_keeps_weights_reuses_cache_and_uses_the_same_seeds(toy_pipe, toy_judge, toy_book, tmp_path):
    from erase.audit import Column, audit, audit_rows, cached_generate
    from erase.generate import generate
    from erase.models import model_fingerprint
    from erase.unlearn import concept_inputs, run_method, write_delta

    target = toy_book.get("red")
    rows = audit_rows(toy_book, target, n_erased=2, n_neighbours=1, n_unrelated=1)
    assert [r.role for r in rows] == ["erased", "erased", "neighbour", "unrelated"]
    assert all(r.prompt in target.heldout for r in rows[:2])
    assert "red" not in rows[3].prompt.split() and rows[3].concept.group.name != "color"

    # An erasure as a delta, then the base restored: the audit must put it on and take it off.
    before = {k: v.clone() for k, v in toy_pipe.unet.state_dict().items()}
    inputs = concept_inputs(target, [toy_book.get("green")], "a blue {shape}")
    outcome = run_method(toy_pipe, "uce", inputs, progress=False)
    delta = tmp_path / "delta.safetensors"
    write_delta(delta, toy_pipe, outcome, base_spec="toy", seed=0)
    toy_pipe.unet.load_state_dict(before)

    fp = model_fingerprint("toy")
    cols = [Column("base", None), Column("uce", delta)]
    kw = dict(base_fingerprint=fp, steps=2, cache=tmp_path / "cache", progress=False)
    first = audit(toy_pipe, toy_judge, rows, cols, [1000, 1001], **kw)
    assert first["drawn"] == 2 * 4 * 2 and first["cached"] == 0
    assert all(torch.equal(v, before[k]) for k, v in toy_pipe.unet.state_dict().items())
    second = audit(toy_pipe, toy_judge, rows, cols, [1000, 1001], **kw)
    assert second["drawn"] == 0 and second["cells"] == first["cells"]
    # Cached base images are the images generate() draws for the same prompt and seed.
    fresh = generate(toy_pipe, [rows[0].prompt], [1001], steps=2, progress=False)[0]
    assert np.array_equal(np.asarray(fresh), np.asarray(second["images"][(0, 0)][1]))
    # The erased column differs from the base on the erased rows (same seeds, other weights).
    assert not np.array_equal(np.asarray(first["images"][(0, 0)][0]), np.asarray(first["images"][(0, 1)][0]))
    _ims, n = cached_generate(
        toy_pipe, [rows[0].prompt], [1000], fingerprint=fp, steps=3, guidance=7.5, cache=kw["cache"]
    )
    assert n == 1  # other sampling settings are another cache entry


def test_main_command_is_the_demo_pipeline():
    readme = (ROOT / "README.md").read_text()
    assert "erase run pipelines/toy-demo.yaml" in readme


def test_python_module_entry_runs(tmp_path):
    res = subprocess.run(
        ["python", "-m", "erase", "run", str(ROOT / "pipelines/toy-demo.yaml"), "--validate"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr


def test_a_study_runs_its_pipelines_and_sums_them_up(tmp_path, capsys):
    (tmp_path / "erase.yaml").write_text(
        "name: uce-red\nstages:\n  - erase: {concept: red, method: uce, anchor: 'a blue {shape}'}\n"
        "  - score: {seeds: '1000', steps: 2}\n  - report: {}\n"
    )
    (tmp_path / "s003.yaml").write_text("name: s003\nstages:\n  - seed003: {forget: [[30, 10], [80, 10]]}\n")
    study = tmp_path / "study.yaml"
    study.write_text("name: mini-study\nruns: [erase.yaml, s003.yaml]\n")
    out = tmp_path / "run"
    assert main(["run", str(study), "--out", str(out)]) == 0
    md = (out / "study.md").read_text()
    assert "| uce-red | uce | unlearning | red |" in md
    assert "[-0.3574, 0.2039]" in md and "diverged" in md
    assert "[uce-red](uce-red/report.html)" in md
    rows = json.loads((out / "study.json").read_text())
    assert rows[0]["method"] == "uce" and rows[1]["seed003"][0]["ratio"] > 20
    assert json.loads((out / "pipeline.json").read_text())["status"] == "done"
    # A study of a study, or a missing run file, is refused before anything runs.
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nruns: [study.yaml]\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "is itself a study" in capsys.readouterr().err
    bad.write_text("name: b\nruns: [nope.yaml]\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "runs[0]: pipeline file" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_set_overrides_a_stage_field_in_every_run_of_a_study(tmp_path, capsys):
    """``erase run STUDY --set attack.seed=1``: the same study again with another attack seed, every
    attack stage of every run changed, the override in pipeline.json; a stage or field no run takes
    is refused before anything runs."""
    from erase.pipeline import load_pipeline_file, plan

    study = load_pipeline_file(ROOT / "pipelines" / "toy-robustness.yaml")
    study.override({"attack.seed": 1})
    seeds = [dict(plan(sub, tmp_path / sub.head.name))["attack"].seed for sub in study.runs]
    assert seeds == [1] * len(study.runs)
    assert (
        dict(plan(study.runs[1], tmp_path / "x"))["attack"].calibration.parent.name == "018-robust-uce-cross"
    )

    f = tmp_path / "s003.yaml"
    f.write_text("name: s003\nstages:\n  - seed003: {}\n")
    out = tmp_path / "run"
    assert main(["run", str(f), "--out", str(out), "--set", "seed003.forget=[[30, 10]]"]) == 0
    state = json.loads((out / "pipeline.json").read_text())
    assert state["set"] == {"seed003.forget": [[30, 10]]}
    assert len(json.loads((out / "seed003" / "record.json").read_text())["results"]) == 1
    for bad, message in [
        ("attack.seed=1", "has no attack stage"),
        ("seed003.sede=1", "has no field 'sede'"),
        ("seed=1", "name a stage and one of its fields"),
        ("seed003.out=x", "has no field 'out'"),  # the pipeline fills it in
    ]:
        assert main(["run", str(f), "--out", str(tmp_path / "b"), "--set", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
        assert not (tmp_path / "b").exists()


def test_a_resumed_pipeline_resumes_the_stage_it_cut_off():
    """``erase run FILE --resume`` passes --resume to the stage jobs, so a stage killed mid-way goes
    on from its checkpoints instead of refusing its own partial folder."""
    from erase import jobs
    from erase.pipeline import UseStage, _resumed

    assert _resumed(jobs.RelearnJob(run="x")).resume is True
    assert _resumed(None) is None
    use = UseStage(run="erase/toy/oracles/color=red")
    assert _resumed(use) is use  # nothing to resume


def test_the_report_page_escapes_prompts_and_names():
    """A prompt or concept name is text on the page, never markup (issue 21)."""
    from erase.report.html import render_html

    bad = "<script>alert('x')</script> a red circle"
    page = render_html(
        {
            "title": f"erase {bad}",
            "sections": [
                {
                    "heading": bad,
                    "paragraphs": [bad],
                    "tables": [(["prompt", "verdict"], [[bad, "<b>red</b>"]])],
                    "pre": bad,
                    "images": [],
                    "yaml": f"prompt: {bad}",
                }
            ],
        }
    )
    assert "<script>" not in page and "<b>" not in page
    assert page.count("&lt;script&gt;") == 7  # title and h1, heading, paragraph, cell, pre, YAML
