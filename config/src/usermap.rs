//! The Tungsten-format `user.map`: which application users may connect
//! through the connector, with their password, dataservice and affinity.
//!
//! ```text
//! # comment lines and trailing "# ..." are ignored
//! app       s3cret        alpha            # user password service
//! report    "pass word"   alpha  db2       # quoted password, affinity db2
//! batch     -             alpha            # '-' is an empty password
//! @direct   admin                          # admin bypasses routing rules
//! @hostoption 10.0.0.7  qos=RO_RELAXED     # sessions from that host read-only
//! ```
//!
//! Text enters through [`UserMap::parse`]; every malformed line is an error
//! naming its 1-based line number, and nothing is partially accepted.

use crate::error::ConfigError;
use std::path::{Path, PathBuf};

/// One application user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// MySQL user name.
    pub user: String,
    /// Its password (empty for `-`).
    pub password: String,
    /// The dataservice it may use.
    pub service: String,
    /// Preferred datasource or site, when given.
    pub affinity: Option<String>,
    /// Line it came from.
    pub line: usize,
}

/// Quality of service a `@hostoption` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// Read-write to the primary.
    RwStrict,
    /// Read-only, a replica may answer.
    RoRelaxed,
}

/// A `@hostoption host qos=...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOption {
    /// Client host (name or address) it applies to.
    pub host: String,
    /// The requested quality of service.
    pub qos: Qos,
    /// Line it came from.
    pub line: usize,
}

/// A parsed user.map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserMap {
    /// Users, in file order.
    pub users: Vec<UserEntry>,
    /// Users named by `@direct`: connected straight to the primary.
    pub direct: Vec<String>,
    /// `@hostoption` lines.
    pub host_options: Vec<HostOption>,
}

impl UserMap {
    /// Reads and parses a user.map file.
    pub fn load(path: &Path) -> Result<UserMap, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        UserMap::parse(&text, path)
    }

    /// Parses user.map text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<UserMap, ConfigError> {
        let mut map = UserMap::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| ConfigError::UserMap {
                path: PathBuf::from(path),
                line,
                message,
            };
            let words = split_words(raw).map_err(&err)?;
            let Some(first) = words.first() else { continue };
            if first.text.starts_with('@') && !first.quoted {
                map.parse_directive(&words, line).map_err(&err)?;
                continue;
            }
            if !(3..=4).contains(&words.len()) {
                return Err(err(format!(
                    "expected 'user password service [affinity]', found {} field(s)",
                    words.len()
                )));
            }
            let user = words[0].text.clone();
            if map.users.iter().any(|u| u.user == user) {
                let first_line = map.users.iter().find(|u| u.user == user).map(|u| u.line);
                return Err(err(format!(
                    "user '{user}' is already defined on line {}",
                    first_line.unwrap_or(0)
                )));
            }
            let password = if words[1].text == "-" && !words[1].quoted {
                String::new()
            } else {
                words[1].text.clone()
            };
            map.users.push(UserEntry {
                user,
                password,
                service: words[2].text.clone(),
                affinity: words.get(3).map(|w| w.text.clone()),
                line,
            });
        }
        Ok(map)
    }

    fn parse_directive(&mut self, words: &[Word], line: usize) -> Result<(), String> {
        match words[0].text.as_str() {
            "@direct" => {
                if words.len() != 2 {
                    return Err("expected '@direct user'".into());
                }
                self.direct.push(words[1].text.clone());
            }
            "@hostoption" => {
                if words.len() != 3 {
                    return Err("expected '@hostoption host qos=RW_STRICT|RO_RELAXED'".into());
                }
                let (k, v) = words[2]
                    .text
                    .split_once('=')
                    .ok_or_else(|| format!("expected option=value, found '{}'", words[2].text))?;
                if k != "qos" {
                    return Err(format!("unknown host option '{k}' (expected qos)"));
                }
                let qos = match v {
                    "RW_STRICT" => Qos::RwStrict,
                    "RO_RELAXED" => Qos::RoRelaxed,
                    _ => {
                        return Err(format!(
                            "unknown qos '{v}' (expected RW_STRICT or RO_RELAXED)"
                        ))
                    }
                };
                self.host_options.push(HostOption {
                    host: words[1].text.clone(),
                    qos,
                    line,
                });
            }
            other => {
                return Err(format!(
                    "unknown directive '{other}' (expected @direct or @hostoption)"
                ))
            }
        }
        Ok(())
    }

    /// The entry for a user, if listed.
    pub fn user(&self, name: &str) -> Option<&UserEntry> {
        self.users.iter().find(|u| u.user == name)
    }
}

