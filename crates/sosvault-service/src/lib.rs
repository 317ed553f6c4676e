//! # sosvault-service
//!
//! What the trustee service and the dispatch service share, written once.
//! Today that is the HTTP plumbing in [`http`]; the rest of the two
//! services' common infrastructure moves here as it is unified.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | [`config::read_file`]: the TOML file, its relative paths relative to it; [`config::apply_env`]: every setting overridden by `<PREFIX><NAME>`, with an error that names the variable |
//! | [`files`] | files only their owner reads: written 0600 (new, or replaced atomically), directories 0700, logs appended 0600, loose keys refused with the `chmod` to run; both services and the CLI |
//! | [`http`] | [`http::close_unread`]: `Connection: close` on any answer given before the request body was read; [`http::ErrorBody`], the JSON of every refusal in both services |
//! | [`pki`] | a throwaway CA: the demo's and the tests' certificates, made at start |
//! | [`tls`] | rustls for both services: the listener (optional client certificates, [`tls::Peer`] as `ConnectInfo`) and the pinned client configuration |
//! | [`logverify`] | `log verify`, both services' auditor command: the log key pinned or remembered, the signed head, consistency with the last verified head (a fork, a shrunken or rewritten log fails), every leaf and inclusion proof, the state file |
//! | [`seal`] | one [`seal::MasterKey`] for both services (a 0600 file of 64 hex digits, or an environment variable) and the [`seal::Sealer`] each derives from it per purpose: XChaCha20-Poly1305 bound to its row |
//! | [`sqlite`] | [`sqlite::open_checked`]: a store's connection (a new file 0600; WAL, `synchronous = FULL`, `secure_delete`, `foreign_keys`, the busy wait, each checked); [`sqlite::truncate_wal`]: the WAL purge after a wipe; an error fails the wipe in both services |
//! | [`group`] | group commit for both services: [`group::Writer`] (one writer thread, batches of what is queued, a timed duty between them, [`group::WriterExit`]) and [`group::Savepoints`] (a savepoint per job, one commit, the answers after it) |
//! | [`logapi`] | the log's read routes both services serve (`/v1/log/entries`, `/v1/log/proof/inclusion`, `/v1/log/proof/consistency`) over a [`logapi::ServedLog`]; the range checks as pure functions, one code per refusal |
//! | [`body`] | [`body::JsonBody`]: a request's JSON body (415 not JSON, 413 over the limit, 400 `bad_json`) and [`body::base64_field`] (400 `too_long` before decoding, `bad_base64`): one code and status per refusal in both services ([`body::BodyRefused`]) |
//! | [`logquery`] | [`logquery::QueryGuard`]: a student's log query checked and its nonce answered once, in both services, with one code and status per refusal |
//! | [`trustee_api`] | the wire of a trustee's control-room endpoints (`/v1/shares`, `/v1/releases`, `/v1/shreds`, `/v1/cancels`, `/v1/commits`): one request and answer type each, with its path ([`trustee_api::Call`]); the trustee's handlers and the dispatch service's client both use them |
//! | [`openapi`] | byte fields with their encoding and limit, the answers layers give documented on every operation, and [`openapi::check_document`]: the promises each served document keeps |

#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod files;
pub mod group;
pub mod http;
pub mod logapi;
pub mod logquery;
pub mod logverify;
pub mod openapi;
pub mod pki;
pub mod seal;
pub mod sqlite;
pub mod tls;
pub mod trustee_api;
