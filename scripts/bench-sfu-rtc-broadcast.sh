#!/usr/bin/env bash
# `politely bench sfu` with rtc's own broadcast example (webrtc-rs rtc 0.21.1,
# examples/broadcast) under the same 1 -> N load, in one run. Builds the example from the
# published rtc crate, unmodified (the first build takes about three minutes), and runs the
# bench in a network namespace whose one interface is loopback: the example's HTTP server
# listens on every interface.
#
#   bash scripts/bench-sfu-rtc-broadcast.sh [politely bench sfu options]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/rtc-broadcast
bin=$work/target/release/examples/broadcast

if [ ! -x "$bin" ]; then
  registry=${CARGO_HOME:-$HOME/.cargo}/registry/src
  src=$(ls -d "$registry"/*/rtc-0.21.1 2>/dev/null | head -n1 || true)
  if [ -z "$src" ]; then
    # politely builds a patched copy of rtc; fetch the published one.
    mkdir -p "$work/fetch/src"
    printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nrtc = "=0.21.1"\n[workspace]\n' \
      > "$work/fetch/Cargo.toml"
    touch "$work/fetch/src/lib.rs"
    (cd "$work/fetch" && cargo fetch --quiet)
    src=$(ls -d "$registry"/*/rtc-0.21.1 | head -n1)
  fi
  rm -rf "$work/rtc"
  mkdir -p "$work"
  cp -r "$src" "$work/rtc"
  # Its own workspace, not politely's (it sits below politely's root).
  printf '\n[workspace]\n' >> "$work/rtc/Cargo.toml"
  (cd "$work/rtc" && CARGO_TARGET_DIR="$work/target" cargo build --release --example broadcast)
fi

cargo build --release -p politely-cli
politely=$root/target/release/politely
if [ "$(id -u)" = 0 ]; then ns=(unshare -n); else ns=(unshare -rn); fi
"${ns[@]}" sh -c 'ip link set lo up && bin=$1 && shift && exec "$0" bench sfu --rtc-broadcast "$bin" "$@"' \
  "$politely" "$bin" "$@"
