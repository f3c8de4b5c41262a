//! One client session, from accept to close.
//!
//! 1. **Gate**: the router state decides (OFFLINE: refused with a MySQL
//!    error; ONHOLD: wait until ONLINE or `wait-if-unavailable`), then the
//!    routing table picks a datasource (waiting the same way when none is
//!    available).
//! 2. **Handshake**: connect to the datasource (`connect`: a read-only
//!    session tries the next one when it cannot), relay its greeting (with
//!    zstd, progress reports, metadata caching, and on the read-only port
//!    zlib compression taken out of the capabilities, and TLS offered when
//!    carbide has a certificate), accept TLS when the client asks, refuse a
//!    client that asks for compression where it was not offered (error
//!    1043, not a stalled session), then relay the
//!    authentication exchange packet by packet (sequence ids shifted by one
//!    around carbide's own TLS), so every auth plugin the server has works
//!    unchanged.
//! 3. **Read-only**: on the read-only listener, carbide makes the session
//!    read-only on the server before the client's first command, and again
//!    after a reset ([`read_only`]).
//! 4. **Pump**: raw chunks are forwarded both ways unchanged; a
//!    [`Framing`] per direction (inflating the compressed protocol, which
//!    the read-write port relays when client and server agree on it)
//!    reports message starts to the [`Tracker`],
//!    which says when the session is idle and whether a transaction is
//!    open. When the router goes OFFLINE, the primary moves, or carbide
//!    shuts down, the session closes at its next transaction boundary, or
//!    after the disconnect timeout.
//!
//! Errors carbide itself sends are MySQL ERR packets with a message that
//! says what happened.

use crate::compress::{CompressError, Framing};
use crate::connect::{self, Backend};
use crate::metrics::{ErrorKind, ListenerMetrics, Metrics};
use crate::packet::{write_packet, HEADER_LEN};
use crate::protocol::{self, cap, mariadb_cap, Greeting, SSL_REQUEST_LEN};
use crate::pump_wait::{next_change, poll_control, sleep_until_opt};
use crate::read_only::{self, ResetGuard};
use crate::reader::{PacketReader, ReadErr};
use crate::routing::{Access, Datasource, Router, SessionSlot};
use crate::stream::Stream;
use crate::tracker::Tracker;
use carbide_config::RouterState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn, Instrument};

/// Timeouts of a session.
#[derive(Debug, Clone)]
pub struct Settings {
    /// TCP connect plus greeting from a datasource.
    pub connect_timeout: Duration,
    /// The client's whole handshake and authentication.
    pub handshake_timeout: Duration,
    /// How long a session may run to its transaction boundary once it must close.
    pub disconnect_timeout: Duration,
    /// How long new work waits while ONHOLD or while no datasource is available.
    pub wait_timeout: Duration,
}

/// What every session shares.
pub struct Shared {
    /// Where sessions go.
    pub router: Arc<Router>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// TLS for clients, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// TLS to datasources, when configured.
    pub backend_tls: Option<tokio_rustls::TlsConnector>,
    /// Timeouts.
    pub settings: Settings,
    /// Turns true when carbide shuts down. Whoever sets it then calls
    /// [`Router::poke`] so that open sessions (which watch only the router's
    /// changes) look at it.
    pub shutdown: watch::Receiver<bool>,
}

/// Read buffer sizes of the pump.
const CLIENT_BUF: usize = 4 * 1024;
const SERVER_BUF: usize = 16 * 1024;

/// MySQL error codes carbide sends.
pub(crate) mod code {
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    pub const HANDSHAKE_ERROR: u16 = 1043;
    pub const SERVER_SHUTDOWN: u16 = 1053;
    pub const CONNECT_FAILED: u16 = 2003;
    pub const LOST_CONNECTION: u16 = 2013;
}

struct ActiveGuard<'a>(&'a ListenerMetrics);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.dec();
    }
}

/// Sends one ERR packet in place of the greeting and closes. Like a server
/// refusing a connection, it carries no SQLSTATE (`_sqlstate` documents
/// the one that applies): the client's capabilities are not known yet.
pub async fn refuse(mut client: TcpStream, code: u16, _sqlstate: &str, message: &str) {
    let mut out = Vec::new();
    write_packet(&mut out, 0, &protocol::err_payload_pre41(code, message));
    let _ = timeout(Duration::from_secs(1), client.write_all(&out)).await;
    let _ = client.shutdown().await;
}

