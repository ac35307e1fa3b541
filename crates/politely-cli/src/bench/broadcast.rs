//! `rtc`'s own `broadcast` example (webrtc-rs `rtc` 0.21.1, `examples/broadcast`) under the
//! same 1 -> N load as `politely bench sfu`'s broadcast phase, so the two forwarders are
//! compared in one run: one publisher writes the same video frames at the same rate, and the
//! same number of viewers count what arrives.
//!
//! The example takes each offer as base64 JSON in an HTTP `POST /sdp` and prints its answer on
//! stdout; it does not trickle, and the first offer is its publisher, every later one a viewer.
//! The peers here are politely's own (`Peer` over a signaling channel this module brings): the
//! offer and its candidates are joined into one SDP and posted, and the printed answer is
//! handed back as the answer. The example's HTTP server listens on every interface, so it is
//! only started inside a network namespace whose one interface is loopback.

use super::sfu::{Integrity, write_frames};
use crate::system::cpu_nanos;
use anyhow::{Context as _, bail};
use base64::Engine as _;
use futures_util::{Sink, Stream};
use politely::{
    Direction, MediaKind, Peer, PeerConfig, PeerEvent, Role, Signal, TrackLabel, TransceiverId,
};
use politely_proto::signal::{Candidate, Description, Payload, SdpKind};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What the example's viewers received while it was timed.
pub(crate) struct Figures {
    pub(crate) span: Duration,
    /// The example process's CPU over `span`.
    pub(crate) cpu_nanos: Option<u64>,
    /// Packets received by the viewers over `span`.
    pub(crate) packets: u64,
    /// Everything the viewers received, from their first packet to the end.
    pub(crate) integrity: Integrity,
}

/// Runs the example at `bin` with one politely publisher and `viewers` politely viewers; the
/// publisher writes frames of `frame_bytes` every 20 ms, and the viewers are counted for
/// `stream_secs` once every one of them receives.
pub(crate) async fn run(
    bin: &Path,
    viewers: usize,
    stream_secs: u64,
    frame_bytes: usize,
    timeout: Duration,
) -> anyhow::Result<Figures> {
    only_loopback()?;
    let mut example = Example::start(bin)?;
    let publisher = connect(&mut example, timeout, |peer| async move {
        let label = TrackLabel {
            stream_id: "publisher".to_owned(),
            track_id: "publisher-video".to_owned(),
        };
        peer.add_labelled_transceiver(MediaKind::Video, Direction::SendOnly, label)
            .await
    })
    .await
    .context("the publisher's connection to the example")?;
    let writer = write_frames(publisher.peer.handle(), publisher.track, frame_bytes);
    // The example answers a viewer only once its publisher's track has a codec.
    example
        .wait_for(|line| line.contains("Received track with codec"), timeout)
        .await
        .context("the example never saw the publisher's track")?;
    let integrity = Arc::new(Mutex::new(Integrity::default()));
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let mut counters = Vec::new();
    for viewer in 0..viewers {
        let connected = connect(&mut example, timeout, |peer| async move {
            peer.add_transceiver(MediaKind::Video, Direction::RecvOnly)
                .await
        })
        .await
        .with_context(|| format!("viewer {viewer}'s connection to the example"))?;
        counters.push(tokio::spawn(count(
            connected.peer,
            connected.track,
            integrity.clone(),
            first_tx.clone(),
        )));
    }
    let deadline = Instant::now() + timeout;
    for _ in 0..viewers {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, first_rx.recv())
            .await
            .ok()
            .flatten()
            .context("a viewer of the example received nothing")?;
    }
    let pid = example.child.id();
    let packets_before = integrity.lock().expect("never poisoned").packets;
    let cpu_before = cpu_nanos(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(stream_secs)).await;
    let cpu = cpu_before
        .zip(cpu_nanos(pid))
        .map(|(a, b)| b.saturating_sub(a));
    let span = t0.elapsed();
    let integrity = *integrity.lock().expect("never poisoned");
    writer.abort();
    for counter in counters {
        counter.abort();
    }
    drop(publisher.peer);
    Ok(Figures {
        span,
        cpu_nanos: cpu,
        packets: integrity.packets - packets_before,
        integrity,
    })
}

