"""Checkpoint series speed (issue 13): a warm-started series against a cold estimate of every item, and
pytorch-fid's time per checkpoint, side by side in one process.

Cases: checkpoints of a small GAN (training.known_series.gan_series, 8 checkpoints 250 steps apart, 2,000
samples each, the same latents) trained on digits (8x8) and on 32x32x3 photo patches. For each item k the
series runs it (warm from item k-1 after the first), then a cold default estimate of the same item runs
(`estimate_w1`, what a user runs today; item 0 of the series is that cold estimate), so both see the same
machine load. Default options except the seed; 1 thread.

FID (--fid): pytorch-fid 0.3's InceptionV3 (the FID architecture, 2048-d pool features, inputs resized to
299x299) with RANDOMLY INITIALISED weights: the real weights cannot be downloaded here, and the time of an
FID computation does not depend on the weights' values. The values are meaningless and not reported. The
real side's statistics are computed once (FID tools cache them) and not counted; per checkpoint: the
Inception features of its 2,000 samples (timed on --fid-samples of them, scaled linearly: on a CPU core
one batch of 50 takes about a minute), mean and covariance, one Frechet distance (timed in full).
Timed on --fid-items checkpoints per case. Every time is given as wall seconds and as the process's CPU
seconds (time.process_time, one torch thread): on a shared machine the CPU seconds are the steadier
measure of the work done.

    python bench/series_speed.py [--cases digits,photos32x3] [--seeds 1] [--fid] [--fid-items 2] [--out bench/results]
    python bench/series_speed.py --report bench/results/series_speed_*.json > table.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import training  # noqa: F401, I001 - before torch: OpenMP's waits as the product sets them (training.threads)
import torch

from training import estimate_w1
from training.known_cases import photo_patches
from training.known_series import digits01, gan_series
from training.series import SeriesRunner, WarmStart

CASES = {
    "digits": lambda: gan_series(digits01(), "digits"),
    "photos32x3": lambda: gan_series(photo_patches(32, 2000, grey=False).astype(np.float32), "photos32x3"),
}


def numbers(r, train_steps: int) -> dict:
    return {"certified": r.certified_lower_bound, "se": r.stderr / r.lipschitz_bound, "lcb": r.lower_confidence_bound,
            "steps_run": r.steps_run, "train_steps": train_steps, "train_s": r.timings.train_s,
            "total_s": r.timings.total_s, "critic": (r.critic_spec or {}).get("name")}


def cold_steps(r) -> int:
    return sum(c.steps for c in r.selection.candidates) if r.selection else r.steps_run


def fid_timer(samples: int):
    """A function timing one checkpoint's FID (pytorch-fid's InceptionV3, random weights; see the docstring):
    the features of `samples` of its images (then scaled to all of them: the batches are independent) and
    one Frechet distance between full-rank 2048-d statistics (the matrix square root of a 2048x2048
    matrix, whatever the weights)."""
    import torchvision
    from unittest import mock

    from pytorch_fid import inception as fid_inception
    from pytorch_fid.fid_score import calculate_frechet_distance

    with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(torchvision.models.Inception3, "load_state_dict", lambda *a, **k: None):
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    @torch.no_grad()
    def features(images01: np.ndarray) -> np.ndarray:
        feats = []
        for start in range(0, len(images01), 50):  # pytorch-fid's default batch size
            x = torch.from_numpy(images01[start:start + 50])
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            feats.append(model(x)[0].squeeze(-1).squeeze(-1).double())
        return torch.cat(feats).numpy()

    def time_one(fake01: np.ndarray) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        features(fake01[:samples])
        per_sample, cpu_per_sample = (time.perf_counter() - t0) / samples, (time.process_time() - c0) / samples
        f = np.random.default_rng(0).standard_normal((len(fake01) + 2048, 2048))
        t1, c1 = time.perf_counter(), time.process_time()
        mu, sigma = f.mean(0), np.cov(f, rowvar=False)
        calculate_frechet_distance(mu, sigma, mu + 0.1, sigma)
        frechet, cpu_frechet = time.perf_counter() - t1, time.process_time() - c1
        return {"fid_s": per_sample * len(fake01) + frechet, "fid_cpu_s": cpu_per_sample * len(fake01) + cpu_frechet,
                "fid_per_sample_s": per_sample, "fid_frechet_s": frechet, "fid_samples_timed": samples,
                "fid_samples": len(fake01)}

    return time_one


def run_case(name: str, seed: int, args, emit) -> None:
    case = CASES[name]()
    opts = {**case.options, "seed": seed}
    runner = SeriesRunner(case.real, opts, warm=WarmStart())
    timer = fid_timer(args.fid_samples) if args.fid else None
    t_series = t_cold = 0.0
    for k, (fake, label, step) in enumerate(zip(case.fakes, case.labels, case.steps)):
        t0, c0 = time.perf_counter(), time.process_time()
        item = runner.run_item(fake, label, step)
        t_series += time.perf_counter() - t0
        row = {"case": case.name, "seed": seed, "item": k, "label": label, "step": step, "start": item.start,
               "warm": {**numbers(item.result, item.train_steps), "cpu_s": time.process_time() - c0}}
        if k == 0:
            row["cold"] = row["warm"]  # the series' first item is a cold default estimate
            t_cold += time.perf_counter() - t0
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            cold = estimate_w1(case.real, fake, opts)
            t_cold += time.perf_counter() - t0
            row["cold"] = {**numbers(cold, cold_steps(cold)), "cpu_s": time.process_time() - c0}
        if timer is not None and k < args.fid_items:
            row.update(timer(fake))
        row.update({"series_wall_s": t_series, "cold_wall_s": t_cold})
        emit(row)


def report(paths: list[str]) -> str:
    """Markdown tables from the JSON files of runs: per item, then per case (the series against N colds)."""
    lines = ["| case | item | start | warm: certified ± s.e. | cold: certified ± s.e. | (warm - cold) / s.e. "
             "| warm train s (steps) | cold train s (steps) | warm / cold train s | FID s per checkpoint | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    totals = []
    for path in paths:
        rows = json.loads(Path(path).read_text())[1:]
        for r in rows:
            w, c = r["warm"], r["cold"]
            ratio = "" if r["item"] == 0 else f"{w['train_s'] / c['train_s']:.2f}"
            delta = "" if r["item"] == 0 else f"{(w['certified'] - c['certified']) / c['se']:+.1f}"
            fid = f"{r['fid_s']:.0f}" if "fid_s" in r else ""
            lines.append(f"| {r['case']} s{r['seed']} | {r['item']} | {r['start']} | {w['certified']:.4f} ± "
                         f"{w['se']:.4f} | {c['certified']:.4f} ± {c['se']:.4f} | {delta} | {w['train_s']:.1f} "
                         f"({w['train_steps']}) | {c['train_s']:.1f} ({c['train_steps']}) | {ratio} | {fid} "
                         f"| {r['load'][0]:.1f} |")
        later = rows[1:]
        fids = [r["fid_s"] for r in rows if "fid_s" in r]
        totals.append((rows[0]["case"], rows[0]["seed"], len(rows), rows[-1]["series_wall_s"], rows[-1]["cold_wall_s"],
                       sum(r["warm"]["train_s"] for r in later) / sum(r["cold"]["train_s"] for r in later),
                       max(r["warm"]["train_s"] / r["cold"]["train_s"] for r in later),
                       sum(fids) / len(fids) * len(rows) if fids else None))
    lines += ["", "| case | items | series wall s | N cold estimates wall s | series / cold | warm / cold train s "
              "(items after the first: total, worst item) | FID of every checkpoint, s (estimated) |",
              "|---|---|---|---|---|---|---|"]
    for case, seed, n, series_s, cold_s, mean_ratio, worst, fid in totals:
        fid_text = f"{fid:.0f}" if fid is not None else "not timed"
        lines.append(f"| {case} s{seed} | {n} | {series_s:.0f} | {cold_s:.0f} | {series_s / cold_s:.2f} "
                     f"| {mean_ratio:.2f}, {worst:.2f} | {fid_text} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", nargs="+", metavar="JSON", help="Print markdown tables of these runs and exit.")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fid", action="store_true", help="Also time pytorch-fid per checkpoint (random weights).")
    ap.add_argument("--fid-items", type=int, default=1, help="Checkpoints per case whose FID is timed.")
    ap.add_argument("--fid-samples", type=int, default=100, help="Samples whose Inception features are timed.")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    if args.report:
        print(report(args.report), end="")
        return
    torch.set_num_threads(args.threads)
    stamp = datetime.date.today().isoformat()
    out = Path(args.out) / f"series_speed_{args.cases.replace(',', '-')}_s{args.first_seed}_{stamp}_cpu.json"
    rows: list = [{"meta": {"date": stamp, "machine": platform.machine(), "torch": torch.__version__,
                            "threads": args.threads, "load_start": os.getloadavg()}}]

    def emit(row):
        row["load"] = os.getloadavg()
        rows.append(row)
        out.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in args.cases.split(","):
            run_case(name, seed, args, emit)


if __name__ == "__main__":
    main()
