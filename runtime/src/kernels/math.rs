//! Vectorised f32 math over slices: exp, erf, tanh, sigmoid and the two
//! GELUs, plus the exp-and-sum step of softmax.
//!
//! Every function is a branch-free formula per element (clamp, range
//! reduction, polynomial or rational approximation) run over fixed chunks of
//! 16, so LLVM turns each chunk into SIMD code; the tail goes through the
//! same code on a padded chunk, so a value's result never depends on where
//! it sits in the slice. On x86-64 the loops are compiled twice: with AVX2
//! and FMA, chosen at run time, and for the baseline (SSE2). aarch64
//! (NEON, with FMA) vectorises the portable copy, and wasm32 does too when
//! built with simd128.
//!
//! Accuracy against f64, measured by the tests below on 10⁶-point sweeps,
//! on both x86-64 code paths (bound asserted in brackets): exp 8.3e-8
//! relative down to the smallest normal result [1.5e-7], subnormal results
//! within 1 subnormal ulp; erf 1.2e-7 absolute [2.4e-7]; tanh 7.5e-8
//! absolute, 1.4e-7 relative [2.4e-7]; sigmoid 8.9e-8 absolute [1.2e-7];
//! GELU 3.8e-7 absolute on [-10, 10] (under an ulp of 10) and 1.4e-6
//! relative where |y| ≥ 1e-3 [2e-6], 2.9e-6 relative on [-13, -3] [5e-6];
//! GELU-tanh 5.2e-7 absolute, 1.2e-6 relative [2e-6]. ±inf give the limits
//! (GELU(-inf) = -0), NaN propagates, exp overflows to inf and underflows
//! through subnormals to 0. Softmax's exp-and-sum flushes results below
//! about 2^-125.5 to zero instead (no lane ever computes a subnormal, which
//! costs ~2x per vector on x86). `generic` keeps the scalar f64 reference.

// Approximation coefficients are written with all the digits they were fit with.
#![allow(clippy::excessive_precision)]

const CHUNK: usize = 16;

// ---------------------------------------------------------------- multiply-add

/// `a * b + c`: fused where FMA is an instruction, two roundings elsewhere
/// (calling `f32::mul_add` without hardware FMA would be a slow libm call).
trait MulAdd: Copy {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

#[derive(Clone, Copy)]
#[cfg_attr(any(target_arch = "aarch64", target_feature = "fma"), allow(dead_code))]
struct Unfused;

impl MulAdd for Unfused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

#[derive(Clone, Copy)]
#[cfg_attr(
    not(any(
        target_arch = "aarch64",
        target_arch = "x86_64",
        target_feature = "fma"
    )),
    allow(dead_code)
)]
struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// What the portable build can fuse.
#[cfg(any(target_arch = "aarch64", target_feature = "fma"))]
type Native = Fused;
#[cfg(not(any(target_arch = "aarch64", target_feature = "fma")))]
type Native = Unfused;

/// Horner's rule, highest coefficient first.
#[inline(always)]
fn horner<M: MulAdd, const N: usize>(x: f32, c: [f32; N]) -> f32 {
    let mut p = c[0];
    for &k in &c[1..] {
        p = M::mul_add(p, x, k);
    }
    p
}

/// `x` limited to `[lo, hi]`; NaN stays NaN (both comparisons are false).
#[inline(always)]
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    let x = if x < lo { lo } else { x };
    if x > hi { hi } else { x }
}

// ---------------------------------------------------------------- per element

