//! Tests of the elementwise ops against per-element definitions: every
//! broadcasting path of the binary and compare kernels, Where on every
//! element size, the vectorised unary paths against `Unary::f32`, and GELU.

use super::*;
use crate::graph::Attr;
use crate::ops::eval_owned;
use crate::ops::shape::tests::util::Rng;
use crate::tensor::Tensor;

/// Shape pairs reaching every path of `zip_broadcast`: same shape, scalar
/// either side, runs of (1, 1), (1, 0), (0, 1) and (0, 0) steps, rank 0.
const SHAPES: &[(&[usize], &[usize])] = &[
    (&[2, 3, 4], &[2, 3, 4]),
    (&[2, 3, 4], &[1]),
    (&[1, 1], &[2, 3, 4]),
    (&[2, 3, 4], &[4]),
    (&[2, 3, 4], &[3, 1]),
    (&[3, 1], &[2, 3, 5]),
    (&[2, 1, 4], &[1, 3, 1]),
    (&[2, 1], &[1, 1]),
    (&[4, 1], &[1, 5]),
    (&[], &[2, 3]),
    (&[2, 0, 3], &[3]),
];

/// For each output element, the flat index of each input (numpy broadcasting).
fn broadcast_index(xd: &[usize], yd: &[usize]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let rank = xd.len().max(yd.len());
    let pad = |d: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - d.len()];
        v.extend_from_slice(d);
        v
    };
    let (xp, yp) = (pad(xd), pad(yd));
    let od: Vec<usize> = (0..rank).map(|i| xp[i].max(yp[i])).collect();
    let od: Vec<usize> = (0..rank)
        .map(|i| if xp[i] == 0 || yp[i] == 0 { 0 } else { od[i] })
        .collect();
    let n: usize = od.iter().product();
    let flat = |p: &[usize], idx: &[usize]| {
        idx.iter()
            .zip(p)
            .fold(0, |acc, (&i, &d)| acc * d + if d == 1 { 0 } else { i })
    };
    let pairs = (0..n)
        .map(|mut i| {
            let mut idx = vec![0; rank];
            for d in (0..rank).rev() {
                idx[d] = i % od[d];
                i /= od[d];
            }
            (flat(&xp, &idx), flat(&yp, &idx))
        })
        .collect();
    (od, pairs)
}

fn rand_f32(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next() >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0)
        .collect()
}

fn op(b: fn(&Attrs) -> Result<Box<dyn Op>>) -> Box<dyn Op> {
    b(&Attrs::new()).unwrap()
}

const F32_OPS: [(BinOp, Builder); 7] = [
    (BinOp::Add, build_add),
    (BinOp::Sub, build_sub),
    (BinOp::Mul, build_mul),
    (BinOp::Div, build_div),
    (BinOp::Pow, build_pow),
    (BinOp::Max, build_max),
    (BinOp::Min, build_min),
];
type Builder = fn(&Attrs) -> Result<Box<dyn Op>>;

fn f32_ref(op: BinOp, a: f32, b: f32) -> f32 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Pow => a.powf(b),
        BinOp::Max if a.is_nan() || b.is_nan() => f32::NAN,
        BinOp::Min if a.is_nan() || b.is_nan() => f32::NAN,
        BinOp::Max => a.max(b),
        BinOp::Min => a.min(b),
        _ => unreachable!(),
    }
}

