"""The LoRA path rules (server/loras.py) and LoRA downloads (engines/lora_download.py): only
safetensors under --lora-dir, URLs through the fetch guard, hub repos only when allowed; one
message for every refused path; downloads capped, with a deadline, cancellable, cached (LRU).

No torch needed; every listener is the test's own, on loopback.
"""

from __future__ import annotations

import http.server
import json
import os
import pickle
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxnb.server import BackgroundServer, ServerConfig
from fluxnb.server.engines import EngineCancelled, EngineInputError
from fluxnb.server.engines.lora_download import DownloadLimits, LoraCache, download_lora, hub_url
from fluxnb.server.engines.testing import RecordingContext
from fluxnb.server.inputs import FetchPolicy
from fluxnb.server.loras import (
    LoraRefused,
    LoraRules,
    is_safetensors,
    lora_errors,
    refusal_message,
)
from tests.conftest import make_test_image, make_test_mask

FIELD = "loras[0].path"


def safetensors_bytes(payload: int = 16) -> bytes:
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "F32", "shape": [payload // 4],
                               "data_offsets": [0, payload]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * payload


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    root = tmp_path / "loras"
    (root / "sub").mkdir(parents=True)
    (root / "style.safetensors").write_bytes(safetensors_bytes())
    (root / "sub" / "deep.safetensors").write_bytes(safetensors_bytes())
    (tmp_path / "outside.safetensors").write_bytes(safetensors_bytes())
    return root


def refused(rules: LoraRules, path: Any) -> str:
    with pytest.raises(LoraRefused) as info:
        rules.resolve(path, FIELD)
    return str(info.value)


# -- the path rules -----------------------------------------------------------------------------


def test_a_file_in_the_lora_dir_is_allowed_by_name_by_absolute_path_and_by_file_url(
        lora_dir: Path) -> None:
    rules = LoraRules(lora_dir=str(lora_dir))
    real = os.path.realpath(lora_dir / "style.safetensors")
    for path in ("style.safetensors", str(lora_dir / "style.safetensors"),
                 (lora_dir / "style.safetensors").as_uri()):
        source = rules.resolve(path, FIELD)
        assert (source.kind, source.target) == ("file", real)
    assert rules.resolve("sub/deep.safetensors", FIELD).kind == "file"


def test_escapes_from_the_lora_dir_are_refused(lora_dir: Path, tmp_path: Path) -> None:
    (lora_dir / "out.safetensors").symlink_to(tmp_path / "outside.safetensors")
    (lora_dir / "outdir").symlink_to(tmp_path)
    home = Path.home() / ".fluxnb-test-not-there.safetensors"
    rules = LoraRules(lora_dir=str(lora_dir))
    for path in ("../outside.safetensors", "sub/../../outside.safetensors",
                 str(lora_dir / ".." / "outside.safetensors"),
                 str(tmp_path / "outside.safetensors"), (tmp_path / "outside.safetensors").as_uri(),
                 "out.safetensors", "outdir/outside.safetensors", "~/" + home.name,
                 "/etc/shadow", "/etc/passwd", "ftp://x/a.safetensors", "file://host/a.safetensors",
                 "", "a\x00b.safetensors", 7, None):
        assert refused(rules, path) == refusal_message(FIELD), path


def test_only_real_safetensors_files_pass_by_name_and_by_header(lora_dir: Path) -> None:
    (lora_dir / "fake.safetensors").write_bytes(b"not a safetensors file at all")
    (lora_dir / "pickle.safetensors").write_bytes(pickle.dumps({"lora_A": [1.0, 2.0]}))
    (lora_dir / "weights.bin").write_bytes(safetensors_bytes())
    bad_offsets = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 10**6]}})
    (lora_dir / "short.safetensors").write_bytes(struct.pack("<Q", len(bad_offsets))
                                                 + bad_offsets.encode())
    rules = LoraRules(lora_dir=str(lora_dir))
    for name in ("fake.safetensors", "pickle.safetensors", "weights.bin", "short.safetensors"):
        assert refused(rules, name) == refusal_message(FIELD), name
    assert not is_safetensors(lora_dir / "pickle.safetensors")
    assert is_safetensors(lora_dir / "style.safetensors")


