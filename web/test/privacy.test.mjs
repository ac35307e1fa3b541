// The browser's default privacy mode: Chromium as it ships (no flag that reveals addresses, no
// fake media) and a page that never asks for the camera, as a data-channel game or chat does.
// Such a page hides its host addresses behind mDNS names (`<uuid>.local`) and, without capture
// permission, gathers only on the default route's address. run.sh gives this test a namespace
// of its own: `lo`, and a veth pair with the documentation address 192.0.2.1 and a default
// route through it, both only inside the namespace (nothing is reachable through them). The
// native peer binds that address. It does not resolve the names; it answers the page's checks,
// which make the candidate pair (peer-reflexive at its end). Both role orders: the peers
// connect, chat, and glare by restarting ICE from both sides at once.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { glareRounds, glared, heardAtPage, nativeConverged, settle } from "./cases.mjs";
import { Native, joinDemo, launchChromium, openPage, startServer, summary } from "./harness.mjs";

const ROUNDS = Number(process.env.POLITELY_PRIVACY_ROUNDS ?? 20);
const ADDRESS = process.env.POLITELY_PRIVACY_ADDRESS ?? "192.0.2.1";
let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchChromium({ privacy: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The page's ICE candidates toward `peer` (the `a=candidate` lines of its local description)
 * and the remote end of its selected candidate pair. */
function pageIce(page, peer) {
  return page.evaluate(async (peer) => {
    const pc = window.politely.client.connection(peer);
    const candidates = (pc.localDescription?.sdp ?? "")
      .split(/\r?\n/)
      .filter((l) => l.startsWith("a=candidate:"))
      .map((l) => l.split(" "))
      .map((f) => ({ address: f[4], type: f[7] }));
    const all = [...(await pc.getStats()).values()];
    const transport = all.find((r) => r.type === "transport");
    const pair = all.find((r) => r.id === transport?.selectedCandidatePairId);
    const remote = all.find((r) => r.id === pair?.remoteCandidateId);
    return { candidates, remote: remote ? { address: remote.address, type: remote.candidateType } : null };
  }, peer);
}

for (const nativeFirst of [false, true]) {
  const order = nativeFirst ? "the native peer joining first" : "the page joining first";
  test(`privacy mode: a page without capture permission and a native peer, ${order}`, async () => {
    const room = nativeFirst ? "hidden-native-first" : "hidden-page-first";
    const page = await openPage(browser, server.origin, "/", { capture: false });
    let native;
    let nativeId;
    let pageId;
    const start = performance.now();
    if (nativeFirst) {
      native = new Native(server.ws, room, ["--bind", ADDRESS]);
      nativeId = await native.id();
      pageId = await joinDemo(page, room);
    } else {
      pageId = await joinDemo(page, room);
      native = new Native(server.ws, room, ["--bind", ADDRESS]);
      nativeId = await native.id();
    }
    try {
      const check = () => nativeConverged(page, pageId, native, nativeId);
      let s = await settle(check, "connected to a page that hides its addresses");
      const connect = performance.now() - start;
      assert.equal(s.sb.polite, !nativeFirst, "the first to join is polite");
      assert.equal(await page.evaluate(() => navigator.permissions.query({ name: "camera" }).then((p) => p.state)), "prompt");

      // What the page told the native peer: host candidates by mDNS name only, its address
      // nowhere; the native peer saw the names and dropped them; the pair in use ends at the
      // native peer's address.
      const ice = await pageIce(page, nativeId);
      assert.ok(ice.candidates.length > 0, "the page gathered");
      for (const c of ice.candidates) {
        assert.notEqual(c.address, ADDRESS, "the page's address is not in its candidates");
        if (c.type === "host") assert.match(c.address, /^[0-9a-f-]{36}\.local$/, "a host candidate is an mDNS name");
      }
      assert.ok(ice.candidates.some((c) => c.type === "host"), JSON.stringify(ice.candidates));
      assert.ok((await native.stats())[pageId].counters.hiddenCandidates > 0, "the native peer was given .local names");
      assert.deepEqual(ice.remote, { address: ADDRESS, type: "host" });

      await page.evaluate(() => window.politely.send("hello from a private page"));
      await native.message(pageId, "hello from a private page");
      native.send("hello back");
      await heardAtPage(page, nativeId, "hello back");

      // Glare: both sides restart ICE at once, every round gathering (and hiding) anew.
      const replaced = (s) => s.sb.counters.replaced + s.sn.counters.replaced;
      const before = replaced(s);
      const times = await glareRounds(page, native, check, ROUNDS, { restart: true });
      s = await check();
      assert.ok(s.ok);
      assert.equal(s.sb.counters.watchdog + s.sn.counters.watchdog, 0, "no watchdog firing");
      // (A first offer from each side at once may replace a connection id before this.)
      assert.equal(replaced(s), before, "no connection replaced by the rounds");
      assert.ok(s.sn.counters.iceRestarts >= ROUNDS, `${s.sn.counters.iceRestarts} ICE restarts`);
      assert.deepEqual((await pageIce(page, nativeId)).remote, { address: ADDRESS, type: "host" });
      native.send("after the restarts");
      await heardAtPage(page, nativeId, "after the restarts");
      assert.deepEqual(page.errors, []);
      console.log(
        `# privacy mode, ${order}: page load to connected ${connect.toFixed(0)} ms; ` +
          `${summary("restart-glare round", times)}; collisions ${glared(s.sb) + glared(s.sn)}`,
      );
    } finally {
      assert.equal(await native.quit(), 0);
      await page.context().close();
    }
  });
}
