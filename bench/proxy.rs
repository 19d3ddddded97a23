//! A small fault-injecting HTTP/1.1 proxy that sits between the AWS SDK and
//! moto, for benchmarks and integration tests.
//!
//! Include it with `#[path = "../bench/proxy.rs"] mod proxy;`.
//!
//! ```ignore
//! let moto = common::Moto::start();
//! let proxy = proxy::Proxy::start(&moto.endpoint, proxy::ProxyConfig::default()).await;
//! // point the SDK (or AWS_ENDPOINT_URL) at proxy.url() instead of moto.endpoint
//! assert_eq!(proxy.action_counts()["DescribeVpcs"], 1);
//! ```
//!
//! What it does, per request, in order:
//!
//! 1. records it ([`RequestRecord`]: arrival time, method, path, SigV4
//!    service, AWS action, body) and decides, from the seeded PRNG, whether it
//!    is faulted;
//! 2. sleeps [`ProxyConfig::delay`] (every request, faulted or not: it
//!    stands for the network round trip to a real region);
//! 3. either forwards it to the upstream, unchanged (method, path, query,
//!    headers including `Host` and the SigV4 ones, body), and passes the
//!    response back byte for byte; or answers with the fault.
//!
//! Faults are injected BEFORE forwarding by default: a faulted request never
//! reaches moto, so a faulted non-idempotent call (CreateVpc) has no side
//! effect and a retry is always safe. With [`ProxyConfig::fault_after_forward`]
//! the request IS forwarded, moto executes it, and its response is thrown
//! away and replaced by the fault: the "lost response" case that crash-safety
//! and idempotency tests need (the resource exists, the client was told it
//! failed, or never heard back).
//!
//! Why not axum: dropping a connection without writing a response is the
//! one thing a hyper-based server makes awkward (a handler can only panic or
//! send a truncated body). A proxy needs very little of HTTP/1.1, so this is
//! a raw `tokio` listener with a minimal parser: request line, headers,
//! `Content-Length` or chunked bodies, `Expect: 100-continue`, keep-alive.
//! Upstream calls go through `reqwest` (no redirects, no decompression, no
//! system proxy), which keeps the `Host` header we give it.
//!
//! The proxy runs on its own thread with its own single-threaded tokio
//! runtime, so it keeps serving while the caller blocks (a benchmark waiting
//! on a `devstack` subprocess inside a current-thread `#[tokio::test]`), and
//! it stops, closing its port, when the [`Proxy`] is dropped.
//!
//! A gate stops the world at a chosen point: [`Proxy::hold_after`]`(n)` lets
//! the next `n` requests through to the upstream and holds every later one
//! (not forwarded, no response) until [`Proxy::release_hold`];
//! [`Proxy::wait_held`] blocks until a request is being held and every
//! request let through has had its answer from the upstream. A crash test
//! kills its client at that moment, knowing that exactly `n` requests
//! reached moto and were executed there.
//!
//! Determinism: the fault decisions are a pure function of the seed and the
//! order in which requests arrive since the last [`Proxy::start`] or
//! [`Proxy::set_config`] (each request draws exactly two numbers, whatever
//! the rate, so with one seed the requests faulted at rate 0.2 are a subset of
//! those faulted at rate 0.3). Sequential callers therefore see the same
//! faults on every run; concurrent callers see the same number of faults
//! spread over a possibly different interleaving.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;

/// Largest request line or header line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// Largest number of header lines accepted.
const MAX_HEADERS: usize = 200;
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What a faulted request gets instead of the upstream's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// HTTP 503 with a `ServiceUnavailable` error body in the request's
    /// protocol (JSON for `X-Amz-Target`/JSON requests, EC2's
    /// `<Response><Errors>` XML for EC2, `<ErrorResponse>` XML for other
    /// query services such as IAM and STS). Retryable by status code.
    Status503,
    /// HTTP 400 with the service's throttling code: `ThrottlingException`
    /// for JSON protocols (DynamoDB's fully qualified
    /// `com.amazonaws.dynamodb.v20120810#ThrottlingException`),
    /// `RequestLimitExceeded` for EC2, `Throttling` for other query
    /// services. Real EC2 sends its throttle as a 503; a 400 here means the
    /// error code is the only thing that makes it retryable, which is the
    /// stricter test of the SDK's classification.
    Throttling,
    /// The connection is closed without any response. The SDK sees an I/O
    /// error (connection closed before message completed) and, with retries
    /// on, retries it as transient.
    Drop,
    /// HTTP 400 with the service's permission refusal
    /// (`UnauthorizedOperation` for EC2, `AccessDeniedException` for JSON
    /// protocols, `AccessDenied` for other query services), worded as AWS
    /// words it. Not retryable; for error-message tests (moto does not
    /// enforce IAM by default). Never in the default fault list.
    AccessDenied,
}

