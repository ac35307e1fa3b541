// politely.js: the browser client of a politely signaling server (protocol v1).
//
// One WebSocket to the server, one RTCPeerConnection per other peer of the room, negotiated
// with the W3C "Perfect Negotiation Example" (webrtc-pc, current form since PR #2572). It sends
// the same signals and follows the same connection-id rules as the native runtime
// (docs/protocol.md, "Signal data"), so browsers and `politely join` share rooms.
//
//   import { Politely } from "/politely.js";
//   const client = new Politely({ iceServers: [] });
//   client.on("message", ({ peer, label, data }) => console.log(`${peer}: ${data}`));
//   client.createDataChannel(null, "chat");          // null: every peer, now and later
//   await client.join("ws://127.0.0.1:8080", "lobby");     // "/ws" is added when there is no path
//   client.send("chat", "hello");
//
// Methods that take a peer id as their first argument act on that peer only, or on every peer
// (present and future) when it is null or "*". What they create is remembered as an intent and
// re-created on a new RTCPeerConnection whenever one replaces the old (remote restart,
// watchdog), as the native engine replays its channels and transceivers.
//
// Events (`client.on(name, fn)`; fn gets the detail object; or addEventListener + e.detail):
//   joined {id, room, peers}          peer-joined {peer, polite, user}                peer-left {peer}
//   (`user` is who the peer is, from its room token: {sub, name?, metadata?}, or undefined)
//   connected {peer}                  disconnected {peer, state}     connection-state {peer, state}
//   channel {peer, label, channel, origin}                           channel-closed {peer, label, channel}
//   message {peer, label, data, channel}
//   track {peer, track, streams, transceiver}                        track-removed {peer, track}
//   negotiated {peer, localOffer, counters}                          replaced {peer, reason, old, new}
//   watchdog {peer, cause, recovery}  signaling-lost {reason, code}  reconnected {resumed, id}
//   error {peer?, code?, message, error?, during?}                   closed {reason}
//   tracks {sfu, tracks}              room {sfu, message}
//
// SFU rooms (docs/protocol.md, "The SFU role"): when the room has an SFU, the client connects to
// it alone (`client.sfu` is its id) and every method's "every peer" is the SFU. `publish(track,
// {source})` says what a track shows ("media" or "screen") and sends it; the SFU's `tracks` event
// lists what others publish ({id, publisher, kind, source}); `subscribe(ids)` and
// `unsubscribe(ids)` choose among them (by default every track is received). A forwarded track
// arrives with `streams[0].id` = its publisher's id and `track.id` = the list's `id`; a channel
// another client opened arrives labelled `<publisher id>/<label>`. With the `gate` option (ms),
// the client asks the SFU for a lease before each renegotiation and offers under it, so its
// offers never cross the SFU's (docs/protocol.md, "The negotiation gate").

const SUBPROTOCOL = "politely.v1";
/** Signals kept while the WebSocket is down; beyond this the oldest go (watchdogs recover). */
const BACKLOG = 1024;
/** Remote candidates kept for a description that is not applied (yet). */
const STASH = 64;
/** Connection ids remembered per peer, so that late messages for them are recognised. */
const RETIRED = 32;
/** Messages per peer and label held until our channel opens. */
const HELD = 1000;
/**
 * The native engine carries its data section on an out-of-band channel on stream 1000, because
 * its SCTP starts only with the first DTLS handshake: a data section added by a renegotiation
 * never connects there. We do the same, so a connection whose first change is media still
 * opens data channels later.
 */
const DATA_SECTION_STREAM = 1000;

const DEFAULTS = {
  iceServers: undefined, // RTCIceServer[]; none by default
  rtcConfig: {}, // more RTCConfiguration fields
  token: undefined, // room token, for a server with a secret
  watchdogTimeout: 8000, // ms without negotiation progress before a connection is replaced
  disconnectedRestart: 4000, // ms in iceConnectionState "disconnected" before restartIce()
  reconnectFor: 120000, // ms of trying to get the signaling back before giving up
  joinTimeout: 10000, // ms to wait for a welcome
  pingInterval: 15000, // ms between application pings
  pingTimeout: 40000, // ms of silence after which the WebSocket counts as dead
  dataSection: true, // see DATA_SECTION_STREAM
  // The negotiation gate (docs/protocol.md, "The negotiation gate"): ms of lease to ask for
  // before each renegotiation instead of offering at once, for a peer that keeps the gate (an
  // SFU). Off (null) by default. A connection's first offer is never gated; a request that
  // hears nothing for this long is followed by an offer without a lease.
  gate: null,
  debug: false, // log every event to the console
};

/** The ICE ufrag of a description (the first one; BUNDLE makes them all equal). */
const ufragOf = (sdp) => /^a=ice-ufrag:(\S+)/m.exec(sdp ?? "")?.[1] ?? null;
/** The mids of a description, in m-line order. */
const midsOf = (sdp) => [...(sdp ?? "").matchAll(/^a=mid:(\S+)/gm)].map((m) => m[1]);
/** Numeric mids in numeric order, others after, by text. */
const byMid = (a, b) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The header extensions of a description: `[id, uri]` of each `a=extmap` line. */
const extmapsOf = (sdp) => [...(sdp ?? "").matchAll(/^a=extmap:(\d+)(?:\/\S+)? (\S+)/gm)].map((m) => [m[1], m[2]]);

/** Whether `remote` gives a header-extension id another URI than `local` does, or a URI
 * another id. */
function extmapConflict(local, remote) {
  const ids = new Map(extmapsOf(local));
  const uris = new Map(extmapsOf(local).map(([id, uri]) => [uri, id]));
  return extmapsOf(remote).some(([id, uri]) => (ids.has(id) && ids.get(id) !== uri) || (uris.has(uri) && uris.get(uri) !== id));
}

/** Chromium (148 and later) keeps the header-extension ids of an offer it made for the
 * connection's life, rolled back or not: a remote offer that numbers them otherwise fails,
 * and leaves the connection in an error state for good (NEGOTIATION.md #50). */
const KEEPS_EXTENSION_IDS = typeof navigator !== "undefined" && /Chrom(e|ium)\//.test(navigator.userAgent);

/** 16 hex digits, like the native engine's; getRandomValues also works outside secure contexts. */
/** The server's WebSocket URL from what the application gave (see `join`). */
export function serverUrl(url) {
  const base = typeof location === "undefined" ? undefined : location.href;
  const parsed = new URL(url, base);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new TypeError(`a politely server is reached over ws:// or wss://, not ${parsed.protocol}//`);
  }
  if (parsed.pathname === "" || parsed.pathname === "/") parsed.pathname = "/ws";
  parsed.hash = "";
  return parsed.href;
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function parse(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
}

const newCounters = () => ({
  offers: 0, // offers sent
  answers: 0, // answers sent
  offersReceived: 0,
  answersApplied: 0,
  rollbacks: 0, // polite: our offer rolled back to accept a colliding one
  ignoredOffers: 0, // impolite: a colliding offer ignored
  refused: 0, // remote offers we yielded to and could not apply, refused (see `_refused`)
  offersRefused: 0, // our offers the remote refused; its offer came first
  restarts: 0, // ICE restarts applied (the local ufrag changed)
  watchdog: 0, // watchdog firings, whatever the recovery
  watchdogReplacements: 0, // ... of which replaced the connection
  replaced: 0, // connections replaced for any reason
  staleDescriptions: 0, // duplicate or stale answers dropped
  bufferedCandidates: 0, // remote candidates kept for a later description
  suppressedCandidates: 0, // candidate failures expected by the pattern
  oldGenerationCandidates: 0, // candidates of a replaced ICE generation, dropped
  leaseRequests: 0, // gate: leases asked for
  leasesGranted: 0, // gate: grants received for our requests
  offersUnderLease: 0, // gate: offers sent under a lease
  offersWithoutLease: 0, // gate: offers sent after a request heard nothing
});

