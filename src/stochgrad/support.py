"""Which estimator supports which (family, parameter): the table in the README, derived from the code."""

from __future__ import annotations

from stochgrad.distributions import FAMILIES
from stochgrad.distributions.weak import find_weak_derivative


def support_rows() -> list[dict[str, str]]:
    """One row per (family, parameter) with what each estimator offers ("" when unsupported)."""
    rows = []
    for cls in FAMILIES:
        for param in cls.param_names_all:
            wd = find_weak_derivative(cls, param)
            rows.append({
                "family": cls.__name__,
                "parameter": param,
                "score function": "yes" if param in cls.score_params else "",
                "antithetic": "yes" if param in cls.score_params and cls.symmetric else "",
                "measure-valued": wd.description if wd else "",
                "pathwise": "yes" if param in cls.reparam_params else "",
                "CCMVD": "yes" if wd and param in cls.score_params else "",
                "CCSF": "yes" if param in cls.score_params else "",
                "Auto": ("SF + MVD" if wd and param in cls.score_params else "MVD" if wd
                         else "SF" if param in cls.score_params else ""),
            })
    return rows


def support_table() -> str:
    """The support table as Markdown."""
    rows = support_rows()
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r[c] or "—" for c in cols) + " |")
    return "\n".join(out)
