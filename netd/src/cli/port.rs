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
    #[command(
        after_help = "SPEC matches what it published: a host range onto one container port matches\n\
        the port chosen from it. Without HOST_IP it matches any address; 0.0.0.0 matches\n\
        only publications on every address."
    )]
    Unpublish {
        endpoint: String,
        spec: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// List published ports
    #[command(visible_alias = "list")]
    Ls {
        /// Only this endpoint's (an error if there is no such endpoint)
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
                let list = list(client, endpoint.as_deref()).await?;
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

/// Every publication, or `endpoint`'s. An endpoint the daemon does not know is its
/// NotFound error (exit status 1), as `docker port` refuses an unknown container.
async fn list(client: &Client, endpoint: Option<&str>) -> Result<Vec<PublicationInfo>, CliError> {
    let mut list = client.port_list().await?;
    if let Some(name) = endpoint {
        list.retain(|p| p.publication.endpoint == name);
        if list.is_empty() {
            // Nothing published: the endpoint may not exist. Ask (only then).
            client.endpoint_inspect(name).await?;
        }
    }
    Ok(list)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{
            client::ClientError,
            server::tests::{Harness, fake::FakeApi},
            types::{EndpointCreate, NetworkCreate},
        },
        cli::EXIT_API,
        error::ErrorKind,
    };

    async fn create_endpoint(client: &Client, name: &str) {
        let req = EndpointCreate {
            name: name.into(),
            ..Default::default()
        };
        client.endpoint_create(&req).await.unwrap();
    }

    #[tokio::test]
    async fn ls_of_an_unknown_endpoint_is_not_found() {
        let h = Harness::start(FakeApi::default()).await;
        let client = h.client();
        let netd0 = NetworkCreate {
            name: "netd0".into(),
            ..Default::default()
        };
        client.network_create(&netd0).await.unwrap();
        create_endpoint(&client, "web").await;
        create_endpoint(&client, "idle").await;
        let publish = PortPublish {
            endpoint: "web".into(),
            spec: "8080:80".into(),
            network: None,
        };
        client.port_publish(&publish).await.unwrap();

        let ls = |endpoint: Option<&str>| PortCommand::Ls {
            endpoint: endpoint.map(str::to_string),
            output: Output { json: true },
        };
        let err = ls(Some("nosuch")).run(&client).await.unwrap_err();
        assert_eq!(err.exit_code(), EXIT_API, "{err}");
        let CliError::Client(ClientError::Api(e)) = &err else {
            panic!("expected the daemon's refusal, got {err:?}")
        };
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(err.to_string().contains("nosuch"), "{err}");

        // A known endpoint without publications lists nothing, successfully.
        assert_eq!(list(&client, Some("idle")).await.unwrap(), []);
        let web = list(&client, Some("web")).await.unwrap();
        assert_eq!(web.len(), 1);
        assert_eq!(web[0].publication.endpoint, "web");
        assert_eq!(list(&client, None).await.unwrap(), web);
        h.stop().await.unwrap();
    }
}
