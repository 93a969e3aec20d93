//! Hot loops. `generic` has portable code for every kernel; per-architecture
//! files add faster versions picked at run time by CPU feature detection
//! (at build time for wasm simd128). Every fast kernel is tested against its
//! generic twin.
//!
//! f32 matrix multiply is [`sgemm`]: packed panels, bias and activation
//! fused into the tile loop, weights packed once per model.

pub mod cpu;
pub mod generic;
pub mod int8;
pub mod math;
pub mod sgemm;
pub mod sparse;
pub mod transpose;

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
/// Runs on [`sgemm`] with both operands read from their views (B packed
/// block by block into a per-thread scratch buffer that is reused).
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
    let bias = if beta_c == 0.0 {
        sgemm::Bias::None
    } else {
        if beta_c != 1.0 {
            c[..m * n].iter_mut().for_each(|x| *x *= beta_c);
        }
        sgemm::Bias::Acc
    };
    with_scratch(|scratch| {
        let r = sgemm::matmul(
            sgemm::Lhs::View(a),
            sgemm::Rhs::View(b),
            c,
            n,
            bias,
            None,
            threads,
            scratch,
        );
        assert!(r.is_ok(), "matmul: {r:?}"); // ok: shapes and bounds checked above
    })
}

/// Run `f` with this thread's reusable packing scratch (grown once, then
/// reused: warm runs do not allocate). Its size is counted in
/// [`scratch_held_bytes`].
pub fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static SCRATCH: RefCell<Counted<f32>> = const { RefCell::new(Counted(Vec::new())) };
    }
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut v) => v.with(f),
        // Re-entered (cannot happen today): use a fresh buffer.
        Err(_) => Counted(Vec::new()).with(f),
    })
}

/// Bytes held by the kernels' per-thread scratch buffers, summed over all
/// threads that are alive ([`with_scratch`]'s packing buffer and QMatMul's
/// quantized rows). They are grown to the largest need seen and kept, so
/// after a run this is the scratch that run needed on top of its planned
/// activations. Process-wide: shared by all sessions on those threads.
pub fn scratch_held_bytes() -> usize {
    SCRATCH_HELD.load(std::sync::atomic::Ordering::Relaxed)
}

static SCRATCH_HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A scratch vector whose capacity is counted in [`scratch_held_bytes`]
/// (added when it grows, removed when its thread ends).
pub struct Counted<T>(pub Vec<T>);

impl<T> Counted<T> {
    fn bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<T>()
    }
    /// Run `f` on the vector, counting any growth.
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
        let before = self.bytes();
        let r = f(&mut self.0);
        note_scratch(before, self.bytes());
        r
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        note_scratch(self.bytes(), 0);
    }
}

/// Record that a scratch buffer went from `before` to `after` bytes.
pub fn note_scratch(before: usize, after: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    if after > before {
        SCRATCH_HELD.fetch_add(after - before, Relaxed);
    } else if before > after {
        SCRATCH_HELD.fetch_sub(before - after, Relaxed);
    }
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
