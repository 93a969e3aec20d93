//! int8 GEMM for dynamic and static int8 quantization: `C = A·B` exactly in
//! i32, plus the f32 ↔ i8 helpers around it.
//!
//! Numbers: weights `B` are int8 symmetric per output channel, values in
//! `[-127, 127]` ([`pack_b`] refuses -128); activations `A` are any i8 in
//! `[-128, 127]` (symmetric, or asymmetric shifted to signed with a zero
//! point the epilogue removes through [`PackedB::col_sums`]). Every product
//! pair fits i16 and every sum `Σ a·b` fits i32 for `k ≤` [`MAX_K`] (the
//! VNNI kernel's biased `Σ (a + 128)·b` may wrap on the way; see
//! `x86_64.rs`), so each kernel gives the same bits as the plain triple loop
//! ([`reference_gemm`]) on every CPU: the integer path is deterministic
//! across targets.
//!
//! Use: pack a weight once at load ([`pack_b`] for a `K×N` MatMul weight,
//! [`pack_b_transposed`] for an `N×K` Gemm-transB/Conv weight); per call,
//! quantize the activation rows ([`quantize_rows`]), run [`gemm_i8`], and
//! turn the i32 result into f32 with [`dequant_rows`].
//!
//! Kernels ([`Kernel`]), each a micro-kernel over an `MR×NR` tile of C with
//! the whole K loop in registers, reading A from its rows and B from a
//! packed panel of `NR` columns that stays in L1:
//! - `Generic` (portable, 4×4): the fallback, and armv7's.
//! - `Avx2` (x86-64, 4×16): `vpmaddubsw` with the sign trick (`|a|` as the
//!   unsigned operand, `sign(a)·b` as the signed one), `vpmaddwd` by ones
//!   into i32.
//! - `Avx512Vnni` (x86-64 with AVX-512 F/BW/VNNI, 4×16, the Avx2 layout):
//!   one `vpdpbusd zmm` per row and 4 k on A flipped to unsigned
//!   (`a ^ 0x80`, done by [`gemm_i8`] per block of rows), `128·Σ b` taken
//!   off at the end.
//! - `NeonDot` (aarch64 with FEAT_DotProd, 4×16): `sdot` by lane.
//! - `Neon` (aarch64, 4×4): `smull`/`smlal2` (two products in i16) then
//!   `sadalp` into i32.
//! - `Simd128` (wasm32 built with simd128, 4×4, K in groups of 8): A rows
//!   and B columns sign-extended to i16 as they load, `i32x4.dot_i16x8_s`.
//! - `RelaxedDot` (wasm32 built with relaxed-simd, 4×16, the Avx2 layout):
//!   `i32x4.relaxed_dot_i8x16_i7x16_add_s` on A flipped to unsigned, as
//!   VNNI; only where a probe at first use finds it exact (Chromium on x86
//!   lowers it to `vpdpbusd`).
//!
//! Packed layout (`Kernel::layout`): columns in panels of `nr` (the last one
//! zero-padded), K padded with zeros to a multiple of `kpad`; inside a
//! panel, K in groups of `kg`, and inside a group, column by column, `kg`
//! consecutive k values of that column. With `kg = 4` one 32-bit lane holds
//! the four bytes a dot-product instruction multiplies with one broadcast
//! 32-bit piece of an A row.

use crate::{Error, Result};

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod generic;
#[cfg(test)]
mod tests;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm32;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use generic::reference_gemm;

/// Rows of C per micro-tile, for every kernel.
pub const MR: usize = 4;
/// The widest micro-tile any kernel uses.
const MAX_NR: usize = 16;
/// The longest stretch of K a kernel reads from an A row per step.
const MAX_CH: usize = 16;

/// Largest K for which every i32 sum is exact: `K·128·127 < 2³¹`.
pub const MAX_K: usize = 1 << 17;

/// A GEMM kernel, and with it the packed layout of B it reads. Values other
/// than `Generic` are only ever made by [`Kernel::available`] after the CPU
/// reported the features they need, which is what makes calling their
/// `#[target_feature]` code sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Generic,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 VNNI: the AVX2 layout, one `vpdpbusd` per row and 4 k.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    #[cfg(target_arch = "aarch64")]
    Neon,
    #[cfg(target_arch = "aarch64")]
    NeonDot,
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Simd128,
    /// wasm relaxed SIMD where its dot product is exact u8 × s8 (the
    /// `vpdpbusd` lowering): the Avx2 layout, A flipped as for VNNI.
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    RelaxedDot,
}

