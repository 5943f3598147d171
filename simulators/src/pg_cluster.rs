//! Private PostgreSQL servers on loopback, made from the machine's own
//! server binaries (`/usr/lib/postgresql/<major>/bin`): a primary from
//! `initdb`, and streaming standbys of it from `pg_basebackup -R`. For the
//! tests that crash or promote a server, and for `estatemon bench
//! portfolio`, which compares panels read from a primary and a standby.
//!
//! Run as root, every server command runs as the `postgres` user
//! (`runuser`), which owns the data directory.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One server: its port, data directory and log.
pub struct PostgresNode {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    settings: Vec<(String, String)>,
    /// Remove the directory when dropped.
    pub remove_on_drop: bool,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest installed server's binaries.
pub fn server_bin() -> io::Result<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .max()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql",
            )
        })
}

/// Whether the TimescaleDB extension is installed for the server in `bin`.
pub fn has_timescaledb(bin: &Path) -> bool {
    let sharedir = Command::new(bin.join("pg_config"))
        .arg("--sharedir")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            // Debian's pg_config lives in /usr/bin and answers for the
            // newest major; the share directory follows the major.
            let major = bin.parent()?.file_name()?.to_str()?.to_owned();
            Some(format!("/usr/share/postgresql/{major}"))
        });
    sharedir.is_some_and(|d| Path::new(&d).join("extension/timescaledb.control").exists())
}

fn failed(what: &str, log: &Path) -> io::Error {
    let tail = std::fs::read_to_string(log)
        .map(|s| {
            s.lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default();
    io::Error::other(format!("{what} failed (log {}): {tail}", log.display()))
}

impl PostgresNode {
    /// A new primary in `dir` (created; must not hold a cluster yet),
    /// listening on 127.0.0.1:`port`, with `settings` as `-c name=value`.
    pub fn primary(dir: &Path, port: u16, settings: &[(&str, &str)]) -> io::Result<PostgresNode> {
        let node = PostgresNode::prepare(dir, port, settings)?;
        let out = node
            .as_postgres(&node.bin.join("initdb"))
            .arg("-D")
            .arg(node.data())
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        node.ctl("start")?;
        Ok(node)
    }

    /// A streaming standby of `self` in `dir` (hot standby, read-only until
    /// promoted), with the primary's settings.
    pub fn standby(&self, dir: &Path, port: u16) -> io::Result<PostgresNode> {
        let settings: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let node = PostgresNode::prepare(dir, port, &settings)?;
        let out = node
            .as_postgres(&node.bin.join("pg_basebackup"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-D"])
            .arg(node.data())
            // A fast checkpoint: the default spreads it over
            // checkpoint_timeout × checkpoint_completion_target.
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"])
            // A slot of its own: the primary keeps the WAL this standby
            // has not replayed yet, however far behind a bulk load puts it.
            .args(["-C", "-S", &format!("standby_{port}")])
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        node.ctl("start")?;
        Ok(node)
    }

    fn prepare(dir: &Path, port: u16, settings: &[(&str, &str)]) -> io::Result<PostgresNode> {
        std::fs::create_dir_all(dir)?;
        let bin = server_bin()?;
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "chown postgres {} failed",
                    dir.display()
                )));
            }
        }
        Ok(PostgresNode {
            port,
            dir: dir.to_owned(),
            bin,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            remove_on_drop: true,
        })
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn as_postgres(&self, program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// `pg_ctl <action>` (start, stop, restart, promote), waiting for it.
    pub fn ctl(&self, action: &str) -> io::Result<()> {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        for (k, v) in &self.settings {
            options.push_str(&format!(" -c {k}={v}"));
        }
        let status = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "120", "-l"])
            .arg(self.log())
            .arg("-o")
            .arg(options)
            .arg(action)
            .stdout(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(&format!("pg_ctl {action}"), &self.log()))
        }
    }

    /// Stops at once, as a crashed server would (no shutdown checkpoint).
    pub fn crash(&self) -> io::Result<()> {
        let status = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(failed("pg_ctl stop -m immediate", &self.log()))
        }
    }

    /// A URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }
}

impl Drop for PostgresNode {
    fn drop(&mut self) {
        let _ = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if self.remove_on_drop {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
