//! The shard ↔ shard links: one queue per ordered pair of shards, each with a bound, and
//! the receiving shard's [`Waker`].
//!
//! A shard sends with [`MeshLink::try_send`] during a turn and wakes the shards it sent to
//! once, at the turn's end ([`MeshLink::wake_sent`]): the wake costs a `write(2)` only
//! when the receiver is parked. It reads its inbound queues in its own turn
//! ([`MeshLink::recv`]). Nothing here blocks, and no glommio wake-up is involved, so a
//! shard can park in its own `epoll_wait` (see `shard::run`).
//!
//! Each queue is an unbounded crossbeam list with the bound kept by its one sender: a
//! bounded crossbeam ring writes every slot when it is made, and `n·(n−1)` rings of
//! 4 096 slots would hold tens of megabytes resident on a 16-core node before the first
//! message. The list allocates a block per 31 messages as they flow.
//!
//! Does not own what a message means (`msg::PeerMsg`, `shard::route`), or what happens to
//! a message a full queue refused (the sender's: it keeps ordered ones, counts the rest).

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::msg::PeerMsg;
use crate::poller::Waker;

/// Why a message was not queued.
#[derive(Debug)]
pub enum Refused {
    /// The receiver's queue from this shard holds its bound: the message is given back.
    Full(PeerMsg),
    /// No such shard, or it has ended.
    Gone(PeerMsg),
}

/// One shard's ends of the mesh.
pub struct MeshLink {
    index: usize,
    bound: usize,
    /// `to[i]`: the queue into shard `i` (`None` for this shard itself).
    to: Vec<Option<Sender<PeerMsg>>>,
    wakers: Vec<Waker>,
    /// `from[i]`: the queue from shard `i` (`None` for this shard itself).
    from: Vec<Option<Receiver<PeerMsg>>>,
    /// Shards sent to since the last [`MeshLink::wake_sent`], one bit each.
    sent: u64,
}

/// The links of a full mesh over shards woken by `wakers` (at most 64), in shard order.
pub fn full(wakers: &[Waker], bound: usize) -> Vec<MeshLink> {
    let n = wakers.len();
    assert!(n <= 64, "the mesh's wake mask holds 64 shards");
    let mut links: Vec<MeshLink> = (0..n)
        .map(|index| MeshLink {
            index,
            bound,
            to: (0..n).map(|_| None).collect(),
            wakers: wakers.to_vec(),
            from: (0..n).map(|_| None).collect(),
            sent: 0,
        })
        .collect();
    for a in 0..n {
        for b in (0..n).filter(|&b| b != a) {
            let (tx, rx) = unbounded();
            links[a].to[b] = Some(tx);
            links[b].from[a] = Some(rx);
        }
    }
    links
}

impl MeshLink {
    /// This shard's place in the mesh.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Queues `msg` for shard `to`; the wake waits for [`MeshLink::wake_sent`].
    pub fn try_send(&mut self, to: usize, msg: PeerMsg) -> Result<(), Refused> {
        let Some(tx) = self.to.get(to).and_then(Option::as_ref) else {
            return Err(Refused::Gone(msg));
        };
        // This shard is the queue's only sender, so the length cannot grow between the
        // check and the send.
        if tx.len() >= self.bound {
            return Err(Refused::Full(msg));
        }
        tx.send(msg).map_err(|e| Refused::Gone(e.into_inner()))?;
        self.sent |= 1 << to;
        Ok(())
    }

    /// Wakes every shard sent to since the last call (each one once).
    pub fn wake_sent(&mut self) {
        let mut sent = std::mem::take(&mut self.sent);
        while sent != 0 {
            let to = sent.trailing_zeros() as usize;
            sent &= sent - 1;
            self.wakers[to].wake();
        }
    }

    /// Takes up to `budget` messages from each inbound queue, in shard order, into `out`.
    pub fn recv(&mut self, budget: usize, out: &mut Vec<PeerMsg>) {
        for rx in self.from.iter().flatten() {
            out.extend(rx.try_iter().take(budget));
        }
    }

    /// Whether any inbound queue holds a message.
    pub fn has_inbound(&self) -> bool {
        self.from.iter().flatten().any(|rx| !rx.is_empty())
    }

    /// Drops this shard's sending ends (its peers see it gone), after waking them.
    pub fn close(&mut self) {
        self.wake_sent();
        self.to.iter_mut().for_each(|tx| *tx = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::Poller;

    fn datagram(n: u8) -> PeerMsg {
        PeerMsg::Datagram {
            from: "127.0.0.1:1".parse().unwrap(),
            bytes: vec![n],
        }
    }

    fn byte(msg: &PeerMsg) -> u8 {
        match msg {
            PeerMsg::Datagram { bytes, .. } => bytes[0],
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_full_queue_gives_the_message_back_and_order_holds() {
        let pollers: Vec<Poller> = (0..3).map(|_| Poller::new().unwrap()).collect();
        let wakers: Vec<Waker> = pollers.iter().map(Poller::waker).collect();
        let mut links = full(&wakers, 2);
        let (mut zero, mut two) = (links.remove(0), links.remove(1));
        zero.try_send(2, datagram(1)).unwrap();
        zero.try_send(2, datagram(2)).unwrap();
        assert!(matches!(
            zero.try_send(2, datagram(3)),
            Err(Refused::Full(_))
        ));
        assert!(matches!(
            zero.try_send(0, datagram(4)),
            Err(Refused::Gone(_))
        ));
        assert!(matches!(
            zero.try_send(9, datagram(5)),
            Err(Refused::Gone(_))
        ));
        assert!(two.has_inbound());
        let mut out = Vec::new();
        two.recv(1, &mut out);
        two.recv(8, &mut out);
        assert_eq!(out.iter().map(byte).collect::<Vec<_>>(), [1, 2]);
        assert!(!two.has_inbound());
        zero.close();
        assert!(matches!(
            zero.try_send(2, datagram(6)),
            Err(Refused::Gone(_))
        ));
    }

    #[test]
    fn a_send_wakes_a_parked_receiver_once() {
        let mut pollers: Vec<Poller> = (0..2).map(|_| Poller::new().unwrap()).collect();
        let wakers: Vec<Waker> = pollers.iter().map(Poller::waker).collect();
        let mut links = full(&wakers, 8);
        pollers[1].set_parked(true);
        links[0].try_send(1, datagram(7)).unwrap();
        links[0].try_send(1, datagram(8)).unwrap();
        links[0].wake_sent();
        // The wake is what returns this wait: nothing else is watched.
        assert!(pollers[1].wait(std::time::Duration::from_secs(30)));
        let mut ready = Vec::new();
        pollers[1].drain(&mut ready);
        assert!(ready.is_empty());
        let mut out = Vec::new();
        links[1].recv(8, &mut out);
        assert_eq!(out.len(), 2);
    }
}
