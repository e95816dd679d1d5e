"""export_plain gives the same function with plain torch.nn modules, and that function survives
TorchScript and ONNX (onnxruntime) unchanged."""
import pytest
import torch
from torch import nn

from critics import build_critic, export_plain, lipschitz_bound
from critics.conv import LipschitzConv2d
from critics.layers import OrthoLinear

CASES = [("dcgan", "bcop", "maxmin", {}), ("dcgan", "rko", "groupsort", {"padding_mode": "zeros"}),
         ("dcgan", "ossn", "relu", {}), ("fc", "bcop", "groupsort", {"depth": 2}),
         ("conv", "bcop", "groupsort", {"group_size": 8})]


def _model(name, conv, act, opts):
    torch.manual_seed(0)
    width = {"dcgan": 8, "fc": 32}.get(name)
    return build_critic(name, (3, 16, 16), conv=conv, activation=act, width=width, **opts)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated in torch 2.14, still supported
@pytest.mark.parametrize("name,conv,act,opts", CASES)
def test_export_plain_is_the_same_function_with_plain_modules(name, conv, act, opts):
    model = _model(name, conv, act, opts)
    model.train()
    plain = export_plain(model)
    assert model.training and not plain.training  # the original's mode is left alone
    assert not any(isinstance(m, (LipschitzConv2d, OrthoLinear)) for m in plain.modules())
    assert plain.input_shape == (3, 16, 16)
    x = torch.randn(5, 3, 16, 16)
    torch.testing.assert_close(plain(x), model.eval()(x), rtol=0, atol=1e-5)
    assert lipschitz_bound(plain, (3, 16, 16)).bound == pytest.approx(lipschitz_bound(model).bound, rel=1e-9)
    scripted, traced = torch.jit.script(plain), torch.jit.trace(plain, x)
    y = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(scripted(y), model(y), rtol=0, atol=1e-5)
    torch.testing.assert_close(traced(y), model(y), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,conv,act,opts", [CASES[0], CASES[1]])
def test_onnx_export_matches(name, conv, act, opts, tmp_path):
    import onnxruntime as ort  # a runtime dependency; onnxscript (dev extra) drives the dynamo exporter
    model = _model(name, conv, act, opts).eval()
    plain = export_plain(model)
    path = tmp_path / "critic.onnx"
    torch.onnx.export(plain, (torch.randn(2, 3, 16, 16),), str(path), opset_version=18, dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(7, 3, 16, 16)  # a batch size other than the one exported with
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert out.shape == (7,)
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), rtol=0, atol=1e-5)


def test_export_plain_rejects_non_sequential():
    with pytest.raises(TypeError, match="nn.Sequential"):
        export_plain(nn.Linear(2, 1))