/// e^x: x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite), e^r by the Cephes
/// `expf` polynomial, 2^n built from exponent bits in two halves so that
/// overflow (n = 128) comes out right.
///
/// `TINY` says what happens to results with n ≤ -126 (below about
/// 2^-125.5, x < -87.0): [`EXACT`] to a subnormal ulp; [`FLUSH`] to zero;
/// [`ANY`] some value below 2^-124.5, for callers that add the result to 1
/// (sigmoid, the tanh forms), where that is exact. The last two never
/// multiply into a subnormal: that costs ~2x on the whole vector, and
/// softmax over masked positions would do it all the time.
#[inline(always)]
fn exp1<M: MulAdd, const TINY: u8>(x: f32) -> f32 {
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_375;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // e^89 overflows, e^-104 is below half the smallest subnormal.
    let x = clamp(x, -104.0, 89.0);
    let t = M::mul_add(x, std::f32::consts::LOG2_E, SHIFT);
    let n = t - SHIFT;
    let r = M::mul_add(n, -LN2_HI, x);
    let r = M::mul_add(n, -LN2_LO, r);
    let p = horner::<M, 6>(
        r,
        [
            1.987_569_15e-4,
            1.398_199_950_7e-3,
            8.333_451_907_3e-3,
            4.166_579_589_4e-2,
            1.666_666_545_9e-1,
            5.000_000_120_1e-1,
        ],
    );
    let er = M::mul_add(p, r * r, r) + 1.0;
    // n as an integer, straight from the bits of t (|n| < 2^22).
    let ni = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let nn = ni.max(-125);
    let n1 = nn >> 1;
    let n2 = nn.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) << 23) as u32);
    let s2 = f32::from_bits((n2.wrapping_add(127) << 23) as u32);
    let normal = er * s1 * s2;
    // (n compared as a float below, so that NaN keeps the normal path.)
    match TINY {
        ANY => return normal,
        FLUSH => return if n < -125.0 { 0.0 } else { normal },
        _ => {}
    }
    // n ≤ -126: the result's bit pattern is the integer nearest er·2^(n+149)
    // (subnormals are multiples of 2^-149, and the encoding runs on into the
    // normals linearly), found with integer-valued floats only: below 2^23,
    // adding 2^23 rounds to an integer (ties to even); at or above it, the
    // value already is one.
    const TWO23: f32 = 8_388_608.0;
    let ks = ni.clamp(-150, -126) + 149;
    let v = er * f32::from_bits(((ks + 127) << 23) as u32);
    let bits = if v < TWO23 {
        (v + TWO23).to_bits()
    } else {
        v.to_bits().wrapping_add(1 << 23)
    };
    let sub = f32::from_bits(bits.wrapping_sub(TWO23.to_bits()));
    if n <= -126.0 { sub } else { normal }
}

/// What `exp1` does with results below the normals (see there).
const ANY: u8 = 0;
const FLUSH: u8 = 1;
const EXACT: u8 = 2;

/// Where erf switches from its series-like polynomial to `1 - erfc`.
const ERF_SPLIT: f32 = 0.875;

/// erf(x) for |x| < [`ERF_SPLIT`]: `x·P(x²)`, fit to relative error 9e-9.
#[inline(always)]
fn erf_small<M: MulAdd>(x: f32) -> f32 {
    let p = horner::<M, 6>(
        x * x,
        [
            -6.203_377_852_216_363e-4,
            5.032_207_816_839_218e-3,
            -2.679_148_316_383_361_8e-2,
            1.128_245_592_117_309_6e-1,
            -3.761_255_145_072_937e-1,
            1.128_379_106_521_606_4,
        ],
    );
    x * p
}

/// erfc(a) for a ≥ [`ERF_SPLIT`]: `t·e^(P(t) - a²)` with `t = 1/(1 + a/2)`
/// (the form of Numerical Recipes' `erfcc`, refit on [0.875, 10] to 4e-8).
/// Relative error stays small far into the tail, where `1 - erf` is all
/// rounding: GELU of negative inputs needs that.
#[inline(always)]
fn erfc_tail<M: MulAdd, const TINY: u8>(a: f32) -> f32 {
    let t = 1.0 / M::mul_add(0.5, a, 1.0);
    let p = horner::<M, 8>(
        t,
        [
            -1.752_443_611_621_856_7e-1,
            7.397_788_166_999_817e-1,
            -1.024_448_752_403_259_3,
            3.947_409_093_379_974_4e-1,
            -6.947_347_521_781_921e-2,
            4.035_087_823_867_798e-1,
            9.971_104_860_305_786e-1,
            -1.265_389_561_653_137_2,
        ],
    );
    t * exp1::<M, TINY>(M::mul_add(-a, a, p))
}

