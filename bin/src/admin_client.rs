//! A client of a running server's admin API, for the commands that change
//! what a running server holds (`ringpost user ...` while it runs).
//!
//! The server writes where its control plane listens (`admin.addr`) and
//! its bearer token (`admin.token`, mode 0600) into its data dir; whoever
//! can read them may administer it.

use ringpost_engine::admin::{address_path, token_path};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A running server's admin API.
pub struct AdminClient {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

impl AdminClient {
    /// The API of the server whose data dir is `data_dir`.
    pub fn for_data_dir(data_dir: &Path) -> Result<AdminClient, String> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let address = read(&address_path(data_dir))?;
        let token = read(&token_path(data_dir))?;
        Ok(AdminClient {
            base: format!("http://{address}"),
            authorization: format!("Bearer {token}"),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
        })
    }

    /// Whether a server answers at the address (its `/healthz`, which
    /// takes no token): the address file may outlive a server that
    /// crashed.
    pub fn answers(&self) -> bool {
        self.agent
            .get(&format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(2))
            .call()
            .is_ok()
    }

    /// `method path` with an optional JSON body; the JSON answer, or the
    /// server's error message.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &self.authorization);
        let sent = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match sent {
            Ok(response) => response
                .into_json()
                .map_err(|e| format!("the server's answer is not JSON: {e}")),
            Err(ureq::Error::Status(code, response)) => {
                let said = response
                    .into_json::<Value>()
                    .ok()
                    .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                Err(format!("the server refused ({code}): {said}"))
            }
            Err(e) => Err(format!(
                "cannot reach the running server at {}: {e}",
                self.base
            )),
        }
    }
}

/// `segment` percent-encoded for a URL path: account names may hold `/`,
/// `?`, `#` or `%`.
pub fn path_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_for_paths() {
        assert_eq!(path_segment("ann@ours.test"), "ann@ours.test");
        assert_eq!(path_segment("a/b?c#d%e@x"), "a%2Fb%3Fc%23d%25e@x");
    }
}
