//! Finds the line of a key in TOML text, so validation errors (which run on
//! the parsed structs, after spans are gone) can still say where to look.
//!
//! Understands the layouts carbide configs use: `[table]`, `[[array]]`
//! headers and `key = value` lines. Returns None when the key is written
//! some other way (inline tables, dotted keys); the error still names it.

/// Line (1-based) of `key` inside the `index`-th `[[table]]` (or inside
/// `[table]` when `index` is None). With an empty `key` the header's line.
pub fn line_of(text: &str, table: &str, index: Option<usize>, key: &str) -> Option<usize> {
    let mut inside = false;
    let mut seen = 0usize;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let header = line.split('#').next().unwrap_or("").trim();
            inside = match index {
                Some(want) if header.starts_with("[[") => {
                    let name = header
                        .trim_start_matches("[[")
                        .trim_end_matches("]]")
                        .trim();
                    if name == table {
                        seen += 1;
                        seen - 1 == want
                    } else {
                        false
                    }
                }
                None if !header.starts_with("[[") => {
                    header.trim_start_matches('[').trim_end_matches(']').trim() == table
                }
                _ => false,
            };
            if inside && key.is_empty() {
                return Some(n + 1);
            }
            continue;
        }
        if inside {
            if let Some((k, _)) = line.split_once('=') {
                let k = k.trim().trim_matches('"');
                if k == key {
                    return Some(n + 1);
                }
            }
        }
    }
    None
}

/// Line (1-based) of a byte offset.
pub fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "[service]\nname = \"a\"\n\n[[member]]\nname = \"x\"\n\n[[member]]\nname = \"y\"\nmysql = \"h:1\"\n";

    #[test]
    fn finds_keys_in_tables_and_arrays() {
        assert_eq!(line_of(T, "service", None, "name"), Some(2));
        assert_eq!(line_of(T, "member", Some(1), "mysql"), Some(9));
        assert_eq!(line_of(T, "member", Some(1), ""), Some(7));
        assert_eq!(line_of(T, "member", Some(0), "mysql"), None);
        assert_eq!(line_at(T, 0), 1);
        assert_eq!(line_at(T, 11), 2);
    }
}