/// erf(x). Past |x| ≈ 3.92, `1 - erfc` rounds to exactly 1.
#[inline(always)]
fn erf1<M: MulAdd>(x: f32) -> f32 {
    let a = x.abs();
    let big = (1.0 - erfc_tail::<M, ANY>(a)).copysign(x);
    if a < ERF_SPLIT {
        erf_small::<M>(x)
    } else {
        big
    }
}

/// tanh(x): `x + x³·P(x²)` for |x| < 0.625 (fit to relative error 4e-9),
/// else `1 - 2/(e^{2|x|} + 1)` with the sign of x.
#[inline(always)]
fn tanh1<M: MulAdd>(x: f32) -> f32 {
    let a = x.abs();
    let e = exp1::<M, ANY>(a + a);
    let big = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    let x2 = x * x;
    let p = horner::<M, 5>(
        x2,
        [
            -5.704_991_985_112_429e-3,
            2.063_909_359_276_294_7e-2,
            -5.373_971_909_284_592e-2,
            1.333_144_158_124_923_7e-1,
            -3.333_328_068_256_378e-1,
        ],
    );
    let small = M::mul_add(x * x2, p, x);
    if a < 0.625 { small } else { big }
}

#[inline(always)]
fn sigmoid1<M: MulAdd>(x: f32) -> f32 {
    1.0 / (1.0 + exp1::<M, ANY>(-x))
}

/// `½·x`, with -inf taken as -f32::MAX so that GELU(-inf) is -0 (the
/// limit) rather than -inf·0 = NaN.
#[inline(always)]
fn half(x: f32) -> f32 {
    0.5 * if x < -f32::MAX { -f32::MAX } else { x }
}

/// `x·½·(1 + erf(x/√2))`, the exact GELU, computed as `½x·erfc(-x/√2)`
/// so that negative inputs keep their relative accuracy.
#[inline(always)]
fn gelu1<M: MulAdd, const TINY: u8>(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let tail = erfc_tail::<M, TINY>(a);
    let big = if z < 0.0 { tail } else { 2.0 - tail };
    let small = 1.0 + erf_small::<M>(z);
    half(x) * if a < ERF_SPLIT { small } else { big }
}

/// `x·½·(1 + tanh(u))` with `u = √(2/π)·(x + 0.044715·x³)`, GELU's tanh
/// approximation, computed as `x / (1 + e^(-2u))` (the same function) so
/// that negative inputs do not lose their digits in `1 + tanh(u)`.
#[inline(always)]
fn gelu_tanh1<M: MulAdd>(x: f32) -> f32 {
    const MINUS_2_SQRT_2_OVER_PI: f32 = -1.595_769_121_605_730_7;
    let u2 = MINUS_2_SQRT_2_OVER_PI * M::mul_add(0.044_715 * x * x, x, x);
    (2.0 * half(x)) / (1.0 + exp1::<M, ANY>(u2))
}

/// One per-element function, generic over how multiply-adds are done.
trait Lane {
    /// The function; with `TINY` = [`ANY`] its exp may be off below the
    /// normals, which is only right where `subnormal(x)` is false.
    fn f<M: MulAdd, const TINY: u8>(x: f32) -> f32;
    /// Whether `f(x)` needs an exp result below the smallest normal.
    #[inline(always)]
    fn subnormal(_x: f32) -> bool {
        false
    }
}

