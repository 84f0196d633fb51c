//! Leases: which host writes the journal when several share one database.
//!
//! One lease, [`RUNS_LEASE`], makes its holder the host that runs the run
//! state machine; the others stand by and forward requests to it. A lease
//! has an epoch that grows by one at every change of holder, and every
//! flush checks in its own transaction that its host still holds the lease
//! at the epoch it started with (`stepwise.hold_lease`, Temporal's
//! `range_id`). That check takes a share lock on the lease's row, so a host
//! taking the lease over waits for a flush in progress, and reads the
//! journal only after it: a host that lost its lease while paused (a GC
//! stop, `SIGSTOP`, a network cut) cannot write when it wakes.
//!
//! Times are the database's (`now()`), so hosts' clocks may disagree.
//!
//! A released lease is announced with `NOTIFY` ([`RELEASED_CHANNEL`]), so
//! that standbys claim it at once; that is a hint only (it does not pass
//! transaction-mode poolers, and a listener may be cut off): standbys poll
//! the lease all the same.

use super::pool::Connection;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;

/// The SQLSTATE `stepwise.hold_lease` raises when the lease moved on.
pub const FENCED_SQLSTATE: &str = "SWF01";

/// The lease of the run state machine.
pub const RUNS_LEASE: &str = "runs";

/// The channel a released lease's name is sent on.
pub const RELEASED_CHANNEL: &str = "stepwise_lease_released";

/// The lease a journal's flushes must hold, and whom to tell when they
/// find it lost.
#[derive(Debug, Clone)]
pub struct Fence {
    /// The lease's name.
    pub lease: String,
    /// This host's id.
    pub holder: String,
    /// The epoch this host won the lease at.
    pub epoch: i64,
    /// Notified when a flush was refused because the lease moved on.
    pub lost: Arc<tokio::sync::Notify>,
}

/// A flush refused because another host holds the lease now: nothing this
/// host writes from now on can be accepted.
#[derive(Debug, thiserror::Error)]
#[error(
    "this host ({holder}) no longer holds the lease {lease} at epoch {epoch}: another host took it over, so this host's writes are refused"
)]
pub struct Fenced {
    /// The lease's name.
    pub lease: String,
    /// This host's id.
    pub holder: String,
    /// The epoch it had.
    pub epoch: i64,
}

impl Fence {
    /// The runs lease, as `holder` won it at `epoch`.
    pub fn runs(holder: &str, epoch: i64) -> Self {
        Fence {
            lease: RUNS_LEASE.to_string(),
            holder: holder.to_string(),
            epoch,
            lost: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

impl Fenced {
    /// The error of a flush under `fence`.
    pub fn of(fence: &Fence) -> Self {
        Fenced {
            lease: fence.lease.clone(),
            holder: fence.holder.clone(),
            epoch: fence.epoch,
        }
    }
}

/// Whether `error` is `stepwise.hold_lease` refusing a flush.
pub fn is_fenced(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| db.code().code() == FENCED_SQLSTATE)
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This host holds the lease now, at this epoch.
    Won {
        /// The new epoch.
        epoch: i64,
    },
    /// Another host holds it.
    HeldBy {
        /// Its id.
        holder: String,
        /// Where its API listens.
        address: String,
    },
}

/// A lease row's `holder, address` as a [`Claim::HeldBy`].
fn held_by(row: &tokio_postgres::Row) -> Claim {
    Claim::HeldBy {
        holder: row.get(0),
        address: row.get(1),
    }
}

/// A host's connection for claiming, renewing and releasing leases.
pub struct Leases {
    connection: Connection,
    /// Told when a host released a lease (a hint: see the module's
    /// documentation).
    released: Arc<tokio::sync::Notify>,
    /// The connection that listens for releases, while it lasts.
    _listener: Option<tokio_postgres::Client>,
    holder: String,
    forwarding_secret: String,
    address: String,
    ttl: Duration,
}

impl Leases {
    /// Connects to the database at `url` (migrating its schema) as host
    /// `holder`, whose API others reach at `address`; leases last `ttl`
    /// unless renewed.
    pub async fn open(url: &str, holder: &str, address: &str, ttl: Duration) -> Result<Self> {
        let target = super::parse_url(url)?;
        let mut connection = super::schema::migrate(Connection::open(&target).await?).await?;
        let forwarding_secret = shared_secret(&mut connection, "forwarding_secret").await?;
        let released = Arc::new(tokio::sync::Notify::new());
        let listener = match listen(&target, released.clone()).await {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot listen for released leases; standbys find them by polling"
                );
                None
            }
        };
        Ok(Leases {
            connection,
            released,
            _listener: listener,
            holder: holder.to_string(),
            forwarding_secret,
            address: address.to_string(),
            ttl,
        })
    }

