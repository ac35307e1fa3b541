//! `wss://`: native peers join through a TLS endpoint in front of the server (what a proxy
//! such as nginx does in a deployment) and through the server's own TLS termination, with a
//! certificate generated here and trusted through `SessionConfig::trusted_certificates`;
//! without that trust, joining fails.

mod util;

use politely::{PeerEvent, Session, SessionConfig, SessionEvent};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use util::{TestServer, until};

/// A TLS endpoint on 127.0.0.1:0 for `upstream`, with a certificate for 127.0.0.1; returns its
/// port and the certificate (DER).
async fn tls_in_front_of(upstream: std::net::SocketAddr) -> (u16, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let der = certificate.der().to_vec();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, der)
}

/// Two peers join `url` trusting `certificate`, connect and chat.
async fn join_and_chat(url: &str, certificate: &[u8]) {
    let config = || SessionConfig {
        trusted_certificates: vec![certificate.to_vec()],
        ..SessionConfig::loopback()
    };
    let mut alice = Session::join(url, "tls", config()).await.unwrap();
    let mut bob = Session::join(url, "tls", config()).await.unwrap();
    let to_bob = until(&mut alice, "bob joined", 5, |e| match e {
        SessionEvent::PeerJoined(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(to_bob.id(), bob.id());
    let channel = to_bob
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    channel.opened().await.unwrap();
    channel.send_text("over wss").await.unwrap();
    let text = until(&mut bob, "alice's message", 10, |e| match e {
        SessionEvent::Peer {
            event: PeerEvent::Message { message, .. },
            ..
        } => Some(message.as_text().unwrap().to_owned()),
        _ => None,
    })
    .await;
    assert_eq!(text, "over wss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_join_over_wss_through_a_tls_proxy() {
    let server = TestServer::start().await;
    let (port, certificate) = tls_in_front_of(server.addr).await;
    join_and_chat(&format!("wss://127.0.0.1:{port}"), &certificate).await;
}

/// `politely serve --tls-cert --tls-key`: the server terminates TLS itself, from PEM files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_join_a_server_that_terminates_tls() {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let dir = std::env::temp_dir().join(format!("politely-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), certificate.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let tls = politely_server::tls_from_pem(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let server = TestServer::with(politely_server::Config {
        tls: Some(tls),
        ..Default::default()
    })
    .await;
    join_and_chat(
        &format!("wss://{}", server.addr),
        certificate.der().as_ref(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let server = TestServer::start().await;
    let (port, _) = tls_in_front_of(server.addr).await;
    let joined = Session::join(
        &format!("wss://127.0.0.1:{port}"),
        "tls",
        SessionConfig::loopback(),
    )
    .await;
    let Err(error) = joined else {
        panic!("joining must fail");
    };
    let text = error.to_string();
    assert!(text.contains("certificate"), "{text}");
}
