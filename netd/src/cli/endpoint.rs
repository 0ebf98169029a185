//! `netd endpoint ...`.

use clap::Subcommand;

use super::{
    CliError, EXIT_OK, Output, emit, emit_json, inspect_each, port::mapping, remove_each,
    table::Table,
};
use crate::api::{
    client::Client,
    types::{EndpointConnect, EndpointCreate, EndpointDisconnect, EndpointInfo},
};

/// `netd endpoint` subcommands.
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Create an endpoint: a network namespace attached to a network
    Create {
        name: String,
        /// The network to attach to [default: netd0]
        #[arg(long, value_name = "NET")]
        network: Option<String>,
        /// Address on the network [default: the next free one]
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
        /// MAC address [default: derived from the IP, as Docker does]
        #[arg(long, value_name = "MAC")]
        mac: Option<String>,
        /// Attach this existing namespace instead of creating /run/netns/NAME
        #[arg(long, value_name = "PATH")]
        netns: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Attach an endpoint to another network
    Connect {
        name: String,
        network: String,
        /// Address on the network [default: the next free one]
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
        /// MAC address [default: derived from the IP]
        #[arg(long, value_name = "MAC")]
        mac: Option<String>,
    },
    /// Detach an endpoint from a network
    Disconnect { name: String, network: String },
    /// List endpoints
    #[command(visible_alias = "list")]
    Ls(Output),
    /// Show endpoints in detail: a JSON array, as `docker inspect` prints
    Inspect {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Inspect always prints JSON; the flag is accepted for scripts that pass it
        /// everywhere.
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Remove endpoints, their namespaces (when netd created them) and their publications
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

impl EndpointCommand {
    pub(super) async fn run(self, client: &Client) -> Result<u8, CliError> {
        match self {
            EndpointCommand::Create {
                name,
                network,
                ip,
                mac,
                netns,
                output,
            } => {
                let req = EndpointCreate {
                    name,
                    network,
                    ip,
                    mac,
                    netns,
                };
                let info = client.endpoint_create(&req).await?;
                if output.json {
                    emit_json(&info)?;
                } else {
                    emit(&format!("{}\n", info.endpoint.name))?;
                }
            }
            EndpointCommand::Connect {
                name,
                network,
                ip,
                mac,
            } => {
                client
                    .endpoint_connect(&name, &EndpointConnect { network, ip, mac })
                    .await?;
            }
            EndpointCommand::Disconnect { name, network } => {
                client
                    .endpoint_disconnect(&name, &EndpointDisconnect { network })
                    .await?;
            }
            EndpointCommand::Ls(out) => {
                let list = client.endpoint_list().await?;
                if out.json {
                    emit_json(&list)?
                } else {
                    emit(&render_list(&list))?
                }
            }
            EndpointCommand::Inspect { names, .. } => {
                return inspect_each(&names, async |n| client.endpoint_inspect(n).await).await;
            }
            EndpointCommand::Rm { names } => {
                return remove_each(&names, async |n| client.endpoint_remove(n).await).await;
            }
        }
        Ok(EXIT_OK)
    }
}

/// The `netd endpoint ls` table: one row per endpoint, its networks and addresses in
/// attachment order.
pub fn render_list(list: &[EndpointInfo]) -> String {
    let mut t = Table::new(&["NAME", "NETWORKS", "ADDRESSES", "NETNS", "PORTS"]);
    for info in list {
        let e = &info.endpoint;
        let join = |f: &dyn Fn(&crate::model::Attachment) -> String| {
            e.attachments.iter().map(f).collect::<Vec<_>>().join(",")
        };
        let ports: Vec<String> = info.publications.iter().map(mapping).collect();
        t.row([
            e.name.clone(),
            join(&|a| a.network.clone()),
            join(&|a| a.ip.to_string()),
            e.netns.path.display().to_string(),
            ports.join(", "),
        ]);
    }
    t.render()
}
