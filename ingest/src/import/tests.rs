//! The parser on exports in the layouts meters and utilities publish.

use super::*;

fn format(reads: Option<Reads>, tz: &str) -> Format {
    Format {
        device_id: "m".into(),
        metric: Metric::EnergyKwh,
        time_column: None,
        date_column: None,
        value_column: None,
        quality_column: None,
        skip_lines: None,
        reads,
        unit: None,
        tz: tz.parse().unwrap(),
        register_base: 1_000_000.0,
        accept: (
            DateTime::from_timestamp(0, 0).unwrap(),
            DateTime::from_timestamp(4_000_000_000, 0).unwrap(),
            "test",
        ),
    }
}

/// The first rows of OpenEEmeter's bundled sample
/// `eemeter/samples/il-electricity-cdd-hdd-daily.csv.gz` (eemeter 4.1.1
/// on PyPI, Apache-2.0): daily kWh stamped at Chicago's local midnight.
const EEMETER_DAILY: &str = "start,value\n\
    2015-11-22T00:00:00-06:00,32.34\n\
    2015-11-23T00:00:00-06:00,23.8\n\
    2015-11-24T00:00:00-06:00,26.26\n\
    2015-11-25T00:00:00-06:00,21.32\n";

#[test]
fn daily_interval_reads_become_a_register_on_local_midnights() {
    let out = parse(EEMETER_DAILY, &format(None, "America/Chicago")).unwrap();
    assert_eq!(out.reads, Some(Reads::Interval));
    assert!(out.daily && out.rejects.is_empty() && out.holes == 0);
    assert_eq!(out.readings.len(), 5, "a start and one end per day");
    let use_of = |k: usize| out.readings[k + 1].value - out.readings[k].value;
    assert!((use_of(0) - 32.34).abs() < 1e-9 && (use_of(3) - 21.32).abs() < 1e-9);
    assert_eq!(
        out.readings[0].ts,
        DateTime::parse_from_rfc3339("2015-11-22T06:00:00Z").unwrap()
    );
    assert_eq!(
        out.readings[4].ts,
        DateTime::parse_from_rfc3339("2015-11-26T06:00:00Z").unwrap()
    );
    assert!(out.notes.iter().any(|n| n.contains("read as kWh")));
}

#[test]
fn daily_reads_stamped_at_utc_midnight_are_credited_to_the_day_they_name() {
    let text = EEMETER_DAILY.replace("T00:00:00-06:00", "T00:00:00Z");
    let out = parse(&text, &format(None, "America/Chicago")).unwrap();
    // 00:00Z is 18:00 the day before in Chicago; the read is still 22
    // November's, at Chicago's midnight.
    assert_eq!(
        out.readings[0].ts,
        DateTime::parse_from_rfc3339("2015-11-22T06:00:00Z").unwrap()
    );
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("4 daily read(s)") && n.contains("line 2")),
        "{:?}",
        out.notes
    );
}

#[test]
fn holes_bad_lines_and_units() {
    let text = "Interval Start,Usage (Wh)\n\
        2026-03-01 00:00,1000\n\
        2026-03-01 01:00,nan\n\
        2026-03-01 02:00,2000\n\
        2026-03-01 03:00,abc\n\
        yesterday,5\n\
        2026-03-01 04:00,-3\n\
        2026-03-01 05:00,500\n\
        2026-03-01 06:00,1000\n";
    let out = parse(text, &format(None, "Asia/Hong_Kong")).unwrap();
    assert_eq!(out.unit, Some("Wh"));
    assert_eq!(out.missing, [3]);
    let lines: Vec<usize> = out.rejects.iter().map(|r| r.0).collect();
    assert_eq!(lines, [5, 6, 7]);
    assert!(out.rejects[1].2.detail.contains("line 6"));
    assert_eq!(out.rejects[0].1, "2026-03-01 03:00,abc");
    // Hours 1, 3 and 4 are missing: two holes, each a fall (unknown).
    assert_eq!(out.holes, 2);
    let v: Vec<f64> = out.readings.iter().map(|r| r.value).collect();
    assert_eq!(
        v,
        [
            1e6,
            1e6 + 1.0,
            500_000.5,
            500_002.5,
            250_001.25,
            250_001.75,
            250_002.75
        ]
    );
    // Naive times are the site's: 00:00 in Hong Kong is 16:00 UTC.
    assert_eq!(
        out.readings[0].ts,
        DateTime::parse_from_rfc3339("2026-02-28T16:00:00Z").unwrap()
    );
}

