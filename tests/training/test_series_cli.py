"""`w1 series` end to end on a small GAN trained here, its generator saved as ONNX along its run, and
W1Monitor inside a GAN's own training loop."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from service.cli import main
from training.known_cases import small_gan_generators
from training.known_series import digits01
from training.monitor import W1Monitor
from training.series_result import SeriesResult

FAST = ["--critic", "fc", "--width", "32", "--steps", "60", "--eval-every", "20", "--eval-samples", "600",
        "--validation-samples", "300", "--time", "0"]


@pytest.fixture(scope="module")
def onnx_checkpoints(tmp_path_factory, onnx_exporter):
    folder = tmp_path_factory.mktemp("run")
    gens = small_gan_generators(digits01(), checkpoints=(40, 80, 120))
    return [onnx_exporter(g, torch.zeros(2, 8), folder / f"ckpt_{step:06d}.onnx") for step, g in gens.items()]


def test_w1_series_on_onnx_checkpoints_writes_table_json_csv_and_plot(onnx_checkpoints, tmp_path):
    fakes = [f"onnx:{p}?latent=8&output_range=0,1" for p in onnx_checkpoints]
    out = {k: tmp_path / f"s.{k}" for k in ("json", "csv", "png")}
    res = CliRunner().invoke(main, ["series", "builtin:digits", *fakes, "--steps-from-names", *FAST,
                                    f"--json={out['json']}", f"--csv={out['csv']}", "--plot", str(out["png"])])
    assert res.exit_code == 0, res.output
    assert "W1 over checkpoints" in res.output and "ckpt_000080.onnx" in res.output
    series = SeriesResult.from_json(out["json"].read_text())
    assert [it.step for it in series.items] == [40, 80, 120]
    assert [it.start for it in series.items][0] == "cold" and series.items[1].start in ("warm", "fallback")
    assert series.space["size"] == [8, 8] and series.critic == "fc"
    rows = list(csv.DictReader(out["csv"].open()))
    assert [int(r["step"]) for r in rows] == [40, 80, 120]
    for row, item in zip(rows, series.items):
        assert float(row["lower_confidence_bound"]) == pytest.approx(item.lower_confidence_bound)
        assert float(row["certified_ci_low"]) <= float(row["certified_lower_bound"]) <= float(row["certified_ci_high"])
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_w1_series_json_to_stdout_and_labels(tmp_path):
    x = digits01(300)
    for name, s in (("a", 0.5), ("b", 0.7)):
        np.save(tmp_path / f"{name}.npy", (x.mean(0) + s * (x - x.mean(0))).astype(np.float32))
    np.save(tmp_path / "real.npy", x)
    res = CliRunner().invoke(main, ["series", "-q", str(tmp_path / "real.npy"), str(tmp_path / "a.npy"),
                                    str(tmp_path / "b.npy"), "--labels", "early,late", "--checkpoint-steps", "5,10",
                                    "--json", *FAST])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert [(i["label"], i["step"]) for i in data["items"]] == [("early", 5), ("late", 10)]


def test_w1_series_bad_input_fails_before_training_naming_the_file(tmp_path):
    np.save(tmp_path / "real.npy", digits01(100))
    res = CliRunner().invoke(main, ["series", str(tmp_path / "real.npy"), str(tmp_path / "real.npy"),
                                    str(tmp_path / "missing.npy")])
    assert res.exit_code == 1 and "missing.npy" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["series", str(tmp_path / "real.npy"), str(tmp_path / "real.npy"),
                                    "--labels", "a,b"])
    assert res.exit_code == 1 and "--labels has 2 values for 1 fakes" in res.output
    res = CliRunner().invoke(main, ["series", str(tmp_path / "real.npy"), str(tmp_path / "real.npy"),
                                    "--steps-from-names"])
    assert res.exit_code == 1 and "real.npy: no step number" in res.output
    res = CliRunner().invoke(main, ["series", str(tmp_path / "real.npy"), str(tmp_path / "real.npy"),
                                    "--json", "w1.json"])
    assert res.exit_code == 1 and "w1.json: no such file or folder; to write the series as JSON there, " \
        "attach the value: --json=w1.json" in res.output
    np.save(tmp_path / "rgb.npy", np.repeat(digits01(100), 3, axis=1))
    res = CliRunner().invoke(main, ["series", str(tmp_path / "real.npy"), str(tmp_path / "rgb.npy"), "-q"])
    assert res.exit_code == 1 and "item 'rgb.npy': channels differ: real has 1, fake has 3" in res.output, res.output
    # output files that could not be written after training are refused before it
    res = CliRunner().invoke(main, ["series", str(tmp_path / "real.npy"), str(tmp_path / "real.npy"),
                                    "--csv", str(tmp_path)])
    assert res.exit_code == 1 and f"--csv: {tmp_path} is a folder; give a file name" in res.output
    res = CliRunner().invoke(main, ["series", str(tmp_path / "real.npy"), str(tmp_path / "real.npy"),
                                    f"--json={tmp_path / 'missing' / 'w1.json'}"])
    assert res.exit_code == 1 and f"folder {tmp_path / 'missing'} does not exist" in res.output


def test_w1_monitor_in_a_gan_training_loop_carries_its_critic_at_a_bounded_cost():
    """A small GAN trains here; every 60 steps the monitor measures the generator as it is now."""
    data = torch.from_numpy(digits01())
    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.Sigmoid(),
                              torch.nn.Unflatten(1, (1, 8, 8)))
    disc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.LeakyReLU(0.2),
                               torch.nn.Linear(64, 1))
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), 2e-3, betas=(0.5, 0.999)) for m in (gen, disc))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    monitor = W1Monitor(data.numpy(), dict(critic="fc", width=32, steps=80, eval_every=20, eval_samples=600,
                                           validation_samples=300, time_budget_s=0), steps_per_update=40)
    for step in range(1, 181):
        real, fake = data[torch.randint(len(data), (64,))], gen(torch.randn(64, 8))
        loss_d = bce(disc(real), torch.ones(64, 1)) + bce(disc(fake.detach()), torch.zeros(64, 1))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = bce(disc(fake), torch.ones(64, 1))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if step % 60 == 0:
            item = monitor.update(gen, step=step, latent=8, output_range=(0, 1))
            assert gen.training  # the generator keeps its mode
            assert item.result.sources["fake"]["kind"] == "module"
    first, *later = monitor.items
    assert first.start == "cold" and first.steps_run == 80
    for k, item in enumerate(later):
        assert item.start in ("warm", "fallback") and item.warm_validation is not None
        # each warm critic and the cold trial <= 40 steps; the first warm update races two warm rates
        assert item.steps_run <= 40 and item.train_steps <= (3 if k == 0 else 2) * 40
    assert [it.label for it in monitor.result().items] == ["step 60", "step 120", "step 180"]
