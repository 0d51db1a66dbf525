"""Low-rank members in activation space (x·B·Aᵀ added to the layers' outputs): the same members as perturbed
matrices, no matrix formed or written, hooks gone afterwards, a fallback for layers it does not know."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stochgrad.errors import InvalidArgumentError
from stochgrad.rlhf.es import EsConfig, SeededNoise, es_config
from stochgrad.rlhf.es.lowrank import ActivationMember, activation_uses
from stochgrad.rlhf.es.step import es_step, make_noise, member_policy, trainable
from stochgrad.rlhf.policy import Policy
from stochgrad.rlhf.rewards import VaderReward
from stochgrad.rlhf.trainer import TrainConfig, run_train

PROMPTS = ["the movie was", "i think the food is", "honestly , the service"]


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_an_activation_space_member_is_the_member_with_perturbed_matrices(tiny_model_dir) -> None:
    policy = Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=8)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    noise = make_noise(policy, rank=2)
    names, params = trainable(policy)
    for sign in (1.0, -1.0):
        act = member_policy(policy, names, params, noise, seed=5, scale=sign * 0.05, lowrank_apply="activations")
        mat = member_policy(policy, names, params, noise, seed=5, scale=sign * 0.05, lowrank_apply="weights")
        assert isinstance(act.model, ActivationMember)
        # every matrix of the tiny GPT-2 (embeddings, tied output layer, Conv1D) is perturbed in activation space
        matrices = [i for i, p in enumerate(params) if p.dim() == 2]
        assert sorted(act.model.factors) == matrices and len(matrices) >= 6
        assert all(v.dim() == 1 for v in act.model.values.values())
        a = act.sample(PROMPTS, 3, torch.Generator().manual_seed(9))
        b = mat.sample(PROMPTS, 3, torch.Generator().manual_seed(9))
        assert a.completions == b.completions
        assert torch.equal(a.completion_ids, b.completion_ids)
        la, lb = act.token_log_probs(a), mat.token_log_probs(b)
        assert torch.allclose(la, lb, atol=2e-5, rtol=1e-5)
        assert not torch.allclose(la, policy.token_log_probs(a), atol=1e-3)      # it is perturbed
        assert act.model.calls > 1 and hooks(policy.model) == 0
    after = policy.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_population_in_activation_space_gives_the_same_rewards_and_update(tiny_model_dir) -> None:
    def run(how: str):
        policy = Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=6)
        cfg = EsConfig(population=6, sigma=0.02, rank=2, beta=0.05, lowrank_apply=how)
        out = es_step(policy, policy.reference(), VaderReward(), PROMPTS, cfg, make_noise(policy, 2),
                      torch.Generator().manual_seed(1))
        return out, [p.grad for p in policy.parameters()]

    (a, ga), (b, gb) = run("activations"), run("weights")
    assert torch.equal(a.rewards, b.rewards) and torch.equal(a.lengths, b.lengths)
    assert torch.allclose(a.kl, b.kl, atol=1e-4)
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-8) for x, y in zip(ga, gb))


class Odd(nn.Module):
    """Uses its weight through F.linear in its own forward: no known correction."""

    def __init__(self, w: nn.Parameter) -> None:
        super().__init__()
        self.weight = w

    def forward(self, x):
        return nn.functional.linear(x, self.weight)


def test_matrices_of_unknown_layers_fall_back_to_perturbed_weights() -> None:
    lin, emb = nn.Linear(4, 3), nn.Embedding(5, 4)
    shared = nn.Linear(4, 5, bias=False)
    shared.weight = emb.weight                    # tied, as GPT-2's output layer
    odd = Odd(nn.Parameter(torch.randn(3, 3)))
    mixed = nn.Linear(3, 3)
    odd2 = Odd(mixed.weight)                      # one known use and one unknown: falls back
    model = nn.ModuleList([lin, emb, shared, odd, mixed, odd2])
    params = [p for p in model.parameters()]
    noise = SeededNoise([p.shape for p in params], rank=1)
    uses = activation_uses(model, params, noise)
    index = {id(p): i for i, p in enumerate(params)}
    assert {(index[id(p)], tuple(k for _, k in uses[index[id(p)]])) for p in (lin.weight, emb.weight)} == {
        (index[id(lin.weight)], ("linear",)), (index[id(emb.weight)], ("embedding", "linear"))}
    assert index[id(odd.weight)] not in uses and index[id(mixed.weight)] not in uses
    assert activation_uses(model, params, SeededNoise([p.shape for p in params], rank=0)) == {}


def test_bad_lowrank_apply_gets_a_named_error(tmp_path, tiny_model_dir) -> None:
    with pytest.raises(InvalidArgumentError, match="lowrank_apply: got 'sideways'; choose one of"):
        EsConfig(rank=1, lowrank_apply="sideways").validate()
    with pytest.raises(InvalidArgumentError, match="lowrank_apply: --estimator es uses full-rank noise"):
        es_config("es", lowrank_apply="weights")
    assert es_config("es-lowrank").lowrank_apply == "activations"
    cfg = TrainConfig(model=str(tiny_model_dir), estimator="es", lowrank_apply="weights", population=4,
                      completions_per_step=8, steps=1)
    with pytest.raises(InvalidArgumentError, match="lowrank_apply: --estimator es uses full-rank noise"):
        run_train(cfg, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_members_side_by_side_in_one_batch_are_the_members_one_at_a_time(tiny_model_dir, beta) -> None:
    def run(batch: int):
        policy = Policy.from_pretrained(str(tiny_model_dir), max_new_tokens=8)
        before = {k: v.clone() for k, v in policy.model.state_dict().items()}
        cfg = EsConfig(population=6, sigma=0.05, rank=2, beta=beta, member_batch=batch)
        out = es_step(policy, policy.reference() if beta else None, VaderReward(), PROMPTS, cfg,
                      make_noise(policy, 2), torch.Generator().manual_seed(2))
        after = policy.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before) and hooks(policy.model) == 0
        return out, [p.grad for p in policy.parameters()]

    one, g1 = run(1)
    for batch in (4, 6):      # 4: a batch of 4 members and one of 2
        many, gm = run(batch)
        assert torch.equal(many.lengths, one.lengths) and torch.equal(many.rewards, one.rewards)
        assert torch.allclose(many.kl, one.kl, atol=1e-4)
        assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-8) for x, y in zip(gm, g1))
        assert many.first.completions == one.first.completions
        if beta:   # not a no-op: without the per-row corrections every member would be the reference itself
            assert float(many.kl.abs().max()) > 1e-3


def test_member_batch_needs_low_rank_in_activation_space(tmp_path, tiny_model_dir) -> None:
    with pytest.raises(InvalidArgumentError, match="member_batch: members share a batch only as low-rank"):
        EsConfig(rank=0, member_batch=4).validate()
    with pytest.raises(InvalidArgumentError, match="member_batch: members share a batch only as low-rank"):
        EsConfig(rank=1, lowrank_apply="weights", member_batch=4).validate()
    with pytest.raises(InvalidArgumentError, match="member_batch: need an integer >= 1"):
        EsConfig(rank=1, member_batch=0).validate()
    with pytest.raises(InvalidArgumentError, match="member_batch: --estimator es uses full-rank noise"):
        es_config("es", member_batch=2)
    cfg = TrainConfig(model=str(tiny_model_dir), estimator="es-lowrank", member_batch=0, population=4,
                      completions_per_step=8, steps=1)
    with pytest.raises(InvalidArgumentError, match="member_batch: need an integer >= 1"):
        run_train(cfg, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


def test_a_model_without_per_row_corrections_evaluates_members_one_at_a_time() -> None:
    from stochgrad.rlhf.es.lowrank import batch_uses

    model = nn.ModuleList([nn.Linear(4, 3), nn.LayerNorm(3), nn.GroupNorm(1, 3)])
    params = list(model.parameters())
    noise = SeededNoise([p.shape for p in params], rank=1)
    assert batch_uses(model, params, noise) is None                  # GroupNorm's parameters: no correction
    assert batch_uses(model[:2], params[:4], SeededNoise([p.shape for p in params[:4]], rank=1)) is not None
    assert batch_uses(model[:2], params[:4], SeededNoise([p.shape for p in params[:4]], rank=0)) is None
