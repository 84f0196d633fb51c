//! Connections to PostgreSQL, and the bridge from the journal's blocking
//! calls to the async client.
//!
//! The journal's traits are blocking (sled's calls are), and their callers
//! run on the host's tokio runtime, where blocking on another runtime
//! panics. So the connections live on a small runtime of their own: a call
//! is spawned there and its caller waits on a plain channel, as it would
//! wait on a disk. A connection the server dropped (a restart, a network
//! cut) is made again on its next use.

use super::super::records::TreeId;
use super::tls::MakeRustlsConnect;
use anyhow::{Context, Result, anyhow};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_postgres::{Client, Config, Statement};

/// How many connections a host keeps open: enough for the API's reads and
/// the state machine's writes to overlap, few enough for many hosts.
pub const CONNECTIONS: usize = 8;

/// Statements a session sets: a name to tell the host's connections by in
/// `pg_stat_activity`. A flush asks for a synchronous commit itself,
/// whatever the server's default.
const SESSION_SETUP: &str = "SET application_name TO 'stepwise'";

/// Where to connect: the server and the TLS it asks for.
#[derive(Clone)]
pub struct Target {
    /// The URL's settings, TLS's taken out (see [`super::tls`]).
    pub config: Config,
    /// Makes the TLS connections the URL asked for.
    pub tls: MakeRustlsConnect,
}

/// One connection, made again when it is lost, with its prepared
/// statements.
pub struct Connection {
    target: Target,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Connection {
    /// Connects (or fails with what was wrong, see [`connect_error`]).
    pub async fn open(target: &Target) -> Result<Self> {
        let mut connection = Connection {
            target: target.clone(),
            client: None,
            statements: HashMap::new(),
        };
        connection.client().await?;
        Ok(connection)
    }

    /// The client, connecting first if there is none or it was closed.
    pub async fn client(&mut self) -> Result<&Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            let (client, connection) = self
                .target
                .config
                .connect(self.target.tls.clone())
                .await
                .map_err(|e| connect_error(&self.target.config, e))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(error = %error, "the connection to PostgreSQL closed");
                }
            });
            client
                .batch_execute(SESSION_SETUP)
                .await
                .context("setting up a PostgreSQL session")?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// `sql`, prepared once per connection.
    pub async fn statement(&mut self, sql: &str) -> Result<(Statement, &Client)> {
        self.client().await?;
        if !self.statements.contains_key(sql) {
            let client = self.client.as_ref().expect("connected above");
            let statement = client
                .prepare(sql)
                .await
                .with_context(|| format!("preparing `{sql}`"))?;
            self.statements.insert(sql.to_string(), statement);
        }
        Ok((
            self.statements[sql].clone(),
            self.client.as_ref().expect("connected above"),
        ))
    }
}

/// A fixed set of connections on a runtime of their own.
pub struct Pool {
    runtime: Option<tokio::runtime::Runtime>,
    connections: Arc<Vec<tokio::sync::Mutex<Connection>>>,
    next: AtomicUsize,
}

