"""Bigger than RAM (issue #3): the file-backed tier vs the same file memory-mapped.

One huge embedding table (``--size-gib`` of records: D=64 weights + 1 float
of row-wise Adagrad state = 260 B per row) lives in one file under
``--dir``. The same small DLRM (bottom [64, 64], top [64, 1]: small, so
that data movement dominates) trains the same steps over it in each arm; arms
are interleaved (A B C A B C ...), each starting with a cold page cache:

- ``mapped``: :class:`~hotpipe.train.mapped_feed.MappedFeed`, the table
  simply memory-mapped; lookups fault rows in from disk on the training
  thread and the kernel writes dirty pages back when it likes (the baseline).
- ``tiered``: :class:`~hotpipe.train.tiered_feed.TieredFeed` with the
  lookahead planner, a fast tier of ``--capacity`` of the rows in RAM and a
  :class:`~hotpipe.storage.backing.FileBacking` over the *same* file, as
  hotpipe runs it: the map advised ``MADV_RANDOM`` (a fault reads its page,
  no read-around) and each fetch gathered on ``--fetch-threads`` threads so
  that many page faults are in flight at once.
- ``tiered-rand``: the same with one gather thread.
- ``tiered-plain``: the same without ``MADV_RANDOM`` either (hotpipe before
  these two changes were adopted).
- ``mapped-rand``: the baseline with ``MADV_RANDOM`` on its map, to show how
  much of the gap is the kernel's read-around (a tuned baseline).

The table file is written once (large sequential writes, the same bits
FileBacking's own initialisation gives) and reused by every arm. Arms update
the table, so later arms start from other weights; that changes no
throughput, and the file is not re-initialised between arms. The file and the
dataset are deleted at the end, also on Ctrl-C or SIGTERM.

    python benchmarks/bench_bigger_than_ram.py --size-gib 2 --steps 200   # development (~1 min)
    python benchmarks/bench_bigger_than_ram.py --size-gib 32              # the real figure (~30 min)

Results and what limits each arm: BENCHMARKS.md, "Bigger than RAM (issue #3)".

Needs root for ``echo 3 > /proc/sys/vm/drop_caches`` (otherwise the arms are
not cold, and the output says so).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hotpipe.capacity import Capacity
from hotpipe.data.columnar import ColumnarDataset, ColumnarWriter, TableSpec
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader
from hotpipe.data.synth import FeistelPermutation, ZipfSampler
from hotpipe.model.dlrm import DLRM
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.model.sparse_optim import RowOptimizer, make_row_optimizer
from hotpipe.plan.planner import Planner
from hotpipe.storage.backing import FileBacking
from hotpipe.storage.init import init_rows
from hotpipe.storage.slots import FLOAT_BYTES, SlotStore
from hotpipe.storage.tiered import TieredStore
from hotpipe.train.loop import LoopState, StepLog, train_steps
from hotpipe.train.mapped_feed import MappedFeed
from hotpipe.train.tiered_feed import TieredFeed

NUM_DENSE = 13
ARMS = ("mapped", "tiered", "tiered-rand", "tiered-plain", "mapped-rand")


# -- the machine ------------------------------------------------------------

def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (the fields we report)."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, rest = line.split(":", 1)
        if key in ("MemTotal", "MemFree", "MemAvailable", "Cached", "Dirty"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def disk_counters(path: Path) -> dict[str, int]:
    """Reads/writes completed and bytes moved by the block device holding ``path``."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if int(f[0]) == major and int(f[1]) == minor:
            return {"reads": int(f[3]), "read_bytes": int(f[5]) * 512,
                    "writes": int(f[7]), "write_bytes": int(f[9]) * 512}
    return {"reads": 0, "read_bytes": 0, "writes": 0, "write_bytes": 0}


