//! A private PostgreSQL cluster, started from the installed binaries when no
//! server answers: `crm serve --dev` on a machine with PostgreSQL installed
//! but not running, and the tests on such a machine.
//!
//! The cluster listens on 127.0.0.1 only, on a free port, with its socket in
//! its own directory, trusting local connections as `postgres` (a
//! development cluster; nothing else can reach it). A watchdog process stops
//! it when the process that started it exits, however it exits (a clean
//! stop, Ctrl-C, a crash, SIGKILL), and removes a throwaway data directory.
//!
//! A directory has one owner at a time, named by the pid in its `owner`
//! file: a second `crm serve --dev` on the same directory is refused while
//! the first runs (instead of stopping its cluster), and a watchdog stops the
//! cluster only while its crm is still the owner (so a crm restarted right
//! after a crash is not stopped by the old one's watchdog: the new crm names
//! itself owner before it touches the cluster).

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// Where nothing else is configured, the server the service and the tests
/// look for first.
pub const LOCAL_SERVER: &str = "127.0.0.1:5432";

/// A running private cluster.
#[derive(Debug)]
pub struct Cluster {
    /// `postgres://postgres@127.0.0.1:<port>` (no database name).
    pub base_url: String,
    /// Its data directory (`server.log` inside holds the server's log).
    pub dir: PathBuf,
}

/// Whether a server accepts TCP connections at `addr` (within a second).
pub fn answers(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// What to tell someone who has neither a server nor the binaries.
fn install_hint(tried: &str) -> String {
    format!(
        "no PostgreSQL server answers at {tried}, and no PostgreSQL binaries (initdb, pg_ctl) were \
         found to start a private one. Either start a server there, set DATABASE_URL to one, or \
         install PostgreSQL 15 or newer with its contrib extensions:\n  \
         Debian/Ubuntu: sudo apt-get install postgresql postgresql-contrib\n  \
         macOS:         brew install postgresql@17\n\
         (CRM_PG_BIN names the directory holding initdb and pg_ctl if they are elsewhere)"
    )
}

/// The directory holding `initdb` and `pg_ctl`: `CRM_PG_BIN`, then `PATH`,
/// then `pg_config --bindir`, then where Debian, Homebrew and Postgres.app
/// put them (the newest version first).
pub fn find_binaries(tried: &str) -> anyhow::Result<PathBuf> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("CRM_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has(&dir) {
            return Ok(dir);
        }
        bail!("CRM_PG_BIN={}: no initdb and pg_ctl there", dir.display());
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    for pattern_dir in [
        "/usr/lib/postgresql",
        "/opt/homebrew/opt",
        "/usr/local/opt",
        "/Applications/Postgres.app/Contents/Versions",
    ] {
        let Ok(entries) = std::fs::read_dir(pattern_dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("postgresql") || n.parse::<f32>().is_ok())
                    || pattern_dir.starts_with("/Applications")
            })
            .map(|p| p.join("bin"))
            .collect();
        // Newest first: "17" sorts after "9" only numerically.
        found.sort_by_key(|p| {
            let n = p
                .parent()
                .and_then(|v| v.file_name())
                .and_then(|n| n.to_str());
            let digits: String = n
                .unwrap_or_default()
                .chars()
                .filter(|c| c.is_ascii_digit())
                .collect();
            std::cmp::Reverse(digits.parse::<u32>().unwrap_or(0))
        });
        candidates.extend(found);
    }
    candidates
        .into_iter()
        .find(|d| has(d))
        .ok_or_else(|| anyhow::anyhow!(install_hint(tried)))
}

/// The directory `crm serve --dev` keeps its private cluster in: the user's
/// cache directory (`$XDG_CACHE_HOME`, `~/.cache`, `~/Library/Caches` on
/// macOS), or the temporary directory when running as root (the server
/// then runs as the `postgres` user, who must be able to reach it).
pub fn dev_dir() -> PathBuf {
    if is_root() {
        return std::env::temp_dir().join("crm-dev-postgres");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| {
                let home = PathBuf::from(h);
                if cfg!(target_os = "macos") {
                    home.join("Library/Caches")
                } else {
                    home.join(".cache")
                }
            })
        })
        .unwrap_or_else(std::env::temp_dir);
    cache.join("crm").join("postgres")
}

/// Whether this process runs as root (initdb refuses to).
fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    })
}

/// A command running one of the binaries: as the `postgres` user when this
/// process is root.
fn pg_command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

