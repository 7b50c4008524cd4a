"""Render a profile: ``profile.json``, PNG plots and a readable ``profile.md``.

Plots use matplotlib's Agg backend (files only, no display needed)::

    access_cdf.png    share of lookups vs share of rows, one line per table
    hot_set.png       lookup share and hot-sample share vs fast-tier budget
    reuse.png         reuse distance histogram (steps, log2 bins)
    drift.png         Jaccard overlap of each part's top set with the first part's
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_PLOTS = ("access_cdf.png", "hot_set.png", "reuse.png", "drift.png")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _plot_cdf(plt: Any, prof: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in prof["tables"]:
        c = t["cdf"]
        if c["rows"]:
            ax.plot([r / t["cardinality"] for r in c["rows"]], c["share"], lw=1, label=t["name"])
    ax.set_xscale("log")
    ax.set_xlabel("top fraction of the table's rows")
    ax.set_ylabel("share of the table's lookups")
    ax.set_title("Access CDF per table")
    ax.grid(alpha=0.3)
    if len(prof["tables"]) <= 30:
        ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _plot_hot(plt: Any, prof: dict[str, Any], out: Path) -> None:
    curve = prof["overall"]["hot_curve"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [max(p["bytes"], 1) for p in curve]
    ax.plot(x, [p["lookup_share"] for p in curve], label="lookups served by the hot set")
    ax.plot(x, [p["hot_samples"] for p in curve], label="hot samples (every lookup hot)")
    for b in prof["overall"]["budgets"]:
        ax.axvline(b["budget_bytes"], color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("fast-tier budget (bytes: rows x (dim + optimizer state) x 4)")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1.02)
    ax.set_title("Hot set vs budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _plot_reuse(plt: Any, prof: dict[str, Any], out: Path) -> None:
    r = prof["overall"]["reuse"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if r["hist"]:
        total = sum(r["hist"])
        ax.bar(range(len(r["hist"])), [h / total for h in r["hist"]], color="tab:blue")
        ax.set_xticks(range(len(r["hist"])))
        ax.set_xticklabels([f"{int(b)}" for b in r["bins_lower_steps"]], rotation=60, fontsize=7)
    ax.set_xlabel("reuse distance (steps, bin lower edge; log2 bins)")
    ax.set_ylabel("share of reuses")
    ax.set_title(f"Reuse distance (batch {prof['settings']['batch_size']})")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _plot_drift(plt: Any, prof: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in prof["tables"]:
        ys = [float("nan") if v is None else v for v in t["drift_jaccard"]]
        ax.plot(range(len(ys)), ys, lw=0.8, alpha=0.5)
    mean = [float("nan") if v is None else v for v in prof["overall"]["drift_jaccard_mean"]]
    ax.plot(range(len(mean)), mean, lw=2.5, color="black", label="lookup-weighted mean")
    ax.set_xlabel("part of the data (in order)")
    ax.set_ylabel("Jaccard(top set of part 0, top set of part i)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Drift of the hot set (top 1% of rows per table)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "-"
    return f"{v:.1%}" if pct else f"{v:g}"


def render_markdown(prof: dict[str, Any]) -> str:
    """The readable report (``profile.md``)."""
    s, o = prof["settings"], prof["overall"]
    mode = "exact counts" if s["exact"] else f"a {s['sample']:.1%} row sample (sketched big tables)"
    lines = [
        f"# Access profile of `{prof['dataset']['path']}`",
        "",
        f"{prof['dataset']['rows']:,} samples, {prof['dataset']['tables']} tables, "
        f"{o['rows']:,} embedding rows; counted from {mode}; "
        f"{o['lookups_counted']:,} lookups counted in {prof['seconds']:.1f} s.",
        f"A fast-tier row is {s['bytes_per_row']} bytes (dim {s['dim']} + {s['optimizer']} state, fp32).",
        "",
        "## Skew",
        "",
        "| | " + " | ".join(f"top {p} of rows" for p in o["top_share_pooled"]) + " |",
        "|---|" + "---|" * len(o["top_share_pooled"]),
        "| share of all lookups (pooled over tables) | "
        + " | ".join(_fmt(v) for v in o["top_share_pooled"].values()) + " |",
        "| mean over tables of each table's share | "
        + " | ".join(_fmt(v) for v in o["top_share_mean_over_tables"].values()) + " |",
        "",
        *([] if s["exact"] else [
            "Sampled: every share is that of the rows ranked hottest in the counted sample, measured "
            "on held-out rows — what a hot set chosen from this profile serves (FAE's situation), and "
            "a lower bound of the data's own top-k share.", ""]),
        "## Hot set per budget",
        "",
        "| budget | rows | lookups served | hot samples (every lookup hot) |",
        "|---|---|---|---|",
    ]
    for b in o["budgets"]:
        mark = "" if b["certain"] else " (lower bound: beyond the rows the sketch can name)"
        lines.append(f"| {_size(b['budget_bytes'])} | {b['rows']:,} | {_fmt(b['lookup_share'])}{mark} "
                     f"| {_fmt(b['hot_samples'])} |")
    r = o["reuse"]
    lines += [
        "",
        f"Shares are measured on {o['samples_evaluated']:,} held-out samples (all samples when exact).",
        "",
        f"## Reuse distance (steps of {s['batch_size']} samples)",
        "",
        f"Median {_fmt(r['median_steps'], False)} steps, 90th percentile {_fmt(r['p90_steps'], False)} steps "
        f"(bin lower edges). Share of reuses whose next use a lookahead window of W steps sees: "
        + ", ".join(f"W={w}: {_fmt(v)}" for w, v in r["within"].items()) + ".",
        "",
        "## Drift",
        "",
        "Jaccard overlap of each part's top set (1 % of rows, at most "
        f"{s['drift_top']:,} per table) with the first part's, lookup-weighted mean over tables: "
        + ", ".join(_fmt(v, False) if v is None else f"{v:.2f}" for v in o["drift_jaccard_mean"]) + ".",
        "",
        "## Per table",
        "",
        "| table | rows | counting | " + " | ".join(f"top {p}" for p in o["top_share_pooled"])
        + " | median reuse (steps) | last-part Jaccard |",
        "|---|---|---|" + "---|" * len(o["top_share_pooled"]) + "---|---|",
    ]
    for t in prof["tables"]:
        shares = " | ".join(_fmt(v) + ("" if t["top_share_certain"][p] else "*")
                            for p, v in t["top_share"].items())
        last = t["drift_jaccard"][-1] if t["drift_jaccard"] else None
        lines.append(f"| {t['name']} | {t['cardinality']:,} | {t['counting']} | {shares} | "
                     f"{_fmt(t['reuse']['median_steps'], False)} | "
                     f"{'-' if last is None else f'{last:.2f}'} |")
    lines += ["", "`*`: more rows than the sketch names with certainty; an estimate.", ""]
    lines += [f"![{p}]({p})" for p in _PLOTS]
    return "\n".join(lines) + "\n"


def write_profile_report(prof: dict[str, Any], out: str | os.PathLike[str]) -> list[Path]:
    """Write profile.json, the plots and profile.md under ``out``; return the paths."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "profile.json").write_text(json.dumps(prof, indent=1))
    plt = _pyplot()
    for name, fn in zip(_PLOTS, (_plot_cdf, _plot_hot, _plot_reuse, _plot_drift), strict=True):
        fn(plt, prof, root / name)
    (root / "profile.md").write_text(render_markdown(prof))
    return [root / "profile.json", root / "profile.md", *(root / p for p in _PLOTS)]