def machine(path: Path) -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    du = shutil.disk_usage(path)
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": meminfo()["MemTotal"],
            "disk_total_bytes": du.total, "disk_free_bytes": du.free,
            "kernel": os.uname().release, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def drop_page_cache() -> bool:
    """sync, then drop clean pages so the next arm starts cold. False when not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


# -- the data ---------------------------------------------------------------

def make_dataset(out: Path, *, rows: int, card: int, zipf: float, seed: int) -> None:
    """``rows`` samples: one id per sample, a bounded Zipf rank scattered by a
    seeded permutation (hot rows are not 0..k), 13 dense features, labels from
    a planted teacher (a per-row effect + a dense term) so the loss moves."""
    rng = np.random.default_rng(seed)
    sampler = ZipfSampler(card, zipf)
    perm = FeistelPermutation(card, seed)
    w_dense = rng.normal(0.0, 0.3, NUM_DENSE)
    with ColumnarWriter(out, tables=[TableSpec("C1", card)], num_dense=NUM_DENSE,
                        overwrite=True) as w:
        for r0 in range(0, rows, 1 << 18):
            n = min(1 << 18, rows - r0)
            ids = perm(sampler.sample(rng.random(n)))  # (n,) int32
            dense = np.log1p(rng.exponential(3.0, (n, NUM_DENSE))).astype(np.float32)
            row_effect = ((ids.astype(np.uint64) * 2654435761) % (1 << 32)) / 2**31 - 1.0
            logit = 2.0 * row_effect + dense @ w_dense - 1.0
            label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
            w.append(label, dense, ids[:, None])
        w.finish(encoding={"kind": "bench_bigger_than_ram", "zipf": zipf, "seed": seed}, sources=[])


def write_table(path: Path, *, card: int, dim: int, optimizer: RowOptimizer, seed: int) -> None:
    """The table file FileBacking would initialise, written with large
    sequential writes instead of through a map (faster on a cold file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        def put(r0: int, rows: torch.Tensor) -> None:
            rec = torch.cat([rows, optimizer.init_state(rows.shape[0], dim)], dim=1)
            f.write(rec.numpy().tobytes())

        init_rows([card], dim, seed, put)
        f.flush()
        os.fsync(f.fileno())


# -- one arm ------------------------------------------------------------------

def make_feed(arm: str, a: argparse.Namespace, table_dir: Path, card: int,
              optimizer: RowOptimizer) -> MappedFeed | TieredFeed:
    kw = dict(directory=table_dir, cardinalities=[card], dim=a.dim, optimizer=optimizer,
              seed=a.seed, reuse=True)
    # FileBacking's defaults (MADV_RANDOM, parallel gathers) are what hotpipe
    # uses; the other arms switch them off to show what each one buys.
    if arm.startswith("mapped"):
        backing = FileBacking(**kw, advise_random=arm == "mapped-rand", io_threads=1)
        return MappedFeed(backing=backing, dim=a.dim)
    backing = {
        "tiered-plain": lambda: FileBacking(**kw, advise_random=False, io_threads=1),
        "tiered-rand": lambda: FileBacking(**kw, io_threads=1),
        "tiered": lambda: FileBacking(**kw, io_threads=a.fetch_threads),
    }[arm]()
    capacity = Capacity.parse(a.capacity, "--capacity").rows(card, backing.width * FLOAT_BYTES)
    layout = TableLayout([card])
    cache = SlotStore.allocate(capacity, a.dim, optimizer)
    tiers = TieredStore(cache=cache, backing=backing, layout=layout)
    planner = Planner(num_rows=card, capacity=capacity, window=a.window, depth=a.depth)
    return TieredFeed(tiers=tiers, planner=planner, layout=layout)


def run_arm(arm: str, a: argparse.Namespace, ds: ColumnarDataset, table_dir: Path,
            card: int) -> dict[str, Any]:
    cold = drop_page_cache()
    began = time.strftime("%H:%M:%S")
    before = {"load": loadavg(), "mem": meminfo(), "disk": disk_counters(table_dir),
              "majflt": resource.getrusage(resource.RUSAGE_SELF).ru_majflt}
    torch.manual_seed(a.seed)
    optimizer = make_row_optimizer("rowwise_adagrad", lr=0.05, dim=a.dim)
    model = DLRM(num_dense=NUM_DENSE, num_tables=1, embedding_dim=a.dim, bottom=[64, a.dim],
                 top=[64, 1])
    dense_opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = BatchLoader(ds, batch_size=a.batch_size, drop_last=True)
    t0 = time.perf_counter()
    feed = make_feed(arm, a, table_dir, card, optimizer)
    setup_s = time.perf_counter() - t0
    state = LoopState()
    windows: list[dict[str, float]] = []

    def on_log(log: StepLog) -> None:
        windows.append({"step": log.step, "samples_per_s": log.samples_per_s,
                        "stall_share": log.stall_share})
        print(f"    {arm} step {log.step}: {log.samples_per_s:,.0f} samples/s, "
              f"stall {log.stall_share:.0%}", flush=True)

    try:
        train_steps(model=model, embedding=SparseEmbedding(store=feed.store, optimizer=optimizer),
                    feed=feed, dense_opt=dense_opt, loader=loader, state=state, stop=a.steps,
                    log_every=a.log_every, progress=False, on_log=on_log)
        mid = {"mem": meminfo(), "disk": disk_counters(table_dir),
               "majflt": resource.getrusage(resource.RUSAGE_SELF).ru_majflt}
        t1 = time.perf_counter()
        feed.flush()  # every update in the file (tiered: cache write-back + msync)
        flush_s = time.perf_counter() - t1
    finally:
        feed.close()
    st = feed.stats.as_dict()
    st.pop("per_table", None)
    d0, d1 = before["disk"], mid["disk"]
    return {
        "arm": arm, "began": began, "cold_start": cold, "steps": a.steps,
        "samples_per_s": a.steps * a.batch_size / state.train_seconds,
        "train_s": state.train_seconds, "setup_s": setup_s, "flush_s": flush_s,
        "first_loss": state.losses[0], "last_loss": state.losses[-1],
        "load_before": before["load"], "load_after": loadavg(),
        "mem_available_before": before["mem"]["MemAvailable"],
        "mem_free_before": before["mem"]["MemFree"], "cached_after": mid["mem"]["Cached"],
        "disk_reads": d1["reads"] - d0["reads"], "disk_read_bytes": d1["read_bytes"] - d0["read_bytes"],
        "disk_writes": d1["writes"] - d0["writes"],
        "disk_write_bytes": d1["write_bytes"] - d0["write_bytes"],
        "major_faults": mid["majflt"] - before["majflt"],
        "stall_share": st["stall_seconds"] / state.train_seconds, "cache": st,
        "windows": windows,
    }


# -- main -----------------------------------------------------------------------

def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=32.0, help="table file size (GiB)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--steps", type=int, default=150, help="steps per arm")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--log-every", type=int, default=25, help="print samples/s every N steps")
    ap.add_argument("--zipf", type=float, default=1.05)
    # 10% of 132M rows = 3.2 GiB of slots + 2 GiB of planner state (16 B/row): leaves ~17 GiB
    # of a 23.5 GiB machine to the page cache, and holds the ~92% of Zipf(1.05) lookups that
    # go to the top 10% of rows in a long run. A short run never fills it (no evictions).
    ap.add_argument("--capacity", default="0.1", help="fast tier: a fraction of rows or a row count")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--fetch-threads", type=int, default=32, help="the tiered arm's gather threads")
    ap.add_argument("--arms", default=",".join(ARMS),
                    help=f"comma-separated, first is the baseline; from {', '.join(ARMS)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default="/work/bigtmp", help="where the table file goes (not tmpfs)")
    ap.add_argument("--json", default="bench_bigger_than_ram.json")
    a = ap.parse_args()
    arms = a.arms.split(",")
    if bad := [x for x in arms if x not in ARMS]:
        ap.error(f"unknown arm(s) {bad}; expected some of {ARMS}")

    optimizer = make_row_optimizer("rowwise_adagrad", lr=0.05, dim=a.dim)
    width = a.dim + optimizer.state_width
    card = int(a.size_gib * 2**30) // (width * 4)
    file_bytes = card * width * 4
    root = Path(a.dir)
    root.mkdir(parents=True, exist_ok=True)
    work = root / f"hotpipe-btr-{os.getpid()}"
    info = machine(root)
    need = file_bytes + (2 << 30)
    if info["disk_free_bytes"] < need:
        sys.exit(f"{root}: {info['disk_free_bytes'] / 2**30:.1f} GiB free, need {need / 2**30:.1f} GiB")
    bigger = file_bytes > info["ram_bytes"]
    print(f"{info['cpu']}, {info['cores']} cores, RAM {info['ram_bytes'] / 2**30:.1f} GiB, "
          f"{root} free {info['disk_free_bytes'] / 2**30:.0f} GiB, load {loadavg()}")
    print(f"table: {card:,} rows x {width} floats = {file_bytes / 2**30:.2f} GiB "
          + ("(bigger than RAM)" if bigger else "(NOT bigger than RAM: a development run)"),
          flush=True)

    signal.signal(signal.SIGTERM, _raise_interrupt)
    runs: list[dict[str, Any]] = []
    try:
        t0 = time.perf_counter()
        make_dataset(work / "data", rows=a.steps * a.batch_size, card=card, zipf=a.zipf, seed=a.seed)
        data_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_table(work / "tables" / "table-000.f32", card=card, dim=a.dim, optimizer=optimizer,
                    seed=a.seed)
        init_s = time.perf_counter() - t0
        print(f"dataset {data_s:.1f}s; table file written in {init_s:.1f}s "
              f"({file_bytes / init_s / 2**20:,.0f} MiB/s)", flush=True)
        ds = ColumnarDataset.open(work / "data")
        for r in range(a.repeats):
            for arm in arms:
                x = run_arm(arm, a, ds, work / "tables", card)
                x["repeat"] = r
                runs.append(x)
                c = x["cache"]
                extra = (f" hit={c['hit_rate']:.3f} fetched={c['rows_fetched']:,} "
                         f"stall={x['stall_share']:.0%}" if arm.startswith("tiered") else "")
                print(f"{time.strftime('%H:%M:%S')} [{r}] {arm:11s} {x['samples_per_s']:>9,.0f} samples/s  "
                      f"train {x['train_s']:.1f}s flush {x['flush_s']:.1f}s  "
                      f"disk reads {x['disk_reads']:,} ({x['disk_read_bytes'] / 2**20:,.0f} MiB)  "
                      f"majflt {x['major_faults']:,}{extra}  "
                      f"load {x['load_before'][0]:.2f}->{x['load_after'][0]:.2f}  "
                      f"avail {x['mem_available_before'] / 2**30:.1f} GiB"
                      + ("" if x["cold_start"] else "  (page cache NOT dropped: not root?)"),
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"removed {work}", flush=True)

    med = {arm: statistics.median(x["samples_per_s"] for x in runs if x["arm"] == arm)
           for arm in arms}
    base = arms[0]
    print(f"\nmedian samples/s over {a.repeats} repeats ({a.steps} steps of {a.batch_size}, "
          f"{file_bytes / 2**30:.2f} GiB file, {'bigger' if bigger else 'NOT bigger'} than RAM):")
    for arm in arms:
        last = [x for x in runs if x["arm"] == arm][-1]
        tail = (f"  hit {last['cache']['hit_rate']:.3f}, fetched {last['cache']['rows_fetched']:,}, "
                f"stall {last['stall_share']:.0%}" if arm.startswith("tiered") else "")
        print(f"  {arm:11s} {med[arm]:>9,.0f}  x{med[arm] / med[base]:.2f} vs {base}{tail}")
    Path(a.json).write_text(json.dumps({
        "args": vars(a), "machine": info, "rows": card, "file_bytes": file_bytes,
        "bigger_than_ram": bigger, "runs": runs, "median": med,
        "ratio": {arm: med[arm] / med[base] for arm in arms}}, indent=2))


if __name__ == "__main__":
    main()
