"""README's Python examples run as written, so that they cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[str, str]]:
    """(section heading, code) of every ```python block in README.md."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for m in _BLOCK.finditer(text):
        heading = next(
            (h for h in reversed(re.findall(r"^#+ (.+)$", text[: m.start()], re.M))), "top"
        )
        blocks.append((heading, m.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_readme_has_the_models_example() -> None:
    assert any(h == "Models" for h, _ in BLOCKS)


@pytest.mark.parametrize(
    "code", [c for _, c in BLOCKS], ids=[f"{i}-{h}" for i, (h, _) in enumerate(BLOCKS)]
)
def test_readme_python_block_runs(code: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything an example writes lands in tmp_path
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(code, str(README), "exec"), namespace)
