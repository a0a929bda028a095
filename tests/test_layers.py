"""The dependency graph points one way (docs/ARCHITECTURE.md): a module may import its own layer
or a lower one, never a higher one. Imports inside functions count: a lazy import that reaches
up hides a circle just the same."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("data", "models", "experiments", "hydra_plugins")

# lowest first; a module's layer is that of its longest matching prefix
LAYERS = [
    ("config", ["data.paths", "data.registry"]),
    ("data, models", ["data", "models"]),
    ("schema", ["experiments.schema", "experiments.identity", "experiments.config_errors"]),
    ("regimes", ["experiments.regimes"]),
    ("training step", ["experiments.train", "experiments.steps"]),
    ("lifecycle", ["experiments.lifecycle", "experiments.records",
                   "experiments.provenance", "experiments.devices", "experiments.loggers",
                   "experiments.stack_run", "experiments.run", "experiments.analysis"]),
    ("planning", ["experiments.plan", "experiments.tables", "experiments.claims",
                  "experiments.publish", "experiments.stats", "experiments.demo"]),
    ("sweeper", ["hydra_plugins"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def layer_of(module: str) -> int:
    """Index into LAYERS. The `experiments` package itself (it registers the config resolvers)
    is lifecycle-level; other experiments modules that no layer names are planning-level."""
    names = [name for name, _ in LAYERS]
    if module == "experiments":
        return names.index("lifecycle")
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS)
               for prefix in prefixes if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else names.index("planning")


def imported(module: str, tree: ast.AST) -> set[str]:
    """Project modules `module` imports anywhere (module level or inside functions)."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def upward_imports() -> list[str]:
    bad = []
    for module, path in sorted(MODULES.items()):
        for target in sorted(imported(module, ast.parse(path.read_text(), str(path)))):
            if layer_of(target) > layer_of(module):
                bad.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]})")
    return bad


def test_no_layer_imports_a_higher_one():
    assert upward_imports() == []


def test_the_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    tree = ast.parse("def f():\n    from experiments.plan import plan_jobs\n")
    assert "experiments.plan" in imported("experiments.lifecycle", tree)
    assert layer_of("experiments.plan") > layer_of("experiments.lifecycle")


def test_layers_follow_the_issue_order():
    order = ["data.paths", "models.fcn", "experiments.schema", "experiments.regimes.base",
             "experiments.train", "experiments.lifecycle", "experiments.plan.jobs",
             "hydra_plugins.grid_sweeper.grid_sweeper"]
    assert [layer_of(m) for m in order] == sorted(layer_of(m) for m in order)
    assert layer_of("experiments.tables.jobs") == layer_of("experiments.plan")
