//! Every map of the dataplane. The static names are the names in
//! `netd_common::maps` (userspace checks that they match); capacities of the state
//! tables are placeholders that userspace overrides from its configuration.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use netd_common::{
    conntrack::{CtEntry, FlowKey, HostFlow},
    endpoint::{EndpointInfo, EndpointRef, NetworkInfo},
    maps as m,
    nat::{DataplaneConfig, FragKey, FragPorts, NatEntry},
    ports::{PortKey, PortRangeEntry, PortTarget},
    stats::{DROP_REASON_COUNT, IfaceCounters, PortStats},
};

#[map]
pub static NETD_IFACE_STATS: PerCpuHashMap<u32, IfaceCounters> =
    PerCpuHashMap::with_max_entries(m::MAX_INTERFACES, 0);

#[map]
pub static NETD_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASON_COUNT, 0);

#[map]
pub static NETD_CONFIG: Array<DataplaneConfig> = Array::with_max_entries(1, 0);

#[map]
pub static NETD_ENDPOINTS: HashMap<u32, EndpointInfo> =
    HashMap::with_max_entries(m::MAX_ENDPOINTS, 0);

#[map]
pub static NETD_EP_BY_IP: HashMap<u32, EndpointRef> =
    HashMap::with_max_entries(m::MAX_ENDPOINTS, 0);

#[map]
pub static NETD_NETWORKS: HashMap<u32, NetworkInfo> = HashMap::with_max_entries(m::MAX_NETWORKS, 0);

#[map]
pub static NETD_SUBNETS: LpmTrie<u32, u32> = LpmTrie::with_max_entries(m::MAX_NETWORKS, 0);

#[map]
pub static NETD_LOCAL_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(m::MAX_LOCAL_ADDRS, 0);

#[map]
pub static NETD_PORTS: HashMap<PortKey, PortTarget> = HashMap::with_max_entries(m::MAX_PORTS, 0);

#[map]
pub static NETD_PORT_RANGES: Array<PortRangeEntry> = Array::with_max_entries(m::MAX_PORT_RANGES, 0);

#[map]
pub static NETD_PORT_STATS: PerCpuArray<PortStats> =
    PerCpuArray::with_max_entries(m::MAX_PUBLICATIONS, 0);

#[map]
pub static NETD_CT: LruHashMap<FlowKey, CtEntry> = LruHashMap::with_max_entries(1024, 0);

#[map]
pub static NETD_NAT: LruHashMap<FlowKey, NatEntry> = LruHashMap::with_max_entries(1024, 0);

#[map]
pub static NETD_FRAGS: LruHashMap<FragKey, FragPorts> =
    LruHashMap::with_max_entries(m::MAX_FRAGS, 0);

#[map]
pub static NETD_HOST_FLOWS: LruHashMap<FlowKey, HostFlow> =
    LruHashMap::with_max_entries(m::MAX_HOST_FLOWS, 0);
