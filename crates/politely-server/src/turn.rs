//! TURN credentials for clients, in the REST scheme that coturn implements with
//! `use-auth-secret` (draft-uberti-behave-turn-rest): the username is the credential's expiry
//! (Unix seconds) and the client's id, `"<expiry>:<id>"`, and the password is
//! `base64(HMAC-SHA1(secret, username))`. The TURN server, configured with the same secret,
//! checks the signature and refuses a username whose expiry has passed; nothing is stored.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use politely_proto::IceServer;
use sha1::Sha1;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// TURN servers handed to every client in `welcome` (and again on `ice-servers`), with
/// short-lived credentials made for it.
#[derive(Clone)]
pub struct Turn {
    /// `turn:` (and `stun:`) URLs of the servers that share `secret`, e.g.
    /// `turn:turn.example.org:3478?transport=udp`.
    pub urls: Vec<String>,
    /// The TURN server's `static-auth-secret`.
    pub secret: String,
    /// How long a credential stays valid. Clients ask for new ones at half of it.
    pub ttl: Duration,
}

impl Turn {
    /// The ICE servers for client `id`, with credentials valid from `now` for the TTL.
    pub fn ice_servers(&self, id: &str, now: SystemTime) -> Vec<IceServer> {
        let expiry = now.duration_since(UNIX_EPOCH).unwrap_or_default() + self.ttl;
        let username = format!("{}:{id}", expiry.as_secs());
        let mut mac = Hmac::<Sha1>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(username.as_bytes());
        let credential =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        vec![IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(credential),
        }]
    }
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("urls", &self.urls)
            .field("secret", &"..")
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_rest_scheme() {
        let turn = Turn {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: "north".into(),
            ttl: Duration::from_secs(600),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let servers = turn.ice_servers("01JB", now);
        assert_eq!(servers[0].urls, turn.urls);
        assert_eq!(servers[0].username.as_deref(), Some("1700000600:01JB"));
        // `printf '1700000600:01JB' | openssl dgst -sha1 -hmac north -binary | base64`
        assert_eq!(
            servers[0].credential.as_deref(),
            Some("WLyYF9ZixHVTTjbSOyQd5jB82po=")
        );
    }
}
