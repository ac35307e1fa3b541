//! The WebSocket opening handshake, for both ways a connection reaches the server: read off the
//! TCP stream by [`upgrade_tcp`] when a request for the WebSocket path arrives (the fast path,
//! which keeps the raw socket), or answered inside the router for an application that mounts
//! [`crate::app`] itself.

use crate::connection::{self, ClientInfo};
use crate::hub::{Admission, Hub};
use crate::websocket;
use base64::Engine as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request head larger than this is refused (431), on either path.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// The most header lines a request may have, on either path.
pub(crate) const MAX_HEADERS: usize = 48;

/// What the server answers a valid upgrade request with.
pub(crate) struct Accept {
    pub(crate) key: String,
    /// The client offered politely's subprotocol: it is selected.
    pub(crate) subprotocol: bool,
    /// The request's `Origin`, if any.
    pub(crate) origin: Option<String>,
}

/// A refused upgrade: the HTTP status and a one-line body.
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) body: &'static str,
}

impl Refusal {
    fn new(status: u16, body: &'static str) -> Self {
        Refusal { status, body }
    }
}

/// A header's value as text: visible ASCII, spaces and tabs only (what `http` accepts as a
/// string), so both paths read the same values.
pub(crate) fn header_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Checks an upgrade request's headers, the same way on both paths: `header` gives every value
/// of a header (one per line it was sent on; a value that is not text counts as empty), by
/// lower-case name.
pub(crate) fn check<'h>(
    hub: &Hub,
    header: impl Fn(&str) -> Vec<&'h str>,
) -> Result<Accept, Refusal> {
    // List-valued headers: a repeated header's values count together, as HTTP reads them.
    let has_token = |name: &str, token: &str| {
        header(name).iter().any(|value| {
            value
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    };
    // Single-valued headers: sent once, or the request is malformed.
    let single = |name: &str| -> Result<Option<&'h str>, Refusal> {
        match header(name)[..] {
            [] => Ok(None),
            [value] => Ok(Some(value.trim())),
            _ => Err(Refusal::new(
                400,
                "a header that must appear once is repeated\n",
            )),
        }
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Refusal::new(400, "a WebSocket upgrade is expected here\n"));
    }
    if single("sec-websocket-version")? != Some("13") {
        return Err(Refusal::new(426, "WebSocket version 13 is required\n"));
    }
    let Some(key) = single("sec-websocket-key")? else {
        return Err(Refusal::new(400, "Sec-WebSocket-Key is missing\n"));
    };
    // RFC 6455 §4.1: the key is 16 bytes, base64-encoded.
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map(|bytes| bytes.len()) != Ok(16) {
        return Err(Refusal::new(
            400,
            "Sec-WebSocket-Key is not 16 bytes of base64\n",
        ));
    }
    let origin = single("origin")?;
    if let (Some(allowed), Some(origin)) = (&hub.config.allowed_origins, origin)
        && !allowed.iter().any(|a| a == origin)
    {
        hub.metrics.origin_refused.fetch_add(1, Relaxed);
        return Err(Refusal::new(403, "origin not allowed\n"));
    }
    if hub.shutdown.is_cancelled() {
        return Err(Refusal::new(503, "shutting down\n"));
    }
    Ok(Accept {
        key: websocket::accept_key(key),
        subprotocol: has_token("sec-websocket-protocol", politely_proto::SUBPROTOCOL),
        origin: origin.map(str::to_owned),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        400 => "Bad Request",
        403 => "Forbidden",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn response(result: &Result<Accept, Refusal>) -> String {
    match result {
        Ok(accept) => {
            let protocol = if accept.subprotocol {
                format!(
                    "Sec-WebSocket-Protocol: {}\r\n",
                    politely_proto::SUBPROTOCOL
                )
            } else {
                String::new()
            };
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n{protocol}\r\n",
                accept.key
            )
        }
        Err(refusal) => {
            let version = if refusal.status == 426 {
                "Sec-WebSocket-Version: 13\r\n"
            } else {
                ""
            };
            format!(
                "HTTP/1.1 {} {}\r\n{version}Content-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{}",
                refusal.status,
                reason(refusal.status),
                refusal.body.len(),
                refusal.body
            )
        }
    }
}

/// Whether a connection's first bytes are a request for the WebSocket path.
pub(crate) fn is_websocket_request(first: &[u8]) -> bool {
    let path = politely_proto::WS_PATH.as_bytes();
    first.len() > 4 + path.len()
        && first.starts_with(b"GET ")
        && first[4..].starts_with(path)
        && matches!(first[4 + path.len()], b' ' | b'?')
}

/// Reads an upgrade request off `tcp`, answers it, and runs the connection on the raw socket.
pub(crate) async fn upgrade_tcp(hub: Arc<Hub>, tcp: TcpStream) {
    // The request's buffers are gone before the connection starts: an idle connection holds
    // only what it needs.
    if let Some((tcp, early, origin)) = handshake(&hub, tcp).await {
        let client = ClientInfo {
            address: tcp.peer_addr().ok(),
            origin,
        };
        connection::run(hub, tcp, early, client).await;
    }
}

/// Answers the upgrade request on `tcp`; returns the socket, any bytes the client sent after
/// its request and its `Origin`, or `None` if it was refused.
async fn handshake(hub: &Hub, mut tcp: TcpStream) -> Option<(TcpStream, Vec<u8>, Option<String>)> {
    let mut head = Vec::with_capacity(1024);
    let read_head = async {
        loop {
            if head.len() >= MAX_HEAD {
                return None;
            }
            head.reserve(1024);
            match tcp.read_buf(&mut head).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(end + 4);
            }
        }
    };
    let end = match tokio::time::timeout(hub.config.request_timeout, read_head).await {
        Ok(Some(end)) => end,
        Ok(None) if head.len() >= MAX_HEAD => {
            let refusal = Err(Refusal::new(431, "the request head is too large\n"));
            let _ = tcp.write_all(response(&refusal).as_bytes()).await;
            return None;
        }
        _ => return None,
    };
    let result = answer(hub, &head[..end]);
    let reply = response(&result);
    if tcp.write_all(reply.as_bytes()).await.is_err() {
        return None;
    }
    let accept = result.ok()?;
    // Anything the client sent after its request is its first frames.
    Some((tcp, head.split_off(end), accept.origin))
}

/// Parses a request head (up to its blank line) and checks it as an upgrade request.
pub(crate) fn answer(hub: &Hub, head: &[u8]) -> Result<Accept, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_))
            if request.version == Some(1) && request.method == Some("GET") =>
        {
            let headers = &*request.headers;
            check(hub, |name| {
                headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| header_text(h.value).unwrap_or(""))
                    .collect()
            })
        }
        Ok(httparse::Status::Complete(_)) => Err(Refusal::new(
            400,
            "a WebSocket upgrade is an HTTP/1.1 GET\n",
        )),
        _ => Err(Refusal::new(400, "a malformed request\n")),
    }
}