#[test]
fn line_numbers_count_blank_lines_and_daily_registers_keep_their_instants() {
    let text = "start,value\n2026-03-01,1\n\n2026-03-02,bad\n";
    let out = parse(text, &format(None, "UTC")).unwrap();
    assert_eq!(out.rejects[0].0, 4, "{:?}", out.rejects);
    let regs = "date,meter reading (kWh)\n2026-01-05 23:59:59,100\n2026-01-06 23:59:59,110\n2026-01-07 23:59:59,125\n";
    let out = parse(regs, &format(None, "Asia/Hong_Kong")).unwrap();
    assert_eq!(out.reads, Some(Reads::Register));
    assert!(out.daily);
    assert_eq!(
        out.readings[0].ts,
        DateTime::parse_from_rfc3339("2026-01-05T15:59:59Z").unwrap(),
        "an end-of-day read stays at the day's end"
    );
}

proptest::proptest! {
    /// Whatever the bytes, parsing answers (rows, rejects or a file
    /// error) and every reading it gives is finite.
    #[test]
    fn any_text_parses_or_says_why(text in "(?s).{0,400}", lines in proptest::collection::vec("[-0-9T:. ,a-zZ+]{0,30}", 0..20)) {
        for body in [text.clone(), format!("start,value\n{}", lines.join("\n"))] {
            if let Ok(out) = parse(&body, &format(None, "Europe/London")) {
                proptest::prop_assert!(out.readings.iter().all(|r| r.value.is_finite()));
                proptest::prop_assert!(out.rejects.len() + out.missing.len() <= out.rows);
            }
        }
    }
}

#[test]
fn registers_gauges_and_refusals() {
    let regs =
        "timestamp,meter reading [kWh]\n2026-01-01T00:00:00Z,100\n2026-01-01T00:15:00Z,101.5\n";
    let out = parse(regs, &format(None, "UTC")).unwrap();
    assert_eq!(out.reads, Some(Reads::Register));
    assert_eq!(out.readings[1].value, 101.5);

    let temps = "dt,tempF\n2015-11-22T00:00:00-06:00,21.01\n2015-11-22T01:00:00-06:00,20.35\n";
    let mut f = format(None, "America/Chicago");
    f.metric = Metric::TemperatureC;
    f.unit = Unit::parse("°F");
    let out = parse(temps, &f).unwrap();
    assert_eq!(out.reads, Some(Reads::Gauge));
    assert!((out.readings[0].value - (21.01 - 32.0) * 5.0 / 9.0).abs() < 1e-9);

    let mut recent = format(None, "UTC");
    recent.accept.0 = DateTime::from_timestamp(1_767_225_600, 0).unwrap(); // 2026-01-01
    let old = parse("start,value\n2015-11-22,1\n2026-02-01,2\n", &recent).unwrap();
    assert_eq!(old.rejects.len(), 1);
    assert_eq!(old.rejects[0].2.reason, Reason::TimestampTooOld);
    assert!(old.rejects[0].2.detail.starts_with("line 2:"));

    let e = parse("when,what\n1,2\n", &format(None, "UTC")).unwrap_err();
    assert!(e.0.contains("--time-column"), "{e}");
    let e = parse("start,value (W)\n2026-01-01,1\n", &format(None, "UTC")).unwrap_err();
    assert!(e.0.contains("does not measure"), "{e}");
}

/// PG&E's Green Button "Download My Data" CSV, as its downloads are laid
/// out (the same Opower layout PECO, ComEd and Con Edison publish): four
/// preamble lines, a blank line, then `TYPE,DATE,START TIME,END TIME,USAGE,
/// UNITS,COST,NOTES`, one row per interval with its date and its start and
/// end times of day apart. Reproduced from the documented layout (values
/// made up): `days` days of `per_hour` intervals an hour, each `kwh`.
fn green_button(days: &[&str], per_hour: u32, kwh: impl Fn(u32) -> f64) -> String {
    let mut s = String::from(
        "Name,JANE DOE\nAddress,\"77 BEALE ST, SAN FRANCISCO CA 94105\"\n\
         Account Number,1234567890\nService,Service 1\n\n\
         TYPE,DATE,START TIME,END TIME,USAGE,UNITS,COST,NOTES\n",
    );
    let step = 60 / per_hour;
    for day in days {
        for k in 0..24 * per_hour {
            let (h, m) = (k / per_hour, (k % per_hour) * step);
            let end = h * 60 + m + step - 1;
            s.push_str(&format!(
                "Electric usage,{day},{h:02}:{m:02},{:02}:{:02},{:.2},kWh,$0.03,\n",
                end / 60,
                end % 60,
                kwh(k)
            ));
        }
    }
    s
}

