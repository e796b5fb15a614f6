"""Sharpness-Aware Minimization (Foret et al., 2021) and Adaptive SAM (Kwon et al., 2021).

The optimizer keeps davda54/sam's shape (wraps any base optimizer; `first_step`, `second_step`,
`step(closure)`). `sam_update` adds what that repo and timm leave out: fp16 with a GradScaler
(unscaled once per pass, the update skipped on inf/NaN) or bf16 autocast without one, BatchNorm
running statistics frozen on the second pass (every `_BatchNorm`, timm's BatchNormAct2d
included), gradient accumulation over micro-batches, and clipping.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class SAM(torch.optim.Optimizer):
    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, eta: float = 0.01, **kwargs):
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, eta=eta, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups  # one set of groups: schedulers see both
        self.defaults.update(self.base_optimizer.defaults)
        self.perturbed = False

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Climb to the worst point within rho: w + e(w)."""
        scale_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (scale_norm + 1e-12)
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                t_w = adaptive_scale(group, i, p)
                e_w = (t_w * t_w if t_w is not None else 1.0) * p.grad * scale.to(p)  # T_w^2 g rho / ||T_w g||
                p.add_(e_w)
        self.perturbed = True
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Back to w, whether or not the update happens (a skipped fp16 step must not keep e(w))."""
        if not self.perturbed:
            return
        for group in self.param_groups:
            for p in group["params"]:
                if "old_p" in self.state[p]:
                    p.copy_(self.state[p].pop("old_p"))
        self.perturbed = False

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Back to w, then the base optimizer's update with the gradient taken at w + e(w)."""
        self.restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure=None):
        """With a closure: the full two-pass step. Without: second_step (what GradScaler.step calls)."""
        if closure is None:
            return self.second_step()
        closure = torch.enable_grad()(closure)
        self.first_step(zero_grad=True)
        closure()
        self.second_step()

    def _grad_norm(self) -> torch.Tensor:
        """||T_w g||: T_w = 1 for SAM."""
        device = self.param_groups[0]["params"][0].device
        norms = [(t_w * p.grad if (t_w := adaptive_scale(group, i, p)) is not None else p.grad).norm(p=2).to(device)
                 for group in self.param_groups for i, p in enumerate(group["params"]) if p.grad is not None]
        return torch.norm(torch.stack(norms), p=2) if norms else torch.zeros((), device=device)

    def state_dict(self) -> dict:
        return {"base": self.base_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups
        for group in self.param_groups:  # a state saved before a SAM option existed (eta) gets its default
            for k, v in self.defaults.items():
                group.setdefault(k, v)


def adaptive_scale(group: dict, i: int, p: torch.Tensor) -> torch.Tensor | None:
    """ASAM's element-wise operator T_w for the i-th parameter of a group; None means T_w = 1 (as SAM).

    Kwon et al. (2021) and their code (SamsungLabs/ASAM, asam.py `ascent_step`): T_w = |w| + eta, eta = 0.01,
    on weights and T_w = 1 on biases, so a zero weight or a zero-initialised bias is still perturbed
    (davda54/sam's |w| on every tensor never moves them). The reference tells weights by name ('weight' in
    it, norm-layer scales included): names are used when the optimizer has them (built from named
    parameters: torch's "param_names"); without them a weight is a tensor with ndim > 1, and a norm scale
    gets T_w = 1 (it starts at 1, where |w| + eta = 1.01: the two rules start almost equal).
    """
    if not group["adaptive"]:
        return None
    names = group.get("param_names")
    is_weight = "weight" in names[i] if names else p.ndim > 1
    return p.abs().add_(group["eta"]) if is_weight else None


@contextmanager
def bn_frozen(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers still normalize with batch statistics but leave running stats untouched.

    Every `_BatchNorm` subclass (timm's BatchNormAct2d included): the running buffers are copied
    before and put back after, so the second SAM pass leaves no trace. Not momentum 0: the update
    (1 - 0) * running + 0 * batch is NaN as soon as a batch statistic is inf (0 * inf).
    """
    buffers = [b for m in model.modules() if isinstance(m, _BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)


def backward_pass(model: nn.Module, micro_batches: Sequence[tuple], loss_fn: LossFn, scaler, autocast_dtype,
                  device_type: str) -> float:
    """Accumulate the mean gradient over micro-batches (each weighted by its size); returns the mean loss."""
    total = sum(len(x) for x, _ in micro_batches)
    loss_sum = 0.0
    for x, y in micro_batches:
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = loss_fn(model, x, y) * (len(x) / total)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += float(loss.detach())
    return loss_sum


@torch.no_grad()
def unscale_and_check(params, scaler) -> bool:
    """Unscale gradients in place (once for this pass); True when all are finite.

    GradScaler.unscale_ may run once per optimizer between updates and SAM has two passes, so the
    first pass uses the same fused kernel GradScaler uses, with its current scale.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    if scaler is None:
        # one fused norm over all gradients and one sync: isfinite per tensor cost B0 ~20 ms a step on
        # CPU (213 tensors), 7% of a 64 px step. A NaN or inf anywhere makes the norms non-finite (so would
        # a gradient element beyond ~1.8e19, whose square leaves float32, which no trainable step has).
        return bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())
    found_inf = torch.zeros(1, device=grads[0].device)
    inv_scale = torch.full((1,), 1.0 / scaler.get_scale(), device=grads[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
    return found_inf.item() == 0


def sam_update(model: nn.Module, optimizer: SAM, micro_batches: Sequence[tuple], loss_fn: LossFn, scaler=None,
               autocast_dtype=None, clip_grad: float = 0.0, sam: bool = True) -> tuple[float, bool]:
    """One optimizer update over micro-batches: (mean loss at w, whether the weights were updated).

    sam=False does a plain step with the base optimizer (SAM every N steps).
    The same micro-batches (already mixed, with their soft targets) feed both passes.
    """
    device_type = next(model.parameters()).device.type
    params = [p for g in optimizer.param_groups for p in g["params"]]
    optimizer.zero_grad(set_to_none=True)
    loss = backward_pass(model, micro_batches, loss_fn, scaler, autocast_dtype, device_type)
    if sam:
        if not unscale_and_check(params, scaler):
            return loss, _skip(optimizer, scaler)
        optimizer.first_step(zero_grad=True)
        with bn_frozen(model):
            backward_pass(model, micro_batches, loss_fn, scaler, autocast_dtype, device_type)
    step_fn = optimizer if sam else optimizer.base_optimizer
    if scaler is not None:
        scaler.unscale_(step_fn)
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        before = scaler.get_scale()
        scaler.step(step_fn)
        scaler.update()
        optimizer.restore()  # if the scaler skipped the step, SAM is still at w + e(w)
        stepped = scaler.get_scale() >= before  # the scale backs off exactly when the step was skipped
        return loss, stepped
    if not unscale_and_check(params, None):
        return loss, _skip(optimizer, None)
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    step_fn.step()
    return loss, True


def _skip(optimizer: SAM, scaler) -> bool:
    """Inf/NaN gradients: undo any perturbation, no update; the scaler skips as on its own inf step.

    The gradients still hold the inf/NaN, so GradScaler's own path finds it, skips the step, backs
    the scale off and resets its growth tracker (update(new_scale) would keep the tracker counting).
    """
    optimizer.restore()
    if scaler is not None and scaler.is_enabled():  # a disabled scaler's step() would take the step
        scaler.unscale_(optimizer)
        scaler.step(optimizer)  # not taken: found_inf
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return False
