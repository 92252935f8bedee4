//! Pointing an `http::Request` at one endpoint, shared by the HTTP adapters.

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Uri};

/// `uri` pointed at `authority`, keeping its scheme (default `http`), path
/// and query. Taken by value: its parts move into the new URI rather than
/// being cloned (reference counts shared by every request to the same
/// host) and dropped with the old one.
pub(crate) fn readdress(uri: Uri, authority: &Authority) -> Uri {
    let mut parts = uri.into_parts();
    if parts.scheme.is_none() {
        parts.scheme = Some(Scheme::HTTP);
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    parts.authority = Some(authority.clone());
    // With a scheme, an authority and a path, `from_parts` cannot fail.
    Uri::from_parts(parts).unwrap_or_default()
}

/// Points `req` at `authority`; the host the caller named, if any, stays in
/// the `Host` header.
pub(crate) fn address<B>(req: &mut Request<B>, authority: &Authority) {
    if let Some(host) = req.uri().authority() {
        if !req.headers().contains_key(HOST) {
            if let Ok(value) = HeaderValue::from_str(host.as_str()) {
                req.headers_mut().insert(HOST, value);
            }
        }
    }
    let uri = std::mem::take(req.uri_mut());
    *req.uri_mut() = readdress(uri, authority);
}

/// The authority of a socket address.
pub(crate) fn authority_of(addr: std::net::SocketAddr) -> Authority {
    // A socket address always prints as a valid authority (`1.2.3.4:80`,
    // `[::1]:80`); the fallback is never taken.
    Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("0.0.0.0:0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_readdressed_and_keep_their_host() {
        let to: Authority = "127.0.0.1:8081".parse().unwrap();
        let mut req = Request::get("http://inventory/items?x=1").body(()).unwrap();
        address(&mut req, &to);
        assert_eq!(req.uri(), "http://127.0.0.1:8081/items?x=1");
        assert_eq!(req.headers()[HOST], "inventory");

        let mut req = Request::post("/orders").header(HOST, "shop").body(()).unwrap();
        address(&mut req, &to);
        assert_eq!(req.uri(), "http://127.0.0.1:8081/orders");
        assert_eq!(req.headers()[HOST], "shop");

        let mut req = Request::get("https://secure.example/").body(()).unwrap();
        address(&mut req, &to);
        assert_eq!(req.uri(), "https://127.0.0.1:8081/");
    }

    #[test]
    fn socket_addresses_are_authorities() {
        assert_eq!(authority_of(([10, 0, 0, 1], 8080).into()).as_str(), "10.0.0.1:8080");
        let v6: std::net::SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(authority_of(v6).as_str(), "[::1]:9000");
    }
}
