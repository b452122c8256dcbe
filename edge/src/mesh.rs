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
        .map(|_| MeshLink {
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

    /// `n` shards' pollers and mesh links, queues bounded at `bound`.
    fn mesh(n: usize, bound: usize) -> (Vec<Poller>, Vec<MeshLink>) {
        let pollers: Vec<Poller> = (0..n).map(|_| Poller::new().unwrap()).collect();
        let wakers: Vec<Waker> = pollers.iter().map(Poller::waker).collect();
        let links = full(&wakers, bound);
        (pollers, links)
    }

    /// Parks the way `shard::run` does: announce, look at the queue again, wait (far
    /// longer than any test). False when the wait timed out: a wake was lost.
    fn park(poller: &mut Poller, inbound: &MeshLink) -> bool {
        poller.set_parked(true);
        let woken = inbound.has_inbound() || poller.wait(std::time::Duration::from_secs(20));
        poller.set_parked(false);
        woken
    }

    fn byte(msg: &PeerMsg) -> u8 {
        match msg {
            PeerMsg::Datagram { bytes, .. } => bytes[0],
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_full_queue_gives_the_message_back_and_order_holds() {
        let (_pollers, mut links) = mesh(3, 2);
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
    fn no_wake_is_lost_to_senders_racing_the_park() {
        // Three shards send to a fourth in bursts; the fourth parks the way `shard::run`
        // does (announce, look at the queues again, wait), with a wait far longer than the
        // test: a lost wake shows as a wait that times out with messages still to come.
        const SENDERS: usize = 3;
        const EACH: usize = 20_000;
        let (mut pollers, mut links) = mesh(SENDERS + 1, 64);
        let (mut poller, mut inbound) = (pollers.pop().unwrap(), links.pop().unwrap());
        let senders: Vec<_> = links
            .into_iter()
            .enumerate()
            .map(|(i, mut link)| {
                std::thread::spawn(move || {
                    let mut seed = 0x9e37_79b9_u32.wrapping_mul(i as u32 + 1);
                    let mut sent = 0;
                    while sent < EACH {
                        match link.try_send(SENDERS, datagram(i as u8)) {
                            Ok(()) => sent += 1,
                            Err(Refused::Full(_)) => {
                                link.wake_sent();
                                std::thread::yield_now();
                            }
                            Err(Refused::Gone(_)) => panic!("the receiver is gone"),
                        }
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        if seed.is_multiple_of(16) {
                            // The end of a turn: its wake, then sometimes a pause.
                            link.wake_sent();
                            if seed.is_multiple_of(64) {
                                std::thread::sleep(std::time::Duration::from_micros(50));
                            }
                        }
                    }
                    link.wake_sent();
                })
            })
            .collect();
        let (mut got, mut out) = (0, Vec::new());
        while got < SENDERS * EACH {
            out.clear();
            inbound.recv(1024, &mut out);
            got += out.len();
            if !out.is_empty() {
                continue;
            }
            let woken = park(&mut poller, &inbound);
            assert!(woken, "a wake was lost: {got} of {} taken", SENDERS * EACH);
        }
        senders.into_iter().for_each(|s| s.join().unwrap());
    }

    #[test]
    fn no_wake_is_lost_in_a_strict_ping_pong() {
        // One sender, one message at a time, each waiting until the receiver took it:
        // nothing else can wake the receiver, so one lost wake stalls the exchange. The
        // sender's waits are spread over the receiver's park sequence by a varying pause.
        const ROUNDS: usize = 20_000;
        let (pollers, mut links) = mesh(2, 4);
        let mut poller = pollers.into_iter().nth(1).unwrap();
        let (mut inbound, mut sender) = (links.pop().unwrap(), links.pop().unwrap());
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = taken.clone();
        let thread = std::thread::spawn(move || {
            for round in 0..ROUNDS {
                for _ in 0..(round * 7919) % 97 {
                    std::hint::spin_loop();
                }
                sender.try_send(1, datagram(0)).unwrap();
                sender.wake_sent();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while seen.load(std::sync::atomic::Ordering::Acquire) <= round {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "round {round} stalled"
                    );
                    std::hint::spin_loop();
                }
            }
        });
        let mut out = Vec::new();
        while taken.load(std::sync::atomic::Ordering::Relaxed) < ROUNDS {
            out.clear();
            inbound.recv(8, &mut out);
            if !out.is_empty() {
                taken.fetch_add(out.len(), std::sync::atomic::Ordering::Release);
                continue;
            }
            let woken = park(&mut poller, &inbound);
            assert!(woken, "a wake was lost after {taken:?} rounds");
        }
        thread.join().unwrap();
    }

    #[test]
    fn a_send_wakes_a_parked_receiver_once() {
        let (mut pollers, mut links) = mesh(2, 8);
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