macro_rules! lanes {
    ($($ty:ident => $f:ident $(, subnormal below $lo:expr)?;)*) => {$(
        struct $ty;
        impl Lane for $ty {
            #[inline(always)]
            fn f<M: MulAdd, const TINY: u8>(x: f32) -> f32 {
                lanes!(@call $f, M, TINY, x $(, $lo)?)
            }
            $(
                #[inline(always)]
                fn subnormal(x: f32) -> bool {
                    x < $lo
                }
            )?
        }
    )*};
    (@call $f:ident, $m:ident, $s:ident, $x:ident, $lo:expr) => { $f::<$m, $s>($x) };
    (@call $f:ident, $m:ident, $s:ident, $x:ident) => { $f::<$m>($x) };
}

lanes! {
    // n ≥ -125 from here up (x·log2 e ≥ -124.8)
    Exp => exp1, subnormal below EXP_NORMAL_MIN;
    Erf => erf1;
    Tanh => tanh1;
    Sigmoid => sigmoid1;
    // erfc(-x/√2) reaches e^-87 near x = -13.
    Gelu => gelu1, subnormal below GELU_NORMAL_MIN;
    GeluTanh => gelu_tanh1;
}

/// Below this, e^x may be under the smallest normal (and a chunk with such
/// a value is computed again on exp's exact path).
const EXP_NORMAL_MIN: f32 = -86.5;

/// Below this, GELU's erfc tail may need a subnormal exp (and a chunk
/// with such a value is computed again with it).
const GELU_NORMAL_MIN: f32 = -12.5;

// ---------------------------------------------------------------- slice loops

/// One chunk; again with exp's subnormal path if some lane needs it.
#[inline(always)]
fn chunk<L: Lane, M: MulAdd>(x: &[f32; CHUNK], y: &mut [f32; CHUNK]) {
    let mut slow = false;
    for k in 0..CHUNK {
        y[k] = L::f::<M, ANY>(x[k]);
        slow |= L::subnormal(x[k]);
    }
    if slow {
        for k in 0..CHUNK {
            y[k] = L::f::<M, EXACT>(x[k]);
        }
    }
}

#[inline(always)]
fn map_loop<L: Lane, M: MulAdd>(x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    let mut xc = x.chunks_exact(CHUNK);
    let mut yc = y.chunks_exact_mut(CHUNK);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        if let (Ok(xs), Ok(ys)) = (xs.try_into(), ys.try_into()) {
            chunk::<L, M>(xs, ys);
        }
    }
    let (xt, yt) = (xc.remainder(), yc.into_remainder());
    if !xt.is_empty() {
        let mut a = [0f32; CHUNK];
        let mut b = [0f32; CHUNK];
        a[..xt.len()].copy_from_slice(xt);
        chunk::<L, M>(&a, &mut b);
        yt.copy_from_slice(&b[..yt.len()]);
    }
}

#[inline(always)]
fn map_in_place_loop<L: Lane, M: MulAdd>(xs: &mut [f32]) {
    let mut c = xs.chunks_exact_mut(CHUNK);
    for xs in &mut c {
        if let Ok(xs) = <&mut [f32; CHUNK]>::try_from(xs) {
            let a = *xs;
            chunk::<L, M>(&a, xs);
        }
    }
    let t = c.into_remainder();
    if !t.is_empty() {
        let mut a = [0f32; CHUNK];
        let mut b = [0f32; CHUNK];
        a[..t.len()].copy_from_slice(t);
        chunk::<L, M>(&a, &mut b);
        t.copy_from_slice(&b[..t.len()]);
    }
}

/// `y = e^(x - shift)` with results below ~2^-125.5 flushed to zero,
/// returning the sum of `y` (f32 partial sums, one per lane).
#[inline(always)]
fn exp_shift_sum_loop<M: MulAdd>(x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    let mut acc = [0f32; CHUNK];
    let mut xc = x.chunks_exact(CHUNK);
    let mut yc = y.chunks_exact_mut(CHUNK);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        for k in 0..CHUNK {
            let e = exp1::<M, FLUSH>(xs[k] - shift);
            ys[k] = e;
            acc[k] += e;
        }
    }
    let mut tail = 0f32;
    for (o, &v) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *o = exp1::<M, FLUSH>(v - shift);
        tail += *o;
    }
    let mut s = acc;
    let mut w = CHUNK / 2;
    while w > 0 {
        for k in 0..w {
            s[k] += s[k + w];
        }
        w /= 2;
    }
    s[0] + tail
}

