//! A private PostgreSQL cluster for tests that stop and start the database
//! (outages, crash recovery) or need password authentication, without
//! disturbing the shared one.

use crate::helpers::free_port;
use std::path::PathBuf;
use std::process::Command;

/// A cluster in a temporary directory, on its own port (its socket
/// directory is the data directory).
pub struct PrivatePg {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    /// The superuser's password, when TCP logins need one.
    password: Option<String>,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("an initdb")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a server binary as the postgres user when we are root (initdb and
/// postgres refuse to run as root).
fn as_postgres(program: &std::path::Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PrivatePg {
    /// Initializes and starts a cluster (trust auth, fsync off).
    pub fn start() -> Self {
        Self::init(None)
    }

    /// Initializes and starts a cluster whose TCP logins need a password
    /// (scram-sha-256; the socket stays trust), the superuser's being
    /// `password` (`[A-Za-z0-9]`, so that it goes in URLs as is).
    pub fn start_with_password(password: &str) -> Self {
        assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
        Self::init(Some(password.to_owned()))
    }

    fn init(password: Option<String>) -> Self {
        let id = ulid::Ulid::generate();
        let dir = std::env::temp_dir().join(format!("crm-pg-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let bin = bin_dir();
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb.args(["-U", "postgres", "--no-sync"]);
        // initdb reads the password from a file (outside the data directory,
        // which must be empty), readable by the postgres user.
        let pwfile = std::env::temp_dir().join(format!("crm-pg-{id}.pw"));
        match &password {
            None => {
                initdb.args(["-A", "trust"]);
            }
            Some(p) => {
                std::fs::write(&pwfile, p).unwrap();
                let _ = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&pwfile)
                    .status();
                initdb
                    .args(["--auth-host=scram-sha-256", "--auth-local=trust"])
                    .arg(format!("--pwfile={}", pwfile.display()));
            }
        }
        let ok = initdb.arg("-D").arg(&dir).output().expect("initdb");
        let _ = std::fs::remove_file(&pwfile);
        assert!(
            ok.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let pg = Self {
            dir,
            port: free_port(),
            bin,
            password,
        };
        pg.up();
        pg
    }

    /// The owner URL of database `db` (with the superuser's password, if
    /// any).
    pub fn url(&self, db: &str) -> String {
        match &self.password {
            Some(p) => self.url_as("postgres", p, db),
            None => format!("postgres://postgres@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// The URL of database `db` for `user` with `password` (over TCP).
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the stopped cluster and waits until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-w", "-t", "30", "-o", &opts, "-l"])
            .arg(self.dir.join("log"))
            .arg("-D")
            .arg(&self.dir)
            .arg("start")
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops it the hard way (as a crash would).
    pub fn down_immediately(&self) {
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.dir)
            .arg("stop")
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.dir)
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
