//! The parts of the MySQL/MariaDB client/server protocol the connector reads
//! or writes: capability flags, the server greeting and the client's
//! handshake response (to adjust capabilities in flight), OK/EOF status
//! flags, length-encoded integers, and ERR packets carbide sends itself.
//!
//! Everything here is a pure function over byte slices; malformed input
//! gives `None` or a [`ProtocolError`], never a panic.

/// Capability flags (lower 32 bits as on the wire).
pub mod cap {
    /// CLIENT_MYSQL / CLIENT_LONG_PASSWORD: unset means the MariaDB extended
    /// capabilities are present.
    pub const CLIENT_MYSQL: u32 = 1;
    /// Compressed protocol.
    pub const COMPRESS: u32 = 0x20;
    /// LOAD DATA LOCAL INFILE.
    pub const LOCAL_FILES: u32 = 0x80;
    /// Protocol 4.1.
    pub const PROTOCOL_41: u32 = 0x200;
    /// TLS.
    pub const SSL: u32 = 0x800;
    /// OK packets end result sets instead of EOF.
    pub const DEPRECATE_EOF: u32 = 1 << 24;
    /// zstd compression.
    pub const ZSTD: u32 = 1 << 26;
}

/// MariaDB extended capabilities (the 4 bytes MariaDB puts in reserved
/// space when `CLIENT_MYSQL` is unset).
pub mod mariadb_cap {
    /// Progress reports (ERR packets with code 0xFFFF mid-statement).
    pub const PROGRESS: u32 = 1;
    /// Result-set metadata caching for prepared statements.
    pub const CACHE_METADATA: u32 = 1 << 4;
}

/// Server status flag: a transaction is open.
pub const STATUS_IN_TRANS: u16 = 0x0001;
/// Server status flag: another result set follows.
pub const STATUS_MORE_RESULTS: u16 = 0x0008;

/// Command bytes the connector distinguishes.
pub mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const REGISTER_SLAVE: u8 = 0x15;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const BINLOG_DUMP_GTID: u8 = 0x1e;
    pub const RESET_CONNECTION: u8 = 0x1f;
    pub const STMT_BULK_EXECUTE: u8 = 0xfa;
}

/// Index of a command byte's label in [`COMMAND_NAMES`] (a match, no
/// string work: it runs once per command).
pub fn command_index(c: u8) -> usize {
    match c {
        com::QUIT => 0,
        com::INIT_DB => 1,
        com::QUERY => 2,
        com::FIELD_LIST => 3,
        com::STATISTICS => 4,
        com::PROCESS_KILL => 5,
        com::PING => 6,
        com::CHANGE_USER => 7,
        com::BINLOG_DUMP | com::BINLOG_DUMP_GTID => 8,
        com::STMT_PREPARE => 9,
        com::STMT_EXECUTE => 10,
        com::STMT_SEND_LONG_DATA => 11,
        com::STMT_CLOSE => 12,
        com::STMT_RESET => 13,
        com::SET_OPTION => 14,
        com::STMT_FETCH => 15,
        com::RESET_CONNECTION => 16,
        com::STMT_BULK_EXECUTE => 17,
        _ => 18,
    }
}

/// A short label for a command byte, used as a metrics label.
pub fn command_name(c: u8) -> &'static str {
    COMMAND_NAMES[command_index(c)]
}

/// All command labels, for pre-registering metrics.
pub const COMMAND_NAMES: &[&str] = &[
    "quit",
    "init_db",
    "query",
    "field_list",
    "statistics",
    "process_kill",
    "ping",
    "change_user",
    "binlog_dump",
    "stmt_prepare",
    "stmt_execute",
    "stmt_send_long_data",
    "stmt_close",
    "stmt_reset",
    "set_option",
    "stmt_fetch",
    "reset_connection",
    "stmt_bulk_execute",
    "other",
];

/// Why a handshake packet could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The server greeting is not a protocol-10 handshake.
    #[error("unsupported server greeting (protocol version {0})")]
    BadGreeting(u8),
    /// A packet is shorter than its fixed fields.
    #[error("truncated {0}")]
    Truncated(&'static str),
}

