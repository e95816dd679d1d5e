"""The one result table, for a W1Result and for its JSON from a server (maybe a newer one)."""
from __future__ import annotations

from rich.console import Console

from training.table import result_rows, result_table
from training.result import W1Result

RESULT = dict(estimate=1.25, stderr=0.05, ci=(1.15, 1.35), confidence=0.95, lipschitz_bound=0.99,
              certified_lower_bound=1.2626, certified_ci=(1.16, 1.36), orthogonality_error=1e-6,
              samples=dict(real_train=100, real_heldout=30, fake_train=100, fake_heldout=30),
              space=dict(value_range=[-1, 1], size=[8, 8], channels=1, resize="none"), sources={},
              steps_run=40, timings=dict(train_s=1.0, eval_s=0.1, total_s=1.2), device="cpu", seed=0,
              options={}, versions={})


def text(table) -> str:
    console = Console(width=100, record=True)
    console.print(table)
    return console.export_text()


def test_json_from_a_newer_server_renders_like_the_model():
    model = W1Result.model_validate(RESULT)
    newer = {**model.model_dump(mode="json"), "a_field_from_the_future": 7}
    assert result_rows(newer) == model.summary_rows()
    shown = text(result_table(newer, job={"id": "job_1", "status": "succeeded", "label": "epoch10"}))
    assert "job job_1" in shown and "epoch10" in shown and "certified lower bound" in shown
    assert text(result_table(model)) == text(result_table(model.model_dump(mode="json")))


def test_a_result_that_does_not_validate_still_shows_its_scalars():
    rows = dict(result_rows({"estimate": 1.5, "stderr": 0.1, "curve": [1, 2]}))
    assert rows == {"estimate": "1.5", "stderr": "0.1"}


def test_the_time_row_says_on_how_many_threads_and_what_the_watch_changed():
    rows = dict(W1Result.model_validate(RESULT).summary_rows())
    assert rows["time"].endswith("on cpu")  # a result from before threads were recorded
    two = {"threads": "2", "threads_changes": "1 from 1.35 s (other processes kept 1 of 2 cores busy)"}
    for versions, tail in (({"threads": "1"}, "on cpu, 1 thread"), ({"threads": "2"}, "on cpu, 2 threads"),
                           (two, "on cpu, 2 threads; then 1 from 1.35 s (other processes kept 1 of 2 cores busy)")):
        assert dict(W1Result.model_validate({**RESULT, "versions": versions}).summary_rows())["time"].endswith(tail)
