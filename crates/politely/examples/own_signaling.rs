//! `Peer` over signaling you bring: no politely server, just a channel that carries text.
//!
//! ```sh
//! cargo run -p politely --example own_signaling
//! ```
//!
//! An application that already has a way to talk to the other side (its own WebSocket, a
//! game server, a message queue) hands politely a `Sink` and a `Stream` of `Signal`s. Here
//! that way is two in-process queues of JSON strings, as they would travel on a wire. Both
//! peers add a data channel at the same moment: when their offers cross (glare), the polite
//! one rolls back; either way both channels open, and the counters printed say what happened.

use futures_util::{Sink, Stream};
use politely::{Peer, PeerConfig, PeerEvent, Role, Signal};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (a_end, b_end) = wire();
    // Roles are the application's to choose: one polite end, one impolite.
    let mut a = Peer::connect(Role::Polite, a_end, PeerConfig::loopback()).await?;
    let mut b = Peer::connect(Role::Impolite, b_end, PeerConfig::loopback()).await?;

    // Both ends create a channel at once; if the two offers cross, `a` (polite) rolls back.
    let (ours, theirs) = tokio::join!(
        a.create_data_channel("from-a", Default::default()),
        b.create_data_channel("from-b", Default::default()),
    );
    let (ours, theirs) = (ours?, theirs?);
    ours.opened().await?;
    theirs.opened().await?;
    ours.send_text("hello from a").await?;
    theirs.send_text("hello from b").await?;
    let (at_a, at_b) = tokio::join!(next_text(&mut a), next_text(&mut b));
    println!("a heard {:?}, b heard {:?}", at_a?, at_b?);
    let counters = a.stats().await?.counters;
    println!(
        "a: {} offers, {} rollbacks, {} ignored offers",
        counters.offers, counters.rollbacks, counters.ignored_offers
    );
    a.close().await;
    b.close().await;
    Ok(())
}

async fn next_text(peer: &mut Peer) -> Result<String, politely::Error> {
    while let Some(event) = peer.next_event().await {
        if let PeerEvent::Message { message, .. } = event {
            return Ok(message.as_text().unwrap_or("<binary>").to_owned());
        }
    }
    Err(politely::Error::Closed)
}

/// The two ends of a text wire, each as a `Sink` + `Stream` of `Signal`s: signals are written
/// as JSON (`Signal::to_json`) and read back (`Signal::from_json`), as over a real connection.
fn wire() -> (End, End) {
    let (to_b, from_a) = mpsc::unbounded_channel::<String>();
    let (to_a, from_b) = mpsc::unbounded_channel::<String>();
    (
        End {
            tx: Some(to_b),
            rx: from_b,
        },
        End {
            tx: Some(to_a),
            rx: from_a,
        },
    )
}

struct End {
    /// `None` once closed.
    tx: Option<mpsc::UnboundedSender<String>>,
    rx: mpsc::UnboundedReceiver<String>,
}

impl Sink<Signal> for End {
    type Error = &'static str;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, signal: Signal) -> Result<(), Self::Error> {
        let tx = self.tx.as_mut().ok_or("closed")?;
        tx.send(signal.to_json().to_string())
            .map_err(|_| "the other end is gone")
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx = None;
        Poll::Ready(Ok(()))
    }
}

impl Stream for End {
    type Item = Signal;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Signal>> {
        loop {
            let Some(text) = std::task::ready!(self.rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            // What does not read as a signal is dropped, as a peer's garbage would be.
            let parsed = serde_json::from_str(&text)
                .ok()
                .and_then(|json| Signal::from_json(&json).ok());
            if let Some(signal) = parsed {
                return Poll::Ready(Some(signal));
            }
        }
    }
}
