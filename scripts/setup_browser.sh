#!/usr/bin/env bash
# Debian's headless Chromium and its WebDriver, for the web chat page's browser test (tests/serving/test_web.py,
# skipped without them). Idempotent; needs root for apt-get, and says so instead of failing without it.
set -euo pipefail
if command -v chromium > /dev/null && command -v chromedriver > /dev/null; then
  echo "browser ok: $(chromium --version 2>/dev/null | head -1)"
elif [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver > /dev/null \
    || { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver > /dev/null; }
  echo "browser ok: $(chromium --version 2>/dev/null | head -1)"
else
  echo "NOTE: no chromium + chromedriver and no root for apt-get; the web page's browser test will be skipped"
fi
