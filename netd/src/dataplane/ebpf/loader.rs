//! Loading the embedded object: map sizing, reuse of pinned maps (with a layout check),
//! and typed handles to every map.

use std::{mem::size_of, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapInfo, MapType, PerCpuArray, PerCpuHashMap},
    programs::{Program, ProgramError, SchedClassifier},
};
use netd_common::{
    conntrack::{CtEntry, FlowKey, HostFlow},
    endpoint::{EndpointInfo, EndpointRef, NetworkInfo},
    maps as m,
    nat::{DataplaneConfig, FragKey, FragPorts, NatEntry},
    ports::{PortKey, PortRangeEntry, PortTarget},
    stats::{DROP_REASON_COUNT, IfaceCounters, PortStats},
};

use super::{EbpfConfig, bpffs};
use crate::dataplane::DataplaneError;

/// The object built from netd-ebpf by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd"));

/// Names of the TC programs in the object.
pub const PROG_VETH_INGRESS: &str = "netd_veth_ingress";
pub const PROG_VETH_EGRESS: &str = "netd_veth_egress";
pub const PROG_UPLINK_INGRESS: &str = "netd_uplink_ingress";
pub const PROG_UPLINK_EGRESS: &str = "netd_uplink_egress";
const PROGRAMS: [&str; 4] = [
    PROG_VETH_INGRESS,
    PROG_VETH_EGRESS,
    PROG_UPLINK_INGRESS,
    PROG_UPLINK_EGRESS,
];

/// What a map must look like; a pinned map that differs was made by another layout.
#[derive(Debug, Clone, Copy)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn spec<K, V>(name: &'static str, kind: MapType, max_entries: u32) -> MapSpec {
    MapSpec {
        name,
        kind,
        key_size: size_of::<K>() as u32,
        value_size: size_of::<V>() as u32,
        max_entries,
    }
}

/// Every map of the object, as this build lays it out.
pub fn map_specs(cfg: &EbpfConfig) -> Vec<MapSpec> {
    use MapType as T;
    vec![
        spec::<u32, IfaceCounters>(m::IFACE_STATS, T::PerCpuHash, m::MAX_INTERFACES),
        spec::<u32, u64>(m::DROPS, T::PerCpuArray, DROP_REASON_COUNT),
        spec::<u32, DataplaneConfig>(m::CONFIG, T::Array, 1),
        spec::<u32, EndpointInfo>(m::ENDPOINTS, T::Hash, m::MAX_ENDPOINTS),
        spec::<u32, EndpointRef>(m::ENDPOINTS_BY_IP, T::Hash, m::MAX_ENDPOINTS),
        spec::<u32, NetworkInfo>(m::NETWORKS, T::Hash, m::MAX_NETWORKS),
        // LPM keys carry a 4-byte prefix length before the address.
        spec::<u64, u32>(m::SUBNETS, T::LpmTrie, m::MAX_NETWORKS),
        spec::<u32, u32>(m::LOCAL_ADDRS, T::Hash, m::MAX_LOCAL_ADDRS),
        spec::<PortKey, PortTarget>(m::PORTS, T::Hash, m::MAX_PORTS),
        spec::<u32, PortRangeEntry>(m::PORT_RANGES, T::Array, m::MAX_PORT_RANGES),
        spec::<u32, PortStats>(m::PORT_STATS, T::PerCpuArray, m::MAX_PUBLICATIONS),
        spec::<FlowKey, CtEntry>(m::CONNTRACK, T::LruHash, cfg.conntrack_max),
        spec::<FlowKey, NatEntry>(m::NAT, T::LruHash, cfg.nat_max),
        spec::<FragKey, FragPorts>(m::FRAGS, T::LruHash, m::MAX_FRAGS),
        spec::<FlowKey, HostFlow>(m::HOST_FLOWS, T::LruHash, m::MAX_HOST_FLOWS),
    ]
    .into_iter()
    // Host-local access (sock.rs): pinned with the rest so they survive a restart.
    .chain(super::sock::map_specs())
    .collect()
}

/// Typed handles to every map.
#[expect(
    dead_code,
    reason = "the datapath tables are programmed by the next milestone"
)]
pub struct Maps {
    pub iface_stats: PerCpuHashMap<MapData, u32, IfaceCounters>,
    pub drops: PerCpuArray<MapData, u64>,
    pub config: Array<MapData, DataplaneConfig>,
    pub endpoints: HashMap<MapData, u32, EndpointInfo>,
    pub endpoints_by_ip: HashMap<MapData, u32, EndpointRef>,
    pub networks: HashMap<MapData, u32, NetworkInfo>,
    pub subnets: LpmTrie<MapData, u32, u32>,
    pub local_addrs: HashMap<MapData, u32, u32>,
    pub ports: HashMap<MapData, PortKey, PortTarget>,
    pub port_ranges: Array<MapData, PortRangeEntry>,
    pub port_stats: PerCpuArray<MapData, PortStats>,
    pub conntrack: HashMap<MapData, FlowKey, CtEntry>,
    pub nat: HashMap<MapData, FlowKey, NatEntry>,
    pub frags: HashMap<MapData, FragKey, FragPorts>,
    pub host_flows: HashMap<MapData, FlowKey, HostFlow>,
}

