#!/usr/bin/env node
// Draws the samples benchmarks write with `--json FILE` (and the browser tests with
// POLITELY_SAMPLES_DIR) as an SVG: one line per series, the share of samples at or under each
// time (an empirical CDF), p50 and p99 in the legend. No dependencies.
//
//   node scripts/plot.mjs --title "Join to first echoed message" --out connect.svg connect.json
//   node scripts/plot.mjs --out glare.svg "glare.json#live" "Chromium=chromium.json"
//
//   node scripts/plot.mjs --phases --out connect-phases.svg "before=old.json" "now=connect.json"
//
// With `--phases`, each input is one stacked bar of the series a benchmark wrote as phases of
// a whole (`"phase": true`): the mean of each phase, so that they add up to the mean total.
//
// An input is [LABEL=]FILE[#TEXT]: `#TEXT` keeps only the file's series whose names contain
// TEXT; LABEL names the series kept (a prefix when more than one is kept). `--log` draws the
// time axis on a log scale; `--max MS` cuts it.

import { readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"];
const W = 720;
const H = 400; // the plot; the legend goes below it, a line per series
const M = { left: 60, right: 20, top: 40, bottom: 50 };

export function percentile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * q))];
}

/** The series of the inputs, each {label, samples (sorted), command}. */
export function load(inputs) {
  const out = [];
  for (const input of inputs) {
    const eq = input.indexOf("=");
    const [label, rest] = eq > 0 && !input.slice(0, eq).includes("/") ? [input.slice(0, eq), input.slice(eq + 1)] : [null, input];
    const hash = rest.lastIndexOf("#");
    const [file, filter] = hash >= 0 ? [rest.slice(0, hash), rest.slice(hash + 1)] : [rest, null];
    const data = JSON.parse(readFileSync(file, "utf8"));
    if (!Array.isArray(data.series)) throw new Error(`${file}: no "series" array`);
    const kept = data.series.filter((s) => !filter || s.name.includes(filter));
    for (const s of kept) {
      if (!Array.isArray(s.samples) || s.samples.some((x) => typeof x !== "number" || !Number.isFinite(x))) {
        throw new Error(`${file}: series "${s.name}" has samples that are not numbers`);
      }
      if (s.samples.length === 0) continue;
      const name = label === null ? s.name : kept.length === 1 ? label : `${label}: ${s.name}`;
      out.push({ label: name, name: s.name, file: label ?? basename(file), phase: s.phase === true, samples: [...s.samples].sort((a, b) => a - b), command: data.command ?? basename(file) });
    }
  }
  return out;
}

