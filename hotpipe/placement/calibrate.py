"""Measure this machine's rates for the cost model (``hotpipe calibrate``).

Each rate is measured on the code path training runs, on small seeded
synthetic data, and fitted with non-negative least squares:

- compute: ``hotpipe.train.run.train`` untiered (``cache.policy=none``) at
  batch B and B/2, per step -> ``per_step_s + per_sample_s * B``;
- batch read: :class:`~hotpipe.data.loader.BatchLoader` ``.batch`` per sample;
- tiers: :class:`~hotpipe.storage.tiered.TieredStore` ``.apply`` of plans with
  F fetches and W dirty evictions on host RAM and on memory-mapped files;
- planner: :class:`~hotpipe.plan.Planner` per step, per policy, against
  lookups and misses;
- overlap: the training step body alone, a real mover loop (plan + apply +
  read) alone, and both at once -> each one's speed while sharing the machine;
- link: two ranks on this machine's loopback (gloo, the distributed
  runtime's backend on CPU) time ``all_to_all_single`` and ``all_reduce``
  at several sizes -> latency + bytes per second of each;
- route: the tensor work every rank of the distributed runtime does to
  work out every peer's routes (``distributed/exchange.py``'s ``route``:
  the same torch calls, timed here without a process group) against ranks
  and global lookups.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from hotpipe.config import RunConfig
from hotpipe.data.columnar import ColumnarDataset, ColumnarWriter, TableSpec
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader
from hotpipe.data.synth import ZipfSampler
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.placement.costmodel import model_key, profiled_lookups
from hotpipe.placement.fit import nonneg_lstsq
from hotpipe.placement.hardware import (
    ComputeFit,
    Hardware,
    Link,
    Overlap,
    PlannerFit,
    RouteFit,
    TierRates,
)
from hotpipe.placement.routing import Routing
from hotpipe.plan.planner import Planner
from hotpipe.plan.policies import make_policy
from hotpipe.plan.types import StepPlan
from hotpipe.storage.backing import BackingStore, FileBacking, HostBacking
from hotpipe.storage.slots import SlotStore
from hotpipe.storage.tiered import TieredStore

POLICIES = ("lookahead", "lru", "lfu", "static")
TIERS = ("host", "file")
_EMPTY = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class CalibrationSpec:
    """What to calibrate for.

    Attributes:
        run: the run configuration (model, optimizers, batch size, threads).
        tables, num_dense: the dataset's shape.
        rows_per_table: rows of each calibration table for the tier and
            planner measurements (big enough that random rows miss the CPU cache).
        steps: training steps per compute measurement.
        repeats: measurements per point (the median is kept).
        policies, tiers: which planner policies and backing tiers to time.
        workdir: where temporary datasets and table files go.
        seed: data and id choices.
        overlap: measure compute/mover contention.
        link: measure the collectives between two local ranks (gloo).
        route: measure the distributed runtime's per-step routing work.
    """

    run: RunConfig
    tables: int = 26
    num_dense: int = 13
    rows_per_table: int = 1 << 15
    steps: int = 30
    repeats: int = 3
    policies: tuple[str, ...] = POLICIES
    tiers: tuple[str, ...] = TIERS
    workdir: str | None = None
    seed: int = 0
    overlap: bool = True
    link: bool = True
    route: bool = True


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def make_calibration_data(path: Path, *, rows: int, tables: int, rows_per_table: int, num_dense: int,
                          seed: int, zipf: float = 1.05) -> Path:
    """Zipf(``zipf``) ids scattered over each table, random dense features and labels."""
    rng = np.random.default_rng(seed)
    sampler = ZipfSampler(rows_per_table, zipf)
    perm = [rng.permutation(rows_per_table) for _ in range(tables)]
    sparse = np.stack([perm[t][sampler.sample(rng.random(rows))] for t in range(tables)], axis=1)
    with ColumnarWriter(path, tables=[TableSpec(f"C{t + 1}", rows_per_table) for t in range(tables)],
                        num_dense=num_dense, overwrite=True) as w:
        w.append(rng.integers(0, 2, rows).astype(np.float32),
                 rng.random((rows, num_dense), dtype=np.float32), sparse.astype(np.int32))
        w.finish(encoding={"kind": "calibration"}, sources=[])
    return path


def _median_time(fn: Callable[[], float], repeats: int) -> float:
    return float(np.median([fn() for _ in range(repeats)]))


# -------------------------------------------------------------------- compute


def measure_compute(spec: CalibrationSpec, work: Path) -> ComputeFit:
    """Per-step time of untiered training at B and B/2 (median of repeats)."""
    from hotpipe.train.run import train  # the real training path

    b = spec.run.data.batch_size
    data = make_calibration_data(work / "compute-data", rows=(spec.steps + 2) * b, tables=spec.tables,
                                 rows_per_table=1024, num_dense=spec.num_dense, seed=spec.seed)
    runs = 0

    def once(batch: int, steps: int) -> float:
        nonlocal runs
        runs += 1
        cfg = spec.run.model_copy(update={
            "data": spec.run.data.model_copy(update={"path": str(data), "batch_size": batch,
                                                     "val_fraction": 0.01, "max_val_rows": batch}),
            "train": spec.run.train.model_copy(update={"max_steps": steps, "progress": False,
                                                       "eval_every": 0, "checkpoint_every": 0}),
            "cache": spec.run.cache.model_copy(update={"policy": "none"}),
        })
        m = train(cfg, work / f"compute-run-{runs}")
        return float(m["train_seconds"]) / max(int(m["steps"]), 1)

    once(b, 3)  # warm-up: first-use costs of the process (allocator, thread pool)
    xs, ys = [], []
    for batch in (b, max(1, b // 2)):
        for _ in range(spec.repeats):
            xs.append([1.0, batch])
            ys.append(once(batch, spec.steps))
    c = nonneg_lstsq(np.array(xs), np.array(ys))
    return ComputeFit(per_step_s=float(c[0]), per_sample_s=float(c[1]),
                      model=model_key(spec.run, spec.tables))


def measure_batch_read(data: Path, batch: int, steps: int) -> float:
    """Seconds per sample to read a batch (labels, dense, ids) from the memory map."""
    loader = BatchLoader(ColumnarDataset.open(data), batch_size=batch)
    n = min(steps, len(loader))
    t0 = time.perf_counter()
    for s in range(n):
        loader.batch(s)
    return (time.perf_counter() - t0) / max(n * batch, 1)


# ---------------------------------------------------------------------- tiers


def _backing(tier: str, spec: CalibrationSpec, work: Path) -> BackingStore:
    run = spec.run
    opt = make_row_optimizer(run.optim.embedding, lr=run.optim.embedding_lr, dim=run.model.embedding_dim)
    cards = [spec.rows_per_table] * spec.tables
    if tier == "host":
        return HostBacking(cardinalities=cards, dim=run.model.embedding_dim, optimizer=opt, seed=spec.seed)
    return FileBacking(directory=work / "tier-files", cardinalities=cards, dim=run.model.embedding_dim,
                       optimizer=opt, seed=spec.seed)


def _plan(fetch_ids: np.ndarray, fetch_slots: np.ndarray, evict_ids: np.ndarray,
          evict_slots: np.ndarray) -> StepPlan:
    return StepPlan(step=0, lookup_slots=_EMPTY, unique_ids=_EMPTY, unique_slots=_EMPTY,
                    fetch_ids=fetch_ids, fetch_slots=fetch_slots, evict_ids=evict_ids,
                    evict_slots=evict_slots)


def measure_tier(tier: str, spec: CalibrationSpec, work: Path) -> TierRates:
    """Fit ``TieredStore.apply`` time against rows fetched and rows written back."""
    run = spec.run
    opt = make_row_optimizer(run.optim.embedding, lr=run.optim.embedding_lr, dim=run.model.embedding_dim)
    backing = _backing(tier, spec, work)
    num_rows = spec.rows_per_table * spec.tables
    slots = min(1 << 16, num_rows // 2)
    cache = SlotStore.allocate(slots, run.model.embedding_dim, opt)
    store = TieredStore(cache=cache, backing=backing,
                        layout=TableLayout([spec.rows_per_table] * spec.tables))
    rng = np.random.default_rng(spec.seed)
    resident = rng.choice(num_rows, slots, replace=False).astype(np.int64)  # id in each slot
    store.apply(_plan(resident, np.arange(slots, dtype=np.int64), _EMPTY, _EMPTY))
    is_res = np.zeros(num_rows, dtype=bool)
    is_res[resident] = True
    xs, ys = [], []
    sizes = [m for m in (256, 1024, 4096, 16384) if m <= slots // 2]
    try:
        for _ in range(spec.repeats):
            for m in sizes:
                for dirty in (True, False):
                    out_slots = rng.choice(slots, m, replace=False).astype(np.int64)
                    new = rng.choice(np.flatnonzero(~is_res), m, replace=False).astype(np.int64)
                    cache.dirty[torch.from_numpy(out_slots)] = dirty  # as if a step had updated them
                    plan = _plan(new, out_slots, resident[out_slots].copy(), out_slots)
                    t0 = time.perf_counter()
                    store.apply(plan)
                    ys.append(time.perf_counter() - t0)
                    xs.append([1.0, m, m if dirty else 0])
                    is_res[resident[out_slots]] = False
                    is_res[new] = True
                    resident[out_slots] = new
    finally:
        store.close()
    c = nonneg_lstsq(np.array(xs), np.array(ys))
    return TierRates(per_apply_s=float(c[0]), per_fetch_s=float(c[1]), per_writeback_s=float(c[2]))


# -------------------------------------------------------------------- planner


def _long_run(spec: CalibrationSpec) -> int:
    """Steps of the long planner runs: past any up-front profile, so that the
    one-off profiling cost and the per-lookup cost vary independently."""
    profiled = max((make_policy(p).profile_steps(None) for p in spec.policies), default=0)
    return max(3 * spec.steps, profiled + 2 * spec.steps)


def measure_planner(policy: str, data: Path, spec: CalibrationSpec) -> PlannerFit:
    """Fit planning time (reading the ids included) against steps, lookups, misses and profiling.

    Fitted on whole runs, not single steps: a step's time is dominated by
    scheduler noise on a shared machine (a preempted step takes a 5 ms
    slice), and the first step also loads the whole window; a run's total
    is what throughput depends on. Runs differ in batch size, capacity and
    length, so per-step, per-lookup, per-miss and one-off profiling costs
    can be told apart.
    """
    ds = ColumnarDataset.open(data)
    layout = TableLayout.of(ds)
    offsets, num_rows = layout.offsets, layout.num_rows
    b, short, long = spec.run.data.batch_size, spec.steps, _long_run(spec)
    xs, ys = [], []
    for _ in range(spec.repeats):
        for batch, frac, steps in ((b, 0.1, short), (b, 0.5, long), (max(1, b // 2), 0.1, long),
                                   (max(1, b // 2), 0.5, short)):
            loader = BatchLoader(ds, batch_size=batch, drop_last=True)
            steps = min(len(loader), steps)
            pinned = 2 * batch * ds.num_tables  # depth 1: two steps' lookups at most
            cap = min(num_rows, max(pinned, int(frac * num_rows)))
            planner = Planner(num_rows=num_rows, capacity=cap, window=16, depth=1, policy=policy)
            looks, misses = [], 0
            t0 = time.perf_counter()
            # A generator, as the tiered feed gives it (static sizes its profile by that).
            for p in planner.plan(loader.id_stream(offsets, 0, steps)):
                looks.append(p.lookup_slots.size)
                misses += p.num_misses
            ys.append(time.perf_counter() - t0)
            arr = np.asarray(looks)
            xs.append([len(looks), arr.sum(), misses, profiled_lookups(policy, arr)])
    c = nonneg_lstsq(np.array(xs, dtype=np.float64), np.array(ys))
    return PlannerFit(per_step_s=float(c[0]), per_lookup_s=float(c[1]), per_miss_s=float(c[2]),
                      per_profiled_lookup_s=float(c[3]))


# -------------------------------------------------------------------- overlap


class _ComputeLoop:
    """The body of ``hotpipe.train.loop.train_steps`` on pre-made random batches."""

    def __init__(self, spec: CalibrationSpec) -> None:
        from hotpipe.train.builders import build_dense_optimizer, build_model

        run, b = spec.run, spec.run.data.batch_size
        rows, dim = 1024 * spec.tables, run.model.embedding_dim
        opt = make_row_optimizer(run.optim.embedding, lr=run.optim.embedding_lr, dim=dim)
        self.model = build_model(run.model, num_dense=spec.num_dense, num_tables=spec.tables)
        self.dense_opt = build_dense_optimizer(run.optim, self.model.parameters())
        self.emb = SparseEmbedding(store=SlotStore.allocate(rows, dim, opt), optimizer=opt)
        g = torch.Generator().manual_seed(spec.seed)
        self.batches = [(torch.rand(b, spec.num_dense, generator=g),
                         torch.randint(0, rows, (b, spec.tables), generator=g),
                         torch.randint(0, 2, (b,), generator=g).float()) for _ in range(4)]
        self.loss_fn = torch.nn.BCEWithLogitsLoss()

    def run(self, steps: int) -> float:
        t0 = time.perf_counter()
        for s in range(steps):
            dense, slots, labels = self.batches[s % len(self.batches)]
            emb = self.emb.lookup(slots)
            loss = self.loss_fn(self.model(dense, emb), labels)
            self.dense_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.dense_opt.step()
            if emb.grad is not None:
                self.emb.apply_gradients(slots, emb.grad)
            float(loss.detach())
        return time.perf_counter() - t0


class _MoverLoop:
    """A real mover (plan + apply + read batch, as the tiered feed does), looping."""

    def __init__(self, spec: CalibrationSpec, data: Path) -> None:
        run = spec.run
        self.ds = ColumnarDataset.open(data)
        self.loader = BatchLoader(self.ds, batch_size=run.data.batch_size, drop_last=True)
        self.layout = TableLayout.of(self.ds)
        self.offsets, self.num_rows = self.layout.offsets, self.layout.num_rows
        dim = run.model.embedding_dim
        opt = make_row_optimizer(run.optim.embedding, lr=run.optim.embedding_lr, dim=dim)
        self.capacity = min(self.num_rows, max(int(0.1 * self.num_rows),
                                               2 * run.data.batch_size * self.ds.num_tables))
        backing = HostBacking(cardinalities=self.ds.cardinalities, dim=dim, optimizer=opt, seed=0)
        self.store = TieredStore(cache=SlotStore.allocate(self.capacity, dim, opt), backing=backing,
                                 layout=self.layout)
        self.units = 0
        self.stop = threading.Event()

    def loop(self) -> None:
        while not self.stop.is_set():
            planner = Planner(num_rows=self.num_rows, capacity=self.capacity, window=16, depth=1,
                              policy="lookahead")
            # A fresh cache each lap: the first plan of a lap fetches into free slots.
            self.store.slot_ids.fill_(-1)
            for p in planner.plan(self.loader.id_stream(self.offsets)):
                if self.stop.is_set():
                    return
                self.store.apply(p)
                self.loader.batch(p.step)
                self.units += 1

    def run_for(self, seconds: float) -> tuple[int, float]:
        self.units, self.stop = 0, threading.Event()
        th = threading.Thread(target=self.loop, daemon=True)
        t0 = time.perf_counter()
        th.start()
        time.sleep(seconds)
        self.stop.set()
        th.join()
        return self.units, time.perf_counter() - t0


def measure_overlap(spec: CalibrationSpec, data: Path) -> Overlap:
    """Speeds of compute and mover while both run, relative to each alone (medians)."""
    comp, mover = _ComputeLoop(spec), _MoverLoop(spec, data)
    comp.run(3)  # warm-up
    c_rates, m_rates = [], []
    for _ in range(spec.repeats):
        solo_c = comp.run(spec.steps)
        units, secs = mover.run_for(solo_c)
        solo_m = units / secs
        mover.units, mover.stop = 0, threading.Event()
        th = threading.Thread(target=mover.loop, daemon=True)
        th.start()
        both_c = comp.run(spec.steps)
        mover.stop.set()
        th.join()
        c_rates.append(solo_c / both_c)
        m_rates.append((mover.units / both_c) / solo_m if solo_m > 0 else 1.0)
    mover.store.close()
    return Overlap(compute_rate=float(min(1.0, np.median(c_rates))),
                   mover_rate=float(min(1.0, np.median(m_rates))))


# ----------------------------------------------------------------------- link

#: Bytes one rank sends per collective in the link measurement (0: latency alone).
LINK_SIZES = (0, 1 << 14, 1 << 17, 1 << 20, 1 << 22)


def _busy_loop() -> None:
    """~20 ms of one thread's work (the same on every rank and alone)."""
    x = torch.rand(96, 96, generator=torch.Generator().manual_seed(0))
    for _ in range(400):
        x = torch.tanh(x @ x)


