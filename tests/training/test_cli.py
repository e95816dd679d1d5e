"""`w1 estimate` end to end on .npz files: summary, --json, --plot, --help, and one-line errors."""
from __future__ import annotations


import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

from service.cli import main
from training import EstimateOptions, W1Result

FAST = ["--critic", "dcgan", "--width", "8", "--steps", "40", "--eval-every", "20", "--quiet"]


@pytest.fixture(scope="module")
def npz_pair(tmp_path_factory):
    """Digits as uint8 and the same images brightened by 40 levels (a translation where unclipped)."""
    folder = tmp_path_factory.mktemp("cli")
    d = np.round(load_digits().images[:300] * (180 / 16)).astype(np.uint8)[:, None]
    np.savez(folder / "real.npz", images=d)
    np.savez(folder / "fake.npz", images=d + 40)
    return folder / "real.npz", folder / "fake.npz"


def test_summary_json_and_plot(npz_pair, tmp_path):
    real, fake = npz_pair
    out_json, out_png = tmp_path / "r.json", tmp_path / "curve.png"
    res = CliRunner().invoke(main, ["estimate", str(real), str(fake), *FAST, f"--json={out_json}",
                                    "--plot", str(out_png)])
    assert res.exit_code == 0, res.output
    for label in ("W1 estimate", "certified lower bound", "Lipschitz bound", "samples real", "time"):
        assert label in res.output
    result = W1Result.from_json(out_json.read_text())
    assert result.steps_run == 40 and result.options["width"] == 8
    assert result.ci[0] <= result.estimate <= result.ci[1]
    assert result.sources["real"]["path"].endswith("real.npz")
    with Image.open(out_png) as img:
        img.verify()
        assert img.format == "PNG"


def test_json_to_stdout_is_only_json(npz_pair):
    real, fake = npz_pair
    res = CliRunner().invoke(main, ["estimate", str(real), str(fake), *FAST, "--steps", "5", "--lr", "0.002",
                                    "--holdout", "50", "--range", "0,1", "--critic-option", "min_size=2",
                                    "--json"])
    assert res.exit_code == 0, res.output
    result = W1Result.from_json(res.stdout)
    assert result.samples.real_heldout == 50 and result.space["value_range"] == [0.0, 1.0]
    assert result.options["lr"] == 0.002 and result.options["critic_options"] == {"min_size": 2}


def test_help_documents_every_option():
    res = CliRunner().invoke(main, ["estimate", "--help"])
    assert res.exit_code == 0
    for name in EstimateOptions.model_fields:
        if name in ("space", "critic_options"):
            continue
        assert "--" + name.replace("_", "-") in res.output, name
    for flag in ("--range", "--size", "--channels", "--resize", "--critic-option", "--json", "--plot", "--debug"):
        assert flag in res.output


@pytest.mark.parametrize("args, words", [
    (["missing.npz"], "missing.npz"),
    (["--lr", "-1"], "lr"),
    (["--holdout", "abc"], "holdout"),
    (["--critic", "nope"], "nope"),
    (["--critic", "fc", "--width", "16", "--critic-option", "depth=abc"], "critic 'fc' option depth must be an integer"),
    (["--critic", "fc", "--width", "16", "--critic-option", "bjorck_iters=100000000"], "bjorck_iters must be an integer"),
    (["--seed", "99999999999999999999"], "seed"),
    (["--json=/nonexistent-w1-folder/result.json"], "--json: cannot write /nonexistent-w1-folder/result.json: folder"),
    (["--plot", "/nonexistent-w1-folder/curve.png"], "--plot: cannot write /nonexistent-w1-folder/curve.png"),
])
def test_bad_input_is_one_line_and_nonzero(npz_pair, args, words):
    real, fake = npz_pair
    second = args if args[0].endswith(".npz") else [str(fake), *FAST, *args]  # later options win
    argv = ["estimate", str(real), *second]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], res.stderr
    assert lines[0].startswith("Error: "), res.stderr  # as every other w1 command (click's form)
    assert "Traceback" not in res.output


def test_debug_shows_the_exception(npz_pair):
    real, _ = npz_pair
    res = CliRunner().invoke(main, ["estimate", str(real), "missing.npz", "--debug", *FAST])
    assert res.exit_code != 0 and res.exception is not None