/** Round numbers for axis ticks between 0 and `max`, about `count` of them. */
function ticks(max, count) {
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let t = 0; out.length === 0 || out.at(-1) < max * (1 - 1e-9); t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

function logTicks(min, max) {
  const out = [];
  for (let e = Math.floor(Math.log10(min)); 10 ** e <= max * 1.0001; e++) {
    for (const m of [1, 2, 5]) {
      const t = m * 10 ** e;
      if (t >= min * 0.9999 && t <= max * 1.0001) out.push(Number(t.toPrecision(12)));
    }
  }
  return out;
}

const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const num = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

/** The SVG text for `series` ({label, samples sorted}). */
export function draw(series, { title = "", log = false, max = null, note = "" } = {}) {
  if (series.length === 0) throw new Error("nothing to draw: no series with samples");
  const all = series.flatMap((s) => s.samples);
  const top = max ?? Math.max(...all);
  const bottom = log ? Math.max(Math.min(...all.filter((x) => x > 0)), top / 1e4) : 0;
  const xTicks = log ? logTicks(bottom, top) : ticks(top, 8);
  const xMax = log ? top : xTicks.at(-1);
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const x = log
    ? (v) => M.left + (pw * (Math.log10(Math.max(v, bottom)) - Math.log10(bottom))) / (Math.log10(xMax) - Math.log10(bottom))
    : (v) => M.left + (pw * Math.min(v, xMax)) / xMax;
  const y = (share) => M.top + ph * (1 - share);
  const parts = [];
  const height = H + 10 + 18 * series.length;
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${height}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`);
  for (const t of xTicks) {
    parts.push(`<line x1="${x(t).toFixed(1)}" y1="${M.top}" x2="${x(t).toFixed(1)}" y2="${M.top + ph}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${x(t).toFixed(1)}" y="${M.top + ph + 16}" text-anchor="middle">${t}</text>`);
  }
  for (const share of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line x1="${M.left}" y1="${y(share).toFixed(1)}" x2="${M.left + pw}" y2="${y(share).toFixed(1)}" stroke="${share === 0.5 ? "#bbb" : "#e5e5e5"}"/>`);
    parts.push(`<text x="${M.left - 6}" y="${(y(share) + 4).toFixed(1)}" text-anchor="end">${Math.round(share * 100)}%</text>`);
  }
  // p99, dashed, named inside the plot (its own tick would overlap 100%).
  parts.push(`<line x1="${M.left}" y1="${y(0.99).toFixed(1)}" x2="${M.left + pw}" y2="${y(0.99).toFixed(1)}" stroke="#999" stroke-dasharray="4 3"/>`);
  parts.push(`<text x="${M.left + pw - 4}" y="${(y(0.99) + 12).toFixed(1)}" text-anchor="end" fill="#777" font-size="10">99%</text>`);
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  parts.push(`<text x="${M.left + pw / 2}" y="${H - 12}" text-anchor="middle">milliseconds${log ? " (log scale)" : ""}; samples at or under</text>`);
  const legends = series.map(
    (s) => `${s.label}: p50 ${num(percentile(s.samples, 0.5))} ms, p99 ${num(percentile(s.samples, 0.99))} ms (n=${s.samples.length})`,
  );
  const legendX = M.left;
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const n = s.samples.length;
    let d = `M${x(s.samples[0]).toFixed(1)},${y(0).toFixed(1)}`;
    s.samples.forEach((v, k) => {
      const px = x(v).toFixed(1);
      d += ` L${px},${y(k / n).toFixed(1)} L${px},${y((k + 1) / n).toFixed(1)}`;
    });
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.8" data-label="${esc(s.label)}"/>`);
    const ly = H + 8 + i * 18;
    parts.push(`<line x1="${legendX.toFixed(1)}" y1="${ly - 4}" x2="${(legendX + 18).toFixed(1)}" y2="${ly - 4}" stroke="${color}" stroke-width="3"/>`);
    parts.push(`<text x="${(legendX + 24).toFixed(1)}" y="${ly}" fill="#222">${esc(legends[i])}</text>`);
  });
  if (note) parts.push(`<text x="${M.left}" y="${M.top - 6}" fill="#666" font-size="10">${esc(note)}</text>`);
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** The SVG text for stacked bars: `bars` = [{label, phases: [{name, samples sorted}]}]. */
export function drawPhases(bars, { title = "", note = "" } = {}) {
  if (bars.length === 0 || bars.some((b) => b.phases.length === 0)) throw new Error("nothing to draw: an input has no phases");
  const names = bars[0].phases.map((p) => p.name);
  const rowH = 34;
  const plotTop = M.top + 10;
  const plotH = rowH * bars.length;
  const legendTop = plotTop + plotH + 44;
  const height = legendTop + 18 * names.length + 10;
  const left = 150;
  const pw = W - left - M.right;
  const total = Math.max(...bars.map((b) => b.phases.reduce((a, p) => a + mean(p.samples), 0)));
  const xTicks = ticks(total, 8);
  const xMax = xTicks.at(-1);
  const x = (v) => left + (pw * v) / xMax;
  const parts = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${height}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`);
  if (note) parts.push(`<text x="${left}" y="${plotTop - 4}" fill="#666" font-size="10">${esc(note)}</text>`);
  for (const t of xTicks) {
    parts.push(`<line x1="${x(t).toFixed(1)}" y1="${plotTop}" x2="${x(t).toFixed(1)}" y2="${plotTop + plotH}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${x(t).toFixed(1)}" y="${plotTop + plotH + 16}" text-anchor="middle">${t}</text>`);
  }
  parts.push(`<text x="${left + pw / 2}" y="${plotTop + plotH + 34}" text-anchor="middle">milliseconds, mean of each phase</text>`);
  bars.forEach((bar, i) => {
    const y = plotTop + i * rowH + 6;
    const sum = bar.phases.reduce((a, p) => a + mean(p.samples), 0);
    parts.push(`<text x="${left - 8}" y="${y + 15}" text-anchor="end">${esc(bar.label)}</text>`);
    let at = 0;
    bar.phases.forEach((p, k) => {
      const w = mean(p.samples);
      parts.push(`<rect x="${x(at).toFixed(1)}" y="${y}" width="${Math.max(0, x(at + w) - x(at)).toFixed(1)}" height="${rowH - 12}" fill="${COLORS[k % COLORS.length]}" data-phase="${esc(p.name)}" data-mean="${w.toFixed(3)}"/>`);
      at += w;
    });
    parts.push(`<text x="${(x(sum) + 4).toFixed(1)}" y="${y + 15}" fill="#222">${num(sum)} ms</text>`);
  });
  names.forEach((name, k) => {
    const ly = legendTop + k * 18;
    const stats = bars.map((b) => {
      const p = b.phases.find((q) => q.name === name);
      return p ? `${num(mean(p.samples))} (p50 ${num(percentile(p.samples, 0.5))}, p99 ${num(percentile(p.samples, 0.99))})` : "-";
    });
    parts.push(`<rect x="${M.left}" y="${ly - 10}" width="12" height="12" fill="${COLORS[k % COLORS.length]}"/>`);
    parts.push(`<text x="${M.left + 18}" y="${ly}" fill="#222">${esc(name)}: ${esc(stats.join(" / "))} ms</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

function main(argv) {
  const opts = { inputs: [], log: false, phases: false, max: null, title: "", out: null, note: "" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--log") opts.log = true;
    else if (a === "--phases") opts.phases = true;
    else if (["--title", "--out", "--max", "--note"].includes(a)) {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      opts[a.slice(2)] = argv[++i];
    } else if (a.startsWith("--")) throw new Error(`unknown option ${a}`);
    else opts.inputs.push(a);
  }
  if (opts.inputs.length === 0 || !opts.out) {
    throw new Error("usage: plot.mjs --out FILE.svg [--title T] [--log | --phases] [--max MS] [--note T] [LABEL=]FILE.json[#SERIES]...");
  }
  if (opts.phases) {
    const bars = opts.inputs.map((input) => {
      const phases = load([input]).filter((s) => s.phase);
      return { label: phases[0]?.file ?? input, phases };
    });
    writeFileSync(opts.out, drawPhases(bars, { title: opts.title, note: opts.note }));
    for (const bar of bars) {
      const parts = bar.phases.map((p) => `${p.name} ${num(mean(p.samples))}`);
      console.log(`${bar.label}: ${parts.join(", ")} ms (means)`);
    }
    return;
  }
  const series = load(opts.inputs).filter((s) => !s.phase);
  const svg = draw(series, { title: opts.title, log: opts.log, max: opts.max === null ? null : Number(opts.max), note: opts.note });
  writeFileSync(opts.out, svg);
  for (const s of series) {
    console.log(`${s.label}: n=${s.samples.length} p50 ${num(percentile(s.samples, 0.5))} ms p99 ${num(percentile(s.samples, 0.99))} ms`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    main(process.argv.slice(2));
  } catch (e) {
    console.error(`plot.mjs: ${e.message}`);
    process.exit(1);
  }
}
