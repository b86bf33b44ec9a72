#!/usr/bin/env bash
# Install Debian's chromium for the playground's browser tests (Playwright drives it through
# executable_path; it never downloads a browser). Idempotent: nothing to do when one is present.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -n "${WANFORGE_CHROMIUM:-}" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing: run 'apt-get install -y chromium' as root (the browser tests skip without it)" >&2
  exit 0
fi
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
