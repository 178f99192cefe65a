"""The folders say what depends on what (the README's "Where things live"): each layer imports
only the layers below it, and the pure core imports neither Prefect nor boto3."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("pixelflow.errors", "pixelflow.settings", "pixelflow.aws", "pixelflow.records", "pixelflow.outbox",
          "pixelflow.webhooks")

#: folder -> the PixelFlow modules it may import (besides its own), and third-party roots it may not.
LAYERS = {
    "pixelflow/core": (("pixelflow.core", "pixelflow.errors"), ("prefect", "boto3", "botocore")),
    "pixelflow/pipeline": (("pixelflow.core",) + SHARED, ()),
    "tasks": (("pixelflow.core", "pixelflow.pipeline", "tasks") + SHARED, ()),
    "flows": (("pixelflow.core", "pixelflow.pipeline", "tasks", "flows") + SHARED, ()),
    "pixelflow/ops": (("pixelflow.core", "pixelflow.pipeline", "pixelflow.ops") + SHARED, ()),
    "pixelflow/player": (("pixelflow.core", "pixelflow.ops", "pixelflow.player") + SHARED, ()),
}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "pixelflow")
    return names


def within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(folder):
    allowed, forbidden = LAYERS[folder]
    wrong = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imports(path):
            own = name.split(".")[0] in ("pixelflow", "tasks", "flows") and name != "pixelflow"
            if (own and not within(name, allowed)) or within(name, forbidden):
                wrong.setdefault(str(path.relative_to(ROOT)), []).append(name)
    assert wrong == {}


_RESOLVE = """
import ast, importlib, sys
from pathlib import Path
root = Path(sys.argv[1])
for folder in ("pixelflow", "tasks", "flows", "bench"):
    for path in sorted((root / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] in ("pixelflow", "tasks", "flows", "bench")):
                continue
            try:
                module = importlib.import_module(node.module)
            except ImportError as exc:
                print(f"{path.relative_to(root)}: {node.module} ({exc})")
                continue
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        print(f"{path.relative_to(root)}: {node.module}.{alias.name}")
"""


def test_every_import_of_our_own_modules_resolves():
    """Imports inside functions run only when the function does: check every one of them here
    (in a process of its own: importing every module must not change this session's settings)."""
    import subprocess
    import sys

    found = subprocess.run([sys.executable, "-c", _RESOLVE, str(ROOT)], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.splitlines() == []
