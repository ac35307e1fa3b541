//! What a user of the runtime's API relies on without reading its code: `join` returns
//! whatever the room's size, one peer's gathering holds up no other peer, a send says whether
//! it failed, the types in its signatures are importable, and a server URL may be written
//! with or without the protocol's path.

mod util;

use politely::{
    ApiError, ChannelOptions, ConfigError, ConnectionId, Direction, EngineError, Error, MediaKind,
    PeerError, PeerEvent, PeerHandle, Session, SessionConfig, SessionEvent,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use util::{StunServer, TestServer, converge, either, until, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_returns_with_an_event_queue_smaller_than_the_room() {
    let server = TestServer::start().await;
    let mut present = Vec::new();
    for _ in 0..3 {
        present.push(server.join("small-queue").await);
    }
    let mut config = SessionConfig::loopback();
    config.peer.queue_capacity = 1;
    // Three peers to announce through a queue of one: `join` used to announce them itself
    // and wait, forever, for the application that had not got the session yet.
    let mut late = within(
        10,
        "join with a queue of one",
        Session::join(&server.url(), "small-queue", config),
    )
    .await
    .unwrap();
    assert_eq!(
        late.peers().len(),
        3,
        "the connections start before join returns"
    );
    // Each peer is announced before anything else about it is said.
    let mut announced = BTreeSet::new();
    while announced.len() < 3 {
        let event = within(10, "the peers announced", late.next_event())
            .await
            .unwrap();
        match event {
            SessionEvent::PeerJoined(peer) => {
                announced.insert(peer.id().to_owned());
            }
            SessionEvent::Peer { peer, event } => {
                assert!(
                    announced.contains(&peer),
                    "{event:?} from {peer} before it was announced"
                );
            }
            _ => {}
        }
    }
    let expected: BTreeSet<String> = present.iter().map(Session::id).collect();
    assert_eq!(announced, expected);
    late.leave().await;
    for session in present {
        session.leave().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gathering_from_a_silent_stun_server_holds_up_no_other_peer() {
    let server = TestServer::start().await;
    let stun = StunServer::start().await;
    let mut config = SessionConfig::loopback();
    config.peer.ice_servers = vec![politely::IceServer::stun(format!("stun:{}", stun.addr))];
    config.peer.stun_timeout = Duration::from_secs(30);
    let mut a = Session::join(&server.url(), "gathering", config)
        .await
        .unwrap();
    let mut b = server.join("gathering").await;
    let to_b = until(&mut a, "b joined", 10, joined).await;
    let to_a = until(&mut b, "a joined", 10, joined).await;
    to_b.create_data_channel("chat", Default::default())
        .await
        .unwrap();
    converge(&mut a, &mut b, &to_b, &to_a, 1).await;

    // The STUN server goes quiet: `a`'s connection to a newcomer waits 30 s for it.
    stun.fall_silent();
    let c = server.join("gathering").await;
    let to_c = until(&mut a, "c joined", 10, joined).await;
    // Meanwhile `b` renegotiates with `a`. Its offer passes `a`'s session, which used to
    // gather for `c` itself and so kept the offer for 30 s.
    to_a.add_transceiver(MediaKind::Audio, Direction::SendRecv)
        .await
        .unwrap();
    within(
        10,
        "b's renegotiation with a while a gathers for c",
        converge(&mut a, &mut b, &to_b, &to_a, 2),
    )
    .await;
    // And `a`'s connection to `c` was indeed still gathering all along: its engine, which
    // answers `stats`, does not run yet.
    let stats = tokio::time::timeout(Duration::from_millis(200), to_c.stats()).await;
    assert!(stats.is_err(), "the connection to c started: {stats:?}");
    c.leave().await;
    a.leave().await;
    b.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_fails_fails_itself() {
    let server = TestServer::start().await;
    let mut a = server.join("too-large").await;
    let mut b = server.join("too-large").await;
    let to_b = until(&mut a, "b joined", 10, joined).await;
    let chat = to_b
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    chat.opened().await.unwrap();
    // Larger than any SCTP message the association takes: the send says so, with the
    // application's own error, and no event reports it later.
    let result = chat.send_binary(vec![0u8; 1 << 20]).await;
    assert!(
        matches!(result, Err(Error::Api(ApiError::InvalidArgument(_)))),
        "{result:?}"
    );
    assert_eq!(
        chat.buffered_amount(),
        0,
        "a refused message is not buffered"
    );
    chat.send_text("after").await.unwrap();
    let (_, text) = until(&mut b, "the message after", 10, |event| match event {
        SessionEvent::Peer {
            peer,
            event: PeerEvent::Message { message, .. },
        } => Some((peer, message.as_text().unwrap().to_owned())),
        _ => None,
    })
    .await;
    assert_eq!(text, "after");
    // `until` fails on any `PeerEvent::Error`; a's events are drained the same way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(50), a.next_event()).await
    {
        assert!(
            !matches!(
                event,
                SessionEvent::Peer {
                    event: PeerEvent::Error(_),
                    ..
                }
            ),
            "{event:?}"
        );
    }
    // A send after `close` fails as closed, at once (W3C: `closing` refuses sends).
    chat.close().await;
    let after_close = chat.send_text("closed").await;
    assert!(matches!(after_close, Err(Error::Closed)), "{after_close:?}");
    a.leave().await;
    b.leave().await;
    server.stop().await;
}

/// The crate documentation's chat: both ends create `chat` with one negotiated id when the
/// other is announced, and say hello when it opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_chat_says_hello_once_each_way() {
    let server = TestServer::start().await;
    let mut a = server.join("hello").await;
    let mut b = server.join("hello").await;
    let mut heard: BTreeMap<bool, Vec<String>> = BTreeMap::new();
    let mut opened = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Both hellos, then a while longer for any second one.
    let mut quiet_until = None;
    loop {
        let until = quiet_until.unwrap_or(deadline);
        let Ok((at_a, event)) = tokio::time::timeout_at(until, either(&mut a, &mut b)).await else {
            break;
        };
        match event {
            SessionEvent::PeerJoined(peer) => {
                let options = ChannelOptions {
                    negotiated: Some(0),
                    ..Default::default()
                };
                peer.create_data_channel("chat", options).await.unwrap();
            }
            SessionEvent::Peer {
                event: PeerEvent::ChannelOpen(channel),
                ..
            } => {
                opened += 1;
                channel.send_text("hello").await.unwrap();
            }
            SessionEvent::Peer {
                event: PeerEvent::Message { message, .. },
                ..
            } => {
                heard
                    .entry(at_a)
                    .or_default()
                    .push(message.as_text().unwrap().to_owned());
                if heard.values().map(Vec::len).sum::<usize>() == 2 && quiet_until.is_none() {
                    quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
            }
            _ => {}
        }
    }
    assert_eq!(opened, 2, "one channel, opened once at each end");
    assert_eq!(heard.get(&true).cloned().unwrap_or_default(), ["hello"]);
    assert_eq!(heard.get(&false).cloned().unwrap_or_default(), ["hello"]);
    a.leave().await;
    b.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_url_with_or_without_the_path_is_the_same_server() {
    let server = TestServer::start().await;
    let mut sessions = Vec::new();
    for url in [
        format!("ws://{}", server.addr),
        format!("ws://{}/", server.addr),
        format!("ws://{}/ws", server.addr),
        format!("http://{}", server.addr),
    ] {
        let session = Session::join(&url, "urls", SessionConfig::loopback())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        sessions.push(session);
    }
    assert_eq!(sessions.last().unwrap().peers().len(), 3);
    let refused = Session::join("127.0.0.1:1", "urls", SessionConfig::loopback()).await;
    assert!(matches!(refused, Err(Error::Signaling(_))), "{refused:?}");
    for session in sessions {
        session.leave().await;
    }
    server.stop().await;
}

/// Every type the API's signatures use can be named from the crate itself.
#[test]
fn the_types_in_the_api_are_exported() {
    fn describe(error: &Error) -> String {
        match error {
            Error::Api(ApiError::ChannelNotOpen(id)) => format!("channel {id} not open"),
            Error::Config(e) => {
                let e: &ConfigError = e;
                format!("configuration: {e}")
            }
            other => other.to_string(),
        }
    }
    fn engine_error(event: &PeerEvent) -> Option<&EngineError> {
        match event {
            PeerEvent::Error(e @ EngineError::Peer(PeerError::MalformedSignal(_))) => Some(e),
            _ => None,
        }
    }
    fn connection(stats: &politely::PeerStats) -> &ConnectionId {
        &stats.connection_id
    }
    let _: fn(&PeerHandle) -> &str = PeerHandle::id;
    assert_eq!(describe(&Error::Closed), "closed");
    assert!(engine_error(&PeerEvent::Closed { by_remote: true }).is_none());
    let _ = connection;
}

fn joined(event: SessionEvent) -> Option<PeerHandle> {
    match event {
        SessionEvent::PeerJoined(p) => Some(p),
        _ => None,
    }
}
