//! A small HTTPS server for MTA-STS tests: one self-signed certificate for
//! every name it serves, and a body per Host (the policy files). Blocking
//! rustls on std sockets, a thread per connection, loopback only.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// The server; it serves until the test process ends.
pub struct PolicyServer {
    addr: SocketAddr,
    /// PEM of its certificate (a CA for the client to trust).
    pub cert_pem: String,
}

impl PolicyServer {
    /// Listen on `ip` (port 0) and answer GET with the body of the Host
    /// asked (404 for any other).
    pub fn start(ip: &str, bodies: &[(&str, &str)]) -> PolicyServer {
        let names: Vec<&str> = bodies.iter().map(|(host, _)| *host).collect();
        let (config, cert_pem) = super::ca::self_signed_server(&names);
        let bodies: Arc<HashMap<String, String>> = Arc::new(
            bodies
                .iter()
                .map(|(host, body)| (host.to_string(), body.to_string()))
                .collect(),
        );
        let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, bodies) = (config.clone(), bodies.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    let mut host = String::new();
                    {
                        let mut reader = BufReader::new(&mut tls);
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.eq_ignore_ascii_case("host") {
                                    host = value.trim().split(':').next().unwrap_or("").to_owned();
                                }
                            }
                        }
                    }
                    let answer = match bodies.get(&host) {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                    };
                    let _ = tls.write_all(answer.as_bytes());
                    let _ = tls.flush();
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        PolicyServer { addr, cert_pem }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
