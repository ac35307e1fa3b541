//! Room tokens: `base64url(claims) "." base64url(HMAC-SHA256(secret, base64url(claims)))`, where
//! the claims are `{"room":"<name>","exp":<unix seconds>}`.
//!
//! A token admits its holder to one room until it expires. `politely token --room R --ttl 1h`
//! mints one; an application server mints them with [`mint`] for its users.

use crate::config::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

#[derive(Serialize, Deserialize)]
struct Claims<'a> {
    #[serde(borrow)]
    room: std::borrow::Cow<'a, str>,
    exp: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, or signed with another key (`token-invalid`).
    Invalid,
    /// Its expiry has passed (`token-expired`).
    Expired,
    /// It was made for another room (`token-wrong-room`).
    WrongRoom,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Invalid => "the token is malformed or its signature is wrong",
            TokenError::Expired => "the token has expired",
            TokenError::WrongRoom => "the token is for another room",
        })
    }
}

impl std::error::Error for TokenError {}

fn mac(secret: &Secret) -> HmacSha256 {
    // HMAC accepts keys of any length.
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length")
}

/// A token for `room` that expires at `expires` (Unix seconds).
pub fn mint(secret: &Secret, room: &str, expires: u64) -> String {
    let claims = serde_json::to_vec(&Claims {
        room: room.into(),
        exp: expires,
    })
    .expect("claims serialize");
    let payload = B64.encode(claims);
    let mut mac = mac(secret);
    mac.update(payload.as_bytes());
    let signature = B64.encode(mac.finalize().into_bytes());
    format!("{payload}.{signature}")
}

/// Checks that `token` is signed with `secret`, unexpired at `now` (Unix seconds) and made for
/// `room`. The signature is checked first, in constant time, so a forged token learns nothing
/// about the claims.
pub fn verify(secret: &Secret, token: &str, room: &str, now: u64) -> Result<(), TokenError> {
    let (payload, signature) = token.split_once('.').ok_or(TokenError::Invalid)?;
    let signature = B64.decode(signature).map_err(|_| TokenError::Invalid)?;
    let mut mac = mac(secret);
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::Invalid)?;
    let claims = B64.decode(payload).map_err(|_| TokenError::Invalid)?;
    let claims: Claims<'_> = serde_json::from_slice(&claims).map_err(|_| TokenError::Invalid)?;
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if claims.room != room {
        return Err(TokenError::WrongRoom);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_admits_its_room_until_it_expires() {
        let secret = Secret::new("s3cret");
        let token = mint(&secret, "lobby", 1_000);
        assert_eq!(verify(&secret, &token, "lobby", 999), Ok(()));
        assert_eq!(
            verify(&secret, &token, "lobby", 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&secret, &token, "other", 10),
            Err(TokenError::WrongRoom)
        );
    }

    #[test]
    fn forged_and_malformed_tokens_are_invalid() {
        let secret = Secret::new("s3cret");
        let token = mint(&secret, "lobby", 1_000);
        let other_key = mint(&Secret::new("guess"), "lobby", 1_000);
        // The claims of another room, with this room's signature.
        let (_, signature) = token.split_once('.').unwrap();
        let (payload, _) = mint(&secret, "vip", 1_000)
            .split_once('.')
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
            .unwrap();
        let spliced = format!("{payload}.{signature}");
        for bad in [
            other_key.as_str(),
            &spliced,
            "",
            "abc",
            "a.b",
            "..",
            &token[1..],
        ] {
            assert_eq!(
                verify(&secret, bad, "lobby", 10),
                Err(TokenError::Invalid),
                "{bad}"
            );
        }
    }
}