fn layout_err(
    spec: &MapSpec,
    path: &Path,
    what: &str,
    pinned: impl std::fmt::Display,
    ours: impl std::fmt::Display,
) -> DataplaneError {
    let hint = match spec.name {
        m::CONNTRACK => " (start with the same --conntrack-max to keep the existing flows)",
        m::NAT => " (start with the same --nat-max to keep the existing flows)",
        _ => "",
    };
    DataplaneError::new(
        format!("reusing the pinned map {} at {}", spec.name, path.display()),
        format!(
            "its layout changed: {what} is {pinned} there but {ours} in this netd{hint}; \
             run `netd daemon --cleanup` to remove the old dataplane (this resets connections \
             through netd), then start the daemon again"
        ),
    )
}

/// Checks that a map pinned by an earlier run has the layout this build expects.
fn check_pinned(spec: &MapSpec, path: &Path) -> Result<(), DataplaneError> {
    let info = MapInfo::from_pin(path).map_err(|e| {
        DataplaneError::new(format!("opening the pinned map {}", path.display()), e)
    })?;
    let kind = info
        .map_type()
        .map_err(|e| DataplaneError::new(format!("reading the type of {}", path.display()), e))?;
    if kind != spec.kind {
        return Err(layout_err(
            spec,
            path,
            "the map type",
            format!("{kind:?}"),
            format!("{:?}", spec.kind),
        ));
    }
    if info.key_size() != spec.key_size {
        return Err(layout_err(
            spec,
            path,
            "the key size",
            info.key_size(),
            spec.key_size,
        ));
    }
    if info.value_size() != spec.value_size {
        return Err(layout_err(
            spec,
            path,
            "the value size",
            info.value_size(),
            spec.value_size,
        ));
    }
    if info.max_entries() != spec.max_entries {
        return Err(layout_err(
            spec,
            path,
            "the capacity",
            info.max_entries(),
            spec.max_entries,
        ));
    }
    Ok(())
}

/// Checks the layout version recorded in a pinned config map, which catches changes in
/// meaning that keep every size.
fn check_layout_version(dir: &Path) -> Result<(), DataplaneError> {
    let path = bpffs::map_pin(dir, m::CONFIG);
    if !path.exists() {
        return Ok(());
    }
    let data = MapData::from_pin(&path).map_err(|e| {
        DataplaneError::new(format!("opening the pinned map {}", path.display()), e)
    })?;
    let config: Array<_, DataplaneConfig> = Array::try_from(aya::maps::Map::Array(data))
        .map_err(|e| DataplaneError::new(format!("reading {}", path.display()), e))?;
    let cur = config
        .get(&0, 0)
        .map_err(|e| DataplaneError::new(format!("reading {}", path.display()), e))?;
    if cur.layout_version != 0 && cur.layout_version != m::LAYOUT_VERSION {
        let spec = MapSpec {
            name: m::CONFIG,
            kind: MapType::Array,
            key_size: 4,
            value_size: 0,
            max_entries: 1,
        };
        return Err(layout_err(
            &spec,
            &path,
            "the layout version",
            cur.layout_version,
            m::LAYOUT_VERSION,
        ));
    }
    Ok(())
}

/// Loads the object with every map pinned under `cfg.bpffs` (reusing pins whose layout
/// matches) and every program loaded into the kernel, not attached.
pub fn load(cfg: &EbpfConfig) -> Result<(Ebpf, Maps), DataplaneError> {
    let specs = map_specs(cfg);
    for spec in &specs {
        let path = bpffs::map_pin(&cfg.bpffs, spec.name);
        if path.exists() {
            check_pinned(spec, &path)?;
        }
    }
    check_layout_version(&cfg.bpffs)?;
    let paths: Vec<_> = specs
        .iter()
        .map(|s| (s.name, bpffs::map_pin(&cfg.bpffs, s.name)))
        .collect();
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(m::CONNTRACK, cfg.conntrack_max);
    loader.map_max_entries(m::NAT, cfg.nat_max);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| DataplaneError::new("loading the eBPF object", format!("{e:#}")))?;
    for name in PROGRAMS {
        let prog: &mut SchedClassifier = typed_program(&mut ebpf, name)?;
        retry_interrupted(|| prog.load()).map_err(|e| {
            DataplaneError::new(
                format!("loading program {name} into the kernel"),
                verifier_detail(&e),
            )
        })?;
    }
    let maps = take_maps(&mut ebpf)?;
    Ok((ebpf, maps))
}

