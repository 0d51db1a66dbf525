"""The README stays true: its support table is the code's, and its quickstart runs."""

from __future__ import annotations

import re
from pathlib import Path

from stochgrad.support import support_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_support_table_matches_the_code() -> None:
    assert support_table() in (ROOT / "README.md").read_text()


def test_readme_quickstart_runs() -> None:
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Quickstart\s+```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README quickstart", "exec"), scope)
    assert scope["g"].n_evals == 40
    assert scope["loc"].grad is not None and scope["loc"].grad.shape == (10,)


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:5]
    assert any(line.strip().startswith("make demo") for line in head)
    assert any(line.strip().startswith("make test") for line in head)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_from_torch_example_in_the_estimator_docs_runs() -> None:
    import textwrap

    text = (ROOT / "docs" / "estimators.md").read_text()
    blocks = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, re.S) if "from_torch" in b]
    assert blocks
    for code in blocks:
        scope: dict = {}
        exec(compile("import torch, stochgrad as sg\n" + code, "docs/estimators.md", "exec"), scope)
        assert scope["g"].grad["loc"].shape == (3,)
