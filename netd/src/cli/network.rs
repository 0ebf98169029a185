//! `netd network ...`.

use clap::{Args, Subcommand};

use super::{CliError, EXIT_OK, Output, emit, emit_json, inspect_each, remove_each, table::Table};
use crate::api::{
    client::Client,
    types::{NetworkCreate, NetworkInfo},
};

/// `netd network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network
    Create(NetworkCreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(Output),
    /// Show networks in detail: a JSON array, as `docker inspect` prints
    Inspect {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Inspect always prints JSON; the flag is accepted for scripts that pass it
        /// everywhere.
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Remove networks (they must have no endpoints)
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// Options of `netd network create`; values go to the daemon as typed, which validates them.
#[derive(Debug, Clone, Args)]
pub struct NetworkCreateArgs {
    pub name: String,
    /// Subnet in CIDR notation [default: the first free 172.17-31.0.0/16, then a /20 of 192.168.0.0/16]
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// Gateway address, the bridge's [default: the subnet's first address]
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// Allocate endpoint addresses from this part of the subnet only
    #[arg(long, value_name = "CIDR")]
    pub ip_range: Option<String>,
    /// No traffic to or from outside the subnet, no published ports
    #[arg(long)]
    pub internal: bool,
    /// Let endpoints of this network talk to each other [default: true]
    #[arg(long, value_name = "true|false")]
    pub icc: Option<bool>,
    /// Masquerade traffic that leaves through the uplink [default: true]
    #[arg(long, value_name = "true|false")]
    pub masquerade: Option<bool>,
    /// MTU of the bridge and the endpoints' interfaces [default: 1500]
    #[arg(long, value_name = "N")]
    pub mtu: Option<u32>,
    /// Name of the Linux bridge [default: nd-NAME]
    #[arg(long, value_name = "IFNAME")]
    pub bridge: Option<String>,
    #[command(flatten)]
    pub output: Output,
}

impl NetworkCreateArgs {
    /// The API request.
    pub fn request(&self) -> NetworkCreate {
        NetworkCreate {
            name: self.name.clone(),
            subnet: self.subnet.clone(),
            gateway: self.gateway.clone(),
            ip_range: self.ip_range.clone(),
            internal: self.internal,
            icc: self.icc,
            masquerade: self.masquerade,
            mtu: self.mtu,
            bridge: self.bridge.clone(),
        }
    }
}

impl NetworkCommand {
    pub(super) async fn run(self, client: &Client) -> Result<u8, CliError> {
        match self {
            NetworkCommand::Create(args) => {
                let info = client.network_create(&args.request()).await?;
                if args.output.json {
                    emit_json(&info)?;
                } else {
                    emit(&format!("{}\n", info.network.name))?;
                }
                Ok(EXIT_OK)
            }
            NetworkCommand::Ls(out) => {
                let list = client.network_list().await?;
                if out.json {
                    emit_json(&list)?
                } else {
                    emit(&render_list(&list))?
                }
                Ok(EXIT_OK)
            }
            NetworkCommand::Inspect { names, .. } => {
                inspect_each(&names, async |n| client.network_inspect(n).await).await
            }
            NetworkCommand::Rm { names } => {
                remove_each(&names, async |n| client.network_remove(n).await).await
            }
        }
    }
}

/// The `netd network ls` table.
pub fn render_list(list: &[NetworkInfo]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "ID",
        "SUBNET",
        "GATEWAY",
        "BRIDGE",
        "MTU",
        "ENDPOINTS",
        "OPTIONS",
    ])
    .right_align(&[1, 5, 6]);
    for info in list {
        let n = &info.network;
        let mut options = Vec::new();
        if let Some(range) = n.ip_range {
            options.push(format!("ip-range={range}"));
        }
        if n.internal {
            options.push("internal".to_string());
        }
        if !n.icc {
            options.push("icc=false".to_string());
        }
        if !n.masquerade {
            options.push("masquerade=false".to_string());
        }
        t.row([
            n.name.clone(),
            n.id.to_string(),
            n.subnet.to_string(),
            n.gateway.to_string(),
            n.bridge.clone(),
            n.mtu.to_string(),
            info.endpoints.len().to_string(),
            if options.is_empty() {
                "-".to_string()
            } else {
                options.join(",")
            },
        ]);
    }
    t.render()
}
