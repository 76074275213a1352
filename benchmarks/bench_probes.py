"""Benchmark: the cost of probing the discriminator during training (sntheory.lab.train).

    python benchmarks/bench_probes.py                 # lab_mnist SN config, 400 steps: ~3 min
    python benchmarks/bench_probes.py --steps 100     # quick look

Trains the experiment config (``experiments/lab_mnist/train_sn.toml`` by default: 16x16 digits,
DCGAN pair of width 32, SNw, WGAN, batch 64, one torch thread) for ``--steps`` steps in three
variants, side by side:

* ``no probes``             -- ``[probe] every = 0``;
* ``probes every 50``       -- the P1 probes (per-sample and batch-loss gradients, certified
  operator norms with warm starts, raw-parameter gradients, variances), on a real and a fake batch
  of ``[probe] batch_size`` images at steps 0, 50, 100, ...;
* ``+ Hessians every 200``  -- the same plus the P3 Hessian probes at the probe steps that are
  multiples of 200 (their own, sparser schedule: a Hessian probe costs seconds, not milliseconds).

Times are the CPU time of this process (``time.process_time``; ``--wall`` for wall-clock) over the
whole ``train`` call (data, models, training, probes, the final sample grid and checkpoint), best of
``--repeats``: on a shared machine CPU time is far less disturbed by other jobs than wall time.
The bar: probes every 50 steps cost less than 15% of training on a CPU, both side by side and by
the run's own timers (``timings.jsonl``: time in probes over the rest of the run), the latter
being immune to the drift of a shared machine between variants. Every variant trains the same
weights (probes do not perturb training; checked here too, from ``losses.csv``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import torch  # noqa: E402

from sntheory.lab.config import TrainConfig  # noqa: E402
from sntheory.lab.train import train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def run_variant(cfg: TrainConfig, probe: dict, repeats: int, clock) -> tuple[float, dict, bytes]:
    best, timing, losses = float("inf"), {}, b""
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            variant = cfg.with_overrides({"probe": probe})
            t0 = clock()
            summary = train(variant, tmp, progress=False, resume=False)
            elapsed = clock() - t0
            if elapsed < best:
                best = elapsed
                timing = json.loads((Path(tmp) / "timings.jsonl").read_text().splitlines()[-1])
                timing["probe_records"] = summary.probe_records
            losses = (Path(tmp) / "losses.csv").read_bytes()
    return best, timing, losses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "experiments/lab_mnist/train_sn.toml"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=50, help="probe every N steps (50)")
    parser.add_argument("--hessian-every", type=int, default=200,
                        help="Hessian probes every N steps (200; 0: skip that variant)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--wall", action="store_true", help="wall-clock instead of CPU time")
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.wall else time.process_time
    cfg = TrainConfig.from_toml(args.config).with_overrides(
        {"run": {"steps": args.steps, "device": "cpu", "checkpoint_every": 0,
                 "sample_every": 0}})
    print(f"{args.config}: {cfg.normalizer.name}, {cfg.net.arch} width {cfg.net.width}, "
          f"{cfg.data.image_size}x{cfg.data.image_size}, batch {cfg.train.batch_size}, "
          f"{args.steps} steps, probe batch {cfg.probe.batch_size}, threads "
          f"{cfg.run.threads or torch.get_num_threads()}; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}; "
          f"{'wall' if args.wall else 'CPU'} time, best of {args.repeats}")
    variants = [("no probes", {"every": 0, "hessian_every": 0}),
                (f"probes every {args.every}", {"every": args.every, "hessian_every": 0})]
    if args.hessian_every:
        variants.append((f"+ Hessians every {args.hessian_every}",
                         {"every": args.every, "hessian_every": args.hessian_every}))
    # warm-up (imports, numba caches, the dataset): not timed
    run_variant(cfg.replace_run(steps=1), variants[-1][1], 1, clock)
    results = []
    for name, probe in variants:
        seconds, timing, losses = run_variant(cfg, probe, args.repeats, clock)
        results.append((name, seconds, timing, losses))
    base = results[0][1]
    print(f"\n{'variant':<26}{'time s':>9}{'steps/s':>9}{'overhead':>10}{'records':>9}"
          f"{'probe s':>9}{'hessian s':>10}")
    for name, seconds, timing, _ in results:
        print(f"{name:<26}{seconds:9.2f}{args.steps / seconds:9.2f}"
              f"{(seconds - base) / base:+10.1%}{timing.get('probe_records', 0):9d}"
              f"{timing.get('probe_s', 0.0):9.2f}{timing.get('hessian_probe_s', 0.0):10.2f}")
    parts = results[-1][2].get("probe_parts_s", {})
    if parts:
        print("probe time by part (last variant, wall s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])))
    same = all(r[3] == results[0][3] for r in results)
    print(f"training identical across variants (losses.csv bytes): {same}")
    overhead = (results[1][1] - base) / base
    timing = results[1][2]
    share = timing["probe_s"] / (timing["wall_s"] - timing["probe_s"])
    print(f"probe overhead every {args.every} steps: {overhead:+.1%} side by side, "
          f"{share:.1%} from the run's own timers (probe time / the rest of the run, wall); "
          f"bar < 15% -> {'PASS' if max(overhead, share) < 0.15 else 'FAIL'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
