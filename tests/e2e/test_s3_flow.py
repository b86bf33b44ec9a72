"""The whole service with its files in an S3-compatible store (moto's real S3 server, tests/s3.py):
uploads and outputs go to the bucket, /files answers 302 to a presigned URL."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import wavespeed

from tests.e2e.server import running_server
from tests.e2e.video import decode_mp4
from tests.s3 import CREDENTIALS, S3Endpoint

pytestmark = pytest.mark.slow


def test_generate_on_s3(tmp_path: Path, s3_endpoint: S3Endpoint, image_16x9: Path) -> None:
    import boto3

    bucket = s3_endpoint.new_bucket()
    with running_server(
        tmp_path,
        AWS_ACCESS_KEY_ID=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        AWS_SECRET_ACCESS_KEY=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        AWS_DEFAULT_REGION=CREDENTIALS["AWS_DEFAULT_REGION"],
        WANFORGE_STORAGE_URL=f"s3://{bucket}/wf",
        WANFORGE_S3_ENDPOINT_URL=s3_endpoint.url,
    ) as server:
        client = wavespeed.Client(api_key=server.api_key, base_url=server.base_url)
        out = client.run(
            "alibaba/wan-2.2/i2v-plus-480p",
            {"image": client.upload(str(image_16x9)), "prompt": "x"},
            timeout=180,
        )
        [url] = out["outputs"]
        redirect = httpx.get(url, timeout=30)
        assert redirect.status_code == 302
        assert redirect.headers["location"].startswith(f"{s3_endpoint.url}/{bucket}/wf/outputs/")
        video = decode_mp4(httpx.get(url, timeout=30, follow_redirects=True).content)
        assert (video.width, video.height, video.frames) == (832, 480, 81)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint.url,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    names = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert [n.split("/")[1] for n in names] == ["outputs", "uploads"]
    assert names[0].endswith(".mp4") and names[1].endswith("/frame.png")
    assert not (server.data_dir / "files").exists()  # nothing went to the local directory
