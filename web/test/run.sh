#!/usr/bin/env bash
# The browser tests: installs what they need (Debian's chromium, playwright-core from npm),
# builds the politely binary, and runs the tests in a network namespace that has only `lo`.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ] || ! command -v turnserver >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium coturn >/dev/null
fi
npm ci --no-audit --no-fund --silent
cargo build --release -p politely-cli --quiet

# Only loopback: Chromium and every peer can reach nothing but this machine. The test files
# to run may be named; by default: the browser tests, TURN with coturn, the SFU room test, then
# 20 differential scripts.
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(browser.test.mjs turn.test.mjs sfu.test.mjs differential.test.mjs)
exec unshare -n bash -c 'ip link set lo up && exec node --test --test-concurrency=1 "$@"' bash "${files[@]}"

