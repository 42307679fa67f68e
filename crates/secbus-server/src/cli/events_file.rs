//! The events file of `secbus publish`: one CloudEvent JSON object per line,
//! checked whole before anything is published.

use std::fmt;
use std::io::{self, BufRead};

use secbus::Event;

/// A line that is not an event the bus would store.
#[derive(Debug)]
pub(super) struct BadLine {
    /// 1-based, counting blank lines, as an editor shows it.
    pub(super) line: usize,
    pub(super) error: secbus::Error,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error.code())?;
        if let Some(field) = self.error.field() {
            write!(f, " at `{field}`")?;
        }
        write!(f, ": {}", self.error.message())?;
        if let Some(source) = std::error::Error::source(&self.error) {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

/// A check every decoded event passes (the contracts gate and the tenant scope).
pub(super) type Check<'a> = &'a dyn Fn(&mut Event) -> secbus::Result<()>;

/// Decodes every line. Events come back in file order only when every
/// non-blank line is valid; otherwise every bad line comes back and no event,
/// so a caller cannot publish part of a bad file by mistake.
///
/// A line is checked the way the bus checks an event at publish: decoding with
/// the size limit on its bytes, then the limit on the event as the bus will
/// encode it, then `gate` (the contracts gate: schema, secrets, tenant scope),
/// so a file that passes here is not refused halfway through.
pub(super) fn read_events(
    reader: impl BufRead,
    max_event_bytes: usize,
    gate: Option<Check<'_>>,
) -> io::Result<Result<Vec<Event>, Vec<BadLine>>> {
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for (index, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let decoded = Event::from_json_limited(line, max_event_bytes)
            .and_then(|event| event.check_size(max_event_bytes).map(|()| event))
            .and_then(|mut event| match gate {
                Some(check) => check(&mut event).map(|()| event),
                None => Ok(event),
            });
        match decoded {
            Ok(event) if bad.is_empty() => events.push(event),
            Ok(_) => {}
            Err(error) => {
                if bad.is_empty() {
                    // The file will not be published: stop holding its events.
                    events = Vec::new();
                }
                bad.push(BadLine {
                    line: index + 1,
                    error,
                });
            }
        }
    }
    Ok(if bad.is_empty() { Ok(events) } else { Err(bad) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = secbus::DEFAULT_MAX_EVENT_BYTES;

    fn line(id: &str, tenant: &str) -> String {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"test","type":"auth.login","tenantid":"{tenant}"}}"#
        )
    }

    #[test]
    fn reads_valid_lines_in_order_and_skips_blank_ones() {
        let text = format!(
            "{}\n\n  \r\n{}\r\n{}",
            line("a", "acme"),
            line("b", "acme"),
            line("c", "acme")
        );
        let events = read_events(text.as_bytes(), LIMIT, None).unwrap().unwrap();
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn names_every_bad_line_with_its_attribute_and_code() {
        let missing_tenant =
            r#"{"specversion":"1.0","id":"x","source":"test","type":"auth.login"}"#;
        let text = format!(
            "{}\n{missing_tenant}\n\nnot json\n{}\n",
            line("a", "acme"),
            line("b", "Bad Tenant")
        );
        let bad = read_events(text.as_bytes(), LIMIT, None)
            .unwrap()
            .unwrap_err();
        let lines: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [2, 4, 5]);
        assert!(
            lines[0].starts_with("line 2: missing_attribute at `tenantid`: "),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("line 4: malformed_json: "),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("line 5: invalid_attribute at `tenantid`: "),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn applies_the_size_limit() {
        let text = line("a", "acme");
        let bad = read_events(text.as_bytes(), 40, None).unwrap().unwrap_err();
        assert_eq!(bad[0].error.kind(), secbus::ErrorKind::EventTooLarge);
        assert_eq!(bad[0].line, 1);
    }
}
