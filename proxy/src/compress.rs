//! The compressed protocol (`CLIENT_COMPRESS`, zlib) as the session pump
//! sees it.
//!
//! After authentication, a session whose client asked for compression, and
//! whose server offered it, wraps its packet stream in compressed packets:
//!
//! ```text
//!  0     1     2     3     4     5     6     7 ...
//! +-----+-----+-----+-----+-----+-----+-----+---------------------------+
//! | clen (u24 LE)   | cseq | ulen (u24 LE)   | payload (clen bytes)      |
//! +-----+-----+-----+-----+-----+-----+-----+---------------------------+
//! ```
//!
//! With `ulen` 0 the payload is stored as it is; otherwise it is one zlib
//! stream that inflates to exactly `ulen` bytes. Concatenated, the payloads
//! are the ordinary packet stream ([`crate::packet`]), whose packets may
//! span compressed packets. `cseq` counts per command like the packet
//! sequence id.
//!
//! The pump still forwards every byte as it came. [`Framing::feed`] takes
//! the same chunks and, for a compressed session, inflates them through a
//! fixed buffer into the direction's [`Framer`], so the tracker sees the
//! messages; nothing grows with the size of a packet. Bytes that do not
//! inflate, or inflate to another length than announced, are an error that
//! closes the session. [`Framing::wrap`] frames carbide's own packets (its
//! ERR packets) the way the peer expects them.

use crate::packet::{write_packet, Framer, MessageStart};
use flate2::{Decompress, FlushDecompress, Status};

/// Size of a compressed packet's header.
pub const COMPRESSED_HEADER_LEN: usize = 7;
/// Inflated bytes handed to the framer at a time.
const OUT_BUF: usize = 16 * 1024;

/// One direction's framing: plain packets, or packets inside compressed ones.
pub enum Framing {
    /// The ordinary protocol.
    Plain(Framer),
    /// The compressed protocol.
    Compressed(Box<Inflater>),
}

/// Why a compressed stream cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    /// The zlib payload is corrupt.
    #[error("compressed packet does not inflate: {0}")]
    Inflate(String),
    /// The payload inflated to a length other than its header announced.
    #[error("compressed packet inflates to {got} bytes, its header says {announced}")]
    Length {
        /// Announced by `ulen`.
        announced: usize,
        /// Inflated (at least).
        got: usize,
    },
}

impl Framing {
    /// Plain framing, or compressed when `compressed`.
    pub fn new(compressed: bool) -> Framing {
        if compressed {
            Framing::Compressed(Box::default())
        } else {
            Framing::Plain(Framer::new())
        }
    }

    /// True at a packet boundary (for the compressed protocol: between
    /// compressed packets, and between the packets inside).
    pub fn at_boundary(&self) -> bool {
        match self {
            Framing::Plain(f) => f.at_boundary(),
            Framing::Compressed(i) => i.at_boundary(),
        }
    }

    /// Frames `data` (inflating it first for the compressed protocol) and
    /// reports each message start, like [`Framer::feed`].
    pub fn feed(
        &mut self,
        data: &[u8],
        on_message: impl FnMut(&MessageStart<'_>),
    ) -> Result<(), CompressError> {
        match self {
            Framing::Plain(f) => {
                f.feed(data, on_message);
                Ok(())
            }
            Framing::Compressed(i) => i.feed(data, on_message),
        }
    }

    /// One packet of carbide's own towards the peer this framing reads
    /// from, answering its latest command: `seq` is the packet's sequence
    /// id; for the compressed protocol it goes in a stored compressed packet
    /// numbered after the peer's last one. `unfed` are bytes read from the
    /// peer and not fed (a command carbide answers instead of forwarding).
    pub fn wrap(&self, seq: u8, payload: &[u8], unfed: &[u8]) -> Vec<u8> {
        let mut inner = Vec::with_capacity(payload.len() + 4);
        write_packet(&mut inner, seq, payload);
        let Framing::Compressed(i) = self else {
            return inner;
        };
        let cseq = match unfed.get(3) {
            Some(s) if i.at_boundary() => *s,
            _ => i.last_seq,
        }
        .wrapping_add(1);
        let n = inner.len() as u32;
        let mut out = Vec::with_capacity(COMPRESSED_HEADER_LEN + inner.len());
        out.extend_from_slice(&n.to_le_bytes()[..3]);
        out.push(cseq);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&inner);
        out
    }
}

