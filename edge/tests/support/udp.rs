//! A UDP device for the integration tests: builds direct requests and forward packets
//! with valid checks and checks every reply's echoed header and checks.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use edge_proto::crc::crc8;
use edge_proto::device::Sid;
use edge_proto::frame::{DirectSpec, write_direct};

use super::unix_now;

/// A UDP device talking to the node.
pub struct Device {
    /// The device's socket (tests replace it to simulate NAT rebinding).
    pub socket: UdpSocket,
    /// The node's UDP address.
    pub node: SocketAddr,
    /// The last sequence number used.
    pub seq: u16,
    /// The session id from `0xE0`.
    pub sid: Sid,
    /// The device's MAC.
    pub mac: [u8; 8],
}

impl Device {
    pub fn new(node: SocketAddr, mac: [u8; 8]) -> Device {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        Device {
            socket,
            node,
            seq: 0,
            sid: Sid([0; 16]),
            mac,
        }
    }

    /// A direct request with this message id and body (next sequence number).
    pub fn request(&mut self, msg_id: u16, body: &[u8]) -> Vec<u8> {
        self.seq += 1;
        let mut out = Vec::new();
        let spec = DirectSpec {
            seq: self.seq,
            timestamp: unix_now() as u32,
            dst: 0,
            src: 0,
            msg_id,
            body,
        };
        write_direct(&mut out, &spec).unwrap();
        out[0] = 0x02;
        out[24] = 0;
        out[32] = crc8(&out[..32]);
        out
    }

    pub fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.node).unwrap();
    }

    /// The next datagram, or None after the socket's read timeout. A receive that a
    /// signal interrupts is retried (a timed socket call is never restarted by the
    /// kernel, so EINTR reaches here on a loaded machine).
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 4096];
        for _ in 0..100 {
            match self.socket.recv(&mut buf) {
                Ok(n) => return Some(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// Sends a command and returns the reply body (after the 36-byte header), checking
    /// the reply's header and body checks and echoed header.
    pub fn call(&mut self, msg_id: u16, body: &[u8]) -> Vec<u8> {
        let request = self.request(msg_id, body);
        self.send(&request);
        let reply = self.recv().expect("a reply");
        assert_eq!(reply[..24], request[..24], "frame header echoed");
        assert_eq!(reply[24] & 0xc0, 0xc0, "ACK|READ set");
        assert_eq!(u16::from_le_bytes([reply[28], reply[29]]), msg_id);
        assert_eq!(
            u16::from_le_bytes([reply[30], reply[31]]) as usize,
            reply.len() - 36
        );
        assert_eq!(reply[32], crc8(&reply[..32]), "header check");
        let mut body_check = vec![reply[34], reply[35]];
        body_check.extend_from_slice(&reply[36..]);
        assert_eq!(reply[33], crc8(&body_check), "body check");
        reply[36..].to_vec()
    }

    pub fn new_session(&mut self) {
        let mut body = self.mac.to_vec();
        body.extend_from_slice(&[0x10; 16]);
        let reply = self.call(0xE0, &body);
        assert_eq!(reply.len(), 28);
        assert_eq!(&reply[..4], &0i32.to_le_bytes());
        self.sid = Sid(reply[4..20].try_into().unwrap());
        assert_eq!(&reply[20..], &[0; 8]);
    }

    pub fn register(&mut self, name: &[u8]) -> (i32, i64, Vec<u8>) {
        let mut body = self.sid.0.to_vec();
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        body.extend_from_slice(&self.mac);
        body.extend_from_slice(&[0x10; 16]);
        body.extend_from_slice(&[0u8; 260]);
        body.extend_from_slice(&(name.len() as u16).to_le_bytes());
        body.extend_from_slice(name);
        let reply = self.call(0xE1, &body);
        assert_eq!(reply.len(), 92);
        assert_eq!(reply[4..20], self.sid.0);
        let status = i32::from_le_bytes(reply[..4].try_into().unwrap());
        let device = i64::from_le_bytes(reply[20..28].try_into().unwrap());
        let cookie: Vec<u8> = reply[28..]
            .iter()
            .copied()
            .take_while(|&b| b != 0)
            .collect();
        (status, device, cookie)
    }

    pub fn login(&mut self, cookie: &[u8]) -> i32 {
        let mut body = self.sid.0.to_vec();
        body.extend_from_slice(&self.mac);
        let mut field = [0u8; 64];
        field[..cookie.len()].copy_from_slice(cookie);
        body.extend_from_slice(&field);
        let reply = self.call(0xE2, &body);
        assert_eq!(reply.len(), 21);
        assert_eq!(reply[20], 20, "heartbeat interval");
        i32::from_le_bytes(reply[..4].try_into().unwrap())
    }

    pub fn heartbeat(&mut self) -> i32 {
        let body = self.sid.0.to_vec();
        let reply = self.call(0xE5, &body);
        assert_eq!(reply.len(), 20);
        i32::from_le_bytes(reply[..4].try_into().unwrap())
    }

    /// A state (`0x30`) or alarm (`0x31`) sync on this session: the sid, then `payload`.
    pub fn upload(&mut self, msg_id: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = self.sid.0.to_vec();
        body.extend_from_slice(payload);
        self.request(msg_id, &body)
    }

    /// Waits for the ACK of `upload` from `device` (docs/protocol.md §7.3): the upload with the frame's
    /// source set to the device id, the ACK flag set and both checks resealed. None if
    /// no such datagram came before the read timeout.
    pub fn upload_ack(&self, upload: &[u8], device: i64) -> Option<Vec<u8>> {
        let mut expect = upload.to_vec();
        expect[16..24].copy_from_slice(&device.to_le_bytes());
        expect[24] |= 0x40;
        edge_proto::frame::seal(&mut expect).unwrap();
        for _ in 0..10 {
            let got = self.recv()?;
            if got == expect {
                return Some(got);
            }
        }
        None
    }

    /// A forward message (opcode 3) from this device to `dst` with `payload`.
    pub fn forward(&mut self, dst: i64, src: i64, payload: &[u8]) -> Vec<u8> {
        self.seq += 1;
        forward_packet(self.seq, dst, src, &self.sid.0, payload)
    }

    /// New session, register and login with the builtin platform's cookie; the device id.
    pub fn online(&mut self) -> i64 {
        self.new_session();
        let (status, device, cookie) = self.register(b"plug");
        assert_eq!(status, 0, "register");
        assert_eq!(self.login(&cookie), 0, "device login");
        device
    }
}

/// A forward packet (opcode 3) with valid header and body checks.
pub fn forward_packet(seq: u16, dst: i64, src: i64, sid: &[u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 76];
    m[0] = 0x83;
    m[2..4].copy_from_slice(&seq.to_le_bytes());
    m[8..16].copy_from_slice(&dst.to_le_bytes());
    m[16..24].copy_from_slice(&src.to_le_bytes());
    m[24..40].copy_from_slice(sid);
    m[40] = 0x82;
    m[48..56].copy_from_slice(&dst.to_le_bytes());
    m[56..64].copy_from_slice(&src.to_le_bytes());
    m[68..70].copy_from_slice(&0x101u16.to_le_bytes());
    m[70..72].copy_from_slice(&(payload.len() as u16).to_le_bytes());
    m.extend_from_slice(payload);
    m[72] = crc8(&m[..72]);
    let mut body_check = vec![m[74], m[75]];
    body_check.extend_from_slice(payload);
    m[73] = crc8(&body_check);
    m
}
