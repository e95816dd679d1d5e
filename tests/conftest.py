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