/// Runtime behaviour of the proxy; can be changed with [`Proxy::set_config`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Added to every request (faulted or not) before it is forwarded.
    /// Default 50 ms, roughly a round trip to a nearby region.
    pub delay: Duration,
    /// Probability in `0.0..=1.0` that a request is faulted (clamped; NaN
    /// counts as 0). Default 0.
    pub fault_rate: f64,
    /// Faults to pick from, uniformly, for a faulted request. An empty list
    /// disables faults whatever the rate. Default: all three.
    pub faults: Vec<Fault>,
    /// PRNG seed for the fault decisions.
    pub seed: u64,
    /// Forward faulted requests anyway and replace moto's response with the
    /// fault (moto executed the call; the client never learns it). Default
    /// false: faulted requests never reach moto.
    pub fault_after_forward: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            delay: Duration::from_millis(50),
            fault_rate: 0.0,
            faults: vec![Fault::Status503, Fault::Throttling, Fault::Drop],
            seed: 0x5EED,
            fault_after_forward: false,
        }
    }
}

impl ProxyConfig {
    /// No delay, no faults: a pure counting pass-through.
    pub fn transparent() -> Self {
        ProxyConfig {
            delay: Duration::ZERO,
            ..ProxyConfig::default()
        }
    }

    /// This config with the given delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// This config faulting `rate` of the requests with one of `faults`.
    pub fn with_faults(mut self, rate: f64, faults: &[Fault]) -> Self {
        self.fault_rate = rate;
        self.faults = faults.to_vec();
        self
    }

    /// This config with the given seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// This config with [`ProxyConfig::fault_after_forward`] set.
    pub fn after_forward(mut self, yes: bool) -> Self {
        self.fault_after_forward = yes;
        self
    }

    /// The fault decisions for the first `n` requests a proxy started (or
    /// reconfigured) with this config will draw, in arrival order. A test
    /// uses it to pick a seed that faults exactly the requests it means to,
    /// e.g. only the first attempt of a call and not its retry.
    pub fn preview(&self, n: usize) -> Vec<Option<Fault>> {
        let mut state = State::new(self.clone());
        (0..n).map(|_| state.draw_fault()).collect()
    }
}

/// One request the proxy received.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// 0-based arrival index since start or the last [`Proxy::reset_count`].
    pub seq: usize,
    /// When the request was fully read (before the delay).
    pub received: Instant,
    /// HTTP method.
    pub method: String,
    /// Request target as sent: path and query.
    pub path: String,
    /// Service from the SigV4 credential scope (`ec2`, `dynamodb`, `iam`),
    /// if the request was signed.
    pub service: Option<String>,
    /// The AWS action: the operation part of `X-Amz-Target`
    /// (`DynamoDB_20120810.ListTables` gives `ListTables`), else the
    /// `Action=` query or form parameter (`DescribeVpcs`), else the
    /// operation of an RPCv2 path (`/service/S/operation/Op`), else
    /// `"METHOD /path"`.
    pub action: String,
    /// The request body as received (empty when there was none), so a
    /// test can see what an action asked for (the items of a
    /// `TransactWriteItems`, say), not only its name.
    pub body: Vec<u8>,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// Whether the request was sent on to the upstream (false for a fault
    /// injected before forwarding, and for a request still held at the gate).
    pub forwarded: bool,
    /// Whether the request arrived while the gate was closed (see
    /// [`Proxy::hold_after`]); it may have been released since.
    pub held: bool,
}

/// A running proxy; stops (and frees its port) on drop.
pub struct Proxy {
    addr: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `upstream`
    /// (a base URL such as `http://127.0.0.1:5000`; any path in it is
    /// prefixed to every request's path).
    ///
    /// Async for the callers' convenience; the proxy runs on its own thread
    /// and runtime either way (see the module docs).
    pub async fn start(upstream: &str, cfg: ProxyConfig) -> Proxy {
        Proxy::start_blocking(upstream, cfg)
    }

