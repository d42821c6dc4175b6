"""Imports run one way: no module imports one from a higher layer (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hamacho"
# Lowest first. A module may import from its own layer and the layers below it, never from above.
LAYERS = [
    ["hamacho", "hamacho.errors", "hamacho.setting_fields", "hamacho.model_settings", "hamacho.settings", "hamacho.framing_checks", "hamacho.files", "hamacho.progress",
     "hamacho.resources"],
    ["hamacho.data"],
    ["hamacho.post"],
    ["hamacho.models"],
    ["hamacho.config", "hamacho.config_reference"],
    ["hamacho.model_file", "hamacho.runtimes", "hamacho.predictor"],
    ["hamacho.results"],
    ["hamacho.report"],
    ["hamacho.train", "hamacho.inference", "hamacho.export"],
    # the Ray engine of `hamacho inference --engine ray`: over the inference run (options.py alone is torch- and
    # Ray-free, for the CLI)
    ["hamacho.ray_engine"],
    # the service, bottom up: settings and migrations; tables, files and bodies; leases and the data folder's
    # marker; one job and model files; a worker's loop and a replica's sync; `hamacho worker`; the shared state, its refusals and
    # the request's dependencies; what requests do (no HTTP); the routers; the app; starting it
    ["hamacho.serve.service_config", "hamacho.serve.schema_upgrade", "hamacho.serve.migrations"],
    ["hamacho.serve.db", "hamacho.serve.storage", "hamacho.serve.schemas"],
    ["hamacho.serve.job_lease", "hamacho.serve.data_marker"],
    ["hamacho.serve.worker", "hamacho.serve.predictors", "hamacho.serve.model_files", "hamacho.serve.weights_check"],
    ["hamacho.serve.job_queue", "hamacho.serve.replicas"],
    ["hamacho.serve.worker_main"],
    ["hamacho.serve.service", "hamacho.serve.deps"],
    ["hamacho.serve.image_catalog", "hamacho.serve.model_catalog", "hamacho.serve.job_catalog",
     "hamacho.serve.threshold_versions", "hamacho.serve.inspection_log", "hamacho.serve.reviewed_images",
     "hamacho.serve.prediction_store"],
    ["hamacho.serve.routes"],
    ["hamacho.serve.app"],
    ["hamacho.serve", "hamacho.serve.server"],
    ["hamacho.cli_options", "hamacho.cli_cluster"],
    ["hamacho.cli", "hamacho.__main__"],
]


def layer_of(module: str) -> int:
    """Index of the layer owning ``module`` (the longest matching prefix wins)."""
    best, index = "", -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, index = name, i
    assert index >= 0, f"{module} is in no layer: add it to LAYERS"
    return index


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "hamacho"}


def upward_imports(path: Path, module: str) -> list[str]:
    """``"<module> imports <target>"`` for each import of ``path`` from a higher layer than ``module``'s."""
    own = layer_of(module)
    targets = {imported if _is_module(imported) else imported.rsplit(".", 1)[0] for imported in imports_of(path)}
    return [f"{module} imports {target}" for target in sorted(targets) if layer_of(target) > own]


def test_imports_only_go_down_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts == ("hamacho", "__init__"):
            continue  # the public facade: `hamacho.Predictor` is imported from above on first use, on purpose
        wrong += upward_imports(path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert wrong == []


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def test_the_layer_check_catches_an_upward_import(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text("import numpy\nfrom hamacho.post.sweep import sweep\nfrom hamacho.report.html import write_report\n"
                    "from hamacho.report import plots\n")
    assert upward_imports(fake, "hamacho.results.fake") == ["hamacho.results.fake imports hamacho.report",
                                                            "hamacho.results.fake imports hamacho.report.html",
                                                            "hamacho.results.fake imports hamacho.report.plots"]
    assert upward_imports(fake, "hamacho.report.fake") == []
