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

use std::ops::{Add, Div, Mul, Neg, Sub};

const CHUNK: usize = 16;

// ---------------------------------------------------------------- numbers

/// What the formulas compute on: one `f32` (the loops over chunks of 16
/// are vectorised by LLVM), or, in the wasm relaxed-SIMD build, four in a
/// `v128` (LLVM never emits a relaxed multiply-add on its own, so those
/// loops are written on vectors).
trait Real:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// f32 lanes in one value.
    const LANES: usize;
    /// The lanes' bits as i32s.
    type Bits: Bits;
    fn splat(v: f32) -> Self;
    /// Lanes `k·LANES..(k + 1)·LANES` of a chunk.
    fn load(x: &[f32; CHUNK], k: usize) -> Self;
    fn store(self, y: &mut [f32; CHUNK], k: usize);
    /// The first lane.
    fn first(self) -> f32;
    fn abs(self) -> Self;
    /// `self` with the sign bit of `sign`.
    fn copysign(self, sign: Self) -> Self;
    /// Per lane, `if a < b { x } else { y }` (NaN compares false).
    fn if_lt(a: Self, b: Self, x: Self, y: Self) -> Self;
    /// Per lane, `if a <= b { x } else { y }` (NaN compares false).
    fn if_le(a: Self, b: Self, x: Self, y: Self) -> Self;
    fn to_bits(self) -> Self::Bits;
    fn from_bits(b: Self::Bits) -> Self;
}

/// i32 lanes, with wrapping arithmetic.
trait Bits: Copy {
    fn splat(v: i32) -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    /// Arithmetic shift right by one.
    fn shr1(self) -> Self;
    /// The bits of 2^self, for self in the normal exponent range:
    /// `(self + 127) << 23`.
    fn pow2(self) -> Self;
}

impl Real for f32 {
    const LANES: usize = 1;
    type Bits = i32;
    #[inline(always)]
    fn splat(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn load(x: &[f32; CHUNK], k: usize) -> f32 {
        x[k]
    }
    #[inline(always)]
    fn store(self, y: &mut [f32; CHUNK], k: usize) {
        y[k] = self;
    }
    #[inline(always)]
    fn first(self) -> f32 {
        self
    }
    #[inline(always)]
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    #[inline(always)]
    fn copysign(self, sign: f32) -> f32 {
        f32::copysign(self, sign)
    }
    #[inline(always)]
    fn if_lt(a: f32, b: f32, x: f32, y: f32) -> f32 {
        if a < b { x } else { y }
    }
    #[inline(always)]
    fn if_le(a: f32, b: f32, x: f32, y: f32) -> f32 {
        if a <= b { x } else { y }
    }
    #[inline(always)]
    fn to_bits(self) -> i32 {
        f32::to_bits(self) as i32
    }
    #[inline(always)]
    fn from_bits(b: i32) -> f32 {
        f32::from_bits(b as u32)
    }
}

impl Bits for i32 {
    #[inline(always)]
    fn splat(v: i32) -> i32 {
        v
    }
    #[inline(always)]
    fn add(self, o: i32) -> i32 {
        self.wrapping_add(o)
    }
    #[inline(always)]
    fn sub(self, o: i32) -> i32 {
        self.wrapping_sub(o)
    }
    #[inline(always)]
    fn max(self, o: i32) -> i32 {
        Ord::max(self, o)
    }
    #[inline(always)]
    fn min(self, o: i32) -> i32 {
        Ord::min(self, o)
    }
    #[inline(always)]
    fn shr1(self) -> i32 {
        self >> 1
    }
    #[inline(always)]
    fn pow2(self) -> i32 {
        self.wrapping_add(127) << 23
    }
}

// ---------------------------------------------------------------- multiply-add

/// `a * b + c`: fused where FMA is an instruction, two roundings elsewhere
/// (calling `f32::mul_add` without hardware FMA would be a slow libm call).
trait MulAdd<V>: Copy {
    fn mul_add(a: V, b: V, c: V) -> V;
}

#[derive(Clone, Copy)]
struct Unfused;

impl MulAdd<f32> for Unfused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Fused (one rounding) on every target: an instruction with FMA, a libm
/// call without (only [`scalar_twin`] runs it there).
#[derive(Clone, Copy)]
struct Fused;

impl MulAdd<f32> for Fused {
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

/// Four lanes in a `v128`, and relaxed multiply-adds: the wasm
/// relaxed-SIMD build's copy of the loops, used where the engine fuses
/// `f32x4.relaxed_madd` (Chromium on x86 with FMA, on ARM always), so that
/// it computes what native FMA code does.
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
mod v4 {
    use super::{Bits, CHUNK, MulAdd, Real};
    use core::arch::wasm32::*;
    use std::ops::{Add, Div, Mul, Neg, Sub};

