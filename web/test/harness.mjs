// The browser tests' harness: a politely server, Chromium pages on it, and native
// `politely join` peers driven over stdin.

import { spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import puppeteer from "puppeteer-core";

export const BIN = process.env.POLITELY_BIN ?? fileURLToPath(new URL("../../target/release/politely", import.meta.url));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const FIREFOX = process.env.FIREFOX ?? "/usr/bin/firefox-esr";

/** Lines of a child's stream, with waiters for the next line that matches. */
class Lines {
  constructor(stream) {
    this.all = [];
    this.waiters = [];
    createInterface({ input: stream }).on("line", (line) => {
      this.all.push(line);
      this.waiters = this.waiters.filter((w) => !w(line));
    });
  }

  /** The first line from index `from` on that `pick` maps to something, within `ms`. */
  next(pick, { from = 0, ms = 10_000, what = "a line" } = {}) {
    for (const line of this.all.slice(from)) {
      const hit = pick(line);
      if (hit !== undefined && hit !== null && hit !== false) return Promise.resolve(hit);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out waiting for ${what}; last lines:\n${this.all.slice(-15).join("\n")}`));
      }, ms);
      const waiter = (line) => {
        const hit = pick(line);
        if (hit === undefined || hit === null || hit === false) return false;
        clearTimeout(timer);
        resolve(hit);
        return true;
      };
      this.waiters.push(waiter);
    });
  }
}

/** A `redis-server` of the test's own on a unix socket, without persistence: its `url` for
 * `politely serve --redis`, and `stop()`. */
export async function startRedis() {
  const dir = mkdtempSync(join(tmpdir(), "politely-redis-"));
  const socket = join(dir, "redis.sock");
  const child = spawn("redis-server", ["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket", socket, "--dir", dir], {
    stdio: "ignore",
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  await until(() => existsSync(socket), { what: "redis-server's socket" });
  return {
    url: `redis+unix://${socket}`,
    async stop() {
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `politely serve` on 127.0.0.1 with a port of its choosing; `args` and `env` add to it. */
export async function startServer(args = [], env = {}) {
  const listen = args.includes("--listen") ? [] : ["--listen", "127.0.0.1:0"];
  const child = spawn(BIN, ["serve", ...listen, "--rate-limit", "0", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: "warn", ...env },
  });
  const out = new Lines(child.stdout);
  new Lines(child.stderr);
  const addr = await out.next((l) => /^listening on (\S+)/.exec(l)?.[1], { what: "the server's address" });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const tls = args.includes("--tls-cert");
  return {
    addr,
    origin: `${tls ? "https" : "http"}://${addr}`,
    ws: `${tls ? "wss" : "ws"}://${addr}/ws`,
    async stop() {
      child.kill("SIGTERM");
      await exited;
    },
    /** Ends the server as a crash would (SIGKILL): no close frame to anyone. */
    async kill() {
      child.kill("SIGKILL");
      await exited;
    },
  };
}

/** A native peer: `politely join` with stdin lines as commands and chat; `args` are more of
 * join's options. */
export class Native {
  constructor(ws, room, args = []) {
    // POLITELY_NATIVE_LOG sets the native peer's log filter (RUST_LOG syntax), and
    // POLITELY_NATIVE_LOG_DIR keeps each native peer's whole log there, for replays.
    this.child = spawn(BIN, ["join", ws, room, ...args], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.POLITELY_NATIVE_LOG ?? "warn" },
    });
    if (process.env.POLITELY_NATIVE_LOG_DIR) {
      const file = `${process.env.POLITELY_NATIVE_LOG_DIR}/native-${this.child.pid}.log`;
      this.child.stderr.pipe(createWriteStream(file));
    }
    this.out = new Lines(this.child.stdout);
    this.err = new Lines(this.child.stderr);
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }

  async id() {
    return this.err.next((l) => /^politely: joined \S+ as (\S+)/.exec(l)?.[1], { what: "the native peer's id" });
  }

  send(line) {
    this.child.stdin.write(`${line}\n`);
  }

  /** The next chat message `<from>: <text>` printed, from stdout line index `from` on. */
  message(from, text, ms = 10_000) {
    return this.out.next((l) => l === `${from}: ${text}`, { what: `"${from}: ${text}" at the native peer`, ms });
  }

  /** Every connection's state, from `/stats`. */
  async stats() {
    const start = this.err.all.length;
    this.send("/stats");
    await this.err.next((l) => l === "politely: stats end", { from: start, what: "the native stats" });
    const out = {};
    for (const line of this.err.all.slice(start)) {
      const m = /^politely: stats (\{.*\})$/.exec(line);
      if (m) {
        const s = JSON.parse(m[1]);
        out[s.peer] = s;
      }
    }
    return out;
  }

  /** Script steps (without round and peer) toward every peer, sent in one write so they
   * run back to back; per step `null`, or the error the native peer reported. */
  async act(steps) {
    const start = this.err.all.length;
    this.child.stdin.write(steps.map((op) => `/act ${JSON.stringify(op)}\n`).join(""));
    const results = () =>
      this.err.all
        .slice(start)
        .map((l) => /^politely: act (ok|failed: .*)$/.exec(l)?.[1])
        .filter((r) => r !== undefined);
    await this.err.next(() => results().length >= steps.length || undefined, { from: start, what: "the native peer's act results" });
    return results()
      .slice(0, steps.length)
      .map((r) => (r === "ok" ? null : r.slice("failed: ".length)));
  }

  /** Every connection as its application sees it (`/state`), by peer id. */
  async state() {
    const start = this.err.all.length;
    this.send("/state");
    await this.err.next((l) => l === "politely: state end", { from: start, what: "the native state" });
    const out = {};
    for (const line of this.err.all.slice(start)) {
      const m = /^politely: state (\{.*\})$/.exec(line);
      if (m) {
        const s = JSON.parse(m[1]);
        out[s.peer] = s;
      }
    }
    return out;
  }

  async quit() {
    this.send("/quit");
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

/** Runs the politely binary to its end with `input` on stdin: its exit code and stdout. */
export function politely(args, input = "") {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, { stdio: ["pipe", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (d) => (stdout += d));
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, stdout }));
    // A command that reads no input may be gone before it is written.
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}

/** Headless Chromium as the tests need it: loopback candidates, fake media, no background
 * traffic toward hosts this machine cannot reach. With `privacy`, Chromium as it ships
 * instead: host addresses hidden behind mDNS names, no loopback candidates, no fake media. */
export function launchChromium({ privacy = false } = {}) {
  const conveniences = [
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
  ];
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--autoplay-policy=no-user-gesture-required",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...(privacy ? [] : conveniences),
    ],
  });
}