    /// Told when a host released a lease: worth claiming at once.
    pub fn released(&self) -> Arc<tokio::sync::Notify> {
        self.released.clone()
    }

    /// This host's id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The secret every host on the database shares, which proves that a
    /// request was forwarded by one of them.
    pub fn forwarding_secret(&self) -> &str {
        &self.forwarding_secret
    }

    /// Takes lease `name` if nobody holds it, its holder let it expire or
    /// released it, or this host held it before (a restart); else says who
    /// holds it.
    pub async fn claim(&mut self, name: &str) -> Result<Claim> {
        let ttl = self.ttl.as_secs_f64();
        let client = self.connection.client().await?;
        // Look first, without a lock: a standby polling a held lease must
        // not make the leader's flushes (which share-lock its row) wait.
        let held = client
            .query_opt(
                "SELECT holder, address FROM stepwise.leases \
                 WHERE name = $1 AND expires_at > now() AND holder <> $2",
                &[&name, &self.holder],
            )
            .await
            .with_context(|| format!("reading who holds the lease {name}"))?;
        if let Some(row) = held {
            return Ok(held_by(&row));
        }
        let won = client
            .query_opt(
                "INSERT INTO stepwise.leases AS l (name, holder, epoch, expires_at, address) \
                 VALUES ($1, $2, 1, now() + make_interval(secs => $3), $4) \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                   epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at, \
                   address = EXCLUDED.address \
                 WHERE l.expires_at <= now() OR l.holder = EXCLUDED.holder \
                 RETURNING epoch",
                &[&name, &self.holder, &ttl, &self.address],
            )
            .await
            .with_context(|| format!("claiming the lease {name}"))?;
        if let Some(row) = won {
            return Ok(Claim::Won { epoch: row.get(0) });
        }
        // Another host claimed it between the look and the claim.
        let row = client
            .query_one(
                "SELECT holder, address FROM stepwise.leases WHERE name = $1",
                &[&name],
            )
            .await
            .with_context(|| format!("reading who holds the lease {name}"))?;
        Ok(held_by(&row))
    }

    /// Extends lease `name` by the lease's time from now; false when this
    /// host no longer holds it at `epoch`.
    pub async fn renew(&mut self, name: &str, epoch: i64) -> Result<bool> {
        let ttl = self.ttl.as_secs_f64();
        let client = self.connection.client().await?;
        let renewed = client
            .execute(
                "UPDATE stepwise.leases SET expires_at = now() + make_interval(secs => $4) \
                 WHERE name = $1 AND holder = $2 AND epoch = $3",
                &[&name, &self.holder, &epoch, &ttl],
            )
            .await
            .with_context(|| format!("renewing the lease {name}"))?;
        Ok(renewed == 1)
    }

    /// Lets lease `name` go at once (a host stopping), so that another
    /// host takes it without waiting for it to expire. The epoch stays: a
    /// write of this host that comes late still holds it until another
    /// host claims it, which makes a new epoch.
    pub async fn release(&mut self, name: &str, epoch: i64) -> Result<()> {
        let client = self.connection.client().await?;
        client
            .execute(
                "UPDATE stepwise.leases SET expires_at = now() \
                 WHERE name = $1 AND holder = $2 AND epoch = $3",
                &[&name, &self.holder, &epoch],
            )
            .await
            .with_context(|| format!("releasing the lease {name}"))?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&RELEASED_CHANNEL, &name])
            .await
            .with_context(|| format!("announcing the release of the lease {name}"))?;
        Ok(())
    }
}

/// A connection of its own that listens on [`RELEASED_CHANNEL`] and tells
/// `released` of every notification, until it is cut off.
async fn listen(
    target: &super::pool::Target,
    released: Arc<tokio::sync::Notify>,
) -> Result<tokio_postgres::Client> {
    let (client, mut connection) = target
        .config
        .connect(target.tls.clone())
        .await
        .context("connecting to listen for released leases")?;
    tokio::spawn(async move {
        loop {
            let message = futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await;
            match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => released.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "stopped listening for released leases; polling goes on");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {RELEASED_CHANNEL}"))
        .await
        .context("listening for released leases")?;
    Ok(client)
}

/// The secret `name` the hosts on the database share: made by the first
/// host that asks for it, read by the others.
async fn shared_secret(connection: &mut Connection, name: &str) -> Result<String> {
    let made = hex::encode(rand::random::<[u8; 32]>());
    let client = connection.client().await?;
    client
        .execute(
            "INSERT INTO stepwise.cluster (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &made],
        )
        .await
        .with_context(|| format!("making the hosts' {name}"))?;
    let row = client
        .query_one(
            "SELECT value FROM stepwise.cluster WHERE name = $1",
            &[&name],
        )
        .await
        .with_context(|| format!("reading the hosts' {name}"))?;
    Ok(row.get(0))
}
