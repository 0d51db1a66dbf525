"""The README and docs/ stay true: the support table is the code's, and every code example runs.

Examples are the fenced blocks of README.md and docs/*.md:

- ```python blocks are executed, each in a fresh namespace in a temporary working directory;
- unlabelled (or ```bash) blocks hold `stochgrad` command lines, one per line (``\\`` continues a line, ``#``
  starts a comment); every one is parsed by the real parser, so an option that no longer exists fails here;
- ```text blocks are output or synopses and are not run.

A line ``<!-- example: {...} -->`` right before a fence says how the suite runs that block (JSON): ``"replace"``
lists ``[old, new]`` substitutions that make it small, ``"needs"`` names extras whose absence skips it,
``"fixtures"`` names things to build first (``"tiny-lm"``: a tiny pretrained GPT-2 at
``runs/rlhf-demo/base-model``; ``"my-objective"``: a module ``my_objective`` with a batched ``loss``) and ``"run": true`` also runs a command block's lines in order.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from stochgrad.cli import build_parser, main
from stochgrad.extras import missing_modules
from stochgrad.support import support_table

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- example: (\{.*\}) -->$")


@dataclass
class Block:
    path: Path
    line: int                       # 1-based line of the opening fence
    lang: str
    code: str
    marker: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def prepared(self) -> str:
        code = self.code
        for old, new in self.marker.get("replace", []):
            assert old in code, f"{self.id}: the marker replaces {old!r}, which the block does not contain"
            code = code.replace(old, new)
        return code


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^( *)```(\w*)\s*$", lines[i])          # a fence, perhaps indented in a list item
        if not m:
            i += 1
            continue
        start, indent, lang = i, len(m.group(1)), m.group(2)
        j = i + 1
        while not lines[j].lstrip().startswith("```"):
            j += 1
        marker = MARKER.match(lines[start - 1].strip()) if start else None
        body = [line[indent:] for line in lines[start + 1:j]]
        out.append(Block(path, start + 1, lang, "\n".join(body) + "\n", json.loads(marker.group(1)) if marker else {}))
        i = j + 1
    return out


ALL = [b for p in DOCS for b in blocks(p)]
PYTHON = [b for b in ALL if b.lang == "python"]
COMMANDS = [b for b in ALL if b.lang in ("", "bash", "sh")]


def command_lines(code: str) -> list[list[str]]:
    """The `stochgrad` command lines of a block, as argument lists without the program name."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        assert words[0] == "stochgrad", f"not a stochgrad command (label the block ```text if it is output): {line}"
        out.append(words[1:])
    return out


def _prepare(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for extra in block.marker.get("needs", []):
        if missing_modules(extra):
            pytest.skip(f"needs the '{extra}' extra")
    monkeypatch.chdir(tmp_path)
    for fixture in block.marker.get("fixtures", []):
        assert fixture in ("tiny-lm", "my-objective"), f"{block.id}: unknown fixture {fixture!r}"
        if fixture == "my-objective":
            (tmp_path / "my_objective.py").write_text("def loss(x):\n    return ((x - 1) ** 2).sum(-1)\n")
            monkeypatch.syspath_prepend(str(tmp_path))
            continue
        from stochgrad.runs.threads import torch_threads
        from stochgrad.rlhf.tiny import build_pretrained

        with torch_threads(1):
            build_pretrained(tmp_path / "runs" / "rlhf-demo" / "base-model", n_sentences=4000, steps=50,
                             vocab_size=400, seed=0)


def test_the_docs_have_examples_of_both_kinds() -> None:
    assert len(PYTHON) >= 5 and len(COMMANDS) >= 6
    assert any(b.marker.get("run") for b in COMMANDS)


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _prepare(block, tmp_path, monkeypatch)
    threads = torch.get_num_threads()
    module = types.ModuleType("docs_example")        # a real module, as dataclasses in an example need
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        exec(compile(block.prepared(), block.id, "exec"), module.__dict__)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("block", COMMANDS, ids=[b.id for b in COMMANDS])
def test_command_example_parses_and_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    commands = command_lines(block.code)
    assert commands, f"{block.id}: a command block without a stochgrad command (label output ```text)"
    for argv in commands:
        build_parser().parse_args(argv)          # raises SystemExit(2) on an unknown option or a bad choice
    if not block.marker.get("run"):
        return
    _prepare(block, tmp_path, monkeypatch)
    for argv in command_lines(block.prepared()):
        assert main([*argv, *(["--no-progress"] if _takes_no_progress(argv) else [])]) == 0, argv


def _takes_no_progress(argv: list[str]) -> bool:
    try:
        return hasattr(build_parser().parse_args(argv), "no_progress")
    except SystemExit:
        return False


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


def test_a_rotten_example_would_fail() -> None:
    """The command check is not vacuous: an option that does not exist is refused by the parser."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(command_lines("stochgrad optimize --no-such-option 3\n")[0])
