//! Whole-packet reads for the parts of a session that speak to a peer
//! packet by packet (the handshake, carbide's own statements) rather than
//! pumping raw chunks.
//!
//! Bytes enter from the stream in whatever chunks it returns and stay in
//! [`PacketReader::buf`] until a whole packet is there, so a read that is
//! cancelled (a `select!` branch that lost) loses nothing; one packet's
//! sequence id and payload leave per [`PacketReader::next`]. Bytes read past
//! the last packet stay in `buf` for the caller to hand on.

use crate::packet::{Header, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest packet accepted (connect attributes fit).
pub(crate) const PACKET_LIMIT: usize = 1 << 20;

/// Buffered packet reads that survive cancellation.
#[derive(Default)]
pub(crate) struct PacketReader {
    /// Bytes read and not yet returned as a packet.
    pub(crate) buf: Vec<u8>,
}

/// Why no packet came.
pub(crate) enum ReadErr {
    /// The peer closed.
    Eof,
    /// A header announced more than [`PACKET_LIMIT`] bytes.
    TooLarge(usize),
    /// The stream failed.
    Io,
}

impl PacketReader {
    /// A reader whose first bytes are `buf` (left over from an earlier reader).
    pub(crate) fn with_buf(buf: Vec<u8>) -> Self {
        PacketReader { buf }
    }

    /// The next packet: its sequence id and payload.
    pub(crate) async fn next<S: AsyncRead + Unpin>(
        &mut self,
        s: &mut S,
    ) -> Result<(u8, Vec<u8>), ReadErr> {
        loop {
            if self.buf.len() >= HEADER_LEN {
                let h = Header::parse([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if h.len > PACKET_LIMIT {
                    return Err(ReadErr::TooLarge(h.len));
                }
                if self.buf.len() >= HEADER_LEN + h.len {
                    let payload = self.buf[HEADER_LEN..HEADER_LEN + h.len].to_vec();
                    self.buf.drain(..HEADER_LEN + h.len);
                    return Ok((h.seq, payload));
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) => return Err(ReadErr::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Err(ReadErr::Io),
            }
        }
    }
}