/// Runs one session to its end.
pub async fn serve(client: TcpStream, peer: SocketAddr, access: Access, shared: Arc<Shared>) {
    let lm = shared.metrics.listener(access);
    lm.accepted.inc();
    lm.active.inc();
    let _active = ActiveGuard(lm);
    let span = tracing::info_span!("session", client = %peer, listener = access.as_str(), datasource = tracing::field::Empty);
    run(client, access, &shared).instrument(span).await;
}

async fn run(client: TcpStream, access: Access, shared: &Shared) {
    let m = &shared.metrics;
    let lm = m.listener(access);
    let _ = client.set_nodelay(true);
    let first = match admit(access, shared).await {
        Ok(v) => v,
        Err((kind, code, state, message)) => {
            debug!(%message, "session refused");
            m.error(kind);
            lm.refused.inc();
            refuse(client, code, state, &message).await;
            return;
        }
    };
    let deadline = Instant::now() + shared.settings.handshake_timeout;
    let backend = match connect::connect(first, access, shared, deadline).await {
        Ok(b) => b,
        Err(msg) => {
            lm.refused.inc();
            refuse(client, code::CONNECT_FAILED, "HY000", &msg).await;
            return;
        }
    };
    let Backend {
        ds,
        slot: _slot,
        stream,
        reader,
        greeting,
    } = backend;
    tracing::Span::current().record("datasource", ds.name.as_str());
    let hs = handshake(client, (stream, reader, greeting), &ds, access, shared);
    let hs = tokio::time::timeout_at(deadline, hs).await;
    let (mut client, mut server, tracker, leftover, compressed) = match hs {
        Ok(Ok(v)) => v,
        Ok(Err(HandshakeEnd::Closed)) => return,
        Ok(Err(HandshakeEnd::Failed(kind, why))) => {
            m.error(kind);
            warn!(error = %why, "handshake failed");
            return;
        }
        Err(_) => {
            m.error(ErrorKind::ClientHandshakeTimeout);
            debug!("client did not finish its handshake in time");
            return;
        }
    };
    debug!("authenticated");
    let end = pump(
        &mut client,
        &mut server,
        (tracker, compressed),
        leftover,
        access,
        &ds,
        shared,
    )
    .await;
    match end {
        End::ClientQuit => debug!("client quit"),
        End::ClientClosed { mid_command } => {
            if mid_command {
                m.error(ErrorKind::ClientVanished);
                debug!("client vanished in the middle of a command");
            }
        }
        End::ServerClosed => {
            m.error(ErrorKind::BackendClosed);
            warn!("datasource closed the connection");
        }
        End::Boundary(reason) => info!(reason, "session closed at a transaction boundary"),
        End::Forced(reason) => {
            m.error(ErrorKind::ForcedDisconnect);
            warn!(
                reason,
                "session closed after the disconnect timeout, still in a transaction"
            );
        }
        End::OnholdTimeout => {
            m.error(ErrorKind::OnholdTimeout);
            info!("new transaction waited too long while the connector was on hold");
        }
        End::Malformed(side, e) => {
            m.error(match side {
                "client" => ErrorKind::ClientMalformed,
                _ => ErrorKind::BackendMalformed,
            });
            warn!(error = %e, side, "compressed stream cannot be followed; session closed");
        }
        End::ReadOnly(why) => {
            m.error(ErrorKind::ReadOnlySetup);
            warn!(error = %why, "read-only session closed: it could not be made read-only");
        }
    }
    let _ = timeout(Duration::from_millis(200), client.shutdown()).await;
    let _ = timeout(Duration::from_millis(200), server.shutdown()).await;
}

