//! The few outbound HTTP requests the server makes (webhook POSTs, MTA-STS
//! policy fetches): hyper's HTTP/1.1 client over one connection per
//! request, rustls for https. Runs on a tokio runtime (the webhook and
//! DNS threads'), never on a shard.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, OnceLock};

/// TLS with the web PKI roots.
pub fn web_pki() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| with_roots(&[])).clone()
}

/// TLS trusting the web PKI roots and `extra` CA certificates (DER).
pub fn with_roots(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        let _ = roots.add(cert.clone());
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Send `request` to `uri`'s host (http, or https checked by `tls`); the
/// answer's status and its body (None when it was over `max_body` bytes
/// or could not be read). The caller bounds the time.
pub async fn send(
    uri: &Uri,
    request: Request<Full<Bytes>>,
    tls: &Arc<rustls::ClientConfig>,
    max_body: usize,
) -> Result<(StatusCode, Option<Bytes>), String> {
    send_to(None, uri, request, tls, max_body).await
}

/// [`send`], connecting to `addr` when given (an address the caller looked
/// up itself) rather than to what the system resolves the host to; TLS
/// still checks the URL's host name.
pub async fn send_to(
    addr: Option<std::net::SocketAddr>,
    uri: &Uri,
    request: Request<Full<Bytes>>,
    tls: &Arc<rustls::ClientConfig>,
    max_body: usize,
) -> Result<(StatusCode, Option<Bytes>), String> {
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connected = match addr {
        Some(addr) => tokio::net::TcpStream::connect(addr).await,
        None => tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await,
    };
    let tcp = connected.map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match https {
        true => {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| format!("`{host}` is not a TLS name"))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host} failed: {e}"))?;
            exchange(TokioIo::new(stream), request, max_body).await
        }
        false => exchange(TokioIo::new(tcp), request, max_body).await,
    }
}

async fn exchange<T>(
    io: T,
    request: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<(StatusCode, Option<Bytes>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = answer.status();
    let body = Limited::new(answer.into_body(), max_body)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .ok();
    driver.abort();
    Ok((status, body))
}
