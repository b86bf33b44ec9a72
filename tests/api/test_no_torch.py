"""The HTTP process never imports torch: the model lives in worker processes."""

from __future__ import annotations

import subprocess
import sys


def test_api_process_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from wanforge.config import Settings\n"
        "from wanforge.api.app import create_app\n"
        "import wanforge.cli, wanforge.worker.supervisor, wanforge.media.resolve, wanforge.media.images\n"
        "create_app(Settings(data_dir='/tmp/wanforge-no-torch'))\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the API process imported: {out.stdout.strip()}"