export class Politely extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.id = null;
    this.room = null;
    this.url = null;
    /** "new" | "joining" | "open" | "reconnecting" | "closed" */
    this.state = "new";
    this._ws = null;
    this._zombie = null; // a socket given up on, closed once another one is welcomed
    this._members = new Map(); // the room's other peers, as the server told: id -> {polite, user, sfu}
    this.sfu = null; // the room's SFU, when it has one: every connection goes to it alone
    this.tracks = []; // what the SFU says we may subscribe to
    this._resume = null;
    // The signal, peer-joined and peer-left frames received under our id, which a resume
    // tells (a server of several nodes sends the rest again).
    this._received = 0;
    // The text frames written under our id since its first welcome, and the last of them: a
    // resume says how many the server took, and the rest (in flight when the connection
    // dropped, or written to a node that died) go again.
    this._written = 0;
    this._unconfirmed = [];
    this._peers = new Map();
    this._intents = [];
    this._backlog = [];
    this._timer = null;
    this._lastHeard = 0;
    this._lastPing = 0;
    this._serverIce = []; // the ICE servers the signaling server handed out (TURN credentials)
    this._iceRefreshAt = null; // when to ask for fresh credentials (Date.now() ms)
  }

  /** Creates a client and joins. Listeners added after it resolves miss the first peer-joined
   * events (read peers() instead, or construct, listen, then call join()). */
  static async join(url, room, options) {
    const client = new Politely(options);
    await client.join(url, room);
    return client;
  }

  /** `ws(s)://<this page's host>/ws`. */
  static defaultUrl() {
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  }

  on(name, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  _emit(name, detail = {}) {
    if (this.options.debug) console.debug("politely", name, detail);
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  _fail(peer, error, during) {
    this._emit("error", { peer: peer?.id, error, during, message: String(error?.message ?? error) });
  }

  // ------------------------------------------------------------------ signaling connection

  /** Connects, joins `room` and resolves once welcomed; rejects if the server refuses.
   * `url` is the server's: `ws://host:port` and `ws://host:port/ws` are the same (a URL
   * with no path gets `/ws`), `http(s)://` is taken as `ws(s)://`, and a relative one
   * (`"/ws"`) is resolved against the page. */
  async join(url, room) {
    if (this.state !== "new") throw new Error("join() can be called once per client");
    this.url = serverUrl(url);
    this.room = room;
    this.state = "joining";
    try {
      await this._connect(null, true);
    } catch (e) {
      this.state = "closed";
      throw e;
    }
    this._timer = setInterval(() => this._tick(), 1000);
    return this;
  }

  /** Opens a WebSocket and sends `join` (with `resume` if given). The welcome is handled
   * inside the message handler, before any later frame of the same socket. */
  _connect(resume, first) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, SUBPROTOCOL);
      let settled = false;
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        detach(ws);
        ws.close();
        reject(error);
      };
      const timer = setTimeout(() => fail(new Error("no welcome in time")), this.options.joinTimeout);
      ws.onopen = () => {
        // A resume names the peers we are connected with: a server restarted since keeps
        // their places for them.
        const peers = resume ? [...this._peers.keys()] : undefined;
        const received = resume ? this._received : undefined;
        ws.send(JSON.stringify({ type: "join", room: this.room, token: this.options.token, resume: resume ?? undefined, peers, received }));
      };
      ws.onmessage = ({ data }) => {
        const msg = parse(data);
        if (msg?.type === "error") {
          // A refused join: the server keeps the socket open, we do not.
          const error = new Error(`${msg.code}: ${msg.message}`);
          error.code = msg.code;
          fail(error);
        } else if (msg?.type === "welcome" && !settled) {
          settled = true;
          clearTimeout(timer);
          if (this.state === "closed") {
            // leave() was called while this attempt was under way.
            ws.send(JSON.stringify({ type: "leave" }));
            detach(ws);
            ws.close(1000);
            reject(new Error("left"));
            return;
          }
          this._adopt(ws);
          this._welcomed(msg, first);
          resolve(msg);
        }
      };
      ws.onerror = () => {}; // a close event follows
      ws.onclose = (e) => fail(new Error(`the connection closed before the welcome (${e.code})`));
    });
  }

  _adopt(ws) {
    this._ws = ws;
    this._lastHeard = this._lastPing = Date.now();
    ws.onmessage = ({ data }) => {
      this._lastHeard = Date.now();
      this._frame(data);
    };
    ws.onclose = (e) => this._lost(`the server closed the connection (${e.code}${e.reason ? ` ${e.reason}` : ""})`, e.code);
    if (this._zombie) {
      // The resume took the slot over; the server closes the old connection (4001) anyway.
      this._zombie.close();
      this._zombie = null;
    }
  }

  _welcomed(msg, first) {
    this._resume = msg.resume;
    if (!msg.resumed) {
      this._received = 0;
      this._written = 0;
      this._unconfirmed = [];
    }
    this._iceServers(msg);
    this.state = "open";
    const listed = Array.isArray(msg.peers) ? msg.peers : [];
    if (first) {
      this.id = msg.id;
      this._emit("joined", { id: this.id, room: this.room, peers: listed.map((p) => p.id) });
    } else if (msg.resumed) {
      for (const id of [...this._peers.keys()]) if (!listed.some((p) => p.id === id)) this._removePeer(id);
      for (const frame of [...this._notTaken(msg.taken), ...this._backlog.splice(0)]) this._write(frame);
      // What waited for the signaling gets a full watchdog period again.
      const now = performance.now();
      for (const { conn } of this._peers.values()) {
        conn.signalingSince = now;
        conn.transportSince = null;
        if (conn.gatherWait) conn.gatherWait.since = now;
      }
    } else {
      // A new id (the grace period was over): every relationship starts over, and what was
      // queued for the old ones is moot. The peers see a newcomer.
      this._backlog.length = 0;
      for (const id of [...this._peers.keys()]) this._removePeer(id);
      this.id = msg.id;
    }
    // A restarted server lists a peer that has not resumed yet without its role or user (it
    // keeps the place for it); an id's role never changes, so what we knew stands.
    const known = msg.resumed ? this._members ?? new Map() : new Map();
    this._members = new Map(listed.map((p) => {
      const before = known.get(p.id);
      return [p.id, { polite: p.polite, user: p.user ?? before?.user, sfu: p.sfu === true || before?.sfu === true }];
    }));
    this._syncPeers();
    if (!first) this._emit("reconnected", { resumed: msg.resumed === true, id: this.id });
  }

  /** The signaling connection is gone (or given up on): resume with backoff. */
  _lost(reason, code) {
    if (this.state !== "open") return;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      detach(ws);
      // Not closed: a close frame would be a leave, and the slot could not be resumed.
      if (ws.readyState <= WebSocket.OPEN) this._zombie = ws;
    }
    if (code === 4001) return this._end("another connection resumed our id");
    this.state = "reconnecting";
    this._emit("signaling-lost", { reason, code });
    this._reconnect();
  }

  async _reconnect() {
    const deadline = Date.now() + this.options.reconnectFor;
    let delay = 250;
    while (this.state === "reconnecting") {
      try {
        await this._connect(this._resume, false);
        return;
      } catch (e) {
        // A refusal (room full, bad token) will not go away by retrying; a server that cannot
        // reach its other nodes now may take us back later.
        if (e.code && e.code !== "unavailable") return this._end(`the server refused to take us back: ${e.message}`);
      }
      if (this.state !== "reconnecting") return;
      if (Date.now() + delay > deadline) return this._end("could not reconnect in time");
      await sleep(delay * (0.75 + Math.random() / 2));
      delay = Math.min(delay * 2, 5000);
    }
  }

  _frame(text) {
    const msg = parse(text);
    if (msg?.type === "signal" || msg?.type === "peer-joined" || msg?.type === "peer-left") this._received++;
    switch (msg?.type) {
      case "peer-joined":
        if (typeof msg.id !== "string") return;
        this._members.set(msg.id, { polite: msg.polite, user: msg.user, sfu: msg.sfu === true });
        return this._syncPeers();
      case "peer-left":
        this._members.delete(msg.id);
        this._removePeer(msg.id);
        return this._syncPeers();
      case "signal": {
        if (msg.from === this.sfu && msg.data && typeof msg.data.room === "object" && msg.data.room) {
          return this._roomMessage(msg.data.room);
        }
        // Signals from peers we do not know (gone, or evicted) are dropped.
        const peer = this._peers.get(msg.from);
        if (peer) this._signal(peer, msg.data).catch((e) => this._fail(peer, e, "signal"));
        return;
      }
      case "error":
        return this._emit("error", { code: msg.code, message: msg.message, peer: msg.peer });
      case "ice-servers":
        return this._iceServers(msg);
      default:
        // pong, a stray welcome, and frame types a newer server may add.
        return;
    }
  }

  /** Takes the ICE servers of a `welcome` or `ice-servers` frame (TURN with credentials that
   * expire): connections use them from their next gathering on (an ICE restart allocates
   * afresh), and fresh ones are asked for at half their lifetime. */
  _iceServers(msg) {
    this._serverIce = Array.isArray(msg.iceServers) ? msg.iceServers : [];
    this._iceRefreshAt = this._serverIce.length && msg.iceTtl > 0 ? Date.now() + msg.iceTtl * 500 : null;
    for (const peer of this._peers.values()) {
      if (!peer.conn || peer.conn.closed) continue;
      try {
        peer.conn.pc.setConfiguration({ ...peer.conn.pc.getConfiguration(), iceServers: this._allIceServers() });
      } catch (e) {
        this._fail(peer, e, "ice-servers");
      }
    }
  }

  /** The application's ICE servers and the signaling server's. */
  _allIceServers() {
    const o = this.options;
    return [...(o.iceServers ?? o.rtcConfig?.iceServers ?? []), ...this._serverIce];
  }

  /** Writes a frame under our id, and keeps it until a resume says it was taken. */
  _write(frame) {
    this._ws.send(frame);
    this._written += 1;
    if (this._unconfirmed.length >= BACKLOG) this._unconfirmed.shift();
    this._unconfirmed.push(frame);
  }

  /** The frames written after the `taken` first ones, which the server never had; the count
   * goes back to `taken`. Without a number (the server does not know) it starts over. */
  _notTaken(taken) {
    const frames = this._unconfirmed;
    this._unconfirmed = [];
    if (typeof taken !== "number") {
      this._written = 0;
      return [];
    }
    const first = this._written + 1 - frames.length;
    this._written = taken;
    return frames.filter((_, i) => first + i > taken);
  }

  _send(peer, conn, data) {
    conn.sent = true;
    const frame = JSON.stringify({ type: "signal", to: peer.id, data: { connectionId: conn.id, ...data } });
    if (this.state === "open" && this._ws?.readyState === WebSocket.OPEN) {
      this._write(frame);
    } else if (this.state === "reconnecting") {
      if (this._backlog.length >= BACKLOG) this._backlog.shift();
      this._backlog.push(frame);
    }
  }

  /** Once a second: keepalive and the negotiation watchdog. */
  _tick() {
    if (this.state === "open" && this._ws) {
      const now = Date.now();
      if (now - this._lastHeard > this.options.pingTimeout) {
        // A half-open connection: the browser may not notice for minutes.
        this._lost("nothing heard from the server", null);
      } else if (now - this._lastPing >= this.options.pingInterval) {
        this._lastPing = now;
        this._write(JSON.stringify({ type: "ping" }));
      }
      if (this._iceRefreshAt !== null && now >= this._iceRefreshAt) {
        // Asked once; the answer schedules the next.
        this._iceRefreshAt = null;
        this._write(JSON.stringify({ type: "ice-servers" }));
      }
    }
    // Without signaling no negotiation can progress; the clocks restart on the resume.
    if (this.state !== "open") return;
    const now = performance.now();
    for (const peer of [...this._peers.values()]) this._watch(peer, now);
  }

  /** Says bye to every peer, leaves the room and closes. */
  async leave() {
    if (this.state === "closed") return;
    if (this.state === "open" && this._ws?.readyState === WebSocket.OPEN) {
      for (const peer of this._peers.values()) if (!peer.conn.closed) this._send(peer, peer.conn, { bye: true });
      this._ws.send(JSON.stringify({ type: "leave" }));
    }
    this._end("left");
  }

  _end(reason) {
    if (this.state === "closed") return;
    this.state = "closed";
    clearInterval(this._timer);
    for (const peer of this._peers.values()) this._closeConn(peer, peer.conn);
    this._peers.clear();
    this._backlog.length = 0;
    for (const ws of [this._ws, this._zombie]) {
      if (!ws) continue;
      detach(ws);
      ws.close(1000);
    }
    this._ws = this._zombie = null;
    this._emit("closed", { reason });
  }

  // ------------------------------------------------------------------ peers and connections

  /** Connects to the peers the room calls for: its SFU alone when it has one, every peer
   * otherwise. */
  _syncPeers() {
    const sfu = [...this._members].find(([, m]) => m.sfu)?.[0] ?? null;
    if (sfu !== this.sfu) {
      this.sfu = sfu;
      this.tracks = [];
    }
    for (const id of [...this._peers.keys()]) if (sfu !== null && id !== sfu) this._removePeer(id);
    for (const [id, m] of this._members) if (sfu === null || id === sfu) this._addPeer(id, m.polite, m.user);
  }

  _roomMessage(message) {
    if (Array.isArray(message.tracks)) {
      this.tracks = message.tracks;
      this._emit("tracks", { sfu: this.sfu, tracks: this.tracks });
    }
    this._emit("room", { sfu: this.sfu, message });
  }

  /** Sends a room message to the SFU (signal data without a connection id). */
  _sendRoom(room) {
    if (this.sfu === null) throw new Error("the room has no SFU");
    const frame = JSON.stringify({ type: "signal", to: this.sfu, data: { room } });
    if (this.state === "open" && this._ws?.readyState === WebSocket.OPEN) {
      this._write(frame);
    } else if (this.state === "reconnecting") {
      if (this._backlog.length >= BACKLOG) this._backlog.shift();
      this._backlog.push(frame);
    }
  }

  _addPeer(id, polite, user) {
    if (typeof id !== "string" || id === this.id || this._peers.has(id)) return;
    const peer = {
      id,
      user: user && typeof user === "object" ? user : undefined,
      // Whether WE are polite toward this peer, as the server says (lower id is polite).
      polite: typeof polite === "boolean" ? polite : this.id < id,
      conn: null,
      counters: newCounters(),
      retired: [],
      held: new Map(),
      streak: 0, // watchdog replacements since the last connected state
    };
    this._peers.set(id, peer);
    this._newConn(peer, randomId());
    this._emit("peer-joined", { peer: id, polite: peer.polite, user: peer.user });
  }

  _removePeer(id) {
    const peer = this._peers.get(id);
    if (!peer) return;
    this._peers.delete(id);
    this._closeConn(peer, peer.conn);
    this._intents = this._intents.filter((i) => i.peer !== id);
    this._emit("peer-left", { peer: id });
  }

  _retire(peer, id) {
    if (peer.retired.length >= RETIRED) peer.retired.shift();
    peer.retired.push(id);
  }

  /** A new RTCPeerConnection for `peer`, bound to connection id `id`, with the intents replayed. */
  _newConn(peer, id) {
    const o = this.options;
    const pc = new RTCPeerConnection({
      // One transport for everything: the native side bundles, and candidates then belong to
      // the first m-section only.
      bundlePolicy: "max-bundle",
      ...o.rtcConfig,
      iceServers: this._allIceServers(),
    });
    const now = performance.now();
    const conn = {
      id,
      pc,
      sent: false, // we sent a message carrying this id
      heard: false, // a message carrying this id arrived
      closed: false,
      // The W3C pattern's flags.
      makingOffer: false,
      ignoreOffer: false,
      isSettingRemoteAnswerPending: false,
      // Set when an offer is ignored, cleared once the next remote description is applied
      // (the newest WPT helper's ignoreIceCandidateFailures: candidates of the ignored offer
      // can fail after `ignoreOffer` was already recomputed by a later message).
      ignoreCandidateFailures: false,
      yielded: 0, // colliding offers accepted (polite); an offer made meanwhile is not sent
      // Our offer was refused (the remote could not apply it after yielding to it): our offers
      // wait for the remote's until this time (performance.now() ms), or until one is applied.
      holdUntil: 0,
      holdTimer: null,
      rollingBack: false, // a refused offer's rollback is in flight
      offerSettled: null, // resolves when the offer being made is made (and sent, or not)
      ignored: null, // {description, offerId}: the last colliding offer we ignored (impolite)
      // The gate (asker): the number of our pending request, and the lease granted for our
      // next offer.
      asked: null,
      granted: null,
      nextRequest: 0,
      gateTimer: null,
      nextOfferId: 0,
      pendingOfferId: null,
      srdStarted: false,
      expectedUfrag: null, // ufrag of the last description passed to setRemoteDescription
      remoteUfrag: null, // ufrag of the applied remote description
      oldUfrags: new Set(), // replaced remote ICE generations
      stash: [], // remote candidates waiting for the description they belong to
      localUfrag: null, // of the last negotiated local description
      gathered: new Set(), // ufrags we have gathered candidates for
      gatherWait: null, // {ufrag, since}: a local description waiting for its first candidate
      channels: new Map(), // RTCDataChannel -> "local" | "remote" (the hidden one excluded)
      hidden: null,
      remoteTracks: new Map(), // MediaStreamTrack -> RTCRtpTransceiver
      signalingSince: now,
      transportSince: null,
      channelSince: null, // since when a channel has been "connecting" on a connected transport
      transportStrikes: 0,
      disconnectedSince: null,
      watchdogMs: o.watchdogTimeout * Math.min(2 ** peer.streak, 8) * (1 + Math.random() / 2),
    };
    peer.conn = conn;
    const live = () => !conn.closed && peer.conn === conn;

    pc.onnegotiationneeded = () => {
      if (!live()) return;
      // With the gate, a renegotiation asks first; the offer follows the grant (`_gate`).
      if (this.options.gate && pc.currentRemoteDescription && conn.granted === null) {
        if (conn.asked === null) this._askLease(peer, conn);
        return;
      }
      this._offer(peer, conn);
    };
    pc.onicecandidate = ({ candidate }) => {
      if (!live()) return;
      let data = null;
      if (candidate) {
        data = candidate.toJSON();
        data.usernameFragment ??= candidate.usernameFragment;
        conn.gathered.add(candidate.usernameFragment);
        if (conn.gatherWait && (candidate.usernameFragment ?? conn.gatherWait.ufrag) === conn.gatherWait.ufrag) {
          conn.gatherWait = null;
        }
      }
      this._send(peer, conn, { candidate: data }); // null: end of candidates, as the W3C example sends it
    };
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === "complete") conn.gatherWait = null;
    };
    pc.onsignalingstatechange = () => {
      conn.signalingSince = performance.now();
    };
    pc.oniceconnectionstatechange = () => {
      // A failed ICE transport needs new credentials; restartIce() renegotiates (MDN, webrtc-pc).
      if (live() && pc.iceConnectionState === "failed") pc.restartIce();
    };
    pc.onconnectionstatechange = () => {
      if (!live()) return;
      const state = pc.connectionState;
      this._emit("connection-state", { peer: peer.id, state });
      if (state === "connected") {
        conn.transportSince = null;
        conn.transportStrikes = 0;
        peer.streak = 0;
        this._emit("connected", { peer: peer.id });
      } else if (state === "disconnected" || state === "failed" || state === "closed") {
        this._emit("disconnected", { peer: peer.id, state });
      }
    };
    pc.ondatachannel = ({ channel }) => {
      if (live()) this._wireChannel(peer, conn, channel, "remote");
    };
    pc.ontrack = ({ track, streams, transceiver }) => {
      if (!live()) return;
      // A track is gone when its transceiver stops receiving (checked after each exchange),
      // not on its streams' `removetrack`: Chromium removes and re-adds remote tracks while a
      // rollback restores the streams, and the track has not gone anywhere.
      conn.remoteTracks.set(track, transceiver);
      this._emit("track", { peer: peer.id, track, streams, transceiver });
    };

    for (const intent of this._intents) {
      if (intent.peer === null || intent.peer === peer.id) this._apply(peer, conn, intent);
    }
    return conn;
  }

  /** Closes a connection; what the application saw open on it is reported closed. */
  _closeConn(peer, conn) {
    if (conn.closed) return;
    conn.closed = true;
    clearTimeout(conn.gateTimer);
    clearTimeout(conn.holdTimer);
    for (const [channel] of conn.channels) {
      if (channel.readyState === "open") this._emit("channel-closed", { peer: peer.id, label: channel.label, channel });
    }
    conn.channels.clear();
    for (const [track] of conn.remoteTracks) this._emit("track-removed", { peer: peer.id, track });
    conn.remoteTracks.clear();
    conn.pc.close();
  }

  /** Replaces the peer's connection by a new one bound to `id`. */
  _replace(peer, id, reason) {
    const old = peer.conn;
    this._closeConn(peer, old);
    this._retire(peer, old.id);
    this._newConn(peer, id);
    if (reason) {
      peer.counters.replaced++;
      this._emit("replaced", { peer: peer.id, reason, old: old.id, new: id });
    }
  }

  _wireChannel(peer, conn, channel, origin) {
    channel.binaryType = "arraybuffer";
    conn.channels.set(channel, origin);
    const live = () => !conn.closed && peer.conn === conn;
    channel.onopen = () => {
      if (!live()) return;
      this._emit("channel", { peer: peer.id, label: channel.label, channel, origin });
      if (origin === "local") {
        const held = peer.held.get(channel.label);
        peer.held.delete(channel.label);
        for (const data of held ?? []) channel.send(data);
      }
    };
    channel.onmessage = ({ data }) => {
      if (live()) this._emit("message", { peer: peer.id, label: channel.label, data, channel });
    };
    channel.onclose = () => {
      if (conn.channels.delete(channel) && live()) {
        this._emit("channel-closed", { peer: peer.id, label: channel.label, channel });
      }
    };
  }

  _trackGone(peer, conn, track) {
    if (peer.conn === conn && conn.remoteTracks.delete(track)) this._emit("track-removed", { peer: peer.id, track });
  }

  /** Makes and sends an offer, under the lease granted if there is one. Only from stable:
   * mid-exchange (a remote offer being answered) the browser asks again (negotiationneeded)
   * once it is back in stable, and the offer goes then. */
  async _offer(peer, conn) {
    const { pc } = conn;
    if (pc.signalingState !== "stable" || conn.makingOffer) return;
    if (performance.now() < conn.holdUntil) return; // the remote's offer comes first (`_refused`)
    const live = () => !conn.closed && peer.conn === conn;
    const yielded = conn.yielded;
    let settled;
    conn.offerSettled = new Promise((resolve) => (settled = resolve));
    try {
      conn.makingOffer = true;
      await pc.setLocalDescription();
      // If we yielded to a remote offer meanwhile, the SRD queued behind this SLD rolls our
      // offer back: sending it would only make the impolite peer ignore it.
      if (!live() || conn.yielded !== yielded || pc.signalingState !== "have-local-offer") return;
      conn.pendingOfferId = ++conn.nextOfferId;
      peer.counters.offers++;
      const offer = { description: pc.localDescription.toJSON(), offerId: conn.pendingOfferId };
      if (conn.granted !== null) {
        offer.lease = conn.granted;
        conn.granted = null;
        peer.counters.offersUnderLease++;
      }
      this._send(peer, conn, offer);
      this._expectGathering(conn);
    } catch (e) {
      if (live()) this._fail(peer, e, "offer");
    } finally {
      conn.makingOffer = false;
      settled();
    }
  }

  /** The gate, asking side: may I offer? Without a grant or a wait within the lease's time,
   * the offer goes without a lease (the remote may not keep the gate). */
  _askLease(peer, conn) {
    const id = ++conn.nextRequest;
    conn.asked = id;
    peer.counters.leaseRequests++;
    this._send(peer, conn, { gate: { request: id, leaseMs: this.options.gate } });
    this._gatePatience(peer, conn, id);
  }

  _gatePatience(peer, conn, id) {
    clearTimeout(conn.gateTimer);
    conn.gateTimer = setTimeout(() => {
      if (conn.closed || peer.conn !== conn || conn.asked !== id) return;
      conn.asked = null;
      peer.counters.offersWithoutLease++;
      this._offer(peer, conn);
    }, this.options.gate);
  }

  /** A gate message from the keeper about one of our requests. */
  _gate(peer, conn, gate) {
    const id = gate.grant ?? gate.wait;
    if (!Number.isInteger(id)) return; // a request or release: this client keeps no gate
    if (conn.asked !== id) {
      // A grant we stopped waiting for: hand it back so the keeper need not wait it out.
      if (gate.grant !== undefined) this._send(peer, conn, { gate: { release: id } });
      return;
    }
    if (gate.wait !== undefined) {
      this._gatePatience(peer, conn, id); // the grant follows the keeper's exchange
      return;
    }
    clearTimeout(conn.gateTimer);
    conn.asked = null;
    conn.granted = id;
    peer.counters.leasesGranted++;
    this._offer(peer, conn);
  }

  // ------------------------------------------------------------------ incoming signals

  async _signal(peer, data) {
    if (!data || typeof data !== "object" || typeof data.connectionId !== "string" || !data.connectionId) {
      return this._fail(peer, new Error("a signal without a connectionId"), "signal");
    }
    const { connectionId: id, description, candidate } = data;
    if (id !== peer.conn.id) {
      // The native rule (politely-core `Engine::route`): another connection's message is
      // ignored unless it is an offer, and an offer decides by what we know of ours.
      const offer = description?.type === "offer" && description.sdp?.startsWith?.("v=0");
      if (!offer || peer.retired.includes(id)) return;
      const current = peer.conn;
      if (current.heard) {
        this._replace(peer, id, "remote-restarted"); // the peer restarted (a reload, a watchdog)
      } else if (!current.sent) {
        this._replace(peer, id, null); // first contact: nothing of ours to collide with
      } else if (peer.polite) {
        this._replace(peer, id, "collision"); // two brand-new connections: polite adopts theirs
      } else {
        this._retire(peer, id); // impolite keeps its own; the polite side adopts it
        peer.counters.ignoredOffers++;
        return;
      }
    }
    const conn = peer.conn;
    if (conn.closed) return;
    conn.heard = true;
    if (description != null) return this._description(peer, conn, description, data.offerId);
    if (Number.isInteger(data.refused)) return this._refused(peer, conn, data.refused);
    if (candidate !== undefined) return this._candidate(peer, conn, candidate);
    if (data.gate && typeof data.gate === "object") return this._gate(peer, conn, data.gate);
    if (data.bye === true) {
      if (data.reconnect === true) {
        // The remote's watchdog gave up and has nothing to offer: we open the new connection.
        this._replace(peer, randomId(), "remote-requested");
      } else {
        this._closeConn(peer, conn); // closed for good; an offer with a new id brings it back
        this._emit("disconnected", { peer: peer.id, state: "closed" });
      }
    }
  }

  async _description(peer, conn, description, offerId) {
    const { pc } = conn;
    const counters = peer.counters;
    const live = () => !conn.closed && peer.conn === conn;
    const { type, sdp } = description;
    if ((type !== "offer" && type !== "answer") || typeof sdp !== "string") {
      return this._fail(peer, new Error(`unsupported description: ${type}`), "signal");
    }
    if (type === "offer") {
      counters.offersReceived++;
    } else if (
      pc.signalingState !== "have-local-offer" ||
      conn.isSettingRemoteAnswerPending ||
      (Number.isInteger(offerId) && conn.pendingOfferId !== null && offerId !== conn.pendingOfferId)
    ) {
      // A duplicate answer, or one for an offer we no longer have: applying it would fail
      // with "Called in wrong state: stable" (simple-peer #898) or corrupt the exchange.
      counters.staleDescriptions++;
      return;
    }

    if (type === "offer" && peer.polite && KEEPS_EXTENSION_IDS && conn.makingOffer) {
      // Whether to yield depends on the header-extension ids of the offer we are making
      // (below): let it finish first (a few milliseconds).
      await conn.offerSettled;
      if (!live()) return;
    }
    // W3C webrtc-pc "Perfect Negotiation Example".
    // (A refused offer being rolled back counts as stable: the browser runs that rollback
    // before this offer's setRemoteDescription, which queues behind it.)
    const readyForOffer =
      !conn.makingOffer && (pc.signalingState === "stable" || conn.isSettingRemoteAnswerPending || conn.rollingBack);
    const offerCollision = type === "offer" && !readyForOffer;
    conn.ignoreOffer = !peer.polite && offerCollision;
    if (conn.ignoreOffer) {
      counters.ignoredOffers++;
      conn.ignoreCandidateFailures = true;
      conn.ignored = { description, offerId }; // taken after all if the remote refuses ours
      return;
    }
    if (
      offerCollision &&
      KEEPS_EXTENSION_IDS &&
      Number.isInteger(offerId) &&
      extmapConflict(`${pc.pendingLocalDescription?.sdp ?? ""}${pc.currentLocalDescription?.sdp ?? ""}`, sdp)
    ) {
      // Yielding would break the connection: our offer stands, and the remote takes it instead
      // of waiting for an answer to its own (the `refused` signal).
      counters.refused++;
      this._emit("refused", { peer: peer.id, offerId, message: "its header-extension ids differ from those of our pending offer" });
      this._send(peer, conn, { refused: offerId });
      return;
    }
    if (offerCollision) {
      counters.rollbacks++;
      conn.yielded++;
      // Rolling back a brand-new connection's first offer discards its transport, and with
      // it the candidates gathered so far: the answer must gather afresh.
      if (!pc.currentLocalDescription) conn.gathered.clear();
    }
    conn.isSettingRemoteAnswerPending = type === "answer";
    conn.srdStarted = true;
    conn.expectedUfrag = ufragOf(sdp);
    try {
      await pc.setRemoteDescription({ type, sdp }); // the polite side rolls back implicitly
    } catch (e) {
      if (!live()) return;
      conn.expectedUfrag = conn.remoteUfrag;
      // Our offer was not sent (see onnegotiationneeded); without a rollback it would wait
      // for an answer that never comes.
      // (Chromium undoes a failed setRemoteDescription whole: our offer is still pending.)
      const sentOfferPending = pc.signalingState === "have-local-offer" && conn.pendingOfferId !== null;
      if (offerCollision && Number.isInteger(offerId) && live()) {
        // We yielded, and then could not take the offer we yielded to. Chromium refuses a
        // Firefox offer this way (NEGOTIATION.md #50: it keeps the header-extension ids of
        // its own offer, and Firefox numbers them differently). The remote waits for an
        // answer that will not come: tell it. It then takes our offer: the one it ignored if
        // it is still pending here, or a new one.
        counters.refused++;
        this._emit("refused", { peer: peer.id, offerId, message: String(e?.message ?? e) });
        this._send(peer, conn, { refused: offerId });
        if (sentOfferPending) return;
        if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
        if (live()) this._offer(peer, conn);
        return;
      }
      // Our offer was not sent (see onnegotiationneeded); without a rollback it would wait
      // for an answer that never comes.
      if (offerCollision && pc.signalingState === "have-local-offer" && !sentOfferPending) {
        pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      }
      return this._fail(peer, e, `set remote ${type}`);
    } finally {
      conn.isSettingRemoteAnswerPending = false;
    }
    if (!live()) return;
    conn.ignored = null; // an exchange completed: an offer ignored before is moot
    if (type === "offer" && conn.holdUntil) {
      // The offer we held ours back for: ours may go once this exchange is over.
      conn.holdUntil = 0;
      clearTimeout(conn.holdTimer);
    }
    this._afterRemoteDescription(peer, conn);
    if (type === "answer") {
      conn.pendingOfferId = null;
      counters.answersApplied++;
      return this._negotiated(peer, conn, true);
    }
    conn.pendingOfferId = null; // whatever offer we had is rolled back
    try {
      await pc.setLocalDescription();
      if (!live() || pc.localDescription?.type !== "answer") return;
      counters.answers++;
      const answer = { description: pc.localDescription.toJSON() };
      // The answer repeats the offer's number: the native side's stale-answer guard.
      if (Number.isInteger(offerId)) answer.offerId = offerId;
      this._send(peer, conn, answer);
      this._expectGathering(conn);
      this._negotiated(peer, conn, false);
    } catch (e) {
      if (live()) this._fail(peer, e, "answer");
    }
  }

  /** The remote could not apply our offer `offerId` after it yielded to it (it says why in
   * its `refused` event) and offers its own instead: roll ours back and hold our offers until
   * its offer is applied (or a watchdog period passes); our changes follow in the next one. */
  async _refused(peer, conn, offerId) {
    const { pc } = conn;
    if (conn.pendingOfferId !== offerId || pc.signalingState !== "have-local-offer") return;
    peer.counters.offersRefused++;
    conn.pendingOfferId = null;
    conn.holdUntil = performance.now() + this.options.watchdogTimeout;
    clearTimeout(conn.holdTimer);
    conn.holdTimer = setTimeout(() => {
      conn.holdUntil = 0;
      if (!conn.closed && peer.conn === conn) this._offer(peer, conn);
    }, this.options.watchdogTimeout);
    conn.rollingBack = true;
    try {
      await pc.setLocalDescription({ type: "rollback" });
    } catch (e) {
      if (!conn.closed && peer.conn === conn) this._fail(peer, e, "rollback");
      return;
    } finally {
      conn.rollingBack = false;
    }
    // The offer we ignored for ours, if the remote still stands by it (it refused ours while
    // its own was pending); otherwise its new offer follows.
    const ignored = conn.ignored;
    conn.ignored = null;
    if (ignored && !conn.closed && peer.conn === conn && pc.signalingState === "stable") {
      peer.counters.offersReceived--; // counted when it first came
      await this._description(peer, conn, ignored.description, ignored.offerId);
    }
  }

  /** A remote description was applied: ICE generations, stashed candidates, suppression. */
  _afterRemoteDescription(peer, conn) {
    const ufrag = ufragOf(conn.pc.remoteDescription?.sdp);
    if (conn.remoteUfrag && ufrag !== conn.remoteUfrag) conn.oldUfrags.add(conn.remoteUfrag);
    conn.remoteUfrag = conn.expectedUfrag = ufrag;
    conn.ignoreCandidateFailures = false;
    const keep = [];
    for (const candidate of conn.stash.splice(0)) {
      const u = candidate.usernameFragment ?? null;
      if (u === null || u === ufrag) this._addCandidate(peer, conn, candidate);
      else if (!conn.oldUfrags.has(u)) keep.push(candidate);
    }
    conn.stash = keep;
  }

  /** An offer/answer exchange completed. */
  _negotiated(peer, conn, localOffer) {
    const ufrag = ufragOf(conn.pc.currentLocalDescription?.sdp);
    if (conn.localUfrag && ufrag && ufrag !== conn.localUfrag) peer.counters.restarts++;
    if (ufrag) conn.localUfrag = ufrag;
    // A remote track whose transceiver no longer receives is gone, streams or not.
    for (const [track, transceiver] of conn.remoteTracks) {
      const direction = transceiver.currentDirection;
      if (direction !== "sendrecv" && direction !== "recvonly") this._trackGone(peer, conn, track);
    }
    this._emit("negotiated", { peer: peer.id, localOffer, counters: { ...peer.counters } });
  }

  async _candidate(peer, conn, candidate) {
    // End of candidates (null, or "" for one m-section): Chrome needs nothing for it.
    if (candidate === null || candidate?.candidate === "") return;
    if (typeof candidate !== "object" || typeof candidate.candidate !== "string") {
      return this._fail(peer, new Error("a malformed candidate"), "signal");
    }
    const ufrag = typeof candidate.usernameFragment === "string" ? candidate.usernameFragment : null;
    if (ufrag !== null && conn.oldUfrags.has(ufrag)) {
      peer.counters.oldGenerationCandidates++;
      return;
    }
    // Candidates that belong to no description passed to setRemoteDescription (those of an
    // ignored offer, or any before the first description) are kept by ufrag, as twilio's
    // IceBox does: a native polite peer that rolls its offer back answers with the same
    // credentials and does not trickle them again, so they are needed later.
    if (!conn.srdStarted || (ufrag !== null && ufrag !== conn.expectedUfrag)) {
      return this._stash(peer, conn, candidate);
    }
    await this._addCandidate(peer, conn, candidate);
  }

  async _addCandidate(peer, conn, candidate) {
    try {
      await conn.pc.addIceCandidate(candidate);
    } catch (e) {
      if (conn.closed || peer.conn !== conn) return;
      // Judge by ICE generation, not by ignoreOffer alone: a candidate whose ufrag is not the
      // applied description's belongs to another description, which is not an error.
      const ufrag = candidate.usernameFragment ?? null;
      if (ufrag !== null && ufrag !== ufragOf(conn.pc.remoteDescription?.sdp)) {
        if (conn.oldUfrags.has(ufrag)) peer.counters.oldGenerationCandidates++;
        else this._stash(peer, conn, candidate);
      } else if (conn.ignoreCandidateFailures) {
        peer.counters.suppressedCandidates++;
      } else {
        this._fail(peer, e, "add candidate");
      }
    }
  }

  _stash(peer, conn, candidate) {
    if (conn.stash.length >= STASH) conn.stash.shift();
    conn.stash.push(candidate);
    peer.counters.bufferedCandidates++;
  }

  // ------------------------------------------------------------------ watchdog

  /** After a local description: its first candidate is due (see `_watch`). */
  _expectGathering(conn) {
    const ufrag = ufragOf(conn.pc.localDescription?.sdp);
    if (!ufrag || conn.gathered.has(ufrag) || conn.pc.iceGatheringState === "complete") return;
    if (conn.gatherWait?.ufrag !== ufrag) conn.gatherWait = { ufrag, since: performance.now() };
  }

  _watch(peer, now) {
    const conn = peer.conn;
    if (conn.closed) return;
    const { pc } = conn;
    const limit = conn.watchdogMs;
    // "disconnected" can take ~30 s to become "failed"; new credentials may find a path sooner.
    if (pc.iceConnectionState === "disconnected") {
      conn.disconnectedSince ??= now;
      if (now - conn.disconnectedSince > this.options.disconnectedRestart) {
        conn.disconnectedSince = Infinity; // once per episode
        pc.restartIce();
      }
    } else {
      conn.disconnectedSince = null;
    }
    if (pc.signalingState !== "stable" && now - conn.signalingSince > limit) {
      return this._watchdogReplace(peer, "negotiation-stalled");
    }
    // Chromium sometimes never gathers again after a rollback on a brand-new connection.
    if (conn.gatherWait && now - conn.gatherWait.since > limit) {
      return this._watchdogReplace(peer, "gathering-stalled");
    }
    // A data channel that stays "connecting" on a connected transport never opens (seen in
    // Chromium, rarely, on a brand-new connection after glare): a new connection recovers.
    const stuck = pc.connectionState === "connected" && [...conn.channels.keys()].some((c) => c.readyState === "connecting");
    if (!stuck) conn.channelSince = null;
    else if (now - (conn.channelSince ??= now) > limit) return this._watchdogReplace(peer, "channel-stalled");
    const waiting = pc.signalingState === "stable" && pc.currentRemoteDescription && pc.connectionState !== "connected";
    if (!waiting) {
      conn.transportSince = null;
      return;
    }
    conn.transportSince ??= now;
    if (now - conn.transportSince <= limit) return;
    if (conn.transportStrikes++ === 0) {
      peer.counters.watchdog++;
      this._emit("watchdog", { peer: peer.id, cause: "transport-stalled", recovery: "restart-ice" });
      conn.transportSince = now;
      pc.restartIce();
    } else {
      this._watchdogReplace(peer, "transport-stalled");
    }
  }

  _watchdogReplace(peer, cause) {
    peer.counters.watchdog++;
    peer.counters.watchdogReplacements++;
    peer.streak++;
    this._emit("watchdog", { peer: peer.id, cause, recovery: "new-connection" });
    if (!this._intents.some((i) => i.peer === null || i.peer === peer.id)) {
      // An offer needs something to offer: ask the remote to open the new connection; our
      // fresh one adopts its id on first contact.
      this._send(peer, peer.conn, { bye: true, reconnect: true });
    }
    this._replace(peer, randomId(), "watchdog");
  }

  // ------------------------------------------------------------------ application API

  /** [{id, polite, connectionId, connectionState}] for every peer in the room. */
  peers() {
    return [...this._peers.values()].map((p) => ({
      id: p.id,
      polite: p.polite,
      connectionId: p.conn.id,
      connectionState: p.conn.pc.connectionState,
    }));
  }

  /** The current RTCPeerConnection with a peer (for inspection; do not negotiate on it). */
  connection(peerId) {
    return this._peers.get(peerId)?.conn.pc ?? null;
  }

  _targets(peerId) {
    if (peerId == null || peerId === "*") return [...this._peers.values()];
    const peer = this._peers.get(peerId);
    if (!peer) throw new Error(`no peer ${peerId} in the room`);
    return [peer];
  }

  /** Records an intent and carries it out on the targets' current connections. */
  _intend(peerId, intent) {
    intent.peer = peerId == null || peerId === "*" ? null : peerId;
    const targets = this._targets(intent.peer);
    this._intents.push(intent);
    return targets.map((peer) => this._apply(peer, peer.conn, intent));
  }

  _apply(peer, conn, intent) {
    const { pc } = conn;
    if (conn.closed) return undefined;
    try {
      if (intent.kind !== "channel" && this.options.dataSection && !conn.hidden && !pc.localDescription && !pc.remoteDescription) {
        conn.hidden = pc.createDataChannel("politely", { negotiated: true, id: DATA_SECTION_STREAM });
      }
      switch (intent.kind) {
        case "channel": {
          const channel = pc.createDataChannel(intent.label, intent.options);
          this._wireChannel(peer, conn, channel, "local");
          return channel;
        }
        case "track":
          return pc.addTrack(intent.track, ...intent.streams);
        case "transceiver": {
          const t = pc.addTransceiver(intent.trackOrKind, intent.init);
          (conn.made ??= []).push(t);
          return t;
        }
      }
    } catch (e) {
      this._fail(peer, e, intent.kind);
    }
    return undefined;
  }

  /** Creates a data channel toward one peer, or every peer (null). Returns the channels made now. */
  createDataChannel(peerId, label, options = {}) {
    return this._intend(peerId, { kind: "channel", label: String(label), options: { ...options } });
  }

  /** Adds a track toward one peer or every peer; renegotiates. Returns the senders made now. */
  addTrack(peerId, track, ...streams) {
    return this._intend(peerId, { kind: "track", track, streams });
  }

  /** Stops sending `track` to one peer or every peer; renegotiates. */
  removeTrack(peerId, track) {
    const all = peerId == null || peerId === "*";
    const targets = this._targets(peerId);
    const intents = [];
    for (const intent of this._intents) {
      if (intent.kind !== "track" || intent.track !== track) {
        intents.push(intent);
      } else if (!all && intent.peer === null) {
        // A room-wide track removed for one peer stays for the others (those present now).
        for (const p of this._peers.values()) if (p.id !== peerId) intents.push({ ...intent, peer: p.id });
      } else if (!all && intent.peer !== peerId) {
        intents.push(intent);
      }
    }
    this._intents = intents;
    for (const peer of targets) {
      if (peer.conn.closed) continue;
      for (const sender of peer.conn.pc.getSenders()) if (sender.track === track) peer.conn.pc.removeTrack(sender);
    }
  }

  /** Adds a transceiver (a kind or a track) toward one peer or every peer. Returns the
   * transceivers made now; `transceivers(peer)` finds them (and their successors on a
   * replacement connection) later. */
  addTransceiver(peerId, trackOrKind, init = {}) {
    return this._intend(peerId, { kind: "transceiver", trackOrKind, init: { ...init } });
  }

  /** The transceivers `addTransceiver` made on the current connection with a peer, oldest
   * first, stopped ones left out. A replaced connection gets new ones, made from the same
   * calls: look them up again rather than keeping them. */
  transceivers(peerId) {
    const conn = this._peers.get(peerId)?.conn;
    return !conn || conn.closed ? [] : (conn.made ?? []).filter((t) => !t.stopped);
  }

  /** SFU rooms: says what `track` shows ("media" or "screen") and sends it to the SFU.
   * Returns the sender. */
  publish(track, { source = "media" } = {}) {
    // The SFU knows the track by its msid. Chromium's msid track id is not `track.id`, so the
    // track goes in a stream of its own, and the stream's id names it.
    const stream = new MediaStream([track]);
    this._sendRoom({ publish: { track: stream.id, source } });
    // A transceiver this client stopped publishing on carries the new track (a camera toggled
    // off and on again): addTrack never reuses one that has sent, and each would add an
    // m-section to every later exchange.
    const peer = this._peers.get(this.sfu);
    const idle = peer?.conn.pc.getTransceivers().find(
      (t) => t.sender.track === null && !t.direction.startsWith("send") && t.receiver.track.kind === track.kind && peer.conn.published?.has(t),
    );
    if (idle) {
      peer.conn.published.delete(idle);
      this._intents.push({ kind: "track", track, streams: [stream], peer: this.sfu });
      idle.sender.replaceTrack(track).catch((e) => this._fail(peer, e, "publish"));
      idle.sender.setStreams(stream);
      // The send half comes back; a track the SFU forwards on this m-section keeps arriving.
      idle.direction = idle.direction === "recvonly" ? "sendrecv" : "sendonly";
      return idle.sender;
    }
    return this.addTrack(this.sfu, track, stream)[0];
  }

  /** SFU rooms: stops sending `track` (the others see it go); its transceiver is kept for the
   * next `publish`. */
  unpublish(track) {
    const peer = this._peers.get(this.sfu);
    const t = peer?.conn.pc.getTransceivers().find((t) => t.sender.track === track);
    this._intents = this._intents.filter((i) => !(i.kind === "track" && i.track === track));
    if (!t) return;
    (peer.conn.published ??= new Set()).add(t);
    t.sender.replaceTrack(null).catch((e) => this._fail(peer, e, "unpublish"));
    // Only the send half goes: the SFU may forward another client's track on this m-section.
    t.direction = t.direction === "sendrecv" ? "recvonly" : "inactive";
  }

  /** SFU rooms: receive these tracks (ids from the `tracks` event). */
  subscribe(ids) {
    this._sendRoom({ subscribe: [...ids] });
  }

  /** SFU rooms: stop receiving these tracks. */
  unsubscribe(ids) {
    this._sendRoom({ unsubscribe: [...ids] });
  }

  /** Restarts ICE with one peer or every peer (W3C restartIce: it persists until satisfied). */
  restartIce(peerId) {
    for (const peer of this._targets(peerId)) if (!peer.conn.closed) peer.conn.pc.restartIce();
  }

  /** Sends on `label` to every peer; returns how many peers it went (or is held) for. */
  send(label, data) {
    let count = 0;
    for (const peer of this._peers.values()) if (this.sendTo(peer.id, label, data)) count++;
    return count;
  }

  /** Sends on our own channel labelled `label` to one peer (as native join does: each side
   * writes on its own `chat`, reads on both). A message for a channel that is still opening
   * is held until it opens; without a channel of ours, an open one of theirs is used. */
  sendTo(peerId, label, data) {
    const peer = this._peers.get(peerId);
    if (!peer || peer.conn.closed) return false;
    const channels = [...peer.conn.channels];
    const ours = channels.find(([c, origin]) => origin === "local" && c.label === label)?.[0];
    try {
      if (ours?.readyState === "open") {
        ours.send(data);
        return true;
      }
      if (this._intents.some((i) => i.kind === "channel" && i.label === label && (i.peer === null || i.peer === peerId))) {
        const held = peer.held.get(label) ?? [];
        if (held.length >= HELD) held.shift();
        held.push(data);
        peer.held.set(label, held);
        return true;
      }
      const theirs = channels.find(([c, origin]) => origin === "remote" && c.label === label && c.readyState === "open")?.[0];
      if (theirs) {
        theirs.send(data);
        return true;
      }
    } catch (e) {
      this._fail(peer, e, "send");
    }
    return false;
  }

  /** Per peer: state of its current connection and the negotiation counters (test hook). */
  stats() {
    const out = {};
    for (const peer of this._peers.values()) {
      const { pc } = peer.conn;
      out[peer.id] = {
        connectionId: peer.conn.id,
        polite: peer.polite,
        signalingState: pc.signalingState,
        // Stable, with no offer being made and no answer being applied: nothing in flight.
        settled: pc.signalingState === "stable" && !peer.conn.makingOffer && !peer.conn.isSettingRemoteAnswerPending,
        connectionState: pc.connectionState,
        iceConnectionState: pc.iceConnectionState,
        iceGatheringState: pc.iceGatheringState,
        mids: pc.getTransceivers().map((t) => t.mid).filter((mid) => mid != null).sort(byMid),
        sectionMids: midsOf(pc.currentLocalDescription?.sdp),
        channels: [...peer.conn.channels.keys()].filter((c) => c.readyState === "open").map((c) => c.label).sort(),
        channelStates: [...peer.conn.channels].map(([c, origin]) => `${c.label}:${origin}:${c.id}:${c.readyState}`),
        localUfrag: ufragOf(pc.currentLocalDescription?.sdp),
        remoteUfrag: ufragOf(pc.currentRemoteDescription?.sdp),
        counters: { ...peer.counters },
      };
    }
    return out;
  }
}

export default Politely;