/// Runs `load`, again when the verifier gave up because a signal was pending: it then
/// fails with EAGAIN, often after a single instruction (libbpf retries the same way).
/// The daemon's and the tests' runtimes install signal handlers (SIGCHLD, SIGTERM), so a
/// child exiting during a load is enough.
pub(super) fn retry_interrupted(
    load: impl FnMut() -> Result<(), ProgramError>,
) -> Result<(), ProgramError> {
    retry(load, |e| {
        matches!(e, ProgramError::LoadError { io_error, .. }
            if io_error.raw_os_error() == Some(libc::EAGAIN))
    })
}

/// Calls `f` up to five times while its error is one that `again` says to retry.
fn retry<E>(mut f: impl FnMut() -> Result<(), E>, again: impl Fn(&E) -> bool) -> Result<(), E> {
    const ATTEMPTS: usize = 5;
    for _ in 1..ATTEMPTS {
        match f() {
            Err(e) if again(&e) => {}
            done => return done,
        }
    }
    f()
}

/// Program `name` of the object, as its type (`SchedClassifier`, `CgroupSockAddr`...).
pub(super) fn typed_program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| {
            DataplaneError::new(
                "loading the eBPF object",
                format!("program {name} is missing"),
            )
        })?
        .try_into()
        .map_err(|e| DataplaneError::new(format!("loading program {name}"), e))
}

/// The verifier log is the only useful part of a load failure; keep its tail.
pub(super) fn verifier_detail(e: &ProgramError) -> String {
    let s = format!("{e:#}");
    let lines: Vec<&str> = s.lines().collect();
    let tail = lines.len().saturating_sub(40);
    lines[tail..].join("\n")
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map>,
    T::Error: std::fmt::Display,
{
    let map = ebpf.take_map(name).ok_or_else(|| {
        DataplaneError::new("loading the eBPF object", format!("map {name} is missing"))
    })?;
    T::try_from(map).map_err(|e| DataplaneError::new(format!("opening map {name}"), e))
}

fn take_maps(ebpf: &mut Ebpf) -> Result<Maps, DataplaneError> {
    Ok(Maps {
        iface_stats: take(ebpf, m::IFACE_STATS)?,
        drops: take(ebpf, m::DROPS)?,
        config: take(ebpf, m::CONFIG)?,
        endpoints: take(ebpf, m::ENDPOINTS)?,
        endpoints_by_ip: take(ebpf, m::ENDPOINTS_BY_IP)?,
        networks: take(ebpf, m::NETWORKS)?,
        subnets: take(ebpf, m::SUBNETS)?,
        local_addrs: take(ebpf, m::LOCAL_ADDRS)?,
        ports: take(ebpf, m::PORTS)?,
        port_ranges: take(ebpf, m::PORT_RANGES)?,
        port_stats: take(ebpf, m::PORT_STATS)?,
        conntrack: take(ebpf, m::CONNTRACK)?,
        nat: take(ebpf, m::NAT)?,
        frags: take(ebpf, m::FRAGS)?,
        host_flows: take(ebpf, m::HOST_FLOWS)?,
    })
}

#[cfg(test)]
mod retry_tests {
    use super::retry;

    fn eagain() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EAGAIN)
    }

    fn is_eagain(e: &std::io::Error) -> bool {
        e.raw_os_error() == Some(libc::EAGAIN)
    }

    #[test]
    fn retries_an_interrupted_load_until_it_succeeds() {
        let mut calls = 0;
        let r = retry(
            || {
                calls += 1;
                if calls < 3 { Err(eagain()) } else { Ok(()) }
            },
            is_eagain,
        );
        assert!(r.is_ok());
        assert_eq!(calls, 3);
    }

    #[test]
    fn gives_up_after_five_attempts_and_never_retries_other_errors() {
        let mut calls = 0;
        let r = retry(
            || {
                calls += 1;
                Err(eagain())
            },
            is_eagain,
        );
        assert!(r.is_err_and(|e| is_eagain(&e)));
        assert_eq!(calls, 5);
        let mut calls = 0;
        let r = retry(
            || {
                calls += 1;
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            },
            is_eagain,
        );
        assert!(r.is_err());
        assert_eq!(calls, 1, "a verifier rejection is final");
    }
}
