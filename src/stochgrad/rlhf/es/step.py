"""One ES population on a language-model policy: evaluate every member without touching the weights, then
write the estimate into ``.grad``.

Each antithetic pair j is one noise seed and one sampling seed: both members θ ± σ·ε_j complete the same prompts
with a generator started from the same sampling seed (common random numbers), so the difference of their
fitnesses reflects ε_j rather than the luck of sampling. A member's fitness is the mean over its completions of
r − β·Σ_t k1 (k1 = log π_member − log π_ref at the sampled tokens; β = 0 needs no reference). A member runs
through :meth:`~stochgrad.rlhf.policy.Policy.with_parameters`: the model's own tensors are never written.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from stochgrad.errors import InvalidArgumentError
from stochgrad.rlhf.es.lowrank import ActivationMember, BatchedMembers, activation_uses, batch_uses
from stochgrad.rlhf.es.noise import SeededNoise
from stochgrad.rlhf.es.update import EsConfig, pair_weights, perturbed, shape_fitness, write_gradient
from stochgrad.rlhf.policy import Policy, Rollout
from stochgrad.rlhf.rewards import RewardFunction, evaluate_rewards

_SEED_HIGH = 2 ** 62


def trainable(policy: Policy) -> tuple[list[str], list[Tensor]]:
    """Names and tensors of the parameters that require gradients, in ``named_parameters`` order."""
    named = [(n, p) for n, p in policy.model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def make_noise(policy: Policy, rank: int) -> SeededNoise:
    """The :class:`SeededNoise` of ``policy``'s trainable parameters, on their device (checks ``rank``)."""
    names, params = trainable(policy)
    return SeededNoise([p.shape for p in params], rank=rank, device=params[0].device, names=names)


@dataclass
class EsStep:
    """What one population computed (members ordered pair 0 +, pair 0 −, pair 1 +, …).

    Attributes:
      fitness: ``[N]`` each member's mean of r − β·KL.
      shaped: ``[N]`` the shaped fitness.
      rewards: ``[N, m]`` the reward of each member's m completions.
      kl: ``[N, m]`` Σ_t k1 per completion to the reference (0 if β = 0).
      kl_k3: ``[N, m]`` Σ_t k3 per completion (0 if β = 0).
      lengths: ``[N, m]`` completion lengths in tokens.
      truncated: ``[N, m]`` True where no end token was sampled.
      seeds: the M noise seeds.
      first: the rollout of member 0 (for logging samples).
    """

    fitness: Tensor
    shaped: Tensor
    rewards: Tensor
    kl: Tensor
    kl_k3: Tensor
    lengths: Tensor
    truncated: Tensor
    seeds: list[int]
    first: Rollout


@dataclass
class MemberResult:
    """What one member's evaluation returns (all ``[m]``, on the CPU; small enough to cross a wire).

    Attributes:
      rewards: the reward of each of the m completions (float64).
      kl: Σ_t k1 per completion to the reference (0 if β = 0).
      kl_k3: Σ_t k3 per completion (0 if β = 0).
      lengths: completion lengths in tokens.
      truncated: True where no end token was sampled.
      rollout: the member's rollout when it was asked for (member 0, for logging samples), else None.
    """

    rewards: Tensor
    kl: Tensor
    kl_k3: Tensor
    lengths: Tensor
    truncated: Tensor
    rollout: Rollout | None = None


#: A member: (pair seed of its noise, sampling seed of its pair, sign +1.0 or −1.0).
Member = tuple[int, int, float]


def member_policy(policy: Policy, names: list[str], params: list[Tensor], noise: SeededNoise, seed: int,
                  scale: float, lowrank_apply: str = "activations") -> Policy:
    """The policy at θ + scale·ε(seed), as a view that never writes ``policy``'s weights.

    With low-rank noise and ``lowrank_apply="activations"``, the matrices of ``nn.Linear``, GPT-2 ``Conv1D`` and
    ``nn.Embedding`` layers are perturbed in activation space (:mod:`stochgrad.rlhf.es.lowrank`); every other
    tensor, and every tensor with ``"weights"``, as the perturbed tensor θ_i + scale·ε_i.
    """
    uses = activation_uses(policy.model, params, noise) if noise.rank and lowrank_apply == "activations" else {}
    if not uses:
        return policy.with_parameters(dict(zip(names, perturbed(params, noise, seed, scale))))
    values, factors = {}, {}
    for i, (name, p) in enumerate(zip(names, params)):
        if i in uses:
            factors[i] = noise.factors(seed, i)
        else:
            values[name] = noise.perturb(seed, i, p, scale).to(p.dtype)
    view = copy.copy(policy)
    view.model = ActivationMember(policy.model, values, uses, factors, scale / noise.rank ** 0.5)
    return view


