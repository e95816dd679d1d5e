"""A critic training step never waits for the device: no op that copies a value to the host
(.item(), float(t), bool(t), data-dependent shapes) runs in forward, backward, optimiser step or
re-projection. Counted with a TorchDispatchMode on the CPU, so it runs in CI without a GPU: every such
op reaches the dispatcher on any device, and on CUDA each one would be a host synchronisation.
On the CPU itself the re-projection is decided on the host (a read costs nothing there), so these
tests force the device rule with `sync_free()`; that the two rules give the same bits is tested here
too. The counter is tests/conftest.py's `host_reads` fixture."""
from __future__ import annotations

import pytest
import torch

from critics import build_critic
from critics.orthogonal import (_retract_on_device, _retract_on_host, gram, gram_error_of, kept_orthonormal,
                                polar3_error, polar3_step, sync_free)


def optimizer_step_counters(opt):
    """Adam keeps its step counts on the host even for CUDA parameters (unless capturable): reading
    them costs no synchronisation, so they are not counted."""
    return [s["step"] for s in opt.state.values() if torch.is_tensor(s.get("step"))]


def test_the_counter_sees_host_reads(host_reads):
    with host_reads() as reads:
        t = torch.ones(3)
        float(t.sum()), bool(t[0] > 0), torch.nonzero(t)
    assert len(reads.seen) == 3, reads.seen
    # and the host-decided re-projection (eval builds, where a read is fine) is seen reading
    p = torch.linalg.qr(torch.randn(8, 4))[0] + 0.01 * torch.randn(8, 4)
    with host_reads() as reads:
        kept_orthonormal(p, mutate=False)
    assert reads.seen
    with host_reads() as reads, sync_free():
        kept_orthonormal(p, mutate=True)
    assert reads.seen == []


def train_step(critic, opt, x):
    out = critic(x)
    half = len(x) // 2
    loss = out[half:].mean() - out[:half].mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@pytest.mark.parametrize("name,conv,shape,width,batch", [
    ("dcgan", "bcop", (3, 16, 16), 8, 8),
    ("dcgan", "rko", (3, 16, 16), 8, 8),
    ("dcgan", "ossn", (3, 16, 16), 8, 8),
    ("fc", "bcop", (3, 8, 8), 64, 8),    # fewer rows than features: the step applied without forming W
    ("fc", "bcop", (1, 4, 4), 16, 64),   # more rows: W formed (Gram + step)
])
def test_training_step_reads_nothing_back(name, conv, shape, width, batch, host_reads):
    torch.manual_seed(0)
    critic = build_critic(name, shape, conv=conv, width=width)
    opt = torch.optim.Adam(critic.parameters(), lr=3e-2, betas=(0.5, 0.999))  # large: re-projection runs
    x = torch.rand(2 * batch, *shape) * 2 - 1
    for _ in range(2):  # warm-up (OSSN's first power iteration, optimiser state)
        train_step(critic, opt, x)
    with host_reads(optimizer_step_counters(opt)) as reads, sync_free():
        for _ in range(3):
            train_step(critic, opt, x)
    assert reads.seen == []
    # and the re-projection did run: the applied matrices are orthonormal after these large steps
    critic.train()
    for m in critic.modules():
        if hasattr(m, "orthogonality_error") and conv == "bcop":
            assert m.orthogonality_error() < 1e-3


@pytest.mark.parametrize("drift,max_steps", [(1e-4, 2), (3e-3, 2), (0.05, 2), (0.15, 2), (0.15, 1), (0.3, 2),
                                             (0.3, 1), (0.45, 3), (1.5, 2), (1.5, 4)])
def test_host_rule_is_the_device_rule_bit_for_bit(drift, max_steps):
    """The CPU's host-decided re-projection applies exactly the steps the device rule keeps (none, some,
    as many as the cap allows, the scaled start of a large drift), so a run has the same bits either way."""
    torch.manual_seed(0)
    q = torch.linalg.qr(torch.randn(3, 24, 12))[0]
    d = torch.randn_like(q)
    p = q + drift * d / torch.linalg.matrix_norm(d)[..., None, None]
    on_host, on_device = p.clone(), p.clone()
    steps_host = _retract_on_host(on_host, 5e-3, max_steps)
    steps_device = _retract_on_device(on_device, 5e-3, max_steps)
    assert steps_host == int(steps_device)
    assert torch.equal(on_host, on_device)
    if drift < 1e-3:
        assert steps_host == 0
    elif drift > 0.01:
        assert steps_host >= 1
    if 0.1 <= drift <= 0.19:  # one third-order step where one Björck step would not do
        assert steps_host == 1 and float(gram_error_of(gram(on_host)).amax()) <= 5e-3


@pytest.mark.parametrize("shape", [(40, 40), (48, 20), (20, 48)])
@pytest.mark.parametrize("drift", [0.02, 0.1, 0.2, 0.45])
def test_third_order_step_error_is_within_its_bound(shape, drift):
    """polar3_step against the exact map of its eigenvalues: from float64 eigenvalues x of W^T W - I
    (W W^T for wide W), the step gives 5/8 x^3 - 15/64 x^4 + 9/64 x^5, and ||.||_F stays under polar3_error;
    singular values above 1 stay within 1 + 5/8 x^3 (so a later Björck step is still in its region)."""
    torch.manual_seed(1)
    q = torch.linalg.qr(torch.randn(max(shape), min(shape), dtype=torch.float64))[0]
    q = q if shape[0] >= shape[1] else q.mT
    d = torch.randn_like(q)
    w = q + d * (drift / float(gram_error_of(gram(q + d)).amax()))  # roughly the drift asked for
    g = gram(w)
    e = float(gram_error_of(g).amax())
    x = torch.linalg.eigvalsh(g - torch.eye(g.shape[-1], dtype=g.dtype))
    assert e <= 0.5
    out = polar3_step(w, g)
    got = torch.linalg.eigvalsh(gram(out) - torch.eye(g.shape[-1], dtype=g.dtype))
    expected = 5 / 8 * x ** 3 - 15 / 64 * x ** 4 + 9 / 64 * x ** 5
    # the map is increasing on [-0.5, 0.5], so sorted eigenvalues pair up with their images
    assert torch.allclose(got.sort().values, expected.sort().values, atol=1e-12)
    assert float(gram_error_of(gram(out))) <= polar3_error(e)
    assert float(torch.linalg.matrix_norm(out, ord=2)) <= 1 + 5 / 8 * e ** 3 + 1e-12
