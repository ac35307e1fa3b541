// What the browser tests do with any browser: the convergence checks, and a page with a
// native peer through every step (connect, chat, glare rounds, ICE restarts, a reload).

import assert from "node:assert/strict";
import { Native, browserStats, joinDemo, summary, until } from "./harness.mjs";

export const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
export const chats = (s) => s.channels.filter((c) => c === "chat").length;
export const offers = (s) => s.counters.offers;
export const glared = (s) => s.counters.rollbacks + s.counters.ignoredOffers;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** Both browsers' connections to each other: settled, connected, the same m-lines, both
 * chats open, on one connection id. */
export async function browsersConverged(a, aId, b, bId, stats = browserStats) {
  const [sa, sb] = await Promise.all([stats(a, bId), stats(b, aId)]);
  const ok =
    sa && sb && sa.settled && sb.settled &&
    sa.connectionState === "connected" && sb.connectionState === "connected" &&
    sa.connectionId === sb.connectionId && same(sa.sectionMids, sb.sectionMids) &&
    chats(sa) === 2 && chats(sb) === 2;
  return { ok: Boolean(ok), sa, sb, detail: { sa, sb } };
}

/** A browser's connection to a native peer and the native's to it, alike. */
export async function nativeConverged(page, pageId, native, nativeId) {
  const [sb, all] = await Promise.all([browserStats(page, nativeId), native.stats()]);
  const sn = all[pageId];
  const ok =
    sb && sn && sb.settled && sn.settled &&
    sb.connectionState === "connected" && sn.connectionState === "Connected" &&
    sb.connectionId === sn.connectionId && same([...sb.sectionMids].sort(), [...sn.mids].sort()) &&
    chats(sb) === 2 && sn.channels.filter((c) => c === "chat").length === 2;
  return { ok: Boolean(ok), sb, sn, pageId, nativeId, detail: { sb, sn } };
}

/** What two applications asked for, negotiated: each m-section's direction at one end is its
 * own transceiver's direction intersected with the reverse of the other end's (RFC 9429), in a
 * settled session. `a` and `b` are `{mid: {direction, currentDirection}}`; resolves to the
 * sections where the negotiated direction is not that. (A check of the two ends against each
 * other alone passed while every section had gone `inactive`.) */
export function directionsNotAsAsked(a, b) {
  const flags = { sendrecv: [true, true], sendonly: [true, false], recvonly: [false, true], inactive: [false, false] };
  const name = ([send, recv]) => (send ? (recv ? "sendrecv" : "sendonly") : recv ? "recvonly" : "inactive");
  const wrong = [];
  for (const [mid, x] of Object.entries(a)) {
    const y = b[mid];
    if (!y) {
      wrong.push({ mid, missing: "at the other end" });
      continue;
    }
    const [xs, xr] = flags[x.direction];
    const [ys, yr] = flags[y.direction];
    const expected = [name([xs && yr, xr && ys]), name([ys && xr, yr && xs])];
    if (x.currentDirection !== expected[0] || y.currentDirection !== expected[1]) {
      wrong.push({ mid, asked: [x.direction, y.direction], negotiated: [x.currentDirection, y.currentDirection], expected });
    }
  }
  return wrong;
}

/** A page's transceivers toward `peer`, by mid: `{direction, currentDirection}`. */
export function pageDirections(page, peer) {
  return page.evaluate((peer) => {
    const pc = window.politely.client.connection(peer);
    const out = {};
    for (const t of pc?.getTransceivers() ?? []) {
      if (t.mid !== null && !t.stopped) out[t.mid] = { direction: t.direction, currentDirection: t.currentDirection };
    }
    return out;
  }, peer);
}

/** A native peer's transceivers toward `peer`, by mid, as `pageDirections`. */
export async function nativeDirections(native, peer) {
  const state = (await native.state())[peer];
  const out = {};
  for (const t of state?.transceivers ?? []) {
    if (t.mid !== null) out[t.mid] = { direction: t.direction, currentDirection: t.currentDirection };
  }
  return out;
}

/** The addresses of the selected candidate pair of the page's connection to `peer`. */
export function selectedPair(page, peer) {
  return page.evaluate(async (peer) => {
    const all = [...(await window.politely.client.connection(peer).getStats()).values()];
    const transport = all.find((r) => r.type === "transport");
    const pair = all.find((r) => r.id === transport?.selectedCandidatePairId);
    const address = (id) => all.find((r) => r.id === id)?.address;
    return pair ? [address(pair.localCandidateId), address(pair.remoteCandidateId)] : null;
  }, peer);
}

/** Waits twice in a row for `check`, so a renegotiation that is about to start is not taken
 * for the end of the last one. */
