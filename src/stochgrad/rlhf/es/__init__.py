"""Evolution strategies in parameter space for causal LMs: seeded noise, the antithetic estimate, a train step.

- :mod:`~stochgrad.rlhf.es.noise`: a member is a seed; noise per tensor from (seed, tensor index);
- :mod:`~stochgrad.rlhf.es.update`: :class:`EsConfig`, fitness shaping, the gradient written into ``.grad``;
- :mod:`~stochgrad.rlhf.es.lowrank`: low-rank members as a correction of the layers' outputs (x·B·Aᵀ);
- :mod:`~stochgrad.rlhf.es.remote`: members on Ray workers that hold the model;
- :mod:`~stochgrad.rlhf.es.step`: one population on a :class:`~stochgrad.rlhf.policy.Policy`, evaluated
  without touching its weights;
- :mod:`~stochgrad.rlhf.es.subspace`: the library's registered estimators over θ = θ0 + P·z.

See docs/rlhf.md, "Evolution strategies in parameter space".
"""

from stochgrad.rlhf.es.noise import SeededNoise, splitmix64, tensor_seed
from stochgrad.rlhf.es.step import EsStep, MemberResult, es_step, evaluate_member, make_noise, member_policy, trainable
from stochgrad.rlhf.es.subspace import Subspace, SubspaceConfig, SubspaceSearch, subspace_estimators
from stochgrad.rlhf.es.update import (
    ES_ESTIMATORS,
    LOWRANK_APPLY,
    SHAPINGS,
    EsConfig,
    es_config,
    pair_weights,
    perturbed,
    shape_fitness,
    write_gradient,
)

__all__ = ["ES_ESTIMATORS", "LOWRANK_APPLY", "SHAPINGS", "EsConfig", "EsStep", "MemberResult", "SeededNoise",
           "Subspace", "SubspaceConfig", "SubspaceSearch", "es_config", "es_step", "evaluate_member", "make_noise",
           "member_policy", "pair_weights", "perturbed", "shape_fitness", "splitmix64", "subspace_estimators",
           "tensor_seed", "trainable", "write_gradient"]
