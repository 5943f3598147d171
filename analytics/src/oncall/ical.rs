//! A person's shifts as an iCalendar feed (RFC 5545), so that they appear
//! in a phone's calendar: one VEVENT per shift, times in UTC, lines folded
//! at 75 octets without splitting a character, CRLF line ends.

use chrono::{DateTime, Utc};

use super::schedule::Shift;

/// Escapes a TEXT value (RFC 5545 §3.3.11).
fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// One content line, folded at 75 octets (continuations begin with a
/// space), ended with CRLF.
fn line(out: &mut String, content: &str) {
    let mut width = 0;
    for c in content.chars() {
        let n = c.len_utf8();
        if width + n > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += n;
    }
    out.push_str("\r\n");
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The calendar of `person`'s `shifts` (each with its team's name).
pub fn calendar(person: &str, shifts: &[(String, Shift)], now: DateTime<Utc>) -> String {
    let mut out = String::new();
    line(&mut out, "BEGIN:VCALENDAR");
    line(&mut out, "VERSION:2.0");
    line(&mut out, "PRODID:-//estatemon//on-call//EN");
    line(&mut out, "CALSCALE:GREGORIAN");
    line(
        &mut out,
        &format!("X-WR-CALNAME:{}", text(&format!("On call: {person}"))),
    );
    for (team, s) in shifts {
        line(&mut out, "BEGIN:VEVENT");
        line(
            &mut out,
            &format!(
                "UID:{}-{}-{}@estatemon",
                text(
                    &team
                        .chars()
                        .map(|c| if c.is_alphanumeric() { c } else { '-' })
                        .collect::<String>()
                ),
                text(&s.person),
                stamp(s.from)
            ),
        );
        line(&mut out, &format!("DTSTAMP:{}", stamp(now)));
        line(&mut out, &format!("DTSTART:{}", stamp(s.from)));
        line(&mut out, &format!("DTEND:{}", stamp(s.to)));
        line(
            &mut out,
            &format!("SUMMARY:{}", text(&format!("On call: {team}"))),
        );
        line(
            &mut out,
            &format!("DESCRIPTION:{}", text(&format!("{team} ({})", s.source))),
        );
        line(&mut out, "TRANSP:OPAQUE");
        line(&mut out, "END:VEVENT");
    }
    line(&mut out, "END:VCALENDAR");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chinese_lines_fold_between_characters() {
        let mut out = String::new();
        line(&mut out, &format!("SUMMARY:{}", "陳大文當值".repeat(10)));
        for l in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= 75, "{} octets: {l}", l.len());
        }
        let unfolded = out.replace("\r\n ", "");
        assert_eq!(
            unfolded.trim_end(),
            format!("SUMMARY:{}", "陳大文當值".repeat(10))
        );
        assert_eq!(text("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
    }
}

/// A person's feed over `[from, to)`: every team's shifts that are theirs.
/// None: no such person.
pub fn person_feed(
    roster: &super::roster::Roster,
    person: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<String> {
    let person = roster.person(person)?;
    let mine: Vec<(String, Shift)> = roster
        .teams
        .iter()
        .flat_map(|t| {
            super::schedule::shifts(t, &roster.holidays, from, to)
                .into_iter()
                .filter(|s| s.person == person.id)
                .map(|s| (t.name.clone(), s))
                .collect::<Vec<_>>()
        })
        .collect();
    Some(calendar(&person.name, &mine, now))
}
