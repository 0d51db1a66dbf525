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
