//! Where the CPU goes while a phase runs: every process's user + system
//! time from `/proc/<pid>/stat`, read before and after, grouped as the
//! broker(s), the ingestor, the publishers (this process) and PostgreSQL.
//! Both transports fill the machine's cores, so messages/s alone cannot
//! say which part costs what; CPU a message can.

use std::collections::HashMap;
use std::time::Instant;

/// Clock ticks a second of `/proc/<pid>/stat` times (`USER_HZ`, fixed at
/// 100 by the kernel's ABI on x86_64 and aarch64).
const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Broker,
    Ingestor,
    Publishers,
    Postgres,
    Other,
}

impl Group {
    fn label(self) -> &'static str {
        match self {
            Group::Broker => "broker(s)",
            Group::Ingestor => "ingestor",
            Group::Publishers => "publishers",
            Group::Postgres => "PostgreSQL",
            Group::Other => "other",
        }
    }
}

/// One reading of every process's CPU time.
pub struct Snapshot {
    at: Instant,
    /// pid → (group, ticks so far).
    ticks: HashMap<u32, (Group, u64)>,
}

/// `comm` and utime + stime of `/proc/<pid>/stat`'s text. `comm` sits in
/// parentheses and may itself hold spaces or parentheses: the fields
/// after it are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<(&str, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After `)`: state is field 3, so utime (14) and stime (15) are at
    // 11 and 12.
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn group(pid: u32, comm: &str, ingestor: Option<u32>) -> Group {
    if Some(pid) == ingestor {
        Group::Ingestor
    } else if pid == std::process::id() {
        Group::Publishers
    } else {
        match comm {
            "mosquitto" | "nats-server" => Group::Broker,
            "postgres" => Group::Postgres,
            _ => Group::Other,
        }
    }
}

impl Snapshot {
    /// Reads `/proc` now; `ingestor` is the ingest process's pid.
    pub fn take(ingestor: Option<u32>) -> Snapshot {
        let mut ticks = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                    continue; // it exited meanwhile
                };
                if let Some((comm, t)) = parse_stat(&text) {
                    ticks.insert(pid, (group(pid, comm, ingestor), t));
                }
            }
        }
        Snapshot {
            at: Instant::now(),
            ticks,
        }
    }

    /// CPU used since `before`, per group, in cores (1.0 = one core
    /// busy the whole time), and the seconds between the two readings.
    /// A process that started in between counts whole; one that exited
    /// in between is not counted (the phases measured keep theirs).
    pub fn since(&self, before: &Snapshot) -> (Vec<(Group, f64)>, f64) {
        let seconds = (self.at - before.at).as_secs_f64().max(1e-9);
        let mut per: HashMap<Group, u64> = HashMap::new();
        for (pid, (g, t)) in &self.ticks {
            let was = before.ticks.get(pid).map(|(_, t)| *t).unwrap_or(0);
            *per.entry(*g).or_default() += t.saturating_sub(was);
        }
        let mut out: Vec<(Group, f64)> = per
            .into_iter()
            .map(|(g, t)| (g, t as f64 / TICKS_PER_S / seconds))
            .collect();
        out.sort_by_key(|(g, _)| *g);
        (out, seconds)
    }
}

/// One line: each group's share of a core and the CPU a message costs,
/// for `messages` handled between the two snapshots.
pub fn summary(before: &Snapshot, after: &Snapshot, messages: u64) -> String {
    let (groups, seconds) = after.since(before);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let rate = messages as f64 / seconds;
    let us = |cores_used: f64| {
        if messages == 0 {
            "no messages".to_owned()
        } else {
            format!("{:.1} µs a message", cores_used / rate * 1e6)
        }
    };
    let total: f64 = groups.iter().map(|(_, c)| c).sum();
    let parts: Vec<String> = groups
        .iter()
        .map(|(g, c)| {
            if *g == Group::Broker {
                format!("{} {:.0} % ({})", g.label(), c * 100.0, us(*c))
            } else {
                format!("{} {:.0} %", g.label(), c * 100.0)
            }
        })
        .collect();
    format!(
        "CPU over {:.1} s (/proc; 100 % = one core, {cores} cores): {}; all {:.0} % = {}",
        seconds,
        parts.join(", "),
        total * 100.0,
        us(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A comm with a space and a parenthesis, as a thread name can be.
        let text =
            "4242 (nats (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 731 269 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_stat(text), Some(("nats (x) y", 1000)));
        assert_eq!(parse_stat("1 (init) S 0"), None);
    }

    #[test]
    fn this_process_counts_as_the_publishers() {
        let mut spin = 0u64;
        let before = Snapshot::take(None);
        let t = Instant::now();
        while t.elapsed().as_millis() < 300 {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        let after = Snapshot::take(None);
        let (groups, seconds) = after.since(&before);
        assert!(spin > 0 && seconds >= 0.3);
        let publishers = groups
            .iter()
            .find(|(g, _)| *g == Group::Publishers)
            .map(|(_, c)| *c)
            .unwrap_or(0.0);
        // A busy loop on one thread: a share of a core even on a loaded
        // machine (ticks are 10 ms).
        assert!(publishers > 0.1, "{groups:?}");
    }
}
