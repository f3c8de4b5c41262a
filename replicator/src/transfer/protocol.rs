//! The THL transfer wire format, protocol 2 (port 2112, `thl://host:2112/`).
//!
//! A replica's replicator (the client, `client.rs`) connects to its
//! master's replicator (the server, `server.rs`) over TCP. Every message is
//! one frame; all integers are little-endian:
//!
//! ```text
//!  0       4     5
//!  +-------+-----+------------------+
//!  | len   | typ | payload          |
//!  | u32   | u8  | len - 1 bytes    |
//!  +-------+-----+------------------+
//!  len = 1 + payload length, at most MAX_PREAUTH_FRAME_LEN (64 KiB) until the
//!  server has sent ACCEPT, at most MAX_FRAME_LEN afterwards
//!
//!  typ  direction        payload
//!  6    server→client    CHALLENGE  JSON {"protocol": 2, "server", "nonce": 64 hex digits}
//!  1    client→server    HELLO      proof (32 bytes) ‖ JSON {"service", "client", "last": null | [seqno, epoch]}
//!  2    server→client    ACCEPT     JSON {"server", "from_seqno"}
//!  3    server→client    REFUSE     JSON {"error", "diverged"}
//!  4    server→client    RECORD     one THL record, byte for byte as in a
//!                                   segment file (see `thl::format`: len,
//!                                   crc, header, postcard body, trailing len)
//!  5    server→client    HEARTBEAT  JSON {"last_seqno": null | n, "tstamp_us"}
//!
//!  proof = HMAC-SHA256(secret, "carbide-thl-hello-2\0" ‖ nonce (32 bytes) ‖ hello JSON)
//!          (32 zero bytes when the client has no secret; see `crate::auth`)
//! ```
//!
//! The exchange: the server sends CHALLENGE with a fresh random nonce as
//! soon as the connection is up (after TLS when used); the client answers
//! with HELLO; the server verifies the proof in constant time before it
//! parses the JSON or reads anything of the log, then answers ACCEPT or
//! REFUSE. A missing or wrong proof is refused (`diverged = false`, the
//! client retries with back-off and says why in its status). A server that
//! has too many replicas connected sends REFUSE instead of CHALLENGE.
//! After ACCEPT the server sends RECORDs from `from_seqno` in log order
//! (fragments as stored) and a HEARTBEAT whenever it has had nothing to
//! send for the heartbeat interval. The client treats silence of three
//! intervals as a dead link. A REFUSE with `diverged = true` (epoch
//! mismatch, the client ahead of the master, or its seqno purged) is
//! permanent: the client goes OFFLINE:ERROR. Other refusals (service not
//! online, wrong secret) are retried with back-off.
//!
//! Protocol 1 (no CHALLENGE, HELLO without proof) is not spoken any more:
//! a protocol 1 client gets a CHALLENGE it does not know and reconnects;
//! a protocol 1 server sends no CHALLENGE and a protocol 2 client gives up
//! on it after its read timeout, saying so.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted: one maximal THL record plus the type byte.
pub const MAX_FRAME_LEN: u32 = crate::thl::format::MAX_RECORD_LEN + 16 + 1;

/// Largest frame accepted before the exchange is authenticated (HELLO on
/// the server, CHALLENGE/ACCEPT/REFUSE on the client): nothing a peer says
/// before that makes either side buffer more than this.
pub const MAX_PREAUTH_FRAME_LEN: u32 = 64 * 1024;

/// The protocol this build speaks (sent in CHALLENGE).
pub const PROTOCOL_VERSION: u32 = 2;

/// Frame types.
pub mod typ {
    /// Client hello.
    pub const HELLO: u8 = 1;
    /// Server accepts.
    pub const ACCEPT: u8 = 2;
    /// Server refuses.
    pub const REFUSE: u8 = 3;
    /// One THL record.
    pub const RECORD: u8 = 4;
    /// Idle heartbeat.
    pub const HEARTBEAT: u8 = 5;
    /// Server's nonce, first frame of a connection.
    pub const CHALLENGE: u8 = 6;
}

/// Server → client, first frame: the nonce the hello's proof covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// Protocol version of the server ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// Server member name.
    pub server: String,
    /// 32 random bytes, hex.
    pub nonce: String,
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of a hex string; `None` for anything else.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

/// Splits a HELLO payload into (proof, JSON).
pub fn split_hello(payload: &[u8]) -> Result<(&[u8], &[u8]), FrameError> {
    if payload.len() < crate::auth::PROOF_LEN {
        return Err(FrameError::Protocol(format!(
            "hello of {} bytes has no room for its {}-byte proof",
            payload.len(),
            crate::auth::PROOF_LEN
        )));
    }
    Ok(payload.split_at(crate::auth::PROOF_LEN))
}

/// Client → server, first frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Service name the client replicates.
    pub service: String,
    /// Client member name (for logs).
    pub client: String,
    /// `(seqno, epoch)` of the client's last stored transaction.
    pub last: Option<(u64, u64)>,
}

/// Server → client after a good hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accept {
    /// Server member name.
    pub server: String,
    /// First seqno that will be sent.
    pub from_seqno: u64,
}

