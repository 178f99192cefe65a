"""The examples in PixelFlow's docstrings run: every module of ``pixelflow``, ``flows``, ``tasks``
and ``bench`` whose source has one (``>>>``), found at collection time rather than listed by hand.

Modules without an example are not imported (``bench/__main__.py`` would run the benchmark).
"""

from __future__ import annotations

import doctest
import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pixelflow", "flows", "tasks", "bench")


def modules_with_examples() -> list[str]:
    """Dotted names of the modules under :data:`PACKAGES` whose source contains ``>>>``."""
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__main__.py" and ">>> " in path.read_text(encoding="utf-8"):
                parts = path.relative_to(ROOT).with_suffix("").parts
                names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = modules_with_examples()


def test_the_examples_are_found_without_a_list():
    assert {"pixelflow.core.ladder", "pixelflow.settings", "pixelflow.commands.transcode"} <= set(MODULES)
    assert not [name for name in MODULES if name.endswith("__main__")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    examples = sum(len(test.examples) for test in doctest.DocTestFinder().find(module))
    assert examples > 0, f"{name} has '>>> ' in its source but no example doctest can find"
    environ = dict(os.environ)
    try:
        result = doctest.testmod(module)
    finally:  # an example may set a variable (pixelflow.settings does, and removes it again)
        os.environ.clear()
        os.environ.update(environ)
    assert result.failed == 0
