"""Seeded parameter noise: a population member is an integer seed, its noise is regenerated on demand.

The noise of parameter tensor i for member seed s comes from its own ``torch.Generator`` seeded with
``tensor_seed(s, i)``, so tensors never share a stream (two layers of the same shape get independent noise) and
no member's noise is ever stored: :meth:`SeededNoise.noise` draws it again whenever it is needed.

- full rank: ε_i ~ N(0, I) with the tensor's shape;
- low rank ``rank = r`` (2-D tensors only; 1-D tensors keep full noise): ε_i = A·Bᵀ/√r with A ``[m, r]`` and
  B ``[n, r]`` standard normal. Its entries have mean 0, variance 1 and are uncorrelated (Cov ε = I), so the
  antithetic ES estimate is unbiased for the gradient of a quadratic reward, as with Gaussian noise.

A full-rank ε_i is drawn in chunks of :data:`CHUNK` consecutive entries (of the flattened tensor), one after the
other from the tensor's one generator, so that a member's weights θ + σ·ε and the update Σ_j w_j ε_j can be formed
in their own output buffers with at most one chunk of scratch: no whole-tensor noise buffer (the 50 257 × 768
embedding of GPT-2 small would need 154 MB) is ever allocated next to them. Every consumer draws the same chunks in
the same order, so ε_i is the same wherever it is regenerated; tensors of at most :data:`CHUNK` entries are one
chunk, i.e. a plain ``torch.randn`` of the tensor's shape. (On the CPU, torch's sampler happens to draw the same
numbers in chunks of a multiple of 16 entries as in one call; nothing here relies on it.)

Torch's CPU generator keeps only the low 32 bits of a seed, so tensor seeds are 32-bit: ``(h(s) + i) mod 2³²``
with ``h`` a 64-bit mix (splitmix64) of the member seed. The tensors of one member always get different seeds;
two members overlap only if their mixed seeds are within the number of tensors of each other (probability about
2·n_tensors / 2³² per pair of members).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stochgrad.errors import InvalidArgumentError

_MASK64 = (1 << 64) - 1

#: Entries of full-rank noise drawn per call (4 MB of fp32): the scratch memory of :meth:`SeededNoise.add_noise`.
CHUNK = 1 << 20


def splitmix64(x: int) -> int:
    """The splitmix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mix of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def tensor_seed(member_seed: int, tensor_index: int) -> int:
    """The 32-bit seed of tensor ``tensor_index``'s noise for population member ``member_seed``."""
    return (splitmix64(int(member_seed)) + int(tensor_index)) & 0xFFFFFFFF


class SeededNoise:
    """Noise for a fixed list of parameter tensors, regenerated from (member seed, tensor index).

    Args:
      shapes: the shape of each parameter tensor, in a fixed order (the index is the position here).
      rank: 0 for full-rank Gaussian noise; r ≥ 1 for A·Bᵀ/√r on every 2-D tensor.
      device: where the noise is drawn (the parameters' device).
      names: the tensors' names, for error messages.

    Raises:
      InvalidArgumentError: naming ``rank`` when it is negative or above min(m, n) of some weight matrix.

    Example::

        noise = SeededNoise([(4, 3), (3,)], rank=2)
        eps = noise.noise(seed=7, index=0)       # [4, 3], the same every time for (7, 0)
    """

    def __init__(self, shapes: Sequence[Sequence[int]], rank: int = 0, device: torch.device | str = "cpu",
                 names: Sequence[str] | None = None) -> None:
        self.shapes = [torch.Size(s) for s in shapes]
        self.device = torch.device(device)
        self.names = list(names) if names is not None else [f"tensor {i}" for i in range(len(self.shapes))]
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
            raise InvalidArgumentError(f"rank: need an integer >= 0 (0 = full-rank noise); got {rank!r}")
        for name, shape in zip(self.names, self.shapes):
            if rank and len(shape) == 2 and rank > min(shape):
                raise InvalidArgumentError(
                    f"rank: {rank} exceeds min(m, n) = {min(shape)} of the weight matrix {name!r} "
                    f"{list(shape)}; need 1 <= rank <= {min(shape)}")
        self.rank = rank

    def __len__(self) -> int:
        return len(self.shapes)

    def generator(self, seed: int, index: int) -> torch.Generator:
        """The generator of tensor ``index``'s noise for member ``seed`` (fresh, on the noise's device)."""
        return torch.Generator(device=self.device).manual_seed(tensor_seed(seed, index))

    def factors(self, seed: int, index: int) -> tuple[Tensor, Tensor] | None:
        """The low-rank factors (A ``[m, r]``, B ``[n, r]``) of tensor ``index``, or None if its noise is full."""
        shape = self.shapes[index]
        if not self.rank or len(shape) != 2:
            return None
        gen = self.generator(seed, index)
        a = torch.randn(shape[0], self.rank, generator=gen, device=self.device)
        b = torch.randn(shape[1], self.rank, generator=gen, device=self.device)
        return a, b

    def noise(self, seed: int, index: int) -> Tensor:
        """ε of tensor ``index`` for member ``seed``: fp32, the tensor's shape, on the noise's device; full-rank
        noise is drawn chunk by chunk into the returned tensor, without scratch memory."""
        ab = self.factors(seed, index)
        if ab is not None:
            a, b = ab
            return (a @ b.T).div_(self.rank ** 0.5)
        gen = self.generator(seed, index)
        out = torch.empty(self.shapes[index], device=self.device)
        flat = out.view(-1)
        for start in range(0, flat.numel(), CHUNK):
            flat[start:start + CHUNK].normal_(generator=gen)
        return out

    def perturb(self, seed: int, index: int, base: Tensor, scale: float) -> Tensor:
        """A new fp32 tensor ``base + scale·ε`` of tensor ``index`` (``base`` untouched), formed in its own buffer:
        no noise tensor is allocated beside it (low rank: the r-column factors only).

        Bitwise ``base.float() + scale * self.noise(seed, index)``.
        """
        return self.noise(seed, index).mul_(scale).add_(base.detach().to(device=self.device, dtype=torch.float32))

    def add_noise(self, seed: int, index: int, out: Tensor, alpha: float) -> Tensor:
        """``out += alpha·ε`` of tensor ``index`` in place (contiguous fp32 of the tensor's shape), with one chunk
        of scratch for full-rank noise; returns ``out``. Bitwise ``out.add_(self.noise(seed, index), alpha=alpha)``."""
        ab = self.factors(seed, index)
        if ab is not None:
            return out.add_(self.noise(seed, index), alpha=alpha)
        gen = self.generator(seed, index)
        flat = out.view(-1)
        scratch = torch.empty(min(CHUNK, flat.numel()), device=self.device)
        for start in range(0, flat.numel(), CHUNK):
            part = flat[start:start + CHUNK]
            part.add_(scratch[:part.numel()].normal_(generator=gen), alpha=alpha)
        return out
