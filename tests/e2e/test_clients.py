"""The seed's curl flow and the official `wavespeed` SDK, unchanged but for base URL and key."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import wavespeed

from tests.e2e.server import Server
from tests.e2e.video import decode_mp4

pytestmark = pytest.mark.slow


def _curl(*args: str) -> dict[str, object]:
    out = subprocess.run(
        ["curl", "--silent", "--show-error", "--location", *args], check=True, capture_output=True
    )
    return dict(json.loads(out.stdout))


def test_seed_curl_flow(server: Server, image_16x9: Path) -> None:
    auth = f"Authorization: Bearer {server.api_key}"
    uploaded = _curl(
        "--request", "POST", f"{server.base_url}/api/v3/media/upload/binary",
        "--header", auth, "--form", f"file=@{image_16x9}",
    )  # fmt: skip
    image_url = uploaded["data"]["download_url"]  # type: ignore[index]
    # the seed's submit command, with an image and a prompt added
    submitted = _curl(
        "--request", "POST", f"{server.base_url}/api/v3/alibaba/wan-2.2/i2v-plus-1080p",
        "--header", "Content-Type: application/json", "--header", auth,
        "--data-raw", json.dumps(
            {"duration": 5, "enable_prompt_expansion": False, "seed": -1, "image": image_url, "prompt": "a slow pan"}
        ),
    )  # fmt: skip
    request_id = submitted["data"]["id"]  # type: ignore[index]
    deadline = time.monotonic() + 180
    while True:
        result = _curl(
            "--request", "GET", f"{server.base_url}/api/v3/predictions/{request_id}/result", "--header", auth
        )
        data = result["data"]
        if data["status"] in ("completed", "failed") or time.monotonic() > deadline:  # type: ignore[index]
            break
        time.sleep(0.5)
    assert result["code"] == 200 and data["status"] == "completed", result  # type: ignore[index]
    video = decode_mp4(httpx.get(data["outputs"][0], timeout=30).content)  # type: ignore[index]
    assert (video.width, video.height, video.frames, video.fps) == (1920, 1080, 81, 16.0)
    assert video.codec == "h264"


def test_seed_curl_example_body_is_refused(server: Server) -> None:
    out = subprocess.run(
        [
            "curl", "--silent", "--location", "--request", "POST",
            f"{server.base_url}/api/v3/alibaba/wan-2.2/i2v-plus-1080p",
            "--header", "Content-Type: application/json", "--header", f"Authorization: Bearer {server.api_key}",
            "--data-raw", '{\n    "duration": 5,\n    "enable_prompt_expansion": false,\n    "seed": -1\n}',
            "--write-out", "\n%{http_code}",
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "400"
    parsed = json.loads(body)
    assert parsed["code"] == 1400 and "image" in parsed["message"]


def test_official_sdk(server: Server, image_16x9: Path) -> None:
    client = wavespeed.Client(api_key=server.api_key, base_url=server.base_url)
    url = client.upload(str(image_16x9))
    assert url.startswith(server.base_url + "/files/uploads/")
    output = client.run(
        "alibaba/wan-2.2/i2v-plus-1080p", {"image": url, "prompt": "a slow pan", "seed": 11}, timeout=180
    )
    video = decode_mp4(httpx.get(output["outputs"][0], timeout=30).content)
    assert (video.width, video.height, video.frames, video.fps) == (1920, 1080, 81, 16.0)


def test_official_sdk_reports_failures(server: Server) -> None:
    client = wavespeed.Client(api_key=server.api_key, base_url=server.base_url)
    with pytest.raises(RuntimeError, match="HTTP 400"):
        client.run("alibaba/wan-2.2/i2v-plus-480p", {"prompt": "no image"}, timeout=30)
    bad = wavespeed.Client(api_key="wrong", base_url=server.base_url)
    with pytest.raises(RuntimeError, match="HTTP 401"):
        bad.run("alibaba/wan-2.2/i2v-plus-480p", {"image": "https://e.com/a.png", "prompt": "x"}, timeout=30)
