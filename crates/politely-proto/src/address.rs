//! The signaling server's URL as people write it.

use std::fmt;
pub use url::Url;

/// Why a server URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

/// The WebSocket URL of a politely server, from what a user wrote: `ws://host:port` and
/// `ws://host:port/ws` name the same server (a URL with no path, or `/`, gets the
/// protocol's [`WS_PATH`](crate::WS_PATH)); any other path is kept, for a server behind a
/// proxy that routes by path. `http://` and `https://` are taken as `ws://` and `wss://`.
pub fn server_url(input: &str) -> Result<Url, UrlError> {
    let mut url =
        Url::parse(input.trim()).map_err(|e| UrlError(format!("{input:?} is not a URL: {e}")))?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => {
            return Err(UrlError(format!(
                "{input:?}: a politely server is reached over ws:// or wss://, not {other}://"
            )));
        }
    };
    if url.scheme() != scheme {
        url.set_scheme(scheme)
            .map_err(|()| UrlError(format!("{input:?}: cannot use {scheme}://")))?;
    }
    if url.host().is_none() {
        return Err(UrlError(format!("{input:?} names no host")));
    }
    if matches!(url.path(), "" | "/") {
        url.set_path(crate::WS_PATH);
    }
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::server_url;

    fn url(s: &str) -> String {
        server_url(s).unwrap().to_string()
    }

    #[test]
    fn both_forms_name_the_same_server() {
        assert_eq!(url("ws://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
        assert_eq!(url("ws://127.0.0.1:8080/"), "ws://127.0.0.1:8080/ws");
        assert_eq!(url("ws://127.0.0.1:8080/ws"), "ws://127.0.0.1:8080/ws");
        assert_eq!(url(" wss://example.org "), "wss://example.org/ws");
        assert_eq!(url("ws://[::1]:9"), "ws://[::1]:9/ws");
        assert_eq!(url("http://localhost:8080"), "ws://localhost:8080/ws");
        assert_eq!(url("https://example.org/ws"), "wss://example.org/ws");
        // A path of the deployment's own is kept, and so is a query.
        assert_eq!(
            url("wss://example.org/signal/ws?x=1"),
            "wss://example.org/signal/ws?x=1"
        );
    }

    #[test]
    fn what_is_not_a_server_url_is_refused() {
        assert!(server_url("127.0.0.1:8080").is_err());
        assert!(server_url("ftp://example.org").is_err());
        assert!(server_url("ws://").is_err());
        assert!(server_url("").is_err());
    }
}
