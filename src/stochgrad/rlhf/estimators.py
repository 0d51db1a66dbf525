"""REINFORCE-family gradient estimators for language models, every design choice a separate option.

A batch holds B = P·k completions: k for each of P prompts, a prompt's k completions in consecutive rows. For
completion i with tokens y_i1 … y_iT_i, reward r_i and per-token KL estimate κ_it (see :mod:`.kl`), the
estimator builds a surrogate loss whose gradient is the estimate of −∇_θ J:

1. **Rewards per token.** r_i sits on the last token; with the KL penalty in the reward, every token t also
   carries −β κ_it (κ computed without gradient).
2. **Returns.** ``level="sequence"``: every token of i gets the whole return G_i = r_i − β Σ_t κ_it.
   ``level="token"``: token t gets the reward-to-go G_it = r_i − β Σ_{s ≥ t} κ_is (γ = 1).
3. **Baseline** b_i, subtracted from every token's return, computed from sequence returns G_j:
   ``"none"`` (0); ``"moving-average"`` (an exponential moving average of past batches' mean return, decay
   ``ma_decay``, 0 before the first batch; updated after use, so it never depends on the current samples);
   ``"loo"`` (mean of the other k − 1 returns of the same prompt: unbiased, RLOO);
   ``"group-mean"`` (mean of all k returns of the prompt, its own included: the advantage is exactly
   (k − 1)/k times the leave-one-out one, so the expected gradient shrinks by (k − 1)/k).
4. **Scaling.** ``"none"``; ``"group-std"`` (divide by the standard deviation of the prompt's k returns plus
   ``std_eps``, as GRPO); ``"batch-std"`` (whiten over the batch: subtract the mean and divide by the standard
   deviation (plus ``std_eps``) of all advantages — per token at token level, per completion at sequence
   level — as REINFORCE++ and TRL's ``normalize_advantages``; the subtraction acts as a batch-mean baseline).
   Standard deviations use Bessel's correction. Both make the estimate biased (the scale depends on the samples).
5. **Aggregation** of the per-token terms A_it log π_θ(y_it): ``"sum"`` (Σ_t, then mean over the B
   completions: the score-function estimator of ∇ E[G]); ``"seq-mean"`` (mean over each completion's tokens,
   then over completions, as GRPO); ``"token-mean"`` (mean over all tokens of the batch, as DAPO and OpenRLHF).
6. **KL in the loss** (``kl_in="loss"``): + β · aggregate(κ_it), κ differentiated through log π_θ (GRPO).

The surrogate is ``loss = −aggregate(A ⊙ log π_θ) [+ β aggregate(κ)]`` with A held constant: one update per
batch, so the PPO-style ratio π_θ/π_old equals 1 and has the same gradient as log π_θ.

References: Williams (1992) REINFORCE; Kool, van Hoof, Welling (2019) and Ahmadian et al. (2024) RLOO;
Shao et al. (2024) GRPO (DeepSeekMath); Hu (2025) REINFORCE++; Schulman (2020) for k1/k2/k3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import Tensor

from stochgrad.errors import BudgetError, InvalidArgumentError
from stochgrad.estimators.baselines import compute_baseline
from stochgrad.rlhf.kl import KL_ESTIMATORS, kl_per_token

BASELINES: tuple[str, ...] = ("none", "moving-average", "loo", "group-mean")
SCALINGS: tuple[str, ...] = ("none", "group-std", "batch-std")
KL_PLACEMENTS: tuple[str, ...] = ("reward", "loss")
LEVELS: tuple[str, ...] = ("sequence", "token")
AGGREGATIONS: tuple[str, ...] = ("sum", "seq-mean", "token-mean")


@dataclass(frozen=True)
class EstimatorConfig:
    """Every choice of a REINFORCE-family estimator (see the module docstring for what each does).

    Attributes:
      k: completions per prompt.
      baseline: one of :data:`BASELINES`.
      scaling: one of :data:`SCALINGS`.
      beta: KL coefficient β ≥ 0 (0: no reference model is needed).
      kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
      kl_in: ``"reward"`` or ``"loss"``.
      level: ``"sequence"`` or ``"token"`` (reward-to-go).
      aggregation: one of :data:`AGGREGATIONS`.
      ma_decay: decay of the moving-average baseline, in [0, 1).
      std_eps: added to standard deviations before dividing.
    """

    k: int = 4
    baseline: str = "loo"
    scaling: str = "none"
    beta: float = 0.05
    kl_estimator: str = "k1"
    kl_in: str = "reward"
    level: str = "sequence"
    aggregation: str = "sum"
    ma_decay: float = 0.9
    std_eps: float = 1e-4

    def validate(self) -> EstimatorConfig:
        """Check every option; raise an error naming the option otherwise. Returns self."""
        for name, allowed in (("baseline", BASELINES), ("scaling", SCALINGS), ("kl_estimator", KL_ESTIMATORS),
                              ("kl_in", KL_PLACEMENTS), ("level", LEVELS), ("aggregation", AGGREGATIONS)):
            if getattr(self, name) not in allowed:
                raise InvalidArgumentError(f"{name}: got {getattr(self, name)!r}; choose one of {list(allowed)}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise BudgetError(f"k: need at least 1 completion per prompt; got {self.k!r}")
        needs_group = {"loo": "the leave-one-out baseline", "group-mean": "the group-mean baseline"}
        if self.baseline in needs_group and self.k < 2:
            raise BudgetError(f"k: {needs_group[self.baseline]} needs at least 2 completions per prompt (it "
                              f"compares each completion with the others of its prompt); got k={self.k}")
        if self.scaling == "group-std" and self.k < 2:
            raise BudgetError(f"k: group-std scaling needs at least 2 completions per prompt to estimate a "
                              f"standard deviation; got k={self.k}")
        if not (self.beta >= 0):
            raise InvalidArgumentError(f"beta: need a KL coefficient >= 0; got {self.beta!r}")
        if not (0 <= self.ma_decay < 1):
            raise InvalidArgumentError(f"ma_decay: need 0 <= decay < 1; got {self.ma_decay!r}")
        if not (self.std_eps >= 0):
            raise InvalidArgumentError(f"std_eps: need >= 0; got {self.std_eps!r}")
        return self

    def describe(self) -> str:
        """A one-line summary, e.g. ``k=4 baseline=loo scaling=none KL=k1 in reward β=0.05 sequence sum``."""
        return (f"k={self.k} baseline={self.baseline} scaling={self.scaling} KL={self.kl_estimator} in "
                f"{self.kl_in} β={self.beta:g} {self.level} {self.aggregation}")


#: What each name means. ``rloo`` with ``kl_in="reward"`` and k1 is also exactly what TRL's RLOOTrainer
#: computes with one update per batch (``num_iterations=1``).
PRESETS: dict[str, EstimatorConfig] = {
    # Williams (1992): the return times the score of the whole sequence, minus a baseline that does not
    # depend on the sample (his "reinforcement baseline"); here the moving average of past returns, the
    # "REINFORCE with baseline" that Ahmadian et al. (2024) compare against. One completion per prompt.
    "reinforce": EstimatorConfig(k=1, baseline="moving-average", scaling="none", beta=0.05, kl_estimator="k1",
                                 kl_in="reward", level="sequence", aggregation="sum"),
    # Ahmadian et al. (2024), after Kool et al. (2019): k completions per prompt, each completion's baseline the
    # mean return of the other k − 1; sequence-level KL penalty (k1, summed over tokens) in the reward.
    "rloo": EstimatorConfig(k=4, baseline="loo", scaling="none", beta=0.05, kl_estimator="k1", kl_in="reward",
                            level="sequence", aggregation="sum"),
    # Shao et al. (2024), outcome supervision, one update per batch: advantage (r_i − mean_group r) / std_group r
    # on every token, per-sequence token mean then mean over the group, KL as k3 in the loss with β = 0.04.
    "grpo": EstimatorConfig(k=4, baseline="group-mean", scaling="group-std", beta=0.04, kl_estimator="k3",
                            kl_in="loss", level="sequence", aggregation="seq-mean"),
    # Hu (2025): one completion per prompt, k1 KL penalty per token in the reward, token-level reward-to-go
    # (γ = 1), advantages whitened over all tokens of the batch; token mean over the batch (OpenRLHF's loss).
    "reinforce++": EstimatorConfig(k=1, baseline="none", scaling="batch-std", beta=0.05, kl_estimator="k1",
                                   kl_in="reward", level="token", aggregation="token-mean"),
}


def estimator_config(name: str, **overrides) -> EstimatorConfig:
    """The preset ``name`` with any options replaced (``None`` values are ignored), validated.

    Example::

        estimator_config("rloo", k=2, beta=0.0)
    """
    if name not in PRESETS:
        raise InvalidArgumentError(f"estimator: unknown name {name!r}; choose one of {list(PRESETS)}")
    known = {f.name for f in fields(EstimatorConfig)}
    for key in overrides:
        if key not in known:
            raise InvalidArgumentError(f"{key}: not an option of the estimators; options are {sorted(known)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}).validate()


@dataclass
class LossOutput:
    """What one estimate computed.

    Attributes:
      loss: the scalar surrogate; ``loss.backward()`` puts the estimate of −∇_θ J into the parameters.
      advantages: ``[B, T]`` the (detached) weight of each token's log π_θ, 0 on padding.
      returns: ``[B]`` each completion's return G_i (reward minus the in-reward KL penalty, if any).
      kl: ``[B]`` Σ_t k1 per completion: an unbiased estimate of KL(π_θ ‖ π_ref) for its prompt (0 if β = 0).
      kl_k3: ``[B]`` Σ_t k3 per completion: also unbiased, never negative, usually less noisy.
    """

    loss: Tensor
    advantages: Tensor
    returns: Tensor
    kl: Tensor
    kl_k3: Tensor


def _aggregate(x: Tensor, mask: Tensor, how: str) -> Tensor:
    """``[B, T]`` masked per-token terms to a scalar (see ``aggregation``)."""
    x = x * mask
    if how == "sum":
        return x.sum(1).mean()
    if how == "seq-mean":
        return (x.sum(1) / mask.sum(1).clamp_min(1)).mean()
    return x.sum() / mask.sum().clamp_min(1)


def _std(x: Tensor, dim: int | None = None) -> Tensor:
    return x.std(dim=dim, correction=1) if dim is not None else x.std(correction=1)


class PolicyGradient:
    """The estimator of :class:`EstimatorConfig`; keeps the moving-average baseline's state between batches.

    Example::

        est = PolicyGradient(estimator_config("rloo", k=4))
        out = est.loss(policy.token_log_probs(rollout), rollout.completion_mask, rewards,
                       ref.token_log_probs(rollout).detach())
        out.loss.backward()
    """

    def __init__(self, config: EstimatorConfig) -> None:
        self.config = config.validate()
        self.moving_average: float = 0.0
        self.batches_seen: int = 0

    def state_dict(self) -> dict:
        return {"moving_average": self.moving_average, "batches_seen": self.batches_seen}

    def load_state_dict(self, state: dict) -> None:
        self.moving_average = float(state["moving_average"])
        self.batches_seen = int(state["batches_seen"])

    def loss(self, logp: Tensor, mask: Tensor, rewards: Tensor, ref_logp: Tensor | None = None) -> LossOutput:
        """The surrogate loss of one batch.

        Args:
          logp: ``[B, T]`` log π_θ of each completion token, differentiable (0 or anything on padding).
          mask: ``[B, T]`` 1 on completion tokens, 0 on padding; every completion has at least one token.
          rewards: ``[B]`` one finite reward per completion.
          ref_logp: ``[B, T]`` log π_ref of the same tokens (no gradient needed); required when β > 0.
        Returns:
          :class:`LossOutput`.
        """
        cfg = self.config
        b, t = logp.shape
        if b % cfg.k:
            raise InvalidArgumentError(f"k: a batch of {b} completions is not a whole number of groups of k={cfg.k}")
        if rewards.shape != (b,):
            raise InvalidArgumentError(f"rewards: need shape ({b},); got {tuple(rewards.shape)}")
        m = mask.to(logp.dtype)
        lengths = m.sum(1)
        if bool((lengths < 1).any()):
            raise InvalidArgumentError("mask: every completion needs at least one token")
        rewards = rewards.to(logp.dtype).detach()
        zero = logp.new_zeros(b)
        if cfg.beta > 0:
            if ref_logp is None:
                raise InvalidArgumentError(f"ref_logp: β = {cfg.beta} > 0 needs the reference log-probabilities")
            ref_logp = ref_logp.detach().to(logp.dtype)
            kappa = kl_per_token(logp.detach(), ref_logp, cfg.kl_estimator) * m
            kl1 = ((logp.detach() - ref_logp) * m).sum(1)
            kl3 = (kl_per_token(logp.detach(), ref_logp, "k3") * m).sum(1)
        else:
            kappa, kl1, kl3 = torch.zeros_like(m), zero, zero

        # 1-2: per-token rewards, then returns.
        last = (lengths.long() - 1).unsqueeze(1)
        token_reward = torch.zeros_like(m).scatter(1, last, rewards.unsqueeze(1))
        if cfg.beta > 0 and cfg.kl_in == "reward":
            token_reward = token_reward - cfg.beta * kappa
        seq_return = token_reward.sum(1)
        if cfg.level == "token":
            returns = token_reward.flip(1).cumsum(1).flip(1)
        else:
            returns = seq_return.unsqueeze(1).expand(b, t)

        # 3: baseline from the sequence returns, one per completion.
        groups = seq_return.view(b // cfg.k, cfg.k)
        if cfg.baseline == "none":
            base = zero
        elif cfg.baseline == "moving-average":
            base = torch.full_like(seq_return, self.moving_average)
            self.moving_average = (cfg.ma_decay * self.moving_average
                                   + (1 - cfg.ma_decay) * float(seq_return.mean()))
        else:
            # The core library's baselines take the sample axis first: [k, P].
            core = {"loo": "loo", "group-mean": "mean"}[cfg.baseline]
            base = compute_baseline(core, groups.T, groups.T, None).expand(cfg.k, -1).T.reshape(b)
        adv = (returns - base.unsqueeze(1)) * m

        # 4: scaling.
        if cfg.scaling == "group-std":
            adv = adv / (_std(groups, 1) + cfg.std_eps).repeat_interleave(cfg.k).unsqueeze(1)
        elif cfg.scaling == "batch-std":
            if cfg.level == "token":
                values = adv[m.bool()]
            else:
                values = adv[:, 0]
            if values.numel() < 2:
                raise InvalidArgumentError("scaling: batch-std needs at least 2 advantages in a batch")
            adv = (adv - values.mean()) / (_std(values) + cfg.std_eps) * m
        adv = adv.detach()
        self.batches_seen += 1

        # 5-6: the surrogate.
        loss = -_aggregate(adv * logp, m, cfg.aggregation)
        if cfg.beta > 0 and cfg.kl_in == "loss":
            loss = loss + cfg.beta * _aggregate(kl_per_token(logp, ref_logp, cfg.kl_estimator), m, cfg.aggregation)
        return LossOutput(loss, adv, seq_return.detach(), kl1, kl3)


def config_dict(config: EstimatorConfig) -> dict:
    """The options as a plain dict (for config.json)."""
    return asdict(config)
