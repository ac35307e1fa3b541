// IPv6: Chromium and a native peer over IPv6 only. The server listens on [::1] and the page is
// loaded from http://[::1]:…/. Chromium gathers no candidate on ::1 (it leaves IPv6 loopback
// out, loopback flag or not), so run.sh gives this test a namespace of its own with an IPv6
// documentation address, 2001:db8::1, on a veth pair that exists only inside it; the native
// peer binds that address alone. The path in use is IPv6 at both ends, and the peers chat,
// glare and restart ICE from each side. (Native peers on ::1 alone: crates/politely/tests.)

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Native, browserStats, joinDemo, launchChromium, openPage, startServer, summary, until } from "./harness.mjs";

const ROUNDS = Number(process.env.POLITELY_IPV6_ROUNDS ?? 20);
const ADDRESS = process.env.POLITELY_IPV6_ADDRESS ?? "2001:db8::1";
let server;
let browser;

before(async () => {
  server = await startServer(["--listen", "[::1]:0"]);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const chats = (s) => s.channels.filter((c) => c === "chat").length;

async function converged(page, pageId, native, nativeId) {
  const [sb, all] = await Promise.all([browserStats(page, nativeId), native.stats()]);
  const sn = all[pageId];
  const ok =
    sb && sn && sb.settled && sn.settled &&
    sb.connectionState === "connected" && sn.connectionState === "Connected" &&
    sb.connectionId === sn.connectionId && same([...sb.sectionMids].sort(), [...sn.mids].sort()) &&
    chats(sb) === 2 && chats(sn) === 2;
  return { ok: Boolean(ok), sb, sn, detail: { sb, sn } };
}

async function settle(check, what, ms = 10_000) {
  for (;;) {
    await until(check, { what, ms });
    const second = await check();
    if (second.ok) return second;
  }
}

/** The addresses of the selected candidate pair of the page's connection to `peer`. */
function selectedPair(page, peer) {
  return page.evaluate(async (peer) => {
    const report = await window.politely.client.connection(peer).getStats();
    const all = [...report.values()];
    const transport = all.find((r) => r.type === "transport");
    const pair = all.find((r) => r.id === transport?.selectedCandidatePairId);
    const address = (id) => all.find((r) => r.id === id)?.address;
    return pair ? [address(pair.localCandidateId), address(pair.remoteCandidateId)] : null;
  }, peer);
}

test("Chromium and a native peer over IPv6: connect, chat, glare, ICE restarts", async () => {
  assert.match(server.origin, /^http:\/\/\[::1\]:\d+$/);
  const page = await openPage(browser, server.origin);
  const pageId = await joinDemo(page, "six");
  const native = new Native(server.ws, "six", ["--bind", ADDRESS]);
  try {
    const nativeId = await native.id();
    const check = () => converged(page, pageId, native, nativeId);
    let s = await settle(check, "connected over IPv6");
    assert.deepEqual(await selectedPair(page, nativeId), [ADDRESS, ADDRESS]);
    await page.evaluate(() => window.politely.send("hello over six"));
    await native.message(pageId, "hello over six");
    const times = [];
    for (let round = 0; round < ROUNDS; round++) {
      const before = await check();
      const start = performance.now();
      await page.evaluate(() => window.politely.glare());
      native.send("/glare");
      await settle(async () => {
        const c = await check();
        return { ...c, ok: c.ok && c.sb.counters.offers + c.sn.counters.offers > before.sb.counters.offers + before.sn.counters.offers };
      }, `round ${round}`);
      times.push(performance.now() - start);
    }
    for (const side of ["browser", "native"]) {
      const before = await check();
      if (side === "browser") await page.evaluate(() => window.politely.restart());
      else native.send("/restart");
      s = await settle(async () => {
        const c = await check();
        const restarted = c.sb && before.sb && c.sb.localUfrag !== before.sb.localUfrag && c.sb.remoteUfrag !== before.sb.remoteUfrag;
        return { ...c, ok: c.ok && restarted };
      }, `an ICE restart from the ${side}`);
    }
    assert.deepEqual(await selectedPair(page, nativeId), [ADDRESS, ADDRESS]);
    native.send("after the restarts");
    await until(
      async () => (await page.evaluate((from) => window.politely.messages.filter((m) => m.from === from).map((m) => m.text), nativeId)).includes("after the restarts"),
      { what: "the message after the restarts" },
    );
    assert.equal(s.sb.counters.watchdog + s.sn.counters.watchdog, 0, "no watchdog firing");
    assert.deepEqual(page.errors, []);
    console.log(`# IPv6 ${summary("glare round", times)}`);
  } finally {
    assert.equal(await native.quit(), 0);
    await page.context().close();
  }
});
