//! What this CPU runs, probed once per process, for every kernel that picks
//! a faster copy at run time.
//!
//! `MORSEL_ISA=baseline` in the environment (read once, at the first probe)
//! turns every run-time-detected feature off: x86-64 then runs its SSE2
//! loops and the portable f32 tile, with no FMA, which is the arithmetic of
//! the wasm32 simd128 build and of armv7. That reproduces on a desktop the
//! exact bits a browser computes, and tells FMA rounding apart from a real
//! difference when two platforms disagree. Any other value, or none, means
//! the fastest copy. (aarch64's portable code fuses multiply-adds, as NEON
//! always can, so there it only turns `sdot` off.)

use std::sync::atomic::{AtomicU8, Ordering};

/// Whether `MORSEL_ISA=baseline` was set when the CPU was first probed.
pub fn baseline_only() -> bool {
    static BASELINE: AtomicU8 = AtomicU8::new(0);
    cached(&BASELINE, || {
        std::env::var_os("MORSEL_ISA").is_some_and(|v| v == "baseline")
    })
}

/// `probe()` once, cached in `cell` (0: not probed yet, 1: no, 2: yes).
#[inline]
fn cached(cell: &AtomicU8, probe: impl FnOnce() -> bool) -> bool {
    match cell.load(Ordering::Relaxed) {
        0 => {
            let yes = probe();
            cell.store(1 + yes as u8, Ordering::Relaxed);
            yes
        }
        v => v == 2,
    }
}

/// x86-64 with AVX2 and FMA, and not held to the baseline.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx2_fma() -> bool {
    static HAS: AtomicU8 = AtomicU8::new(0);
    cached(&HAS, || {
        !baseline_only()
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    })
}

/// x86-64 with AVX-512 F (512-bit FMA included), and not held to the
/// baseline.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx512f() -> bool {
    static HAS: AtomicU8 = AtomicU8::new(0);
    cached(&HAS, || {
        !baseline_only() && std::arch::is_x86_feature_detected!("avx512f")
    })
}

/// x86-64 with AVX2 (integer kernels need no FMA), and not held to the
/// baseline.
#[cfg(target_arch = "x86_64")]
pub fn avx2() -> bool {
    static HAS: AtomicU8 = AtomicU8::new(0);
    cached(&HAS, || {
        !baseline_only() && std::arch::is_x86_feature_detected!("avx2")
    })
}

/// x86-64 with AVX-512 VNNI (`vpdpbusd` on zmm: F, BW and VNNI), and not
/// held to the baseline.
#[cfg(target_arch = "x86_64")]
pub fn avx512_vnni() -> bool {
    static HAS: AtomicU8 = AtomicU8::new(0);
    cached(&HAS, || {
        !baseline_only()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    })
}

/// aarch64 with the `sdot` dot-product instructions, and not held to the
/// baseline.
#[cfg(target_arch = "aarch64")]
pub fn aarch64_dotprod() -> bool {
    !baseline_only() && std::arch::is_aarch64_feature_detected!("dotprod")
}

/// The wasm relaxed-SIMD build, on an engine whose `f32x4.relaxed_madd`
/// rounds once (Chromium and Node on x86 with FMA; on ARM always), and not
/// held to the baseline. The spec lets the engine fuse or not; the f32
/// kernels use it only where it fuses, and then compute what native FMA
/// code does, bit for bit.
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
pub fn relaxed_madd_fused() -> bool {
    static HAS: AtomicU8 = AtomicU8::new(0);
    cached(&HAS, || {
        use core::arch::wasm32::*;
        // (1 + 2^-12)² - 1 = 2^-11 + 2^-24: the 2^-24 survives only in a
        // fused multiply-add; two roundings lose it to the square.
        let a = f32x4_splat(std::hint::black_box(1.0 + 1.0 / 4096.0));
        let c = f32x4_splat(std::hint::black_box(-1.0));
        let r = f32x4_relaxed_madd(a, a, c);
        let want = 1.0 / 2048.0 + 1.0 / 16_777_216.0;
        !baseline_only()
            && [
                f32x4_extract_lane::<0>(r),
                f32x4_extract_lane::<1>(r),
                f32x4_extract_lane::<2>(r),
                f32x4_extract_lane::<3>(r),
            ] == [want; 4]
    })
}
