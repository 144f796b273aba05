"""The ``fluxnb`` command: demo in a fresh process, run against a live server, clear errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from fluxnb.cli import build_parser, main
from fluxnb.demo import demo_inputs

from .conftest import make_test_image, make_test_mask
from .support import eventually, free_port


def _open(path: Path) -> Image.Image:
    with Image.open(path) as handle:
        return handle.copy()


@pytest.mark.slow
def test_demo_writes_outputs_and_a_before_mask_after_picture(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "fluxnb", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "embedded local server" in done.stderr and "not a generative model" in done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    output, sheet = Path(lines["output"]), Path(lines["before/mask/after"])
    assert output.is_file() and sheet.is_file()
    image, mask = demo_inputs()
    result = _open(output).convert("RGB")
    assert result.size == image.size
    before, after = np.asarray(image, np.float32), np.asarray(result, np.float32)
    hole = np.asarray(mask) >= 128
    # the masked ribbons changed a lot, the rest of the photo barely (JPEG noise only)
    assert np.abs(after[hole] - before[hole]).mean() > 10
    far = ~np.asarray(mask.resize(mask.size).point(lambda v: 255 if v else 0)).astype(bool)
    assert np.abs(after[far] - before[far]).mean() < 3
    picture = _open(sheet)
    assert picture.width > 3 * image.width * 384 / image.height  # before, mask, after side by side
    assert (out / "demo-image.png").is_file() and (out / "demo-mask.png").is_file()


def test_run_against_a_server_writes_files(tmp_path: Path, live_server, capsys) -> None:
    image, mask = tmp_path / "in.png", tmp_path / "m.png"
    make_test_image(80, 48).save(image)
    make_test_mask(80, 48).save(mask)
    code = main(["run", "--image", str(image), "--mask", str(mask), "--prompt", "a fox",
                 "--steps", "10", "--seed", "3", "--num-images", "2", "--format", "png",
                 "--out", str(tmp_path / "out"), "--base-url", live_server.base_url])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    outputs = [Path(line.split(": ", 1)[1]) for line in captured.out.splitlines()
               if line.startswith("output: ")]
    assert len(outputs) == 2 and all(p.suffix == ".png" and p.is_file() for p in outputs)
    assert _open(outputs[0]).size == (80, 48)
    assert not np.array_equal(np.asarray(_open(outputs[0])), np.asarray(_open(outputs[1])))
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert record["output"]["seed"] == 3 and record["inputs"]["num_images"] == 2
    assert record["request_id"] and record["image"] == str(image)
    assert "done" in captured.err  # the progress bar on stderr


def _inputs(folder: Path, width: int = 96, height: int = 64) -> list[str]:
    image, mask = folder / "in.png", folder / "m.png"
    make_test_image(width, height).save(image)
    make_test_mask(width, height).save(mask)
    return ["--image", str(image), "--mask", str(mask)]


def _fluxnb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluxnb", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_an_out_of_range_value_names_the_flag_and_the_range(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", *_inputs(tmp_path), "--prompt", "x", "--steps", "60", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "--steps 60 is out of range: allowed 1 to 50 (default 28)" in err
    assert "num_inference_steps" not in err


def test_a_bad_lora_scale_names_the_lora_flag(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", *_inputs(tmp_path), "--prompt", "x", "--lora", "a.safetensors",
              "--lora", "b.safetensors@9"])
    err = capsys.readouterr().err
    assert "--lora #2 scale=9" in err and "0 to 4" in err and "loras[" not in err


@pytest.mark.slow
def test_options_are_checked_before_the_embedded_server_starts(tmp_path: Path) -> None:
    done = _fluxnb("run", *_inputs(tmp_path), "--prompt", "x", "--steps", "60", "--strength", "2")
    assert done.returncode == 2, done.stderr
    assert "--steps 60" in done.stderr and "--strength 2" in done.stderr
    assert "embedded" not in done.stderr and "Traceback" not in done.stderr


def test_run_with_a_missing_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--image", str(tmp_path / "nope.png"), "--mask", "m.png", "--prompt", "x"])
    assert info.value.code == 2 and "--image" in capsys.readouterr().err


def test_help_has_examples_the_environment_and_no_rest_markup(capsys) -> None:
    texts = {}
    for command in ([], ["run"], ["serve"], ["demo"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        texts[" ".join(command)] = capsys.readouterr().out
    assert all("`" not in text for text in texts.values()), texts
    run_help = texts["run"]
    assert "examples:" in run_help and "fluxnb run --image photo.jpg" in run_help
    assert "FLUXNB_KEY" in run_help and "FLUXNB_BASE_URL" in run_help and "--key KEY" in run_help
    usage = run_help.split("\n\n")[0]
    # --prompt is required unless --params-from IMAGE brings the saved one (issue 12, item 5)
    assert "--prompt PROMPT" in usage and "--params-from IMAGE" in usage
    assert re.search(r"--port PORT\s+TCP port to listen on \(default 8000\)", texts["serve"])
    assert "examples:" in texts["serve"] and "examples:" in texts[""]
    assert "FLUXNB_KEY" in texts[""] and "FLUXNB_BASE_URL" in texts[""]


def test_a_mistyped_flag_gets_a_did_you_mean(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", *_inputs(tmp_path), "--prompt", "x", "--stpes", "20"])
    assert info.value.code == 2
    assert "unrecognized option --stpes; did you mean --steps?" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the suggestion names the flag, never its value
        main(["run", *_inputs(tmp_path), "--prompt", "x", "--kye=class-secret-42"])
    err = capsys.readouterr().err
    assert "did you mean --key?" in err and "class-secret-42" not in err
    with pytest.raises(SystemExit):
        main(["serve", "--engien", "null"])
    assert "did you mean --engine?" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_with_an_unknown_engine_is_one_line_and_exit_2() -> None:
    done = _fluxnb("serve", "--engine", "nosuch", "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown engine 'nosuch'" in lines[0] and "preview" in lines[0]


@pytest.mark.slow
def test_serve_diffusers_without_torch_is_one_line_and_exit_2(tmp_path: Path) -> None:
    fake = tmp_path / "no-torch" / "torch"  # shadows the installed torch: importing it fails
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named torch (hidden by a test)')\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    done = _fluxnb("serve", "--engine", "diffusers", "--model", "some/model", "--port",
                   str(free_port()), env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs torch" in lines[0] and "fluxnb[diffusers]" in lines[0]


def test_the_bar_says_once_why_it_counts_fewer_steps(tmp_path: Path, live_server, capsys) -> None:
    code = main(["run", *_inputs(tmp_path), "--prompt", "x", "--steps", "20", "--strength", "0.85",
                 "--out", str(tmp_path / "out"), "--base-url", live_server.base_url])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("strength 0.85 runs 17 of 20 steps") == 1
    assert "17/17" in err


def test_run_key_reaches_the_server_and_is_never_shown(tmp_path: Path, server_factory, capsys) -> None:
    secret = "class-secret-" + os.urandom(4).hex()
    server = server_factory(engine="preview", key=secret)
    out = tmp_path / "out"
    code = main(["run", *_inputs(tmp_path), "--prompt", "x", "--out", str(out),
                 "--base-url", server.base_url, "--key", secret])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert secret not in captured.out + captured.err
    assert all(secret.encode() not in path.read_bytes() for path in out.iterdir())


def test_run_key_without_a_server_url_is_refused_before_anything_is_sent(tmp_path: Path,
                                                                          capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", *_inputs(tmp_path), "--prompt", "x", "--key", "class-secret-9"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "--key" in err and "--base-url" in err and "FAL_KEY" in err
    assert "class-secret-9" not in err


def test_an_error_is_printed_after_the_bar_not_inside_it(tmp_path: Path, server_factory,
                                                           capsys) -> None:
    server = server_factory(engine="preview", key="the-right-key")  # no key given: a 401
    code = main(["run", *_inputs(tmp_path), "--prompt", "x", "--base-url", server.base_url])
    err = capsys.readouterr().err
    assert code == 1
    assert "HTTP 401" in err and "the-right-key" not in err
    before = err[: err.index("fluxnb: HTTP 401")]
    assert before.endswith("\n"), repr(err)  # on a line of its own, after the closed bar


class _Stderr:
    """Collects a subprocess's stderr in a thread (tqdm redraws with \\r, not newlines)."""

    def __init__(self, proc: subprocess.Popen[bytes]):
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            self._chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def finish(self, proc: subprocess.Popen[bytes]) -> str:
        self._thread.join(10)
        assert proc.stderr is not None
        proc.stderr.close()
        return self.text()


