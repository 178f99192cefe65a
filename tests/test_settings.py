"""PixelFlow's settings: ``PIXELFLOW_*`` variables, layered without touching the environment."""

from __future__ import annotations

import os

from pixelflow.settings import PixelFlowSettings


def test_settings_overrides_leave_the_environment_alone(monkeypatch):
    """The local stack layers its own PIXELFLOW_* values over the environment while other
    threads (boto3 clients) read os.environ: reading them must not write it."""
    monkeypatch.setenv("PIXELFLOW_PRESET", "medium")
    monkeypatch.setenv("PIXELFLOW_CRF", "20")
    before = dict(os.environ)
    settings = PixelFlowSettings.from_env({"PIXELFLOW_CRF": "26", "PIXELFLOW_LADDER": "360,720",
                                           "PIXELFLOW_NOT_A_SETTING": "x", "AWS_REGION": "eu-west-1"})
    assert dict(os.environ) == before
    assert (settings.preset, settings.crf, settings.ladder) == ("medium", 26, [360, 720])
