"""Scaling by simulation: the distributed runtime on 8..64 ranks for Criteo Terabyte-sized tables.

What we cannot run here, predicted with what we can measure here:

- tables: Criteo Terabyte's 26 fields as MLPerf DLRM hashes them (187.8M rows,
  ``placement/synthetic_trace.py``); ids from the synthetic generator's Zipf
  sampler and permutations; ``--steps`` sampled global batches (the runtime's
  exchange depends on one step's ids only, so per-step figures from a few
  sampled steps stand for an epoch of independent samples);
- model: MLPerf DLRM's shape (dim 128, bottom 512-256-128, top
  1024-1024-512-256-1), row-wise Adagrad rows;
- rates: this machine's, from ``hotpipe calibrate`` (compute of one rank with
  one thread, batch read, routing, gloo loopback link), each rank on a
  machine of its own (``ranks_per_host=1``); ``--link-gbps`` adds the same
  prediction with another link bandwidth (e.g. 12.5 for 100 Gb/s Ethernet);
- bytes exchanged: counted exactly on the sampled steps, as the runtime
  would send them (``placement/exchange_model.py``);
- each world size's best replicated share (``--replicate``) by predicted samples/s.

    python benchmarks/scale_ranks.py --hw hw_tb.json --out scale_ranks.json
    python benchmarks/scale_ranks.py            # calibrates first (a few minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hotpipe.config import RunConfig, validate
from hotpipe.placement.calibrate import CalibrationSpec, calibrate
from hotpipe.placement.costmodel import Candidate, workload_from_config
from hotpipe.placement.exchange_model import count_exchange, hottest_rows, replicated_set
from hotpipe.placement.hardware import Hardware
from hotpipe.placement.ranks import RankPrediction, predict_ranks
from hotpipe.placement.synthetic_trace import synthetic_steps, table_set


def mlperf_config(batch: int) -> RunConfig:
    return validate({"data": {"batch_size": batch},
                     "model": {"embedding_dim": 128, "bottom": [512, 256, 128],
                               "top": [1024, 1024, 512, 256, 1]},
                     "train": {"threads": 1, "progress": False}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hw", help="hardware file calibrated for this model (default: calibrate now)")
    ap.add_argument("--save-hw", default="hw_scale.json", help="where to keep a fresh calibration")
    ap.add_argument("--ranks", default="8,16,64")
    ap.add_argument("--batch", type=int, default=65536, help="global batch (MLPerf DLRM's)")
    ap.add_argument("--steps", type=int, default=3, help="sampled global batches")
    ap.add_argument("--zipf", default="1.05,1.2", help="skews of the sampled ids")
    ap.add_argument("--replicate", default="0,0.001,0.01", help="shares of all rows replicated")
    ap.add_argument("--memory", default="64GiB", help="memory a rank may hold")
    ap.add_argument("--link-gbps", type=float, default=12.5,
                    help="also predict with this link bandwidth in GB/s (0: only the calibrated one)")
    ap.add_argument("--out", default="scale_ranks.json")
    a = ap.parse_args()
    from hotpipe.capacity import parse_size

    cfg = mlperf_config(a.batch)
    cards = list(table_set("terabyte"))
    work = workload_from_config(cfg, cards, 13)
    load0 = os.getloadavg()[0]
    memory = parse_size(a.memory, "--memory")
    if a.hw:
        hw = Hardware.load(a.hw)
    else:
        # Per-rank batches of 8..64 ranks are 1k..8k: measure at 2048 and 1024.
        spec = CalibrationSpec(run=mlperf_config(2048), tables=26, num_dense=13, steps=4, repeats=1,
                               policies=(), tiers=(), overlap=False)
        hw = calibrate(spec, log=lambda m: print(f"  calibrate: {m}", flush=True))
        hw.save(a.save_hw)
    links = [("calibrated", hw)]
    if a.link_gbps:
        links.append((f"{a.link_gbps:g} GB/s", replace(hw, link=replace(
            hw.link, bytes_per_s=a.link_gbps * 1e9, allreduce_bytes_per_s=a.link_gbps * 1e9,
            how=f"{a.link_gbps:g} GB/s given; latency as calibrated"))))
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for z in (float(x) for x in a.zipf.split(",")):
        steps = synthetic_steps(cards, batch_size=a.batch, steps=a.steps, zipf=z, seed=0)
        for w in (int(x) for x in a.ranks.split(",")):
            # The exchange of each replicated share is counted once, then priced per link.
            preds: dict[str, list[RankPrediction]] = {name: [] for name, _ in links}
            for share in (float(x) for x in a.replicate.split(",")):
                n_hot = int(share * work.num_rows)
                hot = hottest_rows(steps[: max(1, len(steps) // 20)], work.num_rows, n_hot)
                count = count_exchange(steps, world_size=w, dim=work.dim, dense_params=work.dense_params,
                                       replicated=replicated_set(hot, cards, w))
                for name, h in links:
                    preds[name].append(predict_ranks(
                        Candidate("none", -(-work.num_rows // w), ranks=w, replicated=n_hot), steps,
                        work, h, hot, cardinalities=cards, ranks_per_host=1, memory_budget=memory,
                        count=count))
            for name, _ in links:
                p = max(preds[name], key=lambda q: q.samples_per_s)
                rows.append({"zipf": z, "world_size": w, "link": name, "local_batch": a.batch // w,
                             "replicated": p.candidate.replicated, "replicated_rows": p.replicated_rows,
                             "samples_per_s": p.samples_per_s, "bytes_per_sample": p.bytes_per_sample,
                             "allreduce_bytes_per_step": p.allreduce_bytes_per_step,
                             "times_ms": p.times_ms, "memory_per_rank_gib": p.memory_per_rank / 2**30,
                             "limit": p.limit})
                r = rows[-1]
                print(f"zipf {z:<5} W={w:<3} link {name:<11} b={r['local_batch']:<5} "
                      f"repl {r['replicated']:>9,} {r['samples_per_s']:>9,.0f} samples/s "
                      f"{r['bytes_per_sample']:>7,.0f} B/sample  "
                      f"compute {r['times_ms']['compute']:.0f} route {r['times_ms']['route']:.0f} "
                      f"link {r['times_ms']['link']:.0f} ms  {r['memory_per_rank_gib']:.1f} GiB  "
                      f"limit {r['limit']}", flush=True)
    summary = {"loadavg_start": load0, "loadavg_end": os.getloadavg()[0], "seconds": time.time() - t0,
               "total_rows": sum(cards), "batch": a.batch, "steps_sampled": a.steps,
               "hardware": hw.to_dict()}
    Path(a.out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
