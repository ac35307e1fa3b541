// politely.js outside a browser: what needs no page.
import { test } from "node:test";
import assert from "node:assert/strict";
import { serverUrl } from "../politely.js";

test("a server URL with or without /ws names the same server", () => {
  assert.equal(serverUrl("ws://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
  assert.equal(serverUrl("ws://127.0.0.1:8080/"), "ws://127.0.0.1:8080/ws");
  assert.equal(serverUrl("ws://127.0.0.1:8080/ws"), "ws://127.0.0.1:8080/ws");
  assert.equal(serverUrl("ws://[::1]:9"), "ws://[::1]:9/ws");
  assert.equal(serverUrl("http://localhost:8080"), "ws://localhost:8080/ws");
  assert.equal(serverUrl("https://example.org"), "wss://example.org/ws");
  // A deployment's own path (a proxy routing by path) is kept, with its query.
  assert.equal(serverUrl("wss://example.org/signal/ws?x=1"), "wss://example.org/signal/ws?x=1");
  assert.throws(() => serverUrl("ftp://example.org"), TypeError);
  assert.throws(() => serverUrl("not a url"), TypeError);
});
