//! A lean WebSocket client for the relay benchmark: a raw TCP socket, the server crate's framing
//! and one write per batch of frames, so the generator spends as little of the shared cores as
//! it can and the server's figures are the server's.

use base64::Engine as _;
use politely_proto::{ClientMessage, ServerMessage};
use politely_server::websocket::{self, FrameError, Message, Opcode, Reader, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client connection with its read and write buffers.
pub(crate) struct Client {
    pub(crate) tcp: TcpStream,
    pub(crate) reader: Reader,
    /// Frames waiting for [`Client::flush`].
    pub(crate) out: Vec<u8>,
    /// The state of the masking-key generator (xorshift).
    mask_state: u32,
}

/// The `host:port` and the path (with its query) of a server URL.
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let url = politely_proto::server_url(url)?;
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    Ok((format!("{host}:{port}"), path))
}

impl Client {
    /// Connects and completes the opening handshake.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<Client> {
        let (authority, path) = split_url(url)?;
        let tcp = TcpStream::connect(&authority).await?;
        tcp.set_nodelay(true)?;
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)?;
        let mut client = Client {
            tcp,
            reader: Reader::new(Role::Client, 1 << 20, 1 << 20, 64 * 1024),
            out: Vec::with_capacity(64 * 1024),
            mask_state: u32::from_le_bytes([nonce[0], nonce[1], nonce[2], nonce[3]]) | 1,
        };
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        client.tcp.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(512);
        let end = loop {
            anyhow::ensure!(head.len() < 8192, "the handshake response is too large");
            if client.tcp.read_buf(&mut head).await? == 0 {
                anyhow::bail!("the server closed the connection during the handshake");
            }
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let response = String::from_utf8_lossy(&head[..end]);
        anyhow::ensure!(
            response.starts_with("HTTP/1.1 101"),
            "the server refused the upgrade: {}",
            response.lines().next().unwrap_or_default()
        );
        let accept = websocket::accept_key(&key);
        anyhow::ensure!(
            response.lines().any(|line| {
                line.split_once(':').is_some_and(|(name, value)| {
                    name.eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == accept
                })
            }),
            "the server's Sec-WebSocket-Accept does not match"
        );
        client.reader.feed(&head[end..]);
        Ok(client)
    }

    /// Connects and joins `room`; returns the client and its id from the welcome.
    pub(crate) async fn join(url: &str, room: &str) -> anyhow::Result<(Client, String)> {
        let mut client = Client::connect(url).await?;
        let join = ClientMessage::Join {
            room: room.into(),
            token: None,
            resume: None,
            sfu: false,
            peers: Vec::new(),
            received: None,
        };
        client.push_text(join.to_json().as_bytes());
        client.flush().await?;
        loop {
            while let Some(message) = client.reader.next_message().map_err(frame_error)? {
                match message {
                    Message::Text(text) => {
                        match ServerMessage::from_json(std::str::from_utf8(text.as_bytes())?)? {
                            ServerMessage::Welcome { id, .. } => {
                                let id = id.into_owned();
                                return Ok((client, id));
                            }
                            ServerMessage::Error { code, message, .. } => {
                                anyhow::bail!("join refused: {code}: {message}")
                            }
                            _ => {}
                        }
                    }
                    Message::Close(code) => anyhow::bail!("the server closed ({code:?})"),
                    _ => {}
                }
            }
            client.read().await?;
        }
    }

    /// The next masking key. Keys need only be unpredictable to the network path, which here
    /// is loopback.
    fn mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_le_bytes()
    }

    /// Queues a text frame.
    pub(crate) fn push_text(&mut self, payload: &[u8]) {
        let mask = self.mask();
        websocket::write_masked_frame(&mut self.out, Opcode::Text, payload, mask);
    }

    /// Queues a pong (the answer to the server's keepalive ping).
    pub(crate) fn push_pong(&mut self) {
        let mask = self.mask();
        websocket::write_masked_frame(&mut self.out, Opcode::Pong, b"", mask);
    }

    /// Writes every queued frame.
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.tcp.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads once into the reader's buffer; end of stream is an error.
    pub(crate) async fn read(&mut self) -> anyhow::Result<()> {
        let n = self.tcp.read_buf(self.reader.buffer()).await?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        self.reader.did_read(n);
        Ok(())
    }

    /// Reads what is already waiting, without blocking; returns whether anything came.
    pub(crate) fn try_read(&mut self) -> anyhow::Result<bool> {
        match self.tcp.try_read_buf(self.reader.buffer()) {
            Ok(0) => anyhow::bail!("the server closed the connection"),
            Ok(n) => {
                self.reader.did_read(n);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a close frame and waits briefly for the server's.
    pub(crate) async fn close(mut self) {
        let mask = self.mask();
        websocket::write_close(&mut self.out, 1000, "", Some(mask));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            self.flush().await?;
            loop {
                while let Some(message) = self.reader.next_message().map_err(frame_error)? {
                    if let Message::Close(_) = message {
                        return Ok(());
                    }
                }
                self.read().await?;
            }
        })
        .await
        .unwrap_or(Ok::<(), anyhow::Error>(()));
    }
}

pub(crate) fn frame_error(error: FrameError) -> anyhow::Error {
    anyhow::anyhow!("the server broke the WebSocket protocol: {error:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        let split = |url| split_url(url).unwrap();
        assert_eq!(
            split("ws://127.0.0.1:81/ws"),
            ("127.0.0.1:81".into(), "/ws".into())
        );
        assert_eq!(split("ws://[::1]:81"), ("[::1]:81".into(), "/ws".into()));
        assert_eq!(
            split("ws://localhost"),
            ("localhost:80".into(), "/ws".into())
        );
    }
}
