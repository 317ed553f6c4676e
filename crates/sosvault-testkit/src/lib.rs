//! # sosvault-testkit
//!
//! The tests' harness for real processes, and the fixtures every crate's tests
//! build alike, written once: the dispatch
//! service's cluster (`crates/sosvault-server/tests/common`), the trustee's
//! (`crates/sosvault-trustee/tests/common`) and the CLI's demo test start
//! `sosvault-server` and `sosvault-trustee` through it. A dev-dependency
//! only: no shipped crate uses it.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`process`] | [`Spec`]: a binary with arguments and environment, its stderr appended to a log file; [`Running`]: ready when it prints `listening on URL` within a deadline (else a [`StartError`] with the end of its log), `kill`, `terminate`, `wait_exit` with a deadline, killed when dropped; [`Service`]: stopped and started again at the address it first listened on |
//! | [`fixtures`] | [`fixtures::manifest`]: the test deployment manifest the CLI's, the dispatch service's and the suite's tests start from |
//! | [`postgres`] | [`postgres::TestDatabase`]: an empty database of its own per test on the server `SOSVAULT_TEST_DATABASE_URL` names (`.ci/postgres start`), dropped with it; [`postgres::OwnCluster`]: a cluster of a test's own, stopped and started under a running service |
//! | [`netns`] | [`netns::Link`]: a network namespace joined by a veth pair, which `cut` and `heal` take down and up (packets then vanish without an answer); [`postgres::OwnCluster::start_behind`] starts a cluster inside one |
//! | [`bins`] | [`bins::build_packages`]: another package's binaries built once per test process, into the test's own profile directory; [`bins::sibling`] finds them |
//!
//! Ports come from the services themselves: a test configures
//! `127.0.0.1:0`, the service binds a free port and prints it in its
//! `listening on` line, and a [`Service`] hands that address back on every
//! restart; no port is guessed, so none is raced for.
//!
//! What each service needs (its config, keys, the cluster of three trustees
//! and a dispatch service) stays in that crate's `tests/common`, on top of
//! this.
//!
//! ```no_run
//! use std::time::Duration;
//! use sosvault_testkit::{Service, Spec, bins};
//!
//! let here = std::path::Path::new("target/debug/sosvault-server");
//! bins::build_packages(&["sosvault-trustee"], here)?;
//! let mut spec = Spec::new(bins::sibling(here, "sosvault-trustee"), "/tmp/t/trustee.log");
//! spec.args(["serve", "--config", "/tmp/t/trustee.toml"])
//!     .env("SOSVAULT_TRUSTEE_MAX_RELEASES_PER_WINDOW", "100");
//! let mut trustee = Service::new("SOSVAULT_TRUSTEE_LISTEN");
//! let url = trustee.start(&spec)?.url().to_owned();
//! // ... the test talks to `url`; then a crash and a restart on the same port:
//! trustee.restart(&spec)?;
//! assert!(trustee.terminate(Duration::from_secs(10))?.success());
//! # let _ = url;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod bins;
pub mod fixtures;
pub mod netns;
pub mod postgres;
pub mod process;

pub use process::{ExitError, Running, Service, Spec, StartError};
