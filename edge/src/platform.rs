//! The device platform that UDP register, login and rename go to (docs/protocol.md §9.1), on worker
//! threads off the shards: the **HTTP platform** (`--hurl`: form posts to
//! `/api/device/{register,login,changingname}` over `ureq`, form-encoded values and a 5 s
//! timeout), or the **builtin platform** of the embedded node (a stable negative device id
//! per MAC and a cookie `<deviceId>|<token>` that login verifies).
//!
//! Workers take [`PlatformRequest`]s from one bounded channel and answer each shard
//! through its inbox. They hold no session state.

use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use bus::messages::{PlatformAnswer, PlatformCall, PlatformRequest, ShardInbox, ToShard};
use crossbeam_channel::Receiver;
use md5::{Digest, Md5};

/// Reply statuses (docs/protocol.md §5.2).
const HTTP_ERROR: i32 = edge_proto::device::STATUS_HTTP_ERROR;
const SERVER_ERROR: i32 = edge_proto::device::STATUS_SERVER_ERROR;
/// Builtin platform: the cookie does not match the MAC.
pub const BUILTIN_BAD_COOKIE: i32 = 1;

/// Which platform answers.
#[derive(Debug, Clone)]
pub enum Platform {
    /// The embedded node's own: ids derived from the MAC, cookies signed with `secret`.
    Builtin {
        /// Signs cookies (the node's login salt).
        secret: Vec<u8>,
    },
    /// The original HTTP platform at this root URL.
    Http(HttpPlatform),
}

/// Where the HTTP platform lives.
#[derive(Debug, Clone)]
pub struct HttpPlatform {
    /// `host:port` to connect to.
    pub addr: String,
    /// Path prefix (the URL's path, without a trailing slash).
    pub prefix: String,
    /// The HTTP client: one timeout (5 s) for each whole call, statuses as answers.
    pub agent: ureq::Agent,
    /// Failed calls are logged at most once a second (with the count held back).
    pub error_log: std::sync::Arc<std::sync::Mutex<crate::logging::Throttle>>,
}

impl HttpPlatform {
    /// Reads `http://host[:port][/prefix]`.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--hurl {url}: only http:// URLs are supported"))?;
        let (host, prefix) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        if host.is_empty() {
            return Err(format!("--hurl {url}: no host"));
        }
        let addr = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", prefix.trim_end_matches('/'))
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Ok(HttpPlatform {
            addr,
            prefix,
            agent,
            error_log: std::sync::Arc::default(),
        })
    }
}

/// Starts `threads` workers answering `requests`; they end when every sender is gone.
pub fn spawn(
    platform: Platform,
    threads: usize,
    requests: Receiver<PlatformRequest>,
    shards: Vec<ShardInbox>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..threads.max(1))
        .map(|i| {
            let (platform, requests, shards) = (platform.clone(), requests.clone(), shards.clone());
            std::thread::Builder::new()
                .name(format!("platform-{i}"))
                .spawn(move || {
                    for request in requests.iter() {
                        let answer = platform.answer(&request.call);
                        if let Some(shard) = shards.get(request.conn.shard as usize) {
                            let _ = shard.send(ToShard::Platform {
                                conn: request.conn,
                                answer,
                            });
                        }
                    }
                })
        })
        .collect()
}

impl Platform {
    /// Answers one call (blocking for the HTTP platform, at most its timeout).
    pub fn answer(&self, call: &PlatformCall) -> PlatformAnswer {
        match self {
            Platform::Builtin { secret } => builtin(secret, call),
            Platform::Http(http) => http.answer(call),
        }
    }
}

/// The builtin platform's device id for a MAC: negative, never 0, stable.
pub fn builtin_device_id(mac: &[u8; 8]) -> i64 {
    let digest = Md5::digest(mac);
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    -1 - (u64::from_le_bytes(n) & 0x0000_7fff_ffff_ffff) as i64
}

