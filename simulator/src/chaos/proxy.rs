//! A TCP proxy on loopback between the gateway's uplink and the backend
//! broker, which the chaos harness turns into a bad network on command.
//!
//! It forwards bytes and knows nothing of MQTT or TLS: the gateway's TLS
//! session runs through it end to end (the backend's development
//! certificate names 127.0.0.1, the proxy's address too). Each direction
//! of a connection is a reader task that stamps every chunk with its
//! arrival time and a writer task that sends it on according to the
//! [`LinkMode`] in force *when the chunk is due*:
//!
//! - `Up`: at once;
//! - `Delay(d)`: at arrival + d (latency, not a throughput limit);
//! - `Throttle(b)`: at most `b` bytes per second;
//! - `Stall`: not at all until the mode changes (the connection stays
//!   open: a black hole, which only keep-alives and receipt timeouts see);
//! - `Cut`: every connection is dropped with a TCP RST, and new ones are
//!   accepted and reset at once, until the mode changes.
//!
//! [`LinkProxy::reset`] drops every connection with a RST once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the link does to the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinkMode {
    Up,
    Cut,
    Stall,
    Delay(Duration),
    Throttle(u64),
}

#[derive(Clone, Copy, Debug)]
struct LinkState {
    mode: LinkMode,
    /// Bumped by [`LinkProxy::reset`]: connections older than it go.
    resets: u64,
}

/// What went through the proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub dropped: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

/// A running proxy; stops with the token given to [`LinkProxy::start`].
pub struct LinkProxy {
    pub addr: SocketAddr,
    pub stats: Arc<ProxyStats>,
    ctl: watch::Sender<LinkState>,
}

impl LinkProxy {
    /// Listens on `listen` and forwards every connection to `upstream`.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        cancel: CancellationToken,
    ) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (ctl, rx) = watch::channel(LinkState {
            mode: LinkMode::Up,
            resets: 0,
        });
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(accept_loop(listener, upstream, rx, stats.clone(), cancel));
        Ok(LinkProxy { addr, stats, ctl })
    }

    pub fn set(&self, mode: LinkMode) {
        self.ctl.send_modify(|s| s.mode = mode);
    }

    pub fn mode(&self) -> LinkMode {
        self.ctl.borrow().mode
    }

    /// Drops every open connection with a RST; new ones are let through.
    pub fn reset(&self) {
        self.ctl.send_modify(|s| s.resets += 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    rx: watch::Receiver<LinkState>,
    stats: Arc<ProxyStats>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if rx.borrow().mode == LinkMode::Cut {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            abort(client);
            continue;
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(
            client,
            upstream,
            rx.clone(),
            stats.clone(),
            cancel.clone(),
        ));
    }
}

