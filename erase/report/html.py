"""One self-contained report per run, and the summary of a study.

The report is read by a reviewer who did not run anything: it states the declared kind and the
oracle that kind is judged against, the settings, before/after scores with intervals, the audit
grid, the relearning curves with steps to resurgence per optimizer, time and memory, and the
reproducibility record. ``report.html`` embeds its images, so it can be mailed or attached alone;
``report.md`` says the same in Markdown with links to the run's PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from erase.report.console import markdown_table
from erase.stats import rate

# The report ------------------------------------------------------------------------------------
ORACLES = {
    "unlearning": "the unlearning oracle: the model retrained without any sample of the concept "
    "(the ideal concept-level erasure; on the toy world `erase toy oracle --exclude color=red` builds it)",
    "untraining": "the untraining oracle: the model retrained without the forget set only "
    "(it may still draw the concept from other samples; `erase toy oracle --forget SPEC` builds it)",
}


def _read(path: Path) -> dict | None:
    import json

    return json.loads(path.read_text()) if path.is_file() else None


def collect(run: Path) -> dict:
    """Everything a run folder holds that the report shows."""
    run = Path(run)
    edit_dir = next((run / n for n in ("erase", "untrain") if (run / n / "record.json").is_file()), None)
    return {
        "run": run,
        "pipeline": _read(run / "pipeline.json"),
        "edit_dir": edit_dir,
        "edit": _read(edit_dir / "record.json") if edit_dir else None,
        "relearn": _read(run / "relearn" / "relearn.json"),
        "audit": _read(run / "audit" / "audit.json"),
        "attack": _read(run / "attack" / "attack.json"),
        "score": _read(run / "score" / "record.json"),
    }


def _scores_rows(edit: dict) -> list[list[str]]:
    """Rows of (concept, role, before, after with 95% CI) from a concept run's record."""
    res, cfg = edit["results"], edit["config"]
    before, after = res.get("before"), res.get("after")
    if not before or not after:
        return []
    rows = []
    for name, a in after["concepts"].items():
        b = before["concepts"][name]
        role = (
            "erased"
            if name == cfg.get("concept")
            else "kept"
            if name in (cfg.get("preserve") or [])
            else "watched"
        )
        rows.append(
            [
                name,
                role,
                f"{b['hits']}/{b['n']} = {b['accuracy']:.2f} [{b['ci95'][0]:.2f}, {b['ci95'][1]:.2f}]",
                f"{a['hits']}/{a['n']} = {a['accuracy']:.2f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]",
                str(a["n"]),
            ]
        )
    return rows


def _hits(results: list[dict]) -> tuple[int, int] | None:
    """Pooled hits and images over score results (None for records without counts)."""
    if not all("hits" in r and "n" in r for r in results):
        return None
    return sum(r["hits"] for r in results), sum(r["n"] for r in results)


def _rate(accuracy: float, count) -> str:
    """``2/48 = 0.04 [0.01, 0.14]`` (``erase.stats.rate``) where the record has counts; older
    records without them give the bare rate."""
    return rate(*count) if count else f"{accuracy:.2f}"


def _untrain_rows(edit: dict) -> tuple[list[str], list[list[str]]]:
    metrics = edit["results"]["metrics"]
    cols = ["forget_loss", "heldout_loss", "mia_auc", "distance_to_oracle", "retain_loss"]
    cols = [c for c in cols if any(c in r for r in metrics.values())]
    rows = [[m] + [f"{r[c]:.4f}" if c in r else "-" for c in cols] for m, r in metrics.items()]
    return ["model", *cols], rows


def _untrain_scores(edit: dict) -> tuple[list[str], list[list[str]]]:
    scores = edit["results"].get("scores") or {}
    models = [m for m, v in scores.items() if v]
    if not models:
        return [], []
    names = list(scores[models[0]]["concepts"])
    rows = []
    for n in names:
        cells = []
        for m in models:
            c = scores[m]["concepts"][n]
            cells.append(
                f"{c['hits']}/{c['n']} = {c['accuracy']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"
            )
        rows.append([n, *cells])
    return ["concept", *models], rows


