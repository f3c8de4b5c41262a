//! MySQL packet framing: the 4-byte header (3-byte little-endian payload
//! length + 1-byte sequence id) and the incremental [`Framer`] the session
//! pump runs over the raw byte stream.
//!
//! ```text
//!  0      1      2      3      4 ...
//! +------+------+------+------+-----------------------------+
//! | len (u24 LE)       | seq  | payload (len bytes)         |
//! +------+------+------+------+-----------------------------+
//! ```
//!
//! A payload of exactly 0xFFFFFF bytes continues in the next packet (split
//! packets, 16 MiB and up); the logical message ends with the first packet
//! shorter than that. The pump never copies or re-encodes payloads: bytes
//! enter [`Framer::feed`] in whatever chunks the socket returns, and the
//! framer reports the start of each logical message with at most
//! [`PREFIX_LEN`] bytes of its payload (enough to classify OK/ERR/EOF and
//! read status flags), while the caller forwards the chunk unchanged.

/// Size of a packet header.
pub const HEADER_LEN: usize = 4;
/// Largest payload of one packet; a payload this long continues.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// How many payload bytes of each message the framer keeps for inspection.
pub const PREFIX_LEN: usize = 32;

/// A parsed packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length.
    pub len: usize,
    /// Sequence id.
    pub seq: u8,
}

impl Header {
    /// Parses the first four bytes.
    pub fn parse(b: [u8; 4]) -> Header {
        Header {
            len: b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16,
            seq: b[3],
        }
    }

    /// The four header bytes.
    pub fn encode(self) -> [u8; 4] {
        let l = self.len as u32;
        [l as u8, (l >> 8) as u8, (l >> 16) as u8, self.seq]
    }
}

/// The start of one logical message (first packet of a possibly split
/// message), as seen by the framer: borrowed from the chunk being fed, or
/// from the framer's own prefix buffer when it arrived in pieces. Framing
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageStart<'a> {
    /// Sequence id of its first packet.
    pub seq: u8,
    /// Length of its first packet's payload.
    pub first_len: usize,
    prefix: &'a [u8],
}

impl MessageStart<'_> {
    /// Its first `min(first_len, PREFIX_LEN)` payload bytes.
    pub fn prefix(&self) -> &[u8] {
        self.prefix
    }

    /// The first payload byte (None for an empty packet).
    pub fn first_byte(&self) -> Option<u8> {
        self.prefix.first().copied()
    }
}

/// A message start whose prefix is still arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    seq: u8,
    first_len: usize,
    buf: [u8; PREFIX_LEN],
    got: usize,
}

impl Pending {
    fn want(&self) -> usize {
        self.first_len.min(PREFIX_LEN)
    }

    fn start(&self) -> MessageStart<'_> {
        MessageStart {
            seq: self.seq,
            first_len: self.first_len,
            prefix: &self.buf[..self.got],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting header bytes (`got` of 4 so far).
    Header { got: usize },
    /// Inside a payload; `left` bytes remain; `collect` bytes still go to the prefix.
    Payload { left: usize },
}

/// Incremental framer over one direction of a connection.
#[derive(Debug, Clone)]
pub struct Framer {
    state: State,
    header: [u8; 4],
    /// True when the current packet continues an earlier (split) one.
    continuation: bool,
    /// Message whose prefix is still being collected.
    pending: Option<Pending>,
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            state: State::Header { got: 0 },
            header: [0; 4],
            continuation: false,
            pending: None,
        }
    }
}

