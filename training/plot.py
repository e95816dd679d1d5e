"""Step 5: the training curve as a PNG (one function for the CLI and the job service)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curve(result: Any, path: str | Path) -> None:
    """Objective and validation estimate per step, the held-out estimate and its interval.

    `result`: a W1Result or its JSON dict (the service stores results as JSON); a bare list of curve
    points (dicts) draws the curve alone."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.result import describe_space

    if isinstance(result, list):
        data: dict = {"curve": result}
    elif isinstance(result, dict):
        data = result
    else:
        data = result.model_dump(mode="json")
    curve = [p if isinstance(p, dict) else p.model_dump() for p in data.get("curve", [])]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([p["step"] for p in curve], [p["objective"] for p in curve], label="training objective", lw=1)
    val = [(p["step"], p["validation"]) for p in curve if p.get("validation") is not None]
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="validation estimate")
    if data.get("estimate") is not None:
        est, (lo, hi) = data["estimate"], data["ci"]
        pct = f"{data.get('confidence', 0.95):.0%}"
        ax.axhline(est, color="k", ls="--", lw=1, label=f"held-out estimate {est:.4g}")
        ax.axhspan(lo, hi, color="k", alpha=0.1, label=f"{pct} interval [{lo:.4g}, {hi:.4g}]")
    ax.set_xlabel("step")
    ax.set_ylabel("mean f(real) − mean f(fake)")
    title = "W1 critic training"
    if data.get("space"):
        title += f" — space: {describe_space(data['space'])}"
    if data.get("critic_spec"):
        title += f"\ncritic: {data['critic_spec'].get('name')} {data['critic_spec'].get('activation')}"
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