def _facts(d: dict) -> list[list[str]]:
    mem = d.get("peak_memory") or {}
    return [
        ["command", "erase " + " ".join(d.get("argv") or [d.get("command") or ""])],
        ["wall time", f"{d.get('wall_seconds')} s"],
        ["peak memory", ", ".join(f"{k} {v}" for k, v in mem.items())],
        # None for stages that train nothing (audit, score): say so rather than print "None".
        [
            "trainable parameters",
            f"{d['trainable_parameters']:,}" if d.get("trainable_parameters") else "none",
        ],
        ["device", str(d.get("device"))],
        ["seeds", ",".join(str(s) for s in d.get("seeds") or [])],
    ]


def build_report(run: Path, title: str | None = None) -> dict:
    """The report's content, independent of its format: a title and a list of sections, each a
    heading, paragraphs, tables (header, rows) and images (path, caption)."""
    info = collect(run)
    edit, relearn, audit, pipeline = info["edit"], info["relearn"], info["audit"], info["pipeline"]
    cfg = edit["config"] if edit else {}
    kind = cfg.get("kind")
    method = cfg.get("method")
    what = cfg.get("concept") or cfg.get("forget")
    name = (pipeline or {}).get("name") or Path(run).name
    sections = []

    intro = []
    if edit:
        intro.append(
            f"{method} ({kind}) applied to {cfg.get('model')!s}: {'erase' if kind == 'unlearning' else 'untrain'} {what!r}."
        )
        intro.append(f"Declared kind: {kind}. It is judged against {ORACLES.get(kind, 'no oracle')}.")
        if kind == "untraining" and edit["results"].get("table"):
            intro.append(edit["results"]["table"].splitlines()[0] + ".")
    if pipeline and pipeline.get("description"):
        intro.insert(0, pipeline["description"])
    sections.append({"heading": "What was done", "paragraphs": intro, "tables": [], "images": []})

    if edit and kind == "unlearning":
        rows = _scores_rows(edit)
        scores = edit["results"].get("before") or {}
        settings = scores.get("settings", {})
        paras = [
            f"Judge accuracy on held-out prompts and seeds ({settings.get('seeds')}, {settings.get('steps')} "
            "sampling steps), with 95% bootstrap intervals; n is images per concept."
        ]
        sections.append(
            {
                "heading": "Before and after",
                "paragraphs": paras if rows else ["No scores (the erase ran without a score stage)."],
                "tables": [(["concept", "role", "before", "after", "n"], rows)] if rows else [],
                "images": [],
            }
        )
    if edit and kind == "untraining":
        head, rows = _untrain_rows(edit)
        tables = [(head, rows)]
        shead, srows = _untrain_scores(edit)
        if srows:
            tables.append((shead, srows))
        paras = [edit["results"]["note"]] if edit["results"].get("note") else []
        paras += edit["results"].get("summary") or []  # the method's own lines (HAMU's verdict)
        sections.append(
            {"heading": "Untraining metrics", "paragraphs": paras, "tables": tables, "images": []}
        )

    if audit:
        pres = audit["results"]["presence"]
        counts = audit["results"].get("presence_counts", {})
        cols = [c["label"] for c in audit["config"]["columns"]]

        def share(role: str, c: str) -> str:
            kn = counts.get(role, {}).get(c)
            return f"{pres[role].get(c, float('nan')):.2f}" + (f" ({kn[0]}/{kn[1]})" if kn else "")

        rows = [[role] + [share(role, c) for c in cols] for role in pres]
        sections.append(
            {
                "heading": "Audit grid",
                "paragraphs": [
                    "The same prompts and seeds in every column. Under each image the judge's verdict: "
                    "'+' it sees the concept the prompt asks for, '-' it sees another (with its probability). "
                    "The table gives the share of '+' per row group."
                ],
                "tables": [(["rows", *cols], rows)],
                "images": [(Path(run) / "audit" / "audit.png", "audit grid")],
            }
        )
    if relearn:
        res = relearn["results"]
        paras = [
            "The erased model is fine-tuned on examples of the concept under each optimizer; the concept "
            "is scored every few steps. Steps to resurgence: the first step at which accuracy is back to "
            "tau x the original (median over relearning seeds; '> N' not back within the budget)."
        ]
        sections.append(
            {
                "heading": "Relearning attack",
                "paragraphs": paras,
                "pre": res.get("table", ""),
                "tables": [],
                "images": [(Path(run) / "relearn" / "relearn.png", "relearning curves")]
                + [(p, "learning-rate sweep") for p in [Path(run) / "relearn" / "sweep.png"] if p.is_file()],
            }
        )
    if info["attack"]:
        sections.append(_attack_section(run, info["attack"]))
    facts = []
    for label, d in (("edit", edit), ("relearn", relearn), ("audit", audit), ("attack", info["attack"])):
        if d:
            facts.append(([label, ""], _facts(d)))
    if facts:
        sections.append({"heading": "Time and memory", "paragraphs": [], "tables": facts, "images": []})
    repro = []
    if edit:
        v = edit.get("versions", {})
        repro.append(["versions", ", ".join(f"{k} {val}" for k, val in v.items())])
        for k, h in edit.get("prompt_hashes", {}).items():
            repro.append([f"prompts: {k}", f"{h.get('sha256', '')[:16]} ({h.get('n', h.get('file', ''))})"])
        repro.append(
            ["method config", ", ".join(f"{k}={val}" for k, val in edit["results"].get("config", {}).items())]
        )
    if pipeline:
        repro.append(["pipeline file", f"{pipeline.get('file')} (sha256 {str(pipeline.get('sha256'))[:16]})"])
        repro.append(["rerun", f"erase run {pipeline.get('file')}"])
    sections.append(
        {
            "heading": "Reproducibility",
            "paragraphs": ["Every figure above comes from the JSON records in this folder."],
            "tables": [(["what", "value"], repro)] if repro else [],
            "images": [],
            "yaml": (pipeline or {}).get("text"),
        }
    )
    return {"title": title or f"erase report: {name}", "sections": sections}