def test_vectors_with_range_none_and_a_time_budget(tmp_path):
    """N×D features outside [-1, 1]: --range none keeps them; --time bounds the training."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "real.npy", rng.standard_normal((300, 16)).astype(np.float32) * 5)
    np.save(tmp_path / "fake.npy", rng.standard_normal((300, 16)).astype(np.float32) * 5 + 1)
    res = CliRunner().invoke(main, ["estimate", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"),
                                    "--range", "none", "--time", "30", "--steps", "20", "--eval-every", "10",
                                    "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    result = W1Result.from_json(res.stdout)
    assert result.space["value_range"] == "none" and result.options["time_budget_s"] == 30
    assert result.selection.chosen.startswith("fc")


def test_bare_json_does_not_swallow_a_positional(npz_pair):
    """`w1 estimate --json real.npz fake.npz`: --json alone means stdout; a FILE is attached with '='."""
    real, fake = npz_pair
    res = CliRunner().invoke(main, ["estimate", "--json", str(real), str(fake), *FAST, "--steps", "5"])
    assert res.exit_code == 0, res.output
    assert W1Result.from_json(res.stdout).steps_run == 5


def test_help_documents_sources_and_default_values():
    res = CliRunner().invoke(main, ["estimate", "--help"])
    text = " ".join(res.output.split())
    assert "from the preset" not in text
    assert "[default: 2000; paper preset: 25600]" in text  # --steps
    assert "[default: 0.003; paper preset: 0.0001]" in text  # --lr
    for form in ("torchvision:cifar10?root=", "&split=", "onnx:gen.onnx?latent=62&dist=uniform&output_range=-1,1",
                 "builtin:photos?size=32&count=2000", "images/", "images.tar.gz", "real.npz#KEY", "--fid=auto",
                 "--json=FILE"):
        assert form in text, form


def test_fid_asked_for_but_unavailable_fails_clearly(npz_pair, tmp_path):
    """--fid without the weights: exit 2 before training, naming what is missing; --fid=auto skips it."""
    real, fake = npz_pair
    missing = tmp_path / "no-inception.pth"
    res = CliRunner().invoke(main, ["estimate", str(real), str(fake), *FAST, "--fid", "--fid-weights", str(missing)])
    assert res.exit_code == 2
    assert ("w1-service[fid]" in res.stderr) or (str(missing) in res.stderr), res.stderr
    assert "--fid=auto" in res.stderr and "W1 estimate" not in res.output
    res = CliRunner().invoke(main, ["estimate", str(real), str(fake), *FAST, "--steps", "5", "--fid=auto",
                                    "--fid-weights", str(missing), "--json"])
    assert res.exit_code == 0, res.output
    assert W1Result.from_json(res.stdout).fid is None
    assert "FID" not in res.stderr


def test_space_hints_name_cli_flags(npz_pair, tmp_path):
    real, _ = npz_pair
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, images=np.zeros((50, 8, 8, 3), dtype=np.uint8))
    res = CliRunner().invoke(main, ["estimate", str(real), str(rgb), *FAST])
    assert res.exit_code == 1 and "--channels 3" in res.stderr and "--channels 1" in res.stderr


def test_readme_estimate_commands(npz_pair, tmp_path, onnx_exporter, tiny_generator_cls):
    """The README's `w1 estimate` lines, on small real inputs: a folder, builtin: sets, an onnx: spec."""
    import torch

    real, fake = npz_pair
    folder = tmp_path / "fake_images"
    folder.mkdir()
    for i, img in enumerate(np.load(fake)["images"][:120, 0]):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    out_json, out_png = tmp_path / "result.json", tmp_path / "curve.png"
    res = CliRunner().invoke(main, ["estimate", str(real), str(folder), *FAST, f"--json={out_json}",
                                    "--plot", str(out_png)])
    assert res.exit_code == 0, res.output
    result = W1Result.from_json(out_json.read_text())
    assert result.sources["fake"]["count"] == 120 and out_png.stat().st_size > 0

    res = CliRunner().invoke(main, ["estimate", "builtin:digits", "builtin:digits?classes=0,1", *FAST, "--json"])
    assert res.exit_code == 0, res.output
    assert W1Result.from_json(res.stdout).sources["fake"]["classes"] == [0, 1]

    gen = onnx_exporter(tiny_generator_cls(shape=(1, 8, 8)), torch.zeros(2, 4), tmp_path / "gen.onnx")
    res = CliRunner().invoke(main, ["estimate", str(real), f"onnx:{gen}?latent=4&dist=normal", *FAST,
                                    "--eval-samples", "100", "--validation-samples", "64", "--json"])
    assert res.exit_code == 0, res.output
    out = W1Result.from_json(res.stdout)
    assert out.sources["fake"]["latent"] == [4] and out.samples.fake_heldout == 100


def test_training_that_diverges_says_so(npz_pair):
    real, fake = npz_pair
    res = CliRunner().invoke(main, ["estimate", str(real), str(fake), *FAST, "--critic", "fc", "--width", "16",
                                    "--steps", "20", "--lr", "1e308"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "training diverged: the fc critic's parameters are not finite" in res.stderr, res.stderr
    assert "lower the learning rate (option lr)" in res.stderr


def test_out_of_memory_names_the_options_to_lower():
    """torch's CPU allocator failure (a --size or --width too large for the machine) as one line. The
    message is torch's own; provoking it for real would depend on the machine's memory and overcommit."""
    from training.cli import _one_line

    exc = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 39999200004 bytes. Error code 12 (Cannot allocate memory)")
    assert _one_line(exc) == ("not enough memory for these options (one allocation of 37.3 GiB): lower --size, "
                              "--batch-size, --width or the critic options")
    assert _one_line(MemoryError()).startswith("not enough memory for these options: lower --size")
    assert _one_line(RuntimeError("shape mismatch")) == "shape mismatch"


def test_folds_with_a_generator_side_says_there_is_no_cross_fitting(npz_pair, tmp_path, onnx_exporter,
                                                                     tiny_generator_cls):
    import torch

    real, _ = npz_pair
    gen = onnx_exporter(tiny_generator_cls(shape=(1, 8, 8)), torch.zeros(2, 4), tmp_path / "gen.onnx")
    res = CliRunner().invoke(main, ["estimate", str(real), f"onnx:{gen}?latent=4", *FAST, "--steps", "20",
                                    "--eval-samples", "100", "--validation-samples", "64", "--folds", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = W1Result.from_json(res.stdout)
    assert out.folds is None
    assert any("folds = 3 was asked for, but a generator side draws fresh held-out samples" in n for n in out.notes)
