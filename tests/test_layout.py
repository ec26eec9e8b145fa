"""The package's shape: no import cycle, no module importing another's private names, every module importable on
its own, no file over 400 lines, each axis's choices listed in one place, no pointer to documents outside the
repository."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ablate"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _target(mod: str, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    base = mod.split(".") if MODULES[mod].name == "__init__.py" else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports() -> tuple[dict[str, set[str]], list[str]]:
    """Every import between ablate's modules (module level and inside functions), and the private names imported
    from another module."""
    edges, private = {}, []
    for mod, path in MODULES.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                t = _target(mod, node)
                if not t or not t.startswith("ablate"):
                    continue
                for a in node.names:
                    full = f"{t}.{a.name}"
                    dest = full if full in MODULES else t
                    if dest in MODULES and dest != mod:
                        out.add(dest)
                    if a.name.startswith("_") and not a.name.startswith("__") and dest != mod:
                        private.append(f"{mod} imports {t}.{a.name}")
                if t in MODULES and t != mod and t.rsplit(".", 1)[-1].startswith("_"):
                    private.append(f"{mod} imports the private module {t}")
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name in MODULES and a.name != mod}
        edges[mod] = out
    return edges, private


def test_no_import_cycle_between_modules():
    edges, _ = _imports()
    # A package's __init__ importing its own submodules (and they importing from the package) is the package
    # pattern, not a cycle; every other edge counts, imports inside functions included.
    graph = {m: {t for t in ts if not (t.startswith(m + ".") or m.startswith(t + "."))} for m, ts in edges.items()}
    state, stack, cycles = {}, [], []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names():
    _, private = _imports()
    assert not private, private


def test_every_module_imports_on_its_own():
    """Each module imported first in a fresh interpreter state (its ablate dependencies loaded by it alone)."""
    code = ("import importlib, sys\nbad = []\nfor m in sys.argv[1:]:\n"
            "    for k in [k for k in sys.modules if k == 'ablate' or k.startswith('ablate.')]:\n"
            "        del sys.modules[k]\n"
            "    try:\n        importlib.import_module(m)\n"
            "    except Exception as e:\n        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    mods = sorted(m for m in MODULES if not m.endswith("__main__"))
    r = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


def test_no_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


# Each axis's choices and the one module allowed to list them (a registry filled by the classes has none).
CHOICES = {
    "prediction": ({"noise", "score", "velocity", "x0"}, "ablate/transport/predictions.py"),
    "weighting": ({"none", "velocity", "likelihood"}, "ablate/transport/loss.py"),
    "network time": ({"t", "1-t", "999t"}, "ablate/transport/time.py"),
    "SDE solver": ({"em", "heun"}, "ablate/sampling/sde.py"),
    "SDE last step": ({"none", "mean", "tweedie", "euler"}, "ablate/sampling/sde.py"),
    "discrete sampler": ({"ddpm", "ddim"}, "ablate/sampling/discrete.py"),
    "adaptive ODE solver": ({"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}, "ablate/sampling/ode.py"),
    "NaN policy": ({"stop", "skip"}, "ablate/pipeline/specs.py"),
    "interpolant": ({"linear", "gvp", "vp"}, None),
    "SDE coefficient": ({"w_kl", "sigma", "sin2", "constant", "decreasing", "w_kl_eta"}, None),
    "time density": ({"uniform", "logit_normal"}, None),
}


def _literal_lists():
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                vals = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            elif isinstance(node, ast.Dict):
                vals = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            else:
                continue
            yield str(p.relative_to(ROOT)), node.lineno, vals


def test_each_axis_lists_its_choices_in_one_place():
    lists = list(_literal_lists())
    for axis, (names, owner) in CHOICES.items():
        # a literal naming most of an axis's choices is a list of them
        where = sorted({f"{f}:{line}" for f, line, vals in lists if len(vals & names) >= max(2, len(names) - 1)})
        assert len(where) == (owner is not None), f"{axis}: choices listed at {where} (owner: {owner})"
        if owner:
            assert where[0].startswith(owner + ":"), f"{axis}: listed at {where}, expected in {owner}"


def test_registered_names_are_defined_once():
    from ablate.sampling import SAMPLER_FAMILIES
    from ablate.transport import DIFFUSIONS, INTERPOLANTS, TIME_DENSITIES

    for registry in (INTERPOLANTS, DIFFUSIONS, SAMPLER_FAMILIES):
        assert len(set(registry)) == len(registry)
    assert set(TIME_DENSITIES) == {"uniform", "logit_normal"}


def test_no_pointer_to_documents_outside_the_repository():
    bad = []
    for p in [*PKG.rglob("*.py"), *PKG.rglob("*.md"), *(ROOT / "conf").rglob("*.yaml"), ROOT / "README.md",
              *(ROOT / "docs").rglob("*.md")]:
        text = p.read_text()
        for word in ("DESIGN.md", "STYLE habit", "STYLE.md", "../shared"):
            if word in text:
                bad.append(f"{p.relative_to(ROOT)}: {word}")
    assert not bad, bad
