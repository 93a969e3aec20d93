//! Tests of the reductions and ArgMax/ArgMin against naive f64 references.

use super::*;
use crate::graph::Attr;
use crate::ops::eval_owned;
use crate::tensor::Tensor;

const KINDS: [Kind; 10] = [
    Kind::Sum,
    Kind::Mean,
    Kind::Max,
    Kind::Min,
    Kind::Prod,
    Kind::L1,
    Kind::L2,
    Kind::SumSquare,
    Kind::LogSum,
    Kind::LogSumExp,
];

fn rand_vec(seed: &mut u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            lo + (*seed >> 40) as f32 / (1u64 << 24) as f32 * (hi - lo)
        })
        .collect()
}

fn op(kind: Kind, keepdims: Option<i64>, noop: Option<i64>) -> Box<dyn Op> {
    let mut a = Attrs::new();
    if let Some(k) = keepdims {
        a.set("keepdims", Attr::Int(k));
    }
    if let Some(n) = noop {
        a.set("noop_with_empty_axes", Attr::Int(n));
    }
    build(kind, &a).unwrap()
}

fn run(op: &dyn Op, x: Tensor, axes: Option<&[i64]>) -> Tensor {
    let axes = axes.map(|a| Tensor::from_slice(&[a.len()], a).unwrap());
    eval_owned(op, &[Some(x), axes]).unwrap().remove(0)
}

fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        idx[d] = i % dims[d];
        i /= dims[d];
    }
    idx
}

