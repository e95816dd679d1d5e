"""Known-answer benchmark: certified lower bound / true W1 for several critics, cases and seeds.

Cases (estimation.md, "Cases with a known answer"), all in the default [-1, 1] space:
- digits+v: scikit-learn digits (scaled into [0, 0.5]) and the same images shifted by v: W1 = |v|.
- photos+v: 16x16 RGB patches of scikit-image photographs, likewise shifted: W1 = |v|.
- square: deel-torchlip's case at 16x16 instead of 64x64: one side all zeros, the other a centred 9x9
  square (81 pixels, 32 % of the area) of +1 or -1 with equal probability: W1 = sqrt(81) = 9 exactly
  (at 64x64 with 1,225 pixels it is 35).
Cases whose optimal critic is NOT linear (training.known_cases; --cases scaling):
- gauss32 / gauss256: N(0, I_d) vectors against 0.7 N(0, I_d), W1 = 0.3 E|Z| (chi mean), value_range none;
- photos16 / photos32x3: patches contracted toward their mean image by s = 0.5, W1 = 0.5 mean |x - c| (x2).
GAN checkpoints (--cases gan; no closed form): samples of a small GAN after 30, 300 and 3000 steps on
digits and on grey 16x16 photo patches; the critics' certified bounds are compared with each other.
Critic families: the conv critic with BCOP, RKO or OSSN convolutions, the Björck GroupSort FC critic, and
"auto" (the default: BCOP conv and FC compete on validation; training.selection); the paper's DCGAN-style
critic as dcgan-bcop/-rko/-ossn. Each is trained with the "default" preset, on 1 CPU thread.
With --pot, POT's exact emd2 between the first --pot-n samples of each side (and between two halves of the real side: its finite-sample floor) is reported beside.

    python bench/estimation_quality.py [--seeds 3] [--first-seed 0] [--critics bcop,rko,ossn,fc,auto]
        [--cases translation,scaling,gan] [--pot] [--options '{"steps": 1500}'] [--out bench/results]
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import training  # noqa: F401, I001 - before torch: records OpenMP's waits as the product does (training.threads)
import torch

from training import estimate_w1
from training.threads import recorded_openmp_waits
from training.builtin import photos

CRITICS = {
    # the convolutional critic with each of the paper's orthogonal convolutions (BCOP is auto's candidate)
    "bcop": dict(critic="conv", conv="bcop"),
    "rko": dict(critic="conv", conv="rko"),
    "ossn": dict(critic="conv", conv="ossn"),
    "fc": dict(critic="fc"),  # Björck GroupSort-8, width 256: auto's other candidate
    "auto": dict(critic="auto"),
    # the paper's DCGAN-style critic (expanding channel stages), for comparison with earlier results
    "dcgan-bcop": dict(critic="dcgan", conv="bcop"),
    "dcgan-rko": dict(critic="dcgan", conv="rko"),
    "dcgan-ossn": dict(critic="dcgan", conv="ossn"),
}
DEFAULT_CRITICS = "bcop,rko,ossn,fc,auto"
# dcgan width per case. Observed on photos16+v: width 16 (768 -> 1024 -> 512 dimensions through the
# two stages) stopped at 0.92 of |v|, width 32 (768 -> 2048 -> 1024) reached 0.998: a convolutional
# critic whose later stage has fewer dimensions than the input cannot follow a generic translation.
DCGAN_WIDTH = {"digits": 16, "photos16": 32, "square16": 16}
GAN_STEPS = (30, 300, 3000)  # checkpoints of different quality (training.known_cases.train_small_gan)
CASE_KINDS = ("translation", "scaling", "gan")


def shifted(base01: np.ndarray, norm: float, seed: int):
    """base scaled into [0, 0.5], and the same shifted by u in [0, 0.5]: |v| = |2u| = norm in [-1, 1]."""
    x = (base01 * 0.5).astype(np.float32)
    u = np.random.default_rng(1000 + seed).random((1, *x.shape[1:])).astype(np.float32)
    u *= norm / (2 * np.linalg.norm(u))
    assert u.max() <= 0.5, "shift too large for the [0, 1] range"
    return x, x + u, float(np.linalg.norm(2 * u.astype(np.float64)))


def scaling_cases(seed: int):
    """(name, real, fake, true W1, options) of the cases where a linear critic loses."""
    from training.known_cases import gaussian_scaling, image_scaling, photo_patches

    for d in (32, 256):
        c = gaussian_scaling(d, s=0.7, n=4000, seed=seed)
        yield c.name, c.real, c.fake, c.true_w1, c.options
    for size, count, grey in ((16, 3000, True), (32, 2000, False)):
        c = image_scaling(photo_patches(size, count, grey=grey, seed=seed), 0.5,
                          f"photos{size}{'' if grey else 'x3'} s=0.5")
        yield c.name, c.real, c.fake, c.true_w1, c.options


def gan_cases():
    """(name, real, fake, None, options): samples of a small GAN at GAN_STEPS checkpoints against its
    training data (digits 8x8; grey photo patches 16x16). No closed form: the critics are compared with
    each other (a higher certified bound is closer to the truth) and with POT's emd2. The GANs are
    trained once per run (seed 0); the seed varies the estimator only."""
    from sklearn.datasets import load_digits

    from training.known_cases import photo_patches, train_small_gan

    digits = load_digits().images.astype(np.float32)[:, None] / 16.0
    patches = photo_patches(16, 3000, grey=True).astype(np.float32)
    for name, data in (("digits", digits), ("photos16", patches)):
        for step, fake in train_small_gan(data, GAN_STEPS, samples=len(data)).items():
            yield f"{name} GAN@{step}", data, fake, None, {}


def pot_reference(real: np.ndarray, fake: np.ndarray, options: dict, n: int) -> dict:
    """POT's exact W1 between the first n samples of each side, and between two halves of the real side
    (the finite-sample floor: what emd2 reports for two samples of ONE distribution), in the input space."""
    import ot

    def space(x):
        x = x.reshape(len(x), -1).astype(np.float64)
        return x if options.get("space", {}).get("value_range") == "none" else 2 * x - 1

    def emd(a, b):
        return float(ot.emd2(ot.unif(len(a)), ot.unif(len(b)), ot.dist(a, b, metric="euclidean"),
                             numItermax=10**7))

    r, f = space(real[:n]), space(fake[:n])
    half = min(n, len(real)) // 2
    return {"emd2": emd(r, f), "emd2_floor": emd(space(real[:half]), space(real[half:2 * half])), "n": len(r)}


def cases(seed: int):
    from sklearn.datasets import load_digits
    digits = load_digits().images[:, None] / 16.0
    patches = photos(size=16, count=3000, seed=0)[0].transpose(0, 3, 1, 2) / 255.0
    yield ("digits+v |v|=1",) + shifted(digits, 1.0, seed)
    yield ("digits+v |v|=4",) + shifted(digits, 4.0, seed)
    yield ("photos16+v |v|=4",) + shifted(patches, 4.0, seed)
    n = 2000
    zeros = np.full((n, 1, 16, 16), 0.5, np.float32)  # 0 in the [-1, 1] space
    square = zeros.copy()
    sign = np.where(np.random.default_rng(seed).random(n) < 0.5, 1.0, 0.0).astype(np.float32)  # +1 or -1
    square[:, :, 3:12, 3:12] = sign[:, None, None, None]
    yield ("square16 (W1=9)", zeros, square, 9.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--critics", default=DEFAULT_CRITICS, help=f"any of {','.join(CRITICS)}")
    ap.add_argument("--cases", default=",".join(CASE_KINDS), help="translation, scaling, gan (any of them)")
    ap.add_argument("--only", help="comma-separated substrings: run only cases whose name contains one")
    ap.add_argument("--pot", action="store_true", help="add POT's exact emd2 (and its floor) per case")
    ap.add_argument("--pot-n", type=int, default=2000)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads for every estimate (sets W1_THREADS); default: the product's policy "
                         "(training.threads), each row records what it used")
    ap.add_argument("--options", default="{}", help="EstimateOptions overrides for every run (JSON), e.g. "
                    "'{\"steps\": 1500}' or '{\"critic\": \"fc\", \"width\": 128, \"steps\": 4000}'")
    ap.add_argument("--combine", nargs="+", metavar="JSON", help="only merge these result files into --report")
    ap.add_argument("--report", default="bench/results/estimation_quality.md")
    args = ap.parse_args()
    if args.combine:
        return combine(args.combine, args.report)
    if args.threads is not None:
        os.environ["W1_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    rows = []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = json.loads(args.options)
    meta = dict(date=stamp, device=args.device, threads=args.threads or "policy", cpu=platform.processor() or platform.machine(),
                torch=torch.__version__, openmp_waits=recorded_openmp_waits(), preset="default", critics=CRITICS, dcgan_width=DCGAN_WIDTH,
                options=overrides)
    stem = f"estimation_quality_{args.critics.replace(',', '-')}_s{args.first_seed}-{args.first_seed + args.seeds - 1}_{stamp}"
    if overrides:  # runs with other options started in the same minute must not share a file
        stem += "_" + hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    partial = out / f"{stem}.json"
    kinds = args.cases.split(",")
    gans = list(gan_cases()) if "gan" in kinds else []  # the same samples for every seed
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        todo = [(*c, {}) for c in cases(seed)] if "translation" in kinds else []
        todo += list(scaling_cases(seed)) if "scaling" in kinds else []
        todo += gans
        if args.only:
            todo = [c for c in todo if any(part in c[0] for part in args.only.split(","))]
        for name, real, fake, true_w1, case_opts in todo:
            ref = pot_reference(real, fake, case_opts, args.pot_n) if args.pot else {}
            for critic in args.critics.split(","):
                t0 = time.perf_counter()
                opts = {**CRITICS[critic], **case_opts, **overrides}
                vectors = case_opts.get("space", {}).get("value_range") == "none"
                if opts["critic"] in ("dcgan", "conv") and vectors:
                    continue  # no convolution on vectors
                if opts["critic"] == "dcgan":
                    opts.setdefault("width", DCGAN_WIDTH.get(name.split("+")[0].split(" ")[0]))
                r = estimate_w1(real, fake, seed=seed, device=args.device, **opts)
                row = dict(case=name, critic=critic, seed=seed, true_w1=true_w1, estimate=r.estimate,
                           ci=list(r.ci), stderr=r.stderr, lipschitz_bound=r.lipschitz_bound,
                           certified_lower_bound=r.certified_lower_bound,
                           lower_confidence_bound=r.lower_confidence_bound,
                           chosen=r.selection.chosen if r.selection else None, **ref,
                           steps=r.steps_run, seconds=time.perf_counter() - t0, threads=r.versions.get("threads"),
                           threads_changes=r.versions.get("threads_changes"))
                if true_w1 is not None:
                    row.update(ratio=r.certified_lower_bound / true_w1,
                               above_true_beyond_ci=r.certified_ci[0] > true_w1, raw_above_true_beyond_ci=r.ci[0] > true_w1,
                               lcb_ratio=r.lower_confidence_bound / true_w1,
                               lcb_above_true=r.lower_confidence_bound > true_w1)
                rows.append(row)
                partial.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))  # a killed run keeps its rows
                print(f"{name:18s} {critic:5s} seed {seed}: ratio {row.get('ratio', float('nan')):.4f}  "
                      f"cert {r.certified_lower_bound:.4f}  est {r.estimate:.4f} "
                      f"[{r.ci[0]:.4f}, {r.ci[1]:.4f}]  L {r.lipschitz_bound:.5f}  steps {r.steps_run}  "
                      f"{row['seconds']:.1f}s", flush=True)
    partial.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    (out / f"{stem}.md").write_text(report(rows, meta))
    print(report(rows, meta))


def report(rows: list[dict], meta: dict) -> str:
    """Markdown: the known-answer table (ratio to the true W1) and the GAN table (certified bounds)."""
    lines = [f"# Estimation quality ({meta['date']}, device {meta['device']}, {meta['threads']} thread(s), "
             f"torch {meta['torch']})", ""]
    if meta.get("options"):
        lines += [f"Options for every run: `{json.dumps(meta['options'])}`.", ""]
    known = [r for r in rows if r["true_w1"] is not None]
    gan = [r for r in rows if r["true_w1"] is None]
    if known:
        lines += known_table(known)
    if gan:
        lines += gan_table(gan)
    critics = list(dict.fromkeys(r["critic"] for r in rows))
    lines += ["", "Lipschitz bounds: " + ", ".join(
        f"{c} max {max(r['lipschitz_bound'] for r in rows if r['critic'] == c):.5f}" for c in critics),
        "Mean seconds per run: " + ", ".join(
        f"{c} {np.mean([r['seconds'] for r in rows if r['critic'] == c]):.0f}" for c in critics)]
    return "\n".join(lines) + "\n"


def _pot_cell(sel: list[dict], scale: float | None) -> str:
    r = sel[0]
    if scale:
        return f"{r['emd2'] / scale:.3f} (floor {r['emd2_floor'] / scale:.3f})"
    return f"{r['emd2']:.3f} (floor {r['emd2_floor']:.3f})"


def known_table(rows: list[dict]) -> list[str]:
    """Per case and critic: mean and min of certified / true over seeds, seconds, and the flags."""
    critics = list(dict.fromkeys(r["critic"] for r in rows))
    pot = any("emd2" in r for r in rows)
    lines = ["## Cases with a known answer", "",
             "Ratio certified lower bound / true W1: mean over seeds (min, number of seeds, mean seconds); "
             "default preset. 'raw>W1' marks a raw estimate whose whole interval lies above the true W1 (only "
             "possible for a critic that is not 1-Lipschitz: its certified value divides by L > 1); 'ABOVE' would "
             "mark a certified interval above the true W1 and 'LCB>W1' a lower confidence bound above it: either "
             "would be a bug. 'chose' names auto's picks. POT (when run): exact emd2 / true W1 on the first n "
             "samples, and the floor emd2(real half, real half) / true W1.", "",
             "| case | " + " | ".join(critics) + (" | POT emd2 |" if pot else " |"),
             "|---|" + "---|" * (len(critics) + pot)]
    for case in dict.fromkeys(r["case"] for r in rows):
        cells = []
        for critic in critics:
            sel = [r for r in rows if r["case"] == case and r["critic"] == critic]
            if not sel:
                cells.append("")
                continue
            ratios = [r["ratio"] for r in sel]
            cell = f"{np.mean(ratios):.4f} (min {min(ratios):.4f}, n={len(sel)}, {np.mean([r['seconds'] for r in sel]):.0f} s)"
            if any(r.get("lcb_above_true") for r in sel):
                cell += " LCB>W1"
            chosen = [r["chosen"] for r in sel if r.get("chosen")]
            if chosen and critic == "auto":
                cell += " chose " + "/".join(dict.fromkeys(chosen))
            if any(r.get("raw_above_true_beyond_ci", r["ci"][0] > r["true_w1"]) for r in sel):
                cell += " raw>W1"
            if any(r["ci"][0] / r["lipschitz_bound"] > r["true_w1"] for r in sel):  # certified interval
                cell += " ABOVE"
            cells.append(cell)
        sel = [r for r in rows if r["case"] == case and "emd2" in r]
        if pot:
            cells.append(_pot_cell(sel, sel[0]["true_w1"]) if sel else "")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    n_lcb = sum(1 for r in rows if "lcb_above_true" in r)
    lines += ["", f"Lower confidence bound above the true W1: {sum(r['lcb_above_true'] for r in rows if 'lcb_above_true' in r)} "
              f"of {n_lcb} runs."]
    return lines


def gan_table(rows: list[dict]) -> list[str]:
    """Per GAN checkpoint and critic: mean certified bound over seeds with its standard error (the mean of
    the runs' held-out s.e. / L, over sqrt(seeds)), and whether auto is >= every family within 1 SE of the
    difference."""
    critics = list(dict.fromkeys(r["critic"] for r in rows))
    pot = any("emd2" in r for r in rows)
    lines = ["", "## GAN checkpoints (no closed form: a higher certified bound is closer to the truth)", "",
             "Certified lower bound: mean over seeds +- SE (mean seconds); 'chose' names auto's picks. "
             "'auto ok' = auto's mean >= every family's mean - 1 SE of the difference. POT: exact emd2 on "
             "the first n samples (an over-estimate at these sample sizes: see its real-vs-real floor).", "",
             "| case | " + " | ".join(critics) + " | auto ok |" + (" POT emd2 |" if pot else ""),
             "|---|" + "---|" * (len(critics) + 1 + pot)]
    for case in dict.fromkeys(r["case"] for r in rows):
        cells, stats = [], {}
        for critic in critics:
            sel = [r for r in rows if r["case"] == case and r["critic"] == critic]
            if not sel:
                cells.append("")
                continue
            mean = float(np.mean([r["certified_lower_bound"] for r in sel]))
            se = float(np.mean([r["stderr"] / r["lipschitz_bound"] for r in sel])) / np.sqrt(len(sel))
            stats[critic] = (mean, se)
            cell = f"{mean:.4f} +- {se:.4f} (n={len(sel)}, {np.mean([r['seconds'] for r in sel]):.0f} s)"
            chosen = [r["chosen"] for r in sel if r.get("chosen")]
            if chosen and critic == "auto":
                cell += " chose " + "/".join(chosen)
            cells.append(cell)
        if "auto" in stats:
            a_mean, a_se = stats["auto"]
            ok = all(a_mean >= m - np.hypot(a_se, se) for c, (m, se) in stats.items() if c != "auto")
            cells.append("yes" if ok else "NO")
        else:
            cells.append("")
        sel = [r for r in rows if r["case"] == case and "emd2" in r]
        if pot:
            cells.append(_pot_cell(sel, None) if sel else "")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines


def combine(paths: list[str], out: str) -> None:
    """Merge several result JSON files (e.g. runs of different seeds) into one Markdown report."""
    rows, metas = [], []
    for p in paths:
        data = json.loads(Path(p).read_text())
        rows += data["rows"]
        metas.append(data["meta"])
    meta = dict(metas[-1], date=", ".join(m["date"] for m in metas))
    Path(out).write_text(report(rows, meta))
    print(report(rows, meta))

if __name__ == "__main__":
    main()
