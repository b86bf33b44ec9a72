"""Where a LoRA comes from: a URL, this server's own file, or a name in the operator's directory;
only safetensors, within the size limit, each failure with its code and the field it names."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from wanforge.catalog import I2VLoraInput, LoraEntry
from wanforge.config import Settings
from wanforge.media.lora_files import CONVERT_HINT, check_safetensors, find_in_lora_dir, lora_source
from wanforge.media.lora_files import LoraFileError as FileError
from wanforge.media.storage import LocalStorage
from wanforge.store import uploads
from wanforge.store.db import Database
from wanforge.store.migrate import upgrade
from wanforge.vocabulary import ErrorCode
from wanforge.worker.context import JobContext, TaskError
from wanforge.worker.lora_sources import display_name, resolve_loras

OWN = "http://wanforge.test:8000"
LORA_BYTES = save_safetensors(
    {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": np.ones((4, 12), dtype=np.float32)},
    metadata={"expert": "high_noise"},
)
OTHER_BYTES = save_safetensors({"x.lora_down.weight": np.zeros((2, 2), dtype=np.float16)})
SHA = hashlib.sha256(LORA_BYTES).hexdigest()


class _Files(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list[str]]]:
    """A static file server on 127.0.0.1 over a directory; the third item records request paths."""
    root = tmp_path_factory.mktemp("served")
    seen: list[str] = []

    class Recording(_Files):
        def do_GET(self) -> None:
            seen.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Recording, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, seen
    server.shutdown()
    server.server_close()


def job(settings: Settings, tmp_path: Path) -> JobContext:
    """A context with a real store (whose a file is lives there) and no lease work to do."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url())
    db = Database(settings.resolved_database_url())
    prediction = SimpleNamespace(server_base=OWN, input={}, id="p" * 32, result={}, api_key_id=None)
    return JobContext(
        settings=settings,
        storage=LocalStorage(settings.storage_dir),
        prediction=cast(Any, prediction),
        lease=cast(Any, SimpleNamespace(db=db, should_stop=lambda: False, shutdown=threading.Event())),
        progress=cast(Any, SimpleNamespace(report=lambda *a, **k: None, log=lambda *a: None)),
        job_dir=tmp_path / "job",
    )


def owned(ctx: JobContext, key: str) -> None:
    """Record `key` as an upload: a file of this server is an input only as an upload or output."""
    uploads.create_upload(
        ctx.lease.db,
        key=key,
        filename=key.rsplit("/", 1)[-1],
        content_type="application/octet-stream",
        declared_size=None,
        put_token=None,
        api_key_id=None,
    )


def request(**lists: list[dict[str, Any]]) -> I2VLoraInput:
    return I2VLoraInput.model_validate({"image": "https://e.com/a.png", "prompt": "p", **lists})


def failure(ctx: JobContext, inp: I2VLoraInput) -> TaskError:
    with pytest.raises(TaskError) as info:
        resolve_loras(ctx, inp)
    return info.value


def test_a_url_is_fetched_once_per_job_and_kept_by_content(
    files_server: tuple[str, Path, list[str]], settings: Settings, tmp_path: Path
) -> None:
    base, root, seen = files_server
    (root / "style.safetensors").write_bytes(LORA_BYTES)
    (root / "same-bytes.safetensors").write_bytes(LORA_BYTES)
    url = f"{base}/style.safetensors"
    ctx = job(settings, tmp_path)
    seen.clear()
    got = resolve_loras(
        ctx,
        request(
            loras=[{"path": url, "scale": 0.5}],
            low_noise_loras=[{"path": url}, {"path": f"{base}/same-bytes.safetensors", "scale": 2}],
        ),
    )
    assert seen == ["/style.safetensors", "/same-bytes.safetensors"]  # the repeated URL: one fetch
    kept = settings.data_dir / "loras" / f"{SHA}.safetensors"
    assert kept.read_bytes() == LORA_BYTES
    assert [(r.field, r.request.file, r.request.sha256, r.request.scale) for r in got.loras] == [
        ("loras[0]", kept, SHA, 0.5),
        ("low_noise_loras[0]", kept, SHA, 1.0),
        ("low_noise_loras[1]", kept, SHA, 2.0),
    ]
    assert [sorted(r.request.experts) for r in got.loras] == [
        ["high_noise", "low_noise"],
        ["low_noise"],
        ["low_noise"],
    ]
    assert [r.request.name for r in got.loras] == ["style.safetensors"] * 2 + ["same-bytes.safetensors"]
    assert list(ctx.job_dir.iterdir()) == []  # nothing left behind but the kept file
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]

    # the next job fetches the URL again (it may serve something else now) into the same file
    again = resolve_loras(job(settings, tmp_path), request(high_noise_loras=[{"path": url}]))
    assert seen[-1] == "/style.safetensors" and len(seen) == 3
    assert again.loras[0].request.file == kept and again.loras[0].request.experts == {"high_noise"}