ATTACK_HEADER = [
    "erasure",
    "concept",
    "attack",
    "untrained, base",
    "base model",
    "erased model",
    "oracle",
    "verdict",
    "attack time",
]


def attack_rows(record: dict) -> list[dict]:
    """One row per attack of an ``erase attack`` record: each model's success (counts, interval),
    what the untrained starting point draws on the base model, the verdict, what was found, the
    budget; ``cells`` is the row of ``ATTACK_HEADER``."""
    from erase.stats import shown

    res, rows = record["results"], []
    for a in res["attacks"]:
        start = a.get("base", {}).get("start", {}).get("success")
        success = {m: a[m]["success"] for m in res["models"]}
        budget = a["erased"]["budget"]
        rows.append(
            {
                "method": res["method"],
                "concept": res["concept"],
                "attack": a["attack"],
                "untrained_on_base": start,
                "success": success,
                "verdict": a["verdict"],
                "token": a["erased"].get("token"),
                "words": a["erased"].get("words"),
                "example_prompt": a["erased"]["prompts"][0],
                "budget": budget,
                "cells": [res["method"], res["concept"], a["attack"], shown(start)]
                + [shown(success.get(m)) for m in ("base", "erased", "oracle")]
                + [a["verdict"]["outcome"], f"{budget['seconds']:.0f} s"],
            }
        )
    return rows