/// How a kernel wants B packed, and how it reads A.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Columns per panel (the micro-tile's width).
    pub nr: usize,
    /// Consecutive k values of one column inside a group.
    pub kg: usize,
    /// K is padded to a multiple of this; it is also the chunk of an A row
    /// the kernel reads per step.
    pub kpad: usize,
}

impl Kernel {
    pub(crate) fn layout(self) -> Layout {
        let (nr, kg, kpad) = match self {
            Kernel::Generic => (4, 4, 4),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512Vnni => (16, 4, 4),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => (4, 16, 16),
            #[cfg(target_arch = "aarch64")]
            Kernel::NeonDot => (16, 4, 16),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Simd128 => (4, 8, 8),
            #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
            Kernel::RelaxedDot => (16, 4, 4),
        };
        Layout { nr, kg, kpad }
    }

    /// Every kernel this CPU runs, fastest last. Probed once.
    pub fn available() -> &'static [Kernel] {
        use std::sync::OnceLock;
        static KERNELS: OnceLock<Vec<Kernel>> = OnceLock::new();
        KERNELS.get_or_init(|| {
            #[allow(unused_mut)]
            let mut v = vec![Kernel::Generic];
            #[cfg(target_arch = "x86_64")]
            if super::cpu::avx2() {
                v.push(Kernel::Avx2);
                if super::cpu::avx512_vnni() {
                    v.push(Kernel::Avx512Vnni);
                }
            }
            #[cfg(target_arch = "aarch64")]
            {
                // NEON is part of the aarch64 baseline Rust targets assume.
                v.push(Kernel::Neon);
                if super::cpu::aarch64_dotprod() {
                    v.push(Kernel::NeonDot);
                }
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            v.push(Kernel::Simd128);
            #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
            if wasm32::relaxed_dot_is_exact() {
                v.push(Kernel::RelaxedDot);
            }
            v
        })
    }

    /// Whether the kernel reads A rows as `a ^ 0x80` (unsigned `a + 128`),
    /// which [`gemm_i8`] prepares.
    fn reads_a_flipped(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512Vnni {
            return true;
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
        if self == Kernel::RelaxedDot {
            return true;
        }
        false
    }

    /// The fastest kernel this CPU runs.
    pub fn best() -> Kernel {
        *Kernel::available().last().unwrap_or(&Kernel::Generic)
    }

    /// The `mr × nr` tile at the top-left of `out` (row `r`, column `j` at
    /// `out[r][j]`): `Σ_k a[r][k]·panel[k][j]`.
    fn tile(self, t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
        match self {
            Kernel::Generic => generic::tile_4x4(t, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kernel::Avx2` is only made after AVX2 was detected.
            Kernel::Avx2 => unsafe { x86_64::tile_avx2_4x16(t, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kernel::Avx512Vnni` is only made after AVX2 and
            // AVX-512 F/BW/VNNI were detected.
            Kernel::Avx512Vnni => unsafe { x86_64::tile_vnni_4x16(t, out) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is in the aarch64 baseline.
            Kernel::Neon => unsafe { aarch64::tile_neon_4x4(t, out) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `Kernel::NeonDot` is only made after dotprod was detected.
            Kernel::NeonDot => unsafe { aarch64::tile_sdot_4x16(t, out) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Simd128 => wasm32::tile_simd128_4x4(t, out),
            #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
            Kernel::RelaxedDot => wasm32::tile_relaxed_4x16(t, out),
        }
    }
}

/// What a micro-kernel gets: `mr ≤ MR` rows of A and one packed panel.
pub(crate) struct Tile<'a> {
    /// Rows in use (`1..=MR`); `a[r]` for `r ≥ mr` repeat a valid row.
    pub mr: usize,
    /// `full·kpad` values of each A row (for a kernel that
    /// `reads_a_flipped`, each byte is `a ^ 0x80`).
    pub a: [&'a [i8]; MR],
    /// Whole `kpad`-long chunks readable from `a`.
    pub full: usize,
    /// When K is not a multiple of `kpad`: the last chunk of each row,
    /// zero-padded.
    pub tail: Option<&'a [[i8; MAX_CH]; MR]>,
    /// The panel: `(full + tail) · kpad · nr` bytes.
    pub b: &'a [i8],
    /// Columns of the panel in use (`1..=nr`); a kernel may leave the
    /// outputs past them unwritten or wrong.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub cols: usize,
    /// `Σ_k panel[k][j]` of the panel's columns, zero past `cols` (for a
    /// kernel that reads A as unsigned, `a + 128`, and takes `128·sum` off).
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_feature = "relaxed-simd")),
        allow(dead_code)
    )]
    pub sums: &'a [i32; MAX_NR],
}

impl Tile<'_> {
    /// Chunks of K the kernel runs over, the padded tail included.
    pub fn chunks(&self) -> usize {
        self.full + self.tail.is_some() as usize
    }
    /// Checks what every kernel relies on; kernels call it first.
    pub fn check(&self, l: Layout) {
        assert!((1..=MR).contains(&self.mr) && l.kpad <= MAX_CH);
        assert!(self.a.iter().all(|r| r.len() >= self.full * l.kpad));
        assert!(self.b.len() >= self.chunks() * l.kpad * l.nr);
    }
}

