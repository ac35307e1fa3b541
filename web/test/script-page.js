// The differential check's page: the W3C perfect-negotiation pattern on a plain
// RTCPeerConnection (webrtc-pc, "Perfect Negotiation Example"), nothing of politely.js, with
// a ten-line signaler for politely's protocol. The test loads it into a document of the
// server's origin (Chromium lets only a loopback document open a WebSocket to loopback) and
// drives it with `window.act(steps)`; `window.endState()` reports what the application sees,
// in the shape `politely sim --script` and `politely join`'s `/state` print.

const room = new URLSearchParams(location.search).get("room");
const ws = new WebSocket(`ws://${location.host}/ws`);
const pc = new RTCPeerConnection();
let to = null;
let polite = false;
let connectionId = null;
// What the application made: its transceivers in call order (a script's `index`), and every
// channel by label, its own and the peer's.
const created = [];
const channels = new Map();
const notes = [];
// The local ICE ufrag when restartIce() was called, until a new one replaces it.
let restartFrom = null;
// What the pattern did, for a report when a round does not settle.
const log = [];
const trace = (line) => log.push(`${performance.now().toFixed(1)} ${line}`);
window.diff = { id: null, peer: null, polite: null, log };

// The signaler.
const signal = (data) =>
  ws.send(JSON.stringify({ type: "signal", to, data: { connectionId: (connectionId ??= crypto.randomUUID()), ...data } }));
const meet = (peer) => {
  ({ id: to, polite } = peer);
  Object.assign(window.diff, { peer: to, polite });
};
ws.onopen = () => ws.send(JSON.stringify({ type: "join", room }));
ws.onmessage = ({ data }) => {
  const m = JSON.parse(data);
  if (m.type === "welcome") {
    window.diff.id = m.id;
    if (m.peers.length) meet(m.peers[0]);
  }
  if (m.type === "peer-joined") meet(m);
  if (m.type === "error") notes.push(`server: ${m.code} ${m.message}`);
  // The connection id: ours if we spoke first, but the polite side takes the other's.
  if (m.type === "signal") {
    if (polite || !connectionId) connectionId = m.data.connectionId;
    onSignal(m.data);
  }
};

// The pattern, as the spec writes it.
let makingOffer = false;
let ignoreOffer = false;
let isSettingRemoteAnswerPending = false;
pc.onnegotiationneeded = async () => {
  try {
    makingOffer = true;
    await pc.setLocalDescription();
    trace(`send ${pc.localDescription.type}`);
    signal({ description: pc.localDescription });
  } catch (err) {
    notes.push(`negotiationneeded: ${err}`);
  } finally {
    makingOffer = false;
  }
};
pc.onicecandidate = ({ candidate }) => signal({ candidate });
async function onSignal({ description, candidate }) {
  try {
    if (description) {
      const readyForOffer = !makingOffer && (pc.signalingState === "stable" || isSettingRemoteAnswerPending);
      const offerCollision = description.type === "offer" && !readyForOffer;
      ignoreOffer = !polite && offerCollision;
      trace(`recv ${description.type} in ${pc.signalingState}${ignoreOffer ? ", ignored" : ""}`);
      if (ignoreOffer) return;
      isSettingRemoteAnswerPending = description.type === "answer";
      await pc.setRemoteDescription(description);
      isSettingRemoteAnswerPending = false;
      if (description.type === "offer") {
        await pc.setLocalDescription();
        trace(`send ${pc.localDescription.type}`);
        signal({ description: pc.localDescription });
      }
    } else if (candidate) {
      try {
        await pc.addIceCandidate(candidate);
      } catch (err) {
        if (!ignoreOffer) throw err;
      }
    }
  } catch (err) {
    notes.push(`${description ? `setRemoteDescription(${description.type})` : "addIceCandidate"}: ${err}`);
  }
}
pc.onsignalingstatechange = () => trace(pc.signalingState);
pc.ondatachannel = ({ channel }) => {
  if (!channels.has(channel.label)) channels.set(channel.label, channel);
};

// Tracks made on the spot (act() is synchronous, so no getUserMedia).
const audio = new AudioContext();
function track(kind) {
  if (kind === "audio") return audio.createMediaStreamDestination().stream.getAudioTracks()[0];
  const canvas = Object.assign(document.createElement("canvas"), { width: 16, height: 16 });
  canvas.getContext("2d").fillRect(0, 0, 16, 16);
  return canvas.captureStream(1).getVideoTracks()[0];
}
const sends = (d) => d === "sendrecv" || d === "sendonly";
const receives = (d) => d === "sendrecv" || d === "recvonly";
const reverse = (d) => ({ sendonly: "recvonly", recvonly: "sendonly" })[d] ?? d;
const intersect = (a, b) => {
  const s = sends(a) && sends(b);
  const r = receives(a) && receives(b);
  return s && r ? "sendrecv" : s ? "sendonly" : r ? "recvonly" : "inactive";
};
function transceiver(index) {
  const t = created[index];
  if (!t) throw new Error(`no transceiver ${index}`);
  return t;
}