def _link_rank(rank: int, world: int, port: int, repeats: int, out: str) -> None:
    """One rank of the link measurement: time each collective at each size (median)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    a2a, ar = [], []
    try:
        for size in LINK_SIZES:
            n = size // 4  # floats this rank sends in all
            send = torch.ones(n)  # (n,), one equal block per peer (its own block is not traffic)
            recv = torch.empty(n)
            times_a, times_r = [], []
            for _ in range(repeats + 1):  # the first call of a size warms buffers up
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_to_all_single(recv, send)
                times_a.append(time.perf_counter() - t0)
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(send)
                times_r.append(time.perf_counter() - t0)
            a2a.append(float(np.median(times_a[1:])))
            ar.append(float(np.median(times_r[1:])))
        # Steps in miniature: the same CPU work on every rank, then a collective.
        # On a machine the ranks share, one rank is often descheduled while the
        # others wait for it: the step lasts longer than the work.
        busy, whole = [], []
        for _ in range(repeats + 1):
            dist.barrier()
            t0 = time.perf_counter()
            _busy_loop()
            t1 = time.perf_counter()
            dist.all_reduce(torch.zeros(1))
            busy.append(t1 - t0)
            whole.append(time.perf_counter() - t0)
    finally:
        dist.destroy_process_group()
    Path(out).write_bytes(pickle.dumps({"a2a": a2a, "allreduce": ar, "busy": busy[1:],
                                        "whole": whole[1:]}))


def measure_link(spec: CalibrationSpec, *, world: int = 2) -> Link:
    """Latency and bandwidth of gloo's all_to_all and all_reduce between ``world`` local ranks.

    Ranks are forked from a fork server that imports torch first (as
    ``distributed/spawn.py`` starts ranks): a process that has already run
    torch ops must not be forked, and a fresh interpreter per rank takes
    seconds to import torch on a loaded machine. The fit is per byte a rank
    sends to its peers: ``(W-1)/W`` of its buffer in an all-to-all.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from hotpipe.train.run import torch_threads

    with torch_threads(1):  # the same loop alone: what one rank does with a core to itself
        solo = []
        for _ in range(max(3, spec.repeats)):
            t0 = time.perf_counter()
            _busy_loop()
            solo.append(time.perf_counter() - t0)
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=60))
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "hotpipe.placement.calibrate"])
    with tempfile.TemporaryDirectory(dir=spec.workdir, prefix="hotpipe-link-") as tmp:
        outs = [str(Path(tmp) / f"rank{r}.pkl") for r in range(world)]
        procs = [ctx.Process(target=_link_rank, args=(r, world, store.port, max(5, 5 * spec.repeats),
                                                      outs[r])) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        if any(p.exitcode != 0 for p in procs) or not all(Path(o).exists() for o in outs):
            for p in procs:
                if p.is_alive():
                    p.kill()
            raise RuntimeError(f"link measurement failed: rank exit codes {[p.exitcode for p in procs]}")
        res = [pickle.loads(Path(o).read_bytes()) for o in outs]
    # The collective ends when the slowest rank's does: the slower rank's time.
    a2a = np.max([r["a2a"] for r in res], axis=0)
    ar = np.max([r["allreduce"] for r in res], axis=0)
    sizes = np.asarray(LINK_SIZES, dtype=np.float64)
    sent = sizes * (world - 1) / world
    ca = nonneg_lstsq(np.stack([np.full(len(sizes), world - 1.0), sent], axis=1), a2a)
    ring = 2.0 * (world - 1)
    cr = nonneg_lstsq(np.stack([np.full(len(sizes), ring), ring / world * sizes], axis=1), ar)

    def rate(per_byte: float) -> float:
        return 1.0 / per_byte if per_byte > 0 else 1e12  # no measurable cost per byte

    # The busy loop: the collective ends with the slowest rank; the work is the mean rank's.
    whole = float(np.median(np.max([r["whole"] for r in res], axis=0)))
    busy = float(np.median(np.mean([r["busy"] for r in res], axis=0)))
    sync = max(0.0, (whole - ring * float(cr[0])) / busy - 1.0) if busy > 0 else 0.0
    slowdown = max(1.0, busy / float(np.median(solo))) if busy > 0 else 1.0
    return Link(bytes_per_s=rate(float(ca[1])), latency_s=float(ca[0]), measured=True,
                allreduce_bytes_per_s=rate(float(cr[1])), allreduce_latency_s=float(cr[0]),
                sync_penalty=sync, concurrency_slowdown=slowdown, world_size=world, how=f"gloo, {world} ranks on this machine's loopback, 1 thread each")


# ---------------------------------------------------------------------- route


def route_work(rt: Routing, needs: list[torch.Tensor]) -> int:
    """One rank's routing of one step, as the runtime does it (``placement/routing.py``,
    called by ``distributed/exchange.py``'s ``route``). Returns the rows it would serve."""
    return len(rt.route(needs).serve)


def measure_route(spec: CalibrationSpec, data: Path) -> RouteFit:
    """Fit :func:`route_work` time against ranks and global lookups (real ids of ``data``;
    the form is :class:`~hotpipe.placement.hardware.RouteFit`'s)."""
    ds = ColumnarDataset.open(data)
    layout = TableLayout.of(ds)
    offsets, num_rows = torch.from_numpy(layout.offsets.copy()), layout.num_rows
    b = spec.run.data.batch_size
    xs, ys = [], []
    for _ in range(spec.repeats):
        for batch in (b, 2 * b):
            for w in (2, 4, 8, 16):
                big = max(w, batch - batch % w)
                rt = Routing(num_rows, world_size=w, rank=0)  # once per run in the runtime too
                times = []
                for lo in range(0, min(4 * big, ds.rows - big + 1), big):
                    gids = torch.from_numpy(np.asarray(ds.sparse[lo:lo + big], dtype=np.int64)) + offsets
                    per = big // w  # (B, T) global ids, B/W samples a rank
                    needs = [gids[s * per:(s + 1) * per] for s in range(w)]
                    t0 = time.perf_counter()
                    route_work(rt, needs)
                    times.append(time.perf_counter() - t0)
                if times:
                    n = big * ds.num_tables
                    xs.append([1.0, w, n, RouteFit.sort_units(w, n)])
                    ys.append(float(np.median(times)))
    c = nonneg_lstsq(np.array(xs), np.array(ys))
    return RouteFit(per_step_s=float(c[0]), per_rank_s=float(c[1]), per_scan_s=float(c[2]),
                    per_lookup_s=float(c[3]), measured=True)


# ---------------------------------------------------------------------- all


def calibrate(spec: CalibrationSpec, *, log: Callable[[str], None] = lambda s: None) -> Hardware:
    """Measure everything the cost model needs on this machine.

    Args:
        spec: the run to calibrate for and how hard to measure.
        log: progress messages (the CLI prints them).
    """
    from hotpipe.train.run import torch_threads

    # train.threads is a setting of the measurement, not of the calling process.
    with torch_threads(spec.run.train.threads):
        return _calibrate(spec, log)


def _calibrate(spec: CalibrationSpec, log: Callable[[str], None]) -> Hardware:
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(dir=spec.workdir, prefix="hotpipe-calibrate-") as tmp:
        work = Path(tmp)
        b = spec.run.data.batch_size
        data = make_calibration_data(work / "trace-data", rows=(_long_run(spec) + 2) * b,
                                     tables=spec.tables, rows_per_table=spec.rows_per_table,
                                     num_dense=spec.num_dense, seed=spec.seed)
        t0 = time.perf_counter()
        log("compute (untiered training steps at B and B/2)")
        compute = measure_compute(spec, work)
        read = measure_batch_read(data, b, spec.steps)
        tiers = {}
        for tier in spec.tiers:
            log(f"tier {tier}: apply() vs rows fetched / written back")
            tiers[tier] = measure_tier(tier, spec, work)
        planner = {}
        for policy in spec.policies:
            log(f"planner {policy}: time per step vs lookups / misses")
            planner[policy] = measure_planner(policy, data, spec)
        overlap = Overlap()
        if spec.overlap:
            log("overlap: compute and mover alone and together")
            overlap = measure_overlap(spec, data)
        link = Link()
        if spec.link:
            log("link: gloo all_to_all / all_reduce between 2 local ranks")
            link = measure_link(spec)
        route = RouteFit()
        if spec.route:
            log("route: the distributed step's routing work vs ranks and lookups")
            route = measure_route(spec, data)
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "loadavg_before": load_before, "loadavg_after": _loadavg(),
               "seconds": time.perf_counter() - t0, "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    return Hardware(compute=compute, tiers=tiers, planner=planner, batch_read_per_sample_s=read,
                    overlap=overlap, link=link, route=route, machine=machine)
