//! # sosvault-service
//!
//! What the trustee service and the dispatch service share, written once.
//! Today that is the HTTP plumbing in [`http`]; the rest of the two
//! services' common infrastructure moves here as it is unified.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`http`] | [`http::close_unread`]: `Connection: close` on any answer given before the request body was read |

#![forbid(unsafe_code)]

pub mod http;
