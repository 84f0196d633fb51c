//! The run records this host wrote last, kept in memory so that the state
//! machine's read of a run at every step needs no round trip.
//!
//! Only while the host holds the runs lease: then no other host writes, so
//! what this host wrote last is what the database holds (or will, once
//! flushed). Records are noted before they are applied, so a reader that
//! misses them among the pending writes (a flush just took them) finds
//! them here. Ended runs are dropped (they are rarely read again on the hot
//! path), and the whole map is dropped when it outgrows its bound: the
//! database has everything.

use super::super::records::{TreeId, Write, status_of};
use std::collections::HashMap;
use std::sync::Mutex;

/// Run records kept at most (about 1 KiB each).
const MOST: usize = 50_000;

/// The latest run records this host wrote, by key.
#[derive(Default)]
pub struct OwnWrites {
    runs: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl OwnWrites {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes `writes` (call before applying them).
    pub fn note(&self, writes: &[Write]) {
        let mut runs = self.runs();
        for write in writes {
            match write {
                Write::Put(TreeId::Runs, key, value) => {
                    let ended = status_of(value).is_ok_and(|s| s.is_terminal());
                    if ended {
                        runs.remove(key);
                    } else {
                        runs.insert(key.clone(), value.clone());
                    }
                }
                Write::Delete(TreeId::Runs, key) => {
                    runs.remove(key);
                }
                _ => {}
            }
        }
        if runs.len() > MOST {
            runs.clear();
        }
    }

    /// The run record at `key` as this host last wrote it, if it did.
    pub fn run(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.runs().get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, status: &str) -> Write {
        Write::Put(
            TreeId::Runs,
            key.as_bytes().to_vec(),
            format!(r#"{{"status":"{status}"}}"#).into_bytes(),
        )
    }

    #[test]
    fn the_last_record_written_is_kept_until_the_run_ends_or_goes() {
        let own = OwnWrites::default();
        own.note(&[put("a", "queued"), put("b", "running")]);
        own.note(&[put("a", "sleeping")]);
        assert_eq!(own.run(b"a").unwrap(), br#"{"status":"sleeping"}"#);
        own.note(&[
            put("a", "completed"),
            Write::Delete(TreeId::Runs, b"b".to_vec()),
        ]);
        assert_eq!(
            own.run(b"a"),
            None,
            "an ended run is read from the database"
        );
        assert_eq!(own.run(b"b"), None);
        own.note(&[Write::Put(TreeId::Steps, b"c".to_vec(), b"{}".to_vec())]);
        assert_eq!(own.run(b"c"), None, "only run records are kept");
    }

    #[test]
    fn outgrowing_the_bound_drops_everything() {
        let own = OwnWrites::default();
        let writes: Vec<Write> = (0..=MOST).map(|i| put(&i.to_string(), "running")).collect();
        own.note(&writes);
        assert_eq!(own.run(b"0"), None);
        own.note(&[put("x", "running")]);
        assert!(own.run(b"x").is_some());
    }
}
