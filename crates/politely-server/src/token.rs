//! Room tokens: JSON Web Tokens (RFC 7519) signed with HS256, so an application's backend mints
//! them with any stock JWT library. The claims:
//!
//! | claim | | |
//! |---|---|---|
//! | `sub` | required | the user's identity, relayed to the room's other peers |
//! | `room` | required | the one room the token admits to |
//! | `exp` | required | expiry, Unix seconds: valid while the time is before it |
//! | `nbf` | optional | not before, Unix seconds |
//! | `name` | optional | a display name, relayed with `sub` |
//! | `metadata` | optional | any JSON, relayed with `sub` |
//!
//! The header must say `"alg":"HS256"`; any other algorithm (`none` included) is refused. A
//! server may accept several secrets at once, so keys can be rotated: tokens signed with any of
//! them are valid.
//!
//! The format of earlier releases (`base64url({"room","exp"}) "." base64url(HMAC)`, two parts,
//! no identity) is still accepted in this release and will not be in the next.
//!
//! `politely token --room R --sub alice --ttl 1h` mints one; so does [`mint`].

use crate::config::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

pub use politely_proto::User;

type HmacSha256 = Hmac<Sha256>;

/// The longest token accepted, in bytes: its claims are relayed to every peer of the room.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's identity.
    pub sub: String,
    /// The room it admits to.
    pub room: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Anything else the application wants the other peers to know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// The holder may join as the room's SFU.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sfu: bool,
}

impl Claims {
    /// The claims for `sub` in `room`, expiring at `exp`.
    pub fn new(sub: impl Into<String>, room: impl Into<String>, exp: u64) -> Self {
        Claims {
            sub: sub.into(),
            room: room.into(),
            exp,
            nbf: None,
            name: None,
            metadata: None,
            sfu: false,
        }
    }