/// Runs `c`, failing with its output when it fails.
fn run(mut c: Command, what: &str) -> anyhow::Result<()> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: starting {:?}", c.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts a private cluster in `dir` (created with `initdb` when it holds
/// none; kept when `keep`, else removed once stopped), stopped when this
/// process exits. `tried` names the server that did not answer, for the
/// error when no binaries are installed.
pub fn start(dir: &Path, keep: bool, tried: &str) -> anyhow::Result<Cluster> {
    let bin = find_binaries(tried)?;
    let root = is_root();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the private cluster's directory {}", dir.display()))?;
    claim(dir, std::process::id())?;
    if root {
        let mut c = Command::new("chown");
        c.args(["-R", "postgres:"]).arg(dir);
        run(
            c,
            "giving the private cluster's directory to the postgres user",
        )?;
    }
    let data = dir.join("data");
    if !data.join("PG_VERSION").is_file() {
        let mut c = pg_command(&bin, "initdb");
        c.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"]);
        c.args(["--no-sync", "--no-instructions"]);
        run(c, "initdb (creating the private cluster)")?;
    }
    // A cluster left running by a crm that is gone (its watchdog killed too)
    // is stopped first: this process owns the directory now.
    if data.join("postmaster.pid").is_file() {
        let mut c = pg_command(&bin, "pg_ctl");
        c.arg("-D").arg(&data).args(["-m", "fast", "-w", "stop"]);
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
    let port = free_port()?;
    let log = dir.join("server.log");
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync={}",
        dir.display(),
        if keep { "on" } else { "off" }
    );
    let mut c = pg_command(&bin, "pg_ctl");
    c.arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "60", "-o", &options, "start"])
        // Its own process group: Ctrl-C in a terminal reaches crm, which
        // exits; the watchdog then stops the cluster cleanly.
        .process_group(0);
    run(
        c,
        &format!("starting the private cluster (log: {})", log.display()),
    )?;
    watch(&bin, &data, dir, keep)?;
    Ok(Cluster {
        base_url: format!("postgres://postgres@127.0.0.1:{port}"),
        dir: dir.to_owned(),
    })
}

/// Makes `pid` the owner of `dir`, unless a live process other than `pid`
/// owns it (another `crm serve --dev`, whose cluster must not be stopped).
fn claim(dir: &Path, pid: u32) -> anyhow::Result<()> {
    let file = dir.join("owner");
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(owner) = text.trim().parse::<u32>()
        && owner != pid
        && alive(owner)
    {
        bail!(
            "the private PostgreSQL cluster in {} is in use by another crm (pid {owner}); \
             stop that one, or give this one a server (DATABASE_URL)",
            dir.display()
        );
    }
    std::fs::write(&file, pid.to_string()).with_context(|| format!("writing {}", file.display()))
}

/// Whether process `pid` runs: it exists and is not a zombie (a crm killed
/// a moment ago, not yet reaped, owns nothing).
fn alive(pid: u32) -> bool {
    Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            let stat = String::from_utf8_lossy(&o.stdout);
            let stat = stat.trim();
            o.status.success() && !stat.is_empty() && !stat.starts_with('Z')
        })
}

/// Starts the watchdog: a shell that waits for this process to exit, then
/// stops the cluster (and removes `dir` unless `keep`).
fn watch(bin: &Path, data: &Path, dir: &Path, keep: bool) -> anyhow::Result<()> {
    let stop = pg_command(bin, "pg_ctl");
    let mut argv: Vec<String> = std::iter::once(stop.get_program())
        .chain(stop.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.extend(["-D".into(), data.display().to_string()]);
    argv.extend(["-m", "fast", "-w", "stop"].map(str::to_owned));
    // Once the parent is gone, only while it is still the owner: a crm
    // started since has claimed the directory and its cluster.
    let script = r#"parent=$1; dir=$2; keep=$3; shift 3
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
[ "$(cat "$dir/owner" 2>/dev/null)" = "$parent" ] || exit 0
"$@" >/dev/null 2>&1
[ "$keep" = keep ] || rm -rf "$dir""#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("crm-postgres-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(if keep { "keep" } else { "remove" })
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the private cluster's watchdog")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_says_what_to_install() {
        let hint = install_hint("127.0.0.1:5432");
        assert!(hint.contains("127.0.0.1:5432"));
        assert!(hint.contains("apt-get install postgresql postgresql-contrib"));
        assert!(hint.contains("brew install"));
    }

    #[test]
    fn a_directory_has_one_live_owner() {
        let dir = std::env::temp_dir().join(format!("crm-owner-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        claim(&dir, other.id()).unwrap();
        // Another live owner: refused, and the file still names it.
        let err = claim(&dir, std::process::id()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", other.id())), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("owner")).unwrap(),
            other.id().to_string()
        );
        // The same owner again, or once it is killed (a zombie until
        // reaped, then gone): taken.
        claim(&dir, other.id()).unwrap();
        other.kill().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while claim(&dir, std::process::id()).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "a zombie owns nothing"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        other.wait().unwrap();
        claim(&dir, std::process::id()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("owner")).unwrap(),
            std::process::id().to_string()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nothing_answers_on_a_closed_port() {
        let port = free_port().unwrap();
        assert!(!answers(&format!("127.0.0.1:{port}")));
        assert!(!answers("not an address"));
    }
}