@pytest.mark.parametrize(
    "form", ["/files/{key}", OWN + "/files/{key}", "HTTP://WANFORGE.TEST:8000/files/{key}"]
)
def test_own_files_are_read_from_storage(settings: Settings, tmp_path: Path, form: str) -> None:
    ctx = job(settings, tmp_path)
    key = ctx.storage.new_key("outputs", "p3r5on_high_noise.safetensors")
    ctx.storage.put_bytes(key, LORA_BYTES)
    owned(ctx, key)
    got = resolve_loras(ctx, request(high_noise_loras=[{"path": form.format(key=key)}]))
    (lora,) = got.loras
    assert lora.request.sha256 == SHA and lora.request.file.read_bytes() == LORA_BYTES
    assert lora.request.name == "p3r5on_high_noise.safetensors"


def test_a_missing_own_file_is_1402(settings: Settings, tmp_path: Path) -> None:
    err = failure(job(settings, tmp_path), request(loras=[{"path": "/files/outputs/abc/gone.safetensors"}]))
    assert (err.code, err.message) == (
        ErrorCode.MEDIA_ACCESS_FAILED,
        "cannot read loras[0].path: upload not found: loras[0].path URL points to "
        "/files/outputs/abc/gone.safetensors",
    )


def test_names_in_the_lora_dir_are_read_in_place(settings: Settings, tmp_path: Path) -> None:
    lora_dir = tmp_path / "operator-loras"
    lora_dir.mkdir()
    (lora_dir / "lightx2v.safetensors").write_bytes(LORA_BYTES)
    settings.lora_dir = lora_dir
    got = resolve_loras(
        job(settings, tmp_path),
        request(loras=[{"path": "lightx2v.safetensors"}], high_noise_loras=[{"path": "lightx2v"}]),
    )
    assert [r.request.file for r in got.loras] == [(lora_dir / "lightx2v.safetensors").resolve()] * 2
    assert [r.request.name for r in got.loras] == ["lightx2v.safetensors", "lightx2v"]
    assert got.loras[0].request.sha256 == SHA
    assert not (settings.data_dir / "loras").exists()  # nothing copied


def test_lora_dir_failures_are_1401_naming_the_field(settings: Settings, tmp_path: Path) -> None:
    inp = request(low_noise_loras=[{"path": "a.safetensors"}, {"path": "missing.safetensors"}])
    err = failure(job(settings, tmp_path), inp)
    assert (err.code, err.message) == (
        ErrorCode.INVALID_PARAMETER,
        "invalid parameter low_noise_loras[0].path: 'a.safetensors' is not a URL, and this server "
        "has no LoRA directory to find it in (the operator sets WANFORGE_LORA_DIR)",
    )
    settings.lora_dir = tmp_path / "d"
    settings.lora_dir.mkdir()
    (settings.lora_dir / "a.safetensors").write_bytes(LORA_BYTES)
    err = failure(job(settings, tmp_path), inp)
    assert (err.code, err.message) == (
        ErrorCode.INVALID_PARAMETER,
        "invalid parameter low_noise_loras[1].path: no LoRA named 'missing.safetensors' in the "
        "server's LoRA directory",
    )


