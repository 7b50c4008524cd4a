"""Step throughput: hotpipe's DCN-v2 vs TorchRec's ``DLRM_DCN`` over the same tables (issue 12).

One invocation builds both models with *the same weights* (hotpipe's, copied
into TorchRec's modules) and trains them on the same batches, interleaved, at
each thread count; it prints samples/s (median of the repeats), the ratio
hotpipe / TorchRec, the machine load, and how far apart the two runs' losses
are (they compute the same model, so the losses must track each other: a
check that the comparison is like for like).

Arms (one step = forward + backward + every update, CPU):

* ``hotpipe``      the training loop's step body (``train/loop.py``): slots of
                   the batch's ids, ``SparseEmbedding.lookup`` over an untiered
                   ``SlotStore``, ``DCN`` (stacked, low-rank cross net), BCE,
                   backward, dense Adagrad, row-wise Adagrad sparse update.
* ``hotpipe_kjt``  the same, fed a ``KeyedJaggedTensor`` through
                   ``hotpipe.interop.kjt.lookup_kjt`` (the interop's cost).
* ``torchrec``     ``torchrec.models.dlrm.DLRM_DCN`` sharded by
                   ``DistributedModelParallel`` (one gloo rank, CPU): tables in
                   FBGEMM's TBE with its fused EXACT_ROWWISE_ADAGRAD applied in
                   backward (TorchRec's training path), dense Adagrad.

Same sizes both sides: dense MLP 13-512-256-64, x0 = [dense | 26 x 64] (1728
wide), 3 low-rank cross layers (r = 512), then 512-256-1; tables: row-wise Adagrad
lr 0.05, eps 1e-8; dense: Adagrad lr 0.001.

Usage::

    python benchmarks/bench_dcn_torchrec.py                       # 26 x 100k rows, dim 64, B 2048
    python benchmarks/bench_dcn_torchrec.py --quick               # a small smoke run
    python benchmarks/bench_dcn_torchrec.py --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hotpipe.data.layout import TableLayout
from hotpipe.interop.ebc_state import to_ebc_state
from hotpipe.interop.kjt import lookup_kjt
from hotpipe.model.dcn import DCN
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.storage.slots import SlotStore


@dataclass(frozen=True)
class Config:
    tables: int = 26
    rows: int = 100_000
    dim: int = 64
    batch_size: int = 2048
    num_dense: int = 13
    bottom: tuple[int, ...] = (512, 256, 64)
    cross_layers: int = 3
    cross_rank: int = 512
    over: tuple[int, ...] = (512, 256)  # hotpipe: deep MLP; TorchRec: over arch before the last 1
    zipf: float = 1.05
    lr: float = 0.05  # the tables' row-wise Adagrad
    # Dense Adagrad: its first steps move every weight by about lr, and at 0.05 a
    # 1728-wide cross net blows the loss up to 1e11 in one step, after which the two
    # runs' losses can no longer be compared; 0.001 trains (checked by the loss gap).
    dense_lr: float = 0.001
    eps: float = 1e-8
    batches: int = 4  # distinct batches, cycled
    warmup: int = 1  # untimed steps before each measurement
    steps: int = 4  # timed steps per measurement
    repeats: int = 3
    seed: int = 0


# --------------------------------------------------------------------------- data


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T) int64 local ids
    dense: torch.Tensor  # (B, F)
    labels: torch.Tensor  # (B,)
    kjt: Any  # the same ids as a KeyedJaggedTensor (one id per bag)


def make_batches(cfg: Config, keys: list[str]) -> list[Batch]:
    """Zipf(cfg.zipf) ids per table, hot ranks scattered by a permutation per table."""
    from torchrec import KeyedJaggedTensor

    rng = np.random.default_rng(cfg.seed)
    perms = [rng.permutation(cfg.rows) for _ in range(cfg.tables)]
    out = []
    for _ in range(cfg.batches):
        ranks = np.minimum(rng.zipf(cfg.zipf + 1e-9 if cfg.zipf > 1 else 1.01,
                                    (cfg.batch_size, cfg.tables)) - 1, cfg.rows - 1)
        ids = torch.from_numpy(np.stack([perms[t][ranks[:, t]] for t in range(cfg.tables)], 1))
        dense = torch.from_numpy(np.log1p(rng.exponential(3.0, (cfg.batch_size, cfg.num_dense)))
                                 .astype(np.float32))
        labels = torch.from_numpy((rng.random(cfg.batch_size) < 0.25).astype(np.float32))
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=keys, values=ids.t().reshape(-1).contiguous(),
            lengths=torch.ones(cfg.tables * cfg.batch_size, dtype=torch.int32))
        out.append(Batch(ids.to(torch.int64), dense, labels, kjt))
    return out


# --------------------------------------------------------------------------- arms


class HotpipeArm:
    """hotpipe's DCN-v2 with an untiered store (the tiers sit under the lookup)."""

    def __init__(self, cfg: Config, layout: TableLayout, weights: torch.Tensor, *, kjt: bool) -> None:
        torch.manual_seed(cfg.seed)
        self.model = DCN(num_dense=cfg.num_dense, num_tables=cfg.tables, embedding_dim=cfg.dim,
                         bottom=list(cfg.bottom), cross_layers=cfg.cross_layers,
                         cross_rank=cfg.cross_rank, structure="stacked", deep=list(cfg.over), top=[1])
        self.dense_opt = torch.optim.Adagrad(self.model.parameters(), lr=cfg.dense_lr, eps=1e-10)
        opt = make_row_optimizer("rowwise_adagrad", lr=cfg.lr, dim=cfg.dim, eps=cfg.eps)
        store = SlotStore.allocate(layout.num_rows, cfg.dim, opt)
        store.weights.copy_(weights)
        self.embedding = SparseEmbedding(store=store, optimizer=opt)
        self.layout, self.kjt = layout, kjt
        self.offsets = torch.from_numpy(layout.offsets.copy())
        self.loss_fn = nn.BCEWithLogitsLoss()

    def logits(self, b: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self.model(b.dense, self.embedding.lookup(b.ids + self.offsets))

    def step(self, b: Batch) -> float:
        if self.kjt:
            look = lookup_kjt(self.embedding, b.kjt, self.layout)
            inputs = look.inputs
        else:
            slots = b.ids + self.offsets  # (B, T), what the untiered feed yields
            emb = inputs = self.embedding.lookup(slots)  # (B, T, D) leaf
        loss = self.loss_fn(self.model(b.dense, inputs), b.labels)
        self.dense_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dense_opt.step()
        if self.kjt:
            look.apply_gradients(self.embedding)
        else:
            self.embedding.apply_gradients(slots, emb.grad)  # type: ignore[arg-type]
        return float(loss.detach())


def _linears(m: nn.Module) -> list[nn.Linear]:
    return [x for x in m.modules() if isinstance(x, nn.Linear)]


class TorchRecArm:
    """DLRM_DCN under DistributedModelParallel (one CPU rank), fused row-wise Adagrad."""

    def __init__(self, cfg: Config, layout: TableLayout, hot: HotpipeArm) -> None:
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        from torchrec.distributed import DistributedModelParallel
        from torchrec.models.dlrm import DLRM_DCN
        from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
        from torchrec.optim.optimizers import in_backward_optimizer_filter
        from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

        # On "meta": the sharder allocates the tables itself (in FBGEMM's TBE).
        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=n, embedding_dim=cfg.dim, num_embeddings=c, feature_names=[n])
            for n, c in zip(layout.names, layout.cardinalities, strict=True)], device=torch.device("meta"))
        model = DLRM_DCN(embedding_bag_collection=ebc, dense_in_features=cfg.num_dense,
                         dense_arch_layer_sizes=list(cfg.bottom),
                         over_arch_layer_sizes=[*cfg.over, 1], dcn_num_layers=cfg.cross_layers,
                         dcn_low_rank_dim=cfg.cross_rank, dense_device=torch.device("cpu"))
        _copy_dense(hot.model, model)
        apply_optimizer_in_backward(RowWiseAdagrad, model.sparse_arch.parameters(),
                                    {"lr": cfg.lr, "eps": cfg.eps})
        self.model = DistributedModelParallel(module=model, device=torch.device("cpu"))
        # hotpipe's tables through the interop's export, written into the TBE through
        # the one local shard of each table (a view of its weights).
        state, _ = to_ebc_state(hot.embedding.store.weights.numpy(), layout, dim=cfg.dim)
        sharded = self.model.state_dict()
        with torch.no_grad():
            for key, value in state.items():
                (shard,) = sharded[f"sparse_arch.embedding_bag_collection.{key}"].local_shards()
                shard.tensor.copy_(value)
        dense = dict(in_backward_optimizer_filter(self.model.named_parameters()))
        self.dense_opt = torch.optim.Adagrad(list(dense.values()), lr=cfg.dense_lr, eps=1e-10)
        self.loss_fn = nn.BCEWithLogitsLoss()

    def logits(self, b: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self.model(b.dense, b.kjt).squeeze(-1)

    def step(self, b: Batch) -> float:
        loss = self.loss_fn(self.model(b.dense, b.kjt).squeeze(-1), b.labels)
        self.dense_opt.zero_grad(set_to_none=True)
        loss.backward()  # the tables' fused optimizer runs here
        self.dense_opt.step()
        return float(loss.detach())


def _copy_dense(src: DCN, dst: nn.Module) -> None:
    """hotpipe DCN weights -> DLRM_DCN: bottom -> dense_arch, cross U/V/b -> W/V/bias
    kernels, deep + top -> over_arch (same widths, same order: x0 = [dense | tables])."""
    pairs = list(zip(_linears(src.bottom) if src.bottom is not None else [],
                     _linears(dst.dense_arch), strict=True))
    pairs += list(zip([*_linears(src.deep), *_linears(src.top)] if src.deep is not None else [],
                      _linears(dst.over_arch), strict=True))
    with torch.no_grad():
        for a, b in pairs:
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        cross = dst.inter_arch.crossnet
        for layer, maps in enumerate(src.cross.maps):
            down, up = _linears(maps)  # V (r, N), then U (N, r) + b
            cross.V_kernels[layer].copy_(down.weight)
            cross.W_kernels[layer].copy_(up.weight)
            cross.bias[layer].copy_(up.bias)


# --------------------------------------------------------------------------- measurement


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def measure(step: Callable[[Batch], float], batches: list[Batch], cfg: Config, start: int,
            ) -> tuple[dict[str, float], list[float]]:
    """Warm up, then time ``cfg.steps`` steps; the batch sequence continues from ``start``."""
    losses = []
    for i in range(cfg.warmup):
        losses.append(step(batches[(start + i) % len(batches)]))
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu()
    for i in range(cfg.warmup, cfg.warmup + cfg.steps):
        losses.append(step(batches[(start + i) % len(batches)]))
    wall = time.perf_counter() - t0
    return ({"samples_per_s": cfg.steps * cfg.batch_size / wall, "seconds": wall,
             "own_cores": (_cpu() - c0) / wall, "load": max(load0, os.getloadavg()[0])}, losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=26)
    ap.add_argument("--rows", type=int, default=100_000, help="rows per table")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    ap.add_argument("--arms", default="hotpipe,hotpipe_kjt,torchrec")
    ap.add_argument("--quick", action="store_true", help="4 tables x 10k rows, batch 512")
    ap.add_argument("--json", help="write every measurement here")
    a = ap.parse_args()
    cfg = Config(tables=a.tables, rows=a.rows, dim=a.dim, batch_size=a.batch_size,
                 repeats=a.repeats, steps=a.steps)
    if a.quick:
        cfg = Config(tables=4, rows=10_000, dim=16, batch_size=512, bottom=(64, 32, 16),
                     cross_rank=32, over=(64, 32), repeats=2, steps=3)
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]

    warnings.filterwarnings("ignore")  # fbgemm_gpu's import-time deprecation chatter
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    import torchrec

    layout = TableLayout([cfg.rows] * cfg.tables, [f"C{t + 1}" for t in range(cfg.tables)])
    batches = make_batches(cfg, list(layout.names))
    g = torch.Generator().manual_seed(cfg.seed)
    weights = torch.empty(layout.num_rows, cfg.dim).uniform_(-0.05, 0.05, generator=g)
    built: dict[str, Any] = {}
    if "hotpipe" in arms or "torchrec" in arms:
        built["hotpipe"] = HotpipeArm(cfg, layout, weights, kjt=False)
    if "hotpipe_kjt" in arms:
        built["hotpipe_kjt"] = HotpipeArm(cfg, layout, weights, kjt=True)
    if "torchrec" in arms:
        built["torchrec"] = TorchRecArm(cfg, layout, built["hotpipe"])
    del weights
    # Same weights, same batch: the models must agree before any timing counts.
    ref = next(iter(built.values())).logits(batches[0])
    agree = {k: float((v.logits(batches[0]) - ref).abs().max()) for k, v in built.items()}
    print(f"max |logit - {next(iter(built))}| before training: "
          + ", ".join(f"{k} {d:.2e}" for k, d in agree.items()))

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, torchrec {torchrec.__version__}; {cfg.tables} x {cfg.rows:,} rows, "
          f"dim {cfg.dim}, batch {cfg.batch_size}; {cfg.steps} timed steps after {cfg.warmup} warm-up, "
          f"{cfg.repeats} repeats, arms interleaved (order rotates)")
    runs: list[dict[str, Any]] = []
    losses: dict[str, list[float]] = {k: [] for k in arms}
    position = dict.fromkeys(arms, 0)  # each arm walks the same batch sequence
    before = torch.get_num_threads()
    try:
        for rep in range(cfg.repeats):
            for threads in a.threads:
                torch.set_num_threads(threads)
                order = arms[rep % len(arms):] + arms[:rep % len(arms)]
                for arm in order:
                    r, ls = measure(built[arm].step, batches, cfg, position[arm])
                    position[arm] += len(ls)
                    losses[arm] += ls
                    runs.append({"arm": arm, "threads": threads, "repeat": rep, **r})
                    print(f"  repeat {rep} threads {threads} {arm:12s} {r['samples_per_s']:9,.0f} "
                          f"samples/s  ({r['own_cores']:.2f} cores, load {r['load']:.2f})", flush=True)
    finally:
        torch.set_num_threads(before)

    # samples per second of this process's own CPU time: on a shared machine it moves far
    # less with the load than wall-clock samples/s (with 2 threads it also counts
    # OpenMP's spin-waiting, so it is a floor there).
    print("\n| threads | arm | samples/s (median) | repeats | vs torchrec | samples/CPU-s (median) "
          "| vs torchrec | load (1-min, max) |")
    print("|---|---|---|---|---|---|---|---|")
    summary = []
    for threads in a.threads:
        med = {arm: statistics.median(r["samples_per_s"] for r in runs
                                      if r["arm"] == arm and r["threads"] == threads) for arm in arms}
        cpu = {arm: statistics.median(r["samples_per_s"] / max(r["own_cores"], 1e-9) for r in runs
                                      if r["arm"] == arm and r["threads"] == threads) for arm in arms}
        for arm in arms:
            rs = [r for r in runs if r["arm"] == arm and r["threads"] == threads]
            ratio = med[arm] / med["torchrec"] if "torchrec" in med else float("nan")
            cpu_ratio = cpu[arm] / cpu["torchrec"] if "torchrec" in cpu else float("nan")
            load = max(r["load"] for r in rs)
            summary.append({"threads": threads, "arm": arm, "samples_per_s": med[arm],
                            "vs_torchrec": ratio, "samples_per_cpu_s": cpu[arm],
                            "cpu_vs_torchrec": cpu_ratio, "load_max": load,
                            "all": [round(r["samples_per_s"]) for r in rs]})
            print(f"| {threads} | {arm} | {med[arm]:,.0f} | {', '.join(f'{x:,}' for x in summary[-1]['all'])} "
                  f"| {ratio:.2f}x | {cpu[arm]:,.0f} | {cpu_ratio:.2f}x | {load:.2f} |")
    # Both sides do the same arithmetic in another order, so their losses agree to float
    # rounding at first and drift apart slowly as training amplifies it (the cycled
    # batches get memorised): report the steps that agree to 1e-5 and the largest gap.
    n = min(len(v) for v in losses.values())
    gaps = {k: [abs(x - y) for x, y in zip(v[:n], losses[arms[0]][:n], strict=True)]
            for k, v in losses.items()}
    agree_steps = {k: next((i for i, d in enumerate(g) if d > 1e-5), n) for k, g in gaps.items()}
    print(f"\nsame training vs {arms[0]} over {n} steps: "
          + ", ".join(f"{k}: first {agree_steps[k]} steps within 1e-5, max gap {max(g):.1e}"
                      for k, g in gaps.items() if k != arms[0]))
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"config": asdict(cfg), "threads": a.threads, "runs": runs, "summary": summary,
                       "logit_gap": agree, "loss_gap": {k: max(g) for k, g in gaps.items()},
                       "steps_within_1e-5": agree_steps, "losses": losses, "torch": torch.__version__,
                       "torchrec": torchrec.__version__}, f, indent=1)
    with contextlib.suppress(Exception):
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
