#!/usr/bin/env bash
# Runs the politely crate's examples that end by themselves, and fails if one fails. Each
# starts its own signaling server on 127.0.0.1 (the `browser` example runs until Ctrl-C and
# is only built). The release profile: file_transfer moves 8 MiB.
#
#   bash scripts/run-examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p politely --examples
for example in chat own_signaling game_loop call file_transfer; do
  printf '\n== example %s\n' "$example"
  timeout 120 "target/release/examples/$example"
done
