//! Where Redis is (`--rh`), and how each (re)connect finds its master:
//!
//! - `host:port` or a `redis://[user:pass@]host:port[/db]` URL: that server;
//! - `sentinel://h1:26379,h2:26379,…/mymaster[/db]`: the master that the Sentinels
//!   name for `mymaster`, asked again on every connect, so that after a failover the next
//!   reconnect lands on the promoted replica. A server that the Sentinels name but that
//!   does not say `ROLE master` (a failover under way) is refused, and the caller's
//!   backoff retries.
//!
//! AUTH (a password, and an ACL user if any) comes from the environment or a file, never
//! the command line (`RedisAuth`, filled by the programs' configs); it applies to the
//! data servers, not to the Sentinels (which this does not authenticate to).
//!
//! Every connection gets the liveness settings of [`crate::net::redis_client`]. Owns no
//! connection; the store, subscriber and online-map threads own theirs.

use std::fmt;
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use thiserror::Error;

/// How long asking one Sentinel, or checking a master's role, may take.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Credentials for the data servers.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAuth {
    /// ACL user (`AUTH user pass`); `None`: the default user (`AUTH pass`).
    pub username: Option<String>,
    /// The password.
    pub password: String,
}

impl fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Direct {
        /// `redis://…` URL.
        url: String,
        /// AUTH from outside the URL.
        auth: Option<RedisAuth>,
    },
    /// The master of a Sentinel-monitored group.
    Sentinel {
        /// `host:port` of each Sentinel, tried in order.
        sentinels: Vec<String>,
        /// The monitored group's name.
        master: String,
        /// Database number.
        db: i64,
        /// AUTH for the master.
        auth: Option<RedisAuth>,
    },
}

/// A `--rh` value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    /// `sentinel://` without Sentinels or without a master name.
    #[error("--rh {0}: expected sentinel://host:port[,host:port…]/master-name[/db]")]
    Sentinel(String),
    /// A database number that is not a number.
    #[error("--rh {0}: the database must be a number")]
    Db(String),
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self {
            Self::Direct { auth, .. } | Self::Sentinel { auth, .. } => auth,
        };
        write!(f, "RedisTarget({}, {auth:?})", self.describe())
    }
}

impl RedisTarget {
    /// Parses a `--rh` value; `auth` (from the environment or a file) applies to it.
    pub fn parse(addr: &str, auth: Option<RedisAuth>) -> Result<Self, TargetError> {
        let Some(rest) = addr.strip_prefix("sentinel://") else {
            let url = if addr.contains("://") {
                addr.to_owned()
            } else {
                format!("redis://{addr}/")
            };
            return Ok(Self::Direct { url, auth });
        };
        let bad = || TargetError::Sentinel(addr.to_owned());
        let (hosts, path) = rest.split_once('/').ok_or_else(bad)?;
        let (master, db) = match path.trim_end_matches('/').split_once('/') {
            Some((master, db)) => (
                master,
                db.parse().map_err(|_| TargetError::Db(addr.into()))?,
            ),
            None => (path.trim_end_matches('/'), 0),
        };
        let sentinels: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains(':') {
                    h.to_owned()
                } else {
                    format!("{h}:26379")
                }
            })
            .collect();
        if sentinels.is_empty() || master.is_empty() {
            return Err(bad());
        }
        Ok(Self::Sentinel {
            sentinels,
            master: master.to_owned(),
            db,
            auth,
        })
    }

    /// For logs: no password.
    pub fn describe(&self) -> String {
        match self {
            Self::Direct { url, .. } => crate::net::redact_url(url),
            Self::Sentinel {
                sentinels, master, ..
            } => format!("sentinel://{}/{master}", sentinels.join(",")),
        }
    }

    /// A client for the server to use now (for a Sentinel group: its current master,
    /// checked to say `ROLE master`).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Self::Direct { url, auth } => {
                crate::net::redis_client(with_auth(url.as_str().into_connection_info()?, auth))
            }
            Self::Sentinel {
                sentinels,
                master,
                db,
                auth,
            } => {
                let (host, port) = master_addr(sentinels, master)?;
                let info = (host.as_str(), port).into_connection_info()?;
                let settings = info.redis_settings().clone().set_db(*db);
                let info = with_auth(info.set_redis_settings(settings), auth);
                let client = crate::net::redis_client(info)?;
                let mut con = client.get_connection_with_timeout(SENTINEL_TIMEOUT)?;
                con.set_read_timeout(Some(SENTINEL_TIMEOUT))?;
                let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut con)?;
                match role.first() {
                    Some(redis::Value::BulkString(r)) if r == b"master" => Ok(client),
                    _ => Err(not_master(&host, port)),
                }
            }
        }
    }
}