/// Refuses to start the example outside a namespace whose one interface is loopback: its
/// HTTP server binds 0.0.0.0.
pub(crate) fn only_loopback() -> anyhow::Result<()> {
    // /proc/self/net follows this process's namespace (/sys/class/net follows sysfs's mount).
    let table = std::fs::read_to_string("/proc/self/net/dev").context("listing interfaces")?;
    let interfaces: Vec<&str> = table
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    if interfaces != ["lo"] {
        bail!(
            "rtc's broadcast example listens on every interface, and this namespace has {interfaces:?}: \
             run the comparison in one with only loopback (scripts/bench-sfu-rtc-broadcast.sh does)"
        );
    }
    Ok(())
}

/// The example's process, and the lines it prints.
struct Example {
    child: Child,
    port: u16,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Example {
    fn start(bin: &Path) -> anyhow::Result<Example> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // `setpriv --pdeathsig` ends the example with this process however it ends.
        let mut child = std::process::Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(bin)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("the example's stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Example { child, port, lines })
    }

    /// Waits for a printed line that `matches`, and returns it.
    async fn wait_for(
        &mut self,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .context("timed out")?
                .context("the example exited")?;
            if matches(&line) {
                return Ok(line);
            }
        }
    }

    /// Posts an offer and returns the answer the example prints for it.
    async fn answer(&mut self, offer: &str, timeout: Duration) -> anyhow::Result<String> {
        let json = serde_json::json!({"type": "offer", "sdp": offer}).to_string();
        let body = base64::engine::general_purpose::STANDARD.encode(json);
        self.post(&body, timeout).await?;
        // The answer is the line after the one that announces it.
        self.wait_for(|line| line.trim_end().ends_with("nswer:"), timeout)
            .await?;
        let encoded = self.wait_for(|_| true, timeout).await?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .context("the example's answer is not base64")?;
        let answer: serde_json::Value = serde_json::from_slice(&decoded)?;
        anyhow::ensure!(answer["type"] == "answer", "not an answer: {answer}");
        Ok(answer["sdp"]
            .as_str()
            .context("an answer without sdp")?
            .to_owned())
    }

