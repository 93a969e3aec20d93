//! `Model::from_bytes` must never panic, whatever the bytes; a model that
//! loads must also plan and run (or fail) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use morsel_runtime::{Model, Options, TensorRef};

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = Model::from_bytes(data) {
        let g = model.graph();
        // Run once with small inputs of the declared shapes (symbolic dims = 1).
        let inputs: Vec<(String, morsel_runtime::DType, Vec<usize>)> = g
            .inputs
            .iter()
            .map(|&i| {
                let v = &g.values[i];
                let dims = v.shape.iter().map(|d| d.known().unwrap_or(1).min(64)).collect();
                (v.name.clone(), v.dtype, dims)
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