/// Server → client: the hello was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refuse {
    /// Why.
    pub error: String,
    /// Permanent: the logs have diverged or the seqno is gone.
    pub diverged: bool,
}

/// Server → client when idle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Server's last durable seqno.
    pub last_seqno: Option<u64>,
    /// Server clock, µs since the Unix epoch.
    pub tstamp_us: i64,
}

/// Errors reading frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a frame of this protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    t: u8,
    payload: &[u8],
) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len() + 1)
        .ok()
        .filter(|l| *l <= MAX_FRAME_LEN)
        .ok_or_else(|| FrameError::Protocol(format!("frame of {} bytes", payload.len())))?;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4] = t;
    w.write_all(&head).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Writes a JSON frame.
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    t: u8,
    v: &T,
) -> Result<(), FrameError> {
    let b = serde_json::to_vec(v).map_err(|e| FrameError::Protocol(e.to_string()))?;
    write_frame(w, t, &b).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame: `(type, payload)`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u8, Vec<u8>), FrameError> {
    read_frame_max(r, MAX_FRAME_LEN).await
}

/// Reads one frame of at most `max` bytes (`len` field); a longer one is a
/// protocol violation detected from its 5-byte head, before anything is
/// allocated for it.
pub async fn read_frame_max<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<(u8, Vec<u8>), FrameError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if len == 0 {
        return Err(FrameError::Protocol("bad frame length 0".into()));
    }
    if len > max {
        return Err(FrameError::Protocol(format!(
            "frame of {len} bytes announced, more than the {max} allowed here"
        )));
    }
    // Grow with the data instead of trusting the peer's length up front.
    let want = u64::from(len - 1);
    let mut payload = Vec::with_capacity((want as usize).min(1 << 20));
    let got = (&mut *r).take(want).read_to_end(&mut payload).await?;
    if got as u64 != want {
        return Err(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("frame cut short: {got} of {want} bytes"),
        )));
    }
    Ok((head[4], payload))
}

/// Parses a JSON payload.
pub fn parse<T: for<'de> Deserialize<'de>>(what: &str, b: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(b).map_err(|e| FrameError::Protocol(format!("bad {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_survive_split_reads() {
        let mut buf = Vec::new();
        write_json(
            &mut buf,
            typ::HELLO,
            &Hello {
                service: "alpha".into(),
                client: "db2".into(),
                last: Some((5, 0)),
            },
        )
        .await
        .unwrap();
        write_frame(&mut buf, typ::RECORD, b"abc").await.unwrap();
        // one byte at a time
        let mut r = tokio_test_reader(buf.clone());
        let (t, p) = read_frame(&mut r).await.unwrap();
        assert_eq!(t, typ::HELLO);
        let h: Hello = parse("hello", &p).unwrap();
        assert_eq!(h.last, Some((5, 0)));
        let (t, p) = read_frame(&mut r).await.unwrap();
        assert_eq!((t, p.as_slice()), (typ::RECORD, &b"abc"[..]));
        assert!(read_frame(&mut r).await.is_err(), "eof");
        // every truncation is an error, never a panic
        for cut in 0..buf.len() {
            let mut r = &buf[..cut];
            let mut ok = 0;
            while read_frame(&mut r).await.is_ok() {
                ok += 1;
            }
            assert!(ok <= 1);
        }
    }

    #[tokio::test]
    async fn oversized_and_empty_lengths_are_refused() {
        let mut b = (MAX_FRAME_LEN + 1).to_le_bytes().to_vec();
        b.push(4);
        assert!(matches!(
            read_frame(&mut b.as_slice()).await,
            Err(FrameError::Protocol(_))
        ));
        let b = [0u8, 0, 0, 0, 4];
        assert!(matches!(
            read_frame(&mut &b[..]).await,
            Err(FrameError::Protocol(_))
        ));
        // before authentication: 1 GiB announced, refused from the head alone
        let mut b = (1u32 << 30).to_le_bytes().to_vec();
        b.push(typ::HELLO);
        match read_frame_max(&mut b.as_slice(), MAX_PREAUTH_FRAME_LEN).await {
            Err(FrameError::Protocol(m)) => assert!(m.contains("1073741824"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut b = (MAX_PREAUTH_FRAME_LEN + 1).to_le_bytes().to_vec();
        b.push(typ::HELLO);
        b.extend(std::iter::repeat_n(b'x', MAX_PREAUTH_FRAME_LEN as usize));
        assert!(read_frame_max(&mut b.as_slice(), MAX_PREAUTH_FRAME_LEN)
            .await
            .is_err());
    }

    #[test]
    fn hex_round_trip_and_hello_split() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("0001abff").as_deref(), Some(&b[..]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
        assert!(split_hello(&[0u8; 31]).is_err());
        let mut p = vec![7u8; 32];
        p.extend_from_slice(b"{}");
        let (proof, json) = split_hello(&p).expect("split");
        assert_eq!((proof.len(), json), (32, &b"{}"[..]));
    }

    fn tokio_test_reader(data: Vec<u8>) -> impl AsyncRead + Unpin {
        let (mut tx, rx) = tokio::io::duplex(1);
        tokio::spawn(async move {
            for b in data {
                let _ = tx.write_all(&[b]).await;
            }
        });
        rx
    }
}
