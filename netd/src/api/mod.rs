//! The daemon's JSON API over HTTP on a UNIX socket, the way Docker and podman serve
//! theirs. [`types`] is the contract; [`server`] serves an [`Api`] implementation,
//! [`client`] is what the CLI uses.
//!
//! Routes (bodies and replies are JSON of the [`types`]; errors are [`types::ApiError`]
//! with status 404 not found, 409 conflict, 400 invalid, 500 internal):
//! - `GET /info`
//! - `GET /networks`, `POST /networks`, `GET /networks/{name}`, `DELETE /networks/{name}`
//! - `GET /endpoints`, `POST /endpoints`, `GET /endpoints/{name}`, `DELETE /endpoints/{name}`
//! - `POST /endpoints/{name}/connect`, `POST /endpoints/{name}/disconnect`
//! - `GET /ports`, `POST /ports`, `POST /ports/unpublish`
//! - `GET /stats`, `GET /conntrack`, `POST /conntrack/flush`

pub mod client;
pub mod server;
pub mod types;

use std::future::Future;

use types::*;

use crate::error::Result;

/// What the daemon offers; the HTTP server maps routes onto it one to one.
pub trait Api: Send + Sync + 'static {
    fn info(&self) -> impl Future<Output = Result<DaemonInfo>> + Send;

    fn network_create(
        &self,
        req: NetworkCreate,
    ) -> impl Future<Output = Result<NetworkInfo>> + Send;
    fn network_list(&self) -> impl Future<Output = Result<Vec<NetworkInfo>>> + Send;
    fn network_inspect(&self, name: String) -> impl Future<Output = Result<NetworkInfo>> + Send;
    fn network_remove(&self, name: String) -> impl Future<Output = Result<()>> + Send;

    fn endpoint_create(
        &self,
        req: EndpointCreate,
    ) -> impl Future<Output = Result<EndpointInfo>> + Send;
    fn endpoint_list(&self) -> impl Future<Output = Result<Vec<EndpointInfo>>> + Send;
    fn endpoint_inspect(&self, name: String) -> impl Future<Output = Result<EndpointInfo>> + Send;
    fn endpoint_remove(&self, name: String) -> impl Future<Output = Result<()>> + Send;
    fn endpoint_connect(
        &self,
        name: String,
        req: EndpointConnect,
    ) -> impl Future<Output = Result<EndpointInfo>> + Send;
    fn endpoint_disconnect(
        &self,
        name: String,
        req: EndpointDisconnect,
    ) -> impl Future<Output = Result<EndpointInfo>> + Send;

    fn port_publish(
        &self,
        req: PortPublish,
    ) -> impl Future<Output = Result<Vec<PublicationInfo>>> + Send;
    fn port_unpublish(
        &self,
        req: PortUnpublish,
    ) -> impl Future<Output = Result<Vec<PublicationInfo>>> + Send;
    fn port_list(&self) -> impl Future<Output = Result<Vec<PublicationInfo>>> + Send;

    fn stats(&self) -> impl Future<Output = Result<crate::dataplane::DataplaneStats>> + Send;
    fn conntrack_list(&self) -> impl Future<Output = Result<Vec<crate::dataplane::Flow>>> + Send;
    fn conntrack_flush(
        &self,
        req: ConntrackFlush,
    ) -> impl Future<Output = Result<ConntrackFlushed>> + Send;
}