/// Closes with a RST instead of a FIN: the peer sees "connection reset".
fn abort(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut rx: watch::Receiver<LinkState>,
    stats: Arc<ProxyStats>,
    cancel: CancellationToken,
) {
    let born = rx.borrow_and_update().resets;
    let server =
        match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(upstream)).await {
            Ok(Ok(s)) => s,
            // The backend is down: so is this connection.
            _ => {
                abort(client);
                return;
            }
        };
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
        // Every close of this connection is a RST: the halves are dropped
        // by the tasks below, whichever way the connection ends.
        let _ = s.set_zero_linger();
    }
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // A writer ends when its side failed, or when its reader ended (the
    // other side closed) and it has passed on what was read before.
    let mut readers = tokio::task::JoinSet::new();
    let mut writers = tokio::task::JoinSet::new();
    for (r, w, counter) in [(cr, sw, true), (sr, cw, false)] {
        let (tx, chunks) = mpsc::channel(256);
        readers.spawn(read_half(r, tx));
        writers.spawn(write_half(w, chunks, rx.clone(), stats.clone(), counter));
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            // Either direction is done: the whole connection goes.
            _ = writers.join_next() => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = *rx.borrow_and_update();
                if s.resets != born || s.mode == LinkMode::Cut {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    readers.abort_all();
    writers.abort_all();
}

async fn read_half(mut r: OwnedReadHalf, tx: mpsc::Sender<(Instant, Vec<u8>)>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn write_half(
    mut w: OwnedWriteHalf,
    mut chunks: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut rx: watch::Receiver<LinkState>,
    stats: Arc<ProxyStats>,
    up: bool,
) {
    // When a throttled link is free for the next byte.
    let mut free_at = Instant::now();
    while let Some((arrived, chunk)) = chunks.recv().await {
        // Wait out a stall, then any delay, judged by the mode in force now.
        loop {
            let mode = rx.borrow_and_update().mode;
            match mode {
                LinkMode::Stall => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
                LinkMode::Delay(d) if Instant::now() < arrived + d => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(arrived + d) => {}
                        changed = rx.changed() => if changed.is_err() { return },
                    }
                }
                _ => break,
            }
        }
        let mode = rx.borrow().mode;
        if let LinkMode::Throttle(rate) = mode {
            // In slices of a tenth of a second's worth, each sent when the
            // ones before it have had their time on the wire.
            let slice = (rate / 10).max(1) as usize;
            for part in chunk.chunks(slice) {
                tokio::time::sleep_until(free_at).await;
                if w.write_all(part).await.is_err() {
                    return;
                }
                free_at = free_at.max(Instant::now())
                    + Duration::from_secs_f64(part.len() as f64 / rate as f64);
            }
        } else if w.write_all(&chunk).await.is_err() {
            return;
        }
        let counter = if up {
            &stats.bytes_up
        } else {
            &stats.bytes_down
        };
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn proxy() -> LinkProxy {
        LinkProxy::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            echo().await,
            CancellationToken::new(),
        )
        .await
        .unwrap()
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn an_up_link_passes_bytes_both_ways() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn a_delayed_link_adds_latency_each_way() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        roundtrip(&mut s, b"warm").await.unwrap();
        p.set(LinkMode::Delay(Duration::from_millis(100)));
        let t = std::time::Instant::now();
        roundtrip(&mut s, b"x").await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn a_cut_resets_open_connections_and_refuses_new_ones_until_it_ends() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        roundtrip(&mut s, b"a").await.unwrap();
        p.set(LinkMode::Cut);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(roundtrip(&mut s, b"b").await.is_err());
        let mut fresh = TcpStream::connect(p.addr).await.unwrap();
        assert!(roundtrip(&mut fresh, b"c").await.is_err());
        p.set(LinkMode::Up);
        let mut after = TcpStream::connect(p.addr).await.unwrap();
        assert_eq!(roundtrip(&mut after, b"d").await.unwrap(), b"d");
    }

    #[tokio::test]
    async fn a_stalled_link_holds_bytes_until_it_ends() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        roundtrip(&mut s, b"a").await.unwrap();
        p.set(LinkMode::Stall);
        s.write_all(b"b").await.unwrap();
        let mut one = [0u8; 1];
        let waited = tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut one)).await;
        assert!(waited.is_err(), "nothing passes a stalled link");
        p.set(LinkMode::Up);
        s.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"b");
    }

    #[tokio::test]
    async fn a_reset_drops_open_connections_once() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        roundtrip(&mut s, b"a").await.unwrap();
        p.reset();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(roundtrip(&mut s, b"b").await.is_err());
        let mut fresh = TcpStream::connect(p.addr).await.unwrap();
        assert_eq!(roundtrip(&mut fresh, b"c").await.unwrap(), b"c");
    }

    #[tokio::test]
    async fn a_throttled_link_keeps_to_its_rate() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        p.set(LinkMode::Throttle(10_000));
        let t = std::time::Instant::now();
        roundtrip(&mut s, &[7u8; 5_000]).await.unwrap();
        // 5 kB at 10 kB/s, the echo following close behind: about 0.5 s.
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
    }
}