/// 64 bytes aligned to 64: the packed panels start on a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([i8; 64]);
const _: () = assert!(std::mem::size_of::<Line>() == 64);

// SAFETY: `Line` is 64 plain bytes, no padding, any bit pattern valid.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; `Copy` and `'static`.
unsafe impl bytemuck::Pod for Line {}

/// A `K×N` int8 right operand packed for one [`Kernel`] (done once, at
/// model load).
#[derive(Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    kernel: Kernel,
    /// K rounded up to the kernel's `kpad`.
    kp: usize,
    data: Vec<Line>,
    col_sums: Vec<i32>,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl PackedB {
    pub fn k(&self) -> usize {
        self.k
    }
    pub fn n(&self) -> usize {
        self.n
    }
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
    /// `Σ_k B[k][j]` per column: with an activation zero point `z`,
    /// `Σ_k (a-z)·b = C - z·col_sums` (see [`dequant_rows`]).
    pub fn col_sums(&self) -> &[i32] {
        &self.col_sums
    }
    /// Memory held by the packed values.
    pub fn bytes(&self) -> usize {
        self.data.len() * 64 + self.col_sums.len() * 4
    }
    fn bytes_packed(&self) -> &[i8] {
        bytemuck::cast_slice(&self.data)
    }
}

/// Packs `B` (`K×N`, element `(k, j)` at `b[k·row_stride + j]`: the ONNX
/// MatMul weight layout) for the fastest kernel this CPU runs.
///
/// Errors: a value of -128 (weights must be symmetric, `[-127, 127]`), or
/// `k >` [`MAX_K`]. Panics if `b` is too short for the shape.
pub fn pack_b(b: &[i8], k: usize, n: usize, row_stride: usize) -> Result<PackedB> {
    pack_b_for(Kernel::best(), b, k, n, row_stride)
}

/// Packs `Bᵀ` given as `N×K` (element `(k, j)` at `bt[j·row_stride + k]`:
/// Gemm with transB, Conv weights `[N, K]`) for the fastest kernel.
pub fn pack_b_transposed(bt: &[i8], n: usize, k: usize, row_stride: usize) -> Result<PackedB> {
    pack_b_transposed_for(Kernel::best(), bt, n, k, row_stride)
}

/// [`pack_b`] for a given kernel (tests, benches).
///
/// Errors: a kernel this CPU does not run (not in [`Kernel::available`]):
/// [`gemm_i8`] runs the kernel a `PackedB` was packed for, so packing for
/// one the CPU lacks would execute instructions it does not have.
pub fn pack_b_for(
    kernel: Kernel,
    b: &[i8],
    k: usize,
    n: usize,
    row_stride: usize,
) -> Result<PackedB> {
    runs_here(kernel)?;
    check_fits(b.len(), k, n, row_stride, "B");
    pack(kernel, k, n, |kk, j| b[kk * row_stride + j])
}

/// [`pack_b_transposed`] for a given kernel (tests, benches); errors as
/// [`pack_b_for`].
pub fn pack_b_transposed_for(
    kernel: Kernel,
    bt: &[i8],
    n: usize,
    k: usize,
    row_stride: usize,
) -> Result<PackedB> {
    runs_here(kernel)?;
    check_fits(bt.len(), n, k, row_stride, "Bᵀ");
    pack(kernel, k, n, |kk, j| bt[j * row_stride + kk])
}

/// An error unless this CPU runs `kernel`.
fn runs_here(kernel: Kernel) -> Result<()> {
    if Kernel::available().contains(&kernel) {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "int8 kernel {kernel:?}: this CPU does not have its instructions"
        )))
    }
}

