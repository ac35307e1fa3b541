// IPv6: Chromium and a native peer over IPv6 only. The server listens on [::1] and the page is
// loaded from http://[::1]:…/. Chromium gathers no candidate on ::1 (it leaves IPv6 loopback
// out, loopback flag or not), so run.sh gives this test a namespace of its own with an IPv6
// documentation address, 2001:db8::1, on a veth pair that exists only inside it; the native
// peer binds that address alone. The path in use is IPv6 at both ends, and the peers chat,
// glare and restart ICE from each side. (Native peers on ::1 alone: crates/politely/tests.)

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { glareRounds, nativeConverged, restartIce, selectedPair, settle } from "./cases.mjs";
import { Native, joinDemo, launchChromium, openPage, startServer, summary, until } from "./harness.mjs";

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

test("Chromium and a native peer over IPv6: connect, chat, glare, ICE restarts", async () => {
  assert.match(server.origin, /^http:\/\/\[::1\]:\d+$/);
  const page = await openPage(browser, server.origin);
  const pageId = await joinDemo(page, "six");
  const native = new Native(server.ws, "six", ["--bind", ADDRESS]);
  try {
    const nativeId = await native.id();
    const check = () => nativeConverged(page, pageId, native, nativeId);
    let s = await settle(check, "connected over IPv6");
    assert.deepEqual(await selectedPair(page, nativeId), [ADDRESS, ADDRESS]);
    await page.evaluate(() => window.politely.send("hello over six"));
    await native.message(pageId, "hello over six");
    const times = await glareRounds(page, native, check, ROUNDS);
    for (const side of ["browser", "native"]) s = await restartIce(page, native, check, side);
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