    /// `POST /sdp`, retried while the example's server is not up yet.
    async fn post(&self, body: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut stream = loop {
            match TcpStream::connect(("127.0.0.1", self.port)).await {
                Ok(stream) => break stream,
                Err(e) if Instant::now() > deadline => {
                    return Err(e).context("the example's HTTP server");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let request = format!(
            "POST /sdp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        anyhow::ensure!(
            response.starts_with("HTTP/1.1 200"),
            "the example refused the offer: {}",
            response.lines().next().unwrap_or_default()
        );
        Ok(())
    }
}

/// A politely peer connected to the example, and the transceiver it was set up with.
struct Connected {
    peer: Peer,
    track: TransceiverId,
}

/// Connects a politely peer to the example: `setup` adds what it offers; its offer and
/// candidates go to the example as one SDP, and the printed answer comes back.
async fn connect<F, Fut>(
    example: &mut Example,
    timeout: Duration,
    setup: F,
) -> anyhow::Result<Connected>
where
    F: FnOnce(politely::PeerHandle) -> Fut,
    Fut: std::future::Future<Output = Result<TransceiverId, politely::Error>>,
{
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let end = End {
        out: out_tx,
        incoming: in_rx,
    };
    let mut peer = Peer::connect(Role::Impolite, end, PeerConfig::loopback()).await?;
    let track = setup(peer.handle()).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut offer = None;
    let mut candidates = Vec::new();
    // Candidates until end-of-candidates, or a quiet moment after the offer.
    loop {
        let quiet = if offer.is_some() {
            (tokio::time::Instant::now() + Duration::from_millis(300)).min(deadline)
        } else {
            deadline
        };
        match tokio::time::timeout_at(quiet, out_rx.recv()).await {
            Ok(Some(signal)) => match signal.payload {
                Payload::Description {
                    description:
                        Description {
                            kind: SdpKind::Offer,
                            sdp,
                        },
                    offer_id,
                    ..
                } => offer = Some((signal.connection_id, sdp, offer_id)),
                Payload::Candidate(Some(candidate)) => candidates.push(candidate),
                Payload::Candidate(None) if offer.is_some() => break,
                _ => {}
            },
            Ok(None) => bail!("the peer ended before it offered"),
            Err(_) if offer.is_some() => break,
            Err(_) => bail!("the peer made no offer"),
        }
    }
    let (connection_id, sdp, offer_id) = offer.expect("the loop ends with an offer");
    let answer = example
        .answer(&with_candidates(&sdp, &candidates), timeout)
        .await?;
    in_tx
        .send(Signal {
            connection_id,
            payload: Payload::Description {
                description: Description {
                    kind: SdpKind::Answer,
                    sdp: answer,
                },
                offer_id,
                lease: None,
            },
        })
        .ok()
        .context("the peer ended")?;
    // Whatever the peer says later has nowhere to go: the example negotiates once. Its
    // connection is up when the peer says so.
    tokio::spawn(async move {
        let _keep_open = in_tx;
        while out_rx.recv().await.is_some() {}
    });
    loop {
        match tokio::time::timeout_at(deadline, peer.next_event())
            .await
            .context("no connection to the example")?
            .context("the peer ended")?
        {
            PeerEvent::Connected => return Ok(Connected { peer, track }),
            PeerEvent::Error(e) => bail!("{e}"),
            _ => {}
        }
    }
}

/// `sdp` with `candidates` written into the m-sections they belong to, each section closed
/// with `a=end-of-candidates`: the example reads candidates only from the SDP.
fn with_candidates(sdp: &str, candidates: &[Candidate]) -> String {
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.split("\r\n").filter(|line| !line.is_empty()) {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        sections.last_mut().expect("never empty").push(line);
    }
    let mut out = String::new();
    for (index, section) in sections.iter().enumerate() {
        for line in section {
            out.push_str(line);
            out.push_str("\r\n");
        }
        if index == 0 {
            continue;
        }
        let mid = section.iter().find_map(|line| line.strip_prefix("a=mid:"));
        for candidate in candidates.iter().filter(|c| {
            !c.candidate.is_empty()
                && match (&c.sdp_mid, c.sdp_m_line_index) {
                    (Some(m), _) => Some(m.as_str()) == mid,
                    (None, Some(i)) => usize::from(i) + 1 == index,
                    (None, None) => index == 1,
                }
        }) {
            let line = format!("a={}", candidate.candidate);
            if !section.contains(&line.as_str()) {
                out.push_str(&line);
                out.push_str("\r\n");
            }
        }
        if !section.contains(&"a=end-of-candidates") {
            out.push_str("a=end-of-candidates\r\n");
        }
    }
    out
}

/// Counts what a viewer receives on `track`, and says when its first packet arrives.
async fn count(
    mut peer: Peer,
    track: TransceiverId,
    integrity: Arc<Mutex<Integrity>>,
    first: mpsc::UnboundedSender<()>,
) {
    let mut last = None;
    while let Some(event) = peer.next_event().await {
        if let PeerEvent::Media(packet) = event
            && packet.transceiver == track
        {
            if last.is_none() {
                let _ = first.send(());
            }
            integrity
                .lock()
                .expect("never poisoned")
                .count(&mut last, packet.sequence_number);
        }
    }
}

/// The signaling channel handed to `Peer::connect`: what the peer sends goes to `out`, what
/// arrives on `incoming` reaches the peer.
struct End {
    out: mpsc::UnboundedSender<Signal>,
    incoming: mpsc::UnboundedReceiver<Signal>,
}

impl Sink<Signal> for End {
    type Error = std::io::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, signal: Signal) -> Result<(), Self::Error> {
        self.out
            .send(signal)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl Stream for End {
    type Item = Signal;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Signal>> {
        self.incoming.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_into_their_m_sections() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n";
        let candidate = |mid: &str, text: &str| Candidate {
            candidate: text.to_owned(),
            sdp_mid: Some(mid.to_owned()),
            ..Default::default()
        };
        let out = with_candidates(
            sdp,
            &[
                candidate("0", "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"),
                candidate("1", "candidate:2 1 udp 2130706431 127.0.0.1 5001 typ host"),
                candidate("0", ""),
            ],
        );
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n\
             a=candidate:2 1 udp 2130706431 127.0.0.1 5001 typ host\r\na=end-of-candidates\r\n"
        );
    }
}
