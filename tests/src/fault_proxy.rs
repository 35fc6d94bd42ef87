//! A fault-injecting TCP proxy for the fault tests of ingest against the local stack: it sits between
//! our clients and Milvus Lite (gRPC over one long-lived HTTP/2 connection) or SeaweedFS S3 (pooled
//! HTTP/1.1 keep-alive connections), and breaks the traffic on demand while it flows.
//!
//! A fault applies at once to the connections that are already open, not only to new ones: both
//! clients keep their connections for a long time, so a fault that waited for a new connection would
//! never be seen. [`FaultProxy::fail_first`] is the exception: it fails the next few new connections.
//!
//! What each [`Fault`] models:
//! - [`Fault::Delay`]: a slow network or server, slower than the RPC timeout.
//! - [`Fault::Reset`]: the service is down or a connection was reset (TCP RST).
//! - [`Fault::CloseMidBody`]: a connection reset in the middle of a response ("S3 reset mid-body").
//! - [`Fault::Blackhole`]: a hung peer: connections stay open and nothing moves.
//! - [`Fault::LoseResponses`]: a request that was applied but whose response was lost.
//! - [`Fault::Respond`]: the service answers with an error of its own (S3's `503 SlowDown`, an
//!   expired token), built with [`s3_error_response`].

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Bytes read at once in each direction; also the most a held direction keeps in memory.
const CHUNK_BYTES: usize = 64 * 1024;
/// [`Fault::Respond`] answers after at most this much of a request head.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long [`Fault::Respond`] waits for a request head.
const HEAD_WAIT: Duration = Duration::from_secs(5);
/// A pause this long ends a request body, or the client's last bytes, for [`Fault::Respond`].
const REQUEST_QUIET: Duration = Duration::from_millis(100);
/// The longest a connection spends discarding what its peer still sends before it closes.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// What the proxy does to the traffic; see the module documentation for what each one models.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Passthrough.
    None,
    /// Every chunk, either direction, is held this long before it is forwarded.
    Delay(Duration),
    /// Open connections are closed with a TCP RST (and their upstream side closed); new ones are
    /// accepted and reset at once.
    Reset,
    /// Once `after` more bytes have gone upstream→client on a connection (counted from the
    /// [`FaultProxy::set`], or from the accept for new connections), it is reset.
    CloseMidBody { after: u64 },
    /// Nothing is forwarded either way and nothing is read, so senders feel back-pressure; new
    /// connections are accepted and stall the same way. Held data flows once the fault is lifted.
    Blackhole,
    /// Client→upstream bytes are forwarded (the request is applied); upstream→client bytes are read
    /// and dropped, and the connection stays open, so the server finishes the request undisturbed
    /// and the client waits into its own timeout. A connection that lost bytes is reset when the
    /// fault changes (its stream is no longer whole).
    LoseResponses,
    /// New connections get these bytes after their request (head, and any body that follows at
    /// once), then a close; upstream is never contacted. Open connections are reset.
    Respond(Vec<u8>),
}

/// A proxy on `127.0.0.1` to one upstream. Dropping it stops listening and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<Setting>,
    fail_first: Arc<Mutex<FailFirst>>,
    accepted: Arc<AtomicU64>,
    accept_task: JoinHandle<()>,
}

/// The fault in force; `serial` tells one [`FaultProxy::set`] from the next, even of the same fault.
#[derive(Clone)]
struct Setting {
    fault: Fault,
    serial: u64,
}

/// The fault of [`FaultProxy::fail_first`] and how many new connections are still to get it.
struct FailFirst {
    remaining: u32,
    fault: Fault,
}