    #[derive(Clone, Copy)]
    pub(super) struct V4(v128);
    #[derive(Clone, Copy)]
    pub(super) struct I4(v128);

    macro_rules! binop {
        ($($tr:ident $f:ident $op:ident;)*) => {$(
            impl $tr for V4 {
                type Output = V4;
                #[inline(always)]
                fn $f(self, o: V4) -> V4 {
                    V4($op(self.0, o.0))
                }
            }
        )*};
    }
    binop! {
        Add add f32x4_add;
        Sub sub f32x4_sub;
        Mul mul f32x4_mul;
        Div div f32x4_div;
    }
    impl Neg for V4 {
        type Output = V4;
        #[inline(always)]
        fn neg(self) -> V4 {
            V4(f32x4_neg(self.0))
        }
    }

    impl Real for V4 {
        const LANES: usize = 4;
        type Bits = I4;
        #[inline(always)]
        fn splat(v: f32) -> V4 {
            V4(f32x4_splat(v))
        }
        #[inline(always)]
        fn load(x: &[f32; CHUNK], k: usize) -> V4 {
            let s = &x[4 * k..4 * k + 4];
            // SAFETY: `s` holds 16 bytes; v128 loads take any alignment.
            V4(unsafe { v128_load(s.as_ptr().cast()) })
        }
        #[inline(always)]
        fn store(self, y: &mut [f32; CHUNK], k: usize) {
            let s = &mut y[4 * k..4 * k + 4];
            // SAFETY: as for `load`.
            unsafe { v128_store(s.as_mut_ptr().cast(), self.0) }
        }
        #[inline(always)]
        fn first(self) -> f32 {
            f32x4_extract_lane::<0>(self.0)
        }
        #[inline(always)]
        fn abs(self) -> V4 {
            V4(f32x4_abs(self.0))
        }
        #[inline(always)]
        fn copysign(self, sign: V4) -> V4 {
            V4(v128_bitselect(sign.0, self.0, f32x4_splat(-0.0)))
        }
        #[inline(always)]
        fn if_lt(a: V4, b: V4, x: V4, y: V4) -> V4 {
            V4(v128_bitselect(x.0, y.0, f32x4_lt(a.0, b.0)))
        }
        #[inline(always)]
        fn if_le(a: V4, b: V4, x: V4, y: V4) -> V4 {
            V4(v128_bitselect(x.0, y.0, f32x4_le(a.0, b.0)))
        }
        #[inline(always)]
        fn to_bits(self) -> I4 {
            I4(self.0)
        }
        #[inline(always)]
        fn from_bits(b: I4) -> V4 {
            V4(b.0)
        }
    }

    impl Bits for I4 {
        #[inline(always)]
        fn splat(v: i32) -> I4 {
            I4(i32x4_splat(v))
        }
        #[inline(always)]
        fn add(self, o: I4) -> I4 {
            I4(i32x4_add(self.0, o.0))
        }
        #[inline(always)]
        fn sub(self, o: I4) -> I4 {
            I4(i32x4_sub(self.0, o.0))
        }
        #[inline(always)]
        fn max(self, o: I4) -> I4 {
            I4(i32x4_max(self.0, o.0))
        }
        #[inline(always)]
        fn min(self, o: I4) -> I4 {
            I4(i32x4_min(self.0, o.0))
        }
        #[inline(always)]
        fn shr1(self) -> I4 {
            I4(i32x4_shr(self.0, 1))
        }
        #[inline(always)]
        fn pow2(self) -> I4 {
            I4(i32x4_shl(i32x4_add(self.0, i32x4_splat(127)), 23))
        }
    }

    /// `f32x4.relaxed_madd`; only used where [`crate::kernels::cpu::relaxed_madd_fused`].
    #[derive(Clone, Copy)]
    pub(super) struct RelaxedFused;