fn same(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

#[test]
fn f32_binary_ops_match_the_definition_on_every_broadcast_path() {
    let mut rng = Rng(7);
    for &(xd, yd) in SHAPES {
        let mut x = rand_f32(&mut rng, xd.iter().product());
        let y = rand_f32(&mut rng, yd.iter().product());
        if let Some(v) = x.first_mut() {
            *v = f32::NAN;
        }
        let (od, pairs) = broadcast_index(xd, yd);
        for (bop, build) in F32_OPS {
            let ins = [
                Some(Tensor::from_slice(xd, &x).unwrap()),
                Some(Tensor::from_slice(yd, &y).unwrap()),
            ];
            let out = eval_owned(&*op(build), &ins).unwrap();
            assert_eq!(out[0].dims, od, "{bop:?} {xd:?} {yd:?}");
            let got = out[0].as_slice::<f32>().unwrap();
            for (k, &(i, j)) in pairs.iter().enumerate() {
                let want = f32_ref(bop, x[i], y[j]);
                assert!(
                    same(got[k], want),
                    "{bop:?} {xd:?} {yd:?} [{k}]: {} vs {want}",
                    got[k]
                );
            }
        }
    }
}

/// Large enough to be split across threads: pieces along the first dim
/// longer than 1, each operand sliced or (broadcast along it) whole.
#[test]
fn threaded_binary_and_unary_ops_match_one_thread_and_the_definition() {
    let shapes: &[(&[usize], &[usize])] = &[
        (&[1, 24, 40, 40], &[1, 24, 1, 1]),
        (&[1, 1, 40, 40], &[1, 24, 40, 40]),
        (&[2, 3, 80, 80], &[80]),
        (&[1, 64, 600], &[1, 64, 600]),
        (&[1, 1, 40001], &[1]),
        (&[7, 1, 5000], &[1, 3, 1]),
    ];
    let run = |op: &dyn Op, ins: &[Option<Tensor>], threads| {
        crate::ops::conv::tests::run(op, ins, threads)
    };
    let mut rng = Rng(17);
    for &(xd, yd) in shapes {
        let x = rand_f32(&mut rng, xd.iter().product());
        let y = rand_f32(&mut rng, yd.iter().product());
        let (od, pairs) = broadcast_index(xd, yd);
        let ins = [
            Some(Tensor::from_slice(xd, &x).unwrap()),
            Some(Tensor::from_slice(yd, &y).unwrap()),
        ];
        for (bop, build) in [(BinOp::Add, build_add as Builder), (BinOp::Div, build_div)] {
            let (dims, got) = run(&*op(build), &ins, 2);
            assert_eq!(dims, od, "{bop:?} {xd:?} {yd:?}");
            for (k, &(i, j)) in pairs.iter().enumerate() {
                let want = f32_ref(bop, x[i], y[j]);
                assert!(same(got[k], want), "{bop:?} {xd:?} {yd:?} [{k}]");
            }
        }
        let sig = op(build_sigmoid);
        let (_, one) = run(&*sig, &ins[..1], 1);
        let (_, two) = run(&*sig, &ins[..1], 2);
        assert_eq!(one, two, "Sigmoid {xd:?}");
    }
}

#[test]
fn pow_by_two_squares_exactly() {
    let x = [
        -3.5f32,
        -0.0,
        1e20,
        1e-30,
        f32::NAN,
        f32::NEG_INFINITY,
        7.25,
    ];
    for two in [
        Tensor::scalar(2.0f32),
        Tensor::from_slice(&[1], &[2.0f32]).unwrap(),
    ] {
        let out = eval_owned(
            &*op(build_pow),
            &[Some(Tensor::from_slice(&[7], &x).unwrap()), Some(two)],
        )
        .unwrap();
        for (&g, &v) in out[0].as_slice::<f32>().unwrap().iter().zip(&x) {
            assert!(same(g, v.powf(2.0)), "{v}² = {g}");
        }
    }
    let out = eval_owned(
        &*op(build_pow),
        &[
            Some(Tensor::from_slice(&[3], &[3i64, -4, 1 << 40]).unwrap()),
            Some(Tensor::scalar(2i64)),
        ],
    )
    .unwrap();
    assert_eq!(out[0].as_slice::<i64>().unwrap(), [9, 16, 0]);
}

fn int_case<T: Element + Arith + std::fmt::Debug + TryFrom<i64>>(
    vals: &[i64],
    ops: &[(BinOp, Builder)],
) {
    let mut rng = Rng(11);
    let pick = |rng: &mut Rng, n: usize| -> Vec<T> {
        (0..n)
            .map(|_| T::try_from(vals[rng.below(vals.len())]).unwrap_or_default())
            .collect()
    };
    for &(xd, yd) in SHAPES {
        let x = pick(&mut rng, xd.iter().product());
        let y = pick(&mut rng, yd.iter().product());
        let (_, pairs) = broadcast_index(xd, yd);
        for &(bop, build) in ops {
            let ins = [
                Some(Tensor::from_slice(xd, &x).unwrap()),
                Some(Tensor::from_slice(yd, &y).unwrap()),
            ];
            let out = eval_owned(&*op(build), &ins).unwrap();
            let got = out[0].as_slice::<T>().unwrap();
            for (k, &(i, j)) in pairs.iter().enumerate() {
                let (a, b) = (x[i], y[j]);
                let want = match bop {
                    BinOp::Add => T::add(a, b),
                    BinOp::Sub => T::sub(a, b),
                    BinOp::Mul => T::mul(a, b),
                    BinOp::Div => T::div(a, b),
                    BinOp::Pow => T::pow(a, b),
                    BinOp::Max => T::max(a, b),
                    _ => T::min(a, b),
                };
                assert_eq!(got[k], want, "{bop:?} {a:?} {b:?}");
            }
        }
    }
}

#[test]
fn integer_binary_ops_wrap_and_divide_by_zero_to_zero() {
    assert_eq!(<i64 as Arith>::div(7, 0), 0);
    assert_eq!(<i64 as Arith>::div(i64::MIN, -1), 0);
    assert_eq!(<i32 as Arith>::add(i32::MAX, 1), i32::MIN);
    assert_eq!(<u8 as Arith>::sub(0, 1), 255);
    assert_eq!(<i8 as Arith>::pow(2, -1), 0);
    assert_eq!(<i32 as Arith>::pow(3, 6), 729);
    assert_eq!(<i8 as Arith>::pow(2, 7), -128);
    assert_eq!(<i64 as Arith>::pow(3, 1 << 40), 3i64.wrapping_pow(u32::MAX));
    let vals = [0, 1, -1, 2, 3, -7, 100, 127, -128, 255];
    int_case::<i64>(&vals, &F32_OPS);
    int_case::<i32>(&vals, &F32_OPS);
    int_case::<i8>(&vals, &F32_OPS);
    int_case::<u8>(&vals, &F32_OPS);
}

#[test]
fn comparisons_broadcast_and_give_bools() {
    let mut rng = Rng(3);
    for &(xd, yd) in SHAPES {
        let x: Vec<f32> = (0..xd.iter().product())
            .map(|_| rng.below(3) as f32)
            .collect();
        let y: Vec<f32> = (0..yd.iter().product())
            .map(|_| rng.below(3) as f32)
            .collect();
        let (od, pairs) = broadcast_index(xd, yd);
        for (build, f) in [
            (
                build_equal as Builder,
                (|a, b| a == b) as fn(f32, f32) -> bool,
            ),
            (build_less, |a, b| a < b),
            (build_greater, |a, b| a > b),
        ] {
            for ints in [false, true] {
                let t = |d: &[usize], v: &[f32]| {
                    if ints {
                        let v: Vec<i64> = v.iter().map(|&f| f as i64).collect();
                        Tensor::from_slice(d, &v).unwrap()
                    } else {
                        Tensor::from_slice(d, v).unwrap()
                    }
                };
                let out = eval_owned(&*op(build), &[Some(t(xd, &x)), Some(t(yd, &y))]).unwrap();
                assert_eq!(out[0].dtype, DType::Bool);
                assert_eq!(out[0].dims, od);
                let want: Vec<u8> = pairs.iter().map(|&(i, j)| f(x[i], y[j]) as u8).collect();
                assert_eq!(out[0].view().data, &want[..], "{xd:?} {yd:?}");
            }
        }
    }
}

#[test]
fn where_picks_per_element_for_every_element_size() {
    let mut rng = Rng(5);
    let shapes: [[&[usize]; 3]; 5] = [
        [&[2, 3, 4], &[2, 3, 4], &[2, 3, 4]],
        [&[2, 1, 4], &[3, 1], &[]],
        [&[4], &[2, 3, 4], &[1]],
        [&[2, 1], &[1, 5], &[2, 5]],
        [&[0, 3], &[3], &[1]],
    ];
    for [cd, xd, yd] in shapes {
        let c: Vec<bool> = (0..cd.iter().product())
            .map(|_| rng.below(2) == 1)
            .collect();
        let nx: usize = xd.iter().product();
        let ny: usize = yd.iter().product();
        let xs: Vec<i64> = (0..nx as i64).collect();
        let ys: Vec<i64> = (0..ny as i64).map(|v| -1 - v).collect();
        // broadcast c against x, then the result against y
        let (cx, pcx) = broadcast_index(cd, xd);
        let (od, pairs) = broadcast_index(&cx, yd);
        let want: Vec<i64> = pairs
            .iter()
            .map(|&(k, j)| {
                let (ci, xi) = pcx[k];
                if c[ci] { xs[xi] } else { ys[j] }
            })
            .collect();
        let ct = Tensor::from_bool(cd, &c).unwrap();
        let tensors: [(Tensor, Tensor); 5] = [
            (
                Tensor::from_slice(xd, &xs).unwrap(),
                Tensor::from_slice(yd, &ys).unwrap(),
            ),
            (
                Tensor::from_slice(xd, &xs.iter().map(|&v| v as f32).collect::<Vec<_>>()).unwrap(),
                Tensor::from_slice(yd, &ys.iter().map(|&v| v as f32).collect::<Vec<_>>()).unwrap(),
            ),
            (
                Tensor::from_slice(xd, &xs.iter().map(|&v| v as i8).collect::<Vec<_>>()).unwrap(),
                Tensor::from_slice(yd, &ys.iter().map(|&v| v as i8).collect::<Vec<_>>()).unwrap(),
            ),
            (
                Tensor::from_slice(
                    xd,
                    &xs.iter()
                        .map(|&v| half::f16::from_f32(v as f32))
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
                Tensor::from_slice(
                    yd,
                    &ys.iter()
                        .map(|&v| half::f16::from_f32(v as f32))
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
            ),
            (
                Tensor::from_slice(xd, &xs.iter().map(|&v| v as i32).collect::<Vec<_>>()).unwrap(),
                Tensor::from_slice(yd, &ys.iter().map(|&v| v as i32).collect::<Vec<_>>()).unwrap(),
            ),
        ];
        for (x, y) in tensors {
            let dtype = x.dtype;
            let out = eval_owned(&*op(build_where), &[Some(ct.clone()), Some(x), Some(y)]).unwrap();
            assert_eq!(out[0].dims, od, "{dtype}");
            let got: Vec<i64> = out[0]
                .to_f32_vec()
                .unwrap()
                .iter()
                .map(|&v| v as i64)
                .collect();
            let want: Vec<i64> = match dtype {
                DType::I8 => want.iter().map(|&v| v as i8 as i64).collect(),
                _ => want.clone(),
            };
            assert_eq!(got, want, "{dtype} {cd:?} {xd:?} {yd:?}");
        }
    }
}

#[test]
fn data_that_does_not_match_its_shape_is_an_error() {
    let x = [1f32; 4];
    let bad = TensorRef {
        dtype: DType::F32,
        dims: &[2, 3],
        data: bytemuck::cast_slice(&x),
    };
    let good = TensorRef {
        dtype: DType::F32,
        dims: &[3],
        data: bytemuck::cast_slice(&x[..3]),
    };
    let mut o = [0f32; 6];
    let mut out = [TensorMut {
        dtype: DType::F32,
        dims: &[2, 3],
        data: bytemuck::cast_slice_mut(&mut o),
    }];
    let r = op(build_add).eval(&mut Ctx::new(1), &[Some(bad), Some(good)], &mut out);
    assert!(r.is_err());
    let r = op(build_exp).eval(&mut Ctx::new(1), &[Some(bad)], &mut out);
    assert!(r.is_err());
    let c = TensorRef {
        dtype: DType::Bool,
        dims: &[2, 3],
        data: &[1, 0, 1],
    };
    let r = op(build_where).eval(
        &mut Ctx::new(1),
        &[Some(c), Some(good), Some(good)],
        &mut out,
    );
    assert!(r.is_err());
}

const UNARIES: [Unary; 15] = [
    Unary::Relu,
    Unary::LeakyRelu(0.1),
    Unary::Sigmoid,
    Unary::Tanh,
    Unary::HardSigmoid(0.2, 0.5),
    Unary::HardSwish,
    Unary::Neg,
    Unary::Exp,
    Unary::Log,
    Unary::Sqrt,
    Unary::Erf,
    Unary::Abs,
    Unary::Reciprocal,
    Unary::Gelu,
    Unary::GeluTanh,
];

#[test]
fn vectorised_unaries_match_the_scalar_definitions() {
    let xs: Vec<f32> = (0..20_001)
        .map(|i| (i as f32 - 10_000.0) * 1e-3)
        .chain([0.0, -0.0, 1e-30, 80.0, -80.0, f32::NAN])
        .collect();
    for u in UNARIES {
        let mut got = xs.clone();
        u.apply_f32(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let w = u.f32(x);
            let ok = same(g, w) || (g - w).abs() <= 1e-6 * w.abs().max(1.0);
            assert!(ok, "{u:?}({x}) = {g}, scalar {w}");
        }
    }
}

#[test]
fn gelu_op_and_activation() {
    let x: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.25).collect();
    for (approx, u, act) in [
        (None, Unary::Gelu, "gelu"),
        (Some("none"), Unary::Gelu, "gelu"),
        (Some("tanh"), Unary::GeluTanh, "gelu_tanh"),
    ] {
        let mut a = Attrs::new();
        if let Some(s) = approx {
            a.set("approximate", Attr::Str(s.into()));
        }
        let out = eval_owned(
            &*build_gelu(&a).unwrap(),
            &[Some(Tensor::from_slice(&[81], &x).unwrap())],
        )
        .unwrap();
        let got = out[0].as_slice::<f32>().unwrap();
        let fused = Activation::from_attrs(&Attrs::new().with("activation", Attr::Str(act.into())))
            .unwrap();
        let mut y = x.clone();
        fused.apply(&mut y);
        assert_eq!(got, &y[..], "{act}");
        for (&v, &g) in x.iter().zip(got) {
            assert!(
                (g - u.f32(v)).abs() <= 1e-6 * v.abs().max(1.0),
                "{u:?}({v}) = {g}"
            );
        }
    }
    let bad = Attrs::new().with("approximate", Attr::Str("fast".into()));
    let e = build_gelu(&bad).unwrap_err();
    assert!(e.to_string().contains("approximate"), "{e}");
    let e = Activation::from_attrs(&Attrs::new().with("activation", Attr::Str("swish".into())))
        .unwrap_err();
    assert!(e.to_string().contains("gelu_tanh"), "{e}");
}

#[test]
fn fused_activation_with_affine_is_the_activation_then_mul_then_add() {
    let x: Vec<f32> = (0..57).map(|i| (i as f32 - 28.0) * 0.37).collect();
    let a = Attrs::new()
        .with("activation", Attr::Str("hard_swish".into()))
        .with("activation_scale", Attr::Float(0.83))
        .with("activation_shift", Attr::Float(-0.21));
    let act = Activation::from_attrs(&a).unwrap();
    let mut y = x.clone();
    act.apply(&mut y);
    for (&v, &g) in x.iter().zip(&y) {
        // Mul then Add, each rounded: exactly what the two ONNX nodes give.
        let want = Unary::HardSwish.f32(v) * 0.83 + -0.21;
        assert_eq!(g.to_bits(), want.to_bits(), "x = {v}");
    }
    // With no activation: the affine alone, also rounded in two steps.
    let a = Attrs::new()
        .with("activation_scale", Attr::Float(0.3535534))
        .with("activation_shift", Attr::Float(1.5));
    let mut y = x.clone();
    Activation::from_attrs(&a).unwrap().apply(&mut y);
    for (&v, &g) in x.iter().zip(&y) {
        assert_eq!(g.to_bits(), (v * 0.3535534 + 1.5).to_bits(), "x = {v}");
    }
    // Not after gelu or clip.
    for act in ["gelu", "clip"] {
        let a = Attrs::new()
            .with("activation", Attr::Str(act.into()))
            .with("activation_scale", Attr::Float(2.0));
        let e = Activation::from_attrs(&a).unwrap_err();
        assert!(e.to_string().contains("activation_scale"), "{act}: {e}");
    }
}

#[test]
fn variadic_max_min_fold_every_input_with_broadcasting() {
    let a = Tensor::from_slice(&[3, 1], &[1f32, 5.0, -2.0]).unwrap();
    let b = Tensor::from_slice(&[2], &[0f32, 4.0]).unwrap();
    let c = Tensor::scalar(3f32);
    let max = eval_owned(
        &*op(build_max),
        &[Some(a.clone()), Some(b.clone()), Some(c.clone())],
    )
    .unwrap();
    assert_eq!(max[0].dims, [3, 2]);
    assert_eq!(
        max[0].as_slice::<f32>().unwrap(),
        [3.0, 4.0, 5.0, 5.0, 3.0, 4.0]
    );
    let min = eval_owned(&*op(build_min), &[Some(a.clone()), Some(b), Some(c)]).unwrap();
    assert_eq!(
        min[0].as_slice::<f32>().unwrap(),
        [0.0, 1.0, 0.0, 3.0, -2.0, -2.0]
    );
    let one = eval_owned(&*op(build_max), &[Some(a)]).unwrap();
    assert_eq!(one[0].as_slice::<f32>().unwrap(), [1.0, 5.0, -2.0]);
}