type Refusal = (ErrorKind, u16, &'static str, String);

/// Waits out ONHOLD and an empty table, then picks a datasource.
async fn admit(access: Access, shared: &Shared) -> Result<(Datasource, SessionSlot), Refusal> {
    let router = &shared.router;
    let deadline = Instant::now() + shared.settings.wait_timeout;
    let mut changes = router.changes();
    loop {
        changes.borrow_and_update();
        match router.state() {
            RouterState::Offline => {
                return Err((
                    ErrorKind::RouterOffline,
                    code::SERVER_SHUTDOWN,
                    "08S01",
                    "carbide connector is offline: new sessions are refused (router state OFFLINE)"
                        .into(),
                ))
            }
            RouterState::OnHold => {}
            RouterState::Online => {
                if let Some(v) = router.pick(access) {
                    return Ok(v);
                }
            }
        }
        if *shared.shutdown.borrow() {
            return Err((
                ErrorKind::RouterOffline,
                code::SERVER_SHUTDOWN,
                "08S01",
                "carbide connector is shutting down".into(),
            ));
        }
        let waited = shared.settings.wait_timeout.as_millis();
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Err(match router.state() {
                RouterState::OnHold => (ErrorKind::OnholdTimeout, code::SERVER_SHUTDOWN, "08S01", format!("carbide connector is on hold: waited {waited} ms for it to come back online")),
                _ => (ErrorKind::NoDatasource, code::CONNECT_FAILED, "HY000", format!("carbide: no {} datasource is available (waited {waited} ms)", if access == Access::ReadWrite { "primary" } else { "read" })),
            });
        }
    }
}

enum HandshakeEnd {
    /// Nothing more to do (refused, or auth rejected and relayed).
    Closed,
    Failed(ErrorKind, String),
}

/// Ends a handshake that failed before the client saw a greeting: like a
/// refusing server, carbide sends a pre-4.1 ERR (no SQLSTATE) in its place.
async fn fail_before_greeting(client: &mut Stream, kind: ErrorKind, msg: String) -> HandshakeEnd {
    let _ = send(
        client,
        0,
        &protocol::err_payload_pre41(code::CONNECT_FAILED, &msg),
    )
    .await;
    HandshakeEnd::Failed(kind, msg)
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, seq: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    write_packet(&mut out, seq, payload);
    s.write_all(&out).await
}

/// Both ends after authentication, the tracker, bytes read past it (client,
/// server), and whether the session speaks the compressed protocol.
type Ready = (Stream, Stream, Tracker, (Vec<u8>, Vec<u8>), bool);

