"""Estimator overhead: one estimate including a cheap f, against the least any estimator must do, and against
the JAX estimators in optax 0.2.6, a lean jax.jit score function and a lean eager torch MVD (the floor of eager
dispatch), in one run on one machine.

    python benchmarks/overhead.py [--dims 10,100,1000,10000] [--repeats 20] [--no-jax]

"Least work" is drawing the same number of standard normal numbers as the estimate evaluates f on, and
evaluating f on those points. Peak memory is the peak resident set (VmHWM, reset just before) while one estimate
runs, measured in a fresh subprocess per case. Writes docs/benchmarks.md section "overhead".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

DTYPE = torch.float32


def quadratic(x: torch.Tensor) -> torch.Tensor:
    """A cheap vectorised quadratic, Σ (x_i − 1)²: ``[..., D] -> [...]``."""
    return (x - 1.0).square().sum(-1)


def _separable_quadratic():
    import stochgrad as sg

    return sg.Separable(lambda v, i: (v - 1.0).square(), name="quadratic")


SEPARABLE_QUADRATIC = _separable_quadratic()
CASES = ("sf-2D", "sf-100", "mvd", "mvd-shared", "mvd-separable")


def _time(fn, repeats: int) -> float:
    """Median seconds per call after two warm-up calls: ``repeats`` calls, or more (up to 300, about 0.3 s in
    all) when one call is short, since the median of a few sub-millisecond calls is noisy."""
    fn()
    t0 = time.perf_counter()
    fn()
    single = time.perf_counter() - t0
    n = repeats if single > 0.05 else max(repeats, min(300, int(0.3 / max(single, 1e-6))))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_cases(dim: int, which: str):
    """(estimate, least-work) callables for one case."""
    import stochgrad as sg

    loc = torch.zeros(dim, dtype=DTYPE)
    scale = torch.full((dim,), 0.1, dtype=DTYPE)
    dist = sg.Normal(loc, scale)
    gen = torch.Generator().manual_seed(0)
    if which.startswith("sf"):
        n = 2 * dim if which == "sf-2D" else 100
        est = sg.ScoreFunction(n, baseline="loo")
        shape = (n, dim)
        params = ("loc",)
    elif which.startswith("mvd"):
        est = sg.MeasureValued(1, shared_base=which != "mvd")
        shape = (2 * dim, dim)
        params = ("loc",)
    else:
        raise ValueError(which)
    f = SEPARABLE_QUADRATIC if which == "mvd-separable" else quadratic

    def estimate():
        return est.estimate(f, dist, generator=gen, params=params)

    def least():
        return quadratic(torch.randn(shape, generator=gen, dtype=DTYPE))

    return estimate, least


def lean_torch_mvd(f, loc: torch.Tensor, scale: torch.Tensor, gen: torch.Generator):
    """Coupled MVD of loc and scale for a diagonal Normal ``[D]``, one sample per component and one base point per
    parameter (optax's layout), written with as few eager torch operations as we could: the floor of eager
    dispatch for this estimate, without checks or a variance. Returns (∂/∂loc, ∂/∂scale), each ``[D]``."""
    D = loc.shape[-1]
    tiny = torch.finfo(loc.dtype).tiny
    r = torch.rand(D, generator=gen, dtype=loc.dtype).clamp_min_(tiny).log_().mul_(-2.0).sqrt_()    # Rayleigh
    m = torch.randn(3, D, generator=gen, dtype=loc.dtype).square_().sum(0).sqrt_()
    m = torch.where(torch.rand(D, generator=gen, dtype=loc.dtype) < 0.5, -m, m)          # double-sided Maxwell
    n = torch.rand(D, generator=gen, dtype=loc.dtype).clamp_min_(tiny).mul_(m)            # M·U ~ N(0, 1)
    base = torch.randn(2, 1, D, generator=gen, dtype=loc.dtype).mul_(scale).add_(loc)
    points = base.expand(2, 2 * D, D).reshape(4, D, D)                          # loc +, loc −, scale +, scale −
    points.diagonal(dim1=1, dim2=2).copy_(torch.stack([r, -r, m, n]).mul_(scale).add_(loc))
    v = f(points.view(4 * D, D)).view(4, D)
    if not torch.isfinite(v.sum()):
        raise ValueError("f returned a non-finite value")
    return (v[0] - v[1]) / (scale * (2 * math.pi) ** 0.5), (v[2] - v[3]) / scale


def jax_cases(dim: int, n: int):
    """optax 0.2.6 score function and MVD (loc and log-scale, as optax computes both) and a lean jitted score
    function, each as a callable that blocks until the result is ready."""
    import jax
    import jax.numpy as jnp
    from optax import monte_carlo as mc
    from optax._src import utils as ou

    mean = jnp.zeros(dim, dtype=jnp.float32)
    log_scale = jnp.full((dim,), jnp.log(0.1), dtype=jnp.float32)
    params = (mean, log_scale)
    key = jax.random.PRNGKey(0)

    def f_one(x):
        return jnp.sum((x - 1.0) ** 2)

    sf = jax.jit(lambda p, k: mc.score_function_jacobians(f_one, p, ou.multi_normal, k, n))
    mvd = jax.jit(lambda p, k: mc.measure_valued_jacobians(f_one, p, ou.multi_normal, k, 1, coupling=True))

    @jax.jit
    def lean_sf(mu, log_sigma, k):
        sigma = jnp.exp(log_sigma)
        eps = jax.random.normal(k, (n, dim), dtype=jnp.float32)
        fx = jnp.sum((mu + sigma * eps - 1.0) ** 2, axis=-1)
        b = (fx.sum() - fx) / (n - 1)
        w = fx - b
        return (w @ eps) / (n * sigma)

    def run(fn):
        def go():
            out = fn()
            jax.block_until_ready(out)
            return out
        return go

    return {
        "optax-sf": run(lambda: sf(params, key)),
        "optax-mvd": run(lambda: mvd(params, key)),
        "lean-jit-sf": run(lambda: lean_sf(mean, log_scale, key)),
    }


def peak_memory(kind: str, dim: int, which: str) -> tuple[float, float]:
    """(growth, absolute) peak resident set in MiB during one estimate, in a fresh process.

    The peak is read from ``VmHWM`` after resetting it through ``/proc/self/clear_refs`` (``ru_maxrss`` cannot be
    reset and, across ``execve``, can carry the parent's peak). Growth = peak − resident set just before.
    """
    code = f"""
import sys, json
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import overhead
import torch
torch.set_num_threads({torch.get_num_threads()})
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
if {kind!r} == "torch":
    est, least = overhead.torch_cases({dim}, {which!r})
    fn = est if {which!r} != "least" else least
else:
    fn = overhead.jax_cases({dim}, 100)[{which!r}]
    fn()
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
fn()
peak = status("VmHWM")
print(json.dumps([peak - base, peak]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return float("nan"), float("nan")
    growth, peak = json.loads(out.stdout.strip().splitlines()[-1])
    return float(growth), float(peak)


def main() -> None:
    from _report import command, machine, update_section

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dims", default="10,100,1000,10000")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-jax", action="store_true")
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    rows = []
    for dim in dims:
        for which in CASES:
            est, least = torch_cases(dim, which)
            reps = max(3, args.repeats if dim <= 1000 else 3)
            t_est, t_least = _time(est, reps), _time(least, reps)
            mem = peak_memory("torch", dim, which)
            rows.append({"dim": dim, "case": which, "estimate_s": t_est, "least_s": t_least,
                         "ratio": t_est / t_least, "peak_growth_mib": mem[0], "peak_mib": mem[1]})
            print(json.dumps(rows[-1]), flush=True)
    jax_rows = []
    if not args.no_jax:
        for dim in [d for d in dims if d <= 1000]:
            cases = jax_cases(dim, 100)
            import stochgrad as sg
            loc, scale = torch.zeros(dim, dtype=DTYPE), torch.full((dim,), 0.1, dtype=DTYPE)
            gen = torch.Generator().manual_seed(0)
            # Each call builds the distribution from its parameters, as the JAX functions take them per call.
            ours = {
                "stochgrad-sf": lambda: sg.ScoreFunction(100).estimate(quadratic, sg.Normal(loc, scale), gen),
                "stochgrad-sf-loc-loo": lambda: sg.ScoreFunction(100, baseline="loo").estimate(
                    quadratic, sg.Normal(loc, scale), gen, params=("loc",)),
                "stochgrad-mvd": lambda: sg.MeasureValued(1).estimate(quadratic, sg.Normal(loc, scale), gen),
                "stochgrad-mvd-shared": lambda: sg.MeasureValued(1, shared_base=True).estimate(
                    quadratic, sg.Normal(loc, scale), gen),
                "lean-torch-mvd": lambda: lean_torch_mvd(quadratic, loc, scale, gen),
            }
            reps = args.repeats if dim < 1000 else max(3, args.repeats // 4)
            t = {name: _time(fn, reps) for name, fn in {**cases, **ours}.items()}
            growth, peak = peak_memory("jax", dim, "optax-mvd")
            jax_rows.append({"dim": dim, **t, "optax-mvd_peak_growth_mib": growth, "optax-mvd_peak_mib": peak})
            print(json.dumps(jax_rows[-1]), flush=True)
    lines = [
        "## Estimator overhead", "",
        "One estimate of ∇_μ E f for a diagonal Normal (float32, σ = 0.1) with f(x) = Σ (x_i − 1)², a cheap "
        "vectorised quadratic, timed including f (median over repeats after warm-up). *Least work* = drawing the "
        "same number of standard normal numbers as there are coordinates in the points f is evaluated on, and "
        "evaluating f on them: what any estimator must at least do. Ratio = estimate / least work. Memory: in a "
        "fresh process, the peak resident set (VmHWM, reset just before) during one estimate, and its growth over "
        "the resident set just before (the estimate's own allocations).", "",
        f"Command: `{command()}`  ", f"Machine: {machine()}; torch threads: {torch.get_num_threads()}", "",
        "| D | estimator | estimate | least work | ratio | peak resident set | growth during estimate |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    names = {"sf-2D": "score function, N = 2D, loo", "sf-100": "score function, N = 100, loo",
             "mvd": "coupled MVD, M = 1 (2D evaluations)",
             "mvd-shared": "coupled MVD, M = 1, `shared_base=True`",
             "mvd-separable": "coupled MVD, M = 1, `shared_base=True`, f as `sg.Separable`"}
    for r in rows:
        lines.append(f"| {r['dim']} | {names[r['case']]} | {r['estimate_s'] * 1e3:.3f} ms | "
                     f"{r['least_s'] * 1e3:.3f} ms | {r['ratio']:.2f} | {r['peak_mib']:.0f} MiB | "
                     f"{r['peak_growth_mib']:.0f} MiB |")
    if jax_rows:
        lines += [
            "", "### Against optax 0.2.6 and a lean jitted score function (same run)", "",
            "N = 100. *optax SF* and *stochgrad SF*: no baseline, gradients of loc and scale (optax's "
            "`score_function_jacobians` always computes both). *lean jit SF*: a `jax.jit` function written for "
            "this benchmark, gradient of loc only with a leave-one-out baseline; *stochgrad SF, loc, loo* computes "
            "the same. *MVD*: coupled, one sample for loc and for scale (optax's `measure_valued_jacobians` always "
            "estimates both; 4D evaluations). JAX functions are jitted and warmed up; every call of ours builds "
            "the distribution from its parameters, as the JAX functions take them per call. Times are per estimate; "
            "ratios above 1 favour stochgrad in the optax columns, below 1 in the lean column.", "",
            "| D | optax SF | stochgrad SF | optax / ours | lean jit SF | stochgrad SF, loc, loo | ours / lean |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in jax_rows:
            lines.append(
                f"| {r['dim']} | {r['optax-sf'] * 1e3:.2f} ms | {r['stochgrad-sf'] * 1e3:.3f} ms | "
                f"{r['optax-sf'] / r['stochgrad-sf']:.2f} | {r['lean-jit-sf'] * 1e3:.3f} ms | "
                f"{r['stochgrad-sf-loc-loo'] * 1e3:.3f} ms | {r['stochgrad-sf-loc-loo'] / r['lean-jit-sf']:.2f} |")
        lines += [
            "", "*lean eager torch MVD*: the same coupled MVD with a shared base written for this benchmark in as few "
            "eager torch operations as we could (no checks, no variance): what eager dispatch costs at the least.",
            "", "| D | optax MVD | stochgrad MVD | optax / ours | stochgrad MVD, `shared_base=True` | optax / ours "
            "| lean eager torch MVD | optax / lean | optax MVD peak (growth) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in jax_rows:
            lines.append(
                f"| {r['dim']} | {r['optax-mvd'] * 1e3:.2f} ms | {r['stochgrad-mvd'] * 1e3:.2f} ms | "
                f"{r['optax-mvd'] / r['stochgrad-mvd']:.2f} | {r['stochgrad-mvd-shared'] * 1e3:.2f} ms | "
                f"{r['optax-mvd'] / r['stochgrad-mvd-shared']:.2f} | {r['lean-torch-mvd'] * 1e3:.2f} ms | "
                f"{r['optax-mvd'] / r['lean-torch-mvd']:.2f} | {r['optax-mvd_peak_mib']:.0f} MiB "
                f"({r['optax-mvd_peak_growth_mib']:.0f} MiB) |")
    update_section("overhead", "\n".join(lines))


if __name__ == "__main__":
    main()
