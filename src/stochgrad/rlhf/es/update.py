"""The ES estimate in parameter space: antithetic members, shaped fitness, the gradient tensor by tensor.

For a population of N = 2·M members (M antithetic pairs θ ± σ·ε_j, each pair one seed) with fitness F and
shaped fitness u (per population), the estimate of ∇_θ E_ε[F(θ + σε)] is

    g = 1/(N σ) Σ_i u_i ε_i = 1/(N σ) Σ_j (u_j⁺ − u_j⁻) ε_j

(Salimans et al. 2017). Without shaping (u = F) it is unbiased for the gradient of the Gaussian-smoothed
fitness: E[(F(θ+σε) − F(θ−σε)) ε]/(2σ) = E[F(θ+σε) ε]/σ = ∇ E F(θ+σε) (Stein's lemma). :func:`write_gradient`
puts −g into each parameter's ``.grad`` (the gradient of the *loss* −F), so a torch optimiser's step increases
F. It regenerates ε_j for one tensor at a time, accumulating into the tensor's own ``.grad`` buffer: memory is the
``.grad`` buffers plus one chunk of noise (:data:`~stochgrad.rlhf.es.noise.CHUNK` entries; low rank: the M pairs'
factors of one matrix, O(M·r·(m + n))), whatever the population.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.rlhf.es.noise import SeededNoise

SHAPINGS: tuple[str, ...] = ("centred-ranks", "z-score", "none")

#: How low-rank members are formed: as a rank-r term added to the layers' outputs (x·B·Aᵀ; the perturbed matrix is
#: never formed, where the layer allows) or as perturbed weight matrices θ + σ·A·Bᵀ/√r.
LOWRANK_APPLY: tuple[str, ...] = ("activations", "weights")


@dataclass(frozen=True)
class EsConfig:
    """The choices of the ES estimator.

    Attributes:
      population: N members per estimate, even (antithetic pairs), at least 2.
      sigma: σ > 0, the perturbation scale in weight units.
      rank: 0 for full-rank noise, r ≥ 1 for A·Bᵀ/√r per weight matrix.
      shaping: one of :data:`SHAPINGS`, applied to the N fitnesses of a population.
      beta: KL coefficient β ≥ 0; each member's fitness is its mean reward minus β·(mean Σ_t k1 to π_ref).
      std_eps: added to the standard deviation of the z-score.
      lowrank_apply: one of :data:`LOWRANK_APPLY` (low rank only): the same members, computed as a correction of
        the layers' outputs (no perturbed matrix in memory) or as perturbed matrices.
      member_batch: members sampled side by side in one batch (low rank in activation space only; 1: one at a
        time). The same members and random numbers, so the same results to float rounding.
    """

    population: int = 8
    sigma: float = 1e-3
    rank: int = 0
    shaping: str = "centred-ranks"
    beta: float = 0.0
    std_eps: float = 1e-8
    lowrank_apply: str = "activations"
    member_batch: int = 1

    def validate(self) -> EsConfig:
        """Check every option; raise an error naming the option otherwise. Returns self."""
        n = self.population
        if not isinstance(n, int) or isinstance(n, bool) or n < 2 or n % 2:
            raise BudgetError(f"population: need an even number >= 2 of members (antithetic pairs θ ± σε); "
                              f"got {n!r}")
        if not (self.sigma > 0) or self.sigma == float("inf"):
            raise InvalidArgumentError(f"sigma: need a finite perturbation scale > 0; got {self.sigma!r}")
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 0:
            raise InvalidArgumentError(f"rank: need an integer >= 0 (0 = full-rank noise); got {self.rank!r}")
        if self.shaping not in SHAPINGS:
            raise InvalidArgumentError(f"es_shaping: got {self.shaping!r}; choose one of {list(SHAPINGS)}")
        if self.lowrank_apply not in LOWRANK_APPLY:
            raise InvalidArgumentError(f"lowrank_apply: got {self.lowrank_apply!r}; choose one of "
                                       f"{list(LOWRANK_APPLY)}")
        g = self.member_batch
        if not isinstance(g, int) or isinstance(g, bool) or g < 1:
            raise InvalidArgumentError(f"member_batch: need an integer >= 1 (members per batch); got {g!r}")
        if g > 1 and (not self.rank or self.lowrank_apply != "activations"):
            raise InvalidArgumentError(f"member_batch: members share a batch only as low-rank corrections in "
                                       f"activation space (--estimator es-lowrank, --lowrank-apply activations); "
                                       f"got member_batch={g} with rank={self.rank}, lowrank_apply="
                                       f"{self.lowrank_apply!r}")
        if not (self.beta >= 0):
            raise InvalidArgumentError(f"beta: need a KL coefficient >= 0; got {self.beta!r}")
        return self

    @property
    def pairs(self) -> int:
        return self.population // 2

    def describe(self) -> str:
        """A one-line summary, e.g. ``population=8 σ=0.001 rank=full centred-ranks β=0``."""
        rank = f"{self.rank} ({self.lowrank_apply})" if self.rank else "full"
        if self.member_batch > 1:
            rank += f" batch={self.member_batch}"
        return f"population={self.population} σ={self.sigma:g} rank={rank} {self.shaping} β={self.beta:g}"


#: The names ``--estimator`` gives the parameter-space estimators.
ES_ESTIMATORS: tuple[str, ...] = ("es", "es-lowrank")


def es_config(name: str, population: int = 8, sigma: float = 1e-3, rank: int | None = None,
              shaping: str = "centred-ranks", beta: float | None = None,
              lowrank_apply: str | None = None, member_batch: int | None = None) -> EsConfig:
    """The :class:`EsConfig` of ``--estimator es`` (full-rank noise; ``rank`` and ``lowrank_apply`` must be left
    out) or ``es-lowrank`` (``rank`` defaults to 1, ``lowrank_apply`` to ``"activations"``), validated;
    ``beta=None`` means 0.

    Raises:
      InvalidArgumentError / BudgetError: naming the option.
    """
    if name not in ES_ESTIMATORS:
        raise InvalidArgumentError(f"estimator: {name!r} is not an ES estimator; choose one of {list(ES_ESTIMATORS)}")
    if name == "es" and rank is not None:
        raise InvalidArgumentError(f"rank: --estimator es uses full-rank noise; got rank={rank!r} "
                                   "(use --estimator es-lowrank --rank R)")
    if name == "es" and member_batch is not None:
        raise InvalidArgumentError(f"member_batch: --estimator es uses full-rank noise, whose members cannot share "
                                   f"a batch; got member_batch={member_batch!r} (use --estimator es-lowrank)")
    if name == "es" and lowrank_apply is not None:
        raise InvalidArgumentError(f"lowrank_apply: --estimator es uses full-rank noise; got "
                                   f"lowrank_apply={lowrank_apply!r} (use --estimator es-lowrank)")
    rank = 0 if name == "es" else (1 if rank is None else rank)
    if name == "es-lowrank" and not (isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1):
        raise InvalidArgumentError(f"rank: es-lowrank needs a rank >= 1; got {rank!r}")
    return EsConfig(population=population, sigma=sigma, rank=rank, shaping=shaping,
                    beta=0.0 if beta is None else beta,
                    lowrank_apply="activations" if lowrank_apply is None else lowrank_apply,
                    member_batch=1 if member_batch is None else member_batch).validate()


def shape_fitness(fitness: Tensor, how: str, std_eps: float = 1e-8) -> Tensor:
    """Shaped fitness ``[N]`` of one population's fitness ``[N]``.

    ``"centred-ranks"``: ranks scaled to [−½, ½] (ties share their mean rank); ``"z-score"``:
    (F − mean)/(std + ε) with Bessel's correction; ``"none"``: F itself.
    """
    fitness = fitness.double()
    if how == "none":
        return fitness
    if how == "z-score":
        return (fitness - fitness.mean()) / (fitness.std(correction=1) + std_eps)
    if how == "centred-ranks":
        n = fitness.numel()
        ranks = torch.empty_like(fitness)
        ranks[fitness.argsort()] = torch.arange(n, dtype=fitness.dtype)
        for value in fitness.unique():
            tied = fitness == value
            ranks[tied] = ranks[tied].mean()
        return ranks / (n - 1) - 0.5
    raise InvalidArgumentError(f"es_shaping: got {how!r}; choose one of {list(SHAPINGS)}")


def perturbed(params: Sequence[Tensor], noise: SeededNoise, seed: int, scale: float) -> list[Tensor]:
    """New tensors θ_i + scale·ε_i (computed in fp32, stored in each parameter's dtype); ``params`` untouched.

    ``scale`` is +σ or −σ for the two members of a pair.
    """
    return [noise.perturb(seed, i, p, scale).to(p.dtype) for i, p in enumerate(params)]


def pair_weights(shaped: Tensor) -> Tensor:
    """``u_j⁺ − u_j⁻`` ``[M]`` from shaped fitness ``[2M]`` ordered (pair 0 +, pair 0 −, pair 1 +, …)."""
    return shaped[0::2] - shaped[1::2]


def write_gradient(params: Sequence[Tensor], noise: SeededNoise, seeds: Sequence[int], weights: Tensor,
                   sigma: float, population: int) -> None:
    """Set ``p.grad = −1/(N σ) Σ_j w_j ε_j`` for every parameter, one tensor at a time: full-rank noise one pair
    at a time, low-rank noise as one product of the stacked factors (A_1 w_1 | … | A_M w_M)·(B_1 | … | B_M)ᵀ/√r.

    Args:
      params: the parameters, in the noise's order.
      noise: the noise the members were perturbed with.
      seeds: the M pair seeds.
      weights: ``[M]`` the pairs' u⁺ − u⁻ (:func:`pair_weights`).
      sigma: σ.
      population: N = 2M.
    """
    w = [float(x) for x in weights]
    for i, p in enumerate(params):
        pairs = [(seed, wj) for seed, wj in zip(seeds, w) if wj != 0.0]
        if pairs and noise.rank and len(noise.shapes[i]) == 2:
            # low rank: Σ_j w_j A_j B_jᵀ/√r as one product [m, M·r] @ [M·r, n]
            ab = [noise.factors(seed, i) for seed, _ in pairs]
            a = torch.cat([f[0] * wj for f, (_, wj) in zip(ab, pairs)], 1)
            b = torch.cat([f[1] for f in ab], 1)
            acc = (a @ b.T).div_(noise.rank ** 0.5)
        elif pairs:
            seed, wj = pairs[0]
            acc = noise.noise(seed, i).mul_(wj)
            for seed, wj in pairs[1:]:
                noise.add_noise(seed, i, acc, wj)
        else:
            acc = torch.zeros(p.shape, dtype=torch.float32, device=noise.device)
        p.grad = (acc.mul_(-1.0 / (population * sigma))).to(device=p.device, dtype=p.dtype)
