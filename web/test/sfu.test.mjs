// Chromium pages in an SFU room: `politely serve --sfu` on 127.0.0.1 runs the room's SFU, each
// page publishes its fake camera through politely.js and decodes the others' video. A screen
// source is labelled as such on the other pages; unpublish, leave and a reload are seen; then
// rounds in which every page toggles its camera at the same moment, each round settling.
//
// Run by run.sh inside a network namespace with only `lo`. POLITELY_SFU_ROUNDS sets the number
// of toggle rounds (50 by default).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { BIN, Native, joinDemo, launchChromium, openPage, summary, until } from "./harness.mjs";

const ROUNDS = Number(process.env.POLITELY_SFU_ROUNDS ?? 50);
const PAGES = 4;
let server;
let browser;

before(async () => {
  const child = spawn(BIN, ["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0", "--sfu"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, POLITELY_LOG: process.env.POLITELY_SFU_LOG ?? "warn,rtc=error,rtc_dtls=error" },
  });
  const addr = await new Promise((resolve, reject) => {
    let text = "";
    child.stdout.on("data", (d) => {
      text += d;
      const m = /listening on (\S+)/.exec(text);
      if (m) resolve(m[1]);
    });
    child.once("exit", (code) => reject(new Error(`the server exited (${code})`)));
  });
  server = {
    origin: `http://${addr}`,
    ws: `ws://${addr}/ws`,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
    },
  };
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Joins `room` through politely.js on a page, publishes the fake camera as `source`, and keeps
 * track of what arrives: window.sfu.remote maps a track id to {publisher, track, video}. With
 * `gate`, the page asks the SFU for a lease of that many ms before each renegotiation. */
async function joinRoom(page, room, source, gate = null) {
  return page.evaluate(
    async ({ ws, room, source, gate }) => {
      const { Politely } = await import("/politely.js");
      const client = new Politely({ iceServers: [], gate });
      const state = { client, remote: new Map(), camera: null, source, audio: [] };
      window.sfu = state;
      client.on("track", ({ track, streams }) => {
        if (track.kind === "audio") {
          // Played, so that Chromium decodes it (an audio track without a sink is not).
          const audio = new Audio();
          audio.srcObject = new MediaStream([track]);
          audio.play().catch(() => {});
          state.audio.push(audio);
          return;
        }
        if (track.kind !== "video") return;
        const video = document.createElement("video");
        video.muted = true;
        video.autoplay = true;
        video.srcObject = new MediaStream([track]);
        document.body.append(video);
        video.play().catch(() => {});
        state.remote.set(track.id, { publisher: streams[0]?.id, track, video });
      });
      client.on("track-removed", ({ track }) => {
        const r = state.remote.get(track.id);
        if (r) {
          r.video.remove();
          state.remote.delete(track.id);
        }
      });
      client.createDataChannel(null, "chat");
      await client.join(ws, room);
      await new Promise((resolve) => {
        const wait = () => (client.sfu && client.peers().some((p) => p.connectionState === "connected") ? resolve() : setTimeout(wait, 5));
        wait();
      });
      state.publish = async () => {
        const media = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240, frameRate: 15 } });
        state.camera = media.getVideoTracks()[0];
        client.publish(state.camera, { source: state.source });
      };
      state.unpublish = () => {
        client.unpublish(state.camera);
        state.camera.stop();
        state.camera = null;
      };
      await state.publish();
      return client.id;
    },
    { ws: server.ws, room, source, gate },
  );
}

/** The native publisher's audio as a page receives it: the receiver's `audioLevel` (from the
 * RTP header extension the native peer wrote, forwarded by the SFU) and the samples decoded. */
function nativeAudio(page, publisher) {
  return page.evaluate(async (publisher) => {
    const { client } = window.sfu;
    const pc = client.connection(client.sfu);
    const listed = client.tracks.find((t) => t.publisher === publisher && t.kind === "audio");
    if (!pc || !listed?.mid) return { ok: false, detail: { listed } };
    const transceiver = pc.getTransceivers().find((t) => t.mid === listed.mid);
    const levels = transceiver?.receiver.getSynchronizationSources().map((s) => s.audioLevel) ?? [];
    let samples = 0;
    let packets = 0;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === "inbound-rtp" && s.kind === "audio" && s.mid === listed.mid) {
        samples = s.totalSamplesReceived ?? 0;
        packets = s.packetsReceived ?? 0;
      }
    }
    // Level 30 -dBov is 10^(-30/20) of full scale.
    const ok = samples > 0 && levels.length > 0 && levels.every((l) => Math.abs(l - 10 ** (-30 / 20)) < 0.002);
    return { ok, detail: { mid: listed.mid, levels, samples, packets } };
  }, publisher);
}

