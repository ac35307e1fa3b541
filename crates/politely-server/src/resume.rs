//! Resume tokens: `base64url(claims) "." base64url(HMAC-SHA256(key, claims))`, the claims a
//! JSON object `{"room","id","iat","n"}` (and `"sfu"`, `"user"` when they apply). The server keeps
//! the tag of the last token it gave each peer, so an older token of a peer still in the room
//! is refused. A server that did not issue the token (one restarted since, with the same
//! [`Config::resume_secret`](crate::Config::resume_secret)) checks it from the key alone.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use politely_proto::User;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A tag: the HMAC of a token's claims.
pub(crate) type Tag = [u8; 32];

/// What a resume token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) room: String,
    pub(crate) id: String,
    /// When it was issued, in milliseconds since the Unix epoch.
    pub(crate) iat: u64,
    /// Random, so two tokens issued in the same millisecond differ.
    pub(crate) n: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) sfu: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<User>,
}

fn tag(key: &[u8], claims: &[u8]) -> Tag {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"politely-resume\0");
    mac.update(claims);
    mac.finalize().into_bytes().into()
}

/// The token for `claims`, and its tag.
pub(crate) fn issue(key: &[u8], claims: &Claims) -> (String, Tag) {
    let json = serde_json::to_vec(claims).expect("claims serialize");
    let tag = tag(key, &json);
    (format!("{}.{}", B64.encode(&json), B64.encode(tag)), tag)
}

/// The claims of a token signed with `key`, and its tag; `None` for anything else.
pub(crate) fn verify(key: &[u8], token: &str) -> Option<(Claims, Tag)> {
    let (claims, signature) = token.split_once('.')?;
    let json = B64.decode(claims).ok()?;
    let signature = B64.decode(signature).ok()?;
    let expected = tag(key, &json);
    if !constant_time_eq(&expected, &signature) {
        return None;
    }
    Some((serde_json::from_slice(&json).ok()?, expected))
}

/// Compares without an early exit, so a guessed tag learns nothing from timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            room: "lobby".into(),
            id: "01JD3Q6W6ZK3Y8N7V5T2R1P0QX".into(),
            iat: 1_700_000_000_000,
            n: 7,
            sfu: false,
            user: None,
        }
    }

    #[test]
    fn a_token_verifies_with_its_key_only() {
        let (token, tag) = issue(b"key", &claims());
        assert_eq!(verify(b"key", &token), Some((claims(), tag)));
        assert_eq!(verify(b"other key", &token), None);
    }

    #[test]
    fn a_changed_claim_or_tag_is_refused() {
        let (token, _) = issue(b"key", &claims());
        let (_, signature) = token.split_once('.').unwrap();
        let mut other = claims();
        other.id = "01JD3Q6W6ZK3Y8N7V5T2R1P0QY".into();
        let forged = format!(
            "{}.{signature}",
            B64.encode(serde_json::to_vec(&other).unwrap())
        );
        assert_eq!(verify(b"key", &forged), None);
        let mut bad = token.clone();
        bad.pop();
        assert_eq!(verify(b"key", &bad), None);
        assert_eq!(verify(b"key", "no-dot"), None);
        assert_eq!(verify(b"key", "a.b.c"), None);
    }

    #[test]
    fn the_sfu_role_and_the_user_are_carried() {
        let mut c = claims();
        c.sfu = true;
        c.user = Some(User {
            sub: "alice".into(),
            name: Some("Alice".into()),
            metadata: None,
        });
        let (token, _) = issue(b"key", &c);
        assert_eq!(verify(b"key", &token).map(|(c, _)| c), Some(c));
    }
}
