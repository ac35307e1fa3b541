// Faults on real sockets: packet loss in the kernel, on every UDP datagram any peer receives
// (nftables, a random drop at the input hook of this test's own namespace; run.sh runs the
// test in a namespace that has only `lo`). The signaling's TCP is left alone: what is lossy is
// the path between the peers, the one ICE, DTLS and SCTP must cope with. The peers join with
// the loss already on (ICE, DTLS and SCTP set up through it), then glare by renegotiating
// (transceivers) and by restarting ICE from both sides at once, and chat: every message must
// arrive, in order. Chromium with a native peer, and two native peers. Then a path change: the
// address the call runs on goes away, and the call must carry on over the one left. Last, the
// signaling server is killed mid-call and started again, and a page's signaling connection is
// cut with its offer still on the way.
//
// Delay and reordering too: this kernel has no netem qdisc, so the datagrams go through a
// netfilter queue to netdelay.py, which gives each back after 50 ms ± 20 ms.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { createInterface } from "node:readline";
import { after, afterEach, before, test } from "node:test";
import {
  directionsNotAsAsked,
  glareRounds,
  glared,
  heardAtPage,
  messagesFrom,
  nativeConverged,
  nativeDirections,
  pageDirections,
  restartIce,
  same,
  selectedPair,
  settle,
} from "./cases.mjs";
import { Native, joinDemo, launchChromium, openPage, startServer, summary, until } from "./harness.mjs";

const ROUNDS = Number(process.env.POLITELY_LOSS_ROUNDS ?? 100);
const MESSAGES = 50;
let server;
let browser;

/** Drops `percent` of the UDP datagrams that arrive, at random; 0 removes the rule. */
function loss(percent) {
  const table = "table inet politely_faults";
  const rules = percent > 0
    ? `${table} {\n chain input {\n  type filter hook input priority 0; policy accept;\n` +
      `  meta l4proto udp numgen random mod 1000 < ${Math.round(percent * 10)} drop\n }\n}\n`
    : "";
  execFileSync("nft", ["-f", "-"], { input: `${table}\ndelete ${table}\n${rules}` });
}

/** Delays every UDP datagram that arrives by `ms` ± `jitter` ms (reordering them); resolves
 * to a function that ends it. */
