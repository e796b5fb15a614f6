import copy
import io

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import nn

from kit.sam import SAM, bn_frozen, sam_update


def ce(model, x, y):
    return F.cross_entropy(model(x), y)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def data(n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def assert_same_weights(a, b, atol=1e-6):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=atol) if atol else torch.equal(p, q), name


def bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4), nn.Flatten(), nn.LazyLinear(3)),
    lambda: timm.create_model("test_efficientnet", num_classes=3),
])
def test_second_pass_leaves_batchnorm_running_stats_unchanged(make):
    torch.manual_seed(0)
    model = make().train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    model(x)  # materialize lazy layers
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    before = bn_stats(model)
    with bn_frozen(model):
        F.cross_entropy(model(x * 3 + 1), y).backward()
    after = bn_stats(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    F.cross_entropy(model(x * 3 + 1), y).backward()  # outside the context, stats move again
    assert not all(torch.equal(before[k], bn_stats(model)[k]) for k in before)


def test_sam_update_updates_bn_stats_once_per_step():
    """First pass moves the running stats (as a plain step would), the second pass does not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).train()
    ref = copy.deepcopy(model)
    x, y = data()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, rho=0.05)
    sam_update(model, opt, [(x, y)], ce)
    ref(x)  # one forward in train mode
    assert torch.allclose(model[1].running_mean, ref[1].running_mean)
    assert model[1].num_batches_tracked.item() == 1


def test_both_passes_see_the_same_mixed_batch_and_soft_targets():
    seen = []

    def soft_ce(model, x, y):
        seen.append((x.clone(), y.clone()))
        return torch.sum(-y * F.log_softmax(model(x), -1), -1).mean()

    model = mlp()
    x, y = data()
    soft = torch.softmax(torch.randn(len(y), 3), -1)
    sam_update(model, SAM(model.parameters(), torch.optim.SGD, lr=0.1), [(x, soft)], soft_ce)
    assert len(seen) == 2 and torch.equal(seen[0][0], seen[1][0]) and torch.equal(seen[0][1], seen[1][1])


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_matches_the_reference_two_step_algorithm(adaptive):
    model, ref = mlp(), mlp()
    x, y = data()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, rho=0.1, adaptive=adaptive)
    sam_update(model, opt, [(x, y)], ce)
    # reference: w_adv = w + rho * T^2 g / ||T g||; w <- w - lr * grad(w_adv)
    # SAM: T = 1. ASAM (Kwon et al.; SamsungLabs/ASAM): T = |w| + 0.01 on weights, T = 1 on biases
    ce(ref, x, y).backward()
    g = [p.grad.clone() for p in ref.parameters()]
    t = [p.detach().abs() + 0.01 if adaptive and p.ndim > 1 else torch.ones_like(p) for p in ref.parameters()]
    norm = torch.norm(torch.stack([(ti * gi).norm() for ti, gi in zip(t, g)]))
    with torch.no_grad():
        saved = [p.clone() for p in ref.parameters()]
        for p, ti, gi in zip(ref.parameters(), t, g):
            p.add_(0.1 * ti * ti * gi / norm)
    ref.zero_grad()
    ce(ref, x, y).backward()
    with torch.no_grad():
        for p, w in zip(ref.parameters(), saved):
            p.copy_(w - 0.1 * p.grad)
    assert_same_weights(model, ref)


def test_accumulating_k_micro_batches_matches_one_joint_batch():
    a, b = mlp(), mlp()
    x, y = data(n=48)
    opt_a = SAM(a.parameters(), torch.optim.AdamW, lr=1e-2, rho=0.05)
    opt_b = SAM(b.parameters(), torch.optim.AdamW, lr=1e-2, rho=0.05)
    for _ in range(3):
        sam_update(a, opt_a, [(x, y)], ce)
        sam_update(b, opt_b, [(x[:16], y[:16]), (x[16:40], y[16:40]), (x[40:], y[40:])], ce)
    assert_same_weights(a, b, atol=1e-5)


def test_fp16_scaler_skips_a_step_with_inf_gradients_and_otherwise_updates():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x, y = data()
    w0 = [p.clone() for p in model.parameters()]
    bad = x.clone()
    bad[0, 0] = float("inf")
    _, stepped = sam_update(model, opt, [(bad, y)], ce, scaler=scaler)
    assert not stepped and scaler.get_scale() == 2.0**9
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), w0)) and not opt.perturbed
    _, stepped = sam_update(model, opt, [(x, y)], ce, scaler=scaler)
    assert stepped and not all(torch.equal(p, w) for p, w in zip(model.parameters(), w0))


def reference_and_twin():
    """A model after one plain-float sam_update, and an identical twin (with its SAM) not yet stepped."""
    a, b = mlp(), mlp()
    x, y = data()
    sam_update(a, SAM(a.parameters(), torch.optim.SGD, lr=0.1), [(x, y)], ce)
    return a, b, SAM(b.parameters(), torch.optim.SGD, lr=0.1), x, y


def test_fp16_scaled_step_equals_unscaled_step():
    a, b, opt_b, x, y = reference_and_twin()
    sam_update(b, opt_b, [(x, y)], ce, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**12))
    assert_same_weights(a, b)


def test_bf16_autocast_without_scaler_updates():
    model = mlp()
    w0 = [p.clone() for p in model.parameters()]
    _, stepped = sam_update(model, SAM(model.parameters(), torch.optim.SGD, lr=0.1), [data()], ce,
                            autocast_dtype=torch.bfloat16)
    assert stepped and not all(torch.equal(p, w) for p, w in zip(model.parameters(), w0))


def test_clipping_bounds_the_update_magnitude():
    model = mlp()
    w0 = [p.clone() for p in model.parameters()]
    x, y = data()
    sam_update(model, SAM(model.parameters(), torch.optim.SGD, lr=1.0), [(x * 100, y)], ce, clip_grad=0.01)
    step = torch.norm(torch.stack([(p - w).norm() for p, w in zip(model.parameters(), w0)]))
    assert step <= 0.01 + 1e-6


def test_state_dict_round_trips_the_base_optimizer():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.AdamW, lr=1e-2, adaptive=True, rho=0.5)
    sam_update(model, opt, [data()], ce)
    clone = copy.deepcopy(model)
    opt2 = SAM(clone.parameters(), torch.optim.AdamW, lr=1e-2, adaptive=True, rho=0.5)
    buf = io.BytesIO()  # through bytes, as a resume does: in-process state dicts share tensors
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for _ in range(2):
        sam_update(model, opt, [data(seed=5)], ce)
        sam_update(clone, opt2, [data(seed=5)], ce)
    assert_same_weights(model, clone, atol=0)


def test_plain_step_through_base_optimizer_costs_one_pass():
    calls = []

    def counting(model, x, y):
        calls.append(1)
        return ce(model, x, y)

    model = mlp()
    sam_update(model, SAM(model.parameters(), torch.optim.SGD, lr=0.1), [data()], counting, sam=False)
    assert len(calls) == 1


def test_closure_step_matches_sam_update():
    a, b, opt_b, x, y = reference_and_twin()
    ce(b, x, y).backward()
    opt_b.step(lambda: ce(b, x, y).backward())
    assert_same_weights(a, b)


def test_bn_freeze_survives_an_inf_activation_in_the_second_pass():
    """The second pass may meet an inf activation: running stats stay finite and unchanged."""
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8)).train()
    model(data()[0])  # running stats away from their init
    before = bn_stats(model)
    x = data()[0]
    x[0, 0] = float("inf")
    with bn_frozen(model):
        model(x)
    after = bn_stats(model)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_first_pass_fp16_skip_resets_the_growth_tracker_like_gradscaler():
    """good, inf, good, good with growth_interval=2: the same scales as GradScaler's own skip gives.

    Growing needs 2 good steps in a row since the last skip: 1024, 512, 512, 1024 (not 1024, 512, 1024).
    """
    x, y = data()
    bad = x.clone()
    bad[0, 0] = float("inf")
    batches = [x, bad, x, x]

    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)
    scales, steps = [], []
    for b in batches:
        steps.append(sam_update(model, opt, [(b, y)], ce, scaler=scaler)[1])
        scales.append(scaler.get_scale())

    plain = mlp()
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    plain_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)
    plain_scales = []
    for b in batches:
        plain_opt.zero_grad()
        plain_scaler.scale(ce(plain, b, y)).backward()
        plain_scaler.step(plain_opt)
        plain_scaler.update()
        plain_scales.append(plain_scaler.get_scale())
    assert steps == [True, False, True, True]
    assert scales == plain_scales == [1024.0, 512.0, 512.0, 1024.0]


def zero_bias_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    nn.init.zeros_(model[0].bias)
    nn.init.zeros_(model[2].bias)
    return model


def test_asam_perturbs_a_zero_initialised_bias():
    """|w| scaling (davda54/sam) leaves a zero bias at zero: ASAM's T = 1 on biases moves it."""
    model = zero_bias_model()
    x, y = data()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, rho=0.5, adaptive=True)
    ce(model, x, y).backward()
    opt.first_step()
    assert model[0].bias.abs().min() > 0 and model[2].bias.abs().min() > 0


def test_asam_uses_parameter_names_when_the_optimizer_has_them():
    """Named parameters (torch's param_names): 'weight' in the name decides, as in SamsungLabs/ASAM,
    so a norm layer's 1-d weight gets T = |w| + eta and its bias T = 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
    x, y = data()
    ce(model, x, y).backward()
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt = SAM(model.named_parameters(), torch.optim.SGD, lr=0.1, rho=0.5, adaptive=True)
    opt.first_step()
    t = {n: w.abs() + 0.01 if "weight" in n else torch.ones_like(w) for n, w in w0.items()}
    norm = torch.norm(torch.stack([(t[n] * g[n]).norm() for n in w0]))
    for n, p in model.named_parameters():
        assert torch.allclose(p, w0[n] + 0.5 * t[n] ** 2 * g[n] / norm, atol=1e-6), n
