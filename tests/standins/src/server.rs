//! A small HTTPS (or plain HTTP) server on hyper: each request is read whole and handed to a
//! blocking handler on tokio's blocking pool.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
    /// The client's certificate chain as presented (not yet verified).
    pub peer_certs: Vec<CertificateDer<'static>>,
    pub local: SocketAddr,
}

impl Request {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }
    pub fn text(status: u16, t: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: t.as_bytes().to_vec(),
        }
    }
}

pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    handler: Handler,
    peer_certs: Vec<CertificateDer<'static>>,
    local: SocketAddr,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => {
            return Ok(hyper::Response::builder()
                .status(400)
                .body(Full::new(Bytes::from(format!("cannot read body: {e}"))))
                .unwrap_or_default());
        }
    };
    let request = Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parse_query(parts.uri.query().unwrap_or("")),
        headers: parts.headers,
        body,
        peer_certs,
        local,
    };
    let resp = tokio::task::spawn_blocking(move || handler(request))
        .await
        .unwrap_or_else(|e| Response::text(500, &format!("handler failed: {e}")));
    Ok(hyper::Response::builder()
        .status(resp.status)
        .header("Content-Type", resp.content_type)
        .header("Cache-Control", "no-cache, private")
        .body(Full::new(Bytes::from(resp.body)))
        .unwrap_or_default())
}

/// Serves `handler` on `listener`, over TLS when `tls` is given. Runs forever.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Some(acc) = acceptor {
                let Ok(stream) = acc.accept(tcp).await else {
                    return;
                };
                let peer: Vec<CertificateDer<'static>> = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|x| x.clone().into_owned()).collect())
                    .unwrap_or_default();
                let svc = service_fn(move |r| handle(r, handler.clone(), peer.clone(), local));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            } else {
                let svc = service_fn(move |r| handle(r, handler.clone(), Vec::new(), local));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            }
        });
    }
}

/// Binds `addr` or fails with a message naming the flag.
pub async fn bind(addr: &str, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("failed to listen on {addr} ({what}): {e}"))
}

/// `host:port` with IPv6 hosts bracketed.
pub fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
