"""The teacher's dashboard in a real browser (Debian's Chromium driven by playwright): a teacher
logs in through the form, two students submit jobs over HTTP, both appear live without a reload,
the teacher cancels one with its button and it shows as cancelled (the server agrees); a student's
login gets 403 on the dashboard. A screenshot goes to /tmp/dashboard.png for a human to look at.

Skipped when Chromium/playwright are missing, unless ``FLUXNB_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fluxnb.server import BackgroundServer
from fluxnb.server.auth import Person, new_roster, write_roster
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, require_browser

from .test_server_contract import SUBMIT, body

pytestmark = pytest.mark.slow

SHOT = Path("/tmp/dashboard.png")
EVIL = "<script>alert(1)</script> an owl at dusk"


def submit(server: BackgroundServer, person: Person, prompt: str) -> dict[str, str]:
    r = httpx.post(server.base_url + SUBMIT, json=body(prompt=prompt, num_inference_steps=20),
                   headers={"Authorization": f"Key {person.token}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_teacher_sees_two_students_jobs_live_and_cancels_one(
        tmp_path: Path, server_factory: Callable[..., BackgroundServer]) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    ada, bob, teacher = people = new_roster(2, teachers=1)
    # one worker and 4 s a job: the last job stays queued while the teacher clicks
    server = server_factory(engine="null", roster=str(write_roster(tmp_path / "r.csv", people)),
                            workers=1, engine_options={"delay": 4.0})
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(server.base_url + "/_fluxnb/dashboard")
            assert page.url.endswith("/_fluxnb/login?next=/_fluxnb/dashboard")
            page.fill("#token", teacher.token)
            page.click("button[type=submit]")
            page.wait_for_url("**/_fluxnb/dashboard")
            assert teacher.token not in page.content() and teacher.token not in page.url
            page.evaluate("() => { window.notReloaded = true; }")

            first = submit(server, ada, "a red fox in the snow")["request_id"]
            owl = submit(server, bob, EVIL)["request_id"]
            cancelled = submit(server, ada, "a lighthouse, watercolour")
            last = cancelled["request_id"]
            page.wait_for_selector(f'#running-rows tr[data-id="{first}"]')
            page.wait_for_selector(f'#queue-rows tr[data-id="{owl}"]')
            row = page.wait_for_selector(f'#queue-rows tr[data-id="{last}"]')
            assert row is not None and "student01" in row.inner_text()
            assert EVIL in page.inner_text(f'#queue-rows tr[data-id="{owl}"]')  # shown as text
            assert page.evaluate("() => window.notReloaded") is True  # live, not reloaded

            page.click(f'#queue-rows tr[data-id="{last}"] button[data-action=cancel]')
            page.wait_for_selector(f'#finished-rows tr.cancelled[data-id="{last}"]')
            assert page.query_selector(f'#queue-rows tr[data-id="{last}"]') is None
            assert "CANCELLATION_REQUESTED" in page.inner_text("#notice")
            job = server.service.get(last)
            assert job is not None and job.error_type == "request_cancelled"
            status = httpx.get(cancelled["status_url"],
                               headers={"Authorization": f"Key {ada.token}"}).json()
            assert status["status"] == "COMPLETED" and status["error_type"] == "request_cancelled"

            page.wait_for_selector("#gallery img", timeout=30_000)  # the first job's result
            page.wait_for_function("() => [...document.querySelectorAll('#gallery img')]"
                                   ".every((i) => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(SHOT), full_page=True)
            assert dialogs == []  # the prompt's <script> never ran

            student = browser.new_page()
            student.goto(server.base_url + "/_fluxnb/login")
            student.fill("#token", ada.token)
            student.click("button[type=submit]")
            student.wait_for_url("**/_fluxnb/gallery")
            answer = student.goto(server.base_url + "/_fluxnb/dashboard")
            assert answer is not None and answer.status == 403
            assert "Teachers only" in student.content()
        finally:
            browser.close()
