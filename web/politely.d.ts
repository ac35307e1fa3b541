// Types of politely.js (the browser client of a politely signaling server). Hand-written
// beside the module; web/test/types.test.mjs checks that every member named here exists in
// the module, and `tsc` checks web/test/types-usage.ts against these declarations.

/** Options of a client; every field is optional. */
export interface PolitelyOptions {
  /** ICE servers for every connection; the server's `welcome` may add TURN servers. */
  iceServers?: RTCIceServer[];
  /** More `RTCConfiguration` fields (e.g. `iceTransportPolicy: "relay"`). */
  rtcConfig?: RTCConfiguration;
  /** A room token, for a server started with a secret. */
  token?: string;
  /** Milliseconds without negotiation progress before a connection is replaced (8000). */
  watchdogTimeout?: number;
  /** Milliseconds in ICE `disconnected` before `restartIce()` (4000). */
  disconnectedRestart?: number;
  /** Milliseconds of trying to get the signaling back before giving up (120000). */
  reconnectFor?: number;
  /** Milliseconds to wait for a welcome (10000). */
  joinTimeout?: number;
  /** Milliseconds between application pings (15000). */
  pingInterval?: number;
  /** Milliseconds of silence after which the WebSocket counts as dead (40000). */
  pingTimeout?: number;
  /** Negotiate the data section from the first offer (true). */
  dataSection?: boolean;
  /** SFU rooms: milliseconds of lease to ask for before each renegotiation (off: null). */
  gate?: number | null;
  /** Log every event to the console. */
  debug?: boolean;
}

/** Who a peer is, from its room token. */
export interface User {
  sub: string;
  name?: string;
  metadata?: unknown;
}

/** Negotiation counters of one connection. */
export interface Counters {
  offers: number;
  answers: number;
  offersReceived: number;
  answersApplied: number;
  rollbacks: number;
  ignoredOffers: number;
  refused: number;
  offersRefused: number;
  restarts: number;
  watchdog: number;
  watchdogReplacements: number;
  replaced: number;
  staleDescriptions: number;
  bufferedCandidates: number;
  suppressedCandidates: number;
  oldGenerationCandidates: number;
  leaseRequests: number;
  leasesGranted: number;
  offersUnderLease: number;
  offersWithoutLease: number;
}

/** A track an SFU says the client may subscribe to. */
export interface AvailableTrack {
  id: string;
  publisher: string;
  kind: "audio" | "video";
  source: "media" | "screen";
}

/** Every event and its detail (`client.on(name, detail => ...)`). */
export interface PolitelyEvents {
  joined: { id: string; room: string; peers: string[] };
  "peer-joined": { peer: string; polite: boolean; user?: User };
  "peer-left": { peer: string };
  connected: { peer: string };
  disconnected: { peer: string; state: RTCPeerConnectionState | RTCIceConnectionState };
  "connection-state": { peer: string; state: RTCPeerConnectionState };
  channel: { peer: string; label: string; channel: RTCDataChannel; origin: "local" | "remote" };
  "channel-closed": { peer: string; label: string; channel: RTCDataChannel };
  message: { peer: string; label: string; data: string | ArrayBuffer | Blob; channel: RTCDataChannel };
  track: { peer: string; track: MediaStreamTrack; streams: readonly MediaStream[]; transceiver: RTCRtpTransceiver };
  "track-removed": { peer: string; track: MediaStreamTrack };
  negotiated: { peer: string; localOffer: boolean; counters: Counters };
  replaced: { peer: string; reason: string; old: string; new: string };
  watchdog: { peer: string; cause: string; recovery: string };
  refused: { peer: string; offerId: string; message: string };
  "signaling-lost": { reason: string; code?: number };
  reconnected: { resumed: boolean; id: string };
  error: { peer?: string; code?: string; message: string; error?: unknown; during?: string };
  closed: { reason: string };
  tracks: { sfu: string; tracks: AvailableTrack[] };
  room: { sfu: string; message: unknown };
}

/** One connection's state, from `stats()`. */
export interface PeerStats {
  connectionId: string;
  polite: boolean;
  signalingState: RTCSignalingState;
  settled: boolean;
  connectionState: RTCPeerConnectionState;
  iceConnectionState: RTCIceConnectionState;
  iceGatheringState: RTCIceGatheringState;
  mids: string[];
  sectionMids: string[];
  channels: string[];
  channelStates: string[];
  localUfrag: string | null;
  remoteUfrag: string | null;
  counters: Counters;
}

/** A peer of the room, from `peers()`. */
export interface PeerInfo {
  id: string;
  polite: boolean;
  connectionId: string;
  connectionState: RTCPeerConnectionState;
}

/** A peer id, or `null` (or `"*"`) for every peer, present and future. */
export type PeerTarget = string | null;

export class Politely extends EventTarget {
  constructor(options?: PolitelyOptions);
  /** Creates a client and joins (listeners added after it resolves miss the first events). */
  static join(url: string, room: string, options?: PolitelyOptions): Promise<Politely>;
  /** `ws(s)://<this page's host>/ws`. */
  static defaultUrl(): string;

  readonly options: Required<PolitelyOptions>;
  /** Our id in the room, once joined. */
  id: string | null;
  room: string | null;
  url: string | null;
  state: "new" | "joining" | "open" | "reconnecting" | "closed";
  /** The room's SFU, when it has one. */
  sfu: string | null;
  /** What the SFU says we may subscribe to. */
  tracks: AvailableTrack[];

  /** Listens to an event; returns a function that stops listening. */
  on<K extends keyof PolitelyEvents>(name: K, fn: (detail: PolitelyEvents[K]) => void): () => void;
  /** Connects, joins `room` and resolves once welcomed (`ws://host:port`, with or without `/ws`). */
  join(url: string, room: string): Promise<this>;
  /** Says `bye` to every peer and leaves. */
  leave(): Promise<void>;
  peers(): PeerInfo[];
  /** The current RTCPeerConnection with a peer (for inspection; do not negotiate on it). */
  connection(peerId: string): RTCPeerConnection | null;
  createDataChannel(peerId: PeerTarget, label: string, options?: RTCDataChannelInit): (RTCDataChannel | undefined)[];
  addTrack(peerId: PeerTarget, track: MediaStreamTrack, ...streams: MediaStream[]): (RTCRtpSender | undefined)[];
  removeTrack(peerId: PeerTarget, track: MediaStreamTrack): void;
  addTransceiver(peerId: PeerTarget, trackOrKind: MediaStreamTrack | "audio" | "video", init?: RTCRtpTransceiverInit): (RTCRtpTransceiver | undefined)[];
  /** The transceivers `addTransceiver` made on the current connection with a peer, oldest
   * first, stopped ones left out (a replacement connection has new ones). */
  transceivers(peerId: string): RTCRtpTransceiver[];
  /** SFU rooms: sends `track` to the SFU, saying what it shows. */
  publish(track: MediaStreamTrack, options?: { source?: "media" | "screen" }): RTCRtpSender | undefined;
  unpublish(track: MediaStreamTrack): void;
  subscribe(ids: Iterable<string>): void;
  unsubscribe(ids: Iterable<string>): void;
  restartIce(peerId: PeerTarget): void;
  /** Sends on `label` to every peer; returns how many peers it went (or is held) for. */
  send(label: string, data: string | ArrayBuffer | ArrayBufferView | Blob): number;
  sendTo(peerId: string, label: string, data: string | ArrayBuffer | ArrayBufferView | Blob): boolean;
  stats(): Record<string, PeerStats>;
}

/** The server's WebSocket URL from what the application gave (see `join`). */
export function serverUrl(url: string): string;

export default Politely;