    /// Who the claims say the holder is, as the other peers see it.
    pub fn user(&self) -> User {
        User {
            sub: self.sub.clone(),
            name: self.name.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
}

/// The claims of the earlier two-part format.
#[derive(Deserialize)]
struct LegacyClaims {
    room: String,
    exp: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, too long, signed with another key or another algorithm, or not valid yet
    /// (`token-invalid`).
    Invalid,
    /// Its expiry has passed (`token-expired`).
    Expired,
    /// It was made for another room (`token-wrong-room`).
    WrongRoom,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Invalid => {
                "the token is malformed, not valid yet, or its signature is wrong"
            }
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

/// A JWT carrying `claims`, signed with `secret` (HS256).
pub fn mint(secret: &Secret, claims: &Claims) -> String {
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signed = format!("{header}.{payload}");
    let mut mac = mac(secret);
    mac.update(signed.as_bytes());
    let signature = B64.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

/// Whether a token that [`verify`] accepted grants the SFU role (its claims say `"sfu": true`).
pub fn grants_sfu(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    B64.decode(payload)
        .ok()
        .and_then(|claims| serde_json::from_slice::<Claims>(&claims).ok())
        .is_some_and(|claims| claims.sfu)
}

/// Whether `signature` (base64url) is the HMAC of `signed` under one of `secrets`. Each
/// comparison is in constant time.
fn signed_by(secrets: &[Secret], signed: &str, signature: &str) -> bool {
    let Ok(signature) = B64.decode(signature) else {
        return false;
    };
    secrets.iter().any(|secret| {
        let mut mac = mac(secret);
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature).is_ok()
    })
}

/// Checks that `token` is signed with one of `secrets`, valid at `now` (Unix seconds) and made
/// for `room`; returns who it admits (`None` for a token of the earlier format, which carries
/// no identity). The signature is checked first, in constant time, so a forged token learns
/// nothing about the claims.
pub fn verify(
    secrets: &[Secret],
    token: &str,
    room: &str,
    now: u64,
) -> Result<Option<User>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Invalid);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let (exp, token_room, user) = match parts[..] {
        [header, payload, signature] => {
            let signed = &token[..header.len() + 1 + payload.len()];
            if !signed_by(secrets, signed, signature) {
                return Err(TokenError::Invalid);
            }
            let header = B64.decode(header).map_err(|_| TokenError::Invalid)?;
            let header: Header<'_> =
                serde_json::from_slice(&header).map_err(|_| TokenError::Invalid)?;
            if header.alg != "HS256" {
                return Err(TokenError::Invalid);
            }
            let claims = B64.decode(payload).map_err(|_| TokenError::Invalid)?;
            let claims: Claims =
                serde_json::from_slice(&claims).map_err(|_| TokenError::Invalid)?;
            if claims.nbf.is_some_and(|nbf| now < nbf) {
                return Err(TokenError::Invalid);
            }
            let user = claims.user();
            (claims.exp, claims.room, Some(user))
        }
        [payload, signature] => {
            if !signed_by(secrets, payload, signature) {
                return Err(TokenError::Invalid);
            }
            let claims = B64.decode(payload).map_err(|_| TokenError::Invalid)?;
            let claims: LegacyClaims =
                serde_json::from_slice(&claims).map_err(|_| TokenError::Invalid)?;
            (claims.exp, claims.room, None)
        }
        _ => return Err(TokenError::Invalid),
    };
    if now >= exp {
        return Err(TokenError::Expired);
    }
    if token_room != room {
        return Err(TokenError::WrongRoom);
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(room: &str, exp: u64) -> Claims {
        Claims::new("alice", room, exp)
    }

    #[test]
    fn a_minted_token_admits_its_room_until_it_expires_and_names_its_user() {
        let secret = Secret::new("s3cret");
        let mut with_name = claims("lobby", 1_000);
        with_name.name = Some("Alice".into());
        with_name.metadata = Some(serde_json::json!({"avatar": 7}));
        let token = mint(&secret, &with_name);
        let user = verify(std::slice::from_ref(&secret), &token, "lobby", 999)
            .unwrap()
            .unwrap();
        assert_eq!(
            (user.sub.as_str(), user.name.as_deref()),
            ("alice", Some("Alice"))
        );
        assert_eq!(user.metadata, Some(serde_json::json!({"avatar": 7})));
        let secrets = [secret];
        assert_eq!(
            verify(&secrets, &token, "lobby", 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&secrets, &token, "other", 10),
            Err(TokenError::WrongRoom)
        );
    }

    #[test]
    fn a_token_is_not_valid_before_its_nbf() {
        let secret = Secret::new("s3cret");
        let mut early = claims("lobby", 1_000);
        early.nbf = Some(500);
        let token = mint(&secret, &early);
        let secrets = [secret];
        assert_eq!(
            verify(&secrets, &token, "lobby", 499),
            Err(TokenError::Invalid)
        );
        assert!(verify(&secrets, &token, "lobby", 500).is_ok());
    }

    #[test]
    fn any_of_several_secrets_verifies_so_keys_can_rotate() {
        let old = Secret::new("old key");
        let new = Secret::new("new key");
        let secrets = [new.clone(), old.clone()];
        for secret in [&old, &new] {
            let token = mint(secret, &claims("lobby", 1_000));
            assert!(verify(&secrets, &token, "lobby", 1).is_ok());
        }
        let retired = mint(&Secret::new("retired"), &claims("lobby", 1_000));
        assert_eq!(
            verify(&secrets, &retired, "lobby", 1),
            Err(TokenError::Invalid)
        );
    }

    /// A token of the earlier format, built as that release did.
    fn legacy(secret: &Secret, room: &str, exp: u64) -> String {
        let payload = B64.encode(format!(r#"{{"room":"{room}","exp":{exp}}}"#));
        let mut mac = mac(secret);
        mac.update(payload.as_bytes());
        format!("{payload}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn tokens_of_the_earlier_format_still_admit_without_an_identity() {
        let secret = Secret::new("s3cret");
        let token = legacy(&secret, "lobby", 1_000);
        let secrets = [secret];
        assert_eq!(verify(&secrets, &token, "lobby", 999), Ok(None));
        assert_eq!(
            verify(&secrets, &token, "lobby", 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&secrets, &token, "vip", 1),
            Err(TokenError::WrongRoom)
        );
    }

    #[test]
    fn forged_and_malformed_tokens_are_invalid() {
        let secret = Secret::new("s3cret");
        let token = mint(&secret, &claims("lobby", 1_000));
        let other_key = mint(&Secret::new("guess"), &claims("lobby", 1_000));
        // The claims of another room, with this token's signature.
        let signature = token.rsplit_once('.').unwrap().1;
        let vip = mint(&secret, &claims("vip", 1_000));
        let spliced = format!("{}.{signature}", vip.rsplit_once('.').unwrap().0);
        // An unsigned token (`alg: none`), and one signed right but naming another algorithm.
        let payload = B64.encode(serde_json::to_vec(&claims("lobby", 1_000)).unwrap());
        let none = format!("{}.{payload}.", B64.encode(br#"{"alg":"none"}"#));
        let other_alg = {
            let signed = format!("{}.{payload}", B64.encode(br#"{"alg":"HS512"}"#));
            let mut mac = mac(&secret);
            mac.update(signed.as_bytes());
            format!("{signed}.{}", B64.encode(mac.finalize().into_bytes()))
        };
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let secrets = [secret];
        for bad in [
            other_key.as_str(),
            &spliced,
            &none,
            &other_alg,
            &long,
            "",
            "abc",
            "a.b",
            "a.b.c",
            "..",
            "a.b.c.d",
            &token[1..],
        ] {
            assert_eq!(
                verify(&secrets, bad, "lobby", 10),
                Err(TokenError::Invalid),
                "{bad}"
            );
        }
        // No secret at all verifies nothing.
        assert_eq!(verify(&[], &token, "lobby", 10), Err(TokenError::Invalid));
    }
}
