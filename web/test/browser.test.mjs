// Chromium against politely, through a real `politely serve` on 127.0.0.1: browser to
// browser, browser to a native `politely join` in both role orders, glare rounds, ICE
// restarts, a page reload, and a plain page written with the W3C pattern.
//
// Run by run.sh inside a network namespace with only `lo`. POLITELY_ROUNDS sets the number
// of glare rounds (200 by default); POLITELY_SCREENSHOT a path for the demo's screenshot.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  browserAndNative,
  browsersConverged,
  directionsNotAsAsked,
  glared,
  heardAtPage,
  offers,
  pageDirections,
  settle,
} from "./cases.mjs";
import {
  Native,
  browserStats,
  joinDemo,
  launchChromium,
  openPage,
  startRedis,
  startServer,
  summary,
  until,
} from "./harness.mjs";

const ROUNDS = Number(process.env.POLITELY_ROUNDS ?? 200);
let server;
let browser;
let rooms = 0;
const room = (name) => `${name}-${++rooms}`;

before(async () => {
  server = await startServer();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("Chromium to Chromium: connect, chat, glare on a live connection and on fresh ones", async () => {
  const name = room("cc");
  let a = await openPage(browser, server.origin);
  let b = await openPage(browser, server.origin);
  const aId = await joinDemo(a, name);
  const bId = await joinDemo(b, name);
  await settle(() => browsersConverged(a, aId, b, bId), "two pages connected");

  await a.evaluate(() => window.politely.send("hello from a"));
  await b.evaluate(() => window.politely.send("hello from b"));
  await heardAtPage(b, aId, "hello from a");
  await heardAtPage(a, bId, "hello from b");

  // Glare on the live connection: both pages renegotiate in the same instant.
  const times = [];
  let collisions = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const before = await browsersConverged(a, aId, b, bId);
    const start = performance.now();
    await Promise.all([a.evaluate(() => window.politely.glare()), b.evaluate(() => window.politely.glare())]);
    const done = await settle(async () => {
      const c = await browsersConverged(a, aId, b, bId);
      return { ...c, ok: c.ok && offers(c.sa) + offers(c.sb) > offers(before.sa) + offers(before.sb) };
    }, `live round ${round}`);
    times.push(performance.now() - start);
    const wrong = directionsNotAsAsked(await pageDirections(a, bId), await pageDirections(b, aId));
    assert.deepEqual(wrong, [], `live round ${round}: the directions both pages asked for`);
    if (glared(done.sa) + glared(done.sb) > glared(before.sa) + glared(before.sb)) collisions++;
  }
  const final = await browsersConverged(a, aId, b, bId);
  assert.equal(final.sa.sectionMids.length, 5, "data, and two transceivers from each side");
  console.log(`# ${summary("Chromium-Chromium glare round, live connection", times)}; glare in ${collisions} of ${ROUNDS}`);
  assert.ok(collisions >= ROUNDS / 10, `offers collided in ${collisions} rounds only`);

  assert.deepEqual([...a.errors, ...b.errors], []);
  await a.context().close();
  await b.context().close();

  // Fresh connections: each round both pages join a new room with a new client, and both
  // open a channel toward the other as soon as they learn of it. A renderer allows 500
  // RTCPeerConnections in its life, so new pages take over every 200 rounds.
  const fresh = [];
  let freshCollisions = 0;
  let freshRecoveries = 0;
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 200 === 0) {
      if (round > 0) await Promise.all([a.context().close(), b.context().close()]);
      [a, b] = [await openPage(browser, server.origin), await openPage(browser, server.origin)];
    }
    const name = room("fresh");
    const start = performance.now();
    const join = (page) =>
      page.evaluate(async ({ ws, name }) => {
        const { Politely } = window.politely;
        const c = new Politely();
        c.createDataChannel(null, "chat");
        await c.join(ws, name);
        window.fresh?.leave();
        window.fresh = c;
        return c.id;
      }, { ws: server.ws, name });
    const [fa, fb] = await Promise.all([join(a), join(b)]);
    const freshStats = (page, peer) => page.evaluate((p) => window.fresh.stats()[p] ?? null, peer);
    const check = () => browsersConverged(a, fa, b, fb, freshStats);
    // Room for a watchdog recovery (a new connection after 8 to 12 s without progress).
    const done = await settle(check, `fresh round ${round}`, 40_000);
    fresh.push(performance.now() - start);
    if (glared(done.sa) + glared(done.sb) > 0) freshCollisions++;
    freshRecoveries += done.sa.counters.watchdog + done.sb.counters.watchdog;
  }
  await Promise.all([a.evaluate(() => window.fresh.leave()), b.evaluate(() => window.fresh.leave())]);
  console.log(`# ${summary("Chromium-Chromium join to converged, fresh connections", fresh)}; glare in ${freshCollisions} of ${ROUNDS}; watchdog recoveries ${freshRecoveries}`);
  assert.ok(freshCollisions > 0, "no glare on fresh connections");
  assert.deepEqual([...a.errors, ...b.errors], []);
  await a.context().close();
  await b.context().close();
});

