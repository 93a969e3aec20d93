//! Planned vs measured memory of one run (issue 8), for any model and
//! inputs given as `.npy` files:
//!
//! ```text
//! memory MODEL.morsel NAME=FILE.npy... [--budget BYTES] [--threads N] [--no-pack]
//! ```
//!
//! The model is mapped (`Model::open`), so its weights are file pages, not
//! anonymous memory. The session plans first; then one run, and the
//! anonymous resident memory (`RssAnon` in `/proc/self/status`) it added is
//! compared with what the session reports holding, by owner
//! ([`Session::memory`]): the planned activations, the kernels' scratch,
//! weights packed on first use, and the outputs returned. `--budget` runs
//! with that activation-memory limit (a budget below the plan is refused);
//! `--no-pack` with `Options::pack_weights` off.
//! Linux only for the measurement; elsewhere it prints the plan.

use morsel_runtime::tensor::{AlignedBuf, Blob};
use morsel_runtime::{DType, Model, Options, Tensor, TensorRef};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut model_path = None;
    let mut feeds: Vec<(String, Tensor)> = Vec::new();
    let mut options = Options::default();
    while let Some(a) = args.next() {
        let mut number = |flag: &str| -> Result<usize, String> {
            let v = args.next().ok_or(format!("{flag} needs a number"))?;
            v.parse().map_err(|e| format!("{flag} {v}: {e}"))
        };
        match a.as_str() {
            "--budget" => options.memory_limit = Some(number("--budget")?),
            "--threads" => options.threads = number("--threads")?,
            "--no-pack" => options.pack_weights = false,
            _ => match a.split_once('=') {
                Some((name, path)) => feeds.push((name.to_string(), read_npy(path)?)),
                None if model_path.is_none() => model_path = Some(a),
                None => return Err(format!("unexpected argument '{a}'")),
            },
        }
    }
    let path = model_path.ok_or(
        "usage: memory MODEL.morsel NAME=FILE.npy... [--budget BYTES] [--threads N] [--no-pack]",
    )?;
    let model = Model::open(&path).map_err(|e| e.to_string())?;
    let refs: Vec<(&str, TensorRef<'_>)> = feeds.iter().map(|(n, t)| (&n[..], t.view())).collect();
    let g = model.graph();
    let dims: Vec<Vec<usize>> = g
        .inputs
        .iter()
        .map(|&i| {
            let name = &g.values[i].name;
            refs.iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.dims.to_vec())
                .ok_or(format!("missing input {}", g.describe_value(i)))
        })
        .collect::<Result<_, _>>()?;
    let shapes: Vec<String> = refs
        .iter()
        .map(|(n, t)| format!("{n}={:?}", t.dims))
        .collect();
    println!("{path} [{}] threads={}", shapes.join(" "), options.threads);

    let mut session = model.session(options);
    let planned = {
        // Planned without the budget, so a refused run still shows its need.
        let mut planner = model.session(Options::default());
        let p = planner.plan(&dims).map_err(|e| e.to_string())?;
        println!(
            "planned activations: {} bytes in {} buffers ({} bytes if none were shared)",
            p.activation_bytes(),
            p.slots(),
            p.unshared_bytes()
        );
        p.activation_bytes()
    };
    // Plan in the measured session too, so its bookkeeping is in the baseline.
    session.plan(&dims).map_err(|e| e.to_string())?;
    let anon_before = anon_rss();
    let outputs = session.run(&refs).map_err(|e| e.to_string())?;
    let anon_after = anon_rss();
    let out_bytes: usize = outputs.iter().map(|t| t.data.as_bytes().len()).sum();
    let m = session.memory();
    let accounted = m.total() + out_bytes;
    println!("held after the run, by owner:");
    println!(
        "  activations      {:>10} bytes (plan: {planned})",
        m.activations
    );
    println!("  session scratch  {:>10} bytes", m.session_scratch);
    println!("  kernel scratch   {:>10} bytes", m.kernel_scratch);
    println!("  packed weights   {:>10} bytes", m.prepared_weights);
    println!("  outputs          {out_bytes:>10} bytes");
    println!("  sum              {accounted:>10} bytes");
    match anon_before.zip(anon_after) {
        Some((b, a)) => {
            let added = a.saturating_sub(b);
            println!(
                "measured: anonymous RSS added by the run {added} bytes ({:+.1}% vs the sum; \
                 {:.2}x the planned activations)",
                (added as f64 / accounted as f64 - 1.0) * 100.0,
                added as f64 / planned.max(1) as f64
            );
        }
        None => println!("measured: not measurable here (no /proc/self/status)"),
    }
    Ok(())
}

/// Anonymous resident bytes of this process (Linux).
fn anon_rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: usize = line["RssAnon:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A `.npy` file (little-endian f32, i64 or i32, C order).
fn read_npy(path: &str) -> Result<Tensor, String> {
    let d = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let bad = |why: &str| format!("{path}: {why}");
    if d.len() < 10 || &d[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let (hlen, start) = match d[6] {
        1 => (u16::from_le_bytes([d[8], d[9]]) as usize, 10),
        _ if d.len() >= 12 => (u32::from_le_bytes([d[8], d[9], d[10], d[11]]) as usize, 12),
        _ => return Err(bad("truncated header")),
    };
    let header = d
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or(bad("bad header"))?;
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order is not supported"));
    }
    let dtype = [
        ("<f4", DType::F32),
        ("<i8", DType::I64),
        ("<i4", DType::I32),
    ]
    .into_iter()
    .find(|(code, _)| header.contains(code))
    .map(|(_, t)| t)
    .ok_or(bad("dtype must be <f4, <i8 or <i4"))?;
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .ok_or(bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_, _>>()?;
    let data = Blob::owned(AlignedBuf::from_bytes(&d[start + hlen..]));
    Tensor::new(dtype, dims, data).map_err(|e| bad(&e.to_string()))
}