#[test]
fn green_button_csv_reads_its_date_and_start_time_after_the_preamble() {
    // 15-minute use whose days add up to 23.04 kWh.
    let text = green_button(&["2026-01-05", "2026-01-06"], 4, |k| {
        0.23 + 0.04 * f64::from(k % 4 == 0)
    });
    let out = parse(&text, &format(None, "America/Los_Angeles")).unwrap();
    assert_eq!(out.preamble, 5);
    assert_eq!(out.columns.0, "DATE + START TIME");
    assert_eq!(out.columns.1, "USAGE");
    assert_eq!(out.unit, Some("kWh"));
    assert!(
        !out.notes.iter().any(|n| n.contains("read as")),
        "the UNITS column gives the unit: {:?}",
        out.notes
    );
    assert_eq!(out.cadence, Some(Duration::minutes(15)));
    assert_eq!((out.rows, out.holes, out.rejects.len()), (192, 0, 0));
    // A start and one end per interval; each local day's use is the file's.
    assert_eq!(out.readings.len(), 193);
    let day = |k: usize| out.readings[96 * (k + 1)].value - out.readings[96 * k].value;
    assert!((day(0) - 23.04).abs() < 1e-6 && (day(1) - 23.04).abs() < 1e-6);
    assert_eq!(
        out.readings[0].ts,
        DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z").unwrap()
    );
    // Line numbers are the file's: the preamble and the header count.
    let bad = text.replacen("00:15,00:29,0.23", "00:15,00:29,abc", 1);
    let out = parse(&bad, &format(None, "America/Los_Angeles")).unwrap();
    assert_eq!(out.rejects[0].0, 8, "{:?}", out.rejects);
    assert!(out.rejects[0].2.detail.starts_with("line 8:"));
    // --skip-lines names the header's place instead.
    let mut f = format(None, "America/Los_Angeles");
    f.skip_lines = Some(5);
    assert_eq!(parse(&text, &f).unwrap().readings.len(), 193);
    f.skip_lines = Some(2);
    assert!(parse(&text, &f).is_err());
}

#[test]
fn a_date_column_named_as_the_time_is_refused_not_collapsed() {
    // 96 intervals of 0.10 and 0.25 kWh: 16.8 kWh a day, which the date
    // alone would store as the first interval's 0.10.
    let text = green_button(&["2026-01-05", "2026-01-06"], 4, |k| {
        0.10 + 0.15 * f64::from(k % 2)
    });
    let mut f = format(None, "America/Los_Angeles");
    f.time_column = Some("DATE".into());
    let e = parse(&text, &f).unwrap_err();
    assert!(
        e.0.contains("190 of 192 rows")
            && e.0
                .contains("--date-column 'DATE' --time-column 'START TIME'"),
        "{e}"
    );
    // Named both ways, it reads.
    f.date_column = Some("DATE".into());
    f.time_column = Some("START TIME".into());
    let out = parse(&text, &f).unwrap();
    assert_eq!((out.readings.len(), out.holes), (193, 0));
    // The same refusal when every interval has the same value (exact
    // repeats are just as wrong stored once).
    let flat = green_button(&["2026-01-05"], 4, |_| 0.25);
    let mut f = format(None, "America/Los_Angeles");
    f.time_column = Some("DATE".into());
    assert!(parse(&flat, &f).unwrap_err().0.contains("95 of 96 rows"));
}

#[test]
fn duplicates_are_counted_and_conflicts_are_dead_letters_with_both_values() {
    let text = "start,value\n\
        2026-03-01 00:00,1\n\
        2026-03-01 01:00,2\n\
        2026-03-01 01:00,2\n\
        2026-03-01 02:00,3\n\
        2026-03-01 02:00,4\n\
        2026-03-01 03:00,5\n";
    let out = parse(text, &format(None, "UTC")).unwrap();
    assert_eq!(out.duplicates, [4]);
    assert_eq!(out.rejects.len(), 1);
    let (line, raw, r) = &out.rejects[0];
    assert_eq!((*line, raw.as_str()), (6, "2026-03-01 02:00,4"));
    assert_eq!(r.reason, Reason::ConflictingDuplicate);
    assert!(
        r.detail
            .contains("line 5's time, with 3 kWh; this row says 4 kWh"),
        "{}",
        r.detail
    );
    assert_eq!(out.holes, 0);
    assert_eq!(out.readings.last().unwrap().value, 1e6 + 11.0);
}