struct Word {
    text: String,
    quoted: bool,
}

/// Splits a line into words: whitespace separates, `"..."` or `'...'` quote
/// (a backslash escapes the next character inside quotes), an unquoted `#`
/// starts a comment.
fn split_words(line: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == '#' {
            break;
        }
        if c == '"' || c == '\'' {
            chars.next();
            let mut text = String::new();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == '\\' {
                    match chars.next() {
                        Some(e) => text.push(e),
                        None => break,
                    }
                } else if ch == c {
                    closed = true;
                    break;
                } else {
                    text.push(ch);
                }
            }
            if !closed {
                return Err(format!("unterminated {c}quoted{c} value"));
            }
            if chars
                .peek()
                .is_some_and(|n| !n.is_whitespace() && *n != '#')
            {
                return Err("text directly after a closing quote".into());
            }
            words.push(Word { text, quoted: true });
        } else {
            let mut text = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                text.push(ch);
                chars.next();
            }
            words.push(Word {
                text,
                quoted: false,
            });
        }
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<UserMap, ConfigError> {
        UserMap::parse(t, Path::new("user.map"))
    }

    #[test]
    fn parses_users_directives_and_comments() {
        let m = parse(
            "# header\n\
             app s3cret alpha\n\
             report \"pass word\" alpha db2 # trailing\n\
             batch - alpha\n\
             quoted '-' alpha\n\
             esc \"a\\\"b#c\" alpha\n\
             \n\
             @direct admin\n\
             @hostoption 10.0.0.7 qos=RO_RELAXED\n",
        )
        .unwrap();
        assert_eq!(m.users.len(), 5);
        assert_eq!(m.user("app").unwrap().password, "s3cret");
        let r = m.user("report").unwrap();
        assert_eq!(r.password, "pass word");
        assert_eq!(r.affinity.as_deref(), Some("db2"));
        assert_eq!(r.line, 3);
        assert_eq!(m.user("batch").unwrap().password, "");
        assert_eq!(m.user("quoted").unwrap().password, "-");
        assert_eq!(m.user("esc").unwrap().password, "a\"b#c");
        assert_eq!(m.direct, vec!["admin".to_string()]);
        assert_eq!(m.host_options[0].qos, Qos::RoRelaxed);
        assert_eq!(m.host_options[0].line, 9);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "app pw\n",
                1,
                "expected 'user password service [affinity]', found 2 field(s)",
            ),
            ("a b c\n\n@bogus x\n", 3, "unknown directive '@bogus'"),
            ("app \"open alpha\n", 1, "unterminated \"quoted\" value"),
            ("a b c\na d e\n", 2, "user 'a' is already defined on line 1"),
            ("@hostoption h qos=FAST\n", 1, "unknown qos 'FAST'"),
            ("@hostoption h speed=1\n", 1, "unknown host option 'speed'"),
            ("@direct\n", 1, "expected '@direct user'"),
            ("a \"b\"c d\n", 1, "text directly after a closing quote"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line(), Some(line), "{text:?}");
            let s = e.to_string();
            assert!(s.starts_with(&format!("user.map:{line}: ")), "{s}");
            assert!(s.contains(msg), "{s} should contain {msg}");
        }
    }
}
