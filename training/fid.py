"""Optional FID beside W1, through pytorch-fid, only from Inception weights already on disk.

pytorch-fid downloads its weights at first use and unpickles them; here the file is found locally
(an explicit path or the torch hub cache) and loaded with weights_only=True, and nothing is ever
downloaded: without the weights the result carries a note instead of a value."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from training.result import FIDResult

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# Below this many samples per side the 2048x2048 feature covariance is rank-deficient and FID is
# biased upwards; values are not comparable with published ones (which use 10,000-50,000).
MIN_MEANINGFUL_SAMPLES = 2048


def weights_location(path: str | None) -> Path:
    """Where the Inception weights are looked for: `path`, else the torch hub cache."""
    return Path(path).expanduser() if path else Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def find_weights(path: str | None) -> Path | None:
    """The Inception weights file: `path` if given, else pytorch-fid's file in the torch hub cache."""
    candidate = weights_location(path)
    return candidate if candidate.is_file() else None


def _inception(weights: Path, device: torch.device):
    from pytorch_fid import inception as fid_inception

    def local_only(url, *args, **kwargs):  # replaces pytorch-fid's downloader: local file, safe loading
        return torch.load(weights, map_location="cpu", weights_only=True)

    with mock.patch.object(fid_inception, "load_state_dict_from_url", local_only):
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return model.to(device).eval()


@torch.no_grad()
def _features(model, batches: Iterable[torch.Tensor], device) -> np.ndarray:
    feats = []
    for x in batches:
        x = x.to(device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # Inception wants RGB
        elif x.shape[1] != 3:
            raise ValueError(f"FID needs 1- or 3-channel images, got {x.shape[1]} channels")
        feats.append(model(x)[0].squeeze(-1).squeeze(-1).double().cpu())
    return torch.cat(feats).numpy()


def compute_fid(real_batches: Iterable[torch.Tensor], fake_batches: Iterable[torch.Tensor],
                weights_path: str | None, device: torch.device) -> FIDResult:
    """FID between two streams of [0, 1] images, or a FIDResult whose note says why there is none."""
    try:
        from pytorch_fid.fid_score import calculate_frechet_distance
    except ImportError:
        return FIDResult(note="FID not computed: pytorch-fid is not installed (pip install 'w1-service[fid]')")
    weights = find_weights(weights_path)
    if weights is None:
        return FIDResult(note=f"FID not computed: Inception weights not found at {weights_location(weights_path)} "
                              "(never downloaded; place the file there or set fid_weights / the server's "
                              "W1_FID_WEIGHTS)")
    model = _inception(weights, device)
    fr, ff = _features(model, real_batches, device), _features(model, fake_batches, device)
    if len(fr) < 2 or len(ff) < 2:
        return FIDResult(note="FID not computed: fewer than 2 held-out samples on a side")
    value = calculate_frechet_distance(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    samples = min(len(fr), len(ff))
    note = ""
    if samples < MIN_MEANINGFUL_SAMPLES:
        note = (f"warning: FID on {samples} held-out samples per side (< {MIN_MEANINGFUL_SAMPLES:,}) is biased "
                "upwards and not comparable with published FIDs (10,000-50,000 samples)")
    return FIDResult(value=float(value), samples=samples, note=note)
