"""One registry helper for data sets and models: `name` -> (config dataclass, entry function) of
the module that declares it. A module declares its names in a module-level literal

    REGISTERED = {"fcn": ("FCNConfig", "build")}      # name: (config class, builder / loader)

which `discover` reads from the source without importing it: modules are imported on first use,
so a run without graphs never imports torch_geometric. Adding a model is one file plus its YAML.
"""
from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def discover(package: str) -> dict[str, tuple[str, str, str]]:
    """name -> (module, config class, entry function) of every REGISTERED in `package`."""
    root = Path(importlib.import_module(package).__file__).parent
    found: dict[str, tuple[str, str, str]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "REGISTERED" for t in node.targets):
                for name, (schema, entry) in ast.literal_eval(node.value).items():
                    if name in found:
                        raise ValueError(f"{package}: {name!r} is registered by {found[name][0]} and {module}")
                    found[name] = (module, schema, entry)
    return found


@functools.lru_cache(maxsize=None)
def schema_node(schema):
    """The schema as a structured config, built once (merge copies it; it is never mutated)."""
    return OmegaConf.structured(schema)


class Registry:
    def __init__(self, field: str, entries: dict[str, tuple[str, str, str]]):
        self.field, self.entries = field, entries        # field: "model.name", "dataset.name"

    def module(self, name: str):
        if name not in self.entries:
            raise ValueError(f"{self.field}={name!r} is unknown; allowed: {sorted(self.entries)}")
        return importlib.import_module(self.entries[name][0])

    def entry(self, name: str):
        """(config dataclass, entry function) of `name`."""
        mod = self.module(name)
        _, schema, function = self.entries[name]
        return getattr(mod, schema), getattr(mod, function)

    def schema(self, name: str):
        return self.entry(name)[0]

    def validate(self, cfg: DictConfig) -> DictConfig:
        """Merge `cfg` onto its schema: raises with the offending key/value on a mismatch."""
        return OmegaConf.merge(schema_node(self.schema(cfg.name)), cfg)