impl FaultProxy {
    /// Listens on `127.0.0.1` (a free port) and forwards to `upstream`, without faults.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (faults, receiver) = watch::channel(Setting { fault: Fault::None, serial: 0 });
        let fail_first = Arc::new(Mutex::new(FailFirst { remaining: 0, fault: Fault::None }));
        let accepted = Arc::new(AtomicU64::new(0));
        let accept_task = tokio::spawn(accept(listener, upstream, receiver, fail_first.clone(), accepted.clone()));
        Ok(FaultProxy { addr, faults, fail_first, accepted, accept_task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's address as a URL, e.g. `http://127.0.0.1:PORT` for `scheme` "http".
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// Applies `fault` now, to the open connections and the new ones.
    pub fn set(&self, fault: Fault) {
        self.faults.send_modify(|setting| {
            setting.fault = fault;
            setting.serial += 1;
        });
    }

    /// Back to passthrough ([`Fault::None`]).
    pub fn clear(&self) {
        self.set(Fault::None);
    }

    /// The next `n` new connections get `fault` for their whole life, whatever [`FaultProxy::set`]
    /// says; the connections already open and those after them are unaffected.
    pub fn fail_first(&self, n: u32, fault: Fault) {
        *self.fail_first.lock().unwrap_or_else(PoisonError::into_inner) = FailFirst { remaining: n, fault };
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    /// The accept task owns the connection tasks: aborting it drops the listener and every connection.
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// An S3 error response ("HTTP 503 SlowDown", "ExpiredToken") for [`Fault::Respond`]: HTTP/1.1 with
/// the S3 XML error body, its `Content-Length`, and `Connection: close`.
pub fn s3_error_response(status: u16, reason: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>{}</Code><Message>{}</Message><RequestId>fault-proxy</RequestId></Error>"#,
        xml_escape(code),
        xml_escape(message)
    );
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    [head, body].concat().into_bytes()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Setting>,
    fail_first: Arc<Mutex<FailFirst>>,
    accepted: Arc<AtomicU64>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = listener.accept() => match incoming {
                Ok((client, _)) => {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let faults = match take_fail_first(&fail_first) {
                        // A channel whose sender is gone: the fault never changes.
                        Some(fault) => watch::channel(Setting { fault, serial: 0 }).1,
                        None => faults.clone(),
                    };
                    connections.spawn(serve(client, upstream, faults));
                }
                // Out of file descriptors and the like: wait rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

fn take_fail_first(fail_first: &Mutex<FailFirst>) -> Option<Fault> {
    let mut fail_first = fail_first.lock().unwrap_or_else(PoisonError::into_inner);
    fail_first.remaining = fail_first.remaining.checked_sub(1)?;
    Some(fail_first.fault.clone())
}

async fn serve(client: TcpStream, upstream: SocketAddr, mut faults: watch::Receiver<Setting>) {
    let fault = faults.borrow_and_update().fault.clone();
    match fault {
        Fault::Reset => reset(client),
        Fault::Respond(response) => respond(client, &response).await,
        _ => match TcpStream::connect(upstream).await {
            Ok(upstream) => relay(client, upstream, faults).await,
            Err(_) => reset(client),
        },
    }
}

/// Closes with a TCP RST rather than a FIN (`SO_LINGER` 0): the peer's next read fails with
/// "connection reset".
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Reads the request (so that closing does not reset it), answers `response`, and waits for the
/// client to close.
async fn respond(mut client: TcpStream, response: &[u8]) {
    let _ = tokio::time::timeout(HEAD_WAIT, read_head(&mut client)).await;
    discard_until_quiet(&mut client, REQUEST_QUIET).await;
    if client.write_all(response).await.is_ok() && client.shutdown().await.is_ok() {
        discard_until_quiet(&mut client, REQUEST_QUIET).await;
    }
}

/// Reads up to the end of a request head (`\r\n\r\n`), the client's close, or [`MAX_HEAD_BYTES`].
async fn read_head(client: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buffer = [0; 4096];
    while head.len() < MAX_HEAD_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Reads and drops what `stream` sends until it closes, pauses for `quiet`, or [`DRAIN_LIMIT`] passes.
async fn discard_until_quiet(stream: &mut TcpStream, quiet: Duration) {
    let mut buffer = vec![0; CHUNK_BYTES];
    let _ = tokio::time::timeout(DRAIN_LIMIT, async {
        while let Ok(Ok(1..)) = tokio::time::timeout(quiet, stream.read(&mut buffer)).await {}
    })
    .await;
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    ToUpstream,
    ToClient,
}

/// How a pump ended: its source closed (the close was passed on), or the connection must be reset.
#[derive(PartialEq)]
enum End {
    Closed,
    Reset,
}

async fn relay(mut client: TcpStream, mut upstream: TcpStream, faults: watch::Receiver<Setting>) {
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let end = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let requests = pump(Direction::ToUpstream, client_read, upstream_write, faults.clone());
        let responses = pump(Direction::ToClient, upstream_read, client_write, faults);
        both_closed_or_reset(requests, responses).await
    };
    match end {
        End::Closed => {}
        End::Reset => reset(client),
    }
}

/// Runs both pumps until both sources closed, or one of them ends the connection (which stops the other).
async fn both_closed_or_reset(requests: impl Future<Output = End>, responses: impl Future<Output = End>) -> End {
    tokio::pin!(requests, responses);
    let (mut requests_open, mut responses_open) = (true, true);
    while requests_open || responses_open {
        let end = tokio::select! {
            end = &mut requests, if requests_open => { requests_open = false; end }
            end = &mut responses, if responses_open => { responses_open = false; end }
        };
        if end != End::Closed {
            return end;
        }
    }
    End::Closed
}

/// What a pump does next under the fault in force.
enum Step {
    /// Forward at most this many bytes of the chunk.
    Forward(usize),
    Delay(Duration),
    /// Wait (without reading) until the fault changes.
    Hold,
    /// Read and drop (a lost response).
    Discard,
    Kill,
}

/// Bytes the client may still get under [`Fault::CloseMidBody`], for the `set` of serial `serial`.
#[derive(Default)]
struct Allowance {
    serial: Option<u64>,
    remaining: u64,
}

fn step(direction: Direction, setting: &Setting, allowance: &mut Allowance) -> Step {
    match (&setting.fault, direction) {
        (Fault::None, _) | (Fault::LoseResponses | Fault::CloseMidBody { .. }, Direction::ToUpstream) => {
            Step::Forward(usize::MAX)
        }
        (Fault::Delay(delay), _) => Step::Delay(*delay),
        (Fault::Reset | Fault::Respond(_), _) => Step::Kill,
        (Fault::Blackhole, _) => Step::Hold,
        (Fault::LoseResponses, Direction::ToClient) => Step::Discard,
        (Fault::CloseMidBody { after }, Direction::ToClient) => {
            if allowance.serial != Some(setting.serial) {
                *allowance = Allowance { serial: Some(setting.serial), remaining: *after };
            }
            match allowance.remaining {
                0 => Step::Kill,
                n => Step::Forward(usize::try_from(n).unwrap_or(usize::MAX)),
            }
        }
    }
}

/// Copies `from` to `to` chunk by chunk, each chunk as the fault says at that moment; wakes up when
/// the fault changes, so that a held chunk flows or the connection is reset at once.
async fn pump(
    direction: Direction,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut faults: watch::Receiver<Setting>,
) -> End {
    let mut buffer = vec![0; CHUNK_BYTES];
    let mut allowance = Allowance::default();
    let mut lost_bytes = false;
    loop {
        let read = loop {
            if lost_bytes && faults.borrow().fault != Fault::LoseResponses {
                return End::Reset;
            }
            let next = step(direction, &faults.borrow_and_update(), &mut allowance);
            match next {
                Step::Kill => return End::Reset,
                // Not reading is what makes a blackholed sender stall instead of filling memory.
                Step::Hold => fault_changed(&mut faults).await,
                _ => tokio::select! {
                    read = from.read(&mut buffer) => break read,
                    () = fault_changed(&mut faults) => {}
                },
            }
        };
        let mut chunk = match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Closed;
            }
            Ok(n) => &buffer[..n],
            Err(_) => return End::Reset,
        };
        while !chunk.is_empty() {
            let next = step(direction, &faults.borrow_and_update(), &mut allowance);
            let allowed = match next {
                Step::Kill => return End::Reset,
                Step::Discard => {
                    lost_bytes = true;
                    break;
                }
                Step::Hold => {
                    fault_changed(&mut faults).await;
                    continue;
                }
                Step::Delay(delay) => tokio::select! {
                    () = tokio::time::sleep(delay) => chunk.len(),
                    () = fault_changed(&mut faults) => continue,
                },
                Step::Forward(limit) => chunk.len().min(limit),
            };
            if !write_all(&mut to, &chunk[..allowed], &mut faults).await {
                return End::Reset;
            }
            allowance.remaining = allowance.remaining.saturating_sub(allowed as u64);
            chunk = &chunk[allowed..];
        }
    }
}

/// Writes all of `bytes`; false when the write fails or the fault turns to one that resets.
async fn write_all(to: &mut (impl AsyncWrite + Unpin), bytes: &[u8], faults: &mut watch::Receiver<Setting>) -> bool {
    let mut written = 0;
    while written < bytes.len() {
        tokio::select! {
            result = to.write(&bytes[written..]) => match result {
                Ok(0) | Err(_) => return false,
                Ok(n) => written += n,
            },
            () = fault_changed(faults) => {
                if matches!(faults.borrow().fault, Fault::Reset | Fault::Respond(_)) {
                    return false;
                }
            }
        }
    }
    true
}

/// Resolves when the fault changes; never when it cannot change (a [`FaultProxy::fail_first`] connection).
async fn fault_changed(faults: &mut watch::Receiver<Setting>) {
    if faults.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(5);

    /// A local upstream that echoes what it reads or, with `reply`, answers every read with it; it
    /// records what it received and counts its connections.
    struct Upstream {
        addr: SocketAddr,
        accepted: Arc<AtomicU64>,
        received: Arc<Mutex<Vec<u8>>>,
    }

    impl Upstream {
        async fn start(reply: Option<Vec<u8>>) -> Upstream {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            let upstream =
                Upstream { addr: listener.local_addr().unwrap(), accepted: Arc::default(), received: Arc::default() };
            let (accepted, received) = (upstream.accepted.clone(), upstream.received.clone());
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (received, reply) = (received.clone(), reply.clone());
                    tokio::spawn(async move {
                        let mut buffer = vec![0; CHUNK_BYTES];
                        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                            received.lock().unwrap().extend_from_slice(&buffer[..n]);
                            let answer = reply.as_deref().unwrap_or(&buffer[..n]);
                            if stream.write_all(answer).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            upstream
        }

        fn received(&self) -> Vec<u8> {
            self.received.lock().unwrap().clone()
        }
    }

    async fn connect(proxy: &FaultProxy) -> TcpStream {
        TcpStream::connect(proxy.addr()).await.unwrap()
    }

    async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
        stream.write_all(bytes).await.unwrap();
        let mut answer = vec![0; bytes.len()];
        tokio::time::timeout(WAIT, stream.read_exact(&mut answer)).await.expect("an answer in time").unwrap();
        answer
    }

    /// Everything the stream delivers until it ends, and how it ended (EOF or an error).
    async fn read_until_end(stream: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
        let mut received = Vec::new();
        let mut buffer = vec![0; CHUNK_BYTES];
        loop {
            match tokio::time::timeout(WAIT, stream.read(&mut buffer)).await.expect("the connection ends") {
                Ok(0) => return (received, Ok(())),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                Err(e) => return (received, Err(e)),
            }
        }
    }

    async fn assert_reset(stream: &mut TcpStream) {
        let (received, end) = read_until_end(stream).await;
        assert!(received.is_empty(), "got {} bytes", received.len());
        assert_eq!(end.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));
    }

    async fn stalls(stream: &mut TcpStream) -> bool {
        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut [0; 16])).await.is_err()
    }

    #[tokio::test]
    async fn passthrough_relays_both_ways_in_many_chunks_and_passes_the_close_on() {
        let echo = Upstream::start(None).await;
        let proxy = FaultProxy::start(echo.addr).await.unwrap();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut read, mut write) = connect(&proxy).await.into_split();
        let sent = payload.clone();
        tokio::spawn(async move {
            write.write_all(&sent).await.unwrap();
            write.shutdown().await.unwrap();
        });
        let mut echoed = Vec::new();
        tokio::time::timeout(WAIT, read.read_to_end(&mut echoed)).await.expect("the echo ends").unwrap();
        assert!(echoed == payload, "echoed {} of {} bytes, or others", echoed.len(), payload.len());
        assert_eq!((proxy.connections(), proxy.url("http")), (1, format!("http://{}", proxy.addr())));
    }

