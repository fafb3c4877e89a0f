//! The processes the chaos harness runs and kills, the gateway's small
//! disk, and the counters it reads from the services' metrics.

use std::ffi::OsString;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How a started service shows that it is ready.
#[derive(Clone, Debug)]
pub enum Readiness {
    /// It prints a stdout line starting with this.
    Line(&'static str),
    /// It accepts TCP connections here.
    Port(SocketAddr),
}

/// A service run as a child process, to be SIGKILLed and started again.
/// Its stderr (and stdout after the ready line) go to `log`, appended
/// across restarts with a marker line per start.
pub struct Service {
    pub name: &'static str,
    exe: PathBuf,
    args: Vec<OsString>,
    readiness: Readiness,
    pub log: PathBuf,
    child: Option<Child>,
    /// The ready line of the latest start.
    pub ready_line: String,
    pub starts: u32,
    pub kills: u32,
    /// Bumped on each successful start: which life of the process a
    /// metric read belongs to.
    life: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Service {
    pub fn new(
        name: &'static str,
        exe: PathBuf,
        args: Vec<OsString>,
        readiness: Readiness,
        log: PathBuf,
    ) -> Service {
        Service {
            name,
            exe,
            args,
            readiness,
            log,
            child: None,
            ready_line: String::new(),
            starts: 0,
            kills: 0,
            life: Default::default(),
        }
    }

    /// The number of the running process's life, shared.
    pub fn life(&self) -> std::sync::Arc<std::sync::atomic::AtomicU32> {
        self.life.clone()
    }

    /// Starts it and waits until it is ready; returns how long that took.
    pub async fn start(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let began = Instant::now();
        self.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(log, "----- trygg-sim chaos: start #{} -----", self.starts)?;
        let mut child = Command::new(&self.exe)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone()?))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.name, self.exe.display()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let deadline = tokio::time::Instant::now() + timeout;
        let ready = match &self.readiness {
            Readiness::Line(prefix) => {
                let prefix = *prefix;
                tokio::time::timeout_at(deadline, async {
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.starts_with(prefix) {
                            return Some(line);
                        }
                        let _ = writeln!(log, "{line}");
                    }
                    None
                })
                .await
            }
            Readiness::Port(addr) => {
                let addr = *addr;
                tokio::time::timeout_at(deadline, async {
                    loop {
                        if tokio::net::TcpStream::connect(addr).await.is_ok() {
                            return Some(format!("{} listening on {addr}", self.name));
                        }
                        if let Ok(Some(_)) = child.try_wait() {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await
            }
        };
        match ready {
            Ok(Some(line)) => {
                self.ready_line = line;
                self.life.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Keep stdout drained (into the log) so the child never
                // blocks on a full pipe.
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        let _ = writeln!(log, "{line}");
                    }
                });
                self.child = Some(child);
                Ok(began.elapsed())
            }
            Ok(None) => {
                let status = child.wait().await.ok();
                bail!(
                    "{} exited before it was ready ({}); the end of {}:\n{}",
                    self.name,
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    self.log.display(),
                    tail(&self.log, 15)
                )
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!(
                    "{} not ready within {timeout:?}; the end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 15)
                )
            }
        }
    }

    /// SIGKILL: no shutdown, no flush; like a power cut for the process.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
            self.kills += 1;
        }
    }

    /// `Some(status)` if it ended by itself since it was started.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGTERM, and wait up to `timeout` for it to stop (then SIGKILL).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(timeout, c.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = c.start_kill();
                let _ = c.wait().await;
                None
            }
        }
    }

    /// The value of `key=` in the ready line.
    pub fn field(&self, key: &str) -> Option<String> {
        self.ready_line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free loopback port, chosen below the kernel's ephemeral range
/// (32768 and up on Linux), so that an outgoing connection of another
/// process cannot take it while its service is down between a kill and the
/// restart. Random, so parallel runs do not collide.
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = rand::random_range(20_000..32_000u16);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// Finds the Mosquitto executable.
pub fn find_mosquitto(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/local/bin/mosquitto",
        "/opt/homebrew/sbin/mosquitto",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .context("mosquitto is not installed; install it with `apt-get install mosquitto` (Debian, Ubuntu) or `brew install mosquitto`, or pass --mosquitto PATH")
}

/// Mosquitto's config for the device broker: in memory only, like the
/// tests' (a restart loses its sessions and queues: devices re-send what
/// was not receipted, which is the point).
pub fn mosquitto_conf(port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 100000\n"
    )
}

/// A small tmpfs mounted for the gateway's data, so that the harness can
/// fill it; unmounted when dropped.
pub struct SmallDisk {
    pub dir: PathBuf,
    pub size_mib: u64,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size_mib` at `dir` (root only). The error says
    /// why not, in the words of `mount`.
    pub fn mount(dir: &Path, size_mib: u64) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run `mount`: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`mount -t tmpfs` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk {
            dir: dir.to_path_buf(),
            size_mib,
        })
    }

    fn ballast(&self) -> PathBuf {
        self.dir.join("chaos-ballast.bin")
    }

    /// Writes a ballast file until the disk is full; returns its size.
    pub fn fill(&self) -> std::io::Result<u64> {
        let mut f = std::fs::File::create(self.ballast())?;
        let mut written = 0u64;
        for chunk in [1 << 20, 64 << 10, 4 << 10] {
            let buf = vec![0u8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(written)
    }

    /// Removes the ballast.
    pub fn free(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.ballast()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.free();
        let ok = std::process::Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process that will not die): detach it.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// A counter read from a process that restarts from zero: the sum over
/// its lives of the last value seen in each. A lower bound, since what a
/// process counted after its last scrape dies with it.
#[derive(Clone, Copy, Debug, Default)]
pub struct LifetimeCounter {
    before: f64,
    life: u32,
    last: f64,
}

impl LifetimeCounter {
    /// A value read from the process's `life`-th start ([`Service::life`]).
    pub fn observe(&mut self, life: u32, value: f64) {
        if life != self.life {
            self.before += self.last;
            self.life = life;
            self.last = 0.0;
        }
        self.last = self.last.max(value);
    }

    pub fn total(&self) -> u64 {
        (self.before + self.last) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifetime_counter_adds_up_the_lives_of_a_restarted_process() {
        let mut c = LifetimeCounter::default();
        // A new life may start higher than the last one ended.
        for (life, v) in [(1, 1.0), (1, 5.0), (1, 7.0), (2, 9.0), (2, 10.0), (3, 4.0)] {
            c.observe(life, v);
        }
        assert_eq!(c.total(), 7 + 10 + 4);
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let p = free_port().unwrap();
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok());
    }
}
