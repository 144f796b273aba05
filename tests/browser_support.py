"""JupyterLab on loopback for the real-browser tests (Debian's Chromium driven by playwright).

The recipe is the one in ``../shared/docs/notebooks.md`` §3: temp config/runtime/root dirs, a
token, ``expose_app_in_browser`` (so tests can reach ``window.jupyterapp``), the announcements
extension disabled and no update checks.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import eventually, free_port, terminate

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "KERNEL_EVAL", "KERNEL_IDLE", "JupyterLab", "open_notebook",
           "require_browser"]

CHROMIUM = "/usr/bin/chromium"
#: From the research doc: headless in a container, no background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def require_browser() -> None:
    """Skip when Chromium, playwright or JupyterLab is missing, unless FLUXNB_REQUIRE_BROWSER=1
    (CI sets it): then that is a failure."""
    problems = []
    if not Path(CHROMIUM).exists():
        problems.append(f"{CHROMIUM} not found (apt-get install chromium)")
    for module in ("playwright", "jupyterlab"):
        try:
            __import__(module)
        except ImportError:
            problems.append(f"python package {module!r} not installed")
    if problems:
        reason = "real-browser test needs: " + "; ".join(problems)
        if os.environ.get("FLUXNB_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (FLUXNB_REQUIRE_BROWSER=1)")
        pytest.skip(reason)


@dataclass
class JupyterLab:
    """A JupyterLab server serving ``root``; stop it with :meth:`stop`."""

    root: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, notebook: str) -> str:
        return f"{self.base_url}/lab/tree/{notebook}?reset&token={self.token}"

    @classmethod
    def start(cls, root: Path, work: Path, *, timeout: float = 60.0) -> JupyterLab:
        config, runtime = work / "jupyter-config", work / "jupyter-runtime"
        (config / "labconfig").mkdir(parents=True, exist_ok=True)
        runtime.mkdir(parents=True, exist_ok=True)
        # no "Would you like to get notified about official Jupyter news?" toast
        (config / "labconfig" / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(runtime),
               "JUPYTER_PLATFORM_DIRS": "1", "PYTHONUNBUFFERED": "1"}
        port, token = free_port(), secrets.token_hex(16)
        log_path = work / "jupyterlab.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                 "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
                 f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
                 "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                 f"--LabServerApp.workspaces_dir={work / 'workspaces'}"],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        lab = cls(root, port, token, process, log_path)

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"jupyterlab exited ({process.returncode}): {lab.log_tail()}")
            try:
                return httpx.get(f"{lab.base_url}/api/status", params={"token": token},
                                 timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            eventually(answers, timeout, interval=0.25)
        except AssertionError:
            lab.stop()
            raise RuntimeError(f"jupyterlab did not answer in {timeout} s: {lab.log_tail()}") from None
        return lab

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Ask the server to shut down (it stops its kernels), then terminate it."""
        if self.process.poll() is None:
            try:
                httpx.post(f"{self.base_url}/api/shutdown", params={"token": self.token}, timeout=5)
                self.process.wait(10)
            except (httpx.HTTPError, subprocess.TimeoutExpired):
                terminate(self.process)


#: run `code` in the open notebook's kernel and return its `text/plain` result (or "Name: message" on an
#: error): what the kernel holds, which the page may not show yet
KERNEL_EVAL = """async (code) => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  let out = null;
  const f = k.requestExecute({code, silent: false, store_history: false});
  f.onIOPub = (msg) => {
    if (msg.header.msg_type === 'execute_result') out = msg.content.data['text/plain'];
    if (msg.header.msg_type === 'error') out = msg.content.ename + ': ' + msg.content.evalue;
  };
  await f.done;
  return out;
}"""

#: true once the open notebook's kernel is idle
KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""


@contextmanager
def open_notebook(root: Path, work: Path, notebook: str, *, failure_shot: Path | None = None,
                  viewport: tuple[int, int] = (1280, 1400)) -> Iterator[Any]:
    """JupyterLab on loopback serving ``root``, Chromium (playwright) with ``notebook`` open and
    its kernel idle: yields the page; on a failure saves ``failure_shot`` and prints Lab's log."""
    from playwright.sync_api import sync_playwright

    lab = JupyterLab.start(root, work)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.set_default_timeout(30_000)
                page.goto(lab.url(notebook))
                page.wait_for_function(KERNEL_IDLE, timeout=45_000)
                try:
                    yield page
                except Exception:
                    if failure_shot is not None:
                        page.screenshot(path=str(failure_shot))
                    raise
            finally:
                browser.close()
    except Exception:
        print(lab.log_tail())
        raise
    finally:
        lab.stop()
