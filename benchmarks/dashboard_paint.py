"""The teacher's dashboard's time to first paint with 500 queued jobs (issue 11, benchmarks).

Starts a roster server on loopback (the null engine, 20 students), lets 24 jobs finish (the
gallery), pauses the queue and submits 500 more over HTTP, then prints:

- the server's render time of ``GET /_fluxnb/dashboard`` and of the 1-second poll
  ``GET /_fluxnb/dashboard/state`` (median and worst of ``--repeat`` requests), and the page size;
- when playwright and /usr/bin/chromium are there: Chromium's first contentful paint and
  DOMContentLoaded of the dashboard (median and worst of ``--repeat`` fresh loads).

    python benchmarks/dashboard_paint.py [--jobs 500] [--repeat 10]

Not part of the test suite: it prints measured numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fluxnb.server import BackgroundServer, ServerConfig  # noqa: E402
from fluxnb.server.auth import new_roster, write_roster  # noqa: E402
from tests.server.test_server_contract import SUBMIT, body  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PAINT = """() => {
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  return {fcp: fcp ? fcp.startTime : null, dcl: nav.domContentLoadedEventEnd, resp: nav.responseEnd,
          rows: document.querySelectorAll('#queue-rows tr').length};
}"""


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values):7.1f} ms, worst {max(values):7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="queued jobs on the dashboard")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    people = new_roster(20, teachers=1)
    students, teacher = people[:-1], people[-1]
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(engine="null", port=0, workers=1, max_queue=args.jobs + 100,
                              max_queued=args.jobs, roster=str(write_roster(Path(tmp) / "r.csv", people)))
        server = BackgroundServer(config).start()
        try:
            with httpx.Client(base_url=server.base_url, timeout=30) as client:
                def submit(i: int) -> None:
                    person = students[i % len(students)]
                    r = client.post(SUBMIT, json=body(prompt=f"job {i}: a <b>fox</b> & an owl"),
                                    headers={"Authorization": f"Key {person.token}"})
                    r.raise_for_status()

                for i in range(24):
                    submit(i)
                deadline = time.monotonic() + 60
                while server.service.stats["queued"] + server.service.stats["running"] and \
                        time.monotonic() < deadline:
                    time.sleep(0.05)
                server.service.pause()
                for i in range(args.jobs):
                    submit(24 + i)
                teach = {"Authorization": f"Key {teacher.token}"}
                page, state = [], []
                size = 0
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = client.get("/_fluxnb/dashboard", headers=teach)
                    page.append((time.perf_counter() - t) * 1000)
                    size = len(r.content)
                    t = time.perf_counter()
                    client.get("/_fluxnb/dashboard/state", headers=teach).raise_for_status()
                    state.append((time.perf_counter() - t) * 1000)
            print(f"dashboard with {args.jobs} queued jobs, 24 results, {len(students)} students")
            print(f"  server: GET /_fluxnb/dashboard        {_ms(page)} ({size / 1024:.0f} KiB)")
            print(f"  server: GET /_fluxnb/dashboard/state  {_ms(state)}")
            _chromium(server.base_url, teacher.token, args.repeat)
        finally:
            server.stop()


def _chromium(base_url: str, token: str, repeat: int) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("  chromium: playwright not installed (server render time only)")
        return
    if not Path(CHROMIUM).exists():
        print(f"  chromium: {CHROMIUM} not found (server render time only)")
        return
    fcp, dcl, resp, baseline = [], [], [], []
    rows = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(extra_http_headers={"Authorization": f"Key {token}"})
            for _ in range(repeat):
                page = context.new_page()
                page.goto(base_url + "/_fluxnb/dashboard", wait_until="load")
                page.wait_for_function("() => performance.getEntriesByName("
                                       "'first-contentful-paint').length > 0")
                got = page.evaluate(PAINT)
                fcp.append(got["fcp"])
                dcl.append(got["dcl"])
                resp.append(got["resp"])
                rows = got["rows"]
                page.close()
                page = context.new_page()  # the login page: what any page costs here
                page.goto(base_url + "/_fluxnb/login", wait_until="load")
                page.wait_for_function("() => performance.getEntriesByName("
                                       "'first-contentful-paint').length > 0")
                baseline.append(page.evaluate(PAINT)["fcp"])
                page.close()
        finally:
            browser.close()
    print(f"  chromium: first contentful paint       {_ms(fcp)} ({rows} queue rows)")
    print(f"  chromium: the login page's FCP          {_ms(baseline)} (baseline: a near-empty page)")
    print(f"  chromium: last byte of the page         {_ms(resp)}")
    print(f"  chromium: DOMContentLoaded              {_ms(dcl)}")


if __name__ == "__main__":
    main()
