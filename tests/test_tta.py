import pytest
import torch
import ttach
from torch import nn

from kit import KitError
from kit.tta import PRESETS, merge, predict_batch


class Net(nn.Module):
    """A small model that is NOT flip-invariant, so every view differs."""

    def __init__(self, k=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, k)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.fc(x.flatten(1))


class SoftmaxNet(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).softmax(-1)


@pytest.mark.parametrize("tta", ["hflip", "flips", "d4", "multiscale"])
def test_batched_tta_equals_ttach_view_by_view(tta):
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(5, 3, 16, 16)
    reference = ttach.ClassificationTTAWrapper(SoftmaxNet(net), ttach.Compose(PRESETS[tta]), merge_mode="mean")
    with torch.no_grad():
        assert torch.allclose(predict_batch(net, x, tta, "mean"), reference(x), atol=1e-6)


def test_no_tta_is_plain_softmax():
    net = Net().eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(predict_batch(net, x, "none"), net(x).softmax(-1))


def test_d4_refuses_non_square_inputs():
    with pytest.raises(KitError, match="needs square inputs; got 8x12"):
        predict_batch(Net().eval(), torch.randn(2, 3, 8, 12), "d4")


@pytest.mark.parametrize("how", ["mean", "gmean", "logit_mean"])
def test_merges_give_distributions(how):
    p = torch.rand(4, 6, 5).softmax(-1)
    out = merge(p, how)
    assert out.shape == (6, 5) and torch.allclose(out.sum(-1), torch.ones(6))


def test_unknown_tta_lists_presets():
    with pytest.raises(KitError, match="unknown tta 'rot'"):
        predict_batch(Net().eval(), torch.randn(1, 3, 8, 8), "rot")


class Invariant(nn.Module):
    """Global average of a pointwise conv: invariant to flips and 90-degree rotations by construction."""

    def __init__(self, k=4):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x):
        return self.conv(x).mean((2, 3)) * 5


@pytest.mark.parametrize("tta", ["hflip", "flips", "d4"])
def test_every_view_is_undone_on_a_model_invariant_by_construction(tta):
    torch.manual_seed(0)
    model, x = Invariant().eval(), torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        plain = predict_batch(model, x, "none")
        for how in ("mean", "gmean", "logit_mean"):
            assert torch.allclose(predict_batch(model, x, tta, how), plain, atol=1e-5)


@pytest.mark.parametrize("tta", ["hflip", "flips", "d4", "multiscale"])
def test_views_really_differ_and_chunking_changes_nothing(tta):
    from kit.tta import views

    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 16)
    vs = views(tta)
    assert len(vs) == {"hflip": 2, "flips": 4, "d4": 8, "multiscale": 3}[tta]
    assert all(not torch.equal(v.augment_image(x), x) for v in vs[1:])
    net = Net().eval()
    with torch.no_grad():
        assert torch.allclose(predict_batch(net, x, tta, max_views_batch=1), predict_batch(net, x, tta), atol=1e-6)
