// TURN between Chromium and a native peer: coturn (Debian's) started here on 127.0.0.1, a
// `politely serve --turn-url --turn-secret` that hands it out with credentials lasting 4 s,
// a page with `iceTransportPolicy: "relay"` and `politely join --relay-only`. They connect,
// renegotiate under glare and restart ICE from each side after the first credentials expired
// (Chromium allocates afresh on a restart, with the credentials politely.js renewed). The
// same steps without the relay-only policy give the host-candidate figures beside them.
//
// Run by run.sh inside a network namespace with only `lo`. POLITELY_TURN_ROUNDS sets the
// number of glare rounds per mode (20 by default).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import dgram from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { glareRounds, nativeConverged, restartIce, settle } from "./cases.mjs";
import { Native, joinDemo, launchChromium, openPage, startServer, summary, until } from "./harness.mjs";

const ROUNDS = Number(process.env.POLITELY_TURN_ROUNDS ?? 20);
const SECRET = "a shared secret for the browser test";
let coturn;
let server;
let browser;

/** A free UDP port on 127.0.0.1 (free a moment ago). */
async function freePort() {
  const socket = dgram.createSocket("udp4");
  await new Promise((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const { port } = socket.address();
  await new Promise((resolve) => socket.close(resolve));
  return port;
}

/** coturn on 127.0.0.1 with REST credentials; resolves once it answers a STUN binding. */
async function startCoturn() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "politely-coturn-"));
  const child = spawn(
    "turnserver",
    [
      "-n",
      "--listening-ip=127.0.0.1",
      "--relay-ip=127.0.0.1",
      "--allow-loopback-peers",
      "--no-tcp",
      "--no-tls",
      "--no-dtls",
      "--no-tcp-relay",
      "--no-cli",
      "--fingerprint",
      "--use-auth-secret",
      `--static-auth-secret=${SECRET}`,
      "--realm=politely.test",
      `--listening-port=${port}`,
      "--min-port=40000",
      "--max-port=40999",
      `--pidfile=${dir}/turnserver.pid`,
      `--userdb=${dir}/turndb`,
      "--log-file=stdout",
      "--simple-log",
    ],
    { stdio: ["ignore", "ignore", "ignore"] },
  );
  const probe = dgram.createSocket("udp4");
  const answered = new Promise((resolve) => probe.once("message", resolve));
  // A binding request: type 0x0001, length 0, the magic cookie, a transaction id.
  const request = Buffer.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...Array(12).fill(7)]);
  for (let i = 0; i < 100; i++) {
    probe.send(request, port, "127.0.0.1");
    const ok = await Promise.race([answered.then(() => true), new Promise((r) => setTimeout(() => r(false), 100))]);
    if (ok) break;
    assert.ok(i < 99, "coturn did not answer");
  }
  probe.close();
  return {
    url: `turn:127.0.0.1:${port}?transport=udp`,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

before(async () => {
  coturn = await startCoturn();
  server = await startServer(["--turn-url", coturn.url, "--turn-ttl", "4s"], { POLITELY_TURN_SECRET: SECRET });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await coturn?.stop();
});

/** The candidate types of the page's connection to `peer`: its local candidates and the
 * selected pair's two ends. */
function candidateTypes(page, peer) {
  return page.evaluate(async (peer) => {
    const report = await window.politely.client.connection(peer).getStats();
    const all = [...report.values()];
    const transport = all.find((r) => r.type === "transport");
    const pair = all.find((r) => r.id === transport?.selectedCandidatePairId);
    const type = (id) => all.find((r) => r.id === id)?.candidateType;
    return {
      local: [...new Set(all.filter((r) => r.type === "local-candidate").map((r) => r.candidateType))].sort(),
      selected: pair ? [type(pair.localCandidateId), type(pair.remoteCandidateId)] : null,
    };
  }, peer);
}

let rooms = 0;

/** Connect, chat, glare rounds and two ICE restarts, relay-only or not. */
async function connectAndGlare(relay) {
  const name = `turn-${relay ? "relay" : "host"}-${++rooms}`;
  const page = await openPage(browser, server.origin, relay ? "/?relay" : "/");
  const started = performance.now();
  const pageId = await joinDemo(page, name);
  const native = new Native(server.ws, name, relay ? ["--relay-only"] : []);
  try {
    const nativeId = await native.id();
    const check = () => nativeConverged(page, pageId, native, nativeId);
    let s = await settle(check, `${relay ? "relay-only" : "host"} connect`, 15_000);
    const connect = performance.now() - started;
    const types = await candidateTypes(page, nativeId);
    if (relay) {
      // What relay-only asks for: the page offers relay candidates only, and the path in use
      // goes through the TURN server at both ends.
      assert.deepEqual(types.local, ["relay"], JSON.stringify(types));
      assert.deepEqual(types.selected, ["relay", "relay"], JSON.stringify(types));
    } else {
      assert.deepEqual(types.selected, ["host", "host"], JSON.stringify(types));
    }
    await page.evaluate(() => window.politely.send("hello native"));
    await native.message(pageId, "hello native");

    const times = await glareRounds(page, native, check, ROUNDS);

    // Past the first credentials' 4 s: a restart from each side still finds the relayed path
    // (the page's allocates anew with the credentials it was given since).
    const wait = 5_000 - (performance.now() - started);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    for (const side of ["browser", "native"]) s = await restartIce(page, native, check, side);
    if (relay) {
      const after = await candidateTypes(page, nativeId);
      assert.deepEqual(after.selected, ["relay", "relay"], JSON.stringify(after));
    }
    native.send("after the restarts");
    await until(async () => (await page.evaluate((from) => window.politely.messages.filter((m) => m.from === from).map((m) => m.text), nativeId)).includes("after the restarts"), { what: "the message after the restarts" });
    assert.equal(s.sb.counters.watchdog + s.sn.counters.watchdog, 0, "no watchdog firing");
    assert.deepEqual(page.errors, []);
    console.log(`# ${relay ? "relay-only" : "host candidates"}: page load to connected ${connect.toFixed(1)} ms; ${summary("glare round", times)}`);
  } finally {
    assert.equal(await native.quit(), 0);
    await page.context().close();
  }
}

test("Chromium and a native peer with host candidates (the figures to compare with)", () => connectAndGlare(false));

test("Chromium and a native peer, both relay-only through coturn: connect, glare, ICE restarts after the credentials expired", () =>
  connectAndGlare(true));