    #[tokio::test]
    async fn delay_holds_chunks_on_open_connections_and_held_data_flows_when_cleared() {
        let echo = Upstream::start(None).await;
        let proxy = FaultProxy::start(echo.addr).await.unwrap();
        let mut client = connect(&proxy).await;
        assert_eq!(round_trip(&mut client, b"warm").await, b"warm");

        proxy.set(Fault::Delay(Duration::from_millis(300)));
        let started = Instant::now();
        assert_eq!(round_trip(&mut client, b"slow").await, b"slow");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(600) && elapsed < WAIT, "held both ways: {elapsed:?}");

        proxy.set(Fault::Delay(Duration::from_secs(60)));
        client.write_all(b"held").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.clear();
        let mut held = [0; 4];
        tokio::time::timeout(WAIT, client.read_exact(&mut held)).await.expect("flows once cleared").unwrap();
        assert_eq!(&held, b"held");
    }

    #[tokio::test]
    async fn reset_resets_open_connections_and_new_ones_until_cleared() {
        let echo = Upstream::start(None).await;
        let proxy = FaultProxy::start(echo.addr).await.unwrap();
        let mut open = connect(&proxy).await;
        assert_eq!(round_trip(&mut open, b"warm").await, b"warm");

        proxy.set(Fault::Reset);
        assert_reset(&mut open).await;
        assert_reset(&mut connect(&proxy).await).await;

        proxy.clear();
        assert_eq!(round_trip(&mut connect(&proxy).await, b"back").await, b"back");
    }

    #[tokio::test]
    async fn close_mid_body_delivers_exactly_the_allowance_then_resets() {
        // New connections: counted from the accept, across chunks.
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let http = Upstream::start(Some(body.clone())).await;
        let proxy = FaultProxy::start(http.addr).await.unwrap();
        proxy.set(Fault::CloseMidBody { after: 70_000 });
        let mut client = connect(&proxy).await;
        client.write_all(b"GET /bucket/key HTTP/1.1\r\n\r\n").await.unwrap();
        let (received, end) = read_until_end(&mut client).await;
        assert!(received == body[..70_000], "got {} bytes", received.len());
        assert_eq!(end.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));

        // Open connections: counted from the set.
        let echo = Upstream::start(None).await;
        let proxy = FaultProxy::start(echo.addr).await.unwrap();
        let mut open = connect(&proxy).await;
        assert_eq!(round_trip(&mut open, b"0123456789").await, b"0123456789");
        proxy.set(Fault::CloseMidBody { after: 4 });
        open.write_all(b"abcdefghij").await.unwrap();
        let (received, end) = read_until_end(&mut open).await;
        assert_eq!((received.as_slice(), end.is_err()), (&b"abcd"[..], true));
    }

    #[tokio::test]
    async fn blackhole_stalls_open_and_new_connections_without_reading_until_cleared() {
        let echo = Upstream::start(None).await;
        let proxy = FaultProxy::start(echo.addr).await.unwrap();
        let mut open = connect(&proxy).await;
        assert_eq!(round_trip(&mut open, b"warm").await, b"warm");

        proxy.set(Fault::Blackhole);
        let mut new = connect(&proxy).await;
        open.write_all(b"ping").await.unwrap();
        new.write_all(b"pong").await.unwrap();
        assert!(stalls(&mut open).await && stalls(&mut new).await);
        assert_eq!(echo.received(), b"warm");
        // Back-pressure: the proxy stops reading, so a big write cannot complete.
        let mut flood = connect(&proxy).await;
        let big = vec![0; 32 << 20];
        assert!(tokio::time::timeout(Duration::from_millis(500), flood.write_all(&big)).await.is_err());
        drop(flood);

        proxy.clear();
        let mut answers = ([0; 4], [0; 4]);
        tokio::time::timeout(WAIT, open.read_exact(&mut answers.0)).await.expect("flows once cleared").unwrap();
        tokio::time::timeout(WAIT, new.read_exact(&mut answers.1)).await.expect("flows once cleared").unwrap();
        assert_eq!(answers, (*b"ping", *b"pong"));
    }

    #[tokio::test]
    async fn lose_responses_delivers_requests_but_no_response_and_resets_once_lifted() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
        let http = Upstream::start(Some(reply.clone())).await;
        let proxy = FaultProxy::start(http.addr).await.unwrap();
        let request = b"POST /upsert HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let mut open = connect(&proxy).await;
        open.write_all(request).await.unwrap();
        let mut answer = vec![0; reply.len()];
        tokio::time::timeout(WAIT, open.read_exact(&mut answer)).await.expect("an answer in time").unwrap();
        assert_eq!(answer, reply);

        proxy.set(Fault::LoseResponses);
        open.write_all(request).await.unwrap();
        let mut byte = [0; 1];
        let silent = tokio::time::timeout(Duration::from_millis(500), open.read(&mut byte)).await;
        assert!(silent.is_err(), "no response reaches the client, and the connection stays open");
        assert_eq!(http.received(), [&request[..], &request[..]].concat());
        // The stream lost bytes: when the fault is lifted, the connection is reset, not resumed.
        proxy.clear();
        assert_reset(&mut open).await;
    }

    #[tokio::test]
    async fn respond_answers_new_connections_without_upstream_and_resets_open_ones() {
        let echo = Upstream::start(None).await;
        let proxy = FaultProxy::start(echo.addr).await.unwrap();
        let mut open = connect(&proxy).await;
        assert_eq!(round_trip(&mut open, b"warm").await, b"warm");

        let canned = s3_error_response(503, "Slow Down", "SlowDown", "Please reduce your request rate.");
        proxy.set(Fault::Respond(canned.clone()));
        assert_reset(&mut open).await;
        let mut client = connect(&proxy).await;
        client.write_all(b"PUT /bucket/key HTTP/1.1\r\nHost: s3\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
        let (received, end) = read_until_end(&mut client).await;
        assert_eq!((String::from_utf8_lossy(&received), end.is_ok()), (String::from_utf8_lossy(&canned), true));
        assert_eq!(echo.accepted.load(Ordering::SeqCst), 1, "only the connection opened before the fault");
    }

    #[tokio::test]
    async fn fail_first_fails_exactly_the_next_new_connections() {
        let echo = Upstream::start(None).await;
        let proxy = FaultProxy::start(echo.addr).await.unwrap();
        let mut open = connect(&proxy).await;
        assert_eq!(round_trip(&mut open, b"warm").await, b"warm");

        proxy.fail_first(2, Fault::Reset);
        assert_reset(&mut connect(&proxy).await).await;
        assert_reset(&mut connect(&proxy).await).await;
        assert_eq!(round_trip(&mut connect(&proxy).await, b"third").await, b"third");
        assert_eq!(round_trip(&mut open, b"still").await, b"still");
        assert_eq!(proxy.connections(), 4);
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections_and_stops_listening() {
        let echo = Upstream::start(None).await;
        let proxy = FaultProxy::start(echo.addr).await.unwrap();
        let mut open = connect(&proxy).await;
        assert_eq!(round_trip(&mut open, b"warm").await, b"warm");
        let addr = proxy.addr();
        drop(proxy);
        let (received, _end) = read_until_end(&mut open).await;
        assert!(received.is_empty());
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }

    #[test]
    fn s3_error_response_is_http_with_a_matching_content_length_and_escaped_xml() {
        let response = s3_error_response(403, "Forbidden", "ExpiredToken", "token <t> & \"q\" expired");
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 403 Forbidden"));
        let headers: HashMap<String, &str> =
            lines.map(|l| l.split_once(": ").expect("a header")).map(|(k, v)| (k.to_lowercase(), v)).collect();
        assert_eq!(headers["content-length"], body.len().to_string());
        assert_eq!((headers["content-type"], headers["connection"]), ("application/xml", "close"));
        assert_eq!(
            body,
            r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>ExpiredToken</Code><Message>token &lt;t&gt; &amp; &quot;q&quot; expired</Message><RequestId>fault-proxy</RequestId></Error>"#
        );
    }
}
