"""Fixtures shared by all test folders (pytest runs with --import-mode=importlib, so test modules
cannot import each other or a conftest: shared helpers are fixtures returning them)."""
from __future__ import annotations

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

# ops whose result the host has to read: each is a device synchronisation on CUDA
HOST_READS = {"_local_scalar_dense", "is_nonzero", "equal", "nonzero", "nonzero_static", "masked_select",
              "_unique", "_unique2", "unique_consecutive", "unique_dim", "repeat_interleave", "allclose"}


class HostReads(TorchDispatchMode):
    """Counts dispatched ops that make the host read a tensor's value."""

    def __init__(self, host_tensors=()):
        super().__init__()
        self.seen: list[str] = []
        self.host_ids = {id(t) for t in host_tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in HOST_READS and not (args and id(args[0]) in self.host_ids):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def host_reads():
    """The HostReads dispatch mode class: `with host_reads(ignore) as r: ...; r.seen`."""
    return HostReads


class KnownAnswers:
    """Every estimate a test compares with a known W1, for one table at the end of the session: how many
    runs, how tight each was, and how many lower confidence bounds exceeded the truth (a one-sided 95 %
    bound may, in about 1 run of 20 with an optimal critic; the tests' own assertions still decide)."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, float]] = []

    def add(self, case: str, truth: float, result) -> None:
        """`result`: anything with certified_lower_bound and lower_confidence_bound (a W1Result, a series item)."""
        self.rows.append((case, truth, result.certified_lower_bound / truth, result.lower_confidence_bound / truth))

    def summary(self) -> list[str]:
        above = [row for row in self.rows if row[3] > 1]
        lines = [f"{len(self.rows)} estimates against a known W1; lower confidence bound above the truth in "
                 f"{len(above)}" + (": " + ", ".join(row[0] for row in above) if above else "")]
        lines += [f"{case:50s} W1 {truth:8.4f}  certified / W1 {ratio:.4f}  LCB / W1 {lcb:.4f}"
                  + ("  LCB ABOVE W1" if lcb > 1 else "") for case, truth, ratio, lcb in self.rows]
        return lines


_KNOWN_ANSWERS = KnownAnswers()


@pytest.fixture(scope="session")
def known_answers() -> KnownAnswers:
    """The session's KnownAnswers: `known_answers.add(case_name, true_w1, result)` beside the assertions."""
    return _KNOWN_ANSWERS


def pytest_terminal_summary(terminalreporter):
    if _KNOWN_ANSWERS.rows:
        terminalreporter.section("known answers")
        for line in _KNOWN_ANSWERS.summary():
            terminalreporter.write_line(line)
