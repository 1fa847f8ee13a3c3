"""Importing keras_byol has no side effects and exposes the fixed public names."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import keras
policy, seed_gen = keras.config.dtype_policy().name, keras.config.floatx()
import keras_byol
assert keras.config.dtype_policy().name == policy == "float32", keras.config.dtype_policy()
assert keras.config.floatx() == seed_gen
import sys
assert "keras_byol.backends.tensorflow" not in sys.modules  # loaded by the first train step
assert "keras_byol.data" not in sys.modules and "keras_byol.export" not in sys.modules
assert "keras_byol.plots" not in sys.modules
assert keras_byol.augment.two_views and keras_byol.data.pretrain_dataset  # lazy, on use
assert keras_byol.distribute.make_strategy and keras_byol.plots.plot_history
for name in ("BYOL", "losses", "schedules", "optimizers", "encoders", "heads", "callbacks",
             "monitors", "evaluation"):
    assert hasattr(keras_byol, name), name
assert callable(keras_byol.losses.regression_loss) and callable(keras_byol.losses.byol_loss)
assert callable(keras_byol.schedules.target_decay) and keras_byol.schedules.WarmupCosine
assert keras_byol.optimizers.LARS and keras_byol.heads.MLPHead and keras_byol.callbacks.TargetUpdate
print("ok")
"""


def test_import_has_no_side_effects_and_public_names():
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


# ------------------------------------------------------------------- the import graph
PACKAGE = ROOT / "keras_byol"
# Third-party packages a keras_byol module may need that the core does not: TensorFlow is
# optional on the JAX backend, tensorflow-datasets and matplotlib are optional everywhere.
OPTIONAL = ("tensorflow", "tensorflow_datasets", "matplotlib")
# Entry points that import another entry point for its absl flags: importing it defines
# them, so it happens only when the program runs.
FLAG_IMPORTS = {("keras_byol.ablation", "keras_byol.train")}


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree, module):
    """(imported name, at module level?) of every import in `tree`."""
    found = []

    def visit(node, top):
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module.rsplit(".", child.level)[0]
                    base = f"{package}.{base}" if base else package
                found.extend((f"{base}.{alias.name}", top) for alias in child.names)
            visit(child, inner)

    visit(tree, True)
    return found


def _graph():
    """{module: [(imported keras_byol module or third-party name, at module level?)]}."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        edges = []
        for name, top in _imports(ast.parse(path.read_text()), module):
            if name.startswith("keras_byol"):
                while name not in files:  # `from module import name` names the module
                    name = name.rpartition(".")[0]
                if name != module:
                    edges.append((name, top))
            else:
                edges.append((name.split(".")[0], top))
        graph[module] = sorted(set(edges))
    return graph


def _cycle(graph):
    """One import circle through keras_byol modules (any import, in a function too), or None."""
    state, stack = {}, []

    def walk(module):
        state[module] = "open"
        stack.append(module)
        for target, _ in graph.get(module, ()):
            if target not in graph:
                continue
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := walk(target)):
                return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := walk(module)):
            return found
    return None


def _needs_optional(graph):
    """keras_byol modules whose module-level imports reach an OPTIONAL package."""
    needs = set()
    changed = True
    while changed:
        changed = False
        for module, edges in graph.items():
            if module in needs:
                continue
            if any(top and (t in OPTIONAL or t in needs) for t, top in edges):
                needs.add(module)
                changed = True
    return needs


def test_the_package_has_no_import_circle():
    graph = _graph()
    assert "keras_byol.model" in graph and len(graph) > 20
    assert _cycle(graph) is None, " → ".join(_cycle(graph))


def test_the_circle_check_finds_a_circle():
    graph = _graph()
    graph["keras_byol.losses"] = graph["keras_byol.losses"] + [("keras_byol.model", False)]
    assert _cycle(graph) is not None


def test_function_level_imports_only_defer_an_optional_dependency():
    """A keras_byol module imported inside a function is one that needs TensorFlow,
    tensorflow-datasets or matplotlib, imported from a module that does not (so that the
    importer works without it), or an entry point's flags (FLAG_IMPORTS)."""
    graph = _graph()
    needs = _needs_optional(graph)
    assert {"keras_byol.data", "keras_byol.export", "keras_byol.backends.tensorflow"} <= needs
    assert "keras_byol.model" not in needs and "keras_byol.views" not in needs
    deferred = [
        (module, target)
        for module, edges in graph.items()
        for target, top in edges
        if not top and target.startswith("keras_byol")
    ]
    assert deferred, "the check would find nothing"
    wrong = [
        (module, target)
        for module, target in deferred
        if (module, target) not in FLAG_IMPORTS and (target not in needs or module in needs)
    ]
    assert not wrong, wrong
