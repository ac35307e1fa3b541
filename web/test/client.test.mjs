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

test("every member the type declarations name exists in the module", async () => {
  const { readFile } = await import("node:fs/promises");
  const module = await import("../politely.js");
  const declarations = await readFile(new URL("../politely.d.ts", import.meta.url), "utf8");
  const body = declarations.slice(declarations.indexOf("export class Politely"));
  const members = body.slice(0, body.indexOf("\n}\n")).split("\n").slice(1);
  const named = members
    .map((line) => /^ {2}(static )?(readonly )?([a-zA-Z]+)[(<?:]/.exec(line))
    .filter(Boolean)
    .map(([, isStatic, , name]) => ({ isStatic: Boolean(isStatic), name }))
    .filter(({ name }) => name !== "constructor");
  assert.ok(named.length > 20, `only ${named.length} members read from politely.d.ts`);
  const client = new module.Politely();
  for (const { isStatic, name } of named) {
    const where = isStatic ? module.Politely : client;
    assert.ok(name in where, `politely.d.ts names ${isStatic ? "static " : ""}${name}, which politely.js lacks`);
  }
  // And the other way: every public method of the class is declared.
  const declared = new Set(named.map(({ name }) => name));
  const undeclared = Object.getOwnPropertyNames(module.Politely.prototype).filter(
    (name) => !name.startsWith("_") && name !== "constructor" && !declared.has(name),
  );
  assert.deepEqual(undeclared, [], "public methods missing from politely.d.ts");
  for (const name of ["serverUrl", "default", "Politely"]) assert.ok(name in module, `export ${name}`);
});
