//! When a failed attempt is tried again: Inngest's backoff table.

use rand::RngExt;

/// Retries when a function does not say (Inngest's default: 5 attempts).
pub const DEFAULT_RETRIES: u32 = 4;
/// Most retries a function may ask for.
pub const MAX_RETRIES: u32 = 20;

/// Inngest's delays after the 1st, 2nd, ... failed attempt; the last one
/// repeats.
const BACKOFF_MS: [u64; 10] = [
    15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_200_000, 2_400_000, 3_600_000, 7_200_000,
];
/// Up to this much random delay is added, so retries of many runs spread out.
const JITTER_MS: u64 = 30_000;

/// The backoff policy, scaled for tests and demos (`--retry-backoff-scale`).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    scale: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { scale: 1.0 }
    }
}

impl Backoff {
    /// Inngest's table, with every delay multiplied by `scale` (1.0 = as Inngest).
    pub fn scaled(scale: f64) -> Self {
        Backoff {
            scale: if scale.is_finite() && scale >= 0.0 {
                scale
            } else {
                1.0
            },
        }
    }

    /// Delay before the next attempt, after `failed` attempts (1 or more).
    /// A delay the error asked for (`RetryAfterError`) wins over the table.
    pub fn delay_ms(&self, failed: u32, asked_ms: Option<u64>) -> u64 {
        if let Some(asked) = asked_ms {
            return asked;
        }
        let index = (failed.max(1) as usize - 1).min(BACKOFF_MS.len() - 1);
        let jitter = rand::rng().random_range(0..=JITTER_MS);
        ((BACKOFF_MS[index] + jitter) as f64 * self.scale) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_table_with_jitter_and_scale() {
        let inngest = Backoff::default();
        let first = inngest.delay_ms(1, None);
        assert!((15_000..=45_000).contains(&first), "{first}");
        let tenth = inngest.delay_ms(25, None);
        assert!((7_200_000..=7_230_000).contains(&tenth), "{tenth}");
        assert_eq!(inngest.delay_ms(3, Some(1234)), 1234);
        let fast = Backoff::scaled(0.001);
        assert!(fast.delay_ms(1, None) <= 45);
    }
}