fn with_auth(info: ConnectionInfo, auth: &Option<RedisAuth>) -> ConnectionInfo {
    let Some(auth) = auth else {
        return info;
    };
    let mut settings: RedisConnectionInfo = info.redis_settings().clone();
    settings = settings.set_password(&auth.password);
    if let Some(user) = &auth.username {
        settings = settings.set_username(user);
    }
    info.set_redis_settings(settings)
}

/// Asks each Sentinel in turn for `master`'s address; the first answer wins.
fn master_addr(sentinels: &[String], master: &str) -> redis::RedisResult<(String, u16)> {
    let mut last = None;
    for sentinel in sentinels {
        let asked = (|| {
            let client =
                crate::net::redis_client(format!("redis://{sentinel}/").into_connection_info()?)?;
            let mut con = client.get_connection_with_timeout(SENTINEL_TIMEOUT)?;
            con.set_read_timeout(Some(SENTINEL_TIMEOUT))?;
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query(&mut con)?;
            addr.ok_or_else(|| unknown_master(sentinel, master))
        })();
        match asked {
            Ok(addr) => return Ok(addr),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| unknown_master("-", master)))
}

fn unknown_master(sentinel: &str, master: &str) -> redis::RedisError {
    let detail = format!("Sentinel {sentinel} knows no master {master:?}");
    redis::RedisError::from((redis::ErrorKind::Io, "no master", detail))
}

fn not_master(host: &str, port: u16) -> redis::RedisError {
    let detail = format!("{host}:{port} is not a master (failover under way?)");
    redis::RedisError::from((redis::ErrorKind::Io, "not the master", detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_urls_and_sentinel_groups() {
        let direct = RedisTarget::parse("10.0.0.1:6379", None).unwrap();
        assert_eq!(
            direct,
            RedisTarget::Direct {
                url: "redis://10.0.0.1:6379/".into(),
                auth: None
            }
        );
        let s = RedisTarget::parse("sentinel://a:26379,b/mymaster/2", None).unwrap();
        assert_eq!(
            s,
            RedisTarget::Sentinel {
                sentinels: vec!["a:26379".into(), "b:26379".into()],
                master: "mymaster".into(),
                db: 2,
                auth: None
            }
        );
        assert_eq!(s.describe(), "sentinel://a:26379,b:26379/mymaster");
        assert!(RedisTarget::parse("sentinel://a:1", None).is_err());
        assert!(RedisTarget::parse("sentinel:///m", None).is_err());
        assert!(RedisTarget::parse("sentinel://a/m/x", None).is_err());
    }

    #[test]
    fn passwords_stay_out_of_debug_and_describe() {
        let auth = RedisAuth {
            username: Some("cs".into()),
            password: "hunter2".into(),
        };
        let t = RedisTarget::parse("redis://:pw@h:1/", Some(auth)).unwrap();
        let shown = format!("{t:?} {}", t.describe());
        assert!(
            !shown.contains("hunter2") && !shown.contains(":pw@"),
            "{shown}"
        );
    }
}
