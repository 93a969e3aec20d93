//! Like `from_bytes`, but first rewrites the header and section checksums so
//! that mutations get past the CRC checks and reach the section parsers
//! (graph, tensor table, metadata) — where hostile-but-consistent files go.
#![no_main]

use libfuzzer_sys::fuzz_target;
use morsel_runtime::{Model, Options, TensorRef};

fn fix_crcs(b: &mut [u8]) {
    if b.len() < 64 {
        return;
    }
    let rd64 = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let table = rd64(b, 40) as usize;
    let count = u32::from_le_bytes(b[48..52].try_into().unwrap_or([0; 4])) as usize;
    for i in 0..count.min(64) {
        let e = table.saturating_add(i * 32);
        if e.saturating_add(32) > b.len() {
            break;
        }
        let (off, len) = (rd64(b, e + 8) as usize, rd64(b, e + 16) as usize);
        if let Some(end) = off.checked_add(len).filter(|&end| end <= b.len()) {
            let crc = crc32fast::hash(&b[off..end]);
            b[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b[..56]);
    b[56..60].copy_from_slice(&crc.to_le_bytes());
    // keep the declared length honest so truncations reach the parsers too
    let n = b.len() as u64;
    b[32..40].copy_from_slice(&n.to_le_bytes());
    let crc = crc32fast::hash(&b[..56]);
    b[56..60].copy_from_slice(&crc.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    fix_crcs(&mut b);
    if let Ok(model) = Model::from_bytes(&b) {
        let g = model.graph();
        let inputs: Vec<(String, morsel_runtime::DType, Vec<usize>)> = g
            .inputs
            .iter()
            .map(|&i| {
                let v = &g.values[i];
                (v.name.clone(), v.dtype, v.shape.iter().map(|d| d.known().unwrap_or(1).min(64)).collect())
            })
            .collect();
        let bufs: Vec<Vec<u8>> = inputs
            .iter()
            .map(|(_, dt, dims)| vec![0u8; dims.iter().product::<usize>().min(1 << 16) * dt.size()])
            .collect();
        let feeds: Vec<(&str, TensorRef<'_>)> = inputs
            .iter()
            .zip(&bufs)
            .map(|((n, dt, dims), b)| (n.as_str(), TensorRef { dtype: *dt, dims, data: b }))
            .collect();
        let mut s = model.session(Options { threads: 1, memory_limit: Some(64 << 20), ..Options::default() });
        let _ = s.run(&feeds);
    }
});
