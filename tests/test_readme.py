"""The README's Python example runs as written (the documented public API stays true)."""

import re
from pathlib import Path


def test_readme_python_blocks_run():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    api = [b for b in blocks if "build_sampler" in b]
    assert api, "the README lost its Python API example"
    ns: dict = {}
    exec(compile(api[0], "README.md", "exec"), ns)
    assert ns["out"].nfe == 50 and ns["out"].x.shape == (8, 1, 8, 8)
    assert ns["loss"].shape == (8,)