export async function settle(check, what, ms = 10_000) {
  for (;;) {
    await until(check, { what, ms });
    const second = await check();
    if (second.ok) return second;
  }
}

export function messagesFrom(page, from) {
  return page.evaluate((from) => window.politely.messages.filter((m) => m.from === from).map((m) => m.text), from);
}

export async function heardAtPage(page, from, text) {
  await until(async () => (await messagesFrom(page, from)).includes(text), { what: `"${text}" in the page` });
}

/** An ICE restart from `side` ("browser" or "native") of a page's connection to a native
 * peer: resolves to `check`'s state once both ends have new ICE credentials and converged. */
export async function restartIce(page, native, check, side) {
  const before = await check();
  if (side === "browser") await page.evaluate(() => window.politely.restart());
  else native.send("/restart");
  return settle(async () => {
    const c = await check();
    const restarted = c.sb && before.sb && c.sb.localUfrag !== before.sb.localUfrag && c.sb.remoteUfrag !== before.sb.remoteUfrag;
    return { ...c, ok: c.ok && restarted };
  }, `an ICE restart from the ${side}`);
}

/** `rounds` glare rounds between a page and a native peer (the page first, then the native
 * peer), each until `check` has converged with more offers made; resolves to the times. With
 * `restart`, each round is an ICE restart from both sides at once (a page that has only data
 * channels has nothing else to renegotiate), converged once both ends have new credentials. */
export async function glareRounds(page, native, check, rounds, { restart = false } = {}) {
  const times = [];
  for (let round = 0; round < rounds; round++) {
    const before = await check();
    const start = performance.now();
    await page.evaluate((kind) => window.politely.glare(kind), restart ? "restart" : undefined);
    native.send(restart ? "/restart" : "/glare");
    const done = await settle(async () => {
      const c = await check();
      const more = offers(c.sb) + c.sn.counters.offers > offers(before.sb) + before.sn.counters.offers;
      const restarted = !restart || (c.sb && c.sb.localUfrag !== before.sb.localUfrag && c.sb.remoteUfrag !== before.sb.remoteUfrag);
      return { ...c, ok: c.ok && more && restarted };
    }, `round ${round}`);
    times.push(performance.now() - start);
    const wrong = directionsNotAsAsked(await pageDirections(page, done.nativeId), await nativeDirections(native, done.pageId));
    assert.deepEqual(wrong, [], `round ${round}: the directions both applications asked for`);
  }
  return times;
}

/** Everything the issue asks of a browser and a native peer, with `nativeFirst` choosing who
 * joins first (and so who is polite: the lower id). `open` opens a page on the server's origin;
 * `browser` names it in the figures; `rounds` glare rounds. */