def _wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    eventually(condition, timeout, what)


@pytest.mark.slow
def test_ctrl_c_cancels_the_job_on_the_server_and_names_it(tmp_path: Path, server_factory) -> None:
    server = server_factory(engine="null", engine_options={"delay": 20.0}, workers=1)  # 2 s a step
    # Python turns SIGINT into KeyboardInterrupt unless the parent ignores SIGINT (as a shell does
    # for background jobs): install the default handler explicitly, then run the CLI's main.
    launcher = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "from fluxnb.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", launcher, "run", *_inputs(tmp_path), "--prompt",
                             "x", "--out", str(tmp_path / "out"), "--base-url", server.base_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = _Stderr(proc)
    try:
        _wait_until(lambda: re.search(r"request (\S+) queued", stderr.text()), "enqueued")
        request_id = re.search(r"request (\S+) queued", stderr.text()).group(1)  # type: ignore[union-attr]
        _wait_until(lambda: server.service.get(request_id).state == "IN_PROGRESS", "running")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = stderr.finish(proc)
    assert code == 130, err
    assert f"fluxnb: interrupted; cancelled request {request_id} on the server" in err
    assert "Traceback" not in err
    _wait_until(lambda: server.service.stats["jobs"]["cancelled"] == 1, "cancelled on the server")
    stats = server.service.stats
    assert stats["jobs"]["completed"] == 0 and stats["requests"].get("cancel", 0) == 1
    assert server.service.get(request_id).error_type == "request_cancelled"


