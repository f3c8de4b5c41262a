//! Binlog positions, Tungsten event ids, and where to resume.
//!
//! An eventid is `FILE:OFFSET;-1` with the offset zero-padded to 16 digits,
//! e.g. `mariadb-bin.000003:0000000000001234;-1`. The offset is the binlog
//! position *after* the transaction's commit event, so resuming means
//! asking the server for exactly that file and offset. [`resume_from_thl`]
//! reads the last transaction of a THL directory and returns the next seqno
//! and the position to ask for.

use crate::thl::{ThlReader, ThlWriter};
use std::fmt;

/// A binlog file and offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BinlogPos {
    /// File name, e.g. `mariadb-bin.000003`.
    pub file: String,
    /// Byte offset in the file.
    pub pos: u64,
}

impl BinlogPos {
    /// A position.
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        BinlogPos {
            file: file.into(),
            pos,
        }
    }

    /// The Tungsten eventid of this position.
    pub fn eventid(&self) -> String {
        format!("{}:{:016};-1", self.file, self.pos)
    }

    /// Parses `FILE:OFFSET[;SESSION]` (padding optional).
    pub fn parse_eventid(s: &str) -> Option<BinlogPos> {
        let main = s.split(';').next()?;
        let (file, pos) = main.rsplit_once(':')?;
        if file.is_empty() {
            return None;
        }
        Some(BinlogPos {
            file: file.to_string(),
            pos: pos.trim().parse().ok()?,
        })
    }
}

impl fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// Where extraction starts when the THL is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The server's current binlog end (`SHOW MASTER STATUS`): the default,
    /// as for a master whose replicas were provisioned from a backup.
    Current,
    /// The oldest binlog the server still has, from offset 4.
    Earliest,
    /// An explicit position.
    At(BinlogPos),
    /// After a MariaDB GTID position (`D-S-N[,D-S-N…]`).
    Gtid(String),
}

impl std::str::FromStr for StartPosition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "current" => Ok(StartPosition::Current),
            "earliest" => Ok(StartPosition::Earliest),
            _ if s.starts_with("gtid:") => Ok(StartPosition::Gtid(s[5..].to_string())),
            _ => BinlogPos::parse_eventid(s)
                .map(StartPosition::At)
                .ok_or_else(|| {
                    format!("'{s}': expected current, earliest, FILE:OFFSET or gtid:D-S-N")
                }),
        }
    }
}

/// What the THL tail says about where to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Seqno of the next transaction to store.
    pub next_seqno: u64,
    /// Last stored transaction: seqno, eventid, gtid (if any).
    pub last: Option<(u64, String, Option<String>)>,
    /// Position to request from the source (`None`: THL empty, use the
    /// configured [`StartPosition`]).
    pub start: Option<StartPosition>,
}

/// Reads the last transaction of the THL `writer` owns.
pub fn resume_from_thl(writer: &ThlWriter) -> crate::thl::Result<Resume> {
    let next = writer.next_seqno().unwrap_or(0);
    let Some(last) = writer.last_seqno() else {
        return Ok(Resume {
            next_seqno: next,
            last: None,
            start: None,
        });
    };
    let reader = ThlReader::open(writer.dir())?;
    let Some(ev) = reader.get(last)? else {
        return Ok(Resume {
            next_seqno: next,
            last: None,
            start: None,
        });
    };
    let gtid = ev.meta("gtid").map(String::from);
    let start = match BinlogPos::parse_eventid(&ev.eventid) {
        Some(p) => Some(StartPosition::At(p)),
        None => gtid.clone().map(StartPosition::Gtid),
    };
    Ok(Resume {
        next_seqno: last + 1,
        last: Some((last, ev.eventid.clone(), gtid)),
        start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventid_format_and_parse() {
        let p = BinlogPos::new("mariadb-bin.000032", 473860407);
        assert_eq!(p.eventid(), "mariadb-bin.000032:0000000473860407;-1");
        assert_eq!(BinlogPos::parse_eventid(&p.eventid()), Some(p.clone()));
        assert_eq!(
            BinlogPos::parse_eventid("mariadb-bin.000032:473860407"),
            Some(p)
        );
        assert_eq!(BinlogPos::parse_eventid("nofile"), None);
        assert_eq!(BinlogPos::parse_eventid(":12"), None);
        assert_eq!(BinlogPos::parse_eventid("f:x"), None);
    }

    #[test]
    fn start_position_text() {
        assert_eq!("current".parse(), Ok(StartPosition::Current));
        assert_eq!(
            "gtid:0-1-5".parse(),
            Ok(StartPosition::Gtid("0-1-5".into()))
        );
        assert_eq!(
            "b.000001:4".parse(),
            Ok(StartPosition::At(BinlogPos::new("b.000001", 4)))
        );
        assert!("junk".parse::<StartPosition>().is_err());
    }
}
