// The demo page: a room with a chat over `chat` data channels (the same channel `politely join`
// uses), a camera call, and buttons that make both sides negotiate at once.
//
// Query parameters: room (joins at once unless autojoin=0), ws (the server's WebSocket URL),
// watchdog (ms), stun (comma-separated stun: URLs), debug (log every event to the console).
//
// Test hooks on window.politely: client, events, messages, stats(), join(room), send(text),
// call(), hangup(), share(), glare(kind), restart(), tiles() (the video tiles' labels).
//
// In a room with an SFU (`politely serve --sfu`) the page connects to the SFU alone: the call
// publishes the camera, "Share screen" publishes a screen, and the grid shows every other
// client's tracks, each labelled with its publisher and source.

import { Politely } from "./politely.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const wsUrl = params.get("ws") || Politely.defaultUrl();

let client = null;
let camera = null; // our MediaStream while in a call
const remote = new Map(); // peer id -> MediaStream shown in its tile

const hooks = {
  Politely,
  client: null,
  events: [], // {t, name, peer, ...} for every client event, newest last (bounded)
  errors: [], // the error events among them, every one
  messages: [], // {from, label, text} received, and our own with from = our id
  stats: () => client?.stats() ?? {},
  join,
  send,
  call,
  hangup,
  share,
  glare: (kind) => provokeGlare(kind),
  restart: () => client?.restartIce(null),
  tiles: () => [...document.querySelectorAll("#videos .tile span")].map((s) => s.textContent),
};
let screen = null; // our shared screen's MediaStream, in an SFU room
window.politely = hooks;

// ---------------------------------------------------------------- rendering

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").className = state ?? "";
}

function note(text, error = false) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (error) li.className = "error";
  $("events").prepend(li);
  while ($("events").children.length > 200) $("events").lastChild.remove();
}

function chatLine(sender, text, mine) {
  const line = document.createElement("div");
  line.className = mine ? "line mine" : "line";
  line.textContent = `${sender}: ${text}`;
  const log = $("log");
  log.append(line);
  log.scrollTop = log.scrollHeight;
}

const short = (id) => (id ? id.slice(-6) : "");

function renderPeers() {
  const list = $("peers");
  list.replaceChildren();
  const peers = client?.peers() ?? [];
  if (peers.length === 0) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = client ? "nobody else here yet" : "nobody yet";
    list.append(li);
  }
  for (const p of peers) {
    const li = document.createElement("li");
    li.id = `peer-${p.id}`;
    li.className = p.connectionState;
    li.title = `connection ${p.connectionId}`;
    const dot = document.createElement("span");
    dot.className = "dot";
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = `${p.polite ? "you are polite" : "you are impolite"} · ${p.connectionState}`;
    li.append(dot, p.id, role);
    list.append(li);
  }
}

function renderCounters() {
  const body = $("counters").tBodies[0];
  body.replaceChildren();
  for (const [id, s] of Object.entries(client?.stats() ?? {})) {
    const c = s.counters;
    const row = body.insertRow();
    row.id = `counters-${id}`;
    const cells = [short(id), s.signalingState, c.offers, c.answers, c.rollbacks, c.ignoredOffers, c.restarts, c.watchdog];
    for (const value of cells) row.insertCell().textContent = value;
    row.cells[0].title = id;
  }
}

function tile(id, label, stream, muted) {
  let video = $(id);
  if (!video) {
    const box = document.createElement("div");
    box.className = "tile";
    box.id = `tile-${id}`;
    video = document.createElement("video");
    video.id = id;
    video.autoplay = true;
    video.playsInline = true;
    video.muted = muted;
    const name = document.createElement("span");
    name.textContent = label;
    box.append(video, name);
    $("videos").append(box);
  }
  if (video.srcObject !== stream) video.srcObject = stream;
  return video;
}

function dropTile(id) {
  $(`tile-${id}`)?.remove();
}