// ---------------------------------------------------------------- dispatch

/// A compiled copy of the loops. `Avx2Fma` and `Avx512` are only ever
/// produced by [`best`] (and [`isas`]), after the CPU reported their
/// features: that is what makes calling their `#[target_feature]`
/// functions sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// The AVX2+FMA loops compiled for AVX-512: the 16-lane chunks in one
    /// zmm instead of two ymm. Each lane runs the same fused operations, and
    /// sums reduce in the same tree, so the bits equal `Avx2Fma`'s.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The fastest copy this CPU runs.
#[inline]
fn best() -> Isa {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx2_fma() {
        return if super::cpu::avx512f() {
            Isa::Avx512
        } else {
            Isa::Avx2Fma
        };
    }
    Isa::Portable
}

/// Every copy this CPU runs (tests check each one).
#[cfg(test)]
fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    if best() == Isa::Avx512 {
        v.push(Isa::Avx2Fma);
    }
    if best() != Isa::Portable {
        v.push(best());
    }
    v
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Fused, Lane};

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn map<L: Lane>(x: &[f32], y: &mut [f32]) {
        super::map_loop::<L, Fused>(x, y)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn map_in_place<L: Lane>(xs: &mut [f32]) {
        super::map_in_place_loop::<L, Fused>(xs)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shift_sum(x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
        super::exp_shift_sum_loop::<Fused>(x, shift, y)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Fused, Lane};

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn map<L: Lane>(x: &[f32], y: &mut [f32]) {
        super::map_loop::<L, Fused>(x, y)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn map_in_place<L: Lane>(xs: &mut [f32]) {
        super::map_in_place_loop::<L, Fused>(xs)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn exp_shift_sum(x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
        super::exp_shift_sum_loop::<Fused>(x, shift, y)
    }
}

fn map_with<L: Lane>(isa: Isa, x: &[f32], y: &mut [f32]) {
    match isa {
        Isa::Portable => map_loop::<L, Native>(x, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` exists only when the CPU has AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::map::<L>(x, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` exists only when the CPU has AVX-512 F,
        // AVX2 and FMA.
        Isa::Avx512 => unsafe { avx512::map::<L>(x, y) },
    }
}

fn map_in_place_with<L: Lane>(isa: Isa, xs: &mut [f32]) {
    match isa {
        Isa::Portable => map_in_place_loop::<L, Native>(xs),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` exists only when the CPU has AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::map_in_place::<L>(xs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { avx512::map_in_place::<L>(xs) },
    }
}

fn exp_shift_sum_with(isa: Isa, x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
    match isa {
        Isa::Portable => exp_shift_sum_loop::<Native>(x, shift, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` exists only when the CPU has AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::exp_shift_sum(x, shift, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { avx512::exp_shift_sum(x, shift, y) },
    }
}

// ---------------------------------------------------------------- public API

macro_rules! slice_fns {
    ($($(#[$doc:meta])* $lane:ident: $in_place:ident, $to:ident;)*) => {$(
        $(#[$doc])*
        /// In place.
        pub fn $in_place(xs: &mut [f32]) {
            map_in_place_with::<$lane>(best(), xs)
        }
        $(#[$doc])*
        /// From `x` into `y`, over the length of the shorter.
        pub fn $to(x: &[f32], y: &mut [f32]) {
            map_with::<$lane>(best(), x, y)
        }
    )*};
}

slice_fns! {
    /// e^x.
    Exp: exp, exp_to;
    /// erf(x).
    Erf: erf, erf_to;
    /// tanh(x).
    Tanh: tanh, tanh_to;
    /// 1 / (1 + e^-x).
    Sigmoid: sigmoid, sigmoid_to;
    /// Exact GELU, `x·½·(1 + erf(x/√2))`.
    Gelu: gelu, gelu_to;
    /// GELU's tanh form, `x·½·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh: gelu_tanh, gelu_tanh_to;
}

/// Softmax's middle step: `y = e^(x - shift)` over the length of the
/// shorter slice; returns the sum of `y`. Results below about 2^-125.5
/// (x - shift < -87) are zero: with the row's max as the shift the sum is
/// at least 1, so no probability moves by more than that.
pub fn exp_shift_sum(x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
    exp_shift_sum_with(best(), x, shift, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::generic::erf_f64;

    /// `n` points evenly spread over `[lo, hi]`.
    fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
            .collect()
    }

    /// Max absolute error, and max relative error over results at least
    /// `rel_floor` in magnitude, of lane `L` on every code path.
    fn max_err<L: Lane>(xs: &[f32], want: impl Fn(f64) -> f64, rel_floor: f64) -> (f64, f64) {
        let (mut abs, mut rel) = (0f64, 0f64);
        for isa in isas() {
            let mut ys = vec![0f32; xs.len()];
            map_with::<L>(isa, xs, &mut ys);
            for (&x, &y) in xs.iter().zip(&ys) {
                let w = want(x as f64);
                let e = (y as f64 - w).abs();
                assert!(e.is_finite(), "{isa:?} f({x}) = {y}, want {w}");
                abs = abs.max(e);
                if w.abs() >= rel_floor {
                    rel = rel.max(e / w.abs());
                }
            }
        }
        (abs, rel)
    }

    fn erf_ref(x: f64) -> f64 {
        erf_f64(x)
    }
    fn sigmoid_ref(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }
    fn gelu_ref(x: f64) -> f64 {
        x * 0.5 * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))
    }
    fn gelu_tanh_ref(x: f64) -> f64 {
        let k = (2.0 / std::f64::consts::PI).sqrt();
        x * 0.5 * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
    }

    const N: usize = 1_000_000;

    #[test]
    fn exp_relative_error() {
        // down to the smallest normal result; subnormals checked absolutely
        let (_, rel) = max_err::<Exp>(&sweep(-87.3, 88.72, N), f64::exp, 0.0);
        let (_, rel_small) = max_err::<Exp>(&sweep(-1.0, 1.0, N), f64::exp, 0.0);
        let (abs_sub, _) = max_err::<Exp>(&sweep(-104.0, -87.4, N), f64::exp, 1.0);
        println!("exp: rel {rel:e} (|x| ≤ 1: {rel_small:e}), subnormal abs {abs_sub:e}");
        assert!(
            rel <= 1.5e-7 && rel_small <= 1.5e-7,
            "{rel:e} {rel_small:e}"
        );
        assert!(abs_sub <= 1.5e-45, "{abs_sub:e}");
    }

    #[test]
    fn erf_absolute_error() {
        let (abs, _) = max_err::<Erf>(&sweep(-5.0, 5.0, N), erf_ref, 1.0);
        let (abs_small, rel_small) = max_err::<Erf>(&sweep(-0.1, 0.1, N), erf_ref, 1e-30);
        println!("erf: abs {abs:e}, |x| ≤ 0.1 abs {abs_small:e} rel {rel_small:e}");
        assert!(abs <= 2.4e-7, "{abs:e}");
    }

    #[test]
    fn tanh_error() {
        let (abs, rel) = max_err::<Tanh>(&sweep(-10.0, 10.0, N), f64::tanh, 1e-30);
        let (abs_s, rel_s) = max_err::<Tanh>(&sweep(-1.0, 1.0, N), f64::tanh, 1e-30);
        println!("tanh: abs {abs:e} rel {rel:e}; |x| ≤ 1: abs {abs_s:e} rel {rel_s:e}");
        assert!(abs <= 2.4e-7 && rel <= 2.4e-7, "{abs:e} {rel:e}");
        assert!(abs_s <= 2.4e-7 && rel_s <= 2.4e-7, "{abs_s:e} {rel_s:e}");
    }

    #[test]
    fn sigmoid_error() {
        let (abs, rel) = max_err::<Sigmoid>(&sweep(-87.0, 30.0, N), sigmoid_ref, 1.2e-38);
        println!("sigmoid: abs {abs:e} rel {rel:e}");
        assert!(abs <= 1.2e-7 && rel <= 2.4e-7, "{abs:e} {rel:e}");
    }

    #[test]
    fn gelu_error() {
        for (what, (abs, rel)) in [
            (
                "gelu",
                max_err::<Gelu>(&sweep(-10.0, 10.0, N), gelu_ref, 1e-3),
            ),
            (
                "gelu_tanh",
                max_err::<GeluTanh>(&sweep(-10.0, 10.0, N), gelu_tanh_ref, 1e-3),
            ),
        ] {
            println!("{what}: abs {abs:e}, rel (|y| ≥ 1e-3) {rel:e}");
            assert!(abs <= 6e-7 && rel <= 2e-6, "{what}: {abs:e} {rel:e}");
        }
        // the far negative tail, down to results of 1e-37: relative error
        // grows with x² (rounding of x/√2 and its square), but stays small
        let (_, rel) = max_err::<Gelu>(&sweep(-13.0, -3.0, N), gelu_ref, 1e-37);
        println!("gelu: rel on [-13, -3] {rel:e}");
        assert!(rel <= 5e-6, "{rel:e}");
    }

    /// The AVX-512 copy gives the AVX2+FMA copy's bits, lane by lane and
    /// in exp's sums (the same 16-lane chunks and reduction tree).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_equals_avx2_bit_for_bit() {
        if best() != Isa::Avx512 {
            return;
        }
        let mut xs = sweep(-20.0, 20.0, 100_003);
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            0.0,
            -0.0,
            1e-40,
            -90.0,
        ]);
        fn both<L: Lane>(xs: &[f32]) {
            let (mut a, mut b) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
            map_with::<L>(Isa::Avx2Fma, xs, &mut a);
            map_with::<L>(Isa::Avx512, xs, &mut b);
            assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
        both::<Exp>(&xs);
        both::<Erf>(&xs);
        both::<Tanh>(&xs);
        both::<Sigmoid>(&xs);
        both::<Gelu>(&xs);
        both::<GeluTanh>(&xs);
        let finite = &xs[..100_003];
        let (mut a, mut b) = (vec![0f32; finite.len()], vec![0f32; finite.len()]);
        let sa = exp_shift_sum_with(Isa::Avx2Fma, finite, 20.0, &mut a);
        let sb = exp_shift_sum_with(Isa::Avx512, finite, 20.0, &mut b);
        assert_eq!(sa.to_bits(), sb.to_bits());
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    }

    #[test]
    fn special_values() {
        let inf = f32::INFINITY;
        type Case = (&'static str, fn(&mut [f32]), [f32; 4]);
        let cases: [Case; 6] = [
            // f(+inf), f(-inf), f(+0), f(1e30)
            ("exp", exp, [inf, 0.0, 1.0, inf]),
            ("erf", erf, [1.0, -1.0, 0.0, 1.0]),
            ("tanh", tanh, [1.0, -1.0, 0.0, 1.0]),
            ("sigmoid", sigmoid, [1.0, 0.0, 0.5, 1.0]),
            ("gelu", gelu, [inf, 0.0, 0.0, 1e30]),
            ("gelu_tanh", gelu_tanh, [inf, 0.0, 0.0, 1e30]),
        ];
        for (what, f, want) in cases {
            let mut xs = [inf, -inf, 0.0, 1e30, f32::NAN, -f32::NAN, -1e30];
            f(&mut xs);
            assert_eq!(&xs[..4], &want, "{what}");
            assert!(xs[4].is_nan() && xs[5].is_nan(), "{what}: {xs:?}");
            assert!(xs[6].is_finite(), "{what}(-1e30) = {}", xs[6]);
        }
        // the edges of exp's range
        let mut x = [88.722_83f32, 88.722_84, -87.3, -88.0, -103.972_08, -103.98];
        exp(&mut x);
        assert!(x[0].is_finite() && x[0] > 3.40e38, "{x:?}");
        assert_eq!(x[1], inf);
        assert!(x[2].is_normal() && x[2] < 1.3e-38, "{x:?}");
        assert!(x[3].is_subnormal(), "{x:?}");
        assert_eq!((x[4], x[5]), (f32::from_bits(1), 0.0), "{x:?}");
        let mut x = [-1e30f32, 1e-30, -1e-30, 100.0, -100.0];
        tanh(&mut x);
        assert_eq!(x, [-1.0, 1e-30, -1e-30, 1.0, -1.0]);
    }

    #[test]
    fn every_path_and_length_agree_with_one_element_at_a_time() {
        let xs: Vec<f32> = (0..53).map(|i| (i as f32 - 26.0) * 0.37).collect();
        for isa in isas() {
            for n in 0..xs.len() {
                let x = &xs[..n];
                let one: Vec<f32> = x
                    .iter()
                    .map(|&v| {
                        let mut y = [0f32];
                        map_with::<Gelu>(isa, &[v], &mut y);
                        y[0]
                    })
                    .collect();
                let mut y = vec![f32::NAN; n];
                map_with::<Gelu>(isa, x, &mut y);
                assert_eq!(y, one, "{isa:?} n={n}");
                let mut z = x.to_vec();
                map_in_place_with::<Gelu>(isa, &mut z);
                assert_eq!(z, one, "{isa:?} n={n} in place");
            }
        }
        // the public functions take the best path
        let (mut a, mut b) = (xs.clone(), vec![0f32; xs.len()]);
        exp(&mut a);
        exp_to(&xs, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn exp_shift_sum_matches_exp_and_sum() {
        let xs: Vec<f32> = (0..133)
            .map(|i| ((i * 37) % 101) as f32 * 0.1 - 4.0)
            .collect();
        for isa in isas() {
            for n in [0, 1, 15, 16, 17, 133] {
                let x = &xs[..n];
                let mut y = vec![0f32; n];
                let s = exp_shift_sum_with(isa, x, 2.5, &mut y);
                let want: f64 = x.iter().map(|&v| (v as f64 - 2.5).exp()).sum();
                assert!((s as f64 - want).abs() <= 1e-6 * want, "{isa:?} n={n}");
                for (&v, &e) in x.iter().zip(&y) {
                    let w = ((v - 2.5) as f64).exp();
                    assert!((e as f64 - w).abs() <= 1.5e-7 * w, "{v}");
                }
            }
            // Far below the shift: exact while normal, zero from n = -126
            // (x < -87.0) on; masked attention scores (-3.4e38) give zero.
            let x = [-80.0f32, -86.9, -87.1, -95.0, -104.0, -3.4e38, f32::NAN];
            let mut y = [1f32; 7];
            let s = exp_shift_sum_with(isa, &x, 0.0, &mut y);
            for (&v, &e) in x.iter().zip(&y[..2]) {
                let w = (v as f64).exp();
                assert!(
                    e.is_normal() && (e as f64 - w).abs() <= 1.5e-7 * w,
                    "{isa:?} {v}: {e}"
                );
            }
            assert_eq!(&y[2..6], &[0.0; 4], "{isa:?}");
            assert!(y[6].is_nan() && s.is_nan(), "{isa:?}");
        }
    }
}