/** A page of its own (one context per page, so the 500-connection limit is per page) with
 * capture permission for the server's exact origin: without it Chromium gathers no candidate
 * when only loopback exists. `capture: false` grants none (the privacy-mode test);
 * `certificateErrors: true` lets the page trust a certificate made by the test. */
export async function openPage(browser, origin, path = "/", { capture = true, certificateErrors = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 }, ignoreHTTPSErrors: certificateErrors });
  if (capture) await context.grantPermissions(["camera", "microphone"], { origin });
  const page = await context.newPage();
  page.errors = [];
  page.logs = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("console", (m) => page.logs.push(`${m.type()}: ${m.text()}`));
  await page.goto(`${origin}${path}`);
  return page;
}

/** Headless Firefox ESR over WebDriver BiDi (puppeteer-core): loopback candidates, host
 * addresses not hidden behind mDNS names, fake media and capture permission (without it
 * Firefox gathers no candidate when only loopback exists). */
export function launchFirefox() {
  return puppeteer.launch({
    browser: "firefox",
    executablePath: FIREFOX,
    headless: true,
    extraPrefsFirefox: {
      "media.peerconnection.ice.loopback": true,
      "media.peerconnection.ice.obfuscate_host_addresses": false,
      "media.navigator.streams.fake": true,
      "media.navigator.permission.disabled": true,
      "permissions.default.camera": 1,
      "permissions.default.microphone": 1,
      // No background traffic toward hosts this machine cannot reach.
      "network.captive-portal-service.enabled": false,
      "network.connectivity-service.enabled": false,
      "app.update.enabled": false,
    },
  });
}

/** A Firefox page in a window of its own (a background tab's timers are clamped to 1 s) and a
 * context of its own, with the part of Playwright's page interface the tests use. */
export async function openFirefoxPage(browser, origin, path = "/") {
  const context = await browser.createBrowserContext();
  const page = await context.newPage({ type: "window" });
  const errors = [];
  const logs = [];
  const consoleWaiters = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    logs.push(`${m.type()}: ${m.text()}`);
    for (const waiter of consoleWaiters.splice(0)) waiter(m.text());
  });
  await page.goto(`${origin}${path}`);
  return {
    errors,
    logs,
    /** Calls `fn` with the text of the page's next console message. */
    onNextConsole: (fn) => consoleWaiters.push(fn),
    evaluate: (fn, arg) => page.evaluate(fn, arg),
    waitForFunction: (fn, arg, options = {}) => page.waitForFunction(fn, options, arg),
    goto: (url) => page.goto(url),
    url: () => page.url(),
    reload: () => page.reload(),
    context: () => ({ close: () => context.close() }),
  };
}

/** The demo page, joined to `room`; resolves to its peer id. */
export async function joinDemo(page, room) {
  // The page's other parameters (`relay`, `stun`) stay.
  const url = new URL(page.url());
  url.pathname = url.pathname.replace(/\/[^/]*$/, "/");
  url.searchParams.set("room", room);
  await page.goto(url.href);
  await page.waitForFunction(() => window.politely?.client?.id, null, { timeout: 10_000 });
  return page.evaluate(() => window.politely.client.id);
}

/** The browser's stats of its connection to `peer`. */
export function browserStats(page, peer) {
  return page.evaluate((peer) => window.politely.client?.stats()[peer] ?? null, peer);
}

/** Polls `check` until it returns something truthy, within `ms`. */
export async function until(check, { ms = 10_000, what = "a condition", every = 2 } = {}) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last && last.ok !== false) return last;
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last?.detail ?? last)}`);
}

export function percentile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * q))];
}

export function summary(name, times) {
  // POLITELY_SAMPLES_DIR: every timed series also as JSON, in the shape of the benchmarks'
  // `--json` (scripts/plot.mjs draws either).
  if (process.env.POLITELY_SAMPLES_DIR) {
    const file = join(process.env.POLITELY_SAMPLES_DIR, `${name.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "").toLowerCase()}.json`);
    const samples = times.map((t) => Math.round(t * 1000) / 1000);
    writeFileSync(file, JSON.stringify({ bench: "browser", command: "bash web/test/run.sh", at: Math.floor(Date.now() / 1000), series: [{ name, unit: "ms", samples }] }, null, 1) + "\n");
  }
  const sorted = [...times].sort((a, b) => a - b);
  const f = (x) => x.toFixed(1);
  return `${name}: n=${sorted.length}  p50 ${f(percentile(sorted, 0.5))} ms  p99 ${f(percentile(sorted, 0.99))} ms  max ${f(sorted.at(-1) ?? 0)} ms`;
}