function setJoined(joined) {
  for (const id of ["chat-input", "send", "glare", "restart", "call", "share", "leave"]) $(id).disabled = !joined;
  $("join").disabled = joined;
  $("room").disabled = joined;
  $("hangup").disabled = !joined || !camera;
  if (joined) $("call").disabled = !!camera;
}

// ---------------------------------------------------------------- the client

function record(name, detail) {
  const entry = { t: Date.now(), name };
  for (const [key, value] of Object.entries(detail ?? {})) {
    if (value === null || ["string", "number", "boolean"].includes(typeof value)) entry[key] = value;
  }
  if (detail?.counters) entry.counters = detail.counters;
  hooks.events.push(entry);
  if (hooks.events.length > 2000) hooks.events.shift();
  if (name === "error") hooks.errors.push(entry);
}

const EVENTS = [
  "joined", "peer-joined", "peer-left", "connected", "disconnected", "connection-state", "channel",
  "channel-closed", "message", "track", "track-removed", "negotiated", "replaced", "watchdog",
  "signaling-lost", "reconnected", "error", "closed", "refused",
];

function wire(c) {
  for (const name of EVENTS) c.on(name, (detail) => record(name, detail));
  c.on("joined", ({ id, room }) => {
    $("me").textContent = id;
    setStatus(`in room ${room}`, "open");
    note(`joined ${room} as ${id}`);
  });
  c.on("peer-joined", ({ peer, polite }) => {
    note(`${peer} joined (you are ${polite ? "polite" : "impolite"})`);
    renderPeers();
  });
  c.on("peer-left", ({ peer }) => {
    note(`${peer} left`);
    remote.delete(peer);
    dropTile(`video-${peer}`);
    renderPeers();
  });
  c.on("connection-state", renderPeers);
  c.on("connected", ({ peer }) => note(`connected to ${peer}`));
  c.on("disconnected", ({ peer, state }) => note(`${peer}: ${state}`));
  c.on("channel", ({ peer, label, origin }) => note(`${peer}: channel ${label} open (${origin})`));
  c.on("message", ({ peer, label, data }) => {
    if (label !== "chat") return;
    const text = typeof data === "string" ? data : `<${data.byteLength} bytes>`;
    hooks.messages.push({ from: peer, label, text });
    chatLine(peer, text, false);
  });
  c.on("track", ({ peer, track, transceiver }) => {
    if (c.sfu !== null && peer === c.sfu) {
      // Through the SFU: one tile per forwarded track, named by the SFU's list (by mid, since a
      // transceiver keeps its track when the SFU reuses it for another publisher's).
      if (track.kind !== "video") return;
      const stream = new MediaStream([track]);
      tile(`video-mid-${transceiver.mid}`, sfuLabel(transceiver.mid), stream, false);
      return;
    }
    let stream = remote.get(peer);
    if (!stream) remote.set(peer, (stream = new MediaStream()));
    if (!stream.getTracks().includes(track)) stream.addTrack(track);
    tile(`video-${peer}`, short(peer), stream, false);
    note(`${peer}: ${track.kind} track added`);
  });
  c.on("tracks", () => {
    for (const box of document.querySelectorAll("#videos .tile")) {
      const mid = /^tile-video-mid-(.+)$/.exec(box.id)?.[1];
      if (mid !== undefined) box.querySelector("span").textContent = sfuLabel(mid);
    }
  });
  c.on("track-removed", ({ peer, track }) => {
    if (c.sfu !== null && peer === c.sfu) {
      for (const t of c.connection(peer)?.getTransceivers() ?? []) {
        if (t.receiver.track === track) dropTile(`video-mid-${t.mid}`);
      }
      return;
    }
    const stream = remote.get(peer);
    stream?.removeTrack(track);
    if (stream && stream.getTracks().length === 0) {
      remote.delete(peer);
      dropTile(`video-${peer}`);
    }
    note(`${peer}: ${track.kind} track removed`);
  });
  c.on("negotiated", ({ peer, localOffer }) => note(`${peer}: negotiated (${localOffer ? "our offer" : "their offer"})`));
  c.on("replaced", ({ peer, reason }) => note(`${peer}: connection replaced (${reason})`));
  c.on("watchdog", ({ peer, cause, recovery }) => note(`${peer}: watchdog ${cause} → ${recovery}`, true));
  c.on("signaling-lost", ({ reason }) => {
    setStatus("reconnecting…", "reconnecting");
    note(`signaling lost: ${reason}`, true);
  });
  c.on("reconnected", ({ resumed, id }) => {
    $("me").textContent = id;
    setStatus(`in room ${c.room}`, "open");
    note(resumed ? "signaling resumed" : `signaling back with a new id ${id}`);
    renderPeers();
  });
  c.on("error", ({ peer, code, message }) => note(`${peer ? `${peer}: ` : ""}${code ? `${code}: ` : ""}${message}`, true));
  c.on("closed", ({ reason }) => {
    note(`closed: ${reason}`);
    setStatus(`not connected (${reason})`, "closed");
    if (client === c) finish();
  });
}