/// Panics unless a `rows×cols` row-major view with `stride` fits in `len`.
fn check_fits(len: usize, rows: usize, cols: usize, stride: usize, what: &str) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        stride >= cols,
        "int8: {what} row stride {stride} < {cols} columns"
    );
    let need = (rows - 1)
        .checked_mul(stride)
        .and_then(|x| x.checked_add(cols));
    assert!(
        need.is_some_and(|need| need <= len),
        "int8: {what} of {rows}×{cols} (row stride {stride}) does not fit in {len} values"
    );
}

fn pack(kernel: Kernel, k: usize, n: usize, at: impl Fn(usize, usize) -> i8) -> Result<PackedB> {
    if k > MAX_K {
        return Err(Error::Unsupported(format!(
            "int8 GEMM: K = {k} is over {MAX_K}, where i32 sums could overflow"
        )));
    }
    let Layout { nr, kg, kpad } = kernel.layout();
    let kp = k.div_ceil(kpad) * kpad;
    let panels = n.div_ceil(nr);
    let len = panels * kp * nr;
    let mut data = vec![Line([0; 64]); len.div_ceil(64)];
    let mut col_sums = vec![0i32; n];
    {
        let dst: &mut [i8] = bytemuck::cast_slice_mut(&mut data);
        for p in 0..panels {
            let panel = &mut dst[p * kp * nr..][..kp * nr];
            for jj in 0..nr.min(n - p * nr) {
                let j = p * nr + jj;
                let mut sum = 0i32;
                for kk in 0..k {
                    let v = at(kk, j);
                    if v == i8::MIN {
                        return Err(Error::Format(format!(
                            "int8 weight ({kk}, {j}) is -128; symmetric weights are in [-127, 127]"
                        )));
                    }
                    sum += v as i32;
                    panel[(kk / kg) * kg * nr + jj * kg + kk % kg] = v;
                }
                col_sums[j] = sum;
            }
        }
    }
    Ok(PackedB {
        k,
        n,
        kernel,
        kp,
        data,
        col_sums,
    })
}