/// The reduction from its definition, in f64: group every input element
/// by its kept coordinates.
fn naive(
    kind: Kind,
    x: &[f32],
    dims: &[usize],
    red: &[bool],
    keep: bool,
) -> (Vec<usize>, Vec<f64>) {
    let full: Vec<usize> = dims
        .iter()
        .zip(red)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let mut groups = vec![Vec::new(); full.iter().product()];
    for (i, &v) in x.iter().enumerate() {
        let idx = unravel(i, dims);
        let o = idx
            .iter()
            .zip(red)
            .zip(&full)
            .fold(0, |acc, ((&j, &r), &d)| acc * d + if r { 0 } else { j });
        groups[o].push(v as f64);
    }
    let vals = groups
        .iter()
        .map(|g| match kind {
            Kind::Sum => g.iter().sum(),
            Kind::Mean => g.iter().sum::<f64>() / g.len() as f64,
            Kind::Max => g.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            Kind::Min => g.iter().cloned().fold(f64::INFINITY, f64::min),
            Kind::Prod => g.iter().product(),
            Kind::L1 => g.iter().map(|v| v.abs()).sum(),
            Kind::L2 => g.iter().map(|v| v * v).sum::<f64>().sqrt(),
            Kind::SumSquare => g.iter().map(|v| v * v).sum(),
            Kind::LogSum => g.iter().sum::<f64>().ln(),
            Kind::LogSumExp => g.iter().map(|v| v.exp()).sum::<f64>().ln(),
        })
        .collect();
    let out_dims = dims
        .iter()
        .zip(red)
        .filter_map(|(&d, &r)| match (r, keep) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    (out_dims, vals)
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan())
            || g as f64 == w
            || (g as f64 - w).abs() <= tol * (1.0 + w.abs());
        assert!(ok, "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn every_kind_matches_naive_on_every_axis_subset() {
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for dims in [
        &[7usize][..],
        &[3, 5],
        &[2, 3, 5],
        &[3, 1, 4, 5],
        &[2, 3, 1, 5, 3],
    ] {
        let r = dims.len();
        let n: usize = dims.iter().product();
        for kind in KINDS {
            let (lo, hi) = match kind {
                Kind::Prod | Kind::LogSum => (0.6, 1.4),
                _ => (-3.0, 3.0),
            };
            let x = rand_vec(&mut seed, n, lo, hi);
            for subset in 0..(1u32 << r) {
                let red: Vec<bool> = (0..r).map(|i| subset & (1 << i) != 0).collect();
                // give half of the axes negative, in reverse order
                let axes: Vec<i64> = (0..r as i64)
                    .rev()
                    .filter(|&i| red[i as usize])
                    .map(|i| if i % 2 == 1 { i - r as i64 } else { i })
                    .collect();
                let red_all = if subset == 0 {
                    vec![true; r]
                } else {
                    red.clone()
                };
                for keep in [0, 1] {
                    let o = op(kind, Some(keep), None);
                    let got = run(
                        o.as_ref(),
                        Tensor::from_slice(dims, &x).unwrap(),
                        Some(&axes),
                    );
                    let (want_dims, want) = naive(kind, &x, dims, &red_all, keep == 1);
                    let what = format!("{kind:?} {dims:?} axes {axes:?} keepdims {keep}");
                    assert_eq!(got.dims, want_dims, "{what}");
                    assert_close(got.as_slice::<f32>().unwrap(), &want, 2e-6, &what);
                }
            }
        }
    }
}

#[test]
fn long_rows_and_columns_match_naive() {
    let mut seed = 77;
    for dims in [[3usize, 1000], [1000, 3], [5, 301]] {
        let x = rand_vec(&mut seed, dims[0] * dims[1], -1.0, 1.0);
        for (axes, red) in [([1i64], [false, true]), ([0], [true, false])] {
            for kind in [Kind::Sum, Kind::Mean, Kind::Max, Kind::L2, Kind::LogSumExp] {
                let got = run(
                    op(kind, Some(1), None).as_ref(),
                    Tensor::from_slice(&dims, &x).unwrap(),
                    Some(&axes),
                );
                let (_, want) = naive(kind, &x, &dims, &red, true);
                let what = format!("{kind:?} {dims:?} axis {axes:?}");
                assert_close(got.as_slice::<f32>().unwrap(), &want, 1e-5, &what);
            }
        }
    }
}

#[test]
fn missing_or_empty_axes_reduce_all_unless_noop() {
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let t = || Tensor::from_slice(&[3, 4], &x).unwrap();
    for axes in [None, Some(&[][..])] {
        let got = run(op(Kind::Sum, None, None).as_ref(), t(), axes);
        assert_eq!(got.dims, vec![1, 1]);
        assert_eq!(got.as_slice::<f32>().unwrap(), &[66.0]);
        let got = run(op(Kind::Sum, Some(0), None).as_ref(), t(), axes);
        assert_eq!(got.dims, Vec::<usize>::new());
        let got = run(op(Kind::Mean, None, Some(1)).as_ref(), t(), axes);
        assert_eq!(got.dims, vec![3, 4]);
        assert_eq!(got.as_slice::<f32>().unwrap(), &x[..]);
    }
}

#[test]
fn empty_sets_reduce_to_the_identity() {
    let x = Tensor::from_slice::<f32>(&[2, 0, 3], &[]).unwrap();
    for (kind, want) in [
        (Kind::Sum, 0.0),
        (Kind::Prod, 1.0),
        (Kind::Max, f32::NEG_INFINITY),
        (Kind::Min, f32::INFINITY),
        (Kind::L1, 0.0),
        (Kind::L2, 0.0),
        (Kind::SumSquare, 0.0),
        (Kind::LogSum, f32::NEG_INFINITY),
        (Kind::LogSumExp, f32::NEG_INFINITY),
    ] {
        let got = run(op(kind, Some(1), None).as_ref(), x.clone(), Some(&[1]));
        assert_eq!(got.dims, vec![2, 1, 3], "{kind:?}");
        assert!(
            got.as_slice::<f32>().unwrap().iter().all(|&v| v == want),
            "{kind:?}"
        );
    }
    let got = run(
        op(Kind::Mean, Some(1), None).as_ref(),
        x.clone(),
        Some(&[1]),
    );
    assert!(got.as_slice::<f32>().unwrap().iter().all(|v| v.is_nan()));
    // a kept empty dim gives an empty output
    let got = run(op(Kind::Sum, Some(0), None).as_ref(), x, Some(&[2]));
    assert_eq!(got.dims, vec![2, 0]);
}

#[test]
fn max_min_propagate_nan_and_logsumexp_is_stable() {
    let x = Tensor::from_slice(&[2, 3], &[1.0f32, f32::NAN, 3.0, 1000.0, 1001.0, 999.0]).unwrap();
    for kind in [Kind::Max, Kind::Min] {
        let got = run(op(kind, Some(0), None).as_ref(), x.clone(), Some(&[1]));
        let v = got.as_slice::<f32>().unwrap();
        assert!(v[0].is_nan(), "{kind:?} {v:?}");
        assert_eq!(v[1], if kind == Kind::Max { 1001.0 } else { 999.0 });
    }
    let got = run(op(Kind::LogSumExp, Some(0), None).as_ref(), x, Some(&[1]));
    let want = 1001.0 + (1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln();
    let v = got.as_slice::<f32>().unwrap()[1];
    assert!((v as f64 - want).abs() < 1e-3, "{v} vs {want}");
}

#[test]
fn integers_and_bools() {
    let mut seed = 5;
    let dims = [3usize, 4, 5];
    let xf = rand_vec(&mut seed, 60, -50.0, 50.0);
    let xi: Vec<i64> = xf.iter().map(|&v| v as i64).collect();
    let xf_exact: Vec<f32> = xi.iter().map(|&v| v as f32).collect();
    for kind in [Kind::Sum, Kind::Max, Kind::Min] {
        for axes in [&[0i64][..], &[1], &[-1], &[0, 2]] {
            let red: Vec<bool> = (0..3)
                .map(|i| axes.iter().any(|&a| (a + 3) % 3 == i))
                .collect();
            let (want_dims, want) = naive(kind, &xf_exact, &dims, &red, false);
            let want: Vec<i64> = want.iter().map(|&v| v as i64).collect();
            let got = run(
                op(kind, Some(0), None).as_ref(),
                Tensor::from_slice(&dims, &xi).unwrap(),
                Some(axes),
            );
            assert_eq!(got.dtype, DType::I64);
            assert_eq!(got.dims, want_dims);
            assert_eq!(
                got.as_slice::<i64>().unwrap(),
                &want[..],
                "{kind:?} {axes:?}"
            );
            let x32: Vec<i32> = xi.iter().map(|&v| v as i32).collect();
            let got = run(
                op(kind, Some(0), None).as_ref(),
                Tensor::from_slice(&dims, &x32).unwrap(),
                Some(axes),
            );
            let got: Vec<i64> = got.to_i64_vec().unwrap();
            assert_eq!(got, want, "i32 {kind:?} {axes:?}");
        }
    }
    let small: Vec<i64> = vec![2, -3, 4, 1, 5, -1];
    let got = run(
        op(Kind::Prod, Some(0), None).as_ref(),
        Tensor::from_slice(&[2, 3], &small).unwrap(),
        Some(&[1]),
    );
    assert_eq!(got.as_slice::<i64>().unwrap(), &[-24, -5]);

    let b = Tensor::from_bool(&[2, 3], &[true, false, true, true, true, true]).unwrap();
    let got = run(op(Kind::Max, Some(0), None).as_ref(), b.clone(), Some(&[1]));
    assert_eq!(got.dtype, DType::Bool);
    assert_eq!(got.data.as_bytes(), &[1, 1]);
    let got = run(op(Kind::Min, Some(0), None).as_ref(), b, Some(&[1]));
    assert_eq!(got.data.as_bytes(), &[0, 1]);
    let e = Tensor::from_bool(&[2, 0], &[]).unwrap();
    let got = run(op(Kind::Min, Some(1), None).as_ref(), e.clone(), Some(&[1]));
    assert_eq!(got.data.as_bytes(), &[1, 1]);
    let got = run(op(Kind::Max, Some(1), None).as_ref(), e, Some(&[1]));
    assert_eq!(got.data.as_bytes(), &[0, 0]);
    // no integer mean, no integer max over nothing
    let f = |d: DType, dims: &[usize]| {
        Some(Fact::new(d, dims.iter().map(|&n| Dim::Known(n)).collect()))
    };
    assert!(
        op(Kind::Mean, None, None)
            .infer(&[f(DType::I64, &[2])])
            .is_err()
    );
    assert!(
        op(Kind::Max, None, None)
            .infer(&[f(DType::I64, &[0])])
            .is_err()
    );
}

#[test]
fn infer_keeps_symbols_and_handles_unknown_axes() {
    let n = Dim::Sym("N".into());
    let x = Fact::new(DType::F32, vec![n.clone(), Dim::Known(7), Dim::Known(384)]);
    let axes = |v: &[i64]| Some(Fact::known(Tensor::from_slice(&[v.len()], v).unwrap()));
    let out = op(Kind::Mean, None, None)
        .infer(&[Some(x.clone()), axes(&[-1])])
        .unwrap();
    assert_eq!(out[0].shape, vec![n.clone(), Dim::Known(7), Dim::Known(1)]);
    let out = op(Kind::Sum, Some(0), None)
        .infer(&[Some(x.clone()), axes(&[1])])
        .unwrap();
    assert_eq!(out[0].shape, vec![n.clone(), Dim::Known(384)]);
    // axes known only by length
    let unknown = Some(Fact::new(DType::I64, vec![Dim::Known(2)]));
    let out = op(Kind::Sum, Some(0), None)
        .infer(&[Some(x.clone()), unknown.clone()])
        .unwrap();
    assert_eq!(out[0].rank(), 1);
    let out = op(Kind::Sum, Some(1), None)
        .infer(&[Some(x.clone()), unknown])
        .unwrap();
    assert_eq!(out[0].rank(), 3);
    // an empty axes list of unknown contents: reduce all, or nothing with noop
    let empty = Some(Fact::new(DType::I64, vec![Dim::Known(0)]));
    let out = op(Kind::Sum, Some(0), None)
        .infer(&[Some(x.clone()), empty.clone()])
        .unwrap();
    assert_eq!(out[0].rank(), 0);
    let out = op(Kind::Sum, Some(0), Some(1))
        .infer(&[Some(x.clone()), empty])
        .unwrap();
    assert_eq!(out[0].rank(), 3);
    // bad axes and attributes
    assert!(
        op(Kind::Sum, None, None)
            .infer(&[Some(x.clone()), axes(&[3])])
            .is_err()
    );
    assert!(
        op(Kind::Sum, None, None)
            .infer(&[Some(x.clone()), axes(&[1, -2])])
            .is_err()
    );
    assert!(build(Kind::Sum, &Attrs::new().with("keepdims", Attr::Int(2))).is_err());
    assert!(build(Kind::Max, &Attrs::new().with("axes", Attr::Ints(vec![0]))).is_err());
    assert!(
        op(Kind::Sum, None, None)
            .infer(&[Some(Fact::new(DType::F16, vec![]))])
            .is_err()
    );
}

fn arg(max: bool, axis: i64, keepdims: i64, last: i64) -> Box<dyn Op> {
    let a = Attrs::new()
        .with("axis", Attr::Int(axis))
        .with("keepdims", Attr::Int(keepdims))
        .with("select_last_index", Attr::Int(last));
    build_arg(max, &a).unwrap()
}

#[test]
fn arg_max_min_match_naive_with_ties() {
    let mut seed = 11;
    let dims = [3usize, 4, 5];
    // few distinct values so ties are common
    let x: Vec<f32> = rand_vec(&mut seed, 60, 0.0, 4.0)
        .iter()
        .map(|v| v.floor())
        .collect();
    for max in [true, false] {
        for ax in -3i64..3 {
            let a = ((ax + 3) % 3) as usize;
            for last in [0, 1] {
                for keep in [0, 1] {
                    let out = eval_owned(
                        arg(max, ax, keep, last).as_ref(),
                        &[Some(Tensor::from_slice(&dims, &x).unwrap())],
                    )
                    .unwrap()
                    .remove(0);
                    let mut want_dims = dims.to_vec();
                    if keep == 1 {
                        want_dims[a] = 1;
                    } else {
                        want_dims.remove(a);
                    }
                    assert_eq!(out.dims, want_dims);
                    assert_eq!(out.dtype, DType::I64);
                    let got = out.as_slice::<i64>().unwrap();
                    let full: Vec<usize> =
                        (0..3).map(|i| if i == a { 1 } else { dims[i] }).collect();
                    for (o, &g) in got.iter().enumerate() {
                        let mut idx = unravel(o, &full);
                        let vals: Vec<f32> = (0..dims[a])
                            .map(|j| {
                                idx[a] = j;
                                x[(idx[0] * 4 + idx[1]) * 5 + idx[2]]
                            })
                            .collect();
                        let best = vals.iter().cloned().fold(
                            if max {
                                f32::NEG_INFINITY
                            } else {
                                f32::INFINITY
                            },
                            |m, v| if max { m.max(v) } else { m.min(v) },
                        );
                        let hits: Vec<usize> =
                            (0..vals.len()).filter(|&j| vals[j] == best).collect();
                        let want = if last == 1 {
                            *hits.last().unwrap()
                        } else {
                            hits[0]
                        };
                        assert_eq!(g as usize, want, "max {max} axis {ax} last {last}");
                    }
                }
            }
        }
    }
    let e = arg(true, 1, 1, 0).infer(&[Some(Fact::new(
        DType::F32,
        vec![Dim::Known(2), Dim::Known(0)],
    ))]);
    assert!(e.is_err());
    let n = Dim::Sym("N".into());
    let out = arg(true, -1, 0, 0)
        .infer(&[Some(Fact::new(DType::F32, vec![n.clone(), Dim::Known(5)]))])
        .unwrap();
    assert_eq!(out[0].shape, vec![n]);
    let xi = Tensor::from_slice(&[4], &[3i64, 9, 9, -1]).unwrap();
    let out = eval_owned(arg(true, 0, 0, 0).as_ref(), &[Some(xi.clone())]).unwrap();
    assert_eq!(out[0].as_slice::<i64>().unwrap(), &[1]);
    let out = eval_owned(arg(true, 0, 0, 1).as_ref(), &[Some(xi)]).unwrap();
    assert_eq!(out[0].as_slice::<i64>().unwrap(), &[2]);
}
