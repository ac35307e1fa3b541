#!/usr/bin/env bash
# The browser tests: installs what they need (Debian's chromium, firefox-esr, coturn,
# redis-server, nftables, iptables, openssl and python3; playwright-core, puppeteer-core and
# typescript from npm), checks politely.js's type declarations, builds the
# politely binary, and runs the tests in network namespaces of their own (loopback only, or a
# veth pair that exists only inside the namespace).
set -euo pipefail
cd "$(dirname "$0")"

missing=0
for tool in chromium firefox-esr turnserver redis-server nft iptables openssl python3; do
  command -v "$tool" >/dev/null || missing=1
done
if [ "$missing" = 1 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    chromium firefox-esr coturn redis-server nftables iptables openssl python3 >/dev/null
fi
npm ci --no-audit --no-fund --silent
# politely.js's type declarations: the documented uses compile, the wrong ones do not.
npx tsc -p tsconfig.json
cargo build --release -p politely-cli --quiet

# Only loopback: Chromium and every peer can reach nothing but this machine. The test files
# to run may be named; by default: the browser tests, wss, TURN with coturn, Firefox, IPv6,
# privacy mode, faults (loss, a path change, a server restart), the SFU room test, then 20
# differential scripts.
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(client.test.mjs plot.test.mjs browser.test.mjs tls.test.mjs turn.test.mjs firefox.test.mjs ipv6.test.mjs privacy.test.mjs faults.test.mjs sfu.test.mjs differential.test.mjs)
loopback=()
ipv6=()
privacy=()
faults=()
for f in "${files[@]}"; do
  case "$f" in
    ipv6.test.mjs) ipv6+=("$f") ;;
    privacy.test.mjs) privacy+=("$f") ;;
    faults.test.mjs) faults+=("$f") ;;
    *) loopback+=("$f") ;;
  esac
done

# Runs the named tests in a new network namespace, after `setup` (commands run inside it).
status=0
in_namespace() {
  local setup="$1"
  shift
  [ $# -gt 0 ] || return 0
  # Every run goes ahead whatever the others' outcome; the script fails if any did.
  unshare -n bash -c "ip link set lo up && $setup && exec node --test --test-concurrency=1 \"\$@\"" bash "$@" || status=1
}
veth="ip link add veth0 type veth peer name veth1 && ip link set veth0 up && ip link set veth1 up"
in_namespace true "${loopback[@]}"
# IPv6 in a namespace of its own: `lo`, and a veth pair with the documentation address
# 2001:db8::1 (Chromium gathers nothing on ::1); the pair exists only inside the namespace.
in_namespace "$veth && ip -6 addr add 2001:db8::1/64 dev veth0 nodad" "${ipv6[@]}"
# Privacy mode: a page without capture permission gathers only on the default route's
# address, so the namespace has one, 192.0.2.1 (documentation range) on a veth pair, with a
# default route through it; nothing answers there, and nothing leaves the namespace.
in_namespace "$veth && ip addr add 192.0.2.1/24 dev veth0 && ip route add default via 192.0.2.254 dev veth0" "${privacy[@]}"
# Packet loss in a loopback-only namespace of its own, so its firewall rules touch nothing else.
in_namespace true "${faults[@]}"
exit "$status"