    /// [`Proxy::start`] for synchronous callers.
    pub fn start_blocking(upstream: &str, cfg: ProxyConfig) -> Proxy {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("proxy: bind a free 127.0.0.1 port");
        listener
            .set_nonblocking(true)
            .expect("proxy: make the listener non-blocking");
        let addr = listener.local_addr().expect("proxy: listener address");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            state: Mutex::new(State::new(cfg)),
            forwarded: AtomicUsize::new(0),
            changed: Condvar::new(),
            release: tokio::sync::watch::channel(0).0,
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || run(listener, thread_shared, rx))
            .expect("proxy: spawn the proxy thread");
        Proxy {
            addr,
            url: format!("http://{addr}"),
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Base URL to use as the AWS endpoint, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received since start or the last [`Proxy::reset_count`],
    /// faulted ones included (each SDK retry attempt counts).
    pub fn request_count(&self) -> usize {
        self.shared.lock().records.len()
    }

    /// Requests that reached the upstream since start or the last reset.
    pub fn forwarded_count(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Forgets all recorded requests and zeroes both counts. Does not
    /// touch the config or the PRNG.
    pub fn reset_count(&self) {
        let mut state = self.shared.lock();
        state.records.clear();
        state.epoch += 1;
        state.let_through = 0;
        self.shared.forwarded.store(0, Ordering::SeqCst);
    }

    /// Closes the gate once `n` requests have been let through to the
    /// upstream since start or the last [`Proxy::reset_count`] (the count
    /// [`Proxy::forwarded_count`] reaches once their delays have elapsed):
    /// every request arriving after that is held (not forwarded, not
    /// answered, whatever its fault decision) until [`Proxy::release_hold`].
    /// If `n` requests already went through, the gate closes at once.
    /// Requests faulted before forwarding don't count towards `n` (they
    /// never reach the upstream).
    ///
    /// A held request whose client has gone away stays held; release it
    /// and it is forwarded all the same (as a request already on the wire
    /// would be), so a crash test that must not see it drops the proxy
    /// instead of releasing.
    pub fn hold_after(&self, n: usize) {
        self.shared.lock().hold_after = Some(n);
        self.shared.changed.notify_all();
    }

    /// Opens the gate: every held request carries on (delay, then forward
    /// or its fault), and no further request is held.
    pub fn release_hold(&self) {
        let generation = {
            let mut state = self.shared.lock();
            state.hold_after = None;
            state.generation += 1;
            state.generation
        };
        self.shared.release.send_replace(generation);
        self.shared.changed.notify_all();
    }

    /// Requests being held at the gate right now.
    pub fn held_count(&self) -> usize {
        self.shared.lock().held
    }

    /// Blocks the calling thread until at least one request is held at the
    /// gate and every request let through has had its answer from the
    /// upstream (so the upstream has executed exactly the requests let
    /// through, and nothing is on its way there). True if that happened
    /// within `timeout`, false otherwise.
    ///
    /// It blocks a thread, not a task: from async code, call it through
    /// `tokio::task::spawn_blocking` (or from a multi-threaded runtime), so
    /// the client being held can still make progress.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| !s.is_holding())
            .unwrap_or_else(|e| e.into_inner());
        state.is_holding()
    }

    /// Faults the next request for `action` (`CreateVpc`) with `fault`,
    /// once, whatever the fault rate. With `after_forward` the request
    /// reaches the upstream first and only its answer is replaced: the lost
    /// response of one chosen call.
    pub fn fault_next(&self, action: &str, fault: Fault, after_forward: bool) {
        self.shared
            .lock()
            .targeted
            .push((action.to_string(), fault, after_forward));
    }

    /// Replaces the config for requests arriving from now on, and reseeds
    /// the PRNG from `cfg.seed`.
    pub fn set_config(&self, cfg: ProxyConfig) {
        let mut state = self.shared.lock();
        state.rng = XorShift::new(cfg.seed);
        state.config = cfg;
    }

    /// The current config.
    pub fn config(&self) -> ProxyConfig {
        self.shared.lock().config.clone()
    }

    /// Every request received since start or the last reset, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().records.clone()
    }

