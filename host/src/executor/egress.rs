//! Where a step body's HTTP may go, checked by address, not only by name.
//!
//! A tenant's allowlist names hosts (`api.example.com`, `*.corp.net`, `*`),
//! but a name can resolve to anything: the cloud's metadata service
//! (169.254.169.254), a database on the private network, or this host's own
//! API on loopback. So the host resolves the name itself, checks every
//! address it gets, and connects to an address it checked (DNS cannot swap
//! one in between). Internal addresses (loopback, private, link-local,
//! CGNAT, unique-local, ...) are reached only when the operator lists that
//! exact address (`10.0.0.7`, `127.0.0.1:8080`); `*` and names never admit
//! them. The host's own listening port is never reachable from a step, even
//! when listed. In `dev`, the default tenant may reach loopback (users call
//! their local services), still not the host's own port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// How long resolving a name and connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the host itself exposes, which steps must not reach.
#[derive(Debug, Default)]
pub struct OwnAddress {
    listening: OnceLock<SocketAddr>,
}

impl OwnAddress {
    /// Records the address the API listens on (once the socket is bound).
    pub fn set(&self, address: SocketAddr) {
        let _ = self.listening.set(address);
    }

    /// Whether `target` (on a machine whose own address it is when
    /// `local_machine`) is the host's API.
    fn is_host_api(&self, target: SocketAddr, local_machine: bool) -> bool {
        let Some(own) = self.listening.get() else {
            return false;
        };
        if target.port() != own.port() {
            return false;
        }
        target.ip() == own.ip()
            || (own.ip().is_unspecified() && (local_machine || is_internal(target.ip())))
    }
}

/// One tenant's egress rules.
#[derive(Debug, Clone)]
pub struct Egress {
    /// Hosts the tenant's step bodies may call (its `http_allow`; for the
    /// default tenant, `--allow-http` too).
    pub allow: Arc<Vec<String>>,
    /// Whether loopback addresses are reachable without being listed (dev
    /// mode's default tenant).
    pub loopback: bool,
    /// Where the host's API listens: never reachable, listed or not.
    pub own: Arc<OwnAddress>,
}

/// Whether `ip` is not a public Internet address: loopback, private,
/// link-local (cloud metadata), shared (CGNAT), unspecified, multicast,
/// reserved, or IPv6 unique-local; IPv4 inside IPv6 is judged as IPv4.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., hi, lo] = segments;
                return is_internal_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local
                || (segments[0] & 0xffc0) == 0xfe80 // link local
                || (segments[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// Whether the allowlist names `target` exactly: `ip` or `ip:port`.
fn listed_exactly(allow: &[String], target: SocketAddr) -> bool {
    allow.iter().any(|pattern| {
        if let Ok(address) = pattern.parse::<SocketAddr>() {
            return address == target;
        }
        pattern
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip == target.ip())
    })
}

impl Egress {
    /// Why `target` may not be reached, if it may not.
    fn refusal(&self, host: &str, target: SocketAddr, local_machine: bool) -> Option<String> {
        if self.own.is_host_api(target, local_machine) {
            return Some(format!(
                "stepwise: {host} ({target}) is this host's own API, which step bodies may never call; call your own services instead"
            ));
        }
        let internal = is_internal(target.ip()) || local_machine;
        if !internal
            || listed_exactly(&self.allow, target)
            || (self.loopback && target.ip().is_loopback())
        {
            return None;
        }
        Some(format!(
            "stepwise: {host} resolves to {target}, an internal address (loopback, private, link-local or this machine), which `*` and host names never admit; an operator must list that exact address (stepwise tenant allow TENANT {target})"
        ))
    }

    /// Resolves `host` and connects to one of its addresses, if every
    /// address it has may be reached.
    pub async fn connect(&self, host: &str, port: u16) -> Result<tokio::net::TcpStream, Error> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((bare, port)))
                .await
                .map_err(|_| Error::DnsTimeout)?
                .map_err(|_| Error::DnsError {
                    rcode: Some(format!("could not resolve {bare}")),
                    info_code: None,
                })?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(Error::DestinationNotFound);
        }
        // A name with one internal address among public ones is refused
        // whole: it is either a mistake or an attempt.
        if let Some(reason) = addresses.iter().find_map(|a| self.refusal(host, *a, false)) {
            return Err(Error::InternalError(Some(reason)));
        }
        let mut last = None;
        for address in addresses {
            let stream = match tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::TcpStream::connect(address),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    last = Some(Error::Connect(error));
                    continue;
                }
                Err(_) => {
                    last = Some(Error::ConnectionTimeout);
                    continue;
                }
            };
            // An address of this machine's own (a public interface of
            // it): the kernel answers from the same address.
            let local_machine = stream
                .local_addr()
                .ok()
                .zip(stream.peer_addr().ok())
                .is_some_and(|(local, peer)| local.ip() == peer.ip());
            if local_machine && let Some(reason) = self.refusal(host, address, true) {
                return Err(Error::InternalError(Some(reason)));
            }
            return Ok(stream);
        }
        Err(last.unwrap_or(Error::DestinationUnavailable))
    }
}

