"""W1Monitor: W1 of a generator against one real set, inside its training loop (issue 13).

    monitor = W1Monitor(real, {"seed": 0}, steps_per_update=375)
    for step in range(steps):
        train_one_step(generator)
        if step % 1000 == 0:
            item = monitor.update(generator, step=step, latent=128)   # a SeriesItem
            print(step, item.lower_confidence_bound, item.certified_ci)
    monitor.result().items   # the curve so far; monitor.plot("w1.png")

The real set is opened and split once; the first update is a cold estimate (critic='auto' chooses the
family there); every later update starts from the previous update's critic and optimiser state and
trains at most `steps_per_update` steps (and `time_budget_s` seconds) with the warm schedule, so its
cost is bounded whatever the generator did (the first warm update trains one critic per warm rate it
races, training.series.WarmStart: up to twice that). The generator runs under no_grad in eval mode during the
update and keeps its train/eval mode (training.sources.open_callable)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from training.options import EstimateOptions
from training.series import SeriesRunner, WarmStart
from training.series_result import SeriesEvent, SeriesItem, SeriesResult


class W1Monitor:
    """Keeps one real set and one critic across updates. `steps_per_update` / `time_budget_s` bound a
    warm update (the first update is a cold estimate with `options`' steps and time budget);
    `warm` tunes the warm schedule (default WarmStart(); its `steps` is replaced by steps_per_update)."""

    def __init__(self, real, options: EstimateOptions | dict | None = None, *, steps_per_update: int = 375,
                 time_budget_s: float | None = None, warm: WarmStart | None = None,
                 progress: Callable[[SeriesEvent], None] | None = None, **overrides):
        if steps_per_update < 1:
            raise ValueError(f"steps_per_update must be at least 1, got {steps_per_update}")
        warm = dataclasses.replace(warm or WarmStart(), steps=steps_per_update)
        self.steps_per_update, self.time_budget_s = steps_per_update, time_budget_s
        self._runner = SeriesRunner(real, options, warm=warm, progress=progress, **overrides)

    def update(self, generator, step: int | None = None, label: str | None = None, *, latent=None, dist=None,
               output_range=None) -> SeriesItem:
        """W1(real, generator) now: a torch nn.Module or callable (with its `latent` shape, `dist` and
        `output_range`, as estimate_w1 takes them), or any other source estimate_w1 accepts."""
        runner = self._runner
        if callable(generator) and not hasattr(generator, "describe"):
            runner.generator = dict(latent=latent, dist=dist, output_range=output_range)
        label = label if label is not None else (f"step {step}" if step is not None else f"update {len(runner.items)}")
        first = not runner.items
        return runner.run_item(generator, label, step, max_steps=None if first else self.steps_per_update,
                               time_budget_s=None if first else self.time_budget_s)

    @property
    def items(self) -> list[SeriesItem]:
        return list(self._runner.items)

    def result(self) -> SeriesResult:
        """The series of every update so far (plot it with training.plot.plot_series)."""
        return self._runner.result()

    def plot(self, path) -> None:
        from training.plot import plot_series

        plot_series(self.result(), path)
