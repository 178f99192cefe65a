"""The examples in PixelFlow's docstrings run."""

import doctest
import importlib

import pytest

MODULES = ["pixelflow.errors", "pixelflow.core.ids", "pixelflow.core.ladder", "pixelflow.core.probe",
           "pixelflow.core.hls", "pixelflow.core.manifest", "pixelflow.core.ffmpeg_args", "pixelflow.core.validation",
           "pixelflow.settings", "pixelflow.commands.transcode",
           "pixelflow.notifications", "pixelflow.commands.retry", "pixelflow.aws",
           "pixelflow.records", "pixelflow.api.auth", "pixelflow.api.errors", "pixelflow.api.uploads"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