/// `C = A·B` exactly: `A` is `m×k` (row `i` at `a[i·a_row_stride..]`), `C`
/// is `m×n` (row `i` at `c[i·c_row_stride..]`, only its first `n` values
/// written). Runs the kernel `b` was packed for, on this thread.
///
/// Panics if `a` or `c` is too short for the shapes.
pub fn gemm_i8(
    m: usize,
    a: &[i8],
    a_row_stride: usize,
    b: &PackedB,
    c: &mut [i32],
    c_row_stride: usize,
) {
    let (k, n) = (b.k, b.n);
    check_fits(a.len(), m, k, a_row_stride, "A");
    check_fits(c.len(), m, n, c_row_stride, "C");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            c[i * c_row_stride..][..n].fill(0);
        }
        return;
    }
    let kernel = b.kernel;
    let Layout { nr, kpad, .. } = kernel.layout();
    let full = k / kpad;
    let rem = k % kpad;
    let panel_len = b.kp * nr;
    let packed = b.bytes_packed();
    let mut tail = [[0i8; MAX_CH]; MR];
    let mut out = [[[0i32; MAX_NR]; MR]; 2];
    // Blocks of `mc` rows of A (at most ~256 KiB: they stay in L2); over
    // each, every panel of B in turn (one panel stays in L1 while the
    // block's rows stream past it).
    let mc = (L2_BLOCK / k).max(MR) / MR * MR;
    // The VNNI kernel reads A as unsigned (`a ^ 0x80`): each block of rows
    // is flipped once into a per-thread copy, so the kernel broadcasts
    // straight from memory (one load, no shuffle-port uop per row and 4 k).
    let flip = kernel.reads_a_flipped();
    FLIPPED.with(|cell| {
        let mut flipped = cell.borrow_mut();
        for ib in (0..m).step_by(mc) {
            let ie = m.min(ib + mc);
            let (a, a_row_stride, base) = if flip {
                let buf = grow_i8(&mut flipped, (ie - ib) * k);
                for (i, d) in buf.chunks_exact_mut(k).enumerate() {
                    let s = &a[(ib + i) * a_row_stride..][..k];
                    for (d, s) in d.iter_mut().zip(s) {
                        *d = *s ^ i8::MIN;
                    }
                }
                (&buf[..], k, ib)
            } else {
                (a, a_row_stride, 0)
            };
            let panels = n.div_ceil(nr);
            // Two full neighbouring panels at a time where the kernel has a
            // two-panel tile (VNNI), else one.
            #[cfg(target_arch = "x86_64")]
            let pairs = kernel == Kernel::Avx512Vnni;
            #[cfg(not(target_arch = "x86_64"))]
            let pairs = false;
            let mut p = 0;
            while p < panels {
                let w = if pairs && p + 1 < panels && (p + 2) * nr <= n {
                    2
                } else {
                    1
                };
                let j0 = p * nr;
                let nc = (w * nr).min(n - j0);
                let mut sums = [[0i32; MAX_NR]; 2];
                for (h, s) in sums.iter_mut().enumerate().take(w) {
                    let (c0, c1) = (j0 + h * nr, (j0 + (h + 1) * nr).min(n));
                    s[..c1 - c0].copy_from_slice(&b.col_sums[c0..c1]);
                }
                for i0 in (ib..ie).step_by(MR) {
                    let mr = MR.min(ie - i0);
                    let rows: [&[i8]; MR] = std::array::from_fn(|r| {
                        let i = i0 + r.min(mr - 1) - base;
                        &a[i * a_row_stride..][..k]
                    });
                    if rem != 0 {
                        for (t, row) in tail.iter_mut().zip(&rows) {
                            t[..rem].copy_from_slice(&row[full * kpad..]);
                        }
                    }
                    let t = |h: usize| Tile {
                        mr,
                        a: rows,
                        full,
                        tail: (rem != 0).then_some(&tail),
                        b: &packed[(p + h) * panel_len..][..panel_len],
                        cols: nr.min(nc - h * nr),
                        sums: &sums[h],
                    };
                    #[cfg(target_arch = "x86_64")]
                    if w == 2 {
                        let [o0, o1] = &mut out;
                        // SAFETY: `pairs`: the kernel is Avx512Vnni, which is
                        // only made after its features were detected; both
                        // tiles share rows, `full` and `tail`.
                        unsafe { x86_64::tile_vnni_4x32(&t(0), &t(1), o0, o1) };
                    }
                    if w == 1 {
                        kernel.tile(&t(0), &mut out[0]);
                    }
                    for (h, out) in out.iter().enumerate().take(w) {
                        let cols = nr.min(nc - h * nr);
                        for (r, o) in out.iter().enumerate().take(mr) {
                            let dst = &mut c[(i0 + r) * c_row_stride + j0 + h * nr..][..cols];
                            // A whole panel row is a fixed-size move
                            // (inlined), not a call to memmove per row.
                            match <&mut [i32; MAX_NR]>::try_from(&mut *dst) {
                                Ok(d) => *d = *o,
                                Err(_) => dst.copy_from_slice(&o[..cols]),
                            }
                        }
                    }
                }
                p += w;
            }
        }
    });
}