async function delay(ms, jitter) {
  const delayer = spawn("python3", [new URL("./netdelay.py", import.meta.url).pathname, "3", String(ms), String(jitter)], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const exited = new Promise((resolve) => delayer.once("exit", resolve));
  await new Promise((resolve, reject) => {
    createInterface({ input: delayer.stdout }).once("line", (l) => (l === "ready" ? resolve() : reject(new Error(l))));
    delayer.once("exit", (code) => reject(new Error(`netdelay.py exited with ${code}`)));
  });
  const rule = ["INPUT", "-p", "udp", "-j", "NFQUEUE", "--queue-num", "3", "--queue-bypass"];
  execFileSync("iptables", ["-A", ...rule]);
  return async () => {
    execFileSync("iptables", ["-D", ...rule]);
    delayer.stdin.end();
    await exited;
  };
}

before(async () => {
  server = await startServer();
  browser = await launchChromium();
});

afterEach(() => loss(0));

after(async () => {
  loss(0);
  await browser?.close();
  await server?.stop();
});

/** Two native peers' connections to each other: settled, connected, one connection id, the
 * same m-lines, both chats open. */
async function nativesConverged(a, aId, b, bId) {
  const [sa, sb] = await Promise.all([a.stats().then((s) => s[bId]), b.stats().then((s) => s[aId])]);
  const ok =
    sa && sb && sa.settled && sb.settled &&
    sa.connectionState === "Connected" && sb.connectionState === "Connected" &&
    sa.connectionId === sb.connectionId && same([...sa.mids].sort(), [...sb.mids].sort()) &&
    sa.channels.filter((c) => c === "chat").length === 2 && sb.channels.filter((c) => c === "chat").length === 2;
  return { ok: Boolean(ok), sa, sb, detail: { sa, sb } };
}

/** Glare rounds between two native peers: both renegotiate (or restart ICE) at once. */
async function nativeGlareRounds(a, b, check, rounds, { restart = false } = {}) {
  const times = [];
  const offers = (c) => c.sa.counters.offers + c.sb.counters.offers;
  for (let round = 0; round < rounds; round++) {
    const before = await check();
    const start = performance.now();
    const line = restart ? "/restart" : "/glare";
    a.send(line);
    b.send(line);
    const done = await settle(async () => {
      const c = await check();
      const restarted = !restart || c.sa.counters.iceRestarts > before.sa.counters.iceRestarts;
      return { ...c, ok: c.ok && offers(c) > offers(before) && restarted };
    }, `round ${round}`);
    times.push(performance.now() - start);
    const wrong = directionsNotAsAsked(await nativeDirections(a, done.sa.peer), await nativeDirections(b, done.sb.peer));
    assert.deepEqual(wrong, [], `round ${round}: the directions both applications asked for`);
  }
  return times;
}

for (const percent of [5, 20]) {
  const rounds = percent === 5 ? ROUNDS : Math.ceil(ROUNDS / 4);

  test(`${percent}% loss: Chromium and a native peer connect, glare ${rounds}+${rounds} rounds, chat`, async () => {
    loss(percent);
    const room = `loss-${percent}`;
    const page = await openPage(browser, server.origin);
    const start = performance.now();
    const pageId = await joinDemo(page, room);
    const native = new Native(server.ws, room);
    try {
      const nativeId = await native.id();
      const check = () => nativeConverged(page, pageId, native, nativeId);
      await settle(check, `connected through ${percent}% loss`, 90_000);
      const connect = performance.now() - start;
      const replacedBefore = (await check()).sb.counters.replaced;
      const renegotiations = await glareRounds(page, native, check, rounds);
      const restarts = await glareRounds(page, native, check, rounds, { restart: true });

      // Every message arrives, in order, both ways.
      const texts = Array.from({ length: MESSAGES }, (_, i) => `lossy ${i}`);
      await page.evaluate((texts) => texts.forEach((t) => window.politely.send(t)), texts);
      for (const t of texts) native.send(t);
      for (const t of texts) await native.message(pageId, t, 30_000);
      await heardAtPage(page, nativeId, texts.at(-1));
      assert.deepEqual((await messagesFrom(page, nativeId)).filter((t) => t.startsWith("lossy ")), texts);

      // Converged again (a lost consent check may leave a state "disconnected" for a moment).
      const s = await settle(check, "converged after the messages");
      assert.deepEqual(page.errors, []);
      const watchdog = s.sb.counters.watchdog + s.sn.counters.watchdog;
      console.log(
        `# ${percent}% loss, Chromium-native: page load to connected ${connect.toFixed(0)} ms; ` +
          `${summary("glare round", renegotiations)}; ${summary("restart-glare round", restarts)}; ` +
          `collisions ${glared(s.sb) + glared(s.sn)}; watchdog ${watchdog}; replaced since connected ${s.sb.counters.replaced - replacedBefore}`,
      );
    } finally {
      assert.equal(await native.quit(), 0);
      await page.context().close();
    }
  });

  test(`${percent}% loss: two native peers connect, glare ${rounds}+${rounds} rounds, chat`, async () => {
    loss(percent);
    const room = `loss-native-${percent}`;
    const start = performance.now();
    const a = new Native(server.ws, room);
    const aId = await a.id();
    const b = new Native(server.ws, room);
    try {
      const bId = await b.id();
      const check = () => nativesConverged(a, aId, b, bId);
      await settle(check, `connected through ${percent}% loss`, 90_000);
      const connect = performance.now() - start;
      const renegotiations = await nativeGlareRounds(a, b, check, rounds);
      const restarts = await nativeGlareRounds(a, b, check, rounds, { restart: true });

      const texts = Array.from({ length: MESSAGES }, (_, i) => `lossy ${i}`);
      const from = b.out.all.length;
      for (const t of texts) a.send(t);
      for (const t of texts) await b.message(aId, t, 30_000);
      const heard = b.out.all.slice(from).filter((l) => l.startsWith(`${aId}: lossy `));
      assert.deepEqual(heard, texts.map((t) => `${aId}: ${t}`));

      // Converged again (a lost consent check may leave a state "disconnected" for a moment).
      const s = await settle(check, "converged after the messages");
      console.log(
        `# ${percent}% loss, native-native: joined to connected ${connect.toFixed(0)} ms; ` +
          `${summary("glare round", renegotiations)}; ${summary("restart-glare round", restarts)}; ` +
          `collisions ${glared(s.sa) + glared(s.sb)}; watchdog ${s.sa.counters.watchdog + s.sb.counters.watchdog}`,
      );
    } finally {
      assert.equal(await a.quit(), 0);
      assert.equal(await b.quit(), 0);
    }
  });
}

test("delay 50 ms ± 20 ms, reordering: Chromium and a native peer, and two native peers, glare", async () => {
  const undo = await delay(50, 20);
  const rounds = Math.ceil(ROUNDS / 2);
  try {
    const page = await openPage(browser, server.origin);
    let start = performance.now();
    const pageId = await joinDemo(page, "delayed");
    const native = new Native(server.ws, "delayed");
    try {
      const nativeId = await native.id();
      const check = () => nativeConverged(page, pageId, native, nativeId);
      await settle(check, "connected through the delay", 30_000);
      const connect = performance.now() - start;
      const renegotiations = await glareRounds(page, native, check, rounds);
      const restarts = await glareRounds(page, native, check, rounds, { restart: true });
      const texts = Array.from({ length: MESSAGES }, (_, i) => `late ${i}`);
      for (const t of texts) native.send(t);
      await heardAtPage(page, nativeId, texts.at(-1));
      assert.deepEqual((await messagesFrom(page, nativeId)).filter((t) => t.startsWith("late ")), texts);
      const s = await check();
      assert.deepEqual(page.errors, []);
      console.log(
        `# delay 50±20 ms, Chromium-native: page load to connected ${connect.toFixed(0)} ms; ` +
          `${summary("glare round", renegotiations)}; ${summary("restart-glare round", restarts)}; ` +
          `collisions ${glared(s.sb) + glared(s.sn)}; watchdog ${s.sb.counters.watchdog + s.sn.counters.watchdog}`,
      );
    } finally {
      assert.equal(await native.quit(), 0);
      await page.context().close();
    }

    start = performance.now();
    const a = new Native(server.ws, "delayed-natives");
    const aId = await a.id();
    const b = new Native(server.ws, "delayed-natives");
    try {
      const bId = await b.id();
      const check = () => nativesConverged(a, aId, b, bId);
      await settle(check, "two native peers connected through the delay", 30_000);
      const connect = performance.now() - start;
      const renegotiations = await nativeGlareRounds(a, b, check, rounds);
      const restarts = await nativeGlareRounds(a, b, check, rounds, { restart: true });
      const s = await check();
      console.log(
        `# delay 50±20 ms, native-native: joined to connected ${connect.toFixed(0)} ms; ` +
          `${summary("glare round", renegotiations)}; ${summary("restart-glare round", restarts)}; ` +
          `collisions ${glared(s.sa) + glared(s.sb)}; watchdog ${s.sa.counters.watchdog + s.sb.counters.watchdog}`,
      );
    } finally {
      assert.equal(await a.quit(), 0);
      assert.equal(await b.quit(), 0);
    }
  } finally {
    await undo();
  }
});

test("a path change: the address the call runs on goes away, the call goes on over loopback", async () => {
  // A second address for both ends, 192.0.2.1 (documentation range) on a veth pair that exists
  // only in this namespace; Chromium prefers it to loopback, so the call starts on it.
  const ADDRESS = "192.0.2.1";
  const ip = (...args) => execFileSync("ip", args);
  ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1");
  ip("link", "set", "veth0", "up");
  ip("link", "set", "veth1", "up");
  ip("addr", "add", `${ADDRESS}/24`, "dev", "veth0");
  const page = await openPage(browser, server.origin);
  const pageId = await joinDemo(page, "path");
  const native = new Native(server.ws, "path", ["--bind", ADDRESS, "--bind", "127.0.0.1"]);
  try {
    const nativeId = await native.id();
    const check = () => nativeConverged(page, pageId, native, nativeId);
    await settle(check, "connected");
    // Which pair ICE picks is up to it; if neither end of it is on the second address, ICE
    // restarts until one is (the test is about that address going away).
    for (let attempt = 0; ; attempt++) {
      const pair = await selectedPair(page, nativeId);
      if (pair?.includes(ADDRESS)) break;
      assert.ok(attempt < 10, `the call stays on loopback: ${pair}`);
      await restartIce(page, native, check, "browser");
    }
    const before = await check();

    ip("addr", "del", `${ADDRESS}/24`, "dev", "veth0");
    const start = performance.now();
    await until(async () => {
      const pair = await selectedPair(page, nativeId);
      return { ok: same(pair, ["127.0.0.1", "127.0.0.1"]), detail: pair };
    }, {
      what: "the call on loopback",
      ms: 30_000,
      every: 50,
    });
    const moved = performance.now() - start;
    // Data flows both ways on the path left, and the peers still renegotiate (and glare).
    await page.evaluate(() => window.politely.send("after the move"));
    await native.message(pageId, "after the move", 30_000);
    native.send("heard you");
    await until(async () => (await messagesFrom(page, nativeId)).includes("heard you"), { what: "the native peer heard", ms: 60_000 });
    const recovered = performance.now() - start;
    const times = await glareRounds(page, native, check, 5);
    const s = await check();
    assert.ok(s.ok);
    assert.deepEqual(page.errors, []);
    const restarts = (c) => c.sb.counters.restarts + c.sn.counters.iceRestarts;
    console.log(
      `# path change: pair on loopback ${moved.toFixed(0)} ms after the address went, messages both ways ` +
        `${recovered.toFixed(0)} ms; ICE restarts meanwhile ${restarts(s) - restarts(before)}; ` +
        `watchdog ${s.sb.counters.watchdog + s.sn.counters.watchdog}; ${summary("glare round after", times)}`,
    );
  } finally {
    assert.equal(await native.quit(), 0);
    await page.context().close();
    ip("link", "del", "veth0");
  }
});

/** A TCP proxy on 127.0.0.1 to `target` (`host:port`) that can swallow what clients send
 * (`swallow`) and cut every connection at once (`cut()`), as a connection that dies with
 * frames on the way does. */
async function startProxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const sockets = new Set();
  const proxy = {
    swallow: false,
    cut() {
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
  };
  const listener = net.createServer((client) => {
    const upstream = net.connect(port, host);
    sockets.add(client);
    sockets.add(upstream);
    client.on("data", (data) => proxy.swallow || upstream.write(data));
    upstream.on("data", (data) => client.write(data));
    const end = () => {
      for (const socket of [client, upstream]) {
        socket.destroy();
        sockets.delete(socket);
      }
    };
    for (const socket of [client, upstream]) socket.on("close", end).on("error", end);
  });
  await new Promise((resolve) => listener.listen(0, "127.0.0.1", resolve));
  proxy.origin = `http://127.0.0.1:${listener.address().port}`;
  proxy.close = () => {
    proxy.cut();
    listener.close();
  };
  return proxy;
}

test("an offer cut off on its way to the server goes again after the resume, with no watchdog", async () => {
  const proxy = await startProxy(server.addr);
  const page = await openPage(browser, proxy.origin);
  const pageId = await joinDemo(page, "swallowed");
  const native = new Native(server.ws, "swallowed");
  try {
    const nativeId = await native.id();
    const check = () => nativeConverged(page, pageId, native, nativeId);
    const before = await settle(check, "connected");
    // The page renegotiates; its offer reaches the proxy and goes no further.
    proxy.swallow = true;
    await page.evaluate(() => window.politely.glare());
    await until(async () => (await check()).sb.counters.offers > before.sb.counters.offers, { what: "the page's offer" });
    await sleep(200);
    // Its connection dies; the page resumes, and the welcome says what the server took.
    proxy.swallow = false;
    proxy.cut();
    const s = await settle(async () => {
      const c = await check();
      return { ...c, ok: c.ok && c.sn.counters.answers > before.sn.counters.answers };
    }, "the offer's round, after the resume");
    assert.equal(s.sb.counters.watchdog, before.sb.counters.watchdog, "the page's watchdog did not act");
    assert.equal(s.sn.counters.watchdog, before.sn.counters.watchdog, "the native peer's watchdog did not act");
    const wrong = directionsNotAsAsked(await pageDirections(page, nativeId), await nativeDirections(native, pageId));
    assert.deepEqual(wrong, []);
    assert.deepEqual(page.errors, []);
  } finally {
    assert.equal(await native.quit(), 0);
    await page.context().close();
    proxy.close();
  }
});

test("the server killed mid-call and started again: the call goes on, ids come back, glare after", async () => {
  const secret = ["--resume-secret", "a test's resume secret"];
  let server = await startServer(secret);
  const page = await openPage(browser, server.origin);
  const pageId = await joinDemo(page, "restart");
  const native = new Native(server.ws, "restart");
  try {
    const nativeId = await native.id();
    const check = () => nativeConverged(page, pageId, native, nativeId);
    const before = await settle(check, "connected");

    await server.kill();
    await page.waitForFunction(() => window.politely.client.state !== "open");
    // The call does not need the server.
    await page.evaluate(() => window.politely.send("while the server is down"));
    await native.message(pageId, "while the server is down");
    native.send("still here");
    await heardAtPage(page, nativeId, "still here");

    const start = performance.now();
    server = await startServer(["--listen", server.addr, ...secret]);
    await native.err.next((l) => l === `politely: signaling back as ${nativeId} (resumed: true)`, {
      what: "the native peer's resume",
    });
    await page.waitForFunction(
      (id) => window.politely.client.state === "open" && window.politely.client.id === id,
      pageId,
      { timeout: 10_000 },
    );
    const back = performance.now() - start;
    const s = await settle(check, "converged after the restart");
    assert.equal(s.sb.connectionId, before.sb.connectionId, "the connection was not replaced");
    assert.equal(s.sb.counters.replaced + s.sn.counters.replaced, before.sb.counters.replaced + before.sn.counters.replaced);
    const times = await glareRounds(page, native, check, 10);
    assert.deepEqual(page.errors, []);
    console.log(`# server restart: both back ${back.toFixed(0)} ms after it started; ${summary("glare round after", times)}`);
  } finally {
    assert.equal(await native.quit(), 0);
    await page.context().close();
    await server.stop();
  }
});
