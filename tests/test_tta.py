import pytest
import torch
import torch.nn.functional as F
import ttach
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kit import KitError
from kit.tta import ACTIVATIONS, PRESETS, cumulative_probs, merge, n_views, predict, predict_batch, views


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


class BrightSpot(nn.Module):
    """Logits from where the brightest pixel is: flips and rotations move it, so each view predicts differently
    (a model invariant to the views cannot tell applied views from skipped ones)."""

    def forward(self, x):
        h, w = x.shape[-2:]
        idx = x.mean(1).flatten(1).argmax(1)
        r, c = (idx // w).float() / (h - 1) * 2 - 1, (idx % w).float() / (w - 1) * 2 - 1
        return torch.stack([r, c, r * c, -r - c], 1) * 3


def by_hand(model, x, tta, how):
    """The merge, written out, of each ttach view's probabilities (de-augmented: identity for labels)."""
    p = torch.stack([t.deaugment_label(model(t.augment_image(x)).softmax(-1)) for t in ttach.Compose(PRESETS[tta])])
    if how == "mean":
        return p.mean(0)
    g = p.log().mean(0).exp()
    return g / g.sum(-1, keepdim=True)  # gmean and logit_mean agree: both renormalize exp(mean log p)


@pytest.mark.parametrize("how", ["mean", "gmean", "logit_mean"])
@pytest.mark.parametrize("tta", ["hflip", "flips", "d4", "multiscale"])
def test_prediction_is_the_merge_of_every_view_on_a_model_that_sees_them(tta, how):
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    model = BrightSpot()
    with torch.no_grad():
        expected = by_hand(model, x, tta, how)
        # the test bites: skipping the views (plain softmax) is far from the merge
        assert (expected - model(x).softmax(-1)).abs().max() > 0.01
        assert torch.allclose(predict_batch(model, x, tta, how), expected, atol=1e-6)


class Recorder(nn.Module):
    """Net that records the shape of every batch it is given."""

    def __init__(self):
        super().__init__()
        self.net, self.shapes = Net(), []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.net(x)


@pytest.mark.parametrize("tta", ["hflip", "flips", "d4", "multiscale"])
def test_a_forward_never_holds_more_than_the_batch(tta):
    """d4 on a batch of B: 8 forwards of B, not one of 8 B; a 1.125 view (18 px) takes 3 images to stay within
    the pixels of 4 at 16 px."""
    model = Recorder().eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        predict_batch(model, x, tta)
    assert sum(n for n, *_ in model.shapes) == len(x) * n_views(tta)
    assert all(n <= 4 and n * h * w <= 4 * 16 * 16 for n, _, h, w in model.shapes)


def test_predict_stacks_a_short_last_batch_up_to_the_loader_batch_size():
    """10 images, batch 8, hflip: 16 views -> 8 + 8; the last batch's 2 x 2 views fit in one forward."""
    model = Recorder()
    loader = DataLoader(TensorDataset(torch.randn(10, 3, 16, 16), torch.zeros(10)), batch_size=8)
    predict(model, loader, "hflip")
    assert [n for n, *_ in model.shapes] == [8, 8, 4]


def test_multiscale_views_are_resampled_smoothly():
    """Bilinear, as the training images were resized; ttach's default, nearest, repeats or drops whole rows."""
    x = torch.rand(2, 3, 16, 16)
    scaled = {v.augment_image(x).shape[-1]: v.augment_image(x) for v in views("multiscale")}
    for side in (14, 18):
        assert torch.allclose(scaled[side], F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False))


def test_oof_and_test_predictions_of_a_fold_run_in_the_same_precision(tiny_comp, fit_tiny, monkeypatch):
    """A fold trained with amp='bf16' on CPU: its OOF (fit_fold) and its test predictions (predict_fold)
    both run under bf16 autocast."""
    import kit.tta
    from kit.infer import predict_fold

    seen = []
    real = kit.tta.predict_batch

    def spy(*args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(kit.tta, "predict_batch", spy)
    r = fit_tiny("p", amp="bf16", tta="none")
    oof, seen[:] = list(seen), []
    predict_fold(r.dir, tiny_comp, "none", device="cpu")
    assert set(oof) == set(seen) == {torch.bfloat16}


@pytest.mark.parametrize("tta", ["hflip", "flips", "d4", "multiscale"])
def test_views_really_differ_and_chunking_changes_nothing(tta):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 16)
    vs = views(tta)
    assert len(vs) == {"hflip": 2, "flips": 4, "d4": 8, "multiscale": 3}[tta]
    assert all(not torch.equal(v.augment_image(x), x) for v in vs[1:])
    net = Net().eval()
    with torch.no_grad():
        assert torch.allclose(predict_batch(net, x, tta, max_images=1), predict_batch(net, x, tta), atol=1e-6)