def test_a_symlink_out_of_the_lora_dir_is_refused(settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(LORA_BYTES)
    settings.lora_dir = tmp_path / "d"
    settings.lora_dir.mkdir()
    (settings.lora_dir / "link.safetensors").symlink_to(outside)
    err = failure(job(settings, tmp_path), request(loras=[{"path": "link.safetensors"}]))
    assert err.message == (
        "invalid parameter loras[0].path: LoRA 'link.safetensors' points outside the server's LoRA directory"
    )
    assert str(tmp_path) not in err.message


@pytest.mark.parametrize("name", ["../secret.safetensors", "..", "a/../../b", "/etc/passwd", "sub\\x"])
def test_traversal_never_reaches_the_file_system(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileError):
        lora_source(name)
    # and a stored input that skipped the API's check is checked again by the worker
    inp = I2VLoraInput.model_construct(
        loras=[LoraEntry.model_construct(path=name, scale=1.0)], high_noise_loras=[], low_noise_loras=[]
    )
    settings = Settings(data_dir=tmp_path / "data", lora_dir=tmp_path)
    err = failure(job(settings, tmp_path), inp)
    assert err.code == ErrorCode.INVALID_PARAMETER and err.message.startswith(
        "invalid parameter loras[0].path: "
    )


def test_find_in_lora_dir_stays_inside(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "x.safetensors").write_bytes(LORA_BYTES)
    with pytest.raises(FileError, match="outside"):
        find_in_lora_dir(tmp_path / "d", "../x.safetensors")
    assert find_in_lora_dir(tmp_path / "d", "nothing") is None


PICKLE_ZIP = b"PK\x03\x04" + b"\x00" * 60  # what torch.save writes
PICKLE_RAW = b"\x80\x02}q\x00." + b"\x00" * 8  # a protocol-2 pickle


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (PICKLE_ZIP, f"the file is a PyTorch pickle, not safetensors; {CONVERT_HINT}"),
        (PICKLE_RAW, f"the file is a PyTorch pickle, not safetensors; {CONVERT_HINT}"),
        (
            b"<!DOCTYPE html><html>log in to download</html>",
            "the file is not a safetensors file (it looks like an HTML page: check the URL)",
        ),
        (b'{"error": "not found"}', "the file is not a safetensors file (it looks like JSON)"),
        (b"tiny", "the file is not a safetensors file (4 bytes is too short)"),
        (
            LORA_BYTES[:-5],
            f"the safetensors file is truncated or corrupt: its header describes {len(LORA_BYTES)} bytes, "
            f"the file has {len(LORA_BYTES) - 5}",
        ),
        (
            len(b"[1, 2]").to_bytes(8, "little") + b"[1, 2]",
            "the file is not a safetensors file (its header is not a JSON object)",
        ),
        (save_safetensors({}), "the safetensors file contains no tensors"),
    ],
)
def test_only_safetensors_is_accepted(
    files_server: tuple[str, Path, list[str]], settings: Settings, tmp_path: Path, body: bytes, message: str
) -> None:
    base, root, _ = files_server
    (root / "bad.safetensors").write_bytes(body)
    err = failure(job(settings, tmp_path), request(loras=[LORA_OK, {"path": f"{base}/bad.safetensors"}]))
    assert (err.code, err.message) == (
        ErrorCode.INVALID_PARAMETER,
        f"invalid parameter loras[1].path: {message}",
    )
    cache = settings.data_dir / "loras"
    assert sorted(p.name for p in cache.iterdir()) == [
        f"{hashlib.sha256(OTHER_BYTES).hexdigest()}.safetensors"
    ]
    assert list((tmp_path / "job").iterdir()) == []


LORA_OK = {"path": "/files/uploads/okok/ok.safetensors"}


@pytest.fixture(autouse=True)
def _own_ok_file(settings: Settings, tmp_path: Path) -> None:
    ctx = job(settings, tmp_path)
    ctx.storage.put_bytes("uploads/okok/ok.safetensors", OTHER_BYTES)
    owned(ctx, "uploads/okok/ok.safetensors")


def test_a_pickle_in_the_lora_dir_is_refused_with_the_convert_hint(
    settings: Settings, tmp_path: Path
) -> None:
    settings.lora_dir = tmp_path / "d"
    settings.lora_dir.mkdir()
    (settings.lora_dir / "renamed.safetensors").write_bytes(PICKLE_ZIP)
    err = failure(job(settings, tmp_path), request(loras=[{"path": "renamed"}]))
    assert err.message == (
        f"invalid parameter loras[0].path: the file is a PyTorch pickle, not safetensors; {CONVERT_HINT}"
    )