def _attack_section(run: Path, record: dict) -> dict:
    """Each attack's success on the base model, the erased model and the oracle, what it found, and
    the images drawn from it on each model."""
    res = record["results"]
    models = list(res["models"])
    paras = [
        "Each attack runs with the same seed and examples on every model: on the base model it must bring "
        "the concept out, above what its untrained starting point draws there (or it is not an attack); on "
        "the oracle, a model that never learned the concept, it shows the floor of what 'gone' can mean. "
        "Cells: images in which the judge sees the concept, with 95% Wilson intervals."
    ]
    for row in res["attacks"]:
        found = row["erased"]
        if found.get("token"):
            paras.append(
                f"{row['attack']}: token {found['token']} (file {found['embedding']}), prompts such as "
                f"{found['prompts'][0]!r}; budget {found['budget']}."
            )
        elif found.get("words"):
            paras.append(
                f"{row['attack']}: found the words {found['words']!r} ({found['search']} search), prompts "
                f"such as {found['prompts'][0]!r}; budget {found['budget']}."
            )
        elif found.get("eta") is not None:
            paras.append(
                f"{row['attack']}: prompts found from the text encoder alone (eta {found['eta']:g}), such as "
                f"{found['prompts'][0]!r}; budget {found['budget']}."
            )
        elif found.get("optimizer"):
            paras.append(
                f"{row['attack']}: the UNet relearned with {found['optimizer']} at {found['lr']:g} on the "
                f"examples, then the concept's own prompts drawn; budget {found['budget']}."
            )
    images = [
        (
            Path(run) / "attack" / row["base"]["start"]["images"],
            f"{row['attack']}, untrained, on the base model",
        )
        for row in res["attacks"]
        if row.get("base", {}).get("start")
    ]
    images += [
        (Path(run) / "attack" / row[m]["images"], f"{row['attack']} on the {m} model")
        for row in res["attacks"]
        for m in models
        if "images" in row[m]  # a run that diverged drew none
    ]
    return {
        "heading": "Attacks",
        "paragraphs": paras,
        "pre": res.get("table", ""),
        "tables": [],
        "images": images,
    }


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(Path(path).read_bytes()).decode()