for (const [nativeFirst, title] of [[true, "the native peer joining first"], [false, "the browser joining first"]]) {
  test(`Chromium and a native peer, ${title}`, () =>
    browserAndNative({
      server,
      open: () => openPage(browser, server.origin),
      browser: "Chromium",
      name: room(nativeFirst ? "native-first" : "browser-first"),
      nativeFirst,
      rounds: ROUNDS,
    }));
}

// Two nodes of a cluster on one Redis: the page signals through one, the native peer through
// the other, through the same steps.
test("Chromium and a native peer on different nodes of a cluster (--redis)", async () => {
  const redis = await startRedis();
  const [one, two] = [await startServer(["--redis", redis.url]), await startServer(["--redis", redis.url])];
  try {
    await browserAndNative({
      server: two,
      open: () => openPage(browser, one.origin),
      browser: "Chromium",
      name: room("cluster"),
      nativeFirst: false,
      rounds: Math.min(ROUNDS, 50),
    });
  } finally {
    await one.stop();
    await two.stop();
    await redis.stop();
  }
});

// A page written with the W3C/MDN pattern as it stands in the spec, and a signaler of ten
// lines for politely's protocol: nothing of politely.js.
const PLAIN_PAGE = `<!doctype html><meta charset="utf-8"><title>plain</title><script type="module">
const room = new URLSearchParams(location.search).get("room");
// The signaler: politely's protocol in ten lines.
const ws = new WebSocket(\`ws://\${location.host}/ws\`);
let to, polite, connectionId, onSignal;
const signaler = { send: (data) => ws.send(JSON.stringify({ type: "signal", to, data: { connectionId: (connectionId ??= crypto.randomUUID()), ...data } })) };
ws.onopen = () => ws.send(JSON.stringify({ type: "join", room }));
ws.onmessage = ({ data }) => {
  const m = JSON.parse(data);
  if (m.type === "welcome" && m.peers.length) ({ id: to, polite } = m.peers[0]), start();
  if (m.type === "peer-joined") ({ id: to, polite } = m), start();
  // The connection id: ours if we spoke first, but the polite side takes the other's.
  if (m.type === "signal") (connectionId = polite || !connectionId ? m.data.connectionId : connectionId), onSignal(m.data);
};
// The pattern (webrtc-pc, "Perfect Negotiation Example").
const pc = new RTCPeerConnection();
window.received = [];
function start() {
  const channel = pc.createDataChannel("plain");
  channel.onopen = () => channel.send("hello from a plain page");
}
pc.ondatachannel = ({ channel }) => {
  channel.onmessage = ({ data }) => { window.received.push(data); channel.send(\`echo \${data}\`); };
};
let makingOffer = false, ignoreOffer = false, isSettingRemoteAnswerPending = false;
pc.onnegotiationneeded = async () => {
  try {
    makingOffer = true;
    await pc.setLocalDescription();
    signaler.send({ description: pc.localDescription });
  } catch (err) {
    console.error(err);
  } finally {
    makingOffer = false;
  }
};
pc.onicecandidate = ({ candidate }) => signaler.send({ candidate });
onSignal = async ({ description, candidate }) => {
  try {
    if (description) {
      const readyForOffer = !makingOffer && (pc.signalingState === "stable" || isSettingRemoteAnswerPending);
      const offerCollision = description.type === "offer" && !readyForOffer;
      ignoreOffer = !polite && offerCollision;
      if (ignoreOffer) return;
      isSettingRemoteAnswerPending = description.type === "answer";
      await pc.setRemoteDescription(description);
      isSettingRemoteAnswerPending = false;
      if (description.type === "offer") {
        await pc.setLocalDescription();
        signaler.send({ description: pc.localDescription });
      }
    } else if (candidate) {
      try {
        await pc.addIceCandidate(candidate);
      } catch (err) {
        if (!ignoreOffer) throw err;
      }
    }
  } catch (err) {
    console.error(err);
  }
};
</script>`;