def evaluate_member(policy: Policy, reference: Policy | None, reward_fn: RewardFunction, prompts: list[str],
                    config: EsConfig, noise: SeededNoise, member: Member, keep_rollout: bool = False,
                    ) -> MemberResult:
    """Sample one completion of each prompt from member θ + sign·σ·ε(seed) and score it (weights untouched).

    The sampler starts from the pair's sampling seed, so both members of a pair see the same random numbers.
    """
    seed, sample_seed, sign = member
    names, params = trainable(policy)
    view = member_policy(policy, names, params, noise, seed, sign * config.sigma, config.lowrank_apply)
    return score_member(view, reference, reward_fn, prompts, config.beta, sample_seed, keep_rollout)


def evaluate_members(policy: Policy, reference: Policy | None, reward_fn: RewardFunction, prompts: list[str],
                     config: EsConfig, noise: SeededNoise, members: list[Member], keep_first: bool = False,
                     ) -> list[MemberResult]:
    """:func:`evaluate_member` of every member, in order; with ``config.member_batch`` = G > 1 and low-rank
    noise in activation space, G members at a time side by side in one batch (when every trainable tensor's
    use has a per-row correction, :func:`~stochgrad.rlhf.es.lowrank.batch_uses`; else one at a time). Each
    member's rows draw their tokens from the member's own sampling generator, so the results are those of
    evaluating the members one at a time, to float rounding."""
    g = config.member_batch
    uses = None
    if g > 1 and config.lowrank_apply == "activations":
        uses = batch_uses(policy.model, trainable(policy)[1], noise)
    if uses is None:
        return [evaluate_member(policy, reference, reward_fn, prompts, config, noise, m, keep_rollout=keep_first
                                and j == 0) for j, m in enumerate(members)]
    out: list[MemberResult] = []
    for start in range(0, len(members), g):
        out += _evaluate_batch(policy, reference, reward_fn, prompts, config, noise, members[start:start + g],
                               uses, keep_first and start == 0)
    return out


def _evaluate_batch(policy: Policy, reference: Policy | None, reward_fn: RewardFunction, prompts: list[str],
                    config: EsConfig, noise: SeededNoise, members: list[Member], uses: dict,
                    keep_first: bool) -> list[MemberResult]:
    m, g = len(prompts), len(members)
    device = noise.device
    factors, eps = {}, {}
    for i in uses:
        if len(noise.shapes[i]) == 2:
            ab = [noise.factors(seed, i) for seed, _, _ in members]
            factors[i] = (torch.stack([a for a, _ in ab]), torch.stack([b for _, b in ab]))
        else:
            eps[i] = torch.stack([noise.noise(seed, i) for seed, _, _ in members])
    scales = torch.tensor([sign * config.sigma for _, _, sign in members], dtype=torch.float32, device=device)
    view = copy.copy(policy)
    view.model = BatchedMembers(policy.model, uses, scales, factors, eps, noise.rank)
    gens = [torch.Generator().manual_seed(sample_seed) for _, sample_seed, _ in members]
    rollout = view.sample(list(prompts) * g, 1, gens)
    r = evaluate_rewards(reward_fn, rollout.prompts, rollout.completions).double()
    kl = k3 = torch.zeros_like(r)
    if config.beta > 0:
        with torch.no_grad():
            ratio = (view.token_log_probs(rollout) - reference.token_log_probs(rollout)).double()
        mask = rollout.completion_mask.to(ratio.dtype)
        kl = (ratio * mask).sum(1).cpu()
        k3 = ((torch.expm1(-ratio) + ratio) * mask).sum(1).cpu()
    lengths, truncated = rollout.lengths.cpu(), rollout.truncated.cpu()
    out = []
    for j in range(g):
        sl = slice(j * m, (j + 1) * m)
        first = None
        if keep_first and j == 0:
            first = Rollout(rollout.prompts[sl], rollout.completions[sl], rollout.prompt_ids[sl],
                            rollout.prompt_mask[sl], rollout.completion_ids[sl], rollout.completion_mask[sl],
                            rollout.truncated[sl], 1)
        out.append(MemberResult(r[sl], kl[sl], k3[sl], lengths[sl], truncated[sl], first))
    return out


