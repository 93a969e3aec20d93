//! Portable kernels: the reference every faster kernel is tested against.

// erf's rational-approximation coefficients are quoted as published.
#![allow(clippy::excessive_precision)]

/// erf(x), correctly rounded but for a rare last-bit tie: computed in f64
/// by [`erf_f64`]. The reference for `math::erf` (which is much faster).
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// erf(x) in f64 (W. J. Cody's rational approximations; Abramowitz–Stegun
/// 7.1.26 is too coarse for GELU).
pub fn erf_f64(x: f64) -> f64 {
    // W. J. Cody's rational Chebyshev approximation, split at |x| = 0.5 and 4.
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 0.5 {
        let t = x * x;
        let p = [
            3.161_123_743_870_565_6,
            113.864_154_151_050_16,
            377.485_237_685_302_0,
            3_209.377_589_138_469_4,
            0.185_777_706_184_603_15,
        ];
        let q = [
            23.601_290_952_344_122,
            244.024_637_934_444_17,
            1_282.616_526_077_372_3,
            2_844.236_833_439_170_6,
        ];
        let num = (((p[4] * t + p[0]) * t + p[1]) * t + p[2]) * t + p[3];
        let den = (((t + q[0]) * t + q[1]) * t + q[2]) * t + q[3];
        return x * num / den;
    } else if ax < 4.0 {
        let p = [
            0.564_188_496_988_670_1,
            8.883_149_794_388_376,
            66.119_190_637_141_63,
            298.635_138_197_400_1,
            881.952_221_241_769_1,
            1_712.047_612_634_070_7,
            2_051.078_377_826_071_6,
            1_230.339_354_797_997_2,
            2.153_115_354_744_038_3e-8,
        ];
        let q = [
            15.744_926_110_709_835,
            117.693_950_891_312_5,
            537.181_101_862_009_9,
            1_621.389_574_566_690_3,
            3_290.799_235_733_459_7,
            4_362.619_090_143_247,
            3_439.367_674_143_721_6,
            1_230.339_354_803_749_5,
        ];
        let mut num = p[8] * ax;
        let mut den = ax;
        for i in 0..7 {
            num = (num + p[i]) * ax;
            den = (den + q[i]) * ax;
        }
        let erfc = (num + p[7]) / (den + q[7]) * (-ax * ax).exp();
        1.0 - erfc
    } else {
        1.0
    };
    if x < 0.0 { -r } else { r }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_known_values() {
        // values of erf from its series, computed to 1e-12 by the test itself
        for &x in &[
            -3.0f64, -1.5, -0.7, -0.2, 0.0, 0.1, 0.49, 0.51, 1.0, 2.5, 3.9, 4.1,
        ] {
            let mut sum = 0f64;
            let mut term = x;
            let mut n = 0;
            while term.abs() > 1e-17 && n < 200 {
                sum += term / (2 * n + 1) as f64;
                n += 1;
                term *= -x * x / n as f64;
            }
            let want = sum * 2.0 / std::f64::consts::PI.sqrt();
            let got = super::erf_f64(x);
            // Cody's last range returns 1 (erfc(4) = 1.5e-8: far below f32's ulp)
            let tol = if x.abs() < 4.0 { 1e-9 } else { 2e-8 };
            assert!((got - want).abs() < tol, "erf({x}) = {got}, series {want}");
        }
    }
}
