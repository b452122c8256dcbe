//! The fuzz targets: one per decoder family, each with seeds and invariants.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use edge_proto::device::{self, Request, Sid};
use edge_proto::frame::{
    self, DirectPacket, FORWARD_DATA_OFFSET, ForwardPacket, FrameHeader, HEADER_CHECK_IN_DATA,
    Packet,
};
use edge_proto::link::{self, Downstream, LinkDecoder, LinkItem, Upstream};
use edge_proto::login::{self, LoginReply, LoginRequest};
use edge_proto::status::StatusBody;
use edge_proto::{pubsub, ws, zk};

use super::{Outcome, Target, feature_of, golden_where};

/// Every target, in report order.
pub const ALL: &[Target] = &[
    Target {
        name: "ws_upgrade",
        seeds: seeds_upgrade,
        check: check_upgrade,
    },
    Target {
        name: "ws_frame",
        seeds: seeds_frame,
        check: check_frame,
    },
    Target {
        name: "login",
        seeds: seeds_login,
        check: check_login,
    },
    Target {
        name: "udp_datagram",
        seeds: seeds_udp,
        check: check_udp,
    },
    Target {
        name: "udp_patch",
        seeds: seeds_patch,
        check: check_patch,
    },
    Target {
        name: "link",
        seeds: seeds_link,
        check: check_link,
    },
    Target {
        name: "link_payload",
        seeds: seeds_link_payload,
        check: check_link_payload,
    },
    Target {
        name: "pubsub",
        seeds: seeds_pubsub,
        check: check_pubsub,
    },
    Target {
        name: "zk_node",
        seeds: seeds_zk,
        check: check_zk,
    },
    Target {
        name: "status_body",
        seeds: seeds_status,
        check: check_status,
    },
    Target {
        name: "session_json",
        seeds: seeds_session,
        check: check_session,
    },
    Target {
        name: "spool_record",
        seeds: seeds_spool,
        check: check_spool,
    },
    Target {
        name: "http_head",
        seeds: seeds_http,
        check: check_http,
    },
    Target {
        name: "conf_file",
        seeds: seeds_conf,
        check: check_conf,
    },
    Target {
        name: "parse_addr",
        seeds: seeds_addr,
        check: check_addr,
    },
    Target {
        name: "tls_records",
        seeds: seeds_tls,
        check: check_tls,
    },
    Target {
        name: "tls_established",
        seeds: seeds_tls_established,
        check: check_tls_established,
    },
    Target {
        name: "handover",
        seeds: seeds_handover,
        check: check_handover,
    },
];

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

// The targets, by area (after the macro: they use it).
mod cluster;
mod handover;
mod node;
mod tls;
mod udp;
mod websocket;

use cluster::*;
use handover::*;
use node::*;
use tls::*;
use udp::*;
use websocket::*;

/// Whether `part` lies inside `whole` (a borrowed view of the input).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    part.is_empty() || (p >= w && p + part.len() <= w + whole.len())
}

fn err_feature<E: std::fmt::Debug>(tag: u64, e: &E) -> u64 {
    // The variant name only: `TooShort { need: 36, got: 3 }` → `TooShort`.
    let text = format!("{e:?}");
    let name = text
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("");
    feature_of(&(tag, name))
}

fn h(tag: u64, data: &[u8]) -> u64 {
    feature_of(&(tag, data))
}
