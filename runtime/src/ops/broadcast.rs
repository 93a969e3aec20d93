//! Numpy-style broadcasting: the output shape of n inputs, and strides that
//! let a kernel walk each input as if it had the output's shape.

use crate::tensor::{Dim, Shape, dims_str};
use crate::{Error, Result};

/// The broadcast of symbolic shapes. A symbol against 1 stays the symbol;
/// two different symbols give an unknown dim.
pub fn broadcast_shapes(shapes: &[&Shape]) -> Result<Shape> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut d = Dim::Known(1);
        for s in shapes {
            let off = rank - s.len();
            if i < off {
                continue;
            }
            let e = &s[i - off];
            d = match (&d, e) {
                (Dim::Known(1), x) => x.clone(),
                (x, Dim::Known(1)) => x.clone(),
                (Dim::Known(a), Dim::Known(b)) if a == b => d.clone(),
                (Dim::Known(a), Dim::Known(b)) => {
                    let all: Vec<String> =
                        shapes.iter().map(|s| crate::tensor::shape_str(s)).collect();
                    return Err(Error::Graph(format!(
                        "shapes {} cannot broadcast (dim {i}: {a} vs {b})",
                        all.join(" and ")
                    )));
                }
                (Dim::Sym(a), Dim::Sym(b)) if a == b => d.clone(),
                (Dim::Known(_), Dim::Sym(_)) => d.clone(),
                (Dim::Sym(_), Dim::Known(_)) => e.clone(),
                _ => Dim::unknown(),
            };
        }
        out.push(d);
    }
    Ok(out)
}

/// Concrete broadcast of dims.
/// Dims up to rank 8 live inline: kernels call this per run, allocation-free.
pub type Dims = smallvec::SmallVec<[usize; 8]>;

pub fn broadcast_dims(shapes: &[&[usize]]) -> Result<Dims> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out: Dims = smallvec::smallvec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                let all: Vec<String> = shapes.iter().map(|s| dims_str(s)).collect();
                return Err(Error::Graph(format!(
                    "shapes {} cannot broadcast",
                    all.join(" and ")
                )));
            }
        }
    }
    Ok(out)
}

/// Element strides of `dims` seen through the broadcast `out` shape
/// (0 where the input is broadcast).
pub fn broadcast_strides(dims: &[usize], out: &[usize]) -> Dims {
    let off = out.len() - dims.len();
    let mut strides: Dims = smallvec::smallvec![0usize; out.len()];
    let mut acc = 1usize;
    for i in (0..dims.len()).rev() {
        strides[off + i] = if dims[i] == 1 { 0 } else { acc };
        acc *= dims[i];
    }
    strides
}

/// Call `f(out_index, [in offsets])` over the output in row-major order,
/// innermost dim as a run: `f(out_start, offsets, inner_strides, len)`.
/// The kernels below use it to process contiguous runs with tight loops.
pub fn for_each_run<const N: usize>(
    out: &[usize],
    strides: [&[usize]; N],
    mut f: impl FnMut(usize, [usize; N], [usize; N], usize),
) {
    let rank = out.len();
    let total: usize = out.iter().product();
    if total == 0 {
        return;
    }
    if rank == 0 {
        f(0, [0; N], [0; N], 1);
        return;
    }
    let inner = out[rank - 1];
    let inner_strides: [usize; N] = std::array::from_fn(|k| strides[k][rank - 1]);
    let mut idx: smallvec::SmallVec<[usize; 8]> = smallvec::smallvec![0usize; rank];
    let mut offs = [0usize; N];
    let mut start = 0;
    while start < total {
        f(start, offs, inner_strides, inner);
        start += inner;
        // advance the outer index
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            for k in 0..N {
                offs[k] += strides[k][d];
            }
            if idx[d] < out[d] {
                break;
            }
            for k in 0..N {
                offs[k] -= strides[k][d] * out[d];
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_walk_matches_index_arithmetic() {
        let a = [3usize, 1, 4];
        let b = [2usize, 1];
        let out = broadcast_dims(&[&a, &b]).unwrap();
        assert_eq!(&out[..], &[3, 2, 4]);
        let sa = broadcast_strides(&a, &out);
        let sb = broadcast_strides(&b, &out);
        let mut seen = vec![];
        for_each_run(&out, [&sa, &sb], |o, offs, inner, len| {
            for j in 0..len {
                seen.push((o + j, offs[0] + j * inner[0], offs[1] + j * inner[1]));
            }
        });
        assert_eq!(seen.len(), 24);
        for (o, ia, ib) in seen {
            let (i, j, k) = (o / 8, (o / 4) % 2, o % 4);
            assert_eq!(ia, i * 4 + k);
            assert_eq!(ib, j);
        }
    }

    #[test]
    fn symbolic_batch_survives_broadcast() {
        let n = Dim::Sym("N".into());
        let a = vec![n.clone(), Dim::Known(10)];
        let b = vec![Dim::Known(10)];
        assert_eq!(
            broadcast_shapes(&[&a, &b]).unwrap(),
            vec![n, Dim::Known(10)]
        );
    }
}
