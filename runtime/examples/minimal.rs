//! Minimal load + run: the smallest useful program on the runtime, used to
//! measure binary size on ARM and for the end-to-end check under qemu
//! (`make test-arm`).
//!
//! ```text
//! minimal MODEL.morsel INPUT.f32 [--budget BYTES] [--mem]
//! ```
//!
//! Reads the model into memory, and a raw little-endian f32 file as its one
//! input (a symbolic dim such as the batch follows from the file's size),
//! runs once and prints each output as `output NAME DTYPE [DIMS]` followed
//! by one value per line, printed so that it reads back to the same f32.
//! `--budget BYTES` runs with that activation-memory limit. `--mem` prints
//! the planned activation bytes and, on Linux, the resident memory the run
//! added: its peak above what was resident before the run (this includes
//! code pages the first run touches), and the anonymous memory still held
//! after it (activations, kernel scratch, outputs, the kernels' own buffers).

use std::io::Write;

use morsel_runtime::{DType, Dim, Model, Options, TensorRef};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut files = Vec::new();
    let mut budget = None;
    let mut mem = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mem" => mem = true,
            "--budget" => {
                let b = it.next().ok_or("--budget needs a number of bytes")?;
                budget = Some(
                    b.parse::<usize>()
                        .map_err(|e| format!("--budget {b}: {e}"))?,
                );
            }
            _ => files.push(a),
        }
    }
    let [model_path, input_path] = files[..] else {
        return Err("usage: minimal MODEL.morsel INPUT.f32 [--budget BYTES] [--mem]".into());
    };
    let bytes = std::fs::read(model_path).map_err(|e| format!("{model_path}: {e}"))?;
    let model = Model::from_bytes(&bytes).map_err(|e| e.to_string())?;
    drop(bytes);
    let raw = std::fs::read(input_path).map_err(|e| format!("{input_path}: {e}"))?;
    if raw.len() % 4 != 0 {
        return Err(format!(
            "{input_path}: {} bytes is not a whole number of f32s",
            raw.len()
        ));
    }
    let x: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();

    let g = model.graph();
    let [input] = g.inputs[..] else {
        return Err(format!(
            "this example runs models with one input, this one has {}",
            g.inputs.len()
        ));
    };
    let v = &g.values[input];
    if v.dtype != DType::F32 {
        return Err(format!(
            "input '{}' is {}, this example feeds f32",
            v.name, v.dtype
        ));
    }
    let dims = fit_dims(&v.shape, x.len()).ok_or_else(|| {
        format!(
            "{} f32s do not fit input {}",
            x.len(),
            g.describe_value(input)
        )
    })?;

    let mut session = model.session(Options {
        threads: 1,
        memory_limit: budget,
        ..Options::default()
    });
    if mem {
        let plan = session.plan(&[&dims]).map_err(|e| e.to_string())?;
        println!("planned activation bytes: {}", plan.activation_bytes());
    }
    let before = mem.then(rss::reset_peak).flatten();
    let anon_before = rss::field("RssAnon:");
    let t = TensorRef {
        dtype: DType::F32,
        dims: &dims,
        data: morsel_runtime::bytemuck::cast_slice(&x),
    };
    let outputs = session.run(&[(&v.name, t)]).map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut emit = |line: std::fmt::Arguments<'_>| {
        writeln!(out, "{line}").map_err(|e| format!("writing to stdout: {e}"))
    };
    if mem {
        let measured = |a: Option<usize>, b: Option<usize>| match (a, b) {
            (Some(a), Some(b)) => format!("{} bytes", b.saturating_sub(a)),
            _ => "not measurable here".to_string(),
        };
        let peak = measured(before, rss::field("VmHWM:"));
        let anon = measured(anon_before, rss::field("RssAnon:"));
        emit(format_args!("peak RSS added by the run: {peak}"))?;
        emit(format_args!("anonymous RSS added by the run: {anon}"))?;
        emit(format_args!(
            "session holds: {} bytes",
            session.held_bytes()
        ))?;
    }
    for (&o, t) in g.outputs.iter().zip(&outputs) {
        emit(format_args!(
            "output {} {} {:?}",
            g.values[o].name, t.dtype, t.dims
        ))?;
        for value in t.to_f32_vec().map_err(|e| e.to_string())? {
            emit(format_args!("{value:?}"))?;
        }
    }
    out.flush().map_err(|e| format!("writing to stdout: {e}"))?;
    Ok(())
}

/// Concrete dims for `n` elements: known dims as they are, and at most one
/// symbolic dim taking what is left.
fn fit_dims(shape: &[Dim], n: usize) -> Option<Vec<usize>> {
    let known: usize = shape.iter().filter_map(Dim::known).product();
    let free = shape.iter().filter(|d| d.known().is_none()).count();
    let rest = (known > 0 && n.is_multiple_of(known)).then(|| n / known)?;
    match free {
        0 => (rest == 1).then(|| shape.iter().filter_map(Dim::known).collect()),
        1 => Some(shape.iter().map(|d| d.known().unwrap_or(rest)).collect()),
        _ => None,
    }
}

/// Resident memory from `/proc/self/status` (Linux; elsewhere, nothing).
mod rss {
    pub fn field(name: &str) -> Option<usize> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: usize = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }
    /// Reset the peak (VmHWM) to the current RSS and return the current RSS.
    pub fn reset_peak() -> Option<usize> {
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
        field("VmRSS:")
    }
}