/** One script step: the application's call, exactly as W3C names it. A sending direction
 * comes with a track, as the native peer's does. */
function apply(step) {
  switch (step.op) {
    case "addTransceiver":
      created.push(pc.addTransceiver(sends(step.direction) ? track(step.kind) : step.kind, { direction: step.direction }));
      return;
    case "addTrack": {
      const sender = pc.addTrack(track(step.kind));
      created.push(pc.getTransceivers().find((t) => t.sender === sender));
      return;
    }
    case "removeTrack":
      pc.removeTrack(transceiver(step.index).sender);
      return;
    case "setDirection":
      transceiver(step.index).direction = step.direction;
      return;
    case "createDataChannel":
      channels.set(step.label, pc.createDataChannel(step.label));
      return;
    case "closeDataChannel": {
      const channel = channels.get(step.label);
      if (!channel) throw new Error(`no channel labelled ${step.label}`);
      channel.close();
      return;
    }
    case "restartIce":
      // restartIce() replaces the credentials of the local descriptions there are; with none
      // it does nothing.
      if (restartFrom === null) restartFrom = ufrag(pc.localDescription);
      pc.restartIce();
      return;
    default:
      throw new Error(`unknown op ${step.op}`);
  }
}

/** A round's steps, back to back in one task; per step `null` or the error it threw. */
window.act = (steps) =>
  steps.map((step) => {
    try {
      apply(step);
      return null;
    } catch (err) {
      notes.push(`${step.op}: ${err}`);
      return String(err);
    }
  });

function ufrag(description) {
  return /a=ice-ufrag:(\S+)/.exec(description?.sdp ?? "")?.[1] ?? null;
}

/** Each m-section's direction in a description, by mid. */
function directions(description) {
  const out = new Map();
  let mid = null;
  let direction = "sendrecv";
  const flush = () => mid !== null && out.set(mid, direction);
  for (const line of (description?.sdp ?? "").split(/\r?\n/)) {
    if (line.startsWith("m=")) {
      flush();
      [mid, direction] = [null, "sendrecv"];
    } else if (line.startsWith("a=mid:")) mid = line.slice(6);
    else if (/^a=(sendrecv|sendonly|recvonly|inactive)$/.test(line)) direction = line.slice(2);
  }
  flush();
  return out;
}

/** Whether the connection still has something to negotiate: webrtc-pc's "check if
 * negotiation is needed", which Chromium does not expose. Read in stable only. */
function negotiationNeeded() {
  const local = pc.currentLocalDescription;
  const remote = pc.currentRemoteDescription;
  if (restartFrom !== null) {
    if (ufrag(local) === restartFrom) return true;
    restartFrom = null;
  }
  if (channels.size && !/\nm=application /.test(local?.sdp ?? "")) return true;
  const mine = directions(local);
  const theirs = directions(remote);
  for (const t of pc.getTransceivers()) {
    if (t.currentDirection === "stopped") continue;
    if (t.mid === null || !mine.has(t.mid)) return true;
    if (local.type === "offer") {
      // The offer's direction, or the answer's seen from here, must be [[Direction]].
      if (mine.get(t.mid) !== t.direction && reverse(theirs.get(t.mid)) !== t.direction) return true;
    } else if (mine.get(t.mid) !== intersect(t.direction, reverse(theirs.get(t.mid)))) {
      // The answer's direction must be [[Direction]] ∩ reverse(offered) (JSEP 5.3.1).
      return true;
    }
  }
  return false;
}

/** What the application sees, and whether this side is still busy negotiating. */
window.endState = () => ({
  busy: makingOffer || pc.signalingState !== "stable" || negotiationNeeded(),
  connectionState: pc.connectionState,
  polite,
  notes,
  signalingState: pc.signalingState,
  transceivers: pc.getTransceivers().map((t) => {
    const index = created.indexOf(t);
    return {
      origin: index >= 0 ? index : "remote",
      kind: t.receiver.track.kind,
      direction: t.direction,
      currentDirection: t.currentDirection,
      mid: t.mid,
    };
  }),
  channels: [...channels.values()].map((c) => ({ label: c.label, readyState: c.readyState })),
});
