//! The THL transfer wire format (port 2112, `thl://host:2112/`).
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
//!  len = 1 + payload length, at most MAX_FRAME_LEN
//!
//!  typ  direction        payload
//!  1    client→server    HELLO      JSON {"service", "client", "last": null | [seqno, epoch]}
//!  2    server→client    ACCEPT     JSON {"server", "from_seqno", "epoch"}
//!  3    server→client    REFUSE     JSON {"error", "diverged"}
//!  4    server→client    RECORD     one THL record, byte for byte as in a
//!                                   segment file (see `thl::format`: len,
//!                                   crc, header, postcard body, trailing len)
//!  5    server→client    HEARTBEAT  JSON {"last_seqno": null | n, "tstamp_us"}
//! ```
//!
//! The exchange: HELLO → ACCEPT or REFUSE; after ACCEPT the server sends
//! RECORDs from `from_seqno` in log order (fragments as stored) and a
//! HEARTBEAT whenever it has had nothing to send for the heartbeat
//! interval. The client treats silence of three intervals as a dead link.
//! A REFUSE with `diverged = true` (epoch mismatch, the client ahead of the
//! master, or its seqno purged) is permanent: the client goes OFFLINE:ERROR.
//! Other refusals (service not online) are retried with back-off.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted: one maximal THL record plus the type byte.
pub const MAX_FRAME_LEN: u32 = crate::thl::format::MAX_RECORD_LEN + 16 + 1;

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
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(FrameError::Protocol(format!("bad frame length {len}")));
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