std::thread_local! {
    /// [`gemm_i8`]'s flipped copy of a block of A rows (VNNI), kept per
    /// thread so warm runs do not allocate.
    static FLIPPED: std::cell::RefCell<Vec<i8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn grow_i8(v: &mut Vec<i8>, n: usize) -> &mut [i8] {
    if v.len() < n {
        v.resize(n, 0);
    }
    &mut v[..n]
}

/// Bytes of A per row block in [`gemm_i8`].
const L2_BLOCK: usize = 256 * 1024;

// ------------------------------------------------------------ f32 helpers

/// The vector code for the f32 helpers; `Generic` everywhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vector {
    Generic,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2, with the dequant epilogue 16 lanes wide (from the VNNI kernel,
    /// whose CPU has AVX-512 F/BW and AVX2).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Simd128,
}

impl Vector {
    fn of(kernel: Kernel) -> Vector {
        match kernel {
            Kernel::Generic => Vector::Generic,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => Vector::Avx2,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => Vector::Avx512,
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon | Kernel::NeonDot => Vector::Neon,
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Simd128 => Vector::Simd128,
            #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
            Kernel::RelaxedDot => Vector::Simd128,
        }
    }

    fn best() -> Vector {
        Vector::of(Kernel::best())
    }

    #[cfg(test)]
    fn available() -> Vec<Vector> {
        let mut v: Vec<Vector> = Kernel::available().iter().map(|&k| Vector::of(k)).collect();
        v.dedup();
        v
    }

    fn range(self, x: &[f32]) -> (f32, f32, bool) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Vector::Avx2`/`Avx512` come from kernels made only
            // after AVX2 was detected.
            Vector::Avx2 | Vector::Avx512 => unsafe { x86_64::range(x) },
            _ => generic::range(x),
        }
    }

    fn max_abs(self, x: &[f32]) -> f32 {
        match self {
            Vector::Generic => generic::max_abs(x),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Vector::Avx2`/`Avx512` come from kernels made only
            // after AVX2 was detected.
            Vector::Avx2 | Vector::Avx512 => unsafe { x86_64::max_abs(x) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is in the aarch64 baseline.
            Vector::Neon => unsafe { aarch64::max_abs(x) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Vector::Simd128 => wasm32::max_abs(x),
        }
    }

    fn quantize(self, x: &[f32], q: &Quant, out: &mut [i8]) {
        debug_assert_eq!(x.len(), out.len());
        match self {
            Vector::Generic => generic::quantize(x, q, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `max_abs`.
            Vector::Avx2 | Vector::Avx512 => unsafe { x86_64::quantize(x, q, out) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is in the aarch64 baseline.
            Vector::Neon => unsafe { aarch64::quantize(x, q, out) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Vector::Simd128 => wasm32::quantize(x, q, out),
        }
    }

    fn requant(self, c: &[i32], offset: &[i32], mult: &[f32], r: &Requant, out: &mut [i8]) {
        debug_assert!(c.len() == out.len() && offset.len() == out.len() && mult.len() == out.len());
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `max_abs`.
            Vector::Avx2 | Vector::Avx512 => unsafe { x86_64::requant(c, offset, mult, r, out) },
            _ => generic::requant(c, offset, mult, r, out),
        }
    }

    fn dequant(self, c: &[i32], d: &DequantRow<'_>, out: &mut [f32]) {
        debug_assert!(c.len() == out.len() && d.col_scales.len() == out.len());
        match self {
            Vector::Generic => generic::dequant(c, d, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `max_abs`.
            Vector::Avx2 => unsafe { x86_64::dequant(c, d, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Vector::Avx512` comes from `Kernel::Avx512Vnni`, made
            // only after AVX2 and AVX-512 F/BW/VNNI were detected.
            Vector::Avx512 => unsafe { x86_64::dequant512(c, d, out) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is in the aarch64 baseline.
            Vector::Neon => unsafe { aarch64::dequant(c, d, out) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Vector::Simd128 => wasm32::dequant(c, d, out),
        }
    }
}

/// One quantization: `q = clamp(round_half_even(x / scale), lo - zp, hi -
/// zp) + zp`, with NaN going to `lo`. The clamp happens in f32, before the
/// rounding, so every path gives the same bits for every input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quant {
    pub scale: f32,
    pub zero_point: i32,
    /// `lo - zp`, `hi - zp` as f32 (exact small integers).
    pub lo: f32,
    pub hi: f32,
}

impl Quant {
    fn new(scale: f32, zero_point: i8, lo: i8, hi: i8) -> Quant {
        let zp = zero_point as i32;
        Quant {
            scale,
            zero_point: zp,
            lo: (lo as i32 - zp) as f32,
            hi: (hi as i32 - zp) as f32,
        }
    }
}

/// One row of the dequant epilogue.
pub(crate) struct DequantRow<'a> {
    pub row_scale: f32,
    /// The row's activation zero point (0: none).
    pub zero_point: i32,
    pub col_sums: &'a [i32],
    pub col_scales: &'a [f32],
    pub bias: Option<&'a [f32]>,
}

impl<'a> DequantRow<'a> {
    /// The same row from column `j` on.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn tail(&self, j: usize) -> DequantRow<'a> {
        DequantRow {
            row_scale: self.row_scale,
            zero_point: self.zero_point,
            col_sums: if self.zero_point != 0 {
                &self.col_sums[j..]
            } else {
                self.col_sums
            },
            col_scales: &self.col_scales[j..],
            bias: self.bias.map(|b| &b[j..]),
        }
    }
}

/// `max |x|`, NaN ignored (0 for an empty slice).
pub fn max_abs(x: &[f32]) -> f32 {
    Vector::best().max_abs(x)
}

/// `(min(0, x), max(0, x), whether x holds a NaN)`, NaN left out of the min
/// and max: the range of a row that asymmetric quantization maps to
/// [-128, 127] (0 is always in it, so it is exact).
pub fn range(x: &[f32]) -> (f32, f32, bool) {
    Vector::best().range(x)
}

/// Symmetric quantization of one row (or, given a whole tensor, per
/// tensor): `scale = max|x| / 127`, `out = round_half_even(x / scale)` in
/// `[-127, 127]`. Returns the scale; an all-zero row gives scale 0 and zeros.
/// Panics if the lengths differ.
pub fn quantize_row_f32_to_i8(x: &[f32], out: &mut [i8]) -> f32 {
    quantize_row_with(Vector::best(), x, out)
}

/// Per-tensor symmetric quantization: [`quantize_row_f32_to_i8`] over the
/// whole tensor.
pub fn quantize_tensor_f32_to_i8(x: &[f32], out: &mut [i8]) -> f32 {
    quantize_row_with(Vector::best(), x, out)
}

fn quantize_row_with(v: Vector, x: &[f32], out: &mut [i8]) -> f32 {
    assert_eq!(
        x.len(),
        out.len(),
        "int8 quantize: {} values into {}",
        x.len(),
        out.len()
    );
    let scale = v.max_abs(x) / 127.0;
    if scale == 0.0 {
        out.fill(0);
        return 0.0;
    }
    v.quantize(x, &Quant::new(scale, 0, -127, 127), out);
    scale
}

/// Per-row symmetric quantization of an `m×k` matrix (dynamic quantization
/// of activations): row `i` of `x` (at `x[i·x_row_stride..]`) goes to
/// `out[i·out_row_stride..]`, its scale to `scales[i]`.
pub fn quantize_rows(
    m: usize,
    k: usize,
    x: &[f32],
    x_row_stride: usize,
    out: &mut [i8],
    out_row_stride: usize,
    scales: &mut [f32],
) {
    check_fits(x.len(), m, k, x_row_stride, "x");
    check_fits(out.len(), m, k, out_row_stride, "out");
    assert!(
        scales.len() >= m,
        "int8 quantize: {} scales for {m} rows",
        scales.len()
    );
    let v = Vector::best();
    for (i, s) in scales.iter_mut().enumerate().take(m) {
        *s = quantize_row_with(
            v,
            &x[i * x_row_stride..][..k],
            &mut out[i * out_row_stride..][..k],
        );
    }
}

/// Static quantization with a given scale and zero point (ONNX
/// QuantizeLinear to int8): `out = saturate(round_half_even(x / scale) +
/// zero_point)` in `[-128, 127]`; NaN gives -128. Panics if the lengths differ.
pub fn quantize_f32_to_i8(x: &[f32], scale: f32, zero_point: i8, out: &mut [i8]) {
    assert_eq!(
        x.len(),
        out.len(),
        "int8 quantize: {} values into {}",
        x.len(),
        out.len()
    );
    Vector::best().quantize(x, &Quant::new(scale, zero_point, -128, 127), out);
}

/// Activation zero points for [`dequant_rows`].
#[derive(Clone, Copy, Debug)]
pub enum ZeroPoints<'a> {
    /// Symmetric activations.
    None,
    /// One for the whole of A.
    Tensor(i32),
    /// One per row of A.
    Rows(&'a [i32]),
}

/// The dequant epilogue: for each row `i < m` and column `j < n`,
///
/// `out[i][j] = ((C[i][j] - zp_i·col_sums[j]) as f32) · (row_scales[i] ·
/// col_scales[j]) + bias[j]`
///
/// in exactly this order (no fused multiply-add; the i32 subtraction wraps,
/// which it cannot for real GEMM results), so every path gives the same
/// bits. `row_scales` has one value per row, or one for all; `col_sums` is
/// [`PackedB::col_sums`] (read only with zero points). Panics if a slice is
/// too short.
pub fn dequant_rows(
    m: usize,
    n: usize,
    c: &[i32],
    c_row_stride: usize,
    row_scales: &[f32],
    col_scales: &[f32],
    zero_points: ZeroPoints<'_>,
    col_sums: &[i32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_row_stride: usize,
) {
    dequant_rows_with(
        Vector::best(),
        m,
        n,
        c,
        c_row_stride,
        row_scales,
        col_scales,
        zero_points,
        col_sums,
        bias,
        out,
        out_row_stride,
    )
}

fn dequant_rows_with(
    v: Vector,
    m: usize,
    n: usize,
    c: &[i32],
    c_row_stride: usize,
    row_scales: &[f32],
    col_scales: &[f32],
    zero_points: ZeroPoints<'_>,
    col_sums: &[i32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_row_stride: usize,
) {
    check_fits(c.len(), m, n, c_row_stride, "C");
    check_fits(out.len(), m, n, out_row_stride, "out");
    assert!(
        row_scales.len() == 1 || row_scales.len() >= m,
        "int8 dequant: {} row scales for {m} rows",
        row_scales.len()
    );
    assert!(
        col_scales.len() >= n,
        "int8 dequant: {} column scales for {n}",
        col_scales.len()
    );
    assert!(
        bias.is_none_or(|b| b.len() >= n),
        "int8 dequant: bias shorter than {n}"
    );
    let zp = |i: usize| match zero_points {
        ZeroPoints::None => 0,
        ZeroPoints::Tensor(z) => z,
        ZeroPoints::Rows(z) => z[i],
    };
    match zero_points {
        ZeroPoints::None => {}
        ZeroPoints::Tensor(_) => assert!(
            col_sums.len() >= n,
            "int8 dequant: col_sums shorter than {n}"
        ),
        ZeroPoints::Rows(z) => assert!(
            z.len() >= m && col_sums.len() >= n,
            "int8 dequant: zero points or col_sums too short"
        ),
    }
    let col_sums = if matches!(zero_points, ZeroPoints::None) {
        &[][..]
    } else {
        &col_sums[..n]
    };
    for i in 0..m {
        let d = DequantRow {
            row_scale: row_scales[if row_scales.len() == 1 { 0 } else { i }],
            zero_point: zp(i),
            col_sums,
            col_scales: &col_scales[..n],
            bias: bias.map(|b| &b[..n]),
        };
        v.dequant(
            &c[i * c_row_stride..][..n],
            &d,
            &mut out[i * out_row_stride..][..n],
        );
    }
}

/// The static-quantization epilogue (ONNX `QLinearConv`/`QLinearMatMul`):
/// for each row `i < m` and column `j < n`,
///
/// `out[i][j] = saturate(round_half_even(((C[i][j] − zp·col_sums[j] +
/// bias[j]) as f32) · mult[j]) + out_zp)` in `[-128, 127]`,
///
/// in exactly this order (the i32 arithmetic wraps, which it cannot for
/// real GEMM results), so every target gives the same bits. `mult[j]` is
/// `x_scale·w_scale[j] / y_scale`, one per column; `col_sums` is
/// [`PackedB::col_sums`] (read only when `zp != 0`). Panics if a slice is
/// too short; `mult` must be finite.
pub fn requant_rows(
    m: usize,
    n: usize,
    c: &[i32],
    c_row_stride: usize,
    zp: i32,
    col_sums: &[i32],
    bias: Option<&[i32]>,
    mult: &[f32],
    out_zp: i8,
    out: &mut [i8],
    out_row_stride: usize,
) {
    requant_rows_with(
        Vector::best(),
        m,
        n,
        c,
        c_row_stride,
        zp,
        col_sums,
        bias,
        mult,
        out_zp,
        out,
        out_row_stride,
    )
}

fn requant_rows_with(
    v: Vector,
    m: usize,
    n: usize,
    c: &[i32],
    c_row_stride: usize,
    zp: i32,
    col_sums: &[i32],
    bias: Option<&[i32]>,
    mult: &[f32],
    out_zp: i8,
    out: &mut [i8],
    out_row_stride: usize,
) {
    check_fits(c.len(), m, n, c_row_stride, "C");
    check_fits(out.len(), m, n, out_row_stride, "out");
    assert!(
        mult.len() >= n && (zp == 0 || col_sums.len() >= n) && bias.is_none_or(|b| b.len() >= n),
        "int8 requant: multipliers, col_sums or bias shorter than {n}"
    );
    // Per column, what the zero point and bias add: `bias − zp·Σ_k W`.
    let mut offset = [0i32; 64];
    let r = Requant {
        lo: (-128 - out_zp as i32) as f32,
        hi: (127 - out_zp as i32) as f32,
        zero_point: out_zp,
    };
    for j0 in (0..n).step_by(offset.len()) {
        let w = offset.len().min(n - j0);
        for (j, o) in offset[..w].iter_mut().enumerate() {
            let zs = if zp != 0 {
                zp.wrapping_mul(col_sums[j0 + j])
            } else {
                0
            };
            *o = bias.map_or(0, |b| b[j0 + j]).wrapping_sub(zs);
        }
        let mult = &mult[j0..j0 + w];
        for i in 0..m {
            let src = &c[i * c_row_stride + j0..][..w];
            let dst = &mut out[i * out_row_stride + j0..][..w];
            v.requant(src, &offset[..w], mult, &r, dst);
        }
    }
}

/// The output side of [`requant_rows`]: `lo`/`hi` are `-128 − zp` and
/// `127 − zp` (exact small integers in f32).
pub(crate) struct Requant {
    pub lo: f32,
    pub hi: f32,
    pub zero_point: i8,
}
