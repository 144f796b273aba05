"""The HTML of the teacher's dashboard, the gallery and the login page: pure functions from plain
dicts (built by :mod:`fluxnb.server.dashboard`) to escaped HTML.

Every user-given string (names, prompts, error texts) goes through :func:`html.escape`; the pages
load one script and one stylesheet from the server itself (``/_fluxnb/pages/...``), so they work
offline and a strict Content-Security-Policy (no inline script) holds.

>>> row = {"id": "r1", "owner": "ada", "prompt": "<script>x</script>", "size": "512x512",
...        "steps": 28, "images": 1, "seconds": 3.2, "position": 0}
>>> "<script>x" in queue_rows([row]), "&lt;script&gt;x" in queue_rows([row])
(False, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from importlib import resources
from typing import Any

__all__ = ["ASSETS", "dashboard_page", "dashboard_sections", "gallery_page", "gallery_sections",
           "login_page", "message_page", "queue_rows"]

#: The static files the pages load, by name: (text, content type).
ASSETS: Mapping[str, tuple[str, str]] = {
    name: (resources.files(__name__).joinpath(name).read_text(encoding="utf-8"), kind)
    for name, kind in (("dashboard.js", "text/javascript; charset=utf-8"),
                       ("style.css", "text/css; charset=utf-8"))}

_ASSET_URL = "/_fluxnb/pages/"
_MAX_ROWS = 150  # queue rows shown (the next to run); the rest are counted


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return ""
    s = int(value)
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{value:.1f}s"


def _page(title: str, body: str, *, csrf: str = "", state_url: str = "",
          who: str | None = None) -> str:
    nav = ""
    if who is not None:
        nav = (f'<nav><span class="who">{_e(who)}</span>'
               '<a href="/_fluxnb/gallery">Gallery</a>'
               '<form method="post" action="/_fluxnb/logout">'
               '<button type="submit" class="link">Log out</button></form></nav>')
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"fluxnb-csrf\" content=\"{_e(csrf)}\">"
            f"<meta name=\"fluxnb-state\" content=\"{_e(state_url)}\">"
            f"<title>{_e(title)}</title>"
            f"<link rel=\"stylesheet\" href=\"{_ASSET_URL}style.css\">"
            f"<script src=\"{_ASSET_URL}dashboard.js\" defer></script></head>"
            f"<body><header><h1>{_e(title)}</h1>{nav}</header>"
            f"<p id=\"notice\" role=\"status\" hidden></p>{body}</body></html>\n")


def _button(label: str, action: str, **data: Any) -> str:
    attrs = "".join(f' data-{k}="{_e(v)}"' for k, v in data.items())
    return f'<button type="button" data-action="{_e(action)}"{attrs}>{_e(label)}</button>'


def _prompt(text: Any) -> str:
    full = "" if text is None else str(text)
    short = full if len(full) <= 120 else full[:117] + "..."
    return f'<td class="prompt" title="{_e(full)}">{_e(short)}</td>'


def queue_rows(rows: Sequence[Mapping[str, Any]], *, running: bool = False) -> str:
    """The ``<tr>`` rows of the queue (or running) table, each with its Cancel button."""
    out = []
    for r in rows[:_MAX_ROWS]:
        first = "" if running else f'<td class="num">{int(r.get("position") or 0) + 1}</td>'
        out.append(f'<tr data-id="{_e(r["id"])}">{first}<td>{_e(r.get("owner"))}</td>'
                   f'{_prompt(r.get("prompt"))}<td>{_e(r.get("size"))}</td>'
                   f'<td class="num">{_e(r.get("steps"))}</td><td class="num">{_e(r.get("images"))}</td>'
                   f'<td class="num">{_seconds(r.get("seconds"))}</td>'
                   f'<td>{_button("Cancel", "cancel", id=r["id"])}</td></tr>')
    if len(rows) > _MAX_ROWS:
        out.append(f'<tr><td colspan="8" class="more">... and {len(rows) - _MAX_ROWS} more</td></tr>')
    if not rows:
        out.append(f'<tr><td colspan="8" class="empty">{"Nothing running" if running else "Queue empty"}'
                   '</td></tr>')
    return "".join(out)


def _table(head: Iterable[str], rows: str, tbody_id: str) -> str:
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table><thead><tr>{ths}</tr></thead><tbody id="{tbody_id}">{rows}</tbody></table>'


def _limit(used: Any, limit: Any, unit: str = "") -> str:
    if not isinstance(used, int | float):
        used = 0
    text = f"{used:g}{unit}" if isinstance(used, float) else f"{used}{unit}"
    if limit is None:
        return _e(text)
    over = " over" if isinstance(limit, int | float) and used >= limit else ""
    return f'<span class="limit{over}">{_e(text)} / {_e(limit)}{_e(unit)}</span>'


def _round(value: Any, digits: int) -> float:
    return round(float(value), digits) if isinstance(value, int | float) else 0.0


def _usage_rows(usage: Sequence[Mapping[str, Any]], paused_owners: set[str]) -> str:
    out = []
    for u in usage:
        name = str(u["owner"])
        held = name in paused_owners
        action = _button("Resume", "resume", owner=name) if held else _button("Pause", "pause", owner=name)
        out.append(f'<tr data-owner="{_e(name)}"><td>{_e(name)}{" (paused)" if held else ""}</td>'
                   f'<td class="num">{_limit(u.get("queued"), u.get("max_queued"))}</td>'
                   f'<td class="num">{_e(u.get("running", 0))}</td>'
                   f'<td class="num">{_e(u.get("completed", 0))}</td>'
                   f'<td class="num">{_e(u.get("failed", 0))}</td>'
                   f'<td class="num">{_limit(_round(u.get("megapixels"), 2), u.get("budget_mp"))}</td>'
                   f'<td class="num">{_limit(_round(u.get("usd"), 4), u.get("budget_usd"))}</td>'
                   f"<td>{action}</td></tr>")
    return "".join(out) or '<tr><td colspan="8" class="empty">Nobody yet</td></tr>'


def _finished_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    out = [f'<tr data-id="{_e(r["id"])}" class="{_e(r["outcome"])}"><td>{_e(r.get("owner"))}</td>'
           f'{_prompt(r.get("prompt"))}<td class="outcome">{_e(r["outcome"])}</td>'
           f'<td>{_e(r.get("error"))}</td></tr>' for r in rows]
    return "".join(out) or '<tr><td colspan="4" class="empty">Nothing finished yet</td></tr>'


def _gallery(items: Sequence[Mapping[str, Any]], *, owners: bool) -> str:
    cards = []
    for g in items:
        who = f'<span class="owner">{_e(g.get("owner"))}</span>' if owners else ""
        cards.append(f'<figure><a href="{_e(g["url"])}" target="_blank" rel="noopener">'
                     f'<img src="{_e(g["url"])}" alt="result" loading="lazy"></a>'
                     f'<figcaption>{who}<span class="prompt" title="{_e(g.get("prompt"))}">'
                     f'{_e(g.get("prompt"))}</span><span class="params">{_e(g.get("params"))}</span>'
                     "</figcaption></figure>")
    return "".join(cards) or '<p class="empty">No results yet</p>'


def _counters(stats: Mapping[str, Any]) -> str:
    """Job outcomes (rejected = refused submits) and any other counters the service keeps
    (moderation refusals, ...), as small labelled numbers."""
    pills = []
    for key, value in stats.items():
        if key in ("requests", "queued", "running"):  # the summary shows those already
            continue
        items = value.items() if isinstance(value, Mapping) else [(None, value)]
        for sub, n in items:
            if isinstance(n, int | float) and not isinstance(n, bool):
                label = key if sub is None else (sub if key == "jobs" else f"{key} {sub}")
                pills.append(f'<span class="pill"><b>{_e(n)}</b> {_e(label)}</span>')
    return "".join(pills)


def dashboard_sections(view: Mapping[str, Any]) -> dict[str, str]:
    """The parts of the dashboard the page swaps in on every poll, by element id."""
    paused = view["paused"]
    queue_button = (_button("Resume the queue", "resume") if paused.get("queue")
                    else _button("Pause the queue", "pause"))
    state = "paused" if paused.get("queue") else "running"
    return {
        "summary": (f'<span class="pill state-{state}">queue {state}</span>'
                    f'<span class="pill"><b>{len(view["queue"])}</b> waiting</span>'
                    f'<span class="pill"><b>{len(view["running"])}</b> running</span>'
                    + _counters(view["stats"])),
        "queue-actions": queue_button + _button("Reload the roster", "reload"),
        "queue-rows": queue_rows(view["queue"]),
        "running-rows": queue_rows(view["running"], running=True),
        "usage-rows": _usage_rows(view["usage"], set(paused.get("owners") or ())),
        "finished-rows": _finished_rows(view["finished"]),
        "gallery": _gallery(view["gallery"], owners=True),
    }


def _wrap(sections: Mapping[str, str]) -> str:
    s = sections
    return (f'<section class="bar"><div id="summary" class="pills">{s["summary"]}</div>'
            f'<div id="queue-actions" class="actions">{s["queue-actions"]}</div></section>'
            "<section><h2>Running</h2>"
            + _table(["Who", "Prompt", "Size", "Steps", "Images", "Running", ""], s["running-rows"],
                     "running-rows")
            + "</section><section><h2>Queue</h2>"
            + _table(["#", "Who", "Prompt", "Size", "Steps", "Images", "Waiting", ""], s["queue-rows"],
                     "queue-rows")
            + "</section><section><h2>Students</h2>"
            + _table(["Who", "Queued / max", "Running", "Done", "Failed", "Megapixels / budget",
                      "USD / budget", ""], s["usage-rows"], "usage-rows")
            + "</section><section><h2>Recently finished</h2>"
            + _table(["Who", "Prompt", "Outcome", "Error"], s["finished-rows"], "finished-rows")
            + f'</section><section><h2>Recent results</h2><div id="gallery" class="gallery">'
              f'{s["gallery"]}</div></section>')


def dashboard_page(view: Mapping[str, Any], *, csrf: str, who: str | None) -> str:
    """The whole dashboard, server-rendered (the first paint needs no script)."""
    return _page("fluxnb class dashboard", _wrap(dashboard_sections(view)), csrf=csrf,
                 state_url="/_fluxnb/dashboard/state", who=who or "teacher")


def gallery_sections(items: Sequence[Mapping[str, Any]], *, owners: bool) -> dict[str, str]:
    """The gallery's part the page swaps in on every poll."""
    return {"gallery": _gallery(items, owners=owners)}


