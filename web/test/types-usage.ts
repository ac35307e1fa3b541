// Compiled by `tsc --noEmit` (web/test/tsconfig.json) against ../politely.d.ts: the documented
// uses of politely.js type-check, and wrong ones do not (the @ts-expect-error lines).
import { Politely, serverUrl, type PeerStats, type PolitelyEvents } from "politely";

export async function documented(camera: MediaStream): Promise<void> {
  const client = new Politely({ iceServers: [], gate: 500 });
  const stop = client.on("message", ({ peer, label, data }) => console.log(peer, label, data));
  client.on("peer-joined", ({ peer, polite, user }) => console.log(peer, polite, user?.name));
  client.on("track", ({ streams, track }) => console.log(streams[0]?.id, track.kind));
  client.on("negotiated", ({ counters }) => console.log(counters.rollbacks, counters.ignoredOffers));
  client.on("tracks", ({ tracks }) => client.subscribe(tracks.filter((t) => t.source === "screen").map((t) => t.id)));
  client.createDataChannel(null, "chat", { ordered: false, maxRetransmits: 0 });
  client.addTrack(null, camera.getVideoTracks()[0], camera);
  await client.join(serverUrl("ws://127.0.0.1:8080"), "lobby");
  const sent: number = client.send("chat", "hello");
  client.addTransceiver("p", "audio", { direction: "sendrecv" });
  for (const t of client.transceivers("p")) t.direction = "recvonly";
  const stats: Record<string, PeerStats> = client.stats();
  const detail: PolitelyEvents["watchdog"] = { peer: "p", cause: "answer-timeout", recovery: "new-connection" };
  console.log(sent, stats, detail, client.state === "open", client.peers()[0]?.connectionState);
  stop();
  await client.leave();

  // @ts-expect-error: not an event
  client.on("mesage", () => {});
  // @ts-expect-error: a message's detail has no `text`
  client.on("message", ({ text }) => console.log(text));
  // @ts-expect-error: a peer id or null, not a number
  client.restartIce(3);
}
