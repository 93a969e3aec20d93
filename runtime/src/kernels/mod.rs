//! Hot loops. `generic` has portable code for every kernel; per-architecture
//! files add faster versions picked at run time by CPU feature detection
//! (at build time for wasm simd128). Every fast kernel is tested against its
//! generic twin.
//!
//! f32 matrix multiply comes from the `gemm` crate (AVX-512 kernels enabled
//! through its `x86-v4` feature on x86-64): measured faster than anything we
//! would write, and it packs operands itself.

pub mod generic;
pub mod int8;
pub mod math;
pub mod sgemm;

/// A strided view of a row-major-ish matrix: element (r, c) is at
/// `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A contiguous row-major matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose, without moving data.
    pub fn t(self) -> Mat<'a> {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1)
                .checked_mul(self.rs)
                .and_then(|a| {
                    (self.cols - 1)
                        .checked_mul(self.cs)
                        .and_then(|b| a.checked_add(b))
                })
                .is_some_and(|last| last < self.data.len())
    }
}

/// `c = beta_c * c + a · b` for row-major `c` [a.rows × b.cols].
/// With `beta_c == 0`, `c` is overwritten (its old contents are not read).
pub fn matmul(a: Mat<'_>, b: Mat<'_>, c: &mut [f32], beta_c: f32, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k, "matmul: inner dims {k} and {} differ", b.rows); // ok: callers check shapes first
    assert!(
        a.fits() && b.fits() && c.len() >= m * n,
        "matmul: operand out of bounds"
    ); // ok: callers size buffers from shapes
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta_c == 0.0 {
            c[..m * n].fill(0.0);
        } else {
            c[..m * n].iter_mut().for_each(|x| *x *= beta_c);
        }
        return;
    }
    let par = parallelism(threads, m * n * k);
    // SAFETY: the asserts above check that every element the strides reach
    // lies inside `a.data`, `b.data` and `c` (m×n row-major); `c` is a unique
    // borrow, so no aliasing with the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta_c != 0.0,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            beta_c,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(feature = "threads")]
fn parallelism(threads: usize, work: usize) -> gemm::Parallelism {
    // Below ~64k multiply-adds, waking threads costs more than it saves.
    if threads > 1 && work >= 1 << 16 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

#[cfg(not(feature = "threads"))]
fn parallelism(_threads: usize, _work: usize) -> gemm::Parallelism {
    gemm::Parallelism::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
        let mut c = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0f64;
                for p in 0..a.cols {
                    s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                }
                c[i * b.cols + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn gemm_matches_naive_on_odd_shapes_and_transposes() {
        let mut seed = 1u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 9),
            (64, 31, 65),
            (1, 384, 1536),
        ] {
            let av: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let bv: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
            let a = Mat::rows(&av, m, k);
            for b in [Mat::rows(&bv, k, n), Mat::rows(&bv, n, k).t()] {
                let want = naive(a, b);
                let mut c = vec![f32::NAN; m * n];
                matmul(a, b, &mut c, 0.0, 2);
                for (x, y) in c.iter().zip(&want) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                        "{m}x{k}x{n}: {x} vs {y}"
                    );
                }
            }
        }
    }
}
