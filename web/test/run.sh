#!/usr/bin/env bash
# The browser tests: installs what they need (Debian's chromium, firefox-esr and coturn;
# playwright-core and puppeteer-core from npm), builds the politely binary, and runs the tests
# in a network namespace that has only `lo`.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/firefox-esr ] || ! command -v turnserver >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium firefox-esr coturn >/dev/null
fi
npm ci --no-audit --no-fund --silent
cargo build --release -p politely-cli --quiet

# Only loopback: Chromium and every peer can reach nothing but this machine. The test files
# to run may be named; by default: the browser tests, TURN with coturn, Firefox, IPv6, the SFU
# room test, then 20 differential scripts.
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(browser.test.mjs turn.test.mjs firefox.test.mjs ipv6.test.mjs sfu.test.mjs differential.test.mjs)
loopback=()
ipv6=()
for f in "${files[@]}"; do
  if [ "$f" = ipv6.test.mjs ]; then ipv6+=("$f"); else loopback+=("$f"); fi
done
# Both runs go ahead whatever the other's outcome; the script fails if either did.
status=0
if [ ${#loopback[@]} -gt 0 ]; then
  unshare -n bash -c 'ip link set lo up && exec node --test --test-concurrency=1 "$@"' bash "${loopback[@]}" || status=1
fi
# The IPv6 test in a namespace of its own: `lo`, and a veth pair with the documentation address
# 2001:db8::1 (Chromium gathers nothing on ::1); the pair exists only inside the namespace.
if [ ${#ipv6[@]} -gt 0 ]; then
  unshare -n bash -c 'ip link set lo up && ip link add veth0 type veth peer name veth1 &&
    ip -6 addr add 2001:db8::1/64 dev veth0 nodad && ip link set veth0 up && ip link set veth1 up &&
    exec node --test --test-concurrency=1 "$@"' bash "${ipv6[@]}" || status=1
fi
exit "$status"

