// A browser over `wss://`: `politely serve --tls-cert --tls-key` with a certificate for
// 127.0.0.1 made by this test (openssl), the page loaded over https and signaling over wss,
// and a native peer trusting that certificate (`join --ca`). They connect, chat, glare and
// restart ICE from each side, as over plain ws.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { glareRounds, heardAtPage, nativeConverged, restartIce, settle } from "./cases.mjs";
import { Native, joinDemo, launchChromium, openPage, startServer, summary } from "./harness.mjs";

const ROUNDS = 20;
const dir = mkdtempSync(join(tmpdir(), "politely-tls-"));
const cert = join(dir, "cert.pem");
const key = join(dir, "key.pem");
let server;
let browser;

before(async () => {
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=politely test",
    // A server certificate, not a CA (rustls refuses a CA certificate as a server's).
    "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE",
    "-addext", "extendedKeyUsage=serverAuth",
  ], { stdio: "ignore" });
  server = await startServer(["--tls-cert", cert, "--tls-key", key]);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("a page over https and wss with a native peer over wss: connect, chat, glare, ICE restarts", async () => {
  assert.match(server.ws, /^wss:\/\/127\.0\.0\.1:\d+\/ws$/);
  const page = await openPage(browser, server.origin, "/", { certificateErrors: true });
  const pageId = await joinDemo(page, "secure");
  assert.equal(await page.evaluate(() => location.protocol), "https:");
  assert.match(await page.evaluate(() => window.politely.client.url), /^wss:\/\//);
  const native = new Native(server.ws, "secure", ["--ca", cert]);
  try {
    const nativeId = await native.id();
    const check = () => nativeConverged(page, pageId, native, nativeId);
    await settle(check, "connected over wss");
    await page.evaluate(() => window.politely.send("hello over wss"));
    await native.message(pageId, "hello over wss");
    native.send("hello back over wss");
    await heardAtPage(page, nativeId, "hello back over wss");
    const times = await glareRounds(page, native, check, ROUNDS);
    let s;
    for (const side of ["browser", "native"]) s = await restartIce(page, native, check, side);
    assert.equal(s.sb.counters.watchdog + s.sn.counters.watchdog, 0, "no watchdog firing");
    assert.deepEqual(page.errors, []);
    console.log(`# over wss: ${summary("glare round", times)}`);
  } finally {
    assert.equal(await native.quit(), 0);
    await page.context().close();
  }
});
