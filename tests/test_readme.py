"""The README stays true: every setting is documented, the commands it names exist, CI runs its test command."""

import re
from pathlib import Path

from pixelflow.cli import build_parser
from pixelflow.settings import PixelFlowSettings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_with_its_default():
    for name, field in PixelFlowSettings.model_fields.items():
        row = next((line for line in README.splitlines() if line.startswith(f"| `PIXELFLOW_{name.upper()}` |")), None)
        assert row is not None, f"PIXELFLOW_{name.upper()} is not documented"
        default = field.default
        if isinstance(default, list):
            default = ",".join(map(str, default))
        if name != "scratch_dir":
            assert f"`{default}`" in row, (name, row)


def test_every_documented_command_exists():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    named = set(re.findall(r"`pixelflow ([a-z][a-z-]*)", README))
    assert named <= commands, named - commands


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./dev.sh test" in ci and "./dev.sh test" in README and "./dev.sh up" in README