    /// Number of requests per [`RequestRecord::action`] since start or the
    /// last reset (faulted attempts included).
    pub fn action_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in self.shared.lock().records.iter() {
            *counts.entry(r.action.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Number of faults injected since start or the last reset.
    pub fn fault_count(&self) -> usize {
        self.shared
            .lock()
            .records
            .iter()
            .filter(|r| r.fault.is_some())
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Shared {
    upstream: String,
    state: Mutex<State>,
    forwarded: AtomicUsize,
    /// Signalled whenever the gate's counters change (for `wait_held`).
    changed: Condvar,
    /// The release generation; held requests wait for it to pass theirs.
    release: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct State {
    config: ProxyConfig,
    rng: XorShift,
    records: Vec<RequestRecord>,
    /// Bumped by `reset_count`, so a request released after a reset does
    /// not touch a record that is no longer its own.
    epoch: u64,
    /// The gate: hold requests once this many were let through.
    hold_after: Option<usize>,
    /// Requests let through towards the upstream since start or reset.
    let_through: usize,
    /// Requests let through whose upstream answer has not come back yet
    /// (in their delay, or being forwarded).
    in_flight: usize,
    /// Requests waiting at the gate.
    held: usize,
    /// Number of `release_hold` calls so far.
    generation: u64,
    /// One-shot faults aimed at an action (see [`Proxy::fault_next`]):
    /// action, fault, whether it is injected after forwarding.
    targeted: Vec<(String, Fault, bool)>,
}

/// What to do with one request, decided when it arrives.
struct Decision {
    delay: Duration,
    fault: Option<Fault>,
    forward: bool,
    seq: usize,
    epoch: u64,
    /// `Some(generation)` when held: it waits for a later generation.
    held: Option<u64>,
}

impl State {
    fn new(config: ProxyConfig) -> State {
        State {
            rng: XorShift::new(config.seed),
            config,
            records: Vec::new(),
            epoch: 0,
            hold_after: None,
            let_through: 0,
            in_flight: 0,
            held: 0,
            generation: 0,
            targeted: Vec::new(),
        }
    }

    /// A request is held and nothing let through is still under way.
    fn is_holding(&self) -> bool {
        self.held > 0 && self.in_flight == 0
    }

    /// Counts a request as let through towards the upstream.
    fn let_through(&mut self, forward: bool) {
        if forward {
            self.let_through += 1;
            self.in_flight += 1;
        }
    }

    /// A held request is released: it now counts as let through.
    fn released(&mut self, seq: usize, epoch: u64, forward: bool) {
        self.held = self.held.saturating_sub(1);
        self.let_through(forward);
        if epoch == self.epoch {
            if let Some(r) = self.records.get_mut(seq) {
                r.forwarded = forward;
            }
        }
    }

    /// Draws the fault decision for the next request (always two draws).
    fn draw_fault(&mut self) -> Option<Fault> {
        let roll = self.rng.next_f64();
        let pick = self.rng.next_u64();
        let rate = if self.config.fault_rate.is_nan() {
            0.0
        } else {
            self.config.fault_rate.clamp(0.0, 1.0)
        };
        if self.config.faults.is_empty() || roll >= rate {
            return None;
        }
        let len = self.config.faults.len() as u64;
        // In bounds: pick % len < len, and len came from a usize.
        Some(self.config.faults[(pick % len) as usize])
    }

    fn admit(&mut self, info: RequestInfo, received: Instant) -> Decision {
        // Drawn whatever happens next, so a targeted fault does not shift
        // the seeded decisions of the requests after it.
        let drawn = self.draw_fault();
        let targeted = self
            .targeted
            .iter()
            .position(|(action, _, _)| *action == info.action)
            .map(|i| self.targeted.remove(i));
        let (fault, forward) = match targeted {
            Some((_, fault, after_forward)) => (Some(fault), after_forward),
            None => (drawn, drawn.is_none() || self.config.fault_after_forward),
        };
        let held = self.hold_after.is_some_and(|n| self.let_through >= n);
        if held {
            self.held += 1;
        } else {
            self.let_through(forward);
        }
        let seq = self.records.len();
        self.records.push(RequestRecord {
            seq,
            received,
            method: info.method,
            path: info.path,
            service: info.service,
            action: info.action,
            body: info.body,
            fault,
            forwarded: forward && !held,
            held,
        });
        Decision {
            delay: self.config.delay,
            fault,
            forward,
            seq,
            epoch: self.epoch,
            held: held.then_some(self.generation),
        }
    }
}

/// xorshift64* seeded through splitmix64 (so seeds 0, 1, 2 are all fine).
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The proxy thread: its own runtime, an accept loop, one task per
/// connection; everything is cancelled when `shutdown` fires or its sender
/// is dropped.
fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("proxy: build the proxy runtime");
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("proxy: register the listener");
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .http1_only()
            .build()
            .expect("proxy: build the upstream HTTP client");
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        connections.spawn(serve_connection(
                            stream,
                            Arc::clone(&shared),
                            client.clone(),
                        ));
                    }
                    // Out of file descriptors and the like: back off, retry.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    method: String,
    target: String,
    http10: bool,
    headers: Vec<(String, Vec<u8>)>,
    /// `None` when the request had neither `Content-Length` nor chunked body.
    body: Option<Vec<u8>>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    }

    fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .any(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(token))
            })
    }

    fn keep_alive(&self) -> bool {
        if self.http10 {
            self.connection_has("keep-alive")
        } else {
            !self.connection_has("close")
        }
    }

    /// The target in origin form (`/path?query`), even if the client sent
    /// an absolute URI.
    fn origin_target(&self) -> &str {
        let t = self.target.as_str();
        for scheme in ["http://", "https://"] {
            if let Some(rest) = t.strip_prefix(scheme) {
                return rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
            }
        }
        t
    }
}