def test_oversize_is_refused_by_its_setting(
    files_server: tuple[str, Path, list[str]], settings: Settings, tmp_path: Path
) -> None:
    base, root, _ = files_server
    (root / "big.safetensors").write_bytes(LORA_BYTES)
    settings.max_lora_bytes = len(LORA_BYTES) - 1
    limit = f"{len(LORA_BYTES) - 1} bytes"
    err = failure(job(settings, tmp_path), request(high_noise_loras=[{"path": f"{base}/big.safetensors"}]))
    assert err.code == ErrorCode.MEDIA_ACCESS_FAILED
    assert err.message.startswith(
        f"cannot read high_noise_loras[0].path: the file at the high_noise_loras[0].path URL is {len(LORA_BYTES)} "
        f"bytes"
    )
    assert limit in err.message and err.message.endswith("WANFORGE_MAX_LORA_BYTES sets the limit")

    ctx = job(settings, tmp_path)
    key = ctx.storage.new_key("uploads", "big.safetensors")
    ctx.storage.put_bytes(key, LORA_BYTES)
    owned(ctx, key)
    err = failure(ctx, request(loras=[{"path": f"/files/{key}"}]))
    assert err.code == ErrorCode.MEDIA_ACCESS_FAILED
    assert err.message.startswith("cannot read loras[0].path: the upload is ")
    assert err.message.endswith("WANFORGE_MAX_LORA_BYTES sets the limit")

    settings.lora_dir = root
    err = failure(job(settings, tmp_path), request(loras=[{"path": "big.safetensors"}]))
    assert err.code == ErrorCode.INVALID_PARAMETER
    assert err.message.startswith("invalid parameter loras[0].path: LoRA 'big.safetensors' is ")
    assert err.message.endswith("WANFORGE_MAX_LORA_BYTES sets the limit")


def test_a_failed_download_is_1402_with_the_reason(
    files_server: tuple[str, Path, list[str]], settings: Settings, tmp_path: Path
) -> None:
    base, _, _ = files_server
    err = failure(job(settings, tmp_path), request(loras=[{"path": f"{base}/nothing-here.safetensors"}]))
    assert (err.code, err.message) == (
        ErrorCode.MEDIA_ACCESS_FAILED,
        "cannot read loras[0].path: loras[0].path URL answered HTTP 404 File not found",
    )


def test_private_addresses_follow_the_image_rules(settings: Settings, tmp_path: Path) -> None:
    settings.allow_private_urls = False
    err = failure(job(settings, tmp_path), request(loras=[{"path": "http://127.0.0.1:9/x.safetensors"}]))
    assert err.code == ErrorCode.MEDIA_ACCESS_FAILED and "WANFORGE_ALLOW_PRIVATE_URLS" in err.message


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("https://e.com/a/b/My%20Style.safetensors?token=1", "My Style.safetensors"),
        ("https://civitai.com/", "civitai.com"),
        ("/files/outputs/k/p3r5on_low_noise.safetensors", "p3r5on_low_noise.safetensors"),
        ("lightx2v", "lightx2v"),
    ],
)
def test_display_name(path: str, name: str) -> None:
    assert display_name(path) == name


def test_check_safetensors_counts_tensors(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    path.write_bytes(LORA_BYTES)
    assert check_safetensors(path, len(LORA_BYTES)) == 1


def test_the_download_cache_is_pruned_least_recently_used_first(
    files_server: tuple[str, Path, list[str]], settings: Settings, tmp_path: Path
) -> None:
    """WANFORGE_LORA_CACHE_GB: old downloads go once the cache is over its size; recent ones stay."""
    import os
    import time

    from wanforge.media.lora_files import prune_lora_cache

    cache = settings.data_dir / "loras"
    cache.mkdir(parents=True)
    now = time.time()
    for name, age_s in (("old", 7200.0), ("older", 9000.0), ("recent", 60.0)):
        (cache / f"{name}.safetensors").write_bytes(b"x" * 1000)
        os.utime(cache / f"{name}.safetensors", (now - age_s, now - age_s))
    assert prune_lora_cache(cache, 2500, now) == 1000  # 3000 bytes over 2500: the oldest goes
    assert sorted(p.stem for p in cache.iterdir()) == ["old", "recent"]
    assert prune_lora_cache(cache, 0, now) == 1000  # a file used in the last 10 minutes stays
    assert sorted(p.stem for p in cache.iterdir()) == ["recent"]

    # a download over the limit prunes the rest; the file just fetched stays for its job
    base, root, _seen = files_server
    (root / "style.safetensors").write_bytes(LORA_BYTES)
    os.utime(cache / "recent.safetensors", (now - 3600, now - 3600))
    tiny = settings.model_copy(update={"lora_cache_gb": 0.0})
    got = resolve_loras(job(tiny, tmp_path), request(loras=[{"path": f"{base}/style.safetensors"}]))
    assert [p.name for p in cache.iterdir()] == [f"{SHA}.safetensors"]
    assert got.loras[0].request.file.read_bytes() == LORA_BYTES