async fn handshake(
    client: TcpStream,
    (server, mut sreader, (seq, mut greeting)): (TcpStream, PacketReader, (u8, Vec<u8>)),
    ds: &Datasource,
    access: Access,
    shared: &Shared,
) -> Result<Ready, HandshakeEnd> {
    let mut client = Stream::Plain(client);
    let mut server = Stream::Plain(server);
    let mut creader = PacketReader::default();
    let client_err = |kind, why: String| HandshakeEnd::Failed(kind, why);

    // the greeting
    if greeting.first() == Some(&0xff) {
        // the server refuses (too many connections, host blocked): relay it
        let _ = send(&mut client, seq, &greeting).await;
        let (code, msg) = protocol::parse_err(&greeting).unwrap_or((0, String::new()));
        return Err(HandshakeEnd::Failed(
            ErrorKind::BackendConnect,
            format!("datasource refused: {code} {msg}"),
        ));
    }
    let g = match Greeting::parse(&greeting) {
        Ok(g) => g,
        Err(e) => {
            let msg = format!(
                "carbide: datasource {} sent an unusable greeting: {e}",
                ds.name
            );
            return Err(fail_before_greeting(&mut client, ErrorKind::BackendMalformed, msg).await);
        }
    };
    let server_caps = g.caps(&greeting);
    if shared.backend_tls.is_some() && server_caps & cap::SSL == 0 {
        let msg = format!(
            "carbide: datasource {} does not offer TLS, but tls.to-server is on",
            ds.name
        );
        return Err(fail_before_greeting(&mut client, ErrorKind::BackendMalformed, msg).await);
    }
    // zlib compression on the read-write port when the server has it (the
    // read-only port's own statement goes uncompressed); zstd never
    let no_compress = if access == Access::ReadWrite && server_caps & cap::COMPRESS != 0 {
        cap::ZSTD
    } else {
        cap::COMPRESS | cap::ZSTD
    };
    let (clear, set) = if shared.tls.is_some() {
        (no_compress, cap::SSL)
    } else {
        (no_compress | cap::SSL, 0)
    };
    g.adjust(
        &mut greeting,
        clear,
        set,
        mariadb_cap::PROGRESS | mariadb_cap::CACHE_METADATA,
    );
    if send(&mut client, seq, &greeting).await.is_err() {
        return Err(HandshakeEnd::Closed);
    }

    // the client's answer: SSLRequest or handshake response
    let bad = |why: &str| {
        protocol::err_payload(
            code::HANDSHAKE_ERROR,
            "08S01",
            &format!("carbide: bad handshake: {why}"),
        )
    };
    let (mut cseq, mut response) = match creader.next(&mut client).await {
        Ok(v) => v,
        Err(ReadErr::TooLarge(n)) => {
            let _ = send(&mut client, 2, &bad(&format!("packet of {n} bytes"))).await;
            return Err(client_err(
                ErrorKind::ClientMalformed,
                format!("handshake packet of {n} bytes"),
            ));
        }
        Err(_) => return Err(HandshakeEnd::Closed),
    };
    let mut client_offset = 0u8;
    let caps = protocol::response_caps(&response).unwrap_or(0);
    if response.len() < SSL_REQUEST_LEN || caps & cap::PROTOCOL_41 == 0 {
        let _ = send(
            &mut client,
            cseq.wrapping_add(1),
            &bad("not a protocol 4.1 handshake response"),
        )
        .await;
        return Err(client_err(
            ErrorKind::ClientMalformed,
            "not a protocol 4.1 handshake response".into(),
        ));
    }
    if caps & cap::SSL != 0 && response.len() == SSL_REQUEST_LEN {
        let Some(acceptor) = shared.tls.clone() else {
            let _ = send(
                &mut client,
                cseq.wrapping_add(1),
                &bad("TLS requested but not offered"),
            )
            .await;
            return Err(client_err(
                ErrorKind::ClientMalformed,
                "TLS requested but not offered".into(),
            ));
        };
        let Stream::Plain(tcp) = client else {
            return Err(HandshakeEnd::Closed);
        };
        // the ClientHello may already sit behind the SSLRequest in our buffer
        let early = std::mem::take(&mut creader.buf);
        client = match acceptor
            .accept(crate::stream::Prefixed::new(early, tcp))
            .await
        {
            Ok(s) => Stream::TlsServer(Box::new(s)),
            Err(e) => {
                return Err(client_err(
                    ErrorKind::ClientTls,
                    format!("TLS handshake with the client failed: {e}"),
                ))
            }
        };
        creader = PacketReader::default();
        (cseq, response) = match creader.next(&mut client).await {
            Ok(v) => v,
            Err(_) => return Err(HandshakeEnd::Closed),
        };
        client_offset = 1;
    }
    let caps = protocol::response_caps(&response).unwrap_or(0);
    let deprecate_eof = caps & cap::DEPRECATE_EOF != 0;
    if caps & no_compress != 0 {
        // not offered in the greeting; such a client (mysql-connector-python
        // with compress=True) switches to compressed framing after the OK
        // all the same, which neither carbide nor the server would expect
        let msg = match access {
            Access::ReadOnly => "carbide's read-only port does not support the compressed protocol; connect without compression",
            Access::ReadWrite => "the datasource does not offer the compressed protocol; connect without compression",
        };
        let err = protocol::err_payload(code::HANDSHAKE_ERROR, "08S01", msg);
        let _ = send(&mut client, cseq.wrapping_add(1), &err).await;
        let why = "the client asked for the compressed protocol, which was not offered";
        return Err(client_err(ErrorKind::ClientMalformed, why.into()));
    }

    // towards the server: TLS of our own when configured
    let mut server_offset = 0u8;
    if let Some(connector) = shared.backend_tls.clone() {
        let mut ssl_request = response
            .get(..SSL_REQUEST_LEN)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let _ = protocol::adjust_response(
            &mut ssl_request,
            no_compress,
            mariadb_cap::PROGRESS | mariadb_cap::CACHE_METADATA,
        );
        let c = (protocol::response_caps(&ssl_request).unwrap_or(0) | cap::SSL).to_le_bytes();
        ssl_request[..4].copy_from_slice(&c);
        if send(&mut server, 1, &ssl_request).await.is_err() {
            return Err(HandshakeEnd::Failed(
                ErrorKind::BackendClosed,
                "datasource closed during TLS setup".into(),
            ));
        }
        let Stream::Plain(tcp) = server else {
            return Err(HandshakeEnd::Closed);
        };
        let name = match rustls::pki_types::ServerName::try_from(ds.addr.host.clone()) {
            Ok(n) => n,
            Err(e) => {
                return Err(HandshakeEnd::Failed(
                    ErrorKind::BackendConnect,
                    format!("bad TLS server name {}: {e}", ds.addr.host),
                ))
            }
        };
        server = match connector.connect(name, tcp).await {
            Ok(s) => Stream::TlsClient(Box::new(s)),
            Err(e) => {
                let msg = format!("carbide: TLS to datasource {} failed: {e}", ds.name);
                let _ = send(
                    &mut client,
                    cseq.wrapping_add(1),
                    &protocol::err_payload(code::CONNECT_FAILED, "HY000", &msg),
                )
                .await;
                return Err(HandshakeEnd::Failed(ErrorKind::BackendConnect, msg));
            }
        };
        sreader = PacketReader::default();
        server_offset = 1;
    }
    let keep_ssl = if shared.backend_tls.is_some() {
        0
    } else {
        cap::SSL
    };
    if protocol::adjust_response(
        &mut response,
        keep_ssl | no_compress,
        mariadb_cap::PROGRESS | mariadb_cap::CACHE_METADATA,
    )
    .is_err()
    {
        return Err(HandshakeEnd::Closed);
    }
    let to_server = |seq: u8| seq.wrapping_sub(client_offset).wrapping_add(server_offset);
    let to_client = |seq: u8| seq.wrapping_sub(server_offset).wrapping_add(client_offset);
    if send(&mut server, to_server(cseq), &response).await.is_err() {
        return Err(HandshakeEnd::Failed(
            ErrorKind::BackendClosed,
            "datasource closed during authentication".into(),
        ));
    }

    // authentication exchange, until the server says OK or ERR
    loop {
        tokio::select! {
            r = sreader.next(&mut server) => {
                let (seq, p) = match r {
                    Ok(v) => v,
                    Err(_) => return Err(HandshakeEnd::Failed(ErrorKind::BackendClosed, "datasource closed during authentication".into())),
                };
                if send(&mut client, to_client(seq), &p).await.is_err() {
                    return Err(HandshakeEnd::Closed);
                }
                match p.first() {
                    Some(0x00) => break,
                    Some(0xff) => {
                        let (code, msg) = protocol::parse_err(&p).unwrap_or((0, String::new()));
                        debug!(code, %msg, "authentication refused by the datasource");
                        return Err(HandshakeEnd::Closed);
                    }
                    _ => {}
                }
            }
            r = creader.next(&mut client) => {
                let (seq, p) = match r {
                    Ok(v) => v,
                    Err(ReadErr::TooLarge(n)) => return Err(client_err(ErrorKind::ClientMalformed, format!("auth packet of {n} bytes"))),
                    Err(ReadErr::Eof | ReadErr::Io) => return Err(HandshakeEnd::Closed),
                };
                if send(&mut server, to_server(seq), &p).await.is_err() {
                    return Err(HandshakeEnd::Failed(ErrorKind::BackendClosed, "datasource closed during authentication".into()));
                }
            }
        }
    }
    Ok((
        client,
        server,
        Tracker::new(deprecate_eof),
        (creader.buf, sreader.buf),
        caps & cap::COMPRESS != 0,
    ))
}