/// The fallback for the router: answers the upgrade through hyper and runs the connection on
/// the upgraded stream once hyper hands it over.
pub(crate) fn upgrade_in_router(
    hub: Arc<Hub>,
    mut request: axum::extract::Request,
    admission: Option<Arc<Admission>>,
) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let headers = request.headers();
    let result = if request.version() != axum::http::Version::HTTP_11 {
        Err(Refusal::new(400, "a WebSocket upgrade needs HTTP/1.1\n"))
    } else {
        check(&hub, |name| {
            headers
                .get_all(name)
                .iter()
                .map(|value| header_text(value.as_bytes()).unwrap_or(""))
                .collect()
        })
    };
    let accept = match result {
        Ok(accept) => accept,
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
            return (status, refusal.body).into_response();
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let task_hub = hub.clone();
    let client = ClientInfo {
        address: admission.as_ref().map(|a| a.peer),
        origin: accept.origin.clone(),
    };
    hub.tasks.spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let stream = hyper_util::rt::TokioIo::new(upgraded);
            connection::run(task_hub, stream, Vec::new(), client).await;
        }
        // The TCP connection's place in the limits goes with the upgraded stream.
        drop(admission);
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(key) = HeaderValue::from_str(&accept.key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, key);
    }
    if accept.subprotocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(politely_proto::SUBPROTOCOL),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_for_the_websocket_path_take_the_fast_path() {
        assert!(is_websocket_request(b"GET /ws HTTP/1.1\r\n"));
        assert!(is_websocket_request(b"GET /ws?room=x HTTP/1.1"));
        assert!(!is_websocket_request(b"GET /wsx HTTP/1.1"));
        assert!(!is_websocket_request(b"GET / HTTP/1.1"));
        assert!(!is_websocket_request(b"POST /ws HTTP/1.1"));
        assert!(!is_websocket_request(b"GET /ws"));
    }
}
