"""Provably 1-Lipschitz critics (Li et al. 2019, BCOP) and their certificates. Torch only."""
from critics.bcop import BCOPConv2d
from critics.layers import GroupSort, InvertibleDownsample, MaxMin, OrthoLinear
from critics.lipschitz import LayerBound, LipschitzCertificate, lipschitz_bound, orthogonality_error
from critics.models import available_critics, build_critic, critic_from_spec, register_critic
from critics.ossn import OSSNConv2d
from critics.rko import RKOConv2d
from critics.export import export_plain

__all__ = ["BCOPConv2d", "RKOConv2d", "OSSNConv2d", "OrthoLinear", "MaxMin", "GroupSort",
           "InvertibleDownsample", "build_critic", "available_critics", "register_critic", "critic_from_spec",
           "lipschitz_bound", "LipschitzCertificate", "LayerBound", "orthogonality_error", "export_plain"]