    impl MulAdd<V4> for RelaxedFused {
        #[inline(always)]
        fn mul_add(a: V4, b: V4, c: V4) -> V4 {
            V4(f32x4_relaxed_madd(a.0, b.0, c.0))
        }
    }
}

/// Horner's rule, highest coefficient first.
#[inline(always)]
fn horner<V: Real, M: MulAdd<V>, const N: usize>(x: V, c: [f32; N]) -> V {
    let mut p = V::splat(c[0]);
    for &k in &c[1..] {
        p = M::mul_add(p, x, V::splat(k));
    }
    p
}

/// `x` limited to `[lo, hi]`; NaN stays NaN (both comparisons are false).
#[inline(always)]
fn clamp<V: Real>(x: V, lo: f32, hi: f32) -> V {
    let (lo, hi) = (V::splat(lo), V::splat(hi));
    let x = V::if_lt(x, lo, lo, x);
    V::if_lt(hi, x, hi, x)
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
fn exp1<V: Real, M: MulAdd<V>, const TINY: u8>(x: V) -> V {
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_375;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let c = V::splat;
    let i = V::Bits::splat;
    // e^89 overflows, e^-104 is below half the smallest subnormal.
    let x = clamp(x, -104.0, 89.0);
    let t = M::mul_add(x, c(std::f32::consts::LOG2_E), c(SHIFT));
    let n = t - c(SHIFT);
    let r = M::mul_add(n, c(-LN2_HI), x);
    let r = M::mul_add(n, c(-LN2_LO), r);
    let p = horner::<V, M, 6>(
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
    let er = M::mul_add(p, r * r, r) + c(1.0);
    // n as an integer, straight from the bits of t (|n| < 2^22).
    let ni = t.to_bits().sub(i(SHIFT.to_bits() as i32));
    let nn = ni.max(i(-125));
    let n1 = nn.shr1();
    let n2 = nn.sub(n1);
    let normal = er * V::from_bits(n1.pow2()) * V::from_bits(n2.pow2());
    // (n compared as a float below, so that NaN keeps the normal path.)
    match TINY {
        ANY => return normal,
        FLUSH => return V::if_lt(n, c(-125.0), c(0.0), normal),
        _ => {}
    }
    // n ≤ -126: the result's bit pattern is the integer nearest er·2^(n+149)
    // (subnormals are multiples of 2^-149, and the encoding runs on into the
    // normals linearly), found with integer-valued floats only: below 2^23,
    // adding 2^23 rounds to an integer (ties to even); at or above it, the
    // value already is one.
    const TWO23: f32 = 8_388_608.0;
    let two23 = i(TWO23.to_bits() as i32);
    let ks = ni.max(i(-150)).min(i(-126)).add(i(149));
    let v = er * V::from_bits(ks.pow2());
    let below = V::from_bits((v + c(TWO23)).to_bits().sub(two23));
    let above = V::from_bits(v.to_bits().add(i(1 << 23)).sub(two23));
    let sub = V::if_lt(v, c(TWO23), below, above);
    V::if_le(n, c(-126.0), sub, normal)
}

/// What `exp1` does with results below the normals (see there).
const ANY: u8 = 0;
const FLUSH: u8 = 1;
const EXACT: u8 = 2;

/// Where erf switches from its series-like polynomial to `1 - erfc`.
const ERF_SPLIT: f32 = 0.875;

/// erf(x) for |x| < [`ERF_SPLIT`]: `x·P(x²)`, fit to relative error 9e-9.
#[inline(always)]
fn erf_small<V: Real, M: MulAdd<V>>(x: V) -> V {
    let p = horner::<V, M, 6>(
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
fn erfc_tail<V: Real, M: MulAdd<V>, const TINY: u8>(a: V) -> V {
    let c = V::splat;
    let t = c(1.0) / M::mul_add(c(0.5), a, c(1.0));
    let p = horner::<V, M, 8>(
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
    t * exp1::<V, M, TINY>(M::mul_add(-a, a, p))
}

/// erf(x). Past |x| ≈ 3.92, `1 - erfc` rounds to exactly 1.
#[inline(always)]
fn erf1<V: Real, M: MulAdd<V>>(x: V) -> V {
    let a = x.abs();
    let big = (V::splat(1.0) - erfc_tail::<V, M, ANY>(a)).copysign(x);
    V::if_lt(a, V::splat(ERF_SPLIT), erf_small::<V, M>(x), big)
}

/// tanh(x): `x + x³·P(x²)` for |x| < 0.625 (fit to relative error 4e-9),
/// else `1 - 2/(e^{2|x|} + 1)` with the sign of x.
#[inline(always)]
fn tanh1<V: Real, M: MulAdd<V>>(x: V) -> V {
    let c = V::splat;
    let a = x.abs();
    let e = exp1::<V, M, ANY>(a + a);
    let big = (c(1.0) - c(2.0) / (e + c(1.0))).copysign(x);
    let x2 = x * x;
    let p = horner::<V, M, 5>(
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
    V::if_lt(a, c(0.625), small, big)
}

#[inline(always)]
fn sigmoid1<V: Real, M: MulAdd<V>>(x: V) -> V {
    let one = V::splat(1.0);
    one / (one + exp1::<V, M, ANY>(-x))
}

/// `½·x`, with -inf taken as -f32::MAX so that GELU(-inf) is -0 (the
/// limit) rather than -inf·0 = NaN.
#[inline(always)]
fn half<V: Real>(x: V) -> V {
    let min = V::splat(-f32::MAX);
    V::splat(0.5) * V::if_lt(x, min, min, x)
}

/// `x·½·(1 + erf(x/√2))`, the exact GELU, computed as `½x·erfc(-x/√2)`
/// so that negative inputs keep their relative accuracy.
#[inline(always)]
fn gelu1<V: Real, M: MulAdd<V>, const TINY: u8>(x: V) -> V {
    let c = V::splat;
    let z = x * c(std::f32::consts::FRAC_1_SQRT_2);
    let a = z.abs();
    let tail = erfc_tail::<V, M, TINY>(a);
    let big = V::if_lt(z, c(0.0), tail, c(2.0) - tail);
    let small = c(1.0) + erf_small::<V, M>(z);
    half(x) * V::if_lt(a, c(ERF_SPLIT), small, big)
}

/// `x·½·(1 + tanh(u))` with `u = √(2/π)·(x + 0.044715·x³)`, GELU's tanh
/// approximation, computed as `x / (1 + e^(-2u))` (the same function) so
/// that negative inputs do not lose their digits in `1 + tanh(u)`.
#[inline(always)]
fn gelu_tanh1<V: Real, M: MulAdd<V>>(x: V) -> V {
    const MINUS_2_SQRT_2_OVER_PI: f32 = -1.595_769_121_605_730_7;
    let c = V::splat;
    let u2 = c(MINUS_2_SQRT_2_OVER_PI) * M::mul_add(c(0.044_715) * x * x, x, x);
    (c(2.0) * half(x)) / (c(1.0) + exp1::<V, M, ANY>(u2))
}

/// One per-element function, generic over its numbers and how
/// multiply-adds are done.
trait Lane {
    /// The function; with `TINY` = [`ANY`] its exp may be off below the
    /// normals, which is only right where `subnormal(x)` is false.
    fn f<V: Real, M: MulAdd<V>, const TINY: u8>(x: V) -> V;
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
            fn f<V: Real, M: MulAdd<V>, const TINY: u8>(x: V) -> V {
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
    (@call $f:ident, $m:ident, $s:ident, $x:ident, $lo:expr) => { $f::<V, $m, $s>($x) };
    (@call $f:ident, $m:ident, $s:ident, $x:ident) => { $f::<V, $m>($x) };
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
fn chunk<V: Real, L: Lane, M: MulAdd<V>>(x: &[f32; CHUNK], y: &mut [f32; CHUNK]) {
    for k in 0..CHUNK / V::LANES {
        L::f::<V, M, ANY>(V::load(x, k)).store(y, k);
    }
    if x.iter().any(|&v| L::subnormal(v)) {
        for k in 0..CHUNK / V::LANES {
            L::f::<V, M, EXACT>(V::load(x, k)).store(y, k);
        }
    }
}

#[inline(always)]
fn map_loop<V: Real, L: Lane, M: MulAdd<V>>(x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    let mut xc = x.chunks_exact(CHUNK);
    let mut yc = y.chunks_exact_mut(CHUNK);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        if let (Ok(xs), Ok(ys)) = (xs.try_into(), ys.try_into()) {
            chunk::<V, L, M>(xs, ys);
        }
    }
    let (xt, yt) = (xc.remainder(), yc.into_remainder());
    if !xt.is_empty() {
        let mut a = [0f32; CHUNK];
        let mut b = [0f32; CHUNK];
        a[..xt.len()].copy_from_slice(xt);
        chunk::<V, L, M>(&a, &mut b);
        yt.copy_from_slice(&b[..yt.len()]);
    }
}

#[inline(always)]
fn map_in_place_loop<V: Real, L: Lane, M: MulAdd<V>>(xs: &mut [f32]) {
    let mut c = xs.chunks_exact_mut(CHUNK);
    for xs in &mut c {
        if let Ok(xs) = <&mut [f32; CHUNK]>::try_from(xs) {
            let a = *xs;
            chunk::<V, L, M>(&a, xs);
        }
    }
    let t = c.into_remainder();
    if !t.is_empty() {
        let mut a = [0f32; CHUNK];
        let mut b = [0f32; CHUNK];
        a[..t.len()].copy_from_slice(t);
        chunk::<V, L, M>(&a, &mut b);
        t.copy_from_slice(&b[..t.len()]);
    }
}

/// `y = e^(x - shift)` with results below ~2^-125.5 flushed to zero,
/// returning the sum of `y` (f32 partial sums, one per lane of a chunk,
/// added up in a fixed tree; the tail after the last whole chunk in order).
#[inline(always)]
fn exp_shift_sum_loop<V: Real, M: MulAdd<V>>(x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    let mut acc = [0f32; CHUNK];
    let mut xc = x.chunks_exact(CHUNK);
    let mut yc = y.chunks_exact_mut(CHUNK);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        let (Ok(xs), Ok(ys)) = (
            <&[f32; CHUNK]>::try_from(xs),
            <&mut [f32; CHUNK]>::try_from(ys),
        ) else {
            continue;
        };
        for k in 0..CHUNK / V::LANES {
            let e = exp1::<V, M, FLUSH>(V::load(xs, k) - V::splat(shift));
            e.store(ys, k);
            (V::load(&acc, k) + e).store(&mut acc, k);
        }
    }
    let mut tail = 0f32;
    for (o, &v) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *o = exp1::<V, M, FLUSH>(V::splat(v - shift)).first();
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
    /// The loops on `v128`s with relaxed multiply-adds, where the engine
    /// fuses them: the fused arithmetic of `Avx2Fma`, so its bits, in a
    /// browser.
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    RelaxedFma,
}

impl Isa {
    /// Whether this copy fuses its multiply-adds.
    fn fused(self) -> bool {
        self != Isa::Portable || cfg!(any(target_arch = "aarch64", target_feature = "fma"))
    }
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
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    if super::cpu::relaxed_madd_fused() {
        return Isa::RelaxedFma;
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
        super::map_loop::<f32, L, Fused>(x, y)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn map_in_place<L: Lane>(xs: &mut [f32]) {
        super::map_in_place_loop::<f32, L, Fused>(xs)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shift_sum(x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
        super::exp_shift_sum_loop::<f32, Fused>(x, shift, y)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Fused, Lane};

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn map<L: Lane>(x: &[f32], y: &mut [f32]) {
        super::map_loop::<f32, L, Fused>(x, y)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn map_in_place<L: Lane>(xs: &mut [f32]) {
        super::map_in_place_loop::<f32, L, Fused>(xs)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn exp_shift_sum(x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
        super::exp_shift_sum_loop::<f32, Fused>(x, shift, y)
    }
}

fn map_with<L: Lane>(isa: Isa, x: &[f32], y: &mut [f32]) {
    match isa {
        Isa::Portable => map_loop::<f32, L, Native>(x, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` exists only when the CPU has AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::map::<L>(x, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` exists only when the CPU has AVX-512 F,
        // AVX2 and FMA.
        Isa::Avx512 => unsafe { avx512::map::<L>(x, y) },
        #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
        Isa::RelaxedFma => map_loop::<v4::V4, L, v4::RelaxedFused>(x, y),
    }
}

fn map_in_place_with<L: Lane>(isa: Isa, xs: &mut [f32]) {
    match isa {
        Isa::Portable => map_in_place_loop::<f32, L, Native>(xs),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` exists only when the CPU has AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::map_in_place::<L>(xs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { avx512::map_in_place::<L>(xs) },
        #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
        Isa::RelaxedFma => map_in_place_loop::<v4::V4, L, v4::RelaxedFused>(xs),
    }
}

fn exp_shift_sum_with(isa: Isa, x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
    match isa {
        Isa::Portable => exp_shift_sum_loop::<f32, Native>(x, shift, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` exists only when the CPU has AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::exp_shift_sum(x, shift, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { avx512::exp_shift_sum(x, shift, y) },
        #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
        Isa::RelaxedFma => exp_shift_sum_loop::<v4::V4, v4::RelaxedFused>(x, shift, y),
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

/// Whether the functions above fuse their multiply-adds on this CPU (x86-64
/// with FMA, aarch64, the wasm relaxed-SIMD build on an engine that fuses):
/// with [`scalar_twin`], what a test needs to predict their bits.
pub fn fused() -> bool {
    best().fused()
}

/// The functions above, for [`scalar_twin`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Exp,
    Erf,
    Tanh,
    Sigmoid,
    Gelu,
    GeluTanh,
}

impl Function {
    pub const ALL: [Function; 6] = [
        Function::Exp,
        Function::Erf,
        Function::Tanh,
        Function::Sigmoid,
        Function::Gelu,
        Function::GeluTanh,
    ];
    /// The vector copy [`best`] picks, on a slice: `exp_to`, `erf_to`, ….
    pub fn apply(self, x: &[f32], y: &mut [f32]) {
        match self {
            Function::Exp => exp_to(x, y),
            Function::Erf => erf_to(x, y),
            Function::Tanh => tanh_to(x, y),
            Function::Sigmoid => sigmoid_to(x, y),
            Function::Gelu => gelu_to(x, y),
            Function::GeluTanh => gelu_tanh_to(x, y),
        }
    }
}

/// One element of `f` by the scalar formula, with multiply-adds fused
/// (`f32::mul_add`: an instruction, or libm's correctly rounded `fmaf`) or
/// each rounded: the bits every vector copy that fuses (or not) must give.
/// For tests, including those of builds that run in a browser.
#[doc(hidden)]
pub fn scalar_twin(f: Function, fused: bool, x: f32) -> f32 {
    fn one<L: Lane>(fused: bool, x: f32) -> f32 {
        match (fused, L::subnormal(x)) {
            (true, false) => L::f::<f32, Fused, ANY>(x),
            (true, true) => L::f::<f32, Fused, EXACT>(x),
            (false, false) => L::f::<f32, Unfused, ANY>(x),
            (false, true) => L::f::<f32, Unfused, EXACT>(x),
        }
    }
    match f {
        Function::Exp => one::<Exp>(fused, x),
        Function::Erf => one::<Erf>(fused, x),
        Function::Tanh => one::<Tanh>(fused, x),
        Function::Sigmoid => one::<Sigmoid>(fused, x),
        Function::Gelu => one::<Gelu>(fused, x),
        Function::GeluTanh => one::<GeluTanh>(fused, x),
    }
}

/// `e^(x - shift)` as [`exp_shift_sum`] computes it, by the scalar formula
/// (see [`scalar_twin`]).
#[doc(hidden)]
pub fn scalar_twin_exp_shift(fused: bool, x: f32, shift: f32) -> f32 {
    if fused {
        exp1::<f32, Fused, FLUSH>(x - shift)
    } else {
        exp1::<f32, Unfused, FLUSH>(x - shift)
    }
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

    /// Every copy gives, lane by lane, the bits of the scalar formula with
    /// its multiply-adds fused or not as the copy does ([`scalar_twin`],
    /// which the browser tests hold the wasm copies to).
    #[test]
    fn every_copy_gives_its_scalar_twins_bits() {
        let mut xs = sweep(-20.0, 20.0, 20_011);
        xs.extend(sweep(-104.0, 89.0, 4_001));
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            0.0,
            -0.0,
            1e-40,
            -1e-40,
        ]);
        fn map_fn(isa: Isa, f: Function, x: &[f32], y: &mut [f32]) {
            match f {
                Function::Exp => map_with::<Exp>(isa, x, y),
                Function::Erf => map_with::<Erf>(isa, x, y),
                Function::Tanh => map_with::<Tanh>(isa, x, y),
                Function::Sigmoid => map_with::<Sigmoid>(isa, x, y),
                Function::Gelu => map_with::<Gelu>(isa, x, y),
                Function::GeluTanh => map_with::<GeluTanh>(isa, x, y),
            }
        }
        for isa in isas() {
            for f in Function::ALL {
                // one value per chunk, so that exp's subnormal path is taken
                // exactly where the twin takes it
                for &x in &xs {
                    let mut y = [0f32];
                    map_fn(isa, f, &[x], &mut y);
                    let want = scalar_twin(f, isa.fused(), x);
                    assert_eq!(
                        y[0].to_bits(),
                        want.to_bits(),
                        "{isa:?} {f:?}({x}): {} vs {want}",
                        y[0]
                    );
                }
            }
            let mut y = vec![0f32; xs.len()];
            exp_shift_sum_with(isa, &xs, 20.0, &mut y);
            for (&x, &y) in xs.iter().zip(&y) {
                let want = scalar_twin_exp_shift(isa.fused(), x, 20.0);
                assert_eq!(y.to_bits(), want.to_bits(), "{isa:?} e^({x} - 20)");
            }
        }
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
