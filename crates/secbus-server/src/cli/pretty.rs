//! `tail --format pretty`: one readable line per event for a person at a terminal.

use std::io::{self, Write};

use secbus::Event;

/// Writes `time  type  subject  id=...  corr=...[  cause=...]`.
///
/// Columns line up for the usual widths, ids are printed whole so they can be
/// copied, and free-text attributes have control characters escaped: an event's
/// subject comes from whoever published it and must not drive the terminal.
pub(super) fn write_line(out: &mut impl Write, event: &Event) -> io::Result<()> {
    let time = event.time.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
    );
    let subject = event
        .subject
        .as_deref()
        .map_or_else(|| "-".to_owned(), printable);
    write!(
        out,
        "{time:<24}  {:<28}  {subject:<24}  id={}  corr={}",
        event.ty.as_str(),
        event.id.as_str(),
        printable(&event.correlationid),
    )?;
    if let Some(cause) = &event.causationid {
        write!(out, "  cause={}", printable(cause))?;
    }
    out.write_all(b"\n")
}

fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secbus::{EventType, TenantId};

    #[test]
    fn one_line_with_the_attributes_an_analyst_reads() {
        let parent = Event::builder(
            EventType::new("auth.login.failed").unwrap(),
            TenantId::new("acme").unwrap(),
        )
        .subject("user:bob")
        .time("2026-01-02T03:04:05.678Z".parse().unwrap())
        .build()
        .unwrap();
        let child = Event::builder(
            EventType::new("alert.bruteforce").unwrap(),
            TenantId::new("acme").unwrap(),
        )
        .subject("evil\u{1b}[2Jsubject\n")
        .caused_by(&parent)
        .build()
        .unwrap();
        let mut out = Vec::new();
        write_line(&mut out, &parent).unwrap();
        write_line(&mut out, &child).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("2026-01-02 03:04:05.678Z  auth.login.failed "));
        assert!(lines[0].contains(" user:bob "));
        assert!(lines[0].contains(&format!(
            "id={}  corr={}",
            parent.id.as_str(),
            parent.id.as_str()
        )));
        assert!(!lines[0].contains("cause="));
        assert!(lines[1].starts_with("-  ") || lines[1].starts_with("- "));
        assert!(lines[1].contains(r"evil\u{1b}[2Jsubject\n"), "{}", lines[1]);
        assert!(lines[1].ends_with(&format!("cause={}", parent.id.as_str())));
    }
}
