"""Write a run's metrics (JSON) and the accuracy-vs-simulated-time plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Final accuracy, total simulated time and mean r over the rounds that dropped."""
    last = records[-1]
    dropped = [r["r"] for r in records[1:] if r.get("kept")]
    return {"rounds": last["round"], "final_accuracy": last["accuracy"],
            "final_loss": last["loss"],
            "sim_time": sum(r.get("round_time", 0.0) for r in records),
            "cpu_time": sum(r.get("cpu_time", 0.0) for r in records),
            "mean_round_time": (sum(r.get("round_time", 0.0) for r in records[1:])
                                / max(len(records) - 1, 1)),
            "r": dropped[-1] if dropped else 1.0,
            "failures": sum(len(r.get("failures", {})) for r in records)}


def write_run(out: Path, runs: Mapping[str, Sequence[Mapping[str, Any]]],
              meta: Mapping[str, Any], plot: bool = True) -> dict[str, Any]:
    """Write ``metrics.json`` (per method: summary + every round) and ``accuracy_vs_time.png``.

    Args:
        runs: method name -> round records (round 0 first).
        meta: the run's settings, stored as given.
    """
    out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": dict(meta),
           "methods": {m: {"summary": summarize(recs), "rounds": list(recs)}
                       for m, recs in runs.items()}}
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(out / "metrics.json")  # atomic: a reader never sees half a file
    if plot:
        _plot(out / "accuracy_vs_time.png", runs, str(meta.get("task", "")))
    return doc


def _plot(path: Path, runs: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> None:
    import matplotlib  # only when plotting: keeps `hotpipe --help` fast

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, recs in runs.items():
        ax.plot([r["sim_clock"] if "sim_clock" in r else _clock(recs, i)
                 for i, r in enumerate(recs)], [r["accuracy"] for r in recs],
                marker=".", label=method)
    ax.set_xlabel("simulated wall-clock (full-model samples at speed 1)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"FLuID {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _clock(recs: Sequence[Mapping[str, Any]], i: int) -> float:
    return sum(r.get("round_time", 0.0) for r in recs[:i + 1])
