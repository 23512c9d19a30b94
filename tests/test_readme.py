"""The README's Python examples run as written, in order, in one namespace."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.skipif(not README.exists(), reason="not run from a source tree")
def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        # the framework adapters' examples need their framework
        needs = [m for m in ("torch", "jax") if f"xent_fast.{m}" in block]
        if any(importlib.util.find_spec(m) is None for m in needs):
            continue
        exec(compile(block, str(README), "exec"), namespace)
    # the multi-label example's stated values
    assert namespace["per_image"].round(4).tolist() == [0.9143, 1.38]
