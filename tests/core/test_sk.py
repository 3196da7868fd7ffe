"""SKConv unit tests: the Split-Fuse-Select definition, its options and its errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sknet
from sknet import BranchSpec, SKConv


def _reference(sk: SKConv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's equations written out: V_c = sum_m softmax_m(A_m z)_c U_m,c."""
    feats = [b(x) for b in sk.branches]
    u = torch.stack(feats, 1).sum(1)
    s = u.mean((2, 3))  # (N, C)
    attn = sk.attn
    z = F.relu(attn.bn(attn.fc_reduce(s[..., None, None]))).flatten(1)  # (N, d)
    logits = F.conv2d(z[..., None, None], attn.fc_select.weight).flatten(1)
    a = logits.view(x.shape[0], sk.num_branches, -1).softmax(1)
    a = a.expand(-1, -1, u.shape[1])
    v = sum(a[:, m, :, None, None] * feats[m] for m in range(sk.num_branches))
    return v, a


def _randomize_bn(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("branches", [(3, 5), (3, 5, 7), (3,)])
@pytest.mark.parametrize("attention", ["channel", "shared"])
def test_matches_paper_equations(branches: tuple[int, ...], attention: str) -> None:
    torch.manual_seed(0)
    sk = SKConv(32, 32, branches=branches, groups=4, attention=attention, min_attn_dim=8).eval()
    _randomize_bn(sk)
    x = torch.randn(3, 32, 9, 11)
    with sknet.capture_attention(sk) as att:
        out = sk(x)
        recorded = att["SK"] if "SK" in att else next(iter(att.values()))
    ref, a = _reference(sk, x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert recorded.shape == (3, len(branches), 32)
    assert torch.allclose(recorded, a, atol=1e-6)
    assert torch.allclose(recorded.sum(1), torch.ones(3, 32), atol=1e-6)
    if attention == "shared":
        assert sk.attn.fc_select.out_channels == len(branches)
        assert torch.equal(recorded[:, :, :1].expand_as(recorded), recorded)
    else:
        assert sk.attn.fc_select.out_channels == len(branches) * 32


def test_sum_aggregation_is_plain_sum_and_has_no_attention() -> None:
    torch.manual_seed(0)
    sk = SKConv(16, 16, groups=4, aggregation="sum").eval()
    x = torch.randn(2, 16, 8, 8)
    assert sk.attn is None
    assert torch.allclose(sk(x), sk.branches[0](x) + sk.branches[1](x))
    assert sum(p.numel() for p in sk.parameters()) == 2 * (16 * 4 * 9 + 32)


@pytest.mark.parametrize("size", [7, 8, 15, 33])
@pytest.mark.parametrize("stride", [1, 2])
def test_strides_and_odd_sizes(size: int, stride: int) -> None:
    sk = SKConv(8, 16, branches=(3, 5, 7), groups=4, stride=stride, min_attn_dim=4)
    out = sk.eval()(torch.randn(2, 8, size, size + 2))
    expected = (size - 1) // stride + 1, (size + 1) // stride + 1
    assert out.shape == (2, 16, *expected)


def test_dilated_branch_equals_true_kernel_with_holes() -> None:
    """A 3x3 kernel with dilation 2 is a 5x5 kernel whose odd taps are zero."""
    torch.manual_seed(0)
    dil = SKConv(8, 8, branches=(3, 5), groups=2, min_attn_dim=4).eval()
    full = SKConv(8, 8, branches=(3, 5), groups=2, min_attn_dim=4, kernel_mode="full").eval()
    assert dil.branches[1].conv.dilation == (2, 2) and dil.branches[1].conv.kernel_size == (3, 3)
    assert full.branches[1].conv.kernel_size == (5, 5)
    state = dil.state_dict()
    w5 = torch.zeros(8, 4, 5, 5)
    w5[:, :, ::2, ::2] = state["branches.1.conv.weight"]
    state["branches.1.conv.weight"] = w5
    full.load_state_dict(state)
    x = torch.randn(2, 8, 10, 10)
    assert torch.allclose(dil(x), full(x), atol=1e-5)


def test_branch_specs_and_per_branch_groups() -> None:
    sk = SKConv(64, 64, branches=("3x3 D1 G32", "5x5 D1 G64", BranchSpec(3, 3)), groups=32)
    convs = [b.conv for b in sk.branches]
    assert [c.kernel_size[0] for c in convs] == [3, 5, 3]
    assert [c.groups for c in convs] == [32, 64, 32]
    assert [s.effective_size for s in sk.specs] == [3, 5, 7]
    assert sk.attn_dim == 32  # max(64 // 16, 32)
    assert SKConv(64, 64, attn_dim=16).attn_dim == 16


def test_split_input_feeds_each_branch_a_slice() -> None:
    torch.manual_seed(0)
    sk = SKConv(16, 32, split_input=True, groups=4, min_attn_dim=8).eval()
    assert sk.branches[0].conv.in_channels == 8
    x = torch.randn(2, 16, 6, 6)
    x2 = x.clone()
    x2[:, 8:] += 1.0  # changes only branch 1's input
    u0a, _ = sk.branch_outputs(x)
    u0b, u1b = sk.branch_outputs(x2)
    assert not torch.equal(u1b, sk.branch_outputs(x)[1])
    assert torch.equal(u0a, u0b)
    assert sk(x).shape == (2, 32, 6, 6)


def test_branch_norm_false_is_plain_conv() -> None:
    sk = SKConv(8, 8, groups=2, branch_norm=False, kernel_mode="full", min_attn_dim=4)
    assert isinstance(sk.branches[0].bn, torch.nn.Identity)
    x = torch.randn(1, 8, 5, 5)
    assert torch.allclose(sk.branches[1](x), sk.branches[1].conv(x))


def test_training_with_batch_of_one_gives_clear_error() -> None:
    sk = SKConv(8, 8, groups=2, min_attn_dim=4).train()
    with pytest.raises(ValueError, match="batch of at least 2"):
        sk(torch.randn(1, 8, 5, 5))
    sk.eval()(torch.randn(1, 8, 5, 5))  # eval mode is fine
    free = SKConv(8, 8, groups=2, min_attn_dim=4, attn_norm=False).train()
    assert free(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"in_channels": 30, "groups": 4}, "divisible by groups"),
        ({"in_channels": 32, "branches": (3, 4)}, "odd"),
        ({"in_channels": 32, "branches": ()}, "M >= 1"),
        ({"in_channels": 32, "branches": ("4x3",)}, "square"),
        ({"in_channels": 32, "branches": ("big",)}, "cannot parse"),
        ({"in_channels": 32, "attention": "spatial"}, "attention must be"),
        ({"in_channels": 32, "aggregation": "max"}, "aggregation must be"),
        ({"in_channels": 33, "split_input": True, "groups": 1}, "split_input"),
        ({"in_channels": 32, "kernel_mode": "wide"}, "kernel_mode"),
        ({"in_channels": 32, "stride": 0}, "stride"),
    ],
)
def test_invalid_configs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SKConv(**kwargs)


def test_sk_input_errors() -> None:
    sk = SKConv(8, 8, groups=2, min_attn_dim=4).eval()
    with pytest.raises(ValueError, match="4-D"):
        sk(torch.randn(8, 5, 5))
    with pytest.raises(ValueError, match="8 input channels, got 3"):
        sk(torch.randn(1, 3, 5, 5))


def test_capture_attention_restores_state_and_needs_sk_units() -> None:
    model = sknet.create_model("sknet_tiny").eval()
    x = torch.randn(2, 3, 48, 48)
    with sknet.capture_attention(model) as att:
        assert len(att) == 0
        model(x)
        assert list(att) == ["SK_2_1", "SK_3_1", "SK_4_1"]
        assert att["SK_4_1"].shape == (2, 2, 128)
    assert all(
        not u.record_attention and u.last_attention is None for u in model.sk_units().values()
    )
    model(x)
    assert sknet.attention_of(model) == {}
    plain = sknet.create_model("resnext_tiny")
    with pytest.raises(ValueError, match="no SK units"), sknet.capture_attention(plain):
        pass
