//! Resize against a per-output-pixel reference written from the ONNX formulas.

use super::*;
use crate::graph::Attr;
use crate::ops::conv::tests::{Rng, check_close, run};
use crate::tensor::Tensor;

/// Source coordinate by the ONNX spec formulas.
fn coord(mode: &str, x: usize, n_in: usize, n_out: usize, scale: f32) -> f32 {
    let x = x as f32;
    match mode {
        "half_pixel" => (x + 0.5) / scale - 0.5,
        "half_pixel_symmetric" => {
            let out_w = scale * n_in as f32;
            let adj = n_out as f32 / out_w;
            let center = n_in as f32 / 2.0;
            center * (1.0 - adj) + (x + 0.5) / scale - 0.5
        }
        "pytorch_half_pixel" => {
            if n_out > 1 {
                (x + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        "align_corners" => {
            // ONNX spec: length_resized = length_original * scale
            let resized = n_in as f32 * scale;
            if n_out == 1 || resized <= 1.0 {
                0.0
            } else {
                x * (n_in as f32 - 1.0) / (resized - 1.0)
            }
        }
        "asymmetric" => x / scale,
        "tf_half_pixel_for_nn" => (x + 0.5) / scale,
        _ => unreachable!(),
    }
}

fn round_nearest(nm: &str, c: f32, n_in: usize) -> usize {
    let f = c - c.floor();
    let i = match nm {
        "floor" => c.floor(),
        "ceil" => c.ceil(),
        "round_prefer_ceil" => {
            if f == 0.5 {
                c.ceil()
            } else {
                c.round()
            }
        }
        _ => {
            if f == 0.5 {
                c.floor()
            } else {
                c.round()
            }
        }
    };
    (i.max(0.0) as usize).min(n_in - 1)
}

/// Resize by evaluating every output element on its own.
fn naive(
    x: &[f32],
    xd: &[usize],
    od: &[usize],
    scales: &[f32],
    mode: &str,
    ct: &str,
    nm: &str,
) -> Vec<f32> {
    let rank = xd.len();
    let total: usize = od.iter().product();
    let mut strides = vec![1; rank];
    for a in (0..rank - 1).rev() {
        strides[a] = strides[a + 1] * xd[a + 1];
    }
    let mut y = Vec::with_capacity(total);
    for flat in 0..total {
        let mut idx = vec![0; rank];
        let mut r = flat;
        for a in (0..rank).rev() {
            idx[a] = r % od[a];
            r /= od[a];
        }
        // per axis: (i0, i1, weight of i1)
        let per: Vec<(usize, usize, f32)> = (0..rank)
            .map(|a| {
                if xd[a] == od[a] && scales[a] == 1.0 {
                    return (idx[a], idx[a], 0.0);
                }
                let c = coord(ct, idx[a], xd[a], od[a], scales[a]);
                if mode == "nearest" {
                    let i = round_nearest(nm, c, xd[a]);
                    (i, i, 0.0)
                } else {
                    let c = c.max(0.0).min(xd[a] as f32 - 1.0);
                    let i0 = c.floor() as usize;
                    let i1 = (i0 + 1).min(xd[a] - 1);
                    (i0, i1, c - i0 as f32)
                }
            })
            .collect();
        let mut acc = 0f64;
        for mask in 0..1usize << rank {
            let mut wgt = 1f64;
            let mut off = 0;
            for a in 0..rank {
                let (i0, i1, f) = per[a];
                let hi = mask >> a & 1 == 1;
                wgt *= if hi { f as f64 } else { 1.0 - f as f64 };
                off += if hi { i1 } else { i0 } * strides[a];
            }
            if wgt != 0.0 {
                acc += wgt * x[off] as f64;
            }
        }
        y.push(acc as f32);
    }
    y
}

fn attrs(mode: &str, ct: &str, nm: &str) -> Attrs {
    Attrs::new()
        .with("mode", Attr::Str(mode.into()))
        .with("coordinate_transformation_mode", Attr::Str(ct.into()))
        .with("nearest_mode", Attr::Str(nm.into()))
}

const COORDS: [&str; 5] = [
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
];
const NEAREST: [&str; 4] = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];

#[test]
fn resize_scales_match_reference() {
    let mut rng = Rng(21);
    let cases: [(&[usize], &[f32]); 6] = [
        (&[1, 2, 3, 4], &[1.0, 1.0, 2.0, 2.0]),
        // big enough to be split across threads (whole output rows each)
        (&[1, 4, 48, 50], &[1.0, 1.0, 2.0, 2.0]),
        (&[2, 3, 5, 7], &[1.0, 1.0, 1.6, 2.5]),
        (&[1, 2, 9, 11], &[1.0, 1.0, 0.6, 0.45]),
        (&[2, 3, 7], &[1.0, 1.0, 1.5]),
        (&[1, 1, 3, 4, 5], &[1.0, 1.0, 2.0, 0.5, 1.3]),
    ];
    for (xd, sc) in cases {
        let x = rng.vec(xd.iter().product());
        let od: Vec<usize> = xd
            .iter()
            .zip(sc)
            .map(|(&n, &s)| (n as f64 * s as f64).floor() as usize)
            .collect();
        let ins = [
            Some(Tensor::from_slice(xd, &x).unwrap()),
            None,
            Some(Tensor::from_slice(&[sc.len()], sc).unwrap()),
        ];
        for ct in COORDS.iter().chain(&["tf_half_pixel_for_nn"]) {
            let mut runs: Vec<(&str, &str)> = NEAREST.iter().map(|nm| ("nearest", *nm)).collect();
            if *ct != "tf_half_pixel_for_nn" {
                runs.push(("linear", "round_prefer_floor"));
            }
            for (mode, nm) in runs {
                let op = build_resize(&attrs(mode, ct, nm)).unwrap();
                let want = naive(&x, xd, &od, sc, mode, ct, nm);
                for threads in [1, 2] {
                    let (dims, got) = run(&*op, &ins, threads);
                    let what = format!("{mode} {ct} {nm} x {xd:?} scales {sc:?} threads {threads}");
                    assert_eq!(dims, od, "{what}");
                    check_close(&got, &want, &what);
                }
            }
        }
    }
}

#[test]
fn resize_sizes_and_axes_match_reference() {
    let mut rng = Rng(22);
    let xd = [1usize, 3, 5, 6];
    let x = rng.vec(xd.iter().product());
    let xt = Tensor::from_slice(&xd, &x).unwrap();
    let empty = Tensor::from_slice::<f32>(&[0], &[]).unwrap();
    for od in [[1usize, 3, 9, 4], [1, 3, 1, 13], [1, 3, 5, 6]] {
        let scales: Vec<f32> = xd
            .iter()
            .zip(&od)
            .map(|(&i, &o)| o as f32 / i as f32)
            .collect();
        let sizes: Vec<i64> = od.iter().map(|&v| v as i64).collect();
        for ct in COORDS {
            for mode in ["nearest", "linear"] {
                let op = build_resize(&attrs(mode, ct, "round_prefer_ceil")).unwrap();
                // sizes with an empty scales tensor (absent, as in opset 11-12 exports)
                let ins = [
                    Some(xt.clone()),
                    None,
                    Some(empty.clone()),
                    Some(Tensor::from_slice(&[4], &sizes).unwrap()),
                ];
                let (dims, got) = run(&*op, &ins, 1);
                let what = format!("{mode} {ct} sizes {od:?}");
                assert_eq!(dims, od, "{what}");
                check_close(
                    &got,
                    &naive(&x, &xd, &od, &scales, mode, ct, "round_prefer_ceil"),
                    &what,
                );
                // the same through axes [-1, 2] (reordered)
                let op = build_resize(
                    &attrs(mode, ct, "round_prefer_ceil").with("axes", Attr::Ints(vec![-1, 2])),
                )
                .unwrap();
                let ins = [
                    Some(xt.clone()),
                    None,
                    None,
                    Some(Tensor::from_slice(&[2], &[sizes[3], sizes[2]]).unwrap()),
                ];
                let (dims, got2) = run(&*op, &ins, 1);
                assert_eq!(dims, od, "{what} axes");
                assert_eq!(got, got2, "{what} axes");
            }
        }
    }
}

#[test]
fn resize_nearest_is_dtype_agnostic() {
    let xd = [1usize, 2, 3, 3];
    let x: Vec<i64> = (0..18).map(|v| v * 1_000_000_007).collect();
    let ins = [
        Some(Tensor::from_slice(&xd, &x).unwrap()),
        None,
        Some(Tensor::from_slice(&[4], &[1f32, 1.0, 2.0, 1.5]).unwrap()),
    ];
    let op = build_resize(&attrs("nearest", "asymmetric", "floor")).unwrap();
    let out = crate::ops::eval_owned(&*op, &ins).unwrap();
    assert_eq!(out[0].dims, vec![1, 2, 6, 4]);
    let xf: Vec<f32> = (0..18).map(|v| v as f32).collect();
    let want = naive(
        &xf,
        &xd,
        &[1, 2, 6, 4],
        &[1.0, 1.0, 2.0, 1.5],
        "nearest",
        "asymmetric",
        "floor",
    );
    let got: Vec<f32> = out[0]
        .as_slice::<i64>()
        .unwrap()
        .iter()
        .map(|&v| (v / 1_000_000_007) as f32)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn resize_infer_symbolic_and_errors() {
    let n = Dim::Sym("N".into());
    let x = Fact::new(
        DType::F32,
        vec![
            n.clone(),
            Dim::Known(3),
            Dim::Known(7),
            Dim::Sym("W".into()),
        ],
    );
    let scales = Fact::known(Tensor::from_slice(&[4], &[1f32, 1.0, 0.45, 2.0]).unwrap());
    let op = build_resize(&attrs("linear", "half_pixel", "floor")).unwrap();
    let out = op
        .infer(&[Some(x.clone()), None, Some(scales.clone())])
        .unwrap();
    assert_eq!(
        out[0].shape,
        vec![n.clone(), Dim::Known(3), Dim::Known(3), Dim::unknown()]
    );
    // sizes not known yet: rank kept, axes outside `axes` kept
    let sizes = Fact::new(DType::I64, vec![Dim::Known(2)]);
    let op_ax =
        build_resize(&attrs("nearest", "asymmetric", "floor").with("axes", Attr::Ints(vec![2, 3])))
            .unwrap();
    let out = op_ax
        .infer(&[Some(x.clone()), None, None, Some(sizes.clone())])
        .unwrap();
    assert_eq!(
        out[0].shape,
        vec![n, Dim::Known(3), Dim::unknown(), Dim::unknown()]
    );
    // ... and with a concrete X too: the planner, not infer, reports
    // (or plans again with the caller's values)
    let xc = Fact::new(
        DType::F32,
        vec![Dim::Known(1), Dim::Known(3), Dim::Known(7), Dim::Known(8)],
    );
    let out = op_ax
        .infer(&[Some(xc.clone()), None, None, Some(sizes)])
        .unwrap();
    assert!(out[0].dims().is_none());
    // both or neither of scales/sizes, wrong lengths, bad values
    let sz = Fact::known(Tensor::from_slice(&[4], &[1i64, 3, 14, 16]).unwrap());
    assert!(
        op.infer(&[Some(xc.clone()), None, Some(scales.clone()), Some(sz)])
            .is_err()
    );
    assert!(op.infer(&[Some(xc.clone())]).is_err());
    let short = Fact::known(Tensor::from_slice(&[2], &[2f32, 2.0]).unwrap());
    assert!(op.infer(&[Some(xc.clone()), None, Some(short)]).is_err());
    let neg = Fact::known(Tensor::from_slice(&[4], &[1f32, 1.0, -2.0, f32::NAN]).unwrap());
    assert!(op.infer(&[Some(xc.clone()), None, Some(neg)]).is_err());
    let huge = Fact::known(Tensor::from_slice(&[4], &[1f32, 1.0, 1e30, 1.0]).unwrap());
    assert!(op.infer(&[Some(xc.clone()), None, Some(huge)]).is_err());
    let bad_axes =
        build_resize(&attrs("nearest", "asymmetric", "floor").with("axes", Attr::Ints(vec![2, 2])))
            .unwrap();
    let two = Fact::known(Tensor::from_slice(&[2], &[2f32, 2.0]).unwrap());
    assert!(
        bad_axes
            .infer(&[Some(xc.clone()), None, Some(two)])
            .is_err()
    );
    // linear needs f32
    let xi = Fact::new(DType::I64, vec![Dim::Known(1), Dim::Known(3)]);
    assert!(op.infer(&[Some(xi), None, Some(scales)]).is_err());
    // unsupported attributes
    for (k, v) in [
        ("mode", "cubic"),
        ("coordinate_transformation_mode", "tf_crop_and_resize"),
        ("keep_aspect_ratio_policy", "not_larger"),
    ] {
        let e = build_resize(&Attrs::new().with(k, Attr::Str(v.into()))).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported, "{k}={v}");
    }
    assert!(build_resize(&Attrs::new().with("antialias", Attr::Int(1))).is_err());
    assert!(build_resize(&Attrs::new().with("mode", Attr::Str("bilinear".into()))).is_err());
}
