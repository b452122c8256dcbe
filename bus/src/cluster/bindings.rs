//! Binding resolution from the HTTP platform's keys (docs/protocol.md §9.3), read-only:
//! the devices of a user (through the user's family when it has one) and the users of a
//! device (its owner, or the owner's whole family).
//!
//! Entries that are not decimal ids are skipped, as in the original. Unlike the original,
//! a device without an owner is not an error: it has no users (it may still log in and
//! gets its peers when it is bound). Redis errors are passed up (the login answers 9).

const USER_FAMILY: &str = "user:family";
const DEVICE_OWNER: &str = "device:owner";

/// The devices of base user `user`: the union of `u:<m>:devices` over the members `m` of
/// `family:<head>` when `user:family[user]` names a head, else `u:<user>:devices`.
pub(crate) fn devices_of_user(
    con: &mut redis::Connection,
    user: i64,
) -> redis::RedisResult<Vec<i64>> {
    let head: Option<Vec<u8>> = redis::cmd("HGET").arg(USER_FAMILY).arg(user).query(con)?;
    let members = match head.filter(|h| !h.is_empty()) {
        Some(head) => {
            let mut key = b"family:".to_vec();
            key.extend_from_slice(&head);
            let raw: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(key).query(con)?;
            ids(&raw)
        }
        None => vec![user],
    };
    let mut pipe = redis::pipe();
    for member in &members {
        pipe.cmd("SMEMBERS").arg(format!("u:{member}:devices"));
    }
    let sets: Vec<Vec<Vec<u8>>> = if members.is_empty() {
        Vec::new()
    } else {
        pipe.query(con)?
    };
    let mut devices = Vec::new();
    for set in &sets {
        for device in ids(set) {
            if !devices.contains(&device) {
                devices.push(device);
            }
        }
    }
    Ok(devices)
}

/// The users of `device`: nothing without `device:owner[device]`; the members of the
/// owner's family when `user:family[owner]` names a head; else the owner alone.
pub(crate) fn users_of_device(
    con: &mut redis::Connection,
    device: i64,
) -> redis::RedisResult<Vec<i64>> {
    let owner: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(DEVICE_OWNER)
        .arg(device)
        .query(con)?;
    let Some(owner) = owner.as_deref().and_then(parse_id) else {
        return Ok(Vec::new());
    };
    let head: Option<Vec<u8>> = redis::cmd("HGET").arg(USER_FAMILY).arg(owner).query(con)?;
    match head.filter(|h| !h.is_empty()) {
        Some(head) => {
            let mut key = b"family:".to_vec();
            key.extend_from_slice(&head);
            let raw: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(key).query(con)?;
            Ok(ids(&raw))
        }
        None => Ok(vec![owner]),
    }
}

/// A decimal id (Go `ParseInt(s, 10, 64)`: optional sign, digits).
pub(crate) fn parse_id(raw: &[u8]) -> Option<i64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// The members that are ids, sorted (set order is Redis's, not meaningful).
fn ids(raw: &[Vec<u8>]) -> Vec<i64> {
    let mut out: Vec<i64> = raw.iter().filter_map(|r| parse_id(r)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_skip_garbage() {
        let raw = vec![
            b"32".to_vec(),
            b"x".to_vec(),
            b"-5".to_vec(),
            b"+16".to_vec(),
        ];
        assert_eq!(ids(&raw), vec![-5, 16, 32]);
        assert_eq!(parse_id(b""), None);
        assert_eq!(parse_id(b"9223372036854775808"), None);
    }
}