/** A page's negotiation counters toward the SFU. */
function countersTowardSfu(page) {
  return page.evaluate(() => {
    const { client } = window.sfu;
    return client.stats()[client.sfu]?.counters ?? null;
  });
}

/** What a page decodes now, per receiving m-section: the room's track the SFU's list puts on
 * that mid (a browser keeps a transceiver's track when the SFU reuses it for another one), its
 * publisher and source, and the frames decoded there so far. */
function decoding(page) {
  return page.evaluate(async () => {
    const { client } = window.sfu;
    const pc = client.connection(client.sfu);
    const out = [];
    if (!pc) return out;
    const live = new Set(pc.getTransceivers().filter((t) => /recv/.test(t.currentDirection ?? "")).map((t) => t.mid));
    for (const s of (await pc.getStats()).values()) {
      if (s.type !== "inbound-rtp" || s.kind !== "video" || !live.has(s.mid)) continue;
      const listed = client.tracks.find((t) => t.mid === s.mid);
      out.push({
        mid: s.mid,
        track: listed?.id ?? null,
        publisher: listed?.publisher ?? null,
        source: listed?.source ?? null,
        frames: s.framesDecoded ?? 0,
      });
    }
    return out;
  });
}

/** Every page decodes exactly the live publishers other than itself, with the sources given,
 * each with frames decoded since `baseline` (frames per page and mid before a round). */
async function allDecode(pages, ids, publishing, sources, baseline = null) {
  const views = await Promise.all(pages.map(decoding));
  const detail = [];
  let ok = true;
  for (const [i, view] of views.entries()) {
    const want = ids
      .map((id, j) => (j !== i && publishing[j] ? `${id}:${sources[j]}` : null))
      .filter(Boolean)
      .sort();
    const since = (v) => v.frames - (baseline?.[i]?.[v.mid] ?? 0);
    const got = view.filter((v) => since(v) > 0 && v.track).map((v) => `${v.publisher}:${v.source}`).sort();
    if (JSON.stringify(got) !== JSON.stringify(want)) ok = false;
    detail.push({ page: i, want, got, view });
  }
  return { ok, detail };
}

/** Frames decoded so far, per page and mid. */
async function frames(pages) {
  const views = await Promise.all(pages.map(decoding));
  return views.map((view) => Object.fromEntries(view.map((v) => [v.mid, v.frames])));
}