export async function browserAndNative({ server, open, browser, name, nativeFirst, rounds }) {
  const ROUNDS = rounds;
  const page = await open();
  let native;
  let nativeId;
  let pageId;
  if (nativeFirst) {
    native = new Native(server.ws, name);
    nativeId = await native.id();
    pageId = await joinDemo(page, name);
  } else {
    pageId = await joinDemo(page, name);
    native = new Native(server.ws, name);
    nativeId = await native.id();
  }
  try {
    const converged = () => nativeConverged(page, pageId, native, nativeId);
    let s = await settle(converged, "browser and native connected");
    assert.equal(s.sb.polite, !nativeFirst, "the first to join is polite");
    assert.equal(s.sn.polite, nativeFirst);

    // Chat both ways.
    await page.evaluate(() => window.politely.send("hello native"));
    await native.message(pageId, "hello native");
    native.send("hello browser");
    await heardAtPage(page, nativeId, "hello browser");

    // Glare rounds: the first two add an audio and a video transceiver on each side, the
    // rest flip their directions.
    const times = [];
    let collisions = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const before = await converged();
      let start = performance.now();
      if (browser === "Firefox") {
        // An evaluation over WebDriver BiDi returns tens of milliseconds after Firefox has
        // sent its offer, too late for the native offer to cross it: both sides are told to
        // change at one moment on the shared clock instead.
        const at = Date.now() + 40;
        await page.evaluate((at) => setTimeout(() => window.politely.glare(), at - Date.now()), at);
        await sleep(at - Date.now());
        start = performance.now();
        native.send("/glare");
      } else {
        // The page first: its offer takes Chromium a few milliseconds to make, the native
        // peer's well under one, so both are in flight at once.
        await page.evaluate(() => window.politely.glare());
        native.send("/glare");
      }
      const done = await settle(async () => {
        const c = await converged();
        return { ...c, ok: c.ok && offers(c.sb) + c.sn.counters.offers > offers(before.sb) + before.sn.counters.offers };
      }, `round ${round}`);
      times.push(performance.now() - start);
      const wrong = directionsNotAsAsked(await pageDirections(page, nativeId), await nativeDirections(native, pageId));
      assert.deepEqual(wrong, [], `round ${round}: the directions both applications asked for`);
      if (glared(done.sb) + done.sn.counters.rollbacks + done.sn.counters.ignoredOffers >
          glared(before.sb) + before.sn.counters.rollbacks + before.sn.counters.ignoredOffers) collisions++;
      if (round === 1) {
        // An audio and a video transceiver from each side, all negotiated.
        const kinds = await page.evaluate((peer) => {
          const pc = window.politely.client.connection(peer);
          return pc.getTransceivers().filter((t) => t.mid !== null).map((t) => t.receiver.track.kind).sort();
        }, nativeId);
        assert.deepEqual(kinds, ["audio", "audio", "video", "video"]);
      }
    }
    s = await converged();
    console.log(
      `# ${summary(`${browser}-native glare round (${nativeFirst ? "native" : "browser"} polite)`, times)}; ` +
        `glare in ${collisions} of ${ROUNDS}; watchdog: browser ${s.sb.counters.watchdog}, native ${s.sn.counters.watchdog}`,
    );
    // Whether both offers are in flight at once is a race between Chromium making its offer
    // and the native peer reading `/glare`; collisions have ranged from 11 to 200 of 200 rounds
    // between runs. A few prove the glare path runs against Chromium in this role order.
    // Against Firefox, told at one moment, most rounds collide.
    const least = browser === "Firefox" ? ROUNDS / 2 : Math.max(1, ROUNDS / 40);
    assert.ok(collisions >= least, `offers collided in ${collisions} rounds only`);

    // An ICE restart from each side: new credentials on both ends, still connected, and the
    // side that offered the restart controls ICE at both ends (Chromium decides the roles
    // afresh on a restart; a native peer that kept its role made both ends controlled, and the
    // restarted session waited for the watchdog).
    for (const side of ["native", "browser", "native"]) {
      const before = await converged();
      s = await restartIce(page, native, converged, side);
      const pageRole = await page.evaluate(async (peer) => {
        const report = await window.politely.client.connection(peer).getStats();
        return [...report.values()].find((r) => r.type === "transport")?.iceRole;
      }, nativeId);
      // One end controls, the other not. Chromium decides the roles afresh on a restart (the
      // offerer controls); Firefox keeps the role it had, and the native side follows it.
      const roles = { page: pageRole, native: s.sn.iceControlling ? "controlling" : "controlled" };
      assert.notEqual(roles.page, roles.native, `ICE roles after a restart from the ${side}: ${JSON.stringify(roles)}`);
      // When the other side made an offer of its own meanwhile (an exchange still on its way
      // from the rounds above), that offer may win and carry the new credentials: then its
      // offerer controls, and only the check above applies.
      const other = side === "native" ? offers(s.sb) - offers(before.sb) : s.sn.counters.offers - before.sn.counters.offers;
      if (other > 0) console.log(`# the ${side === "native" ? "page" : "native peer"} offered during the restart from the ${side}: ${JSON.stringify(roles)}`);
      if (browser === "Chromium" && other === 0) {
        assert.deepEqual(
          roles,
          side === "native" ? { page: "controlled", native: "controlling" } : { page: "controlling", native: "controlled" },
          `ICE roles after a restart from the ${side}`,
        );
      }
      assert.equal(s.sn.counters.watchdog, before.sn.counters.watchdog, `the watchdog recovered the restart from the ${side}`);
    }
    assert.ok(s.sn.counters.iceRestarts >= 3, JSON.stringify(s.sn.counters));

    // A reload: the page comes back as a new peer with a new connection, and the native
    // peer connects to it.
    await page.reload();
    await page.waitForFunction((old) => window.politely?.client?.id && window.politely.client.id !== old, pageId, {
      timeout: 10_000,
    });
    const reloadedId = await page.evaluate(() => window.politely.client.id);
    await native.err.next((l) => l === `politely: ${pageId} left`, { what: "the old page left" });
    s = await settle(() => nativeConverged(page, reloadedId, native, nativeId), "the reloaded page connected");
    assert.notEqual(s.sb.connectionId, undefined);
    await page.evaluate(() => window.politely.send("back again"));
    await native.message(reloadedId, "back again");
    native.send("welcome back");
    await heardAtPage(page, nativeId, "welcome back");
    assert.deepEqual(page.errors, []);
  } finally {
    assert.equal(await native.quit(), 0);
    await page.context().close();
  }
}
