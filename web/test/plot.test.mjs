// scripts/plot.mjs: the plots in docs/guide are drawn from benchmark samples by it. Node only.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const script = fileURLToPath(new URL("../../scripts/plot.mjs", import.meta.url));

test("plot.mjs draws each series' samples with their p50 and p99", () => {
  const dir = mkdtempSync(join(tmpdir(), "plot-"));
  const native = join(dir, "native.json");
  const browser = join(dir, "browser.json");
  // 1..100 ms in a shuffled order: p50 (rounded index 50) is 51, p99 is 99.
  const shuffled = Array.from({ length: 100 }, (_, i) => ((i * 37) % 100) + 1);
  writeFileSync(native, JSON.stringify({ bench: "glare", command: "politely bench glare", series: [
    { name: "glare round, live connection", unit: "ms", samples: shuffled },
    { name: "glare round, fresh connections", unit: "ms", samples: [3, 4, 5] },
  ] }));
  writeFileSync(browser, JSON.stringify({ bench: "browser", series: [{ name: "x", unit: "ms", samples: [40, 60] }] }));
  const out = join(dir, "glare.svg");
  const printed = execFileSync("node", [script, "--title", "Glare <round>", "--out", out, `${native}#live`, `Chromium=${browser}`], { encoding: "utf8" });
  assert.match(printed, /glare round, live connection: n=100 p50 51\.0 ms p99 99\.0 ms/);
  const svg = readFileSync(out, "utf8");
  assert.ok(svg.startsWith("<svg") && svg.trim().endsWith("</svg>"));
  assert.ok(svg.includes("Glare &lt;round&gt;"), "the title, escaped");
  // `#live` kept the live series of the first file; the labelled file's one series is named by its label.
  const labels = [...svg.matchAll(/<path [^>]*data-label="([^"]*)"/g)].map((m) => m[1]);
  assert.deepEqual(labels, ["glare round, live connection", "Chromium"]);
  assert.ok(svg.includes("glare round, live connection: p50 51.0 ms, p99 99.0 ms (n=100)"));
  assert.ok(svg.includes("Chromium: p50 60.0 ms, p99 60.0 ms (n=2)"));
  // Each line is a staircase that never goes left or down, and ends at 100%.
  for (const [, d] of svg.matchAll(/<path d="([^"]*)"/g)) {
    const points = [...d.matchAll(/([\d.]+),([\d.]+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
    for (let i = 1; i < points.length; i++) {
      assert.ok(points[i][0] >= points[i - 1][0] && points[i][1] <= points[i - 1][1], `step ${i} of ${d.slice(0, 40)}`);
    }
    assert.equal(points.at(-1)[1], 40, "the top of the plot area is 100%");
  }
});

test("plot.mjs refuses samples that are not numbers, and an empty selection", () => {
  const dir = mkdtempSync(join(tmpdir(), "plot-"));
  const bad = join(dir, "bad.json");
  writeFileSync(bad, JSON.stringify({ series: [{ name: "a", samples: [1, "2"] }] }));
  const r = spawnSync("node", [script, "--out", join(dir, "x.svg"), bad], { encoding: "utf8" });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /not numbers/);
  const good = join(dir, "good.json");
  writeFileSync(good, JSON.stringify({ series: [{ name: "a", samples: [1] }] }));
  const none = spawnSync("node", [script, "--out", join(dir, "y.svg"), `${good}#zzz`], { encoding: "utf8" });
  assert.equal(none.status, 1);
  assert.match(none.stderr, /nothing to draw/);
});