test("pages and a native publisher in an SFU room: the pages decode each other and hear the native audio, see a screen as a screen, unpublish, leave, reload, and toggle their cameras at once; one page asks the SFU first (the gate)", async () => {
  const room = `sfu-${Date.now()}`;
  const sources = ["media", "media", "media", "screen"];
  // The screen page keeps the negotiation gate: it asks before each renegotiation.
  const GATED = 3;
  const pages = [];
  const ids = [];
  for (let i = 0; i < PAGES; i++) {
    const page = await openPage(browser, server.origin, "/politely.js");
    pages.push(page);
    ids.push(await joinRoom(page, room, sources[i], i === GATED ? 2000 : null));
  }
  const publishing = pages.map(() => true);
  await until(() => allDecode(pages, ids, publishing, sources), { ms: 20_000, what: "every page decoding the others" });

  // A native publisher joins: every page receives its audio, decoded, with the audio level it
  // wrote in each packet's header extension (the SFU forwards extensions by URI).
  const native = new Native(server.ws, room, ["--no-chat", "--publish-audio", "30"]);
  const nativeId = await native.id();
  await until(async () => {
    const heard = await Promise.all(pages.map((p) => nativeAudio(p, nativeId)));
    return { ok: heard.every((h) => h.ok), detail: heard };
  }, { ms: 15_000, what: "every page hearing the native publisher at its audio level" });

  // Page 1 unpublishes: the others stop receiving it.
  await pages[1].evaluate(() => window.sfu.unpublish());
  publishing[1] = false;
  await until(() => allDecode(pages, ids, publishing, sources), { ms: 10_000, what: "the unpublish seen" });

  // Only the pages still in the room count from here on.
  const at = () => pages.map((p, i) => i).filter((i) => pages[i]);
  const settled = (baseline) =>
    allDecode(
      at().map((i) => pages[i]),
      at().map((i) => ids[i]),
      at().map((i) => publishing[i]),
      at().map((i) => sources[i]),
      baseline,
    );

  // Page 2 leaves: its track goes from the others' pages.
  await pages[2].evaluate(() => window.sfu.client.leave());
  await pages[2].context().close();
  pages[2] = null;
  await until(() => settled(), { ms: 10_000, what: "the leave seen" });

  // Page 0 reloads: a new session that receives everything again.
  await pages[0].reload();
  ids[0] = await joinRoom(pages[0], room, sources[0]);
  await until(() => settled(), { ms: 15_000, what: "the reloaded page receiving everything again" });

  // Page 1 publishes again and a new page takes page 2's place; then every round all four
  // pages toggle their camera at once.
  await pages[1].evaluate(() => window.sfu.publish());
  publishing[1] = true;
  pages[2] = await openPage(browser, server.origin, "/politely.js");
  ids[2] = await joinRoom(pages[2], room, sources[2]);
  publishing[2] = true;
  await until(() => settled(), { ms: 10_000, what: "page 1 back and a new page in" });
  const live = pages.map((p, i) => [p, i]).filter(([p]) => p);
  const gatedBefore = await countersTowardSfu(pages[GATED]);
  const times = [];
  for (let round = 0; round < ROUNDS; round++) {
    await Promise.all(live.map(([p]) => p.evaluate(() => window.sfu.unpublish())));
    // Once the removals are seen, the frames so far are the baseline: the round settles when
    // every page decodes new frames from every other page.
    await until(
      async () => (await Promise.all(live.map(([p]) => decoding(p)))).every((v) => v.length === 0),
      { ms: 15_000, what: `round ${round + 1}: the cameras gone` },
    );
    const baseline = await frames(at().map((i) => pages[i]));
    const started = Date.now();
    await Promise.all(live.map(([p]) => p.evaluate(() => window.sfu.publish())));
    await until(() => settled(baseline), { ms: 15_000, what: `toggle round ${round + 1} settling` });
    times.push(Date.now() - started);
  }
  console.log(summary(`SFU: ${live.length} pages publish at once -> every page decodes every other's new track`, times));
  for (const [p] of live) assert.deepEqual(p.errors, [], "no page errors");
  // The native publisher is still heard by every page after the rounds.
  await until(async () => {
    const heard = await Promise.all(live.map(([p]) => nativeAudio(p, nativeId)));
    return { ok: heard.every((h) => h.ok), detail: heard };
  }, { ms: 10_000, what: "the native publisher still heard" });
  assert.equal(await native.quit(), 0, "the native publisher leaves cleanly");
  // In the rounds, the gated page renegotiated under leases the SFU granted (one for its
  // removal and one for its new track each round), and never had to roll back.
  const after = await countersTowardSfu(pages[GATED]);
  const gated = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - gatedBefore[k]]));
  console.log(`SFU: the gated page in the rounds: ${JSON.stringify(gated)}`);
  assert.ok(gated.offersUnderLease >= 2 * ROUNDS, `offers under a lease: ${JSON.stringify(gated)}`);
  assert.equal(gated.rollbacks, 0, `the gated page rolled back: ${JSON.stringify(gated)}`);
});

test("the demo page in an SFU room: a grid of the others' tracks, each with its publisher and source", async () => {
  const room = `sfu-demo-${Date.now()}`;
  const short = (id) => id.slice(-6);
  const [a, b] = [await openPage(browser, server.origin), await openPage(browser, server.origin)];
  const [aId, bId] = [await joinDemo(a, room), await joinDemo(b, room)];
  await until(() => Promise.all([a, b].map((p) => p.evaluate(() => window.politely.client.sfu !== null))).then((v) => v.every(Boolean)), {
    what: "both pages talking to the SFU",
  });
  await a.evaluate(() => window.politely.call());
  await b.evaluate(() => window.politely.call());
  await b.evaluate(() => window.politely.share());
  const tiles = (p) => p.evaluate(() => window.politely.tiles());
  await until(
    async () => {
      const [ta, tb] = await Promise.all([tiles(a), tiles(b)]);
      const ok =
        ta.includes(`${short(bId)} · media`) && ta.includes(`${short(bId)} · screen`) && tb.includes(`${short(aId)} · media`);
      return { ok, detail: { ta, tb } };
    },
    { ms: 15_000, what: "each page's grid naming the other's camera and screen" },
  );
  // b stops sharing: a's grid loses the screen.
  await b.evaluate(() => window.politely.share());
  await until(async () => !(await tiles(a)).includes(`${short(bId)} · screen`), { ms: 10_000, what: "the screen tile gone" });
  for (const p of [a, b]) assert.deepEqual(p.errors, [], "no page errors");
});
