"""The study page in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

A rater opens an invitation link, answers every pair with a mix of clicks and keys, and the
database holds exactly those answers. Forged and missing tokens are refused, another rater's
CSRF token is refused, and script payloads in the title, the rater name, a method name and a
comment render as inert text. And the README's own commands: ``srseg study serve`` run from the
repository root with the default parameters serves the study images to a rater who answers a pair.

Without Chromium these tests skip on a developer's machine and fail on CI (``realparts.py``).
``SRSEG_CHROMIUM`` points at another browser binary (the CI-rule test uses it to simulate a
machine without one).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from realparts import require_executable, require_module

from srseg.config import load_params
from srseg.study.app import create_app
from srseg.study.bundle import build_study, load_study
from srseg.study.store import default_state_dir, open_store

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SRSEG_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN = "browser-admin-token-0123456789abcdef"
TITLE = "Study <script>alert('title')</script>"
NAME = "<img src=x onerror=alert('name')>"
METHOD = "<script>alert('method')</script>"
COMMENT = "</textarea><script>alert('comment')</script>"
ACTIONS = ("click-left", "ArrowRight", "1", "click-right", "ArrowLeft", "2")

LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")


@pytest.fixture(scope="session", autouse=True)
def chromium() -> Path:
    """The browser and its driver; checked first, before any fixture builds images."""
    require_module("playwright.sync_api", "pip install playwright (a test extra of pyproject.toml)")
    return require_executable(CHROMIUM, "apt-get install chromium, or `make browser` as root")


def sync_playwright():  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright as start

    return start()


@pytest.fixture()
def bundle(method_folders: dict[str, Path], tmp_path: Path) -> Path:
    methods = {"bicubic": method_folders["bicubic"], METHOD: method_folders["multitask"]}
    return build_study(
        methods,
        tmp_path / "study",
        hr_dir=method_folders["hr"],
        num_images=4,
        crop_size=64,
        attention_checks=2,
        seed=3,
        show_reference=True,
        title=TITLE,
    )


def _assert_inert(page, dialogs: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert dialogs == []
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("Array.from(document.scripts).every(s => s.src && !s.textContent.trim())")


@pytest.mark.timeout(180)
def test_rater_answers_every_pair_in_chromium(
    bundle: Path, tmp_path: Path, serve_app, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    study = load_study(bundle)
    app = create_app(bundle, tmp_path / "state", admin_token=ADMIN)
    store = app.extensions["srseg_study"].store
    ann, bob = store.create_invitations(2, names=[NAME, "bob"])
    answered: dict[str, str] = {}
    dialogs: list[str] = []

    with serve_app(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=30_000)
        try:
            context = browser.new_context()
            context.set_default_timeout(10_000)
            page = context.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

            # no token, forged token
            assert page.goto(f"{base}/study").status == 401
            page.goto(f"{base}/start#token=forged-token-value")
            page.wait_for_selector("#status.error")
            assert "not valid" in page.inner_text("#status")
            assert page.goto(f"{base}/study").status == 401

            # the invitation link; the token leaves the address bar
            page.goto(f"{base}/start#token={ann.token}")
            page.wait_for_url(f"{base}/study")
            assert ann.token not in page.url
            assert page.inner_text("#title") == TITLE and page.inner_text("#rater-name") == NAME
            _assert_inert(page, dialogs)

            for step in range(len(study.pairs)):
                page.wait_for_selector("#trial[data-ready='1']")
                pair_id = page.get_attribute("#trial", "data-pair-id")
                assert page.get_attribute("progress#progress", "value") == str(step)
                action = ACTIONS[step % len(ACTIONS)]
                side = "left" if action in ("click-left", "ArrowLeft", "1") else "right"
                with page.expect_navigation():
                    if action.startswith("click"):
                        page.click(f"#choose-{side}")
                    else:
                        page.keyboard.press(action)
                answered[pair_id] = side
            page.wait_for_selector("#thanks")
            assert page.url == f"{base}/thanks"
            page.fill("#comment", COMMENT)
            page.click("#send-comment")
            page.locator("#status", has_text="saved").wait_for()
            page.reload()
            assert page.input_value("#comment") == COMMENT
            _assert_inert(page, dialogs)

            # the database holds exactly what was clicked and pressed
            votes = store.votes(ann.rater_id)
            assert {v.pair_id: v.side for v in votes} == answered and len(votes) == len(study.pairs)
            assert all(v.choice == study.by_id[v.pair_id].method(v.side) for v in votes)
            assert all(v.response_ms is not None and 0 <= v.response_ms < 60_000 for v in votes)
            assert store.get_rater(ann.rater_id).comment == COMMENT

            # another rater's CSRF token, from inside ann's browser session
            bob_csrf = requests.post(f"{base}/api/session", json={"token": bob.token}, timeout=10).json()["csrf_token"]
            response = page.request.post(
                f"{base}/api/vote",
                data={"pair_id": study.pairs[0].id, "side": "left"},
                headers={"X-CSRF-Token": bob_csrf, "Content-Type": "application/json"},
            )
            assert response.status == 403
            assert (
                requests.post(
                    f"{base}/api/vote", json={"pair_id": study.pairs[0].id, "side": "left"}, timeout=10
                ).status_code
                == 401
            )
            assert store.votes(bob.rater_id) == []

            # the admin page shows the payloads as text
            admin = browser.new_context().new_page()
            admin.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            admin.goto(f"{base}/admin/login")
            admin.fill("#token", ADMIN)
            with admin.expect_navigation():
                admin.click("#login")
            assert admin.url == f"{base}/admin"
            assert NAME in admin.inner_text("#raters") and COMMENT in admin.inner_text("#raters")
            assert admin.locator("#method-pairs td.method", has_text=METHOD).count() == 1
            assert "&lt;script&gt;alert('method')&lt;/script&gt;" in admin.content()
            _assert_inert(admin, dialogs)
        finally:
            browser.close()
    assert ann.token not in caplog.text and bob.token not in caplog.text


# ----------------------------------------------------- the README's commands, from the repo root


def _srseg() -> list[str]:
    """The installed ``srseg`` script of this interpreter (what the README runs)."""
    script = Path(sys.executable).parent / "srseg"
    return [str(require_executable(script, "pip install -e . installs the srseg command"))]


def _wait_for_address(proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"srseg study serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            try:
                if requests.get(f"{found.group(1)}/healthz", timeout=2).status_code == 200:
                    return found.group(1)
            except requests.ConnectionError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"srseg study serve not answering after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.mark.timeout(180)
def test_study_serve_from_the_repository_root_serves_images(method_folders: dict[str, Path], tmp_path: Path) -> None:
    """``srseg study serve`` with the committed params.yaml (relative bundle path), run in a copy of
    the repository root: every image of the trial answers 200 and a rater answers one pair."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "profiles", root / "profiles")
    params = load_params(root / "params.yaml")
    bundle_rel = Path(params.study.output_dir) / "bundle"
    assert not bundle_rel.is_absolute()  # the default is what this test is about
    methods = {name: method_folders[name] for name in params.study.methods}
    build_study(
        methods, root / bundle_rel, hr_dir=method_folders["hr"], num_images=2, crop_size=64, attention_checks=1, seed=0
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith("SRSEG_STUDY_")}
    invite = subprocess.run(
        [*_srseg(), "study", "invite", "--count", "1", "--base-url", "http://placeholder.invalid"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert invite.returncode == 0, invite.stderr[-3000:]
    token = invite.stdout.strip().splitlines()[-1].split("#token=", 1)[1]

    log = tmp_path / "serve.log"
    with open(log, "wb") as handle:  # as in the README, with --port 0: the kernel picks a free port
        server = subprocess.Popen(
            [*_srseg(), "study", "serve", "--host", "127.0.0.1", "--port", "0"],
            cwd=root,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    statuses: list[tuple[str, int]] = []
    try:
        base = _wait_for_address(server, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=30_000)
            try:
                page = browser.new_context().new_page()
                page.set_default_timeout(20_000)
                page.on("response", lambda r: statuses.append((r.url, r.status)) if "/image/" in r.url else None)
                page.goto(f"{base}/start#token={token}")
                page.wait_for_url(f"{base}/study")
                page.wait_for_selector("#trial[data-ready='1']")  # set once both images decoded
                pair_id = page.get_attribute("#trial", "data-pair-id")
                assert page.evaluate("Array.from(document.querySelectorAll('main img')).every(i => i.naturalWidth > 0)")
                with page.expect_navigation():
                    page.click("#choose-left")
            finally:
                browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    assert len(statuses) >= 2 and all(status == 200 for _, status in statuses), statuses
    study = load_study(root / bundle_rel)
    votes = open_store(study.study_id, default_state_dir(root / bundle_rel)).votes()
    assert [(v.pair_id, v.side) for v in votes] == [(pair_id, "left")]
