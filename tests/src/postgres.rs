//! A throwaway PostgreSQL cluster per test binary, from Debian's
//! `postgresql` package: `initdb` on a temp dir, the server listening on a
//! unix socket there and on loopback TCP (TLS only, with certificates
//! `openssl` makes: a test CA, a server certificate for `localhost`, and
//! another CA nothing is signed by), and a fresh database for each host a
//! test starts. No Docker, no downloads.
//!
//! `initdb` and the server refuse to run as root, and CI runs as root: then
//! `initdb` runs as the `postgres` user the package creates (`runuser`),
//! and the server switches to it before it starts. The server is told to
//! die with the test binary (a parent-death signal), and the directory is
//! removed when the binary exits.

use anyhow::{Context, Result, anyhow, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The superuser `initdb` creates, which the hosts connect as.
const USER: &str = "stepwise";

/// The test binary's cluster.
pub struct Cluster {
    /// The cluster's directory: `data/`, the socket, the server's log.
    dir: PathBuf,
    bin: PathBuf,
    server: std::sync::Mutex<Child>,
    /// Who runs the server (root's tests hand it to `postgres`).
    owner: Option<(u32, u32)>,
    /// Whether this cluster is a test's own (removed when dropped), not
    /// the binary's.
    private: bool,
    databases: AtomicUsize,
    /// The port, of the socket's name and of TCP on loopback.
    port: u16,
    /// Why there is no TLS on TCP, if there is none.
    no_tls: Option<String>,
}

/// The cluster of this test binary, started on first use.
pub fn cluster() -> Result<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| Cluster::start(false).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

impl Cluster {
    /// A cluster of the caller's own (for a test that restarts it),
    /// stopped and removed when dropped.
    pub fn private() -> Result<Cluster> {
        Self::start(true)
    }

    /// Stops the server at once, as `pg_ctl restart -m immediate` does
    /// (SIGQUIT: no checkpoint, crash recovery at the next start), and
    /// starts it again on the same data and port.
    pub fn restart_immediately(&self) -> Result<()> {
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        unsafe {
            libc::kill(server.id() as i32, libc::SIGQUIT);
        }
        server.wait().context("waiting for the server to stop")?;
        *server = spawn_server(
            &self.bin,
            &self.dir,
            &self.dir.join("data"),
            self.owner,
            self.port,
            self.no_tls.is_none(),
        )?;
        drop(server);
        self.wait_ready()
    }

    fn start(private: bool) -> Result<Cluster> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("stepwise-pg-")
            .tempdir()
            .context("making the cluster's directory")?
            .keep();
        if !private {
            remove_at_exit(&dir);
        }
        let owner = if unsafe { libc::geteuid() } == 0 {
            let ids = user_ids("postgres").context(
                "the tests run as root and PostgreSQL refuses to: they run it as the `postgres` \
                 user, which the postgresql package creates (apt-get install postgresql)",
            )?;
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1))
                .context("handing the cluster's directory to the postgres user")?;
            Some(ids)
        } else {
            None
        };
        let data = dir.join("data");
        let mut initdb = match owner {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join("initdb"));
                c
            }
            None => Command::new(bin.join("initdb")),
        };
        let out = initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = crate::free_port();
        let tls = make_certificates(&dir.join("tls"), owner);
        // Unix sockets need no password; TCP only with TLS.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n\
             hostnossl all all ::1/128 reject\n",
        )
        .context("writing pg_hba.conf")?;
        let server = spawn_server(&bin, &dir, &data, owner, port, tls.is_ok())?;
        let cluster = Cluster {
            dir,
            bin,
            server: std::sync::Mutex::new(server),
            owner,
            private,
            databases: AtomicUsize::new(0),
            port,
            no_tls: tls.err().map(|e| format!("{e:#}")),
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.dir)
                .args(["-p", &self.port.to_string(), "-U", USER, "-q"])
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL did not start within a minute; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The connection URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{USER}@/{name}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }

    /// The URL of database `name` over TCP to `host` (`localhost`, which
    /// the server's certificate names, or `127.0.0.1`, which it does not),
    /// with `params` (e.g. `sslmode=verify-full&sslrootcert=...`).
    pub fn tcp_url(&self, host: &str, name: &str, params: &str) -> String {
        format!("postgres://{USER}@{host}:{}/{name}?{params}", self.port)
    }

    /// The test CA's certificate, which signed the server's (PEM).
    pub fn ca_file(&self) -> Result<PathBuf> {
        self.tls_file("ca.crt")
    }

    /// A CA's certificate that signed nothing here (PEM).
    pub fn other_ca_file(&self) -> Result<PathBuf> {
        self.tls_file("other-ca.crt")
    }

    fn tls_file(&self, name: &str) -> Result<PathBuf> {
        match &self.no_tls {
            Some(why) => bail!("the test cluster has no TLS: {why}"),
            None => Ok(self.dir.join("tls").join(name)),
        }
    }

    /// Creates a new, empty database; returns its URL.
    pub fn new_database(&self) -> Result<String> {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("test_{}_{n}", std::process::id());
        self.sql(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` as the superuser (in database `postgres`).
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.sql_in("postgres", sql)
    }

    /// Runs `sql` as the superuser in database `database`; returns what
    /// `psql` printed (unaligned, tuples only).
    pub fn sql_in(&self, database: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", database])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql -c {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Every key and value of every table of the journal in the database
    /// of `url` (made by [`Cluster::new_database`]), printable ASCII as it
    /// is, one row a line.
    pub fn contents(&self, url: &str) -> Result<String> {
        let database = database_of(url)?;
        let mut contents = String::new();
        for table in self.tables(database)? {
            contents.push_str(&self.sql_in(
                database,
                &format!("SET bytea_output = escape; SELECT * FROM stepwise.{table}"),
            )?);
            contents.push('\n');
        }
        Ok(contents)
    }
}

impl Cluster {
    /// The tables of the journal in `database`.
    fn tables(&self, database: &str) -> Result<Vec<String>> {
        let tables = self.sql_in(
            database,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'stepwise'",
        )?;
        Ok(tables.lines().map(str::to_string).collect())
    }

    /// How many rows the journal in the database of `url` holds, across
    /// its tables.
    pub fn rows(&self, url: &str) -> Result<u64> {
        let database = database_of(url)?;
        let mut rows = 0;
        for table in self.tables(database)? {
            let count = self.sql_in(database, &format!("SELECT count(*) FROM stepwise.{table}"))?;
            rows += count
                .parse::<u64>()
                .with_context(|| format!("counting the rows of {table}: {count:?}"))?;
        }
        Ok(rows)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.private {
            let server = self.server.get_mut().unwrap_or_else(|p| p.into_inner());
            let _ = server.kill();
            let _ = server.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The database name in `url`, a URL [`Cluster::url`] made.
pub fn database_of(url: &str) -> Result<&str> {
    url.split_once("@/")
        .and_then(|(_, rest)| rest.split('?').next())
        .context("not a URL of this cluster")
}

/// The package's programs: `/usr/lib/postgresql/<version>/bin`, the
/// newest version installed (Debian keeps them off `PATH`), or
/// `STEPWISE_PG_BIN`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STEPWISE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             apt-get install -y postgresql, or set STEPWISE_PG_BIN to a directory with \
             initdb, postgres, pg_isready and psql"
        )
    })
}

/// Makes, in `dir`, a test CA (`ca.crt`), a server certificate for
/// `localhost` it signed (`server.crt`, `server.key`, readable by `owner`
/// only) and another CA (`other-ca.crt`), with `openssl`.
fn make_certificates(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let openssl = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running openssl (apt-get install -y openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, subject) in [
        ("ca", "/CN=stepwise-test-ca"),
        ("other-ca", "/CN=another-ca"),
    ] {
        let (crt, pem) = (format!("{name}.crt"), format!("{name}.key"));
        let mut args = vec!["req", "-x509", "-days", "3", "-subj", subject];
        args.extend(key);
        args.extend(["-keyout", &pem, "-out", &crt]);
        openssl(&args)?;
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )?;
    let mut request = vec!["req", "-subj", "/CN=localhost", "-keyout", "server.key"];
    request.extend(key);
    request.extend(["-out", "server.csr"]);
    openssl(&request)?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ])?;
    use std::os::unix::fs::PermissionsExt;
    let server_key = dir.join("server.key");
    std::fs::set_permissions(&server_key, std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        for file in std::fs::read_dir(dir)? {
            std::os::unix::fs::chown(file?.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// Starts the server on `data`, listening on a socket in `dir` and on
/// loopback TCP at `port` (with TLS when `tls`, from `dir/tls`), from a
/// thread that lives as long as the test binary: the server gets SIGKILL
/// when the thread that started it ends.
fn spawn_server(
    bin: &Path,
    dir: &Path,
    data: &Path,
    owner: Option<(u32, u32)>,
    port: u16,
    tls: bool,
) -> Result<Child> {
    let log = std::fs::File::create(dir.join("server.log")).context("creating the server log")?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir.join("server.log"), Some(uid), Some(gid))?;
    }
    let mut command = Command::new(bin.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .arg("-k")
        .arg(dir)
        .args(["-p", &port.to_string()])
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=400",
        ]);
    if tls {
        let tls = dir.join("tls");
        command.args(["-c", "ssl=on", "-c"]);
        command.arg(format!(
            "ssl_cert_file={}",
            tls.join("server.crt").display()
        ));
        command.arg("-c");
        command.arg(format!("ssl_key_file={}", tls.join("server.key").display()));
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    unsafe {
        command.pre_exec(move || {
            if let Some((uid, gid)) = owner
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            let _ = tx.send(command.spawn());
            loop {
                std::thread::park();
            }
        })
        .context("starting the server's parent thread")?;
    rx.recv()
        .context("the server's parent thread stopped")?
        .context("starting postgres")
}

/// The uid and gid of `user`.
fn user_ids(user: &str) -> Result<(u32, u32)> {
    let name = std::ffi::CString::new(user)?;
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        bail!("no user {user}");
    }
    Ok(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

/// Removes `dir` when the test binary exits.
fn remove_at_exit(dir: &Path) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    if DIR.set(dir.to_path_buf()).is_ok() {
        unsafe {
            libc::atexit(remove);
        }
    }
}
