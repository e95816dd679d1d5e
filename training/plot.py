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
    _save(fig, ax, title, path, legend_loc="lower right", legend_size=8)


def plot_series(series: Any, path: str | Path) -> None:
    """W1 over checkpoints: the lower confidence bound (the headline) and the certified interval as a
    band around the certified value, against the checkpoint step (the item's position when steps are
    not given); markers say how each item's critic started. `series`: a SeriesResult or its JSON dict."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.series_result import SeriesResult

    data = series if isinstance(series, SeriesResult) else SeriesResult.model_validate(series)
    items = data.items
    by_step = bool(items) and all(it.step is not None for it in items)
    x = [it.step if by_step else it.index for it in items]
    pct = f"{data.confidence:.0%}"
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if items:
        ax.fill_between(x, [it.certified_ci[0] for it in items], [it.certified_ci[1] for it in items],
                        color="C0", alpha=0.18, label=f"certified {pct} interval")
        ax.plot(x, [it.certified_lower_bound for it in items], color="C0", lw=1, ls="--",
                label="certified lower bound (point estimate)")
        ax.plot(x, [it.lower_confidence_bound for it in items], color="C1", lw=2,
                label=f"W1 ≥ ({pct} lower confidence bound)")
        for start, marker in (("cold", "s"), ("warm", "o"), ("fallback", "^")):
            pts = [(xi, it.lower_confidence_bound) for xi, it in zip(x, items) if it.start == start]
            if pts:
                ax.plot(*zip(*pts), marker, color="C1", ms=5, ls="none", label=f"{start} start")
    if not by_step:
        ax.set_xticks(x, [it.label for it in items], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("checkpoint step" if by_step else "checkpoint")
    ax.set_ylabel("W1")
    ax.set_ylim(bottom=0)
    title = data.title()
    if data.critic:
        warm = sum(it.start == "warm" for it in items)
        title += f"\ncritic: {data.critic}, {warm} of {len(items)} items warm-started"
    _save(fig, ax, title, path, legend_loc="best", legend_size=7)


def _save(fig, ax, title: str, path, *, legend_loc: str, legend_size: int) -> None:
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    ax.legend(loc=legend_loc, fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