/// A response to write back.
#[derive(Debug, Clone, PartialEq)]
struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

enum Outcome {
    Respond(Response),
    Drop,
}

fn bad_request(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one line (without its CRLF), at most [`MAX_LINE`] bytes.
/// `Ok(None)` on EOF before any byte.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(bad_request("line too long or connection closed mid-line"));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| bad_request("non-UTF-8 request or chunk line"))
}

/// Reads one request. `Ok(None)` when the client closed the connection
/// between requests. Writes `100 Continue` to `writer` when asked to.
async fn read_request<R, W>(reader: &mut R, writer: &mut W) -> io::Result<Option<Request>>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Tolerate empty lines before the request line (RFC 9112 §2.2).
    let line = loop {
        match read_line(reader).await? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(bad_request(format!("bad request line: {line:?}"))),
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(bad_request(format!("unsupported version {version:?}"))),
    };

    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader).await? else {
            return Err(bad_request("connection closed in headers"));
        };
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(bad_request("too many headers"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad_request(format!("bad header line: {line:?}")));
        };
        headers.push((name.trim().to_string(), value.trim().as_bytes().to_vec()));
    }
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        http10,
        headers,
        body: None,
    };

    let chunked = req
        .header_str("transfer-encoding")
        .map(|te| te.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false);
    let length = match req.header_str("content-length") {
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| bad_request(format!("bad content-length {v:?}")))?,
        ),
        None => None,
    };
    if !chunked && length.is_none() {
        return Ok(Some(req));
    }
    if length.is_some_and(|n| n > MAX_BODY) {
        return Err(bad_request("body too large"));
    }
    let expects_continue = req
        .header_str("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    if expects_continue && !http10 {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        writer.flush().await?;
    }

    let mut body = Vec::new();
    if chunked {
        loop {
            let Some(size_line) = read_line(reader).await? else {
                return Err(bad_request("connection closed in chunked body"));
            };
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| bad_request(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line; dropped.
                loop {
                    match read_line(reader).await? {
                        Some(l) if !l.is_empty() => continue,
                        _ => break,
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(bad_request("body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).await?;
            if &crlf != b"\r\n" {
                return Err(bad_request("chunk not followed by CRLF"));
            }
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body).await?;
    }
    req.body = Some(body);
    Ok(Some(req))
}

/// Headers that describe one hop, not the message; never forwarded.
fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

async fn write_response<W: AsyncWrite + Unpin>(
    writer: &mut W,
    resp: &Response,
    head: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let reason = reqwest::StatusCode::from_u16(resp.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason).into_bytes();
    let mut upstream_length = None;
    for (name, value) in &resp.headers {
        if name.eq_ignore_ascii_case("content-length") {
            upstream_length = Some(value.clone());
            continue;
        }
        if is_hop_by_hop(name) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    if head {
        // The length of the body a GET would have had, as the upstream said.
        if let Some(v) = upstream_length {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(&v);
            out.extend_from_slice(b"\r\n");
        }
    } else if !bodiless {
        out.extend_from_slice(format!("content-length: {}\r\n", resp.body.len()).as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head && !bodiless {
        out.extend_from_slice(&resp.body);
    }
    writer.write_all(&out).await?;
    writer.flush().await
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, client: reqwest::Client) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let req = match read_request(&mut reader, &mut write).await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                let resp = Response {
                    status: 400,
                    headers: vec![("content-type".into(), b"text/plain".to_vec())],
                    body: format!("devstack proxy: {e}\n").into_bytes(),
                };
                let _ = write_response(&mut write, &resp, false, false).await;
                return;
            }
        };
        let keep_alive = req.keep_alive();
        let head = req.method.eq_ignore_ascii_case("HEAD");
        match handle(&shared, &client, req).await {
            // Dropping both halves closes the socket: no status line, nothing.
            Outcome::Drop => return,
            Outcome::Respond(resp) => {
                if write_response(&mut write, &resp, head, keep_alive)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        if !keep_alive {
            let _ = write.shutdown().await;
            return;
        }
    }
}

async fn handle(shared: &Shared, client: &reqwest::Client, req: Request) -> Outcome {
    let received = Instant::now();
    let info = RequestInfo::of(&req);
    let protocol = info.protocol;
    let dynamodb = info.is_dynamodb;
    let decision = shared.lock().admit(info, received);
    if let Some(generation) = decision.held {
        shared.changed.notify_all();
        wait_for_release(shared, generation).await;
        shared
            .lock()
            .released(decision.seq, decision.epoch, decision.forward);
    }
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let upstream = if decision.forward {
        shared.forwarded.fetch_add(1, Ordering::SeqCst);
        let answer = forward(shared, client, req).await;
        {
            let mut state = shared.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        shared.changed.notify_all();
        Some(answer)
    } else {
        None
    };
    match decision.fault {
        Some(Fault::Drop) => Outcome::Drop,
        Some(fault) => Outcome::Respond(fault_response(fault, protocol, dynamodb, decision.seq)),
        None => match upstream {
            Some(Ok(resp)) => Outcome::Respond(resp),
            Some(Err(e)) => Outcome::Respond(Response {
                status: 502,
                headers: vec![("content-type".into(), b"text/plain".to_vec())],
                body: format!("devstack proxy: upstream failed: {e}\n").into_bytes(),
            }),
            // Not forwarded implies faulted; kept total for the compiler.
            None => Outcome::Drop,
        },
    }
}

/// Waits until `release_hold` has been called after the request was held
/// (its generation has passed). Runs until the proxy stops otherwise.
async fn wait_for_release(shared: &Shared, generation: u64) {
    let mut release = shared.release.subscribe();
    while *release.borrow_and_update() <= generation {
        if release.changed().await.is_err() {
            // The proxy is being dropped: stay held until this task is.
            std::future::pending::<()>().await;
        }
    }
}

async fn forward(
    shared: &Shared,
    client: &reqwest::Client,
    req: Request,
) -> Result<Response, String> {
    let url = format!("{}{}", shared.upstream, req.origin_target());
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &req.headers {
        // Content-Length is recomputed by the client from the (identical)
        // body; a chunked body is sent with a length instead.
        if is_hop_by_hop(name) || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let name =
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = reqwest::header::HeaderValue::from_bytes(value).map_err(|e| e.to_string())?;
        // Host included: hyper only sets Host when the request has none, so
        // moto sees the Host the client signed.
        headers.append(name, value);
    }
    let mut builder = client.request(method, url).headers(headers);
    if let Some(body) = req.body {
        builder = builder.body(body);
    }
    let resp = builder.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let body = resp.bytes().await.map_err(|e| format!("{e:?}"))?.to_vec();
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The AWS wire protocol family of a request, for shaping fault bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// awsJson 1.0/1.1 (`X-Amz-Target`) and other JSON bodies.
    Json,
    /// EC2's query dialect: `<Response><Errors><Error>`.
    Ec2Query,
    /// awsQuery (IAM, STS, ...) and anything else: `<ErrorResponse><Error>`.
    Query,
}

/// What the proxy learns from a request before deciding its fate.
#[derive(Debug, Clone, PartialEq)]
struct RequestInfo {
    method: String,
    path: String,
    service: Option<String>,
    action: String,
    body: Vec<u8>,
    protocol: Protocol,
    is_dynamodb: bool,
}

impl RequestInfo {
    fn of(req: &Request) -> RequestInfo {
        let target = req.header_str("x-amz-target").filter(|t| !t.is_empty());
        let content_type = req
            .header_str("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let service = req
            .header_str("authorization")
            .and_then(|auth| credential_scope_service(&auth));
        let path = req.origin_target().to_string();
        let (path_only, query) = path.split_once('?').unwrap_or((path.as_str(), ""));

        let form_body = if content_type.starts_with("application/x-www-form-urlencoded") {
            req.body
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        } else {
            None
        };
        let action = target
            .as_deref()
            .map(|t| t.rsplit('.').next().unwrap_or(t).to_string())
            .or_else(|| form_param(query, "Action"))
            .or_else(|| form_body.as_deref().and_then(|b| form_param(b, "Action")))
            .or_else(|| rpc_v2_operation(path_only))
            .unwrap_or_else(|| format!("{} {}", req.method, path_only));

        let is_dynamodb = service.as_deref() == Some("dynamodb")
            || target
                .as_deref()
                .is_some_and(|t| t.starts_with("DynamoDB_"));
        let is_ec2 = service.as_deref() == Some("ec2")
            || form_body
                .as_deref()
                .is_some_and(|b| form_param(b, "Version").as_deref() == Some("2016-11-15"));
        let protocol = if target.is_some() || content_type.contains("json") {
            Protocol::Json
        } else if is_ec2 {
            Protocol::Ec2Query
        } else {
            Protocol::Query
        };
        RequestInfo {
            method: req.method.clone(),
            path,
            service,
            action,
            body: req.body.clone().unwrap_or_default(),
            protocol,
            is_dynamodb,
        }
    }
}

/// `ec2` from `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-2/ec2/aws4_request, ...`.
fn credential_scope_service(auth: &str) -> Option<String> {
    let start = auth.find("Credential=")? + "Credential=".len();
    let scope = auth[start..].split([',', ' ']).next()?;
    let service = scope.split('/').nth(3)?;
    (!service.is_empty()).then(|| service.to_string())
}

/// The value of `key` in an `a=b&c=d` string (no percent-decoding beyond
/// `+`; action names and versions need none).
fn form_param(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key && !v.is_empty()).then(|| v.replace('+', " "))
    })
}

/// `Op` from an RPCv2 path `/service/Svc/operation/Op`.
fn rpc_v2_operation(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("service"), Some(_), Some("operation"), Some(op)) if !op.is_empty() => {
            Some(op.to_string())
        }
        _ => None,
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The body and status a real service would send for `fault`.
fn fault_response(fault: Fault, protocol: Protocol, dynamodb: bool, seq: usize) -> Response {
    let request_id = format!("devstack-proxy-{seq:08}");
    let (status, code, json_type, message) = match fault {
        Fault::Status503 => (
            503,
            "ServiceUnavailable",
            "ServiceUnavailable".to_string(),
            "Service unavailable (injected by the devstack proxy)",
        ),
        Fault::Throttling => (
            400,
            match protocol {
                Protocol::Ec2Query => "RequestLimitExceeded",
                Protocol::Query => "Throttling",
                Protocol::Json => "ThrottlingException",
            },
            if dynamodb {
                "com.amazonaws.dynamodb.v20120810#ThrottlingException".to_string()
            } else {
                "ThrottlingException".to_string()
            },
            "Rate exceeded (injected by the devstack proxy)",
        ),
        // Never reaches here: a Drop writes nothing.
        Fault::AccessDenied => (
            400,
            match protocol {
                Protocol::Ec2Query => "UnauthorizedOperation",
                Protocol::Query => "AccessDenied",
                Protocol::Json => "AccessDeniedException",
            },
            if dynamodb {
                "com.amazon.coral.service#AccessDeniedException".to_string()
            } else {
                "AccessDeniedException".to_string()
            },
            "User: arn:aws:sts::123456789012:assumed-role/devstack-plan/ci is not authorized to perform this operation (injected by the devstack proxy)",
        ),
        Fault::Drop => (500, "InternalError", "InternalError".into(), "dropped"),
    };
    let (content_type, body) = match protocol {
        Protocol::Json => (
            "application/x-amz-json-1.0",
            format!(r#"{{"__type":"{json_type}","message":"{message}"}}"#),
        ),
        Protocol::Ec2Query => (
            "text/xml;charset=UTF-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
                xml_escape(message)
            ),
        ),
        Protocol::Query => (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>{}</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                if status == 503 { "Receiver" } else { "Sender" },
                xml_escape(message)
            ),
        ),
    };
    Response {
        status,
        headers: vec![
            ("content-type".into(), content_type.as_bytes().to_vec()),
            ("x-amzn-requestid".into(), request_id.clone().into_bytes()),
        ],
        body: body.into_bytes(),
    }
}

#[cfg(test)]
mod proxy_unit_tests {
    use super::*;

    fn parse(raw: &[u8]) -> io::Result<Option<Request>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut reader = BufReader::new(raw);
            read_request(&mut reader, &mut tokio::io::sink()).await
        })
    }

    fn decisions(cfg: ProxyConfig, n: usize) -> Vec<Option<Fault>> {
        let mut state = State::new(cfg);
        (0..n).map(|_| state.draw_fault()).collect()
    }

    #[test]
    fn same_seed_same_faults_and_rates_nest() {
        let cfg = ProxyConfig::default().with_faults(0.3, &[Fault::Status503, Fault::Drop]);
        let a = decisions(cfg.clone(), 1000);
        assert_eq!(a, decisions(cfg.clone(), 1000));
        assert_ne!(a, decisions(cfg.clone().with_seed(7), 1000));
        let faulted = a.iter().filter(|f| f.is_some()).count();
        assert!(
            (240..360).contains(&faulted),
            "{faulted} of 1000 at rate 0.3"
        );
        assert!(a.contains(&Some(Fault::Status503)) && a.contains(&Some(Fault::Drop)));
        // Lower rate, same seed: a subset of the same requests.
        let b = decisions(
            cfg.clone()
                .with_faults(0.1, &[Fault::Status503, Fault::Drop]),
            1000,
        );
        for (x, y) in a.iter().zip(&b) {
            if y.is_some() {
                assert_eq!(x, y);
            }
        }
        assert!(decisions(cfg.clone().with_faults(1.0, &[Fault::Drop]), 100)
            .iter()
            .all(|f| *f == Some(Fault::Drop)));
        assert!(decisions(cfg.with_faults(1.0, &[]), 100)
            .iter()
            .all(Option::is_none));
    }

    fn info() -> RequestInfo {
        RequestInfo {
            method: "POST".into(),
            path: "/".into(),
            service: Some("ec2".into()),
            action: "CreateVpc".into(),
            body: Vec::new(),
            protocol: Protocol::Ec2Query,
            is_dynamodb: false,
        }
    }

    #[test]
    fn gate_counts_only_what_reaches_the_upstream() {
        let mut state = State::new(
            ProxyConfig::transparent()
                .with_faults(1.0, &[Fault::Status503])
                .with_seed(1),
        );
        state.hold_after = Some(1);
        // Faulted before forwarding: never reaches moto, not counted, not held.
        let d = state.admit(info(), Instant::now());
        assert!(d.held.is_none() && !d.forward);
        state.config = ProxyConfig::transparent();
        let d = state.admit(info(), Instant::now());
        assert!(d.held.is_none() && d.forward);
        assert!(!state.is_holding());
        let d = state.admit(info(), Instant::now());
        assert_eq!(d.held, Some(0));
        assert_eq!((state.held, state.in_flight), (1, 1));
        // The first one's answer comes back: now the world is stopped.
        state.in_flight -= 1;
        assert!(state.is_holding());
        state.released(d.seq, d.epoch, d.forward);
        assert_eq!((state.held, state.in_flight, state.let_through), (0, 1, 2));
        assert!(state.records[2].held && state.records[2].forwarded);
    }

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let req = parse(b"POST /?x=1 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 5\r\n\r\nhelloEXTRA")
            .expect("ok")
            .expect("request");
        assert_eq!(req.method, "POST");
        assert_eq!(req.target, "/?x=1");
        assert_eq!(req.header_str("host").as_deref(), Some("h:1"));
        assert_eq!(req.body.as_deref(), Some(&b"hello"[..]));
        assert!(req.keep_alive());

        let req = parse(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: y\r\n\r\n",
        )
        .expect("ok")
        .expect("request");
        assert_eq!(req.body.as_deref(), Some(&b"abcde"[..]));
        assert!(!req.keep_alive());

        let req = parse(b"GET http://example:9/p?q HTTP/1.0\r\n\r\n")
            .expect("ok")
            .expect("request");
        assert_eq!(req.body, None);
        assert_eq!(req.origin_target(), "/p?q");
        assert!(!req.keep_alive());

        assert!(parse(b"").expect("ok").is_none());
        assert!(parse(b"GARBAGE\r\n\r\n").is_err());
        assert!(parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort").is_err());
    }

    #[test]
    fn classifies_actions_services_and_protocols() {
        let raw = b"POST / HTTP/1.1\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Type: application/x-amz-json-1.0\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-2/dynamodb/aws4_request, SignedHeaders=host, Signature=x\r\nContent-Length: 2\r\n\r\n{}";
        let info = RequestInfo::of(&parse(raw).expect("ok").expect("req"));
        assert_eq!(info.action, "ListTables");
        assert_eq!(info.service.as_deref(), Some("dynamodb"));
        assert_eq!(info.protocol, Protocol::Json);
        assert!(info.is_dynamodb);

        let raw = b"POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 38\r\n\r\nAction=DescribeVpcs&Version=2016-11-15";
        let info = RequestInfo::of(&parse(raw).expect("ok").expect("req"));
        assert_eq!(info.action, "DescribeVpcs");
        assert_eq!(info.protocol, Protocol::Ec2Query);

        let raw = b"GET /?Action=ListRoles&Version=2010-05-08 HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=a/b/us-east-1/iam/aws4_request,SignedHeaders=host\r\n\r\n";
        let info = RequestInfo::of(&parse(raw).expect("ok").expect("req"));
        assert_eq!(info.action, "ListRoles");
        assert_eq!(info.service.as_deref(), Some("iam"));
        assert_eq!(info.protocol, Protocol::Query);

        let raw = b"POST /service/Svc/operation/GetThing HTTP/1.1\r\n\r\n";
        assert_eq!(
            RequestInfo::of(&parse(raw).expect("ok").expect("req")).action,
            "GetThing"
        );
        let raw = b"GET /moto-api/data.json HTTP/1.1\r\n\r\n";
        assert_eq!(
            RequestInfo::of(&parse(raw).expect("ok").expect("req")).action,
            "GET /moto-api/data.json"
        );
    }
}