impl Framer {
    /// A framer at a packet boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the stream is at a packet boundary (no partial packet).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { got: 0 })
    }

    /// Consumes `data`, calling `on_message` for each logical message whose
    /// prefix is complete (its first `PREFIX_LEN` payload bytes, or all of a
    /// shorter first packet). Never fails: any byte sequence is framed.
    pub fn feed(&mut self, mut data: &[u8], mut on_message: impl FnMut(&MessageStart<'_>)) {
        while !data.is_empty() {
            match self.state {
                // fast path: a whole header and the message's prefix are in
                // this chunk (the common case): no copying at all
                State::Header { got: 0 } if !self.continuation && data.len() >= HEADER_LEN => {
                    let h = Header::parse([data[0], data[1], data[2], data[3]]);
                    let want = h.len.min(PREFIX_LEN);
                    let body = &data[HEADER_LEN..];
                    if h.len >= MAX_PAYLOAD || body.len() < want {
                        self.slow_header(&mut data, &mut on_message);
                        continue;
                    }
                    on_message(&MessageStart {
                        seq: h.seq,
                        first_len: h.len,
                        prefix: &body[..want],
                    });
                    if body.len() >= h.len {
                        data = &body[h.len..];
                    } else {
                        self.state = State::Payload {
                            left: h.len - body.len(),
                        };
                        data = &[];
                    }
                }
                State::Header { .. } => self.slow_header(&mut data, &mut on_message),
                State::Payload { left } => {
                    let take = left.min(data.len());
                    if let Some(m) = self.pending.as_mut() {
                        let n = (m.want() - m.got).min(take);
                        m.buf[m.got..m.got + n].copy_from_slice(&data[..n]);
                        m.got += n;
                        if m.got == m.want() {
                            on_message(&m.start());
                            self.pending = None;
                        }
                    }
                    data = &data[take..];
                    self.state = if left == take {
                        State::Header { got: 0 }
                    } else {
                        State::Payload { left: left - take }
                    };
                }
            }
        }
    }

    /// Header bytes one piece at a time (split headers, continuation
    /// packets of split messages).
    fn slow_header(&mut self, data: &mut &[u8], on_message: &mut impl FnMut(&MessageStart<'_>)) {
        let State::Header { got } = self.state else {
            return;
        };
        let take = (HEADER_LEN - got).min(data.len());
        self.header[got..got + take].copy_from_slice(&data[..take]);
        *data = &data[take..];
        let got = got + take;
        if got < HEADER_LEN {
            self.state = State::Header { got };
            return;
        }
        let h = Header::parse(self.header);
        let starts_message = !self.continuation;
        self.continuation = h.len == MAX_PAYLOAD;
        if starts_message {
            let m = Pending {
                seq: h.seq,
                first_len: h.len,
                buf: [0; PREFIX_LEN],
                got: 0,
            };
            if h.len == 0 {
                on_message(&m.start());
            } else {
                self.pending = Some(m);
            }
        }
        self.state = if h.len == 0 {
            State::Header { got: 0 }
        } else {
            State::Payload { left: h.len }
        };
    }
}

/// Appends one packet (header + payload) to `out`.
pub fn write_packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    out.extend_from_slice(
        &Header {
            len: payload.len(),
            seq,
        }
        .encode(),
    );
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packets(payloads: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, p) in payloads {
            write_packet(&mut out, *seq, p);
        }
        out
    }

    /// A message start copied out of the callback.
    #[derive(Debug, PartialEq)]
    struct Msg {
        seq: u8,
        first_len: usize,
        prefix: Vec<u8>,
    }

    impl Msg {
        fn prefix(&self) -> &[u8] {
            &self.prefix
        }
    }

    fn frame_in_chunks(data: &[u8], chunk: usize) -> Vec<Msg> {
        let mut f = Framer::new();
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            f.feed(c, |m| {
                out.push(Msg {
                    seq: m.seq,
                    first_len: m.first_len,
                    prefix: m.prefix().to_vec(),
                })
            });
        }
        assert!(f.at_boundary());
        out
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            len: 0x123456,
            seq: 7,
        };
        assert_eq!(Header::parse(h.encode()), h);
    }

    #[test]
    fn every_split_point_gives_the_same_messages() {
        let data = packets(&[
            (0, b"\x03SELECT 1".to_vec()),
            (1, vec![]),
            (2, vec![0xfe, 0, 0, 2, 0]),
            (3, vec![7; 100]),
        ]);
        let whole = frame_in_chunks(&data, data.len());
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].prefix(), b"\x03SELECT 1");
        assert_eq!(whole[1].first_len, 0);
        assert_eq!(whole[3].prefix().len(), PREFIX_LEN);
        for chunk in 1..data.len() {
            assert_eq!(frame_in_chunks(&data, chunk), whole, "chunk size {chunk}");
        }
    }

    #[test]
    fn split_packets_are_one_message() {
        // 16 MiB - 1 payload continues; then 5 more bytes; then a new message
        let big = vec![0xAB; MAX_PAYLOAD];
        let data = packets(&[(0, big), (1, vec![1, 2, 3, 4, 5]), (2, vec![0x00])]);
        let msgs = frame_in_chunks(&data, 65536);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].first_len, MAX_PAYLOAD);
        assert_eq!(msgs[1].seq, 2);
        // exactly 16 MiB - 1 followed by an empty packet ends the message
        let data = packets(&[(0, vec![1; MAX_PAYLOAD]), (1, vec![]), (2, vec![9])]);
        let msgs = frame_in_chunks(&data, 1 << 20);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].prefix(), &[9]);
    }

    #[test]
    fn a_truncated_stream_is_not_at_a_boundary() {
        let mut f = Framer::new();
        let mut n = 0;
        f.feed(&[5, 0, 0, 0, 1, 2], |_| n += 1);
        assert!(!f.at_boundary());
        assert_eq!(n, 0);
        // a 16 MiB length with no body: nothing reported, no panic
        let mut f = Framer::new();
        f.feed(&[0xff, 0xff, 0xff, 0], |_| n += 1);
        assert!(!f.at_boundary());
    }

    proptest! {
        #[test]
        fn any_bytes_any_chunking_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..64) {
            let mut f = Framer::new();
            for c in data.chunks(chunk) {
                f.feed(c, |m| assert!(m.prefix().len() <= PREFIX_LEN));
            }
        }

        #[test]
        fn random_packets_frame_exactly(ps in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..20), chunk in 1usize..50) {
            let data = packets(&ps);
            let msgs = frame_in_chunks(&data, chunk);
            prop_assert_eq!(msgs.len(), ps.len());
            for (m, (seq, p)) in msgs.iter().zip(&ps) {
                prop_assert_eq!(m.seq, *seq);
                prop_assert_eq!(m.prefix(), &p[..p.len().min(PREFIX_LEN)]);
            }
        }
    }
}
