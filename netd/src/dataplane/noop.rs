//! A dataplane that programs nothing, for control-plane tests that need no kernel.

use std::net::Ipv4Addr;

use super::*;

/// Accepts every change and carries no traffic.
#[derive(Debug, Default)]
pub struct NoopDataplane;

impl Dataplane for NoopDataplane {
    fn kind(&self) -> DataplaneKind {
        DataplaneKind::Ebpf
    }
    fn set_uplink(&mut self, _: &UplinkView) -> Result<()> {
        Ok(())
    }
    fn add_network(&mut self, _: &NetworkView<'_>) -> Result<()> {
        Ok(())
    }
    fn remove_network(&mut self, _: &NetworkView<'_>) -> Result<()> {
        Ok(())
    }
    fn add_endpoint(&mut self, _: &EndpointView<'_>) -> Result<()> {
        Ok(())
    }
    fn remove_endpoint(&mut self, _: &EndpointView<'_>) -> Result<()> {
        Ok(())
    }
    fn publish(&mut self, _: &PublicationView<'_>) -> Result<()> {
        Ok(())
    }
    fn unpublish(&mut self, _: &PublicationView<'_>) -> Result<()> {
        Ok(())
    }
    fn sync(&mut self, _: &SyncView<'_>) -> Result<()> {
        Ok(())
    }
    fn stats(&self) -> Result<DataplaneStats> {
        Ok(DataplaneStats {
            dataplane: "noop".into(),
            ..Default::default()
        })
    }
    fn conntrack(&self) -> Result<Vec<Flow>> {
        Ok(Vec::new())
    }
    fn flush_conntrack(&mut self, _: Option<&[Ipv4Addr]>) -> Result<u64> {
        Ok(0)
    }
}
