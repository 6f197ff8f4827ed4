//! Serving a node: its HTTP API and binary protocol on their listeners, and
//! the orderly stop — listeners first, in-flight requests finished, then
//! retention and storage. Above [`Node`] (which knows nothing of routers or
//! listeners) and the API layers it starts, so the node's core does not
//! import the HTTP layer that imports it.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::node::{Node, retention_loop};
use crate::{api, tcp};

impl Node {
    /// The HTTP API, for serving or for in-process tests.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// Serves the API on `listener` until `shutdown` completes, then
    /// finishes in-flight requests, stops retention and syncs and closes
    /// the data directory.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        self.serve_with_tcp(listener, None, shutdown).await
    }

    /// Like [`Node::serve`], and also serves the binary ingest protocol on
    /// `tcp` when given. On shutdown both APIs stop accepting and finish
    /// their in-flight requests (concurrently) before storage closes.
    pub async fn serve_with_tcp(
        self,
        http: TcpListener,
        tcp: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let retention = tokio::spawn(retention_loop(self.clone(), stop_rx));
        let stop_apis = CancellationToken::new();
        let tcp_server = tcp.map(|l| tokio::spawn(tcp::serve(self.clone(), l, stop_apis.clone())));
        let addr: Option<SocketAddr> = http.local_addr().ok();
        tracing::info!(?addr, "serving HTTP");
        let stop = stop_apis.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
        crate::http_server::serve(
            http,
            self.router(),
            self.guards().clone(),
            self.tls_acceptor(),
            stop_apis.clone(),
        )
        .await;
        stop_apis.cancel();
        if let Some(server) = tcp_server
            && let Err(e) = server.await
        {
            tracing::error!(error = %e, "the binary-protocol server panicked");
        }
        tracing::info!("API servers stopped; shutting the data directory down");
        let _ = stop_tx.send(true);
        let _ = retention.await;
        self.shutdown_storage().await
    }
}
