//! `netd port ...`.

use std::net::Ipv4Addr;

use clap::Subcommand;

use super::{CliError, EXIT_OK, Output, emit, emit_json, table::Table};
use crate::{
    api::{
        client::Client,
        types::{PortPublish, PortUnpublish, PublicationInfo},
    },
    model::Publication,
};

/// `netd port` subcommands.
#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Publish a port (or range) of an endpoint on the host
    #[command(
        after_help = "SPEC is Docker's: [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]\n\
        Without HOST_PORT a free port is chosen and printed."
    )]
    Publish {
        endpoint: String,
        spec: String,
        /// Which of the endpoint's networks receives the traffic [default: its first]
        #[arg(long, value_name = "NET")]
        network: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Remove an endpoint's publication, or all of them without SPEC
    Unpublish {
        endpoint: String,
        spec: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// List published ports
    #[command(visible_alias = "list")]
    Ls {
        /// Only this endpoint's
        endpoint: Option<String>,
        #[command(flatten)]
        output: Output,
    },
}

impl PortCommand {
    pub(super) async fn run(self, client: &Client) -> Result<u8, CliError> {
        match self {
            PortCommand::Publish {
                endpoint,
                spec,
                network,
                output,
            } => {
                let list = client
                    .port_publish(&PortPublish {
                        endpoint,
                        spec,
                        network,
                    })
                    .await?;
                if output.json {
                    emit_json(&list)?
                } else {
                    emit(&render_mappings(&list))?
                }
            }
            PortCommand::Unpublish {
                endpoint,
                spec,
                output,
            } => {
                let list = client
                    .port_unpublish(&PortUnpublish { endpoint, spec })
                    .await?;
                if output.json {
                    emit_json(&list)?
                } else {
                    emit(&render_mappings(&list))?
                }
            }
            PortCommand::Ls { endpoint, output } => {
                let mut list = client.port_list().await?;
                if let Some(name) = &endpoint {
                    list.retain(|p| &p.publication.endpoint == name);
                }
                if output.json {
                    emit_json(&list)?
                } else {
                    emit(&render_list(&list))?
                }
            }
        }
        Ok(EXIT_OK)
    }
}

fn host_ip(p: &Publication) -> Ipv4Addr {
    p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// A publication the way `docker ps` shows it: `0.0.0.0:8080->80/tcp`.
pub fn mapping(p: &Publication) -> String {
    format!(
        "{}:{}->{}/{}",
        host_ip(p),
        p.host_ports,
        p.container_ports,
        p.proto
    )
}

/// One mapping per line, as `netd port publish` and `netd run -p` print them.
pub fn render_mappings(list: &[PublicationInfo]) -> String {
    list.iter()
        .map(|p| format!("{}\n", mapping(&p.publication)))
        .collect()
}

/// The `netd port ls` table.
pub fn render_list(list: &[PublicationInfo]) -> String {
    let mut t = Table::new(&["ENDPOINT", "PROTO", "HOST", "CONTAINER"]);
    for info in list {
        let p = &info.publication;
        t.row([
            p.endpoint.clone(),
            p.proto.to_string(),
            format!("{}:{}", host_ip(p), p.host_ports),
            format!("{}:{}", info.container_ip, p.container_ports),
        ]);
    }
    t.render()
}
