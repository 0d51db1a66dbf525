"""Plans are values: ``combine`` is a pure function of the plan and the values; stateful estimators change only
in ``update``, once per estimate (DESIGN.md, "Plans are values; state is explicit")."""

from __future__ import annotations

import pytest
import torch

import stochgrad as sg
from stochgrad.estimators.measure_valued import MeasureValuedPlan
from stochgrad.estimators.score_function import ScoreFunctionPlan
from stochgrad.optim.search import SearchGradient

STATEFUL = {
    "ccmvd": lambda: sg.CCMVD(n_samples=4, samples_per_dim=1, k=2),
    "ccsf": lambda: sg.CCSF(n_samples=4, samples_per_dim=1, k=2),
    "auto": lambda: sg.Auto(budget=24),
}


def f(x: torch.Tensor) -> torch.Tensor:
    return (x.sum(-1) ** 2) + torch.sin(3 * x).sum(-1)


def _dist() -> sg.Normal:
    return sg.Normal(torch.linspace(-1, 1, 4).expand(5, 4), torch.full((5, 4), 0.5))


def _state(est) -> list[torch.Tensor]:
    out = []

    def walk(x):
        if isinstance(x, dict):
            for k in sorted(x):
                walk(x[k])
        elif isinstance(x, torch.Tensor):
            out.append(x.clone())

    walk(est.state_dict())
    return out


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and (x.dtype == torch.bool and torch.equal(x, y) or
                                    torch.allclose(x, y, rtol=0, atol=0, equal_nan=True)) for x, y in zip(a, b))


def _warm(est, steps: int = 3) -> torch.Generator:
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        est.estimate(f, _dist(), generator=gen)
    return gen


@pytest.mark.parametrize("name", list(STATEFUL))
@pytest.mark.parametrize("warm", [0, 3])
def test_combine_twice_gives_the_same_estimate_and_leaves_the_state_alone(name: str, warm: int) -> None:
    est = STATEFUL[name]()
    gen = _warm(est, warm)
    before = _state(est)
    plan = est.plan(_dist(), gen)
    values = f(plan.points)
    g1, g2 = plan.combine(values), plan.combine(values)
    assert _same(before, _state(est))
    for p in g1.grad:
        assert torch.equal(g1.grad[p], g2.grad[p])
        assert torch.allclose(g1.variance[p], g2.variance[p], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", list(STATEFUL))
def test_update_is_the_one_state_step_and_estimate_does_it(name: str) -> None:
    a, b = STATEFUL[name](), STATEFUL[name]()
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(4):
        ga = a.estimate(f, _dist(), generator=gen_a)
        plan = b.plan(_dist(), gen_b)
        gb = plan.combine(f(plan.points))
        b.update(gb)
        assert _same(_state(a), _state(b))
        for p in ga.grad:
            assert torch.equal(ga.grad[p], gb.grad[p])
    with pytest.raises(sg.StochgradError, match="already folded in"):
        b.update(gb)
    with pytest.raises(sg.StochgradError, match="estimate this estimator planned"):
        b.update(ga)


@pytest.mark.parametrize("name", list(STATEFUL))
def test_two_plans_in_flight_behave(name: str) -> None:
    est = STATEFUL[name]()
    gen = _warm(est)
    p1, p2 = est.plan(_dist(), gen), est.plan(_dist(), gen)
    v1, v2 = f(p1.points), f(p2.points)
    early = p2.combine(v2)
    est.update(p1.combine(v1))
    late = p2.combine(v2)            # p2's weights were fixed when it was planned
    for p in early.grad:
        assert torch.equal(early.grad[p], late.grad[p])
    est.update(late)
    assert est.state_dict()          # both folded in, once each


@pytest.mark.parametrize("name", list(STATEFUL))
def test_sub_plans_combine_through_their_public_path(name: str, monkeypatch) -> None:
    calls = []
    for cls in (MeasureValuedPlan, ScoreFunctionPlan):
        original = cls.combine

        def spy(self, values, _original=original):
            calls.append(type(self).__name__)
            return _original(self, values)

        monkeypatch.setattr(cls, "combine", spy)
    est = STATEFUL[name]()
    gen = _warm(est, 1)
    calls.clear()
    plan = est.plan(_dist(), gen)
    plan.combine(f(plan.points))
    assert "ScoreFunctionPlan" in calls


@pytest.mark.parametrize("name", ["ccmvd", "auto"])
def test_ask_tell_updates_the_estimator_once_per_step(name: str) -> None:
    est = sg.Auto(budget=16) if name == "auto" else sg.CCMVD(n_samples=4, samples_per_dim=1, k=2)
    opt = SearchGradient(torch.zeros(4), 0.5, estimator=est, seed=3)
    steps = []
    for _ in range(3):
        x = opt.ask()
        opt.tell(f(x))
        steps.append(int(next(iter(est.state_dict().values()))["step"]))
    assert steps == [1, 2, 3]
