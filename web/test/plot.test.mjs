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

test("plot.mjs --phases stacks the mean of each phase, one bar per input", () => {
  const dir = mkdtempSync(join(tmpdir(), "plot-"));
  const file = (name, a, b) => {
    const path = join(dir, name);
    writeFileSync(path, JSON.stringify({ bench: "connect", series: [
      { name: "total", unit: "ms", samples: a.map((x, i) => x + b[i]) },
      { name: "signaling", unit: "ms", phase: true, samples: a },
      { name: "transport", unit: "ms", phase: true, samples: b },
    ] }));
    return path;
  };
  const before = file("before.json", [1, 3], [6, 10]); // means 2 and 8: 10 ms
  const after = file("after.json", [1, 1], [2, 2]); // means 1 and 2: 3 ms
  const out = join(dir, "phases.svg");
  const printed = execFileSync("node", [script, "--phases", "--out", out, `before=${before}`, `after=${after}`], { encoding: "utf8" });
  assert.match(printed, /before: signaling 2\.00, transport 8\.00 ms \(means\)/);
  const svg = readFileSync(out, "utf8");
  const rects = [...svg.matchAll(/<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"[^>]*data-phase="([^"]*)" data-mean="([\d.]+)"/g)]
    .map((m) => ({ x: Number(m[1]), width: Number(m[2]), phase: m[3], mean: Number(m[4]) }));
  assert.deepEqual(rects.map((r) => [r.phase, r.mean]), [["signaling", 2], ["transport", 8], ["signaling", 1], ["transport", 2]]);
  // Widths in proportion to the means, each phase starting where the one before ends.
  const scale = rects[0].width / 2;
  for (const r of rects) assert.ok(Math.abs(r.width - r.mean * scale) < 0.2, `${r.phase} ${r.width}`);
  assert.ok(Math.abs(rects[1].x - (rects[0].x + rects[0].width)) < 0.2);
  assert.ok(svg.includes(">10.0 ms<") && svg.includes(">3.00 ms<"), "each bar's total");
  assert.ok(!svg.includes(">total<"), "the whole is not a phase");
});
