//! HTTP plumbing both services use.
//!
//! ## Answers given before the body is read close the connection
//!
//! A service often answers before it has read the request's body: a body
//! over the size limit (413), a wrong content type (415), a timeout (408), a
//! missing credential (401). hyper then cannot reuse the connection (the
//! unread body bytes are still on it) and closes it right after the answer,
//! but nothing in the answer says so. A keep-alive client puts the
//! connection back in its pool and the next request it sends races the
//! close: it fails with "connection closed before message completed" (a
//! request that was never seen by the service, reported as a failure).
//!
//! [`close_unread`] makes the answer say it (RFC 9112 §9.6): when the request
//! had a body and the handler answered without reading it to the end, the
//! answer carries `Connection: close`, so the client drops the connection
//! instead of pooling it. An answer given after the whole body was read
//! keeps the connection alive as before.
//!
//! And it closes the connection *gracefully* (what nginx calls a lingering
//! close): the rest of the unread body is read and thrown away in the
//! background, at most [`DRAIN_MAX_BYTES`] within [`DRAIN_MAX_TIME`], while
//! the answer goes out at once. Closing a socket with unread data in it
//! makes the kernel answer with a reset, which can reach the client before
//! the answer does: the client would see "connection reset" where the
//! service had answered 413. A client that sends more than the bound (or
//! more slowly) is cut off as before.
//!
//! It must be the outermost layer, so it also sees the answers of the layers
//! inside it (the body limit, the timeout):
//!
//! ```
//! use axum::{Router, routing::post};
//!
//! let app: Router = Router::new()
//!     .route("/v1/things", post(|| async { "refused without reading" }))
//!     .layer(axum::middleware::from_fn(sosvault_service::http::close_unread));
//! # let _ = app;
//! ```

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// The most of an unread request body read and thrown away after the answer.
pub const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// The longest an unread request body is read after the answer.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// Middleware (for [`axum::middleware::from_fn`]): answers given before the
/// request body was read to its end say `Connection: close`, and the rest of
/// the body is drained in the background (bounded) so the close is
/// graceful. See the [module docs](self). Needs a tokio runtime.
pub async fn close_unread(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let read = Arc::new(AtomicBool::new(http_body::Body::is_end_stream(&body)));
    let leftover = Arc::new(Mutex::new(None));
    let tracked = Body::new(Tracked {
        inner: body,
        read: Arc::clone(&read),
        leftover: Arc::clone(&leftover),
    });
    let mut response = next.run(Request::from_parts(parts, tracked)).await;
    if !read.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        // The handler dropped the body unread: drain it after the answer.
        let unread = leftover.lock().ok().and_then(|mut slot| slot.take());
        if let Some(body) = unread {
            tokio::spawn(drain(body));
        }
    }
    response
}

/// Reads and throws away what is left of a request body, within the bounds.
async fn drain(mut body: Body) {
    let read_all = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
        {
            seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    // Past the bounds the body is dropped unread: hyper closes at once.
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, read_all).await;
}

/// A request body that records when it has been read to its end, and that
/// hands itself back (to be drained) when it is dropped before that.
struct Tracked {
    inner: Body,
    read: Arc<AtomicBool>,
    leftover: Arc<Mutex<Option<Body>>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.read.load(Ordering::Acquire)
            && let Ok(mut slot) = self.leftover.lock()
        {
            *slot = Some(std::mem::replace(&mut self.inner, Body::empty()));
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            // An error or not yet: the body is not read to its end.
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if ended {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The JSON body of every refusal (4xx) and failure (5xx), in both
/// services: `{"error": code, "message": text}`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code (`bad_query`, `bad_range`, `unauthorized`, `internal`, ...).
    pub error: String,
    /// Plain words, never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{Body, Bytes, Duration, HeaderValue, Request, Response, close_unread, header};
    use axum::Router;
    use axum::extract::DefaultBodyLimit;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route(
                "/read",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route(
                "/refuse",
                post(|| async { (StatusCode::UNAUTHORIZED, "no credential") }),
            )
            .layer(DefaultBodyLimit::max(1024))
            .layer(axum::middleware::from_fn(close_unread))
    }

    /// Sends `body` in chunks of at most 1 KiB, as a socket delivers it.
    async fn call(path: &str, body: Vec<u8>) -> Response {
        let len = body.len();
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        // hyper gives a request without a body one that has ended already.
        let body = if len == 0 {
            Body::empty()
        } else {
            Body::from_stream(futures_util::stream::iter(chunks))
        };
        let request = Request::post(path)
            .header(header::CONTENT_LENGTH, len)
            .body(body)
            .unwrap();
        app().oneshot(request).await.unwrap()
    }

    fn closes(response: &Response) -> bool {
        response.headers().get(header::CONNECTION) == Some(&HeaderValue::from_static("close"))
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_keeps_the_connection() {
        let response = call("/read", vec![b'x'; 100]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!closes(&response));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_closes_the_connection() {
        let response = call("/read", vec![b'x'; 4096]).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(closes(&response));
    }

    #[tokio::test]
    async fn a_refusal_that_never_reads_the_body_closes_the_connection() {
        let response = call("/refuse", vec![b'x'; 100]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(closes(&response));
    }

    /// The rest of a body the handler refused unread is read after the
    /// answer (so the close is graceful): every chunk the client still sends
    /// is taken.
    #[tokio::test]
    async fn the_rest_of_an_unread_body_is_drained_after_the_answer() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let request = Request::post("/refuse")
            .header(header::CONTENT_LENGTH, 64 * 1024)
            .body(Body::from_stream(stream))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(closes(&response));
        // The channel holds one chunk: each send completes only once the
        // drain has taken the one before.
        let send_all = async {
            for _ in 0..64 {
                tx.send(Ok(Bytes::from(vec![b'x'; 1024]))).await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(5), send_all)
            .await
            .expect("the unread body was drained");
    }

    #[tokio::test]
    async fn a_request_without_a_body_keeps_the_connection() {
        let response = call("/refuse", Vec::new()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(!closes(&response));
    }
}