test("a plain page with the W3C pattern and a ten-line signaler talks to a native peer", async () => {
  for (const nativeFirst of [true, false]) {
    const name = room("plain");
    const page = await openPage(browser, server.origin);
    let native = nativeFirst ? new Native(server.ws, name) : null;
    if (native) await native.id();
    // The page's document comes from the server's origin (Chromium lets only a loopback
    // document open a WebSocket to loopback); its content is the plain page.
    await page.goto(`${server.origin}/health?room=${name}`);
    await page.setContent(PLAIN_PAGE);
    if (!native) {
      // The page joins first (its signaler says nothing of it to the page).
      await new Promise((r) => setTimeout(r, 300));
      native = new Native(server.ws, name);
      await native.id();
    }
    try {
      // The page's own channel reaches the native peer; the native peer's chat is echoed.
      const hello = await native.out.next((l) => /^(\S+): hello from a plain page$/.exec(l)?.[1], {
        what: "the plain page's hello",
      });
      native.send("ping");
      await native.message(hello, "echo ping");
    } catch (e) {
      console.log(page.logs.join("\n"), native.err.all.join("\n"));
      throw e;
    } finally {
      assert.equal(await native.quit(), 0);
      await page.context().close();
    }
  }
});

test("the demo page, as a person sees it with two participants", async () => {
  const name = room("demo");
  const a = await openPage(browser, server.origin);
  const b = await openPage(browser, server.origin);
  const aId = await joinDemo(a, name);
  const bId = await joinDemo(b, name);
  await settle(() => browsersConverged(a, aId, b, bId), "two participants connected");
  // Typed and clicked as a person would.
  await a.fill("#chat-input", "hi, can you see me?");
  await a.click("#send");
  await heardAtPage(b, aId, "hi, can you see me?");
  await b.fill("#chat-input", "yes, loud and clear");
  await b.press("#chat-input", "Enter");
  await heardAtPage(a, bId, "yes, loud and clear");
  await a.click("#call");
  await b.click("#call");
  await until(
    () => a.evaluate((peer) => window.politely.events.filter((e) => e.name === "track" && e.peer === peer).length >= 2, bId),
    { what: "b's camera and microphone at a" },
  );
  await a.click("#glare");
  await b.click("#glare");
  await settle(() => browsersConverged(a, aId, b, bId), "the glare settled");
  // Our camera and theirs, both showing frames.
  await until(() => a.evaluate(() => [...document.querySelectorAll("video")].filter((v) => v.videoWidth > 0).length >= 2), {
    what: "the videos playing",
  });
  const counters = await a.textContent("#counters");
  assert.match(counters, /offers/i);
  const peers = await a.textContent("#peers");
  assert.ok(peers.includes(bId.slice(-6)) || peers.includes(bId), peers);
  if (process.env.POLITELY_SCREENSHOT) await a.screenshot({ path: process.env.POLITELY_SCREENSHOT, fullPage: true });
  await a.click("#hangup");
  await until(
    () => b.evaluate((peer) => window.politely.events.some((e) => e.name === "track-removed" && e.peer === peer), aId),
    { what: "a's tracks removed at b" },
  );
  assert.deepEqual([...a.errors, ...b.errors], []);
  await a.context().close();
  await b.context().close();
});