def test_serve_binds_loopback_by_default() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.engine == "preview" and args.workers == 1


def test_serve_strips_its_own_key_and_refuses_an_unusable_one(tmp_path):
    """`fluxnb serve --key "$(cat key.txt)"` keeps the file's newline: the server strips it, so a
    client with the clean key gets in; a key with a line break inside is one usage line, exit 2."""
    from .support import ServeProcess

    with ServeProcess(["--engine", "null", "--key", "class-secret\n"], log=tmp_path / "serve.log") as srv:
        srv.wait_ready()
        ok = httpx.get(f"{srv.base_url}/fal-ai/flux-lora/inpainting/requests/nope/status",
                       headers={"Authorization": "Key class-secret"}, timeout=10)
        assert ok.status_code == 404  # past the key check: an unknown request, not a 401
    bad = subprocess.run([sys.executable, "-m", "fluxnb", "serve", "--engine", "null", "--port", "0",
                          "--key", "class\nsecret"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "--key" in bad.stderr and "control character" in bad.stderr
    assert "secret" not in bad.stderr.replace("FLUXNB_SERVER_KEY", "")
    assert "Traceback" not in bad.stderr


def test_class_new_writes_a_private_roster_and_keeps_an_existing_one(tmp_path: Path,
                                                                     capsys) -> None:
    out = tmp_path / "roster.csv"
    assert main(["class", "new", "--students", "3", "--out", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "name,role,token" and len(rows) == 5
    assert [r.split(",")[:2] for r in rows[1:]] == [
        ["student01", "student"], ["student02", "student"], ["student03", "student"],
        ["teacher01", "teacher"]]
    assert all(len(r.split(",")[2]) >= 40 for r in rows[1:])
    assert (out.stat().st_mode & 0o777) == 0o600
    tokens = out.read_text()
    assert rows[1].split(",")[2] not in capsys.readouterr().out  # tokens stay in the file
    assert main(["class", "new", "--students", "1", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == tokens
    assert main(["class", "new", "--students", "1", "--teachers", "0", "--out", str(out),
                 "--force"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_serve_key_file_keeps_the_key_off_the_command_line_and_key_warns(tmp_path: Path) -> None:
    from .support import ServeProcess

    key_file = tmp_path / "server.key"
    key_file.write_text("file-secret-123\n")
    with ServeProcess(["--engine", "null", "--key-file", str(key_file)], token="file-secret-123",
                      log=tmp_path / "serve.log") as srv:
        url = f"{srv.base_url}/fal-ai/flux-lora/inpainting/requests/nope/status"
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Key file-secret-123"},
                         timeout=10).status_code == 404
        assert "file-secret-123" not in " ".join(srv.proc.args)  # type: ignore[arg-type]
        assert "visible to other local users" not in srv.output()
    with ServeProcess(["--engine", "null", "--key", "flag-secret"], log=tmp_path / "k.log") as srv:
        pass
    assert "--key is visible to other local users" in srv.output()
    bad = subprocess.run([sys.executable, "-m", "fluxnb", "serve", "--engine", "null", "--port", "0",
                          "--roster", str(tmp_path / "missing.csv")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--roster" in bad.stderr and "Traceback" not in bad.stderr


# -- fluxnb serve: --devices all without CUDA, --upstream credentials, connection limits -------


@pytest.fixture
def no_serve(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``fluxnb.server.serve`` replaced: records the config instead of serving forever."""
    import fluxnb.server

    configs: list[object] = []
    monkeypatch.setattr(fluxnb.server, "serve", configs.append)
    return configs


def _usage_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_serve_devices_all_without_cuda_is_one_usage_line(monkeypatch: pytest.MonkeyPatch,
                                                          no_serve: list[object],
                                                          capsys) -> None:
    import fluxnb.server.replicas

    monkeypatch.setattr(fluxnb.server.replicas, "_cuda_count", lambda: 0)  # a machine without CUDA
    line = _usage_line(["serve", "--engine", "null", "--devices", "all"], capsys)
    assert "--devices all" in line and "no CUDA device" in line and "--devices cpu" in line
    line = _usage_line(["serve", "--engine", "null", "--devices", "all,cpu"], capsys)
    assert "'all' stands alone" in line
    assert no_serve == []


def test_serve_devices_all_without_cuda_in_a_fresh_process_exits_2() -> None:
    done = _fluxnb("serve", "--engine", "null", "--devices", "all", "--port", str(free_port()),
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0]


@pytest.mark.parametrize("url", ["http://user:pw-s3cret@127.0.0.1:9", "https://:pw-s3cret@h.test",
                                 "ftp://u:pw-s3cret@h.test"])
def test_serve_upstream_with_credentials_is_refused_without_echoing_them(
        url: str, monkeypatch: pytest.MonkeyPatch, no_serve: list[object], capsys) -> None:
    monkeypatch.setenv("FAL_KEY", "gateway-key-for-the-test")
    line = _usage_line(["serve", "--engine", "fal", "--upstream", url], capsys)
    assert "--upstream" in line and "user name or password" in line and "FAL_KEY" in line
    assert "pw-s3cret" not in line and "gateway-key-for-the-test" not in line
    assert no_serve == []


def test_serve_connection_flags_reach_the_config_and_are_checked(no_serve: list[object],
                                                                 capsys) -> None:
    from fluxnb.server import ServerConfig

    assert main(["serve", "--engine", "null", "--header-timeout", "2.5", "--body-timeout", "7",
                 "--max-connections-per-address", "16"]) == 0
    (config,) = no_serve
    assert isinstance(config, ServerConfig)
    assert (config.header_timeout, config.body_timeout, config.max_connections_per_address) \
        == (2.5, 7.0, 16)
    for flag, value, says in (("--header-timeout", "0", "> 0, not 0.0"),
                              ("--body-timeout", "-1", "> 0, not -1.0"),
                              ("--header-timeout", "inf", "> 0, not inf"),
                              ("--max-connections-per-address", "0", ">= 1, not 0")):
        line = _usage_line(["serve", "--engine", "null", flag, value], capsys)
        assert line.startswith(f"fluxnb serve: {flag} must be") and says in line
    assert len(no_serve) == 1


def test_serve_help_lists_the_connection_flags_with_the_configs_defaults(capsys) -> None:
    from fluxnb.server import ServerConfig

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    section = text.split("\nconnections:\n", 1)[1].split("\n\n", 1)[0]
    flat = " ".join(section.split())
    defaults = ServerConfig()
    assert f"headers (default {defaults.header_timeout:g})" in flat
    assert f"body (default {defaults.body_timeout:g})" in flat
    assert f"(default {defaults.max_connections_per_address})" in flat
    assert all(len(line) <= 100 for line in text.splitlines())
