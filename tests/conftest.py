"""Session-wide real services: a moto server (S3/SQS over HTTP) and a Prefect server (SQLite).

Both are started once per test session as real processes on loopback. The test process and
every process it starts (workers, bridges, containers) reach them through ``AWS_ENDPOINT_URL``
and ``PREFECT_API_URL``.

Tiers: a plain ``pytest`` runs the fast tier, every test without one of :data:`SLOW_MARKERS`;
``--all`` (what ``./dev.sh test`` passes), paths, ``-m`` or ``-k`` run what they select. A test
using the ``prefect_server`` fixture is marked ``prefect`` here.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: no network, quiet logs, a private home.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_COLORS"] = "false"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_var, None)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "_artifacts"


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pixelflow-session")


@pytest.fixture(scope="session")
def moto_server(session_dir):
    """A moto server; ``AWS_ENDPOINT_URL`` points at it for the whole session."""
    from pixelflow.local.processes import start_moto

    service = start_moto(log_dir=session_dir / "logs")
    os.environ["AWS_ENDPOINT_URL"] = service.url
    yield service.url
    service.stop()
    os.environ.pop("AWS_ENDPOINT_URL", None)


@pytest.fixture(scope="session")
def prefect_server(session_dir):
    """A real ``prefect server start`` (SQLite) for the session; ``PREFECT_API_URL`` points at it."""
    from pixelflow.local.processes import start_prefect_server

    home = session_dir / "prefect-home"
    service = start_prefect_server(home=home, log_dir=session_dir / "logs")
    os.environ["PREFECT_API_URL"] = service.url
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    # temporary_settings holds for this thread only; a thread a test starts (the API's server)
    # reads Prefect's global settings, built from the environment when Prefect was first imported
    # (by an earlier test, e.g. the doctests, before this server existed): rebuild them now.
    refresh_global_settings_context()
    with temporary_settings({PREFECT_API_URL: service.url, PREFECT_HOME: str(home)}):
        yield service.url
        try:  # send buffered logs and events while the server is still there
            from prefect._internal.concurrency.services import QueueService

            QueueService.drain_all(timeout=10)
        except Exception:
            pass
    service.stop()


@pytest.fixture
def buckets(moto_server, monkeypatch):
    """Fresh upload and output buckets for one test; PIXELFLOW_* point at them."""
    from pixelflow.aws import s3_client

    suffix = uuid.uuid4().hex[:8]
    upload, output = f"up-{suffix}", f"out-{suffix}"
    s3 = s3_client()
    s3.create_bucket(Bucket=upload)
    s3.create_bucket(Bucket=output)
    monkeypatch.setenv("PIXELFLOW_UPLOAD_BUCKET", upload)
    monkeypatch.setenv("PIXELFLOW_OUTPUT_BUCKET", output)
    return upload, output


CHROMIUM = os.environ.get("PIXELFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required", "--mute-audio"]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (skipped where it is not installed)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


def make_clip(path: Path, *, seconds: float = 3.0, size: str = "1280x720", rate: str = "30",
              audio: bool = True, extra_video_args: list[str] | None = None, vcodec: str = "libx264",
              pix_fmt: str = "yuv420p", vf: str | None = None) -> Path:
    """Generate a clip with FFmpeg's lavfi sources (testsrc2 video, sine audio)."""
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    if vf:
        args += ["-vf", vf]
    args += ["-c:v", vcodec, "-pix_fmt", pix_fmt]
    if vcodec == "libx264":
        args += ["-preset", "ultrafast"]
    args += extra_video_args or []
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k", "-shortest"]
    args.append(str(path))
    subprocess.run(args, check=True)
    return path


@pytest.fixture(scope="session")
def clip_720p(media_dir) -> Path:
    return make_clip(media_dir / "clip-720p.mp4", seconds=5, size="1280x720")


#: Markers of the slow tiers: what a plain ``pytest`` leaves out and ``./dev.sh test`` (``--all``) runs.
SLOW_MARKERS = ("prefect", "stack", "image", "browser", "bench")


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", dest="all_tiers",
                     help="run every tier (what ./dev.sh test and CI do); without it, a plain `pytest` with no "
                          f"paths, -m or -k runs the fast tier only (no {', '.join(SLOW_MARKERS)} tests)")


def fast_tier_only(config) -> bool:
    """True for a plain ``pytest``: no ``--all``, no paths, no ``-m``, no ``-k``.

    Naming a file or a node, or choosing tests by marker or keyword, runs what was chosen whatever
    its tier.
    """
    sources = (pytest.Config.ArgsSource.TESTPATHS, pytest.Config.ArgsSource.INVOCATION_DIR)
    return not (config.getoption("all_tiers") or config.args_source not in sources
                or config.getoption("markexpr") or config.getoption("keyword"))


def pytest_report_header(config):
    if fast_tier_only(config):
        return (f"fast tier: tests marked {', '.join(SLOW_MARKERS)} are deselected; "
                "./dev.sh test (pytest --all) runs every tier")
    return None


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    # A test that starts a Prefect server (the fixture, or a fixture built on it) belongs to the
    # `prefect` tier: the server takes about 10 s to start and the flow runs a few seconds each.
    for item in items:
        if "prefect_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.prefect)
    if fast_tier_only(config):
        fast, slow = [], []
        for item in items:
            (slow if any(item.get_closest_marker(name) for name in SLOW_MARKERS) else fast).append(item)
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = fast
