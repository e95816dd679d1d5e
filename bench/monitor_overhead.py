"""W1Monitor's overhead inside a GAN's training loop (issue 13, README).

A small GAN (training.known_cases' MLP generator and discriminator, Adam 2e-4, batch 64) trains on digits
(8x8) or 32x32x3 photo patches; every --every steps `monitor.update(generator, step=...)` measures it. The
table gives, per update: its wall time (the first is a cold estimate, critic='auto' choosing the family;
later ones warm, bounded by steps_per_update), the steps it trained, how it started, its lower confidence
bound, and the GAN's own training time between updates, all in one process on --threads threads.

    python bench/monitor_overhead.py [--data digits|photos32x3] [--gan-steps 4000] [--every 500]
        [--steps-per-update 375] [--threads 1] [--out bench/results]
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

from training.known_cases import photo_patches
from training.known_series import digits01
from training.monitor import W1Monitor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("digits", "photos32x3"), default="digits")
    ap.add_argument("--gan-steps", type=int, default=4000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--steps-per-update", type=int, default=375)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = digits01() if args.data == "digits" else photo_patches(32, 2000, grey=False).astype(np.float32)
    data = torch.from_numpy(images)
    dim, shape = int(np.prod(data.shape[1:])), tuple(data.shape[1:])
    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.Linear(8, 128), torch.nn.ReLU(), torch.nn.Linear(128, dim), torch.nn.Sigmoid(),
                              torch.nn.Unflatten(1, shape))
    disc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(dim, 128), torch.nn.LeakyReLU(0.2),
                               torch.nn.Linear(128, 1))
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), 2e-4, betas=(0.5, 0.999)) for m in (gen, disc))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    monitor = W1Monitor(images, {"seed": 0}, steps_per_update=args.steps_per_update)
    rows, gan_s, gan_cpu, t_gan, c_gan = [], 0.0, 0.0, time.perf_counter(), time.process_time()
    for step in range(1, args.gan_steps + 1):
        real, fake = data[torch.randint(len(data), (64,))], gen(torch.randn(64, 8))
        loss_d = bce(disc(real), torch.ones(64, 1)) + bce(disc(fake.detach()), torch.zeros(64, 1))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = bce(disc(fake), torch.ones(64, 1))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if step % args.every == 0:
            gan_s, gan_cpu = time.perf_counter() - t_gan, time.process_time() - c_gan
            t0, c0 = time.perf_counter(), time.process_time()
            item = monitor.update(gen, step=step, latent=8, output_range=(0, 1))
            row = {"step": step, "update_s": time.perf_counter() - t0, "update_cpu_s": time.process_time() - c0,
                   "start": item.start,
                   "steps_run": item.steps_run, "train_steps": item.train_steps, "train_s": item.train_s,
                   "eval_s": item.result.timings.eval_s, "lcb": item.lower_confidence_bound,
                   "certified": item.certified_lower_bound, "gan_s_since_last": gan_s,
                   "gan_cpu_s_since_last": gan_cpu, "load": os.getloadavg()}
            rows.append(row)
            print(json.dumps(row), flush=True)
            t_gan, c_gan = time.perf_counter(), time.process_time()
    stamp = datetime.date.today().isoformat()
    out = Path(args.out) / f"monitor_overhead_{args.data}_{stamp}_cpu.json"
    out.write_text(json.dumps({"meta": {"date": stamp, "machine": platform.machine(), "torch": torch.__version__,
                                        "threads": args.threads, **vars(args)}, "updates": rows}, indent=1))


if __name__ == "__main__":
    main()
