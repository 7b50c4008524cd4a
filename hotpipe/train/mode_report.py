"""report.md sections for the speed modes: what ``schedule.mode`` and ``skip.mode`` changed.

Both modes are opt-in and not exact, so a run in either says in its report
what it did to the data (order, samples skipped) and what it saved or cost
(stall seconds by kind of step, rows left out of the plans). Input is the
``schedule`` / ``skip`` section of metrics.json (train/run.py).
"""

from __future__ import annotations

from typing import Any


def _pct(x: float) -> str:
    return f"{x:.1%}"


def schedule_section(s: dict[str, Any]) -> list[str]:
    """Markdown lines for metrics.json's ``schedule`` section."""
    b, stall = s.get("batches", {}), s.get("stall_seconds", {})
    lines = ["## Sample order (schedule.mode)", "",
             f"Mode **{s['mode']}**: the same samples every epoch, reordered within windows of "
             f"{s['window']} batches into popular batches (every lookup in the hot set of "
             f"{s['hot_rows']:,} rows) and the rest. Not the exact run's order.", "",
             "| | value |", "|---|---|",
             f"| popular samples | {_pct(s['popular_fraction'])} |",
             f"| hot sets (refreshes) | {s['hot_sets']} ({s['hot_set_refreshes']}"
             + (f", every {s['refresh_steps']} steps" if s.get("refresh_steps") else "") + ") |"]
    lines.append("")
    lines += ["| batch kind | batches | stall s |", "|---|---|---|"]
    for kind in ("popular", "non_popular", "mixed"):
        st = stall.get(kind)
        lines.append(f"| {kind.replace('_', '-')} | {b.get(kind, 0):,} | "
                     f"{'—' if st is None else f'{st:.2f}'} |")
    return [*lines, ""]


def skip_section(k: dict[str, Any]) -> list[str]:
    """Markdown lines for metrics.json's ``skip`` section."""
    lines = ["## Stale-sample skipping (skip.mode)", "",
             f"Mode **{k['mode']}**, target {_pct(k['target_drop'])} of samples: after "
             f"{k['warmup']} steps the {k['hot_rows']:,} most looked-up rows are snapshotted, "
             f"compared every {k['interval']} steps, and samples whose rows all moved less than "
             f"the period's threshold are not trained (applied {k.get('lag', 0)} steps after "
             "each estimate). Not the exact run.", "",
             "| | value |", "|---|---|",
             f"| samples skipped | {k['samples_skipped']:,} of {k['samples_seen']:,} "
             f"({_pct(k['fraction_skipped'])}; {_pct(k['fraction_skipped_after_warmup'])} "
             "once a stale set applied) |",
             f"| row updates not applied | {k['lookups_skipped']:,} |"]
    if "samples_not_planned" in k:
        lines.append(f"| skipped samples left out of the plans | {k['samples_not_planned']:,} "
                     f"({k['lookups_not_planned']:,} lookups: their rows were not fetched "
                     "unless a kept sample needed them) |")
    periods = k.get("periods", [])
    if periods:
        lines += ["", "| estimated after step | applies from | hot rows | stale rows | threshold "
                  "| estimated share | samples | skipped |", "|---|---|---|---|---|---|---|---|"]
        for p in periods:
            share = p["skipped"] / p["samples"] if p["samples"] else 0.0
            lines.append(f"| {p['step']} | {p.get('applies_from', p['step'])} | {p['hot_rows']:,} "
                         f"| {p['stale_rows']:,} | {p['threshold']:.3g} | {_pct(p['estimated_drop'])} "
                         f"| {p['samples']:,} | {p['skipped']:,} ({_pct(share)}) |")
    return [*lines, ""]


def mode_sections(metrics: dict[str, Any]) -> list[str]:
    """Every speed-mode section a run's metrics call for (none for an exact run)."""
    out: list[str] = []
    if metrics.get("schedule"):
        out += schedule_section(metrics["schedule"])
    if metrics.get("skip"):
        out += skip_section(metrics["skip"])
    return out
