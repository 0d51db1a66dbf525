"""Low-rank members in activation space: θ + s·A·Bᵀ applied as an additive term, the matrix never formed.

For a weight matrix W ``[m, n]`` with low-rank noise ε = A·Bᵀ/√r (A ``[m, r]``, B ``[n, r]``) and s = ±σ/√r,
the member's layer is evaluated as the unperturbed layer plus a rank-r correction of its output:

- ``nn.Linear`` (W ``[out, in]``): y = x·Wᵀ + b + s·(x·B)·Aᵀ;
- GPT-2's ``Conv1D`` (W ``[in, out]``): y = x·W + b + s·(x·A)·Bᵀ;
- ``nn.Embedding`` (W ``[vocab, d]``): y = W[i] + s·A[i]·Bᵀ.

A matrix used by several modules (GPT-2's output layer is tied to the token embedding) gets the correction in
each of them, with the same A and B. The corrections are forward hooks that exist only during the member's own
forward passes; the 1-D tensors (biases, layer norms) and any matrix used by a module of another kind still go
through :func:`~stochgrad.rlhf.es.update.perturbed` and ``functional_call``. Either way the model's tensors are
never written. Extra memory per member: A and B, O(r·(m + n)) per matrix, instead of an m·n copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stochgrad.rlhf.es.noise import SeededNoise


def _conv1d_type() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:   # pragma: no cover - transformers is the rlhf extra
        return None
    return Conv1D


def _kind(module: nn.Module, param_name: str) -> str | None:
    """How ``module`` uses its parameter ``param_name`` if the correction is known for it, else None."""
    if param_name != "weight":
        return None
    if type(module) is nn.Linear:
        return "linear"
    if type(module) is nn.Embedding and module.max_norm is None:
        return "embedding"
    conv1d = _conv1d_type()
    if conv1d is not None and type(module) is conv1d:
        return "conv1d"
    return None


def activation_uses(model: nn.Module, params: Sequence[Tensor], noise: SeededNoise,
                    ) -> dict[int, list[tuple[nn.Module, str]]]:
    """The low-rank matrices that can be perturbed in activation space: tensor index → the modules that use it
    and how. A matrix that some module uses in another way (or not as its ``weight``) is left out."""
    index = {id(p): i for i, p in enumerate(params) if noise.rank and p.dim() == 2}
    uses: dict[int, list[tuple[nn.Module, str]]] = {}
    refused: set[int] = set()
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is None or id(p) not in index:
                continue
            i = index[id(p)]
            kind = _kind(module, name)
            if kind is None:
                refused.add(i)
            else:
                uses.setdefault(i, []).append((module, kind))
    return {i: u for i, u in uses.items() if i not in refused}


def _hook(kind: str, a: Tensor, b: Tensor, scale: float):
    def add(module, inputs, output):
        x = inputs[0]
        if kind == "embedding":
            delta = (a[x] @ b.T) * scale
        else:
            h = x.to(a.dtype)
            delta = ((h @ b) @ a.T if kind == "linear" else (h @ a) @ b.T) * scale
        return output + delta.to(output.dtype)
    return add


class ActivationMember:
    """What :class:`~stochgrad.rlhf.policy.Policy` needs of a model (as ``_Reparametrized``): the call runs the
    model on ``values`` (the tensors perturbed as weights) with the low-rank corrections hooked in for its
    duration.

    Attributes:
      values: name → tensor, passed to ``functional_call`` (the 1-D tensors and any unsupported matrix).
      factors: tensor index → (A, B), the low-rank noise applied in activation space.
      calls: forward passes run (each adds every correction once per using module).
    """

    def __init__(self, model: nn.Module, values: dict[str, Tensor], uses: dict[int, list[tuple[nn.Module, str]]],
                 factors: dict[int, tuple[Tensor, Tensor]], scale: float) -> None:
        self.module, self.values, self.uses, self.factors, self.scale = model, values, uses, factors, scale
        self.config = model.config
        self.generation_config = getattr(model, "generation_config", None)
        self.calls = 0

    def __call__(self, **kwargs):
        handles = []
        try:
            for i, (a, b) in self.factors.items():
                for module, kind in self.uses[i]:
                    handles.append(module.register_forward_hook(_hook(kind, a, b, self.scale)))
            self.calls += 1
            return torch.func.functional_call(self.module, self.values, args=(), kwargs=kwargs, strict=False)
        finally:
            for h in handles:
                h.remove()

    def parameters(self):
        return self.module.parameters()

    def eval(self) -> ActivationMember:
        return self


# -- several members in one batch ------------------------------------------------------------------------------

def _role(module: nn.Module, param_name: str) -> str | None:
    """How ``module`` uses a 1-D parameter, if a per-row correction is known for it."""
    if param_name == "bias" and (_kind(module, "weight") in ("linear", "conv1d")):
        return "bias"
    if type(module) is nn.LayerNorm and module.elementwise_affine:
        return {"weight": "ln-weight", "bias": "ln-bias"}.get(param_name)
    return None


def batch_uses(model: nn.Module, params: Sequence[Tensor], noise: SeededNoise,
               ) -> dict[int, list[tuple[nn.Module, str]]] | None:
    """For members evaluated side by side in one batch: tensor index → the modules that use it and how, for
    every tensor in ``params``; None if some tensor is used in a way without a per-row correction (then the
    members are evaluated one at a time)."""
    if not noise.rank:
        return None
    index = {id(p): i for i, p in enumerate(params)}
    uses: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is None or id(p) not in index:
                continue
            kind = _kind(module, name) if p.dim() == 2 else _role(module, name) if p.dim() == 1 else None
            if kind is None:
                return None
            uses.setdefault(index[id(p)], []).append((module, kind))
    return uses if len(uses) == len(params) else None


def _add_correction(y: Tensor, kind: str, module: nn.Module, x: Tensor, groups: int, a: Tensor | None,
                    b: Tensor | None, eps: Tensor | None) -> Tensor:
    """``y`` ``[G, R·T, out]`` (the module's output grouped by member) plus one tensor's correction on input ``x``.

    The batch's B rows are ``groups`` = G consecutive equal groups, group g member g. Factors ``a [G, m, r]``
    (already multiplied by member g's s), ``b [G, n, r]`` for matrices; ``eps [G, d]`` (multiplied by s) for 1-D
    tensors. A matrix correction is a batched product over the members fused with the addition (``baddbmm``),
    not a gather of the factors per row.
    """
    if kind == "embedding":
        ids = x.reshape(groups, -1)                                                   # [G, R·T]
        ar = torch.gather(a, 1, ids.unsqueeze(-1).expand(-1, -1, a.shape[-1]))        # [G, R·T, r]
        return torch.baddbmm(y, ar, b.transpose(1, 2))
    if kind in ("linear", "conv1d"):
        h = x.reshape(groups, -1, x.shape[-1]).to(a.dtype)                           # [G, R·T, n]
        first, second = (b, a) if kind == "linear" else (a, b)
        return torch.baddbmm(y, torch.bmm(h, first), second.transpose(1, 2))
    if kind == "ln-weight":
        nrm = nn.functional.layer_norm(x.to(eps.dtype), module.normalized_shape, None, None, module.eps)
        return torch.addcmul(y, nrm.reshape(groups, -1, nrm.shape[-1]), eps.unsqueeze(1))
    return y + eps.unsqueeze(1)         # "bias", "ln-bias"


def _batch_hook(groups: int, corrections: list[tuple[str, Tensor | None, Tensor | None, Tensor | None]]):
    """A forward hook adding a module's corrections (``(kind, a, b, eps)`` each, as :func:`_add_correction`, in
    the noise's dtype) to its output: one hook per module, whatever the number of its perturbed tensors."""
    dtype = next(t for c in corrections for t in c[1:] if t is not None).dtype

    def add(module, inputs, output):
        x = inputs[0]
        y = output.reshape(groups, -1, output.shape[-1]).to(dtype)
        for kind, a, b, eps in corrections:
            y = _add_correction(y, kind, module, x, groups, a, b, eps)
        return y.reshape(output.shape).to(output.dtype)
    return add


class BatchedMembers:
    """G members side by side: the batch's rows are G consecutive equal groups, group j member j; every trainable
    tensor's perturbation is a correction of its module's output on the member's rows (matrices: low rank, as
    :class:`ActivationMember`; biases and layer-norm parameters: their full-rank noise). The model's weights are
    used as they are and never written; the hooks (one per module) exist only during a call.

    Args:
      model: the model at θ.
      uses: :func:`batch_uses` of the model.
      scales: ``[G]`` member j's ±σ.
      factors: tensor index → (A ``[G, m, r]``, B ``[G, n, r]``), the members' low-rank noise of each matrix.
      eps: tensor index → ``[G, d]``, the members' noise of each 1-D tensor.
      rank: r.
    """

    def __init__(self, model: nn.Module, uses: dict[int, list[tuple[nn.Module, str]]], scales: Tensor,
                 factors: dict[int, tuple[Tensor, Tensor]], eps: dict[int, Tensor], rank: int):
        self.module, self.groups = model, scales.numel()
        low = (scales / rank ** 0.5).view(-1, 1, 1)           # A·Bᵀ/√r for the matrices
        by_module: dict[int, tuple[nn.Module, list]] = {}
        for i, users in uses.items():
            if i in factors:
                a, b = factors[i]
                correction = (a * low.to(a.dtype), b, None)
            else:
                correction = (None, None, eps[i] * scales.view(-1, 1).to(eps[i].dtype))
            for module, kind in users:
                by_module.setdefault(id(module), (module, []))[1].append((kind, *correction))
        self.corrections = list(by_module.values())
        self.config = model.config
        self.generation_config = getattr(model, "generation_config", None)
        self.calls = 0

    def __call__(self, **kwargs):
        handles = []
        try:
            for module, corrections in self.corrections:
                handles.append(module.register_forward_hook(_batch_hook(self.groups, corrections)))
            self.calls += 1
            return self.module(**kwargs)
        finally:
            for h in handles:
                h.remove()

    def parameters(self):
        return self.module.parameters()

    def eval(self) -> BatchedMembers:
        return self