#[test]
fn quality_flags_are_counted_and_estimated_rows_named() {
    // An AMI head-end's interval export with a quality flag per row (`A`
    // actual, `E` estimated), as MDMS exports write them.
    let text = "Interval Start,kWh,Quality\n\
        2026-03-01 00:00,1.5,A\n\
        2026-03-01 01:00,1.25,E\n\
        2026-03-01 02:00,1.0,E\n\
        2026-03-01 03:00,2.0,A\n";
    let out = parse(text, &format(None, "Asia/Hong_Kong")).unwrap();
    assert_eq!(out.quality_column.as_deref(), Some("Quality"));
    assert_eq!(out.actual, 2);
    let lines: Vec<usize> = out.estimated.iter().map(|e| e.0).collect();
    assert_eq!(lines, [3, 4]);
    assert!((out.estimated.iter().map(|e| e.2).sum::<f64>() - 2.25).abs() < 1e-9);
    // Green Button's NOTES saying so count too; other notes do not.
    let text = green_button(&["2026-01-05"], 1, |_| 1.0)
        .replacen("$0.03,\n", "$0.03,This read was estimated\n", 2)
        .replacen("$0.03,\n", "$0.03,Meter exchange\n", 1);
    let out = parse(&text, &format(None, "America/Los_Angeles")).unwrap();
    assert_eq!(out.quality_column.as_deref(), Some("NOTES"));
    assert_eq!((out.estimated.len(), out.actual), (2, 0));
}

#[test]
fn the_fall_back_hour_is_read_by_order_or_offset_and_named_when_it_cannot_be() {
    // PG&E writes the repeated 01:00 hour twice on the fall-back day.
    let mut rows = String::from("TYPE,DATE,START TIME,END TIME,USAGE,UNITS,COST,NOTES\n");
    for (h, kwh) in [(0, 1.0), (1, 2.0), (1, 3.0), (2, 4.0), (3, 5.0)] {
        rows.push_str(&format!(
            "Electric usage,2025-11-02,{h:02}:00,{h:02}:59,{kwh},kWh,,\n"
        ));
    }
    let out = parse(&rows, &format(None, "America/Los_Angeles")).unwrap();
    assert_eq!((out.holes, out.rejects.len()), (0, 0), "{:?}", out.notes);
    assert_eq!(out.readings.len(), 6, "five hours, none dropped");
    assert_eq!(out.readings.last().unwrap().value, 1e6 + 15.0);
    assert!(out.notes.iter().any(|n| n.contains("(lines 4)")));
    assert_eq!(
        out.last,
        Some(
            DateTime::parse_from_rfc3339("2025-11-02T12:00:00Z")
                .unwrap()
                .into()
        )
    );
    // Written newest first, the first 01:00 is the second pass.
    let mut lines: Vec<&str> = rows.lines().collect();
    lines[1..].reverse();
    let out = parse(&lines.join("\n"), &format(None, "America/Los_Angeles")).unwrap();
    assert_eq!((out.holes, out.readings.len()), (0, 6));
    // With offsets, as written.
    let text = "start,value\n\
        2025-11-02T01:00:00-07:00,2\n\
        2025-11-02T01:00:00-08:00,3\n\
        2025-11-02T02:00:00-08:00,4\n";
    let out = parse(text, &format(None, "America/Los_Angeles")).unwrap();
    assert_eq!((out.holes, out.readings.len()), (0, 4));
    // A third 01:00 cannot be placed: its line is named.
    let third = rows.replace(
        "02:00,02:59,4",
        "01:00,01:59,9\nElectric usage,2025-11-02,02:00,02:59,4",
    );
    let out = parse(&third, &format(None, "America/Los_Angeles")).unwrap();
    assert_eq!(out.rejects.len(), 1);
    assert!(
        out.rejects[0]
            .2
            .detail
            .starts_with("line 5: 2025-11-02 01:00 occurs twice"),
        "{:?}",
        out.rejects
    );
}

#[test]
fn utf16_exports_read_as_their_utf8_twins() {
    // Excel's "Unicode text": UTF-16LE with a BOM, tab-separated.
    let text = "start\tvalue\n2026-03-01 00:00\t1\n2026-03-01 01:00\t2\n";
    let bytes: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let (decoded, encoding) = decode_text(&bytes).unwrap();
    assert_eq!(encoding, Some("UTF-16LE"));
    let out = parse(&decoded, &format(None, "UTC")).unwrap();
    assert_eq!((out.readings.len(), out.rejects.len()), (3, 0));
}