async function join(room = $("room").value.trim()) {
  if (!room || client) return;
  $("room").value = room;
  const query = new URLSearchParams(location.search);
  query.set("room", room);
  history.replaceState(null, "", `?${query}`);
  const options = { debug: params.has("debug") };
  if (params.get("watchdog")) options.watchdogTimeout = Number(params.get("watchdog"));
  if (params.get("stun")) options.iceServers = [{ urls: params.get("stun").split(",") }];
  // Relay candidates only: every packet through the TURN server the signaling server hands out.
  if (params.has("relay")) options.rtcConfig = { iceTransportPolicy: "relay" };
  const c = new Politely(options);
  client = hooks.client = c;
  wire(c);
  // Our own chat channel toward every peer, present and future, as `politely join` opens one.
  c.createDataChannel(null, "chat");
  if (camera) for (const track of camera.getTracks()) c.addTrack(null, track, camera);
  setStatus("connecting…");
  $("join").disabled = true;
  try {
    await c.join(wsUrl, room);
    setJoined(true);
    renderPeers();
  } catch (e) {
    note(`cannot join: ${e.message}`, true);
    setStatus("not connected", "closed");
    if (client === c) finish();
  }
}

function finish() {
  client = hooks.client = null;
  for (const id of remote.keys()) dropTile(`video-${id}`);
  remote.clear();
  setJoined(false);
  renderPeers();
  renderCounters();
}

function send(text = $("chat-input").value) {
  text = text.trim();
  if (!client || !text) return 0;
  const count = client.send("chat", text);
  hooks.messages.push({ from: client.id, label: "chat", text });
  chatLine(client.id, text, true);
  if (count === 0) note("nobody to send to yet", true);
  $("chat-input").value = "";
  return count;
}

async function call() {
  if (camera || !client) return;
  if (!navigator.mediaDevices?.getUserMedia) {
    note("no camera access here (the page needs https or localhost)", true);
    return;
  }
  $("call").disabled = true;
  try {
    camera = await navigator.mediaDevices.getUserMedia({ audio: true, video: true }).catch(() =>
      navigator.mediaDevices.getUserMedia({ video: true }).catch(() => navigator.mediaDevices.getUserMedia({ audio: true })));
  } catch (e) {
    note(`camera: ${e.message}`, true);
    $("call").disabled = false;
    return;
  }
  tile("local-video", "you", camera, true);
  if (client?.sfu) {
    // Through the SFU: each track published with its source.
    for (const track of camera.getTracks()) client.publish(track, { source: "media" });
  } else {
    // Each track goes to every peer, present and future; the connections renegotiate.
    for (const track of camera.getTracks()) client?.addTrack(null, track, camera);
  }
  $("hangup").disabled = false;
  note(`call started (${camera.getTracks().map((t) => t.kind).join(" + ")})`);
}

