//! The two bpf(2) commands aya 0.14 does not expose: opening a pin as a raw fd and
//! detaching a link synchronously.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The bpf_attr union is larger than any member we use; the kernel wants the rest zeroed.
#[repr(C, align(8))]
struct Attr([u8; 128]);

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, zero-padded bpf_attr for cmd, alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len() as u32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens the object pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = Attr([0; 128]);
    attr.0[..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Detaches the link `fd` now, whoever else holds references to it (the kernel's last
/// reference may otherwise be dropped from a deferred work item, a moment later).
pub fn link_detach(fd: &OwnedFd) -> io::Result<()> {
    let mut attr = Attr([0; 128]);
    attr.0[..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per batch; a hash bucket with more entries than this is ENOSPC.
const BATCH: usize = 4096;

/// Every entry of the hash map `fd` in a few `BPF_MAP_LOOKUP_BATCH` calls (kernel 5.6),
/// instead of two syscalls per entry (`get_next_key` + lookup), which dominated flushing
/// a table of ten thousand flows. Entries changed during the walk may be missed or seen
/// once, as with key-by-key iteration.
pub fn hash_entries<K: aya::Pod, V: aya::Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys: Vec<K> = Vec::with_capacity(BATCH);
    let mut values: Vec<V> = Vec::with_capacity(BATCH);
    // The hash map's batch cursor is a bucket index (u32).
    let (mut in_batch, mut out_batch) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = Attr([0; 128]);
        let in_ptr = if first { 0 } else { &raw const in_batch as u64 };
        attr.0[0..8].copy_from_slice(&in_ptr.to_ne_bytes());
        attr.0[8..16].copy_from_slice(&(&raw mut out_batch as u64).to_ne_bytes());
        attr.0[16..24].copy_from_slice(&(keys.as_mut_ptr() as u64).to_ne_bytes());
        attr.0[24..32].copy_from_slice(&(values.as_mut_ptr() as u64).to_ne_bytes());
        attr.0[32..36].copy_from_slice(&(BATCH as u32).to_ne_bytes());
        attr.0[36..40].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let count = u32::from_ne_bytes(attr.0[32..36].try_into().expect("4 bytes")) as usize;
        let done = match r {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        // SAFETY: the kernel wrote `count` (<= BATCH) keys and values; K and V are Pod.
        unsafe {
            keys.set_len(count.min(BATCH));
            values.set_len(count.min(BATCH));
        }
        out.extend(keys.drain(..).zip(values.drain(..)));
        if done {
            return Ok(out);
        }
        in_batch = out_batch;
        first = false;
    }
}