/// The future the WASI HTTP machinery polls to drive a connection.
pub type ConnectionFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl Egress {
    /// Sends `request` over a connection to an address [`Egress::connect`]
    /// checked: wasmtime's `default_send_request`, with the connection made
    /// here instead of by name.
    pub async fn send(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, ConnectionFuture), Error> {
        use http_body_util::BodyExt;
        let uri = request.uri().clone();
        let use_tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
        let port = uri.port_u16().unwrap_or(if use_tls { 443 } else { 80 });
        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(CONNECT_TIMEOUT);
        let first_byte_timeout = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(Duration::from_secs(600));
        let tcp = self.connect(&host, port).await?;
        let stream: Box<dyn Stream> = if use_tls {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = match bare.parse::<IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::from(ip),
                Err(_) => rustls::pki_types::ServerName::try_from(bare.to_string())?,
            };
            Box::new(connector.connect(name, tcp).await.map_err(Error::Tls)?)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
        // The request line carries the path only (the authority is for
        // proxies).
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let mut connection = Box::pin(connection);
        let send = tokio::time::timeout(first_byte_timeout, sender.send_request(request));
        let mut send = std::pin::pin!(send);
        // Drive the connection while waiting for the response head.
        let mut finished = false;
        let response = tokio::select! {
            response = &mut send => response,
            done = &mut connection => {
                done.map_err(Error::from)?;
                finished = true;
                send.await
            }
        };
        let response = response
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)?;
        let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
        let io: ConnectionFuture = if finished {
            Box::new(async { Ok(()) })
        } else {
            Box::new(async move { connection.await.map_err(Error::from) })
        };
        Ok((response, io))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(allow: &[&str], loopback: bool) -> Egress {
        let own = Arc::new(OwnAddress::default());
        own.set("0.0.0.0:8288".parse().unwrap());
        Egress {
            allow: Arc::new(allow.iter().map(|s| s.to_string()).collect()),
            loopback,
            own,
        }
    }

    fn at(address: &str) -> SocketAddr {
        address.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_recognised_in_every_form() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn star_and_names_never_admit_internal_addresses_but_exact_listings_do() {
        let open = egress(&["*"], false);
        assert!(open.refusal("x", at("93.184.216.34:443"), false).is_none());
        let metadata = open
            .refusal("metadata", at("169.254.169.254:80"), false)
            .unwrap();
        assert!(metadata.contains("internal address"), "{metadata}");
        assert!(open.refusal("x", at("127.0.0.1:9000"), false).is_some());
        // A public address that turns out to be this machine.
        assert!(open.refusal("x", at("93.184.216.34:9000"), true).is_some());

        let listed = egress(&["127.0.0.1:9000", "10.0.0.7"], false);
        assert!(listed.refusal("x", at("127.0.0.1:9000"), false).is_none());
        assert!(listed.refusal("x", at("127.0.0.1:9001"), false).is_some());
        assert!(listed.refusal("x", at("10.0.0.7:5432"), false).is_none());
    }

    #[test]
    fn the_hosts_own_port_is_never_reachable_even_when_listed_or_in_dev() {
        let listed = egress(&["127.0.0.1:8288", "*"], true);
        let own = listed
            .refusal("localhost", at("127.0.0.1:8288"), false)
            .unwrap();
        assert!(own.contains("own API"), "{own}");
        assert!(
            listed
                .refusal("me", at("93.184.216.34:8288"), true)
                .is_some()
        );
        // Dev mode's loopback is otherwise open.
        assert!(listed.refusal("x", at("127.0.0.1:3000"), false).is_none());
        assert!(listed.refusal("x", at("10.0.0.1:3000"), false).is_some());
    }
}