def score_member(view: Policy, reference: Policy | None, reward_fn: RewardFunction, prompts: list[str],
                 beta: float, sample_seed: int, keep_rollout: bool = False) -> MemberResult:
    """One completion of each prompt from the member ``view`` (sampler started from ``sample_seed``), its rewards
    and, for β > 0, its KL to ``reference`` per completion."""
    rollout = view.sample(prompts, 1, torch.Generator().manual_seed(sample_seed))
    r = evaluate_rewards(reward_fn, rollout.prompts, rollout.completions).double()
    kl = k3 = torch.zeros_like(r)
    if beta > 0:
        with torch.no_grad():
            ratio = (view.token_log_probs(rollout) - reference.token_log_probs(rollout)).double()
        m = rollout.completion_mask.to(ratio.dtype)
        kl = (ratio * m).sum(1).cpu()
        k3 = ((torch.expm1(-ratio) + ratio) * m).sum(1).cpu()
    return MemberResult(r, kl, k3, rollout.lengths.cpu(), rollout.truncated.cpu(),
                        rollout if keep_rollout else None)


def population(config: EsConfig, generator: torch.Generator) -> tuple[list[int], list[Member]]:
    """The M pair seeds and the N members (pair 0 +, pair 0 −, pair 1 +, …) of one population, drawn from
    ``generator``."""
    seeds = torch.randint(_SEED_HIGH, (config.pairs,), generator=generator).tolist()
    sample_seeds = torch.randint(_SEED_HIGH, (config.pairs,), generator=generator).tolist()
    return seeds, [(s, t, sign) for s, t in zip(seeds, sample_seeds) for sign in (1.0, -1.0)]


#: Evaluates members somewhere: ``(prompts, members) -> [MemberResult]`` in the members' order, the first with
#: its rollout. :func:`es_step` evaluates them in this process when none is given.
MemberEvaluator = Callable[[list[str], list[Member]], list[MemberResult]]


def es_step(policy: Policy, reference: Policy | None, reward_fn: RewardFunction, prompts: list[str],
            config: EsConfig, noise: SeededNoise, generator: torch.Generator,
            evaluate: MemberEvaluator | None = None) -> EsStep:
    """Evaluate one population on ``prompts`` (one completion of each per member) and set ``.grad``.

    Args:
      policy: the policy at θ; its weights are read, never written (only ``.grad`` is set).
      reference: π_ref, needed when ``config.beta > 0`` and the members are evaluated here.
      reward_fn: the black-box reward.
      prompts: the m prompts every member completes.
      config: the ES options.
      noise: :func:`make_noise` of ``policy``.
      generator: a CPU generator; the pair seeds come from it (its state is the whole ES state).
      evaluate: where the members run (:class:`stochgrad.rlhf.es.remote.RayPopulation` evaluates them on Ray
        workers); default: here, one after the other. The numbers are the same either way.
    Returns:
      :class:`EsStep`.
    """
    cfg = config.validate()
    if cfg.beta > 0 and reference is None and evaluate is None:
        raise InvalidArgumentError(f"reference: β = {cfg.beta} > 0 needs the reference policy")
    _, params = trainable(policy)
    seeds, members = population(cfg, generator)
    if evaluate is None:
        results = evaluate_members(policy, reference, reward_fn, prompts, cfg, noise, members, keep_first=True)
    else:
        results = evaluate(prompts, members)
    rewards_t, kl_t = torch.stack([r.rewards for r in results]), torch.stack([r.kl for r in results])
    fitness = rewards_t.mean(1) - cfg.beta * kl_t.mean(1)
    shaped = shape_fitness(fitness, cfg.shaping, cfg.std_eps)
    write_gradient(params, noise, seeds, pair_weights(shaped), cfg.sigma, cfg.population)
    return EsStep(fitness, shaped, rewards_t, kl_t, torch.stack([r.kl_k3 for r in results]),
                  torch.stack([r.lengths for r in results]), torch.stack([r.truncated for r in results]),
                  seeds, results[0].rollout)