impl Pool {
    /// Opens [`CONNECTIONS`] connections with `config`, after `prepare`
    /// (the schema's migrations) has run on the first.
    pub fn open<F, Fut>(target: Target, prepare: F) -> Result<Self>
    where
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Connection>> + Send,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stepwise-postgres")
            .enable_all()
            .build()
            .context("starting the PostgreSQL client's threads")?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<_>>>(1);
        runtime.spawn(async move {
            let opened = async {
                let first = prepare(Connection::open(&target).await?).await?;
                let mut connections = vec![tokio::sync::Mutex::new(first)];
                for _ in 1..CONNECTIONS {
                    connections.push(tokio::sync::Mutex::new(Connection::open(&target).await?));
                }
                Ok(connections)
            };
            let _ = tx.send(opened.await);
        });
        let opened = rx
            .recv()
            .unwrap_or_else(|_| Err(anyhow!("the PostgreSQL client's threads stopped")));
        let connections = match opened {
            Ok(connections) => connections,
            Err(error) => {
                // Not dropped: the caller may be on a runtime, where
                // waiting for threads to stop is not allowed.
                runtime.shutdown_background();
                return Err(error);
            }
        };
        Ok(Pool {
            runtime: Some(runtime),
            connections: Arc::new(connections),
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `work` with a connection (the next free one, else the next in
    /// turn) and waits for it, blocking the calling thread.
    pub fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Connection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let connections = self.connections.clone();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime().spawn(async move {
            let count = connections.len();
            let free = (0..count)
                .map(|i| (start + i) % count)
                .find_map(|i| connections[i].try_lock().ok());
            let mut connection = match free {
                Some(connection) => connection,
                None => connections[start % count].lock().await,
            };
            let _ = tx.send(work(&mut connection).await);
        });
        rx.recv()
            .map_err(|_| anyhow!("the PostgreSQL client's threads stopped"))?
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the pool")
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Dropped on the host's runtime, where waiting for threads to stop
        // is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A boxed future borrowing a connection.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a failed connection means, and what to do about it. The URL is
/// shown without its password.
fn connect_error(config: &Config, error: tokio_postgres::Error) -> anyhow::Error {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    // The client's own message names only the stage (e.g. the TLS
    // handshake); the causes say what was wrong.
    let mut error_text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        error_text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    anyhow::Error::new(Unreachable(format!(
        "could not connect to PostgreSQL at {} (port {}, user {}, database {}): {error_text}; \
         check that the server is running there and that --store (or STEPWISE_STORE) \
         names the right host, port, user, password and database (and, for TLS, the \
         right sslmode and sslrootcert)",
        if hosts.is_empty() {
            "localhost".to_string()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            "5432".to_string()
        } else {
            ports.join(",")
        },
        config.get_user().unwrap_or("(default)"),
        config.get_dbname().unwrap_or("(the user's)"),
    )))
}

/// The database could not be reached (it restarts, the network is cut):
/// the same call may succeed in a moment.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(String);

/// Whether `error` comes of the database being out of reach for now (no
/// connection, or the one in use closed), not of what was asked of it.
pub fn is_unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<Unreachable>()
            || cause
                .downcast_ref::<tokio_postgres::Error>()
                .is_some_and(tokio_postgres::Error::is_closed)
    })
}

/// The SQL of the statements on table `tree`, by kind.
pub struct TreeSql {
    /// Reads one key.
    pub get: String,
    /// Whether one key is there.
    pub has: String,
    /// Creates or replaces the keys `$1` with the values `$2` (arrays,
    /// keys unique).
    pub put_many: String,
    /// Removes the keys `$1` (an array).
    pub delete_many: String,
    /// Every row, in key order.
    pub all: String,
    /// Rows from `$1`, in key order.
    pub from: String,
    /// Rows in `[$1, $2)`, in key order.
    pub range: String,
    /// Up to `$3` rows in `[$1, $2)`, last key first.
    pub range_rev: String,
    /// Up to `$2` rows from `$1`, last key first.
    pub from_rev: String,
    /// Up to `$2` rows after `$1`, in key order.
    pub after: String,
}

impl TreeSql {
    /// The statements of `tree`'s table.
    pub fn of(tree: TreeId) -> Self {
        let t = format!("stepwise.{}", tree.name());
        TreeSql {
            get: format!("SELECT value FROM {t} WHERE key = $1"),
            has: format!("SELECT 1 FROM {t} WHERE key = $1"),
            put_many: format!(
                "INSERT INTO {t} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            delete_many: format!("DELETE FROM {t} WHERE key = ANY($1::bytea[])"),
            all: format!("SELECT key, value FROM {t} ORDER BY key"),
            from: format!("SELECT key, value FROM {t} WHERE key >= $1 ORDER BY key"),
            range: format!("SELECT key, value FROM {t} WHERE key >= $1 AND key < $2 ORDER BY key"),
            range_rev: format!(
                "SELECT key, value FROM {t} WHERE key >= $1 AND key < $2 ORDER BY key DESC LIMIT $3"
            ),
            from_rev: format!(
                "SELECT key, value FROM {t} WHERE key >= $1 ORDER BY key DESC LIMIT $2"
            ),
            after: format!("SELECT key, value FROM {t} WHERE key > $1 ORDER BY key LIMIT $2"),
        }
    }
}