function hangup() {
  if (!camera) return;
  for (const track of camera.getTracks()) {
    if (client?.sfu) client.unpublish(track);
    else client?.removeTrack(null, track);
    track.stop();
  }
  camera = null;
  dropTile("local-video");
  $("hangup").disabled = true;
  $("call").disabled = !client;
  note("call ended");
}

/** "<publisher> · <source>" for the track the SFU forwards on `mid`. */
function sfuLabel(mid) {
  const t = client?.tracks.find((t) => t.mid === mid);
  return t ? `${short(t.publisher)} · ${t.source}` : "…";
}

/** In an SFU room: shares a screen (a camera when the browser offers no screen capture). */
async function share() {
  if (!client?.sfu) {
    note("sharing a screen needs a room with an SFU", true);
    return;
  }
  if (screen) {
    for (const track of screen.getTracks()) {
      client.unpublish(track);
      track.stop();
    }
    screen = null;
    dropTile("local-screen");
    $("share").textContent = "Share screen";
    return;
  }
  try {
    screen = navigator.mediaDevices.getDisplayMedia
      ? await navigator.mediaDevices.getDisplayMedia({ video: true }).catch(() => navigator.mediaDevices.getUserMedia({ video: true }))
      : await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (e) {
    note(`screen: ${e.message}`, true);
    return;
  }
  tile("local-screen", "your screen", screen, true);
  for (const track of screen.getVideoTracks()) client.publish(track, { source: "screen" });
  $("share").textContent = "Stop sharing";
  note("sharing a screen");
}

// ---------------------------------------------------------------- glare on purpose

/** How many transceivers the glare button adds on a connection before it flips their
 * directions instead (so any number of rounds keeps the descriptions the same size). */
const GLARE_TRANSCEIVERS = 2;
const glareRounds = new Map(); // peer id -> rounds of direction flips so far

/** The glare button (and the tests' `politely.glare`): one change that needs an offer on every
 * connection, made in one task, so that a peer doing the same at the same moment collides with
 * us everywhere. `kind`: "audio" | "video" (a transceiver), "restart" (an ICE restart), or
 * nothing: as `politely join`'s `/glare`, an audio then a video transceiver, then flips of their
 * directions. Only transceivers the page added itself change, never the call's tracks. */
function provokeGlare(kind) {
  if (!client) return;
  for (const { id } of client.peers()) {
    if (kind === "restart") {
      client.restartIce(id);
    } else if (kind) {
      client.addTransceiver(id, kind, { direction: "sendrecv" });
    } else {
      const ours = client.transceivers(id);
      if (ours.length < GLARE_TRANSCEIVERS) {
        client.addTransceiver(id, ours.length === 0 ? "audio" : "video", { direction: "sendrecv" });
      } else {
        const round = (glareRounds.get(id) ?? 0) + 1;
        glareRounds.set(id, round);
        const t = ours[round % ours.length];
        t.direction = t.direction === "sendrecv" ? "recvonly" : "sendrecv";
      }
    }
  }
}

// ---------------------------------------------------------------- controls

$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  join();
});
$("leave").addEventListener("click", () => {
  hangup();
  client?.leave();
});
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
$("call").addEventListener("click", call);
$("hangup").addEventListener("click", hangup);
$("share").addEventListener("click", share);
$("glare").addEventListener("click", () => {
  provokeGlare();
  note("glare: a renegotiation started on every connection at once");
});
$("restart").addEventListener("click", () => {
  client?.restartIce(null);
  note("ICE restart requested on every connection");
});
addEventListener("pagehide", () => client?.leave());
setInterval(() => {
  if (client) {
    renderCounters();
    renderPeers();
  }
}, 500);

const room = params.get("room");
$("room").value = room || `room-${Math.random().toString(36).slice(2, 7)}`;
if (room && params.get("autojoin") !== "0") join(room);
