//! numpy `.npy` / `.npz` in and out, as runtime tensors.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use morsel_runtime::DType;
use morsel_runtime::tensor::Tensor;
use npyz::{NpyFile, Order, WriterBuilder};

/// A tensor read from numpy, plus a note when it had to be converted.
pub struct Loaded {
    pub tensor: Tensor,
    /// numpy's dtype string as stored, e.g. `<f8`.
    pub stored: String,
}

fn from_npy<R: Read>(npy: NpyFile<R>, what: &str) -> Result<Loaded> {
    if npy.order() == Order::Fortran {
        bail!("{what}: Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");
    }
    let dims: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let stored = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => bail!("{what}: structured dtype {other:?} is not supported"),
    };
    let t = match stored.as_str() {
        "<f4" => Tensor::from_slice(&dims, &npy.into_vec::<f32>()?)?,
        // numpy's default float is f64; models take f32. Convert, and say so.
        "<f8" => Tensor::from_slice(
            &dims,
            &npy.into_vec::<f64>()?
                .into_iter()
                .map(|v| v as f32)
                .collect::<Vec<_>>(),
        )?,
        "<f2" => {
            let bits: Vec<u16> = npy.into_vec::<u16>()?;
            Tensor::from_slice(
                &dims,
                &bits
                    .into_iter()
                    .map(half::f16::from_bits)
                    .collect::<Vec<_>>(),
            )?
        }
        "<i8" => Tensor::from_slice(&dims, &npy.into_vec::<i64>()?)?,
        "<i4" => Tensor::from_slice(&dims, &npy.into_vec::<i32>()?)?,
        "|i1" => Tensor::from_slice(&dims, &npy.into_vec::<i8>()?)?,
        "|u1" => Tensor::from_slice(&dims, &npy.into_vec::<u8>()?)?,
        "|b1" => Tensor::from_bool(&dims, &npy.into_vec::<bool>()?)?,
        other => bail!(
            "{what}: numpy dtype {other} is not supported (use float32, int64, int32, int8, uint8 or bool)"
        ),
    };
    Ok(Loaded { tensor: t, stored })
}

pub fn read_npy(path: &Path) -> Result<Loaded> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = NpyFile::new(std::io::BufReader::new(f))
        .with_context(|| format!("{} is not a .npy file", path.display()))?;
    from_npy(npy, &path.display().to_string())
}

/// Every array of an `.npz`, by name, in the archive's order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Loaded)>> {
    let mut z = npyz::npz::NpzArchive::open(path)
        .with_context(|| format!("{} is not a .npz archive", path.display()))?;
    let names: Vec<String> = z.array_names().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    for n in names {
        let npy = z
            .by_name(&n)?
            .with_context(|| format!("{}: array '{n}' vanished", path.display()))?;
        out.push((
            n.clone(),
            from_npy(npy, &format!("{}:{n}", path.display()))?,
        ));
    }
    Ok(out)
}

/// Serialise a tensor as `.npy` bytes.
pub fn npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let shape: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
    macro_rules! write_as {
        ($ty:ty, $vals:expr) => {{
            let mut w = npyz::WriteOptions::<$ty>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut buf)
                .begin_nd()?;
            w.extend($vals)?;
            w.finish()?;
        }};
    }
    match t.dtype {
        DType::F32 => write_as!(f32, t.as_slice::<f32>()?.iter().copied()),
        DType::I64 => write_as!(i64, t.as_slice::<i64>()?.iter().copied()),
        DType::I32 => write_as!(i32, t.as_slice::<i32>()?.iter().copied()),
        DType::I8 => write_as!(i8, t.as_slice::<i8>()?.iter().copied()),
        DType::U8 => write_as!(u8, t.as_slice::<u8>()?.iter().copied()),
        DType::Bool => write_as!(bool, t.data.as_bytes().iter().map(|&b| b != 0)),
        DType::F16 | DType::BF16 => write_as!(f32, t.to_f32_vec()?.into_iter()),
    }
    Ok(buf)
}

/// Write a tensor as `.npy`, atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let bytes = npy_bytes(t)?;
    morsel_runtime::format::writer::write_atomic(path, &bytes)?;
    Ok(())
}