def test_the_message_is_the_same_for_existing_and_missing_files(lora_dir: Path,
                                                                 tmp_path: Path) -> None:
    rules = LoraRules(lora_dir=str(lora_dir))
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(safetensors_bytes())
    texts = {refused(rules, str(secret)), refused(rules, str(tmp_path / "missing.safetensors")),
             refused(rules, "/etc/shadow"), refused(rules, "/root/.ssh/id_rsa"),
             refused(rules, "missing.safetensors"), refused(rules, "../secret.safetensors")}
    assert texts == {refusal_message(FIELD)}
    assert "--lora-dir" in refusal_message(FIELD) and "https URL" in refusal_message(FIELD)


def test_without_a_lora_dir_no_local_path_is_allowed(lora_dir: Path) -> None:
    rules = LoraRules()
    assert refused(rules, str(lora_dir / "style.safetensors")) == refusal_message(FIELD)
    assert rules.resolve("https://example.org/a.safetensors", FIELD).kind == "url"
    assert rules.resolve("http://example.org/a", FIELD).kind == "url"


def test_hub_repos_only_with_allow_hub() -> None:
    assert refused(LoraRules(), "owner/repo") == refusal_message(FIELD)
    hub = LoraRules(allow_hub=True)
    assert hub.resolve("owner/repo", FIELD).weight_name == "pytorch_lora_weights.safetensors"
    source = hub.resolve("owner/repo/sub/w.safetensors", FIELD)
    assert (source.kind, source.target, source.weight_name) == ("hub", "owner/repo",
                                                                "sub/w.safetensors")
    for path in ("owner/repo/w.bin", "owner/../x", "/abs/repo", "~/repo", "owner", "a b/c"):
        assert refused(hub, path) == refusal_message(FIELD), path


def test_hub_files_are_fetched_over_https_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_url("o/r", "w.safetensors") == "https://huggingface.co/o/r/resolve/main/w.safetensors"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert hub_url("o/r", "w.safetensors") is None


def test_submit_check_only_for_the_engine_that_loads_loras(lora_dir: Path) -> None:
    diffusers = ServerConfig(engine="diffusers", lora_dir=str(lora_dir))
    loras = [{"path": "style.safetensors"}, {"path": "/etc/shadow"}, {"path": "x/y"}]
    errors = lora_errors(loras, diffusers)
    assert [e["loc"] for e in errors] == [["body", "loras[1].path"], ["body", "loras[2].path"]]
    assert errors[0]["msg"] == refusal_message("loras[1].path")
    assert lora_errors(loras, ServerConfig(engine="preview")) == []