/// Follows one direction of the compressed protocol.
pub struct Inflater {
    framer: Framer,
    header: [u8; COMPRESSED_HEADER_LEN],
    /// Header bytes collected (7: inside a payload).
    got: usize,
    /// Payload bytes of the current compressed packet still to come.
    left: usize,
    /// `ulen` of the current packet (0: stored).
    ulen: usize,
    /// Bytes inflated from the current packet so far.
    produced: usize,
    z: Decompress,
    out: Vec<u8>,
    /// `cseq` of the latest compressed packet.
    last_seq: u8,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// At a boundary, before any packet.
    pub fn new() -> Inflater {
        Inflater {
            framer: Framer::new(),
            header: [0; COMPRESSED_HEADER_LEN],
            got: 0,
            left: 0,
            ulen: 0,
            produced: 0,
            z: Decompress::new(true),
            out: vec![0; OUT_BUF],
            last_seq: 0,
        }
    }

    /// True between compressed packets and between the packets inside.
    pub fn at_boundary(&self) -> bool {
        self.got == 0 && self.framer.at_boundary()
    }

    /// Consumes compressed bytes in any chunking; the inflated packet
    /// stream goes to the framer, which reports message starts.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on_message: impl FnMut(&MessageStart<'_>),
    ) -> Result<(), CompressError> {
        while !data.is_empty() {
            if self.got < COMPRESSED_HEADER_LEN {
                let take = (COMPRESSED_HEADER_LEN - self.got).min(data.len());
                self.header[self.got..self.got + take].copy_from_slice(&data[..take]);
                self.got += take;
                data = &data[take..];
                if self.got == COMPRESSED_HEADER_LEN {
                    let h = self.header;
                    self.left = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
                    self.last_seq = h[3];
                    self.ulen = u32::from_le_bytes([h[4], h[5], h[6], 0]) as usize;
                    self.produced = 0;
                    self.z.reset(true);
                    if self.left == 0 {
                        self.end_packet()?;
                    }
                }
                continue;
            }
            let take = self.left.min(data.len());
            let part = &data[..take];
            if self.ulen == 0 {
                self.framer.feed(part, &mut on_message);
            } else {
                self.inflate(part, take == self.left, &mut on_message)?;
            }
            self.left -= take;
            data = &data[take..];
            if self.left == 0 {
                self.end_packet()?;
            }
        }
        Ok(())
    }

    /// Inflates `input` into the framer; `last`: it ends the compressed
    /// packet, so whatever the inflater still holds is drained (zlib keeps
    /// back the tail of a stream until it is told no more input comes).
    fn inflate(
        &mut self,
        mut input: &[u8],
        last: bool,
        on_message: &mut impl FnMut(&MessageStart<'_>),
    ) -> Result<(), CompressError> {
        // never Finish on a stream's first call: miniz_oxide then wants the
        // whole output in one buffer
        let mut flush = FlushDecompress::None;
        loop {
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(input, &mut self.out, flush)
                .map_err(|e| CompressError::Inflate(e.to_string()))?;
            let used = (self.z.total_in() - in_before) as usize;
            let made = (self.z.total_out() - out_before) as usize;
            self.produced += made;
            if self.produced > self.ulen {
                return Err(CompressError::Length {
                    announced: self.ulen,
                    got: self.produced,
                });
            }
            self.framer.feed(&self.out[..made], &mut *on_message);
            input = &input[used..];
            if status == Status::StreamEnd {
                return Ok(());
            }
            if made == self.out.len() || (!input.is_empty() && used + made > 0) {
                continue;
            }
            if last && flush == FlushDecompress::None {
                flush = FlushDecompress::Finish;
                continue;
            }
            // more input to come; or, at a packet's end, end_packet checks the length
            return Ok(());
        }
    }

    fn end_packet(&mut self) -> Result<(), CompressError> {
        self.got = 0;
        if self.ulen != 0 && self.produced != self.ulen {
            return Err(CompressError::Length {
                announced: self.ulen,
                got: self.produced,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::ZlibEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    /// Wraps `inner` in compressed packets of at most `chunk` inflated
    /// bytes, zlib-compressing every other one (others stored).
    fn compress(inner: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, part) in inner.chunks(chunk).enumerate() {
            let (payload, ulen) = if i % 2 == 0 {
                (zlib(part), part.len())
            } else {
                (part.to_vec(), 0)
            };
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
            out.push(i as u8);
            out.extend_from_slice(&(ulen as u32).to_le_bytes()[..3]);
            out.extend_from_slice(&payload);
        }
        out
    }

    fn inner_stream() -> Vec<u8> {
        let mut s = Vec::new();
        write_packet(&mut s, 0, b"\x03SELECT 1");
        write_packet(&mut s, 1, &[0x00, 0, 0, 2, 0, 0, 0]);
        write_packet(&mut s, 2, &vec![b'x'; 40_000]);
        write_packet(&mut s, 3, &[0xfe, 0, 0, 2, 0]);
        s
    }

    fn starts(f: &mut Framing, chunks: &[&[u8]]) -> Result<Vec<(u8, Vec<u8>)>, CompressError> {
        let mut seen = Vec::new();
        for c in chunks {
            f.feed(c, |m| seen.push((m.seq, m.prefix().to_vec())))?;
        }
        Ok(seen)
    }

    #[test]
    fn the_same_messages_as_the_plain_stream_at_every_split() {
        let inner = inner_stream();
        let want = starts(&mut Framing::new(false), &[&inner]).unwrap();
        assert_eq!(want.len(), 4);
        for chunk in [5, 100, 16_384, 100_000] {
            let wire = compress(&inner, chunk);
            // every split point would take long with thousands of tiny packets
            let points = if chunk < 100 { 20 } else { 300 };
            let step = (wire.len() / points).max(1);
            for at in (0..=wire.len()).step_by(step) {
                let mut f = Framing::new(true);
                let got = starts(&mut f, &[&wire[..at], &wire[at..]]).unwrap();
                assert_eq!(got, want, "chunk {chunk}, split at {at}");
                assert!(f.at_boundary());
            }
        }
    }

    type Outcome = (Vec<(u8, usize, Vec<u8>)>, Option<String>, bool);

    /// What the fuzz target `compressed_framing` checks, over random bytes.
    fn run(chunks: &[&[u8]]) -> Outcome {
        let mut f = Framing::new(true);
        let mut seen = Vec::new();
        for c in chunks {
            if let Err(e) = f.feed(c, |m| seen.push((m.seq, m.first_len, m.prefix().to_vec()))) {
                return (seen, Some(e.to_string()), false);
            }
        }
        let boundary = f.at_boundary();
        (seen, None, boundary)
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_any_split_same_outcome(
            rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            split in 0usize..200,
        ) {
            let cut = split.min(rest.len());
            let whole = run(&[&rest]);
            let parts = run(&[&rest[..cut], &rest[cut..]]);
            proptest::prop_assert_eq!(whole.1.is_some(), parts.1.is_some());
            if whole.1.is_none() {
                proptest::prop_assert_eq!(whole, parts);
            }
        }

        #[test]
        fn compressed_streams_any_split_same_messages(split in 0usize..4000, chunk in 1usize..3000) {
            let inner = inner_stream();
            let wire = compress(&inner[..3000], chunk);
            let cut = split.min(wire.len());
            let whole = run(&[&wire]);
            proptest::prop_assert_eq!(run(&[&wire[..cut], &wire[cut..]]), whole);
        }
    }

    #[test]
    fn byte_by_byte_and_boundaries() {
        let inner = inner_stream();
        let wire = compress(&inner, 1000);
        let mut f = Framing::new(true);
        let mut n = 0;
        for (i, b) in wire.iter().enumerate() {
            f.feed(std::slice::from_ref(b), |_| n += 1).unwrap();
            if i < 6 {
                assert!(!f.at_boundary(), "inside the first header");
            }
        }
        assert_eq!(n, 4);
        assert!(f.at_boundary());
    }

    #[test]
    fn corrupt_or_mislabelled_payloads_are_errors() {
        let mut bad = vec![4, 0, 0, 0, 10, 0, 0];
        bad.extend_from_slice(b"junk");
        assert!(matches!(
            Framing::new(true).feed(&bad, |_| {}),
            Err(CompressError::Inflate(_))
        ));
        let z = zlib(b"abcdef");
        for ulen in [5u8, 7] {
            let mut w = (z.len() as u32).to_le_bytes()[..3].to_vec();
            w.extend_from_slice(&[0, ulen, 0, 0]);
            w.extend_from_slice(&z);
            assert!(matches!(
                Framing::new(true).feed(&w, |_| {}),
                Err(CompressError::Length { .. })
            ));
        }
    }

    #[test]
    fn carbides_own_packets_follow_the_peers_numbering() {
        let mut f = Framing::new(true);
        let cmd = compress(
            &{
                let mut s = Vec::new();
                write_packet(&mut s, 0, b"\x03SELECT 1");
                s
            },
            1000,
        );
        f.feed(&cmd, |_| {}).unwrap();
        let err = f.wrap(1, b"\xffxx", &[]);
        assert_eq!(&err[..7], &[7, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&err[7..], &[3, 0, 0, 1, 0xff, b'x', b'x']);
        // answering a command not fed: numbered after it
        let next = [9, 0, 0, 5, 0, 0, 0];
        assert_eq!(f.wrap(1, b"\xff", &next)[3], 6);
        let mut g = Framing::new(true);
        let mut seen = Vec::new();
        g.feed(&err, |m| seen.push(m.first_byte())).unwrap();
        assert_eq!(seen, vec![Some(0xff)]);
        assert_eq!(
            Framing::new(false).wrap(1, b"\xff", &next),
            vec![1, 0, 0, 1, 0xff]
        );
    }
}
