//! HTTP: the webhook listener ([`webhook`]) behind its tower stack ([`layers`]), the admin
//! listener ([`admin`]), and the accept loop both share, with graceful shutdown.

pub mod admin;
pub mod layers;
pub mod webhook;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Service;

use crate::config::Subscription;
use crate::shutdown::Shutdown;
use crate::signature::SIGNATURE_HEADER;

/// A JSON answer, signed with the subscription's secret when there is one.
pub fn json_response(
    status: u16,
    body: Bytes,
    signer: Option<&Subscription>,
) -> Response<Full<Bytes>> {
    let signature = signer.map(|s| s.secret.sign(&body));
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(signature) = signature.and_then(|s| HeaderValue::from_str(&s).ok()) {
        headers.insert(SIGNATURE_HEADER, signature);
    }
    response
}

/// Accepts connections until `shutdown`, then lets open calls finish within `grace`.
pub async fn serve<S>(listener: TcpListener, service: S, mut shutdown: Shutdown, grace: Duration)
where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = http1::Builder::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()));
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            () = shutdown.wait() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "calls still open after the shutdown grace period ({grace:?}); closing them"
        );
    }
}