/// Reads a length-encoded integer; returns (value, bytes used).
pub fn lenenc_int(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let need = match first {
        0..=0xfa => return Some((first as u64, 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = b.get(1..1 + need)?;
    let mut v = 0u64;
    for (i, x) in bytes.iter().enumerate() {
        v |= (*x as u64) << (8 * i);
    }
    Some((v, 1 + need))
}

/// Status flags of an OK packet payload (header 0x00 or 0xFE).
pub fn ok_status(payload: &[u8]) -> Option<u16> {
    let mut pos = 1;
    let (_, n) = lenenc_int(payload.get(pos..)?)?; // affected rows
    pos += n;
    let (_, n) = lenenc_int(payload.get(pos..)?)?; // last insert id
    pos += n;
    let s = payload.get(pos..pos + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// Status flags of a classic EOF packet payload (0xFE, warnings, status).
pub fn eof_status(payload: &[u8]) -> Option<u16> {
    let s = payload.get(3..5)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// An ERR packet payload: 0xFF, code, `#`, SQLSTATE, message.
pub fn err_payload(code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(9 + message.len());
    p.push(0xff);
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let mut state = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in state.iter_mut().zip(sqlstate.bytes()) {
        *d = s;
    }
    p.extend_from_slice(&state);
    p.extend_from_slice(message.as_bytes());
    p
}

/// An ERR payload in the pre-4.1 form (no SQLSTATE), which is what a
/// server sends before it knows the client's capabilities (instead of its
/// greeting).
pub fn err_payload_pre41(code: u16, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(3 + message.len());
    p.push(0xff);
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

/// The error code and message of an ERR payload.
pub fn parse_err(payload: &[u8]) -> Option<(u16, String)> {
    if payload.first() != Some(&0xff) {
        return None;
    }
    let code = u16::from_le_bytes([*payload.get(1)?, *payload.get(2)?]);
    let msg = if payload.get(3) == Some(&b'#') {
        payload.get(9..).unwrap_or_default()
    } else {
        payload.get(3..).unwrap_or_default()
    };
    Some((code, String::from_utf8_lossy(msg).into_owned()))
}

/// Where the capability fields sit in a server greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    caps_lo: usize,
    caps_hi: usize,
    ext: usize,
    /// The server's connection id.
    pub connection_id: u32,
}

impl Greeting {
    /// Locates the fields of a protocol-10 greeting payload.
    pub fn parse(p: &[u8]) -> Result<Greeting, ProtocolError> {
        let version = *p.first().ok_or(ProtocolError::Truncated("greeting"))?;
        if version != 10 {
            return Err(ProtocolError::BadGreeting(version));
        }
        let nul = p[1..]
            .iter()
            .position(|b| *b == 0)
            .ok_or(ProtocolError::Truncated("greeting server version"))?;
        let id_at = 1 + nul + 1;
        let caps_lo = id_at + 4 + 8 + 1;
        // caps_lo(2) charset(1) status(2) caps_hi(2) auth_len(1) reserved(10)
        if p.len() < caps_lo + 18 {
            return Err(ProtocolError::Truncated("greeting"));
        }
        let id = &p[id_at..id_at + 4];
        Ok(Greeting {
            caps_lo,
            caps_hi: caps_lo + 5,
            ext: caps_lo + 14,
            connection_id: u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
        })
    }

    /// The capability flags.
    pub fn caps(&self, p: &[u8]) -> u32 {
        u16::from_le_bytes([p[self.caps_lo], p[self.caps_lo + 1]]) as u32
            | (u16::from_le_bytes([p[self.caps_hi], p[self.caps_hi + 1]]) as u32) << 16
    }

    /// Rewrites the capability flags in place: clears `clear`, sets `set`,
    /// and clears `clear_ext` in MariaDB's extended capabilities.
    pub fn adjust(&self, p: &mut [u8], clear: u32, set: u32, clear_ext: u32) {
        let caps = (self.caps(p) & !clear) | set;
        p[self.caps_lo..self.caps_lo + 2].copy_from_slice(&(caps as u16).to_le_bytes());
        p[self.caps_hi..self.caps_hi + 2].copy_from_slice(&((caps >> 16) as u16).to_le_bytes());
        if caps & cap::CLIENT_MYSQL == 0 {
            clear_ext_caps(&mut p[self.ext..self.ext + 4], clear_ext);
        }
    }
}

fn clear_ext_caps(field: &mut [u8], clear: u32) {
    let ext = u32::from_le_bytes([field[0], field[1], field[2], field[3]]) & !clear;
    field.copy_from_slice(&ext.to_le_bytes());
}

/// Length of an SSLRequest payload (caps, max packet, charset, filler).
pub const SSL_REQUEST_LEN: usize = 32;

/// The client capability flags of a handshake response (or SSLRequest).
pub fn response_caps(p: &[u8]) -> Option<u32> {
    let b = p.get(0..4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Rewrites a client handshake response in place: clears `clear` from its
/// capabilities and `clear_ext` from MariaDB's extended ones.
pub fn adjust_response(p: &mut [u8], clear: u32, clear_ext: u32) -> Result<(), ProtocolError> {
    let caps = response_caps(p).ok_or(ProtocolError::Truncated("handshake response"))? & !clear;
    p[0..4].copy_from_slice(&caps.to_le_bytes());
    if caps & cap::CLIENT_MYSQL == 0 && p.len() >= SSL_REQUEST_LEN {
        clear_ext_caps(&mut p[28..32], clear_ext);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MariaDB 10.11 greeting as captured on the wire (scramble zeroed).
    fn greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB\0");
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(&[1; 8]);
        p.push(0);
        let caps: u32 = 0xf7fe | (0x81bf << 16) | cap::COMPRESS | cap::SSL;
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(
            &(mariadb_cap::PROGRESS | mariadb_cap::CACHE_METADATA | 4).to_le_bytes(),
        );
        p.extend_from_slice(&[2; 12]);
        p.push(0);
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn greeting_caps_are_adjusted_in_place() {
        let mut p = greeting();
        let g = Greeting::parse(&p).unwrap();
        assert_eq!(g.connection_id, 42);
        assert!(g.caps(&p) & cap::COMPRESS != 0);
        g.adjust(
            &mut p,
            cap::COMPRESS | cap::SSL,
            0,
            mariadb_cap::PROGRESS | mariadb_cap::CACHE_METADATA,
        );
        let c = g.caps(&p);
        assert_eq!(c & (cap::COMPRESS | cap::SSL), 0);
        assert!(c & cap::PROTOCOL_41 != 0);
        assert_eq!(
            u32::from_le_bytes(p[g.ext..g.ext + 4].try_into().unwrap()),
            4
        );
        g.adjust(&mut p, 0, cap::SSL, 0);
        assert!(g.caps(&p) & cap::SSL != 0);
    }

    #[test]
    fn bad_greetings_are_errors() {
        assert_eq!(
            Greeting::parse(&[]),
            Err(ProtocolError::Truncated("greeting"))
        );
        assert_eq!(Greeting::parse(&[9, 0]), Err(ProtocolError::BadGreeting(9)));
        assert!(Greeting::parse(&greeting()[..30]).is_err());
        assert!(Greeting::parse(&[10, b'a', b'b']).is_err());
    }

    #[test]
    fn lenenc_and_status() {
        assert_eq!(lenenc_int(&[0xfa]), Some((250, 1)));
        assert_eq!(lenenc_int(&[0xfc, 0x01, 0x02]), Some((0x0201, 3)));
        assert_eq!(lenenc_int(&[0xfd, 1, 0, 0]), Some((1, 4)));
        assert_eq!(lenenc_int(&[0xfe, 1, 0, 0, 0, 0, 0, 0, 0]), Some((1, 9)));
        assert_eq!(lenenc_int(&[0xfc, 1]), None);
        assert_eq!(lenenc_int(&[0xff]), None);
        assert_eq!(ok_status(&[0, 1, 0xfc, 0, 1, 3, 0, 0, 0]), Some(3));
        assert_eq!(ok_status(&[0, 1]), None);
        assert_eq!(eof_status(&[0xfe, 0, 0, 0x08, 0]), Some(8));
    }

    #[test]
    fn err_packets_round_trip() {
        let p = err_payload(1040, "08004", "Too many connections");
        assert_eq!(parse_err(&p), Some((1040, "Too many connections".into())));
        assert_eq!(&p[3..9], b"#08004");
    }

    #[test]
    fn command_labels_line_up() {
        assert_eq!(command_name(com::QUERY), "query");
        assert_eq!(command_name(com::BINLOG_DUMP_GTID), "binlog_dump");
        assert_eq!(command_name(com::STMT_BULK_EXECUTE), "stmt_bulk_execute");
        assert_eq!(command_name(0x99), "other");
        assert_eq!(command_index(0x99), COMMAND_NAMES.len() - 1);
    }

    #[test]
    fn response_caps_are_cleared() {
        let mut r = vec![0u8; 40];
        r[0..4].copy_from_slice(&(cap::SSL | cap::PROTOCOL_41 | cap::COMPRESS).to_le_bytes());
        r[28..32].copy_from_slice(&(mariadb_cap::PROGRESS | 8).to_le_bytes());
        adjust_response(&mut r, cap::SSL | cap::COMPRESS, mariadb_cap::PROGRESS).unwrap();
        assert_eq!(response_caps(&r), Some(cap::PROTOCOL_41));
        assert_eq!(&r[28..32], &8u32.to_le_bytes());
        assert!(adjust_response(&mut [1, 2], 0, 0).is_err());
    }
}