def test_a_refused_path_is_a_422_at_submit_before_queueing(lora_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # the engine never loads: the submit check answers before any job exists
    from fluxnb.server.engines.flux_diffusers import DiffusersEngine
    monkeypatch.setattr(DiffusersEngine, "load", lambda self: None)
    import base64
    import io

    def uri(img: Any) -> str:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    config = ServerConfig(engine="diffusers", port=0, lora_dir=str(lora_dir),
                          engine_options={"model": "unused/model", "device": "cpu"})
    with BackgroundServer(config) as server:
        body = {"prompt": "x", "image_url": uri(make_test_image(32, 32)),
                "mask_url": uri(make_test_mask(32, 32))}
        answers = [httpx.post(server.base_url + "/fal-ai/flux-lora/inpainting",
                              json={**body, "loras": [{"path": "style.safetensors"}, {"path": p}]})
                   for p in ("/etc/shadow", "/etc/nope-not-there", "../outside.safetensors")]
        stats = httpx.get(server.base_url + "/_fluxnb/stats").json()
    assert [r.status_code for r in answers] == [422, 422, 422]
    details = [r.json()["detail"] for r in answers]
    assert details[0] == details[1] == details[2] == [
        {"loc": ["body", "loras[1].path"], "msg": refusal_message("loras[1].path"),
         "type": "lora_not_allowed"}]
    assert stats.get("queued", 0) == 0 and stats.get("running", 0) == 0


# -- downloads -----------------------------------------------------------------------------------


class Listener:
    """A loopback HTTP server of the test's own: ``routes`` maps a path to a handler body."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, dict[str, str]]] = []
        self.files: dict[str, bytes] = {}
        self.trickle: dict[str, int] = {}   # path -> chunks of 1 kB, 20 ms apart
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.hits.append((self.path, dict(self.headers)))
                if self.path in outer.trickle:
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(outer.trickle[self.path]):
                            self.wfile.write(b"x" * 1024)
                            self.wfile.flush()
                            time.sleep(0.02)
                    except OSError:
                        pass
                    return
                data = outer.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


PRIVATE = FetchPolicy(allow_private=True)


def test_a_url_to_another_loopback_port_is_refused_by_default(listener: Listener,
                                                              tmp_path: Path) -> None:
    listener.files["/a.safetensors"] = safetensors_bytes()
    cache = LoraCache(tmp_path / "cache")
    with pytest.raises(EngineInputError) as info:
        download_lora(listener.url("/a.safetensors"), cache, FIELD, RecordingContext(), FetchPolicy())
    assert listener.hits == []   # refused before any connection
    missing = listener.url("/missing.safetensors")
    with pytest.raises(EngineInputError) as other:
        download_lora(missing, cache, FIELD, RecordingContext(), FetchPolicy())
    assert str(info.value) == str(other.value) == f"{FIELD}: {FetchPolicy().message}"
    path = download_lora(listener.url("/a.safetensors"), cache, FIELD, RecordingContext(), PRIVATE)
    assert path.read_bytes() == safetensors_bytes() and len(listener.hits) == 1


def test_download_errors_are_one_message_and_no_token_goes_to_a_url(
        listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_operator_secret")
    listener.files["/junk.safetensors"] = pickle.dumps({"a": 1})
    cache = LoraCache(tmp_path / "cache")
    texts = set()
    for path in ("/junk.safetensors", "/missing.safetensors"):
        with pytest.raises(EngineInputError) as info:
            download_lora(listener.url(path), cache, FIELD, RecordingContext(), PRIVATE)
        texts.add(str(info.value))
    assert texts == {f"{FIELD}: {PRIVATE.message}"}
    assert cache.files() == []   # a pickle never lands in the cache
    assert all("Authorization" not in h and "authorization" not in h for _, h in listener.hits)


def test_size_cap(listener: Listener, tmp_path: Path) -> None:
    listener.files["/big.safetensors"] = safetensors_bytes(4096)
    listener.trickle["/stream.safetensors"] = 50
    cache = LoraCache(tmp_path / "cache")
    limits = DownloadLimits(max_bytes=2048)
    for path in ("/big.safetensors", "/stream.safetensors"):   # declared, then counted
        with pytest.raises(EngineInputError):
            download_lora(listener.url(path), cache, FIELD, RecordingContext(), PRIVATE, limits)
    assert cache.files() == [] and not list((tmp_path / "cache").rglob("*.part-*"))


def test_deadline_for_the_whole_download(listener: Listener, tmp_path: Path) -> None:
    listener.trickle["/slow.safetensors"] = 200   # 200 kB over about 4 s, each read quick
    limits = DownloadLimits(deadline=0.3, timeout=5.0)
    ctx = RecordingContext()
    with pytest.raises(EngineInputError):
        download_lora(listener.url("/slow.safetensors"), LoraCache(tmp_path / "c"), FIELD, ctx,
                      PRIVATE, limits)


class CancelAfterPolls(RecordingContext):
    """Cancelled once ``cancelled`` was asked ``polls`` times (deterministic, no threads)."""

    def __init__(self, polls: int):
        super().__init__()
        self.polls = polls

    @property
    def cancelled(self) -> bool:
        self.polls -= 1
        return self.polls < 0


def test_cancel_stops_a_download(listener: Listener, tmp_path: Path) -> None:
    listener.trickle["/slow.safetensors"] = 200
    cache = LoraCache(tmp_path / "cache")
    with pytest.raises(EngineCancelled):
        download_lora(listener.url("/slow.safetensors"), cache, FIELD, CancelAfterPolls(3), PRIVATE)
    assert cache.files() == [] and not list((tmp_path / "cache").rglob("*.part-*"))


def test_cache_hits_and_least_recently_used_eviction(listener: Listener, tmp_path: Path) -> None:
    size = len(safetensors_bytes(1000))
    for name in "abc":
        listener.files[f"/{name}.safetensors"] = safetensors_bytes(1000)
    cache = LoraCache(tmp_path / "cache", max_bytes=2 * size)
    a = download_lora(listener.url("/a.safetensors"), cache, FIELD, RecordingContext(), PRIVATE)
    b = download_lora(listener.url("/b.safetensors"), cache, FIELD, RecordingContext(), PRIVATE)
    os.utime(a, ns=(1, 1))
    os.utime(b, ns=(2, 2))
    again = download_lora(listener.url("/a.safetensors"), cache, FIELD, RecordingContext(), PRIVATE)
    assert again == a and len(listener.hits) == 2   # a hit, and a is now the most recent
    c = download_lora(listener.url("/c.safetensors"), cache, FIELD, RecordingContext(), PRIVATE)
    assert sorted(cache.files()) == sorted([a, c]) and not b.exists()   # b was least recent
    assert sum(p.stat().st_size for p in cache.files()) <= cache.max_bytes


@pytest.mark.parametrize("name", ["preview", "null"])
def test_engines_that_ignore_loras_never_open_their_paths(name: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import io

    from fluxnb.server.engines import EngineRequest, create_engine

    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(safetensors_bytes())
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_os_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    params = {"prompt": "x", "num_inference_steps": 2, "guidance_scale": 3.5, "strength": 1.0,
              "num_images": 1, "enable_safety_checker": False, "output_format": "png",
              "loras": [{"path": str(secret), "scale": 1.0}, {"path": "/etc/shadow", "scale": 1.0}]}
    engine = create_engine(name)
    engine.load()
    out = engine.run(EngineRequest(image=make_test_image(32, 32), mask=make_test_mask(32, 32),
                                   params=params, seed=0), RecordingContext())
    assert len(out.images) == 1
    assert not any("secret" in p or "shadow" in p for p in opened), opened


def test_a_hub_lora_never_goes_to_a_plain_http_endpoint(listener: Listener, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from fluxnb.server.engines.flux_diffusers import DiffusersEngine

    monkeypatch.setenv("HF_TOKEN", "hf_operator_secret")
    monkeypatch.setenv("HF_ENDPOINT", listener.url(""))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    listener.files["/o/r/resolve/main/pytorch_lora_weights.safetensors"] = safetensors_bytes()
    engine = DiffusersEngine(model="unused", device="cpu", allow_hub_loras=True,
                             allow_private_fetch=True, lora_cache=str(tmp_path / "cache"))
    with pytest.raises(EngineInputError, match="over https"):
        engine._fetch_loras([{"path": "o/r", "scale": 1.0}], RecordingContext())
    assert listener.hits == []   # nothing sent, so no token in clear
    refused_engine = DiffusersEngine(model="unused", device="cpu", lora_cache=str(tmp_path / "c"))
    with pytest.raises(EngineInputError, match="not an allowed LoRA"):
        refused_engine._fetch_loras([{"path": "o/r", "scale": 1.0}], RecordingContext())
