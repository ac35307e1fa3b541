#!/usr/bin/env bash
# Measures the benchmarks the guide plots and redraws docs/guide/plots/*.svg from their samples.
#
#   bash scripts/plots.sh              # measure the native benchmarks, keep the browser samples, draw
#   bash scripts/plots.sh --browser    # also run the Chromium tests for the browser lines (root)
#   bash scripts/plots.sh --draw       # draw again from the samples in docs/guide/plots/data
#
# Everything runs on loopback. The samples are kept (JSON, docs/guide/plots/data) so that a
# plot can be redrawn, or compared with a later run, without measuring again.
set -euo pipefail
cd "$(dirname "$0")/.."

measure=1
browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) browser=1 ;;
    --draw) measure=0 ;;
    *) echo "usage: bash scripts/plots.sh [--browser | --draw]" >&2; exit 2 ;;
  esac
done

plots=docs/guide/plots
data=$plots/data
mkdir -p "$data/browser"

if [ "$measure" = 1 ]; then
  cargo build --release -q -p politely-cli
  bin=target/release/politely
  "$bin" bench connect --count 200 --json "$data/connect.json"
  "$bin" bench glare --rounds 200 --json "$data/glare.json"
  "$bin" bench sfu --clients 8 --rounds 50 --churn 50 --stream-secs 0 --json "$data/sfu-perfect.json"
  "$bin" bench sfu --clients 8 --rounds 50 --churn 50 --stream-secs 0 --gate 500 --json "$data/sfu-gate.json"
  if [ "$browser" = 1 ]; then
    POLITELY_SAMPLES_DIR="$PWD/$data/browser" bash web/test/run.sh browser.test.mjs
  fi
fi

draw() { node scripts/plot.mjs "$@" | sed 's/^/  /'; }
b=$data/browser

echo "connect.svg"
draw --title "Join to the first echoed data-channel message (native, loopback)" \
  --out $plots/connect.svg "native=$data/connect.json#join to first"

# The phase plots draw the earlier runs kept beside the latest, one bar each
# (data/connect-phases-N-LABEL.json: N orders the bars, LABEL names one), so that what a change
# took out stays visible. Keep a run before changing what it measures.
echo "connect-phases.svg"
draw --phases --title "Where a connect's time goes (native, mean of each phase)" \
  --out $plots/connect-phases.svg $(ls $data/connect-phases-*.json 2>/dev/null | sed 's/.*connect-phases-[0-9]*-\(.*\)\.json/\1=&/') "now=$data/connect.json"

echo "glare-phases.svg"
draw --phases --title "Where a live glare round's time goes (native, mean of each phase)" \
  --out $plots/glare-phases.svg $(ls $data/glare-phases-*.json 2>/dev/null | sed 's/.*glare-phases-[0-9]*-\(.*\)\.json/\1=&/') "now=$data/glare.json"

echo "glare-live.svg"
draw --title "A glare round on a live connection (both sides change at once)" \
  --out $plots/glare-live.svg \
  "native - native=$data/glare.json#live" \
  "Chromium - native=$b/chromium-native-glare-round-native-polite.json" \
  "Chromium - Chromium=$b/chromium-chromium-glare-round-live-connection.json"

echo "glare-fresh.svg"
draw --title "Fresh pair: join, glare on the first offer, converged" \
  --out $plots/glare-fresh.svg \
  "native - native=$data/glare.json#fresh" \
  "Chromium - Chromium=$b/chromium-chromium-join-to-converged-fresh-connections.json"

echo "sfu.svg"
draw --title "SFU, 8 clients: publish to the first packet at each subscriber" \
  --out $plots/sfu.svg \
  "perfect negotiation=$data/sfu-perfect.json#publish" \
  "gate (500 ms leases)=$data/sfu-gate.json#publish"

echo "sfu-churn.svg"
draw --title "SFU, 8 clients: everyone publishes at once, until everyone receives everyone" \
  --out $plots/sfu-churn.svg \
  "perfect negotiation=$data/sfu-perfect.json#churn" \
  "gate (500 ms leases)=$data/sfu-gate.json#churn"
