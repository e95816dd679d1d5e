"""Independent numerical references shared by the critics tests."""
import pytest
import torch


def _dense(f, shape):
    """The matrix of a linear map f on per-sample `shape`, built column by column from basis vectors (float64)."""
    n = 1
    for d in shape:
        n *= d
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    with torch.no_grad():
        return f(basis).reshape(n, -1).T


def _adversarial(f, shape, pairs=32, steps=100, seed=0):
    """Largest |f(x) - f(y)| / ||x - y|| found by Adam on `pairs` random pairs (a lower bound on Lip(f))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(pairs, *shape, generator=g, dtype=torch.float64).requires_grad_(True)
    scale = torch.logspace(-2, 0.5, pairs, dtype=torch.float64).reshape(-1, *[1] * len(shape))
    delta = (scale * torch.randn(pairs, *shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([x, delta], lr=0.02)

    def ratios():
        diff = (f(x) - f(x + delta)).abs()
        return diff / delta.flatten(1).norm(dim=1).clamp_min(1e-9)

    for _ in range(steps):
        opt.zero_grad()
        (-ratios().sum()).backward()
        opt.step()
    with torch.no_grad():
        return float(ratios().max())


@pytest.fixture(autouse=True)
def single_thread():
    """These tests use small tensors: one thread avoids oversubscribing a busy 2-core CI machine
    (measured 10x faster under load). Restored afterwards so other test folders are unaffected."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def dense_matrix():
    return _dense


@pytest.fixture
def adversarial_lipschitz():
    return _adversarial