def test_views_are_made_as_the_forwards_need_them(monkeypatch):
    """d4 on a batch of 4, forwards of 4: each view is made when its forward comes, never all 8 first (8 times
    the batch in memory, the input of a 1024-image forward at batch 128)."""
    import kit.tta

    made, seen = [], []
    real = kit.tta.views

    def counted_views(tta):
        out = real(tta)
        for t in out:
            def augment(x, make=t.augment_image):
                made.extend([len(x)] if len(x) > 1 else [])  # a one-image probe of the view's size is not a view
                return make(x)
            t.augment_image = augment
        return out

    monkeypatch.setattr(kit.tta, "views", counted_views)
    model = Recorder().eval()
    model.register_forward_pre_hook(lambda m, args: seen.append(len(made)))
    with torch.no_grad():
        predict_batch(model, torch.randn(4, 3, 16, 16), "d4")
    assert seen == list(range(1, 9)) and made == [4] * 8


def test_chunks_are_the_concatenation_split():
    from kit.tta import chunks

    torch.manual_seed(0)
    for sizes, size in [([4, 4, 4], 4), ([3, 5, 2], 4), ([7], 3), ([1, 1, 1], 2), ([2, 9, 1], 16)]:
        parts = [torch.randn(n, 2) for n in sizes]
        expected = torch.cat(parts).split(size)
        got = list(chunks(iter(parts), size))
        assert [len(c) for c in got] == [len(c) for c in expected]
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_cumulative_probabilities_are_differences_of_the_monotone_sigmoids():
    """Row 0: P(grade > k) = 0.8, 0.5, 0.2 -> per-grade 0.2, 0.3, 0.3, 0.2. Row 1 crosses (P(> 2) = 0.7 above
    P(> 1) = 0.6): the running minimum makes it 0.6, so grade 2 gets 0, not -0.1."""
    s = torch.tensor([[0.8, 0.5, 0.2], [0.9, 0.6, 0.7]], dtype=torch.float64)
    p = cumulative_probs(torch.logit(s))
    assert torch.allclose(p, torch.tensor([[0.2, 0.3, 0.3, 0.2], [0.1, 0.3, 0.0, 0.6]], dtype=torch.float64))
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64))
    wild = cumulative_probs(torch.randn(64, 9) * 5)  # crossing sigmoids everywhere
    assert wild.shape == (64, 10) and (wild >= 0).all() and torch.allclose(wild.sum(-1), torch.ones(64))
    assert ACTIVATIONS["cumulative"] is cumulative_probs


def test_tta_merges_the_per_grade_probabilities_of_the_views():
    """The activation turns each view's K-1 outputs into K per-grade probabilities before the views are merged
    (a mean of distributions), as for a softmax; not the outputs merged first."""
    torch.manual_seed(0)
    net = Net(k=3).eval()
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        got = predict_batch(net, x, "hflip", "mean", activation="cumulative")
        views_ = [cumulative_probs(net(x)), cumulative_probs(net(x.flip(-1)))]
    assert got.shape == (5, 4)
    assert torch.allclose(got, (views_[0] + views_[1]) / 2, atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(5), atol=1e-6)


def test_a_preset_whose_views_a_model_cannot_run_at_its_size_is_named_and_nothing_of_the_model_changes():
    """timm's test_convnext downsamples 32 px to 1 px before a 2x2 kernel: multiscale's 0.875 view (28 px) does
    not fit it, its other presets do; at 16 px nothing does. The probe leaves the mode, weights and BN stats as
    they were."""
    from kit.models import create_model
    from kit.tta import cannot_run

    model = create_model("test_convnext", 3)
    bad = cannot_run(model, ("none", "hflip", "flips", "multiscale", "d4"), 32, torch.device("cpu"))
    assert list(bad) == ["multiscale"] and "greater than actual input size" in bad["multiscale"]
    assert list(cannot_run(model, ("none", "hflip"), 16, torch.device("cpu"))) == ["none", "hflip"]
    resnet = create_model("test_resnet", 3).train()  # BatchNorm: a forward in train mode would move its stats
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    assert cannot_run(resnet, ("multiscale", "d4"), 16, torch.device("cpu")) == {} and resnet.training
    assert all(torch.equal(v, before[k]) for k, v in resnet.state_dict().items())
    assert cannot_run(resnet.eval(), ("none",), 16, torch.device("cpu")) == {} and not resnet.training
