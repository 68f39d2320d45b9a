#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver for the dashboard's browser test and screenshots
# (web/tests/browser.rs), idempotently: a no-op when both are there.  Runs as root on Debian.
set -euo pipefail
packages=(chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-browser: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
