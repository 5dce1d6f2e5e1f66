//! How our property tests run: a fixed seed by default, so that `make test` is repeatable, and
//! `PROPTEST_CASES` / `PROPTEST_RNG_SEED` to run more cases from other seeds (`make fuzz` picks
//! a new seed each run and prints it: a failure is replayed with that seed). Failures are not
//! persisted to files in the source tree; the seed and the minimal input are printed.
//! A dev-dependency of every crate with property tests.

use proptest::test_runner::{Config, RngSeed};

/// The seed `make test` uses.
pub const SEED: u64 = 20261122;

/// `cases` cases from [`SEED`], unless the environment says otherwise.
pub fn config(cases: u32) -> Config {
    // Config::default() reads PROPTEST_CASES and PROPTEST_RNG_SEED.
    let from_env = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            from_env.cases
        } else {
            cases
        },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            from_env.rng_seed
        } else {
            RngSeed::Fixed(SEED)
        },
        failure_persistence: None,
        ..from_env
    }
}