def gallery_page(items: Sequence[Mapping[str, Any]], *, owners: bool, csrf: str,
                 who: str | None) -> str:
    """One person's recent results (everyone's, with names, for a teacher)."""
    body = (f'<section><div id="gallery" class="gallery">'
            f'{gallery_sections(items, owners=owners)["gallery"]}</div></section>')
    return _page("Your results" if not owners else "Everyone's results", body, csrf=csrf,
                 state_url="/_fluxnb/gallery/state", who=who or "you")


def login_page(next_path: str, error: str = "") -> str:
    """The token form; the token travels in the POST body only, never in a URL."""
    problem = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    body = ('<section class="login"><form method="post" action="/_fluxnb/login">'
            f"{problem}<label for=\"token\">Your personal token</label>"
            '<input id="token" name="token" type="password" autocomplete="off" required autofocus>'
            f'<input type="hidden" name="next" value="{_e(next_path)}">'
            '<button type="submit">Log in</button>'
            "<p class=\"hint\">The token your teacher handed you (the same one you pass as "
            "fluxnb.connect(url, key=...) or FLUXNB_KEY).</p></form></section>")
    return _page("fluxnb: log in", body)


def message_page(title: str, text: str) -> str:
    """A short page that says one thing (a 403, for instance)."""
    return _page(title, f'<section><p>{_e(text)}</p><p><a href="/_fluxnb/gallery">Your gallery</a> · '
                        '<a href="/_fluxnb/login">Log in as someone else</a></p></section>')
