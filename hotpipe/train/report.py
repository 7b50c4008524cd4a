"""Run reports: plots and a Markdown summary from a run directory.

Reads ``history.jsonl`` and ``metrics.json`` (written by ``train/run.py``)
and writes ``report.md`` plus ``plots/*.png`` (matplotlib, Agg backend):
loss and validation AUC over steps, samples/s, hit rate and stall share over
time, bytes moved per tier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from hotpipe.train.mode_report import mode_sections  # noqa: E402


def _read_history(run: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    train: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    for line in (run / "history.jsonl").read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            (train if rec["kind"] == "train" else evals).append(rec)
    return train, evals


def _plot(path: Path, title: str, series: list[tuple[str, list[float], list[float]]],
          ylabel: str, percent: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, xs, ys in series:
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(run_dir: str | Path) -> Path:
    """Render ``report.md`` and plots for a finished run; returns the report path."""
    run = Path(run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    train, evals = _read_history(run)
    plots = run / "plots"
    plots.mkdir(exist_ok=True)
    steps = [r["step"] for r in train]
    _plot(plots / "loss.png", "training loss", [("loss", steps, [r["loss"] for r in train])], "BCE")
    if evals:
        _plot(plots / "val_auc.png", "validation AUC",
              [("AUC", [r["step"] for r in evals], [r["val_auc"] for r in evals])], "AUC")
    _plot(plots / "throughput.png", "throughput",
          [("samples/s", steps, [r["samples_per_s"] for r in train])], "samples/s")
    _plot(plots / "cache.png", "fast tier", [
        ("hit rate", steps, [r["hit_rate"] for r in train]),
        ("stall share", steps, [r["stall_share"] for r in train]),
    ], "share", percent=True)
    cache = metrics.get("cache", {})
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    moved = {"fetched (backing -> fast)": cache.get("bytes_fetched", 0) / 2**20,
             "written back (fast -> backing)": cache.get("bytes_written_back", 0) / 2**20}
    ax.barh(list(moved), list(moved.values()))
    ax.set_xlabel("MiB")
    ax.set_title("bytes moved per tier")
    fig.tight_layout()
    fig.savefig(plots / "bytes_moved.png")
    plt.close(fig)

    lines = [f"# Run report: {run.name}", "", "| metric | value |", "|---|---|"]
    for key in ("steps", "final_loss", "val_auc", "val_logloss", "samples_per_s", "teacher_auc"):
        if key in metrics:
            v = metrics[key]
            lines.append(f"| {key} | {v:.5g} |" if isinstance(v, float) else f"| {key} | {v} |")
    if cache.get("policy", "none") != "none":
        for key in ("policy", "hit_rate", "rows_fetched", "rows_written_back", "bytes_fetched",
                    "stall_seconds"):
            v = cache.get(key)
            lines.append(f"| cache.{key} | {v:.5g} |" if isinstance(v, float) else f"| cache.{key} | {v} |")
    lines += ["", *mode_sections(metrics)]  # schedule.mode / skip.mode: what they changed
    lines += [f"![{p.stem}](plots/{p.name})" for p in sorted(plots.glob("*.png"))]
    out = run / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
