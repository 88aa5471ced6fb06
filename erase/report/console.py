"""Tables for the terminal and for Markdown: what a job prints when it is done."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table; cells are written as given."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def before_after(concepts, roles: dict[str, str], before: dict, after: dict) -> str:
    """Accuracy of each concept before and after an edit, with the 95% interval after; ``roles``:
    what each concept was to the edit (erased, kept, watched)."""
    lines = [f"{'concept':<12} {'role':<9} {'before':>7} {'after':>7}   after: hits/n and 95% CI"]
    for c in concepts:
        b, a = before["concepts"][c.name], after["concepts"][c.name]
        lines.append(
            f"{c.name:<12} {roles[c.name]:<9} {b['accuracy']:>7.2f} {a['accuracy']:>7.2f}   "
            f"{a['hits']}/{a['n']} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]"
        )
    return "\n".join(lines)


def presence(counts: dict[str, dict[str, list[int]]], labels: Sequence[str], seeds: int) -> str:
    """The audit's share of images in which the judge sees the prompt's concept, per model and row
    role, with its count: ``0.50 (4/8)``."""
    width = max(len(label) for label in labels)
    lines = [
        f"share of images in which the judge sees the prompt's concept ({seeds} seeds):",
        f"{'model':<{width}}  " + "  ".join(f"{r:>12}" for r in counts),
    ]
    for label in labels:
        cells = [_count(counts[r].get(label)) for r in counts]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def _count(kn: list[int] | None) -> str:
    if not kn:
        return "-"
    k, n = kn
    return f"{k / n:.2f} ({k}/{n})"