enum End {
    ClientQuit,
    ClientClosed {
        mid_command: bool,
    },
    ServerClosed,
    Boundary(&'static str),
    Forced(&'static str),
    OnholdTimeout,
    ReadOnly(String),
    /// A compressed stream that does not inflate: which side, and why.
    Malformed(&'static str, CompressError),
}

/// Why an open session must close, if it must.
fn must_close(shared: &Shared, access: Access, ds: &str) -> Option<&'static str> {
    if *shared.shutdown.borrow() {
        Some("carbide is shutting down")
    } else if shared.router.state() == RouterState::Offline {
        Some("router is OFFLINE")
    } else if !shared.router.still_valid(access, ds) {
        Some(match access {
            Access::ReadWrite => "the primary moved",
            Access::ReadOnly => "its datasource left ONLINE",
        })
    } else {
        None
    }
}

async fn pump(
    client: &mut Stream,
    server: &mut Stream,
    (mut tracker, compressed): (Tracker, bool),
    leftover: (Vec<u8>, Vec<u8>),
    access: Access,
    ds: &Datasource,
    shared: &Shared,
) -> End {
    let metrics: &Metrics = &shared.metrics;
    let lm = metrics.listener(access);
    let mut cf = Framing::new(compressed);
    let mut sf = Framing::new(compressed);
    let mut cbuf = vec![0u8; CLIENT_BUF];
    let mut sbuf = vec![0u8; SERVER_BUF];
    // one control future for the whole session: registered with the
    // router's change watch once, not once per packet
    let mut changes = shared.router.changes();
    changes.borrow_and_update();
    let mut probe = changes.clone();
    let mut control = std::pin::pin!(next_change(Some(changes)));
    // Once polled, the control future stays registered with the watch and
    // wakes this task on a change; it is polled again only when the watch's
    // version moved (`probe`: a plain atomic load per wake-up).
    let mut control_armed = false;
    let mut closing: Option<(Instant, &'static str)> = must_close(shared, access, &ds.name)
        .map(|r| (Instant::now() + shared.settings.disconnect_timeout, r));
    let mut busy_since: Option<Instant> = None;
    // responses started for the oldest command: an ERR can only be injected before any
    let mut server_msgs_in_command = 0usize;
    // read-only listener: resets must not make the session writable
    let mut guard = (access == Access::ReadOnly).then(ResetGuard::default);
    let mut pipelined = None;

    // bytes that arrived together with the end of authentication
    let (cl, mut sl) = leftover;
    let within = shared.settings.handshake_timeout;
    if guard.is_some() {
        if let Err(e) = read_only::apply_or_tell(client, server, &mut sl, within).await {
            return End::ReadOnly(e.to_string());
        }
    }
    if !sl.is_empty() {
        if let Err(e) = sf.feed(&sl, |_| {}) {
            return End::Malformed("datasource", e);
        }
        if client.write_all(&sl).await.is_err() {
            return End::ClientClosed { mid_command: false };
        }
    }
    if !cl.is_empty() {
        let fed = cf.feed(&cl, |m| {
            if let Some(c) = tracker.client_message(m) {
                lm.command(c);
            }
            if let Some(Err(p)) = guard.as_mut().map(|g| g.client_message(m)) {
                pipelined.get_or_insert(p);
            }
        });
        if let Err(e) = fed {
            return End::Malformed("client", e);
        }
        if let Some(p) = pipelined {
            read_only::tell(client, &p).await;
            return End::ReadOnly(p.to_string());
        }
        busy_since = Some(Instant::now());
        if server.write_all(&cl).await.is_err() {
            return End::ServerClosed;
        }
    }

    loop {
        let at_boundary = tracker.idle() && cf.at_boundary() && sf.at_boundary();
        if let Some((_, reason)) = closing {
            if at_boundary && !tracker.in_transaction() {
                return End::Boundary(reason);
            }
        }
        let deadline = closing.map(|(d, _)| d);
        tokio::select! {
            // changes first, so a session that must close sees it before the next command
            biased;
            (alive, changes) = poll_control(control.as_mut(), &mut control_armed, &probe) => {
                control.set(next_change(changes));
                control_armed = false;
                probe.borrow_and_update();
                // a router that is gone means carbide is stopping
                let reason = must_close(shared, access, &ds.name)
                    .or((!alive).then_some("carbide is shutting down"));
                closing = match (reason, closing) {
                    (Some(_), Some(c)) => Some(c),
                    (Some(r), None) => Some((Instant::now() + shared.settings.disconnect_timeout, r)),
                    (None, _) => None,
                };
            }
            r = server.read(&mut sbuf) => {
                let n = match r {
                    Ok(0) | Err(_) => {
                        if tracker.quit() {
                            return End::ClientQuit;
                        }
                        if !tracker.idle() && server_msgs_in_command == 0 && sf.at_boundary() {
                            let msg = format!("carbide: lost connection to datasource {} ({}) during the query", ds.name, ds.addr);
                            let _ = client.write_all(&cf.wrap(1, &protocol::err_payload(code::LOST_CONNECTION, "HY000", &msg), &[])).await;
                        }
                        return End::ServerClosed;
                    }
                    Ok(n) => n,
                };
                let chunk = &sbuf[..n];
                let fed = sf.feed(chunk, |m| {
                    server_msgs_in_command += 1;
                    if let Some(done) = tracker.server_message(m) {
                        if let Some(g) = guard.as_mut() {
                            g.completed(&done);
                        }
                        server_msgs_in_command = 0;
                        if tracker.idle() {
                            if let Some(t) = busy_since.take() {
                                metrics.query_seconds.observe(t.elapsed().as_secs_f64());
                            }
                        }
                    }
                });
                if let Err(e) = fed {
                    return End::Malformed("datasource", e);
                }
                lm.bytes_out.inc_by(n as u64);
                if client.write_all(chunk).await.is_err() {
                    return End::ClientClosed { mid_command: true };
                }
                if let Some(g) = guard.as_mut().filter(|g| g.must_reapply() && sf.at_boundary()) {
                    // before anything more of the client reaches the server
                    if let Err(e) = read_only::apply_or_tell(client, server, &mut Vec::new(), within).await {
                        return End::ReadOnly(format!("after a session reset: {e}"));
                    }
                    g.reapplied();
                }
            }
            r = client.read(&mut cbuf) => {
                let n = match r {
                    Ok(0) | Err(_) => {
                        return if tracker.quit() { End::ClientQuit } else { End::ClientClosed { mid_command: !at_boundary } };
                    }
                    Ok(n) => n,
                };
                if at_boundary && !tracker.in_transaction() && shared.router.state() == RouterState::OnHold {
                    // a new transaction waits while the connector is on hold
                    let mut state = shared.router.state_watch();
                    let wait = async { state.wait_for(|s| *s != RouterState::OnHold).await.map(|_| ()) };
                    let waited = timeout(shared.settings.wait_timeout, wait).await;
                    if waited.is_err() {
                        let msg = format!(
                            "carbide connector is on hold: waited {} ms for it to come back online",
                            shared.settings.wait_timeout.as_millis()
                        );
                        let _ = client.write_all(&cf.wrap(1, &protocol::err_payload(code::SERVER_SHUTDOWN, "08S01", &msg), &cbuf[..n])).await;
                        return End::OnholdTimeout;
                    }
                    if let Some(reason) = must_close(shared, access, &ds.name) {
                        let msg = format!("carbide: session closed before its next transaction: {reason}");
                        let _ = client.write_all(&cf.wrap(1, &protocol::err_payload(code::SERVER_SHUTDOWN, "08S01", &msg), &cbuf[..n])).await;
                        return End::Boundary(reason);
                    }
                }
                let chunk = &cbuf[..n];
                let fed = cf.feed(chunk, |m| {
                    if let Some(c) = tracker.client_message(m) {
                        lm.command(c);
                        if busy_since.is_none() {
                            busy_since = Some(Instant::now());
                        }
                    }
                    if let Some(Err(p)) = guard.as_mut().map(|g| g.client_message(m)) {
                        pipelined.get_or_insert(p);
                    }
                });
                if let Err(e) = fed {
                    return End::Malformed("client", e);
                }
                if let Some(p) = pipelined {
                    read_only::tell(client, &p).await;
                    return End::ReadOnly(p.to_string());
                }
                lm.bytes_in.inc_by(n as u64);
                if server.write_all(chunk).await.is_err() {
                    return End::ServerClosed;
                }
            }
            _ = sleep_until_opt(deadline) => {
                let reason = closing.map(|(_, r)| r).unwrap_or("disconnect timeout");
                if !at_boundary || tracker.in_transaction() {
                    return End::Forced(reason);
                }
                return End::Boundary(reason);
            }
        }
    }
}