fn builtin_token(secret: &[u8], device: i64) -> String {
    let mut md5 = Md5::new();
    md5.update(secret);
    md5.update(device.to_string().as_bytes());
    md5.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn builtin(secret: &[u8], call: &PlatformCall) -> PlatformAnswer {
    match call {
        PlatformCall::Register { mac, .. } => {
            let device = builtin_device_id(mac);
            PlatformAnswer::Register {
                status: 0,
                cookie: format!("{device}|{}", builtin_token(secret, device)).into_bytes(),
            }
        }
        PlatformCall::Login { mac, cookie } => {
            let device = builtin_device_id(mac);
            let expected = format!("{device}|{}", builtin_token(secret, device));
            if expected.as_bytes() == cookie.as_slice() {
                PlatformAnswer::Login { status: 0, device }
            } else {
                PlatformAnswer::Login {
                    status: BUILTIN_BAD_COOKIE,
                    device: 0,
                }
            }
        }
        PlatformCall::Rename { .. } => PlatformAnswer::Rename { status: 0 },
    }
}

/// `application/x-www-form-urlencoded` value encoding (the original sent raw values).
pub fn form_encode(value: &[u8]) -> String {
    form_urlencoded::byte_serialize(value).collect()
}

/// The form body of a call (field names as docs/protocol.md §9.1).
pub fn form(call: &PlatformCall) -> (&'static str, String) {
    let b64 = |mac: &[u8; 8]| base64::engine::general_purpose::STANDARD.encode(mac);
    match call {
        PlatformCall::Register {
            mac,
            device_type,
            production_time,
            sn,
            name,
        } => {
            let sn: String = sn.iter().map(|b| format!("{b:02x}")).collect();
            let body = format!(
                "mac={}&dv={device_type}&pt={production_time}&sn={sn}&name={}",
                form_encode(b64(mac).as_bytes()),
                form_encode(name)
            );
            ("/api/device/register", body)
        }
        PlatformCall::Login { mac, cookie } => (
            "/api/device/login",
            format!(
                "mac={}&cookie={}",
                form_encode(b64(mac).as_bytes()),
                form_encode(cookie)
            ),
        ),
        PlatformCall::Rename { mac, name } => (
            "/api/device/changingname",
            format!(
                "name={}&mac={}",
                form_encode(name),
                form_encode(b64(mac).as_bytes())
            ),
        ),
    }
}

impl HttpPlatform {
    fn answer(&self, call: &PlatformCall) -> PlatformAnswer {
        let (path, body) = form(call);
        let status = match self.post(path, &body) {
            Err(error) => {
                self.failed(path, &error.to_string());
                Err(SERVER_ERROR)
            }
            Ok((200, json)) => Ok(json),
            Ok((code, _)) => {
                self.failed(path, &format!("HTTP status {code}"));
                Err(HTTP_ERROR)
            }
        };
        let json = status.and_then(|body| {
            serde_json::from_slice::<serde_json::Value>(&body).map_err(|_| HTTP_ERROR)
        });
        let code = |json: &serde_json::Value| {
            json.get("status")
                .and_then(serde_json::Value::as_i64)
                .map(|s| s as i32)
        };
        match call {
            PlatformCall::Register { .. } => match json {
                Err(status) => PlatformAnswer::Register {
                    status,
                    cookie: Vec::new(),
                },
                Ok(json) => {
                    let cookie = json
                        .get("cookie")
                        .and_then(|c| c.as_str())
                        .unwrap_or("")
                        .as_bytes()
                        .to_vec();
                    let status = code(&json).unwrap_or(HTTP_ERROR);
                    let status = if status == 0
                        && edge_proto::device::parse_cookie_device_id(&cookie).is_none()
                    {
                        SERVER_ERROR
                    } else {
                        status
                    };
                    PlatformAnswer::Register { status, cookie }
                }
            },
            PlatformCall::Login { cookie, .. } => {
                let status = json.map_or_else(|s| s, |j| code(&j).unwrap_or(HTTP_ERROR));
                let device = edge_proto::device::parse_cookie_device_id(cookie).unwrap_or(0);
                let status = if status == 0 && device >= 0 {
                    SERVER_ERROR
                } else {
                    status
                };
                PlatformAnswer::Login { status, device }
            }
            PlatformCall::Rename { .. } => PlatformAnswer::Rename {
                status: json.map_or_else(|s| s, |j| code(&j).unwrap_or(HTTP_ERROR)),
            },
        }
    }

    /// Logs a failed call, at most one line a second.
    fn failed(&self, path: &str, error: &str) {
        let admitted = self
            .error_log
            .lock()
            .map_or(None, |mut log| log.admit(std::time::Instant::now()));
        if let Some(held_back) = admitted {
            let platform = &self.addr;
            tracing::warn!(
                platform,
                path,
                error,
                held_back,
                "device platform call failed"
            );
        }
    }

    /// POSTs a form; returns the status code and body.
    fn post(&self, path: &str, body: &str) -> Result<(u16, Vec<u8>), ureq::Error> {
        let url = format!("http://{}{}{path}", self.addr, self.prefix);
        let mut response = self
            .agent
            .post(&url)
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .send(body.as_bytes())?;
        let code = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()?;
        Ok((code, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_register_then_login() {
        let secret = b"s".to_vec();
        let mac = [1, 2, 3, 4, 5, 6, 7, 8];
        let PlatformAnswer::Register { status: 0, cookie } = builtin(
            &secret,
            &PlatformCall::Register {
                mac,
                device_type: 1,
                production_time: 2,
                sn: [0; 16],
                name: b"x".to_vec(),
            },
        ) else {
            panic!("register failed")
        };
        let device = builtin_device_id(&mac);
        assert!(device < 0);
        assert_eq!(
            edge_proto::device::parse_cookie_device_id(&cookie),
            Some(device)
        );
        assert_eq!(
            builtin(
                &secret,
                &PlatformCall::Login {
                    mac,
                    cookie: cookie.clone()
                }
            ),
            PlatformAnswer::Login { status: 0, device }
        );
        let other = [9; 8];
        assert_eq!(
            builtin(&secret, &PlatformCall::Login { mac: other, cookie }),
            PlatformAnswer::Login {
                status: BUILTIN_BAD_COOKIE,
                device: 0
            }
        );
    }

    #[test]
    fn forms_are_encoded() {
        assert_eq!(form_encode(b"a+b/c= &"), "a%2Bb%2Fc%3D+%26");
        let (path, body) = form(&PlatformCall::Rename {
            mac: [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0, 1],
            name: b"my plug".to_vec(),
        });
        assert_eq!(path, "/api/device/changingname");
        assert_eq!(body, "name=my+plug&mac=obLD1OX2AAE%3D");
    }

    #[test]
    fn urls() {
        let p = HttpPlatform::from_url("http://127.0.0.1:8090/base/").unwrap();
        assert_eq!(
            (p.addr.as_str(), p.prefix.as_str()),
            ("127.0.0.1:8090", "/base")
        );
        assert!(HttpPlatform::from_url("https://x").is_err());
    }
}
