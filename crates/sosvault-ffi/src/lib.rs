//! The phone's side of sosvault, for apps: UniFFI bindings of the core
//! crate's [`sosvault::Device`] for Kotlin (Android), Swift (iOS) and Python.
//!
//! Everything here is what a student's phone does, and nothing does I/O:
//! the app sends the bytes these calls make over its own HTTP stack and
//! hands the answers back to be checked. The calls, in the order an app
//! makes them (the crate README shows them in Kotlin and Swift):
//!
//! 1. [`Deployment::verify`]: the signed deployment manifest, checked
//!    against the authority key the app ships with (its trust anchor).
//!    Never enroll to what a service's `/v1/info` says.
//! 2. [`Phone::create`] once, then [`Phone::save`] / [`Phone::restore`]
//!    around every change (the state holds the device key: keep it in the
//!    Keystore / Keychain-protected storage).
//! 3. [`Phone::enroll`] → `POST /v1/enroll`; the answer's receipts →
//!    [`Phone::confirm_enrollment`] → `POST /v1/enroll/commit`.
//! 4. [`Phone::panic`] → `POST /v1/panic`; [`Phone::location_update`] →
//!    `POST /v1/location` while it lasts.
//! 5. [`Phone::status_query`] → `POST /v1/incident/status` →
//!    [`Phone::read_status`]: say "help is coming" only when
//!    [`IncidentStatus::help_is_coming`].
//! 6. [`Phone::log_query`] → `POST /v1/log/mine` → [`read_log`]: who read
//!    the profile, each entry proven against a signed head.
//! 7. [`Phone::cancel`] / [`Phone::stop`] with the PIN the student typed
//!    ([`PinLock`]: the duress PIN makes the same message, which escalates);
//!    the answers' receipts → [`Phone::confirmed`].
//!
//! In Rust (the bindings call the same functions):
//!
//! ```
//! use sosvault_ffi::{Phone, PinLock, VaultError};
//!
//! let pins = PinLock::create("2468".into(), "1357".into())?;
//! assert!(pins.accepts("1357".into()) && !pins.accepts("0000".into()));
//! let phone = Phone::create();
//! let restored = Phone::restore(phone.save())?;
//! assert_eq!(restored.student_id(), phone.student_id());
//! assert_eq!(restored.epoch(), 0, "not enrolled yet");
//! # Ok::<(), VaultError>(())
//! ```
//!
//! # Unsafe code
//!
//! The crate forbids `unsafe` like every crate of ours. The C ABI the
//! bindings call is scaffolding that UniFFI's macros generate
//! (`setup_scaffolding!`, `#[uniffi::export]`): exported `extern "C"`
//! functions over raw buffers, unsafe by nature, generated from these
//! safe signatures and audited upstream (Mozilla ships it in Firefox for
//! Android and iOS). The lint does not see into another crate's macro
//! output; none of the code written here is unsafe.

#![forbid(unsafe_code)]

mod chat;
mod deployment;
mod errors;
mod log;
mod phone;
mod pins;
mod records;

pub use chat::{Chat, ChatQuery, ChatSide, ChatText};
pub use deployment::Deployment;
pub use errors::VaultError;
pub use log::{LogLine, ProvenEntry, read_log};
pub use phone::{Confirmation, PanicBothWays, Phone, SignedMessage, StatusQuery};
pub use pins::PinLock;
pub use records::{Category, Fix, IncidentStatus, Stage, StudentProfile, TeamKind, TeamView};

uniffi::setup_scaffolding!();