def render_html(report: dict) -> str:
    from html import escape

    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(report['title'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;"
        "color:#222}table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:left;font-size:14px}th{background:#f3f3f3}img{max-width:100%;"
        "border:1px solid #ddd}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:13px}"
        "h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}</style></head><body>",
        f"<h1>{escape(report['title'])}</h1>",
    ]
    for sec in report["sections"]:
        out.append(f"<h2>{escape(sec['heading'])}</h2>")
        out += [f"<p>{escape(p)}</p>" for p in sec["paragraphs"]]
        for head, rows in sec["tables"]:
            out.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
        if sec.get("pre"):
            out.append(f"<pre>{escape(sec['pre'])}</pre>")
        for path, caption in sec["images"]:
            if Path(path).is_file():
                out.append(
                    f"<figure><img alt='{escape(caption)}' id='{escape(caption.replace(' ', '-'))}' "
                    f"src='data:image/png;base64,{_b64(path)}'><figcaption>{escape(caption)}</figcaption></figure>"
                )
        if sec.get("yaml"):
            out.append(f"<details><summary>pipeline file</summary><pre>{escape(sec['yaml'])}</pre></details>")
    out.append("</body></html>")
    return "\n".join(out)


def render_markdown(report: dict, run: Path) -> str:
    def cell(x) -> str:
        return str(x).replace("|", "\\|")

    out = [f"# {report['title']}", ""]
    for sec in report["sections"]:
        out += [f"## {sec['heading']}", ""]
        for p in sec["paragraphs"]:
            out += [p, ""]
        for head, rows in sec["tables"]:
            out += [markdown_table([cell(h) for h in head], [[cell(c) for c in r] for r in rows]), ""]
        if sec.get("pre"):
            out += ["```", sec["pre"], "```", ""]
        for path, caption in sec["images"]:
            if Path(path).is_file():
                out += [f"![{caption}]({Path(path).relative_to(run)})", ""]
    return "\n".join(out)


def write_report(run: Path, title: str | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into the run folder (each whole or not at all)."""
    run = Path(run)
    report = build_report(run, title)
    html, md = run / "report.html", run / "report.md"
    for path, text in ((html, render_html(report)), (md, render_markdown(report, run))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return html, md


# Studies ----------------------------------------------------------------------------------------
def _study_row(name: str, run: Path) -> dict:
    """The headline numbers of one run of a study: what its records say, nothing recomputed."""
    info = collect(run)
    row: dict = {"run": name, "report": f"{name}/report.html" if (run / "report.html").is_file() else None}
    seed003 = _read(run / "seed003" / "record.json")
    if seed003:
        row["seed003"] = seed003["results"]["cases"]
    if info["attack"]:
        row["attacks"] = attack_rows(info["attack"])
    edit = info["edit"]
    if edit:
        cfg, res = edit["config"], edit["results"]
        row |= {
            "method": cfg.get("method"),
            "kind": cfg.get("kind"),
            "what": cfg.get("forget") or cfg.get("concept"),  # an untraining run names both
            "retain": cfg.get("retain"),
        }
        if res.get("before") and res.get("after"):
            target = cfg.get("concept")
            b, a = res["before"]["concepts"], res["after"]["concepts"]
            others = [n for n in a if n != target]
            row["accuracy"] = {"target": [b[target]["accuracy"], a[target]["accuracy"]]}
            row["counts"] = {"target": [_hits([b[target]]), _hits([a[target]])]}
            if others:
                row["accuracy"]["others_mean"] = [
                    float(np.mean([b[n]["accuracy"] for n in others])),
                    float(np.mean([a[n]["accuracy"] for n in others])),
                ]
                row["counts"]["others"] = [_hits([b[n] for n in others]), _hits([a[n] for n in others])]
        if res.get("metrics"):
            row["metrics"] = res["metrics"]
            row["scores"] = {
                m: {c: _rate(v["accuracy"], _hits([v])) for c, v in s["concepts"].items()}
                for m, s in (res.get("scores") or {}).items()
                if s
            }
            log = res.get("method_log", {})
            if "kappa" in log:
                row["kappa_mean"] = float(np.mean(log["kappa"])) if log["kappa"] else None
                refs = log.get("kappa_ref") or []
                row["kappa_ref_mean"] = float(np.mean(refs)) if refs else None
                row["verdict"] = log.get("verdict")
    if info["relearn"]:
        res = info["relearn"]["results"]
        first = res["runs"][0]["curve"][0]["accuracy"] if res.get("runs") else {}
        concept = res.get("concept")
        for x in res["summary"]:  # a record made before rows kept where the attack began
            if "start" not in x and concept in first:
                x["start"] = first[concept]
                x["others_start"] = {k: v for k, v in first.items() if k != concept}
                hits, n = res["runs"][0]["curve"][0].get("hits", {}), res["runs"][0]["curve"][0].get("n", {})
                x["start_count"] = [hits[concept], n[concept]] if concept in hits else None
        row["relearn"] = {
            "summary": res["summary"],
            "chosen": res.get("chosen", []),
            "oracle": (res.get("oracle") or {}).get("model"),
            "sweep": len(res["summary"]) > len({r["optimizer"] for r in res["summary"]}),
        }
    return row


def _kept(row: dict) -> str:
    """ ", others kept 0.45" when the sweep scored the other concepts (where each run stopped)."""
    from erase.relearn import others_kept

    kept = others_kept(row) if row.get("others_final") else None
    return "" if kept is None else f", others kept {kept:.2f}"


def _back(row: dict) -> str:
    """ ", 1/2 back" when some but not all seeds came back."""
    n = len(row["seeds"])
    back = n - row["censored"] - row.get("diverged", 0)
    return f", {back}/{n} back" if 0 < back < n else ""


def _relearn_sections(rows: list[dict]) -> list[str]:
    """A sweep: every optimizer x rate and the rate the rule chose. Then one table of the attacks at
    a rate per optimizer: steps to resurgence over seeds, the verdict against the oracle, and the
    other concepts at the end."""
    from erase.relearn import choose_lr, format_range, row_resurgence

    lines: list[str] = []
    for r in [r for r in rows if r.get("relearn", {}).get("sweep")]:
        summary = r["relearn"]["summary"]
        budget = summary[0]["budget"]
        chosen = r["relearn"]["chosen"] or [  # a record made before the rule was recorded
            choose_lr([x for x in summary if x["optimizer"] == o])
            for o in dict.fromkeys(x["optimizer"] for x in summary)
        ]
        rule = chosen[0].get("rule", "fastest")
        kept = (
            f"; others kept: the other concepts' accuracy where the runs stopped over their start; "
            f"chosen: the fastest rate that kept them at >= {chosen[0]['keep']:g} (the 'selective' rule)"
            if rule == "selective"
            else "; chosen: the fastest rate (the 'fastest' rule)"
        )
        lines += [
            f"## Learning-rate sweep: {r['run']} (median steps to resurgence over {len(summary[0]['seeds'])} "
            f"seeds, '> {budget}': not back; mean peak accuracy over seeds, with the images at each run's "
            f"best point pooled{kept})",
            "",
        ]
        table = []
        for c in chosen:
            own = sorted((x for x in summary if x["optimizer"] == c["optimizer"]), key=lambda x: x["lr"])
            cells = [f"{x['lr']:g}: {row_resurgence(x)}, peak {_peak(x)}{_back(x)}{_kept(x)}" for x in own]
            note = "" if c["came_back"] else " (median not back)"
            if c.get("selective") is False and c["came_back"]:
                note += " (none kept the others: the least damage)"
            table.append([c["optimizer"], *cells, f"{c['lr']:g}{note}"])
        width = max(len(t) for t in table) - 2
        table = [[t[0], *t[1:-1], *[""] * (width + 2 - len(t)), t[-1]] for t in table]  # uneven grids
        lines += [
            markdown_table(["optimizer", *[f"rate {i + 1}" for i in range(width)], "chosen"], table),
            "",
        ]
    attacks = [r for r in rows if r.get("relearn") and not r["relearn"]["sweep"]]
    if attacks:
        lines += [
            "## Relearning at each optimizer's chosen rate",
            "",
            "Each cell: median steps to resurgence over seeds ('> N': not back within the budget), the "
            "range over seeds, the verdict against the oracle, the rate; then the other concepts' mean "
            "accuracy at the start and at the end of the attack (every seed; a run stopped at "
            "resurgence ends there); with a base check, what the attack did on the original model.",
            "",
        ]
        optimizers = list(dict.fromkeys(x["optimizer"] for r in attacks for x in r["relearn"]["summary"]))
        table = []
        for r in attacks:
            summary = r["relearn"]["summary"]
            by = {x["optimizer"]: x for x in summary}
            cells = [_start(summary[0])]
            for o in optimizers:
                x = by.get(o)
                if x is None:
                    cells += ["-", "-"]
                    continue
                v = "not erased" if x["median"] == 0 else x.get("verdict", {}).get("outcome", "")
                cells.append(f"{row_resurgence(x)} ({format_range(x)}) {v} @ {x['lr']:g}{_base(x)}")
                cells.append(_others(x))
            table.append([r["run"], r.get("method") or "oracle", *cells])
        header = ["start"] + [h for o in optimizers for h in (o, f"{o}: others")]
        lines += [markdown_table(["run", "method", *header], table), ""]
    return lines


def _start(row: dict) -> str:
    """The concept where every attack began: ``0.08 (2/24)``; '-' in a record made before it was kept."""
    if "start" not in row:
        return "-"
    kn = row.get("start_count")
    return f"{row['start']:.2f}" + (f" ({kn[0]}/{kn[1]})" if kn else "")


def _others(row: dict) -> str:
    """The other concepts' mean accuracy at the start -> at the end of the attack."""
    end = row["others_final"]
    if not end:
        return "-"
    start = row.get("others_start") or {}
    before = f"{np.mean([start[k] for k in end if k in start]):.2f} -> " if start else ""
    return f"{before}{np.mean(list(end.values())):.2f}"


def _base(row: dict) -> str:
    """The base check, when the attack was run on the original too."""
    b = row.get("base_check")
    if not b:
        return ""
    others = b.get("others_final") or {}
    return (
        "; on the original: "
        + ("kept" if b["kept"] else "diverged" if b["diverged"] else "lost")
        + (f", others at the end {np.mean(list(others.values())):.2f}" if others else "")
    )


def write_study(out: Path, name: str, runs: list[tuple[str, Path]]) -> Path:
    """``study.json`` (each run's headline numbers) and ``study.md`` (one section per kind of claim)."""
    import json

    rows = [_study_row(n, Path(r)) for n, r in runs]
    lines = [
        f"# {name}",
        "",
        "Each row links to its run's report, where every number is traced to a record.",
        "",
    ]
    edits = [r for r in rows if r.get("accuracy")]
    if edits:
        lines += ["## Erasures (before -> after, judge accuracy on held-out prompts; others pooled)", ""]
        table = []
        for r in edits:
            t, o = r["accuracy"]["target"], r["accuracy"].get("others_mean")
            counts = r.get("counts", {})
            ct, co = counts.get("target", [None, None]), counts.get("others", [None, None])
            target = f"{_rate(t[0], ct[0])} -> {_rate(t[1], ct[1])}"
            others = f"{_rate(o[0], co[0])} -> {_rate(o[1], co[1])}" if o else "-"
            table.append([r["run"], r["method"], r["kind"], r["what"], target, others])
        lines += [markdown_table(["run", "method", "kind", "erased", "target", "others (mean)"], table), ""]
    untrain = [r for r in rows if r.get("metrics")]
    if untrain:
        lines += ["## Untraining against its oracle", ""]
        keys = ["forget_loss", "mia_auc", "distance_to_oracle", "retain_loss"]
        table = [
            [r["run"], r["method"], r["what"], model]
            + [f"{m[k]:.4f}" if k in m else "-" for k in keys]
            + [", ".join(f"{c} {v}" for c, v in r["scores"].get(model, {}).items()) or "-"]
            for r in untrain
            for model, m in r["metrics"].items()
        ]
        header = ["run", "method", "forget set", "model", "forget loss", "MIA AUC", "distance to oracle"]
        lines += [markdown_table([*header, "retain loss", "accuracy"], table), ""]
    hamu = [r for r in rows if r.get("verdict")]
    if hamu:

        def ref(r) -> str:
            return f"{r['kappa_ref_mean']:.2f}" if r.get("kappa_ref_mean") is not None else "-"

        table = [
            [r["run"], r["what"], r.get("retain") or "-", f"{r['kappa_mean']:.2f}", ref(r), r["verdict"]]
            for r in hamu
        ]
        header = ["run", "forget", "retain", "mean kappa", "mean kappa_ref (retain vs retain)", "verdict"]
        lines += ["## HAMU hardness", "", markdown_table(header, table), ""]
    lines += _relearn_sections(rows)
    attacks = [a for r in rows for a in r.get("attacks", [])]
    if attacks:
        lines += [
            "## Attacks (images in which the judge sees the concept, 95% CI)",
            "",
            markdown_table(ATTACK_HEADER, [a["cells"] for a in attacks]),
            "",
        ]
    cases = [c for r in rows for c in r.get("seed003", [])]
    if cases:
        lines += ["## Seed 003: descent-ascent on a ridge-regularised exponential loss", ""]
        for c in cases:
            if c["diverged"]:
                lines.append(f"- |F| = {c['forget']}: diverged; {c['diverged']}")
            else:
                lines.append(
                    f"- |F| = {c['forget']}: ends at {c['descent_ascent']}, {c['descent_ascent_distance']} from the "
                    f"retrained model vs {c['original_distance']} for the original: {c['ratio']}x farther"
                )
        lines.append("")
    lines += ["## Runs", ""] + [
        f"- [{r['run']}]({r['report']})" if r["report"] else f"- {r['run']}" for r in rows
    ]
    out = Path(out)
    md = out / "study.md"
    for path, text in (
        (out / "study.json", json.dumps(rows, indent=2, default=str)),
        (md, "\n".join(lines) + "\n"),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return md


def _peak(row: dict) -> str:
    """The mean peak over seeds, with its pooled count when the record has one (``12/24``)."""
    count = row.get("peak_count")
    return f"{row['peak']:.2f}" + (f" ({count[0]}/{count[1]})" if count else "")
