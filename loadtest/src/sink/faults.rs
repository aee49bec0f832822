//! Fault injection: which failures the sink answers with, and the seeded
//! dice that decide them.
//!
//! A relay under test must retry on 4xx, bounce on 5xx and survive refused
//! connections and slow servers; [`Faults`] describes how often the sink
//! produces each. Percentages are decided by a [`Dice`] per connection,
//! seeded from [`Faults::seed`] and the connection's number (the order in
//! which the sink accepted it), so a given seed replays the same decisions
//! for the same sequence of connections and commands. `tempfail_data_first`
//! is not random at all: the first N messages sink-wide get 451, which is
//! what a test of "4xx, then retry succeeds" wants.

use std::time::Duration;

/// How often, and how, the sink misbehaves. All percentages are 0..=100;
/// the default is a well-behaved sink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Share of RCPT commands answered `450 4.2.0`.
    pub tempfail_rcpt_pct: f64,
    /// Share of RCPT commands answered `550 5.1.1`.
    pub permfail_rcpt_pct: f64,
    /// Share of messages answered `451 4.3.0` after the final dot (or BDAT LAST).
    pub tempfail_data_pct: f64,
    /// Share of messages answered `554 5.6.0` after the final dot (or BDAT LAST).
    pub permfail_data_pct: f64,
    /// The first N messages (sink-wide, counted at their end of data) get
    /// `451 4.3.0`; later ones are judged normally.
    pub tempfail_data_first: u64,
    /// Share of connections greeted with `554 5.3.2 refused` and closed.
    pub refuse_pct: f64,
    /// Connections open at once beyond this many are greeted with
    /// `421 4.7.0 Too many concurrent connections` and closed, as big
    /// providers throttle a sender (0: no limit).
    pub max_connections: usize,
    /// Added before every reply to an end of data.
    pub latency: Duration,
    /// Seed of the dice behind every percentage.
    pub seed: u64,
}

impl Faults {
    /// Checks that every percentage is a number in 0..=100 and that each
    /// temp/perm pair adds up to at most 100; returns a message naming the
    /// first offender.
    pub fn validate(&self) -> Result<(), String> {
        let pcts = [
            ("tempfail_rcpt_pct", self.tempfail_rcpt_pct),
            ("permfail_rcpt_pct", self.permfail_rcpt_pct),
            ("tempfail_data_pct", self.tempfail_data_pct),
            ("permfail_data_pct", self.permfail_data_pct),
            ("refuse_pct", self.refuse_pct),
        ];
        for (name, v) in pcts {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{name} must be a percentage in 0..=100, not {v}"));
            }
        }
        for (name, sum) in [
            ("rcpt", self.tempfail_rcpt_pct + self.permfail_rcpt_pct),
            ("data", self.tempfail_data_pct + self.permfail_data_pct),
        ] {
            if sum > 100.0 {
                return Err(format!(
                    "tempfail_{name}_pct + permfail_{name}_pct must not exceed 100"
                ));
            }
        }
        Ok(())
    }
}

/// What the dice (or the first-N rule) decided for one RCPT or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on as a well-behaved server would.
    Accept,
    /// Answer with the 4xx of the stage.
    Tempfail,
    /// Answer with the 5xx of the stage.
    Permfail,
}

/// A small seeded PRNG (SplitMix64), one per connection.
///
/// Not cryptographic and need not be: it only has to be cheap, well spread
/// and reproducible. Percentages that are zero never roll, so a sink without
/// faults spends nothing here.
#[derive(Debug, Clone)]
pub struct Dice {
    state: u64,
}

impl Dice {
    /// The dice of connection number `connection` under `seed`. Distinct
    /// connections get unrelated streams even for adjacent numbers.
    pub fn new(seed: u64, connection: u64) -> Self {
        Self {
            state: mix(seed ^ mix(connection.wrapping_add(0x9E37_79B9_7F4A_7C15))),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: f64) -> bool {
        pct > 0.0 && self.percent() < pct
    }

    /// Tempfail with probability `temp_pct`, permfail with `perm_pct`, else
    /// accept. One roll decides both, so the shares are exact, not nested.
    pub fn judge(&mut self, temp_pct: f64, perm_pct: f64) -> Verdict {
        if temp_pct <= 0.0 && perm_pct <= 0.0 {
            return Verdict::Accept;
        }
        let r = self.percent();
        if r < temp_pct {
            Verdict::Tempfail
        } else if r < temp_pct + perm_pct {
            Verdict::Permfail
        } else {
            Verdict::Accept
        }
    }

    /// Uniform in [0, 100).
    fn percent(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 100.0
    }
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_decisions() {
        let roll = |seed, conn| {
            let mut d = Dice::new(seed, conn);
            (0..64).map(|_| d.judge(30.0, 20.0)).collect::<Vec<_>>()
        };
        assert_eq!(roll(7, 3), roll(7, 3));
        assert_ne!(roll(7, 3), roll(7, 4));
        assert_ne!(roll(7, 3), roll(8, 3));
    }

    #[test]
    fn shares_come_out_right() {
        let mut d = Dice::new(42, 0);
        let (mut temp, mut perm) = (0, 0);
        for _ in 0..100_000 {
            match d.judge(10.0, 25.0) {
                Verdict::Tempfail => temp += 1,
                Verdict::Permfail => perm += 1,
                Verdict::Accept => {}
            }
        }
        assert!((9_000..11_000).contains(&temp), "{temp}");
        assert!((23_500..26_500).contains(&perm), "{perm}");
    }

    #[test]
    fn extremes_are_exact() {
        let mut d = Dice::new(1, 1);
        for _ in 0..1000 {
            assert_eq!(d.judge(0.0, 0.0), Verdict::Accept);
            assert_eq!(d.judge(0.0, 100.0), Verdict::Permfail);
            assert_eq!(d.judge(100.0, 0.0), Verdict::Tempfail);
            assert!(d.chance(100.0));
            assert!(!d.chance(0.0));
        }
    }

    #[test]
    fn validate_rejects_bad_percentages() {
        assert!(Faults::default().validate().is_ok());
        let bad = Faults {
            refuse_pct: 101.0,
            ..Faults::default()
        };
        assert!(bad.validate().unwrap_err().contains("refuse_pct"));
        let nan = Faults {
            tempfail_rcpt_pct: f64::NAN,
            ..Faults::default()
        };
        assert!(nan.validate().is_err());
        let sum = Faults {
            tempfail_data_pct: 60.0,
            permfail_data_pct: 50.0,
            ..Faults::default()
        };
        assert!(sum.validate().unwrap_err().contains("data"));
    }
}
