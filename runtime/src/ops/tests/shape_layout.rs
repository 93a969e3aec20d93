//! Tests of Transpose, Expand, Tile and Pad against naive index-by-index
//! references.

use super::super::shape::tests::util::*;
use super::*;
use crate::dtype::DType;
use crate::graph::Attr;
use crate::tensor::Tensor;

/// Naive gather by an index function from output index to input index.
fn by_index(x: &Tensor, od: &[usize], f: impl Fn(&[usize]) -> Vec<usize>) -> Vec<u8> {
    let mut out = vec![];
    for i in 0..od.iter().product() {
        out.extend_from_slice(elem(x, ravel(&f(&unravel(i, od)), &x.dims)));
    }
    out
}

#[test]
fn transpose_matches_reference() {
    let mut rng = Rng(21);
    for t in 0..300 {
        let rank = rng.below(6);
        let max = if rank <= 2 { 40 } else { 5 };
        let dims = rng.dims(rank, max);
        let x = rand_tensor(&mut rng, DTYPES[t % 4], &dims);
        let mut perm: Vec<usize> = (0..rank).collect();
        for i in 0..rank {
            perm.swap(i, rng.below(rank));
        }
        let attrs = if t % 5 == 0 {
            perm = (0..rank).rev().collect();
            Attrs::new()
        } else {
            Attrs::new().with("perm", Attr::Ints(perm.iter().map(|&p| p as i64).collect()))
        };
        let y = run1(build_transpose, &attrs, &[Some(x.clone())]);
        let od: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        assert_eq!(y.dims, od);
        let want = by_index(&x, &od, |o| {
            let mut i = vec![0; rank];
            for k in 0..rank {
                i[perm[k]] = o[k];
            }
            i
        });
        assert_eq!(
            y.data.as_bytes(),
            want.as_slice(),
            "dims {dims:?} perm {perm:?}"
        );
    }
    for bad in [vec![0, 0], vec![0, 2], vec![-1, 0]] {
        assert!(build_transpose(&Attrs::new().with("perm", Attr::Ints(bad))).is_err());
    }
    let x = rand_tensor(&mut rng, DType::F32, &[2, 3, 4]);
    assert!(
        run(
            build_transpose,
            &Attrs::new().with("perm", Attr::Ints(vec![1, 0])),
            &[Some(x)]
        )
        .is_err()
    );
    let s = infer(
        build_transpose,
        &Attrs::new().with("perm", Attr::Ints(vec![0, 2, 3, 1])),
        &[fact(DType::F32, &["N", "3", "H", "W"])],
    );
    assert_eq!(s.unwrap()[0].shape, shape(&["N", "H", "W", "3"]));
}

#[test]
fn expand_and_tile_match_reference() {
    let mut rng = Rng(22);
    for t in 0..300 {
        let rank = rng.below(4);
        let dims: Vec<usize> = (0..rank)
            .map(|_| {
                if rng.below(2) == 0 {
                    1
                } else {
                    1 + rng.below(4)
                }
            })
            .collect();
        let x = rand_tensor(&mut rng, DTYPES[t % 4], &dims);
        // Expand: target rank >= rank, each target dim 1 / equal / new where input is 1.
        let extra = rng.below(3);
        let mut target: Vec<i64> = (0..extra).map(|_| rng.below(4) as i64).collect();
        target.extend(dims.iter().map(|&d| match rng.below(3) {
            0 => 1,
            _ if d == 1 => rng.below(4) as i64,
            _ => d as i64,
        }));
        let y = run1(
            build_expand,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&target))],
        );
        let od: Vec<usize> = (0..target.len())
            .map(|k| match k.checked_sub(extra).map(|j| dims[j]) {
                Some(d) if d != 1 => d,
                _ => target[k] as usize,
            })
            .collect();
        assert_eq!(y.dims, od, "dims {dims:?} target {target:?}");
        let want = by_index(&x, &od, |o| {
            (0..rank)
                .map(|k| if dims[k] == 1 { 0 } else { o[k + extra] })
                .collect()
        });
        assert_eq!(y.data.as_bytes(), want.as_slice());
        // Tile
        let reps: Vec<i64> = (0..rank).map(|_| rng.below(4) as i64).collect();
        let y = run1(
            build_tile,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&reps))],
        );
        let od: Vec<usize> = dims
            .iter()
            .zip(&reps)
            .map(|(&d, &r)| d * r as usize)
            .collect();
        assert_eq!(y.dims, od);
        let want = by_index(&x, &od, |o| {
            o.iter().zip(&dims).map(|(&i, &d)| i % d).collect()
        });
        assert_eq!(y.data.as_bytes(), want.as_slice());
    }
    let x = rand_tensor(&mut rng, DType::F32, &[2, 3]);
    assert!(
        run(
            build_expand,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&[4, 3]))]
        )
        .is_err()
    );
    assert!(
        run(
            build_expand,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&[-1, 3]))]
        )
        .is_err()
    );
    assert!(
        run(
            build_expand,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&[i64::MAX, i64::MAX, 2, 3]))]
        )
        .is_err()
    );
    assert!(
        run(
            build_tile,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&[2]))]
        )
        .is_err()
    );
    assert!(
        run(
            build_tile,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&[-1, 2]))]
        )
        .is_err()
    );
    assert!(
        run(
            build_tile,
            &Attrs::new(),
            &[Some(x), Some(ints(&[i64::MAX, 2]))]
        )
        .is_err()
    );
    let s = infer(
        build_expand,
        &Attrs::new(),
        &[fact(DType::F32, &["N", "1"]), known(ints(&[1, 1, 5]))],
    );
    assert_eq!(s.unwrap()[0].shape, shape(&["1", "N", "5"]));
    let s = infer(
        build_expand,
        &Attrs::new(),
        &[fact(DType::F32, &["N", "1", "4"]), fact(DType::I64, &["4"])],
    );
    assert_eq!(s.unwrap()[0].shape, shape(&["?", "?", "?", "4"]));
    let s = infer(
        build_tile,
        &Attrs::new(),
        &[fact(DType::F32, &["N", "3"]), known(ints(&[1, 2]))],
    );
    assert_eq!(s.unwrap()[0].shape, shape(&["N", "6"]));
}

/// numpy.pad reference, one axis at a time, on index lists.
fn pad_ref_index(i: i64, n: i64, mode: PadMode) -> Option<i64> {
    if (0..n).contains(&i) {
        return Some(i);
    }
    match mode {
        PadMode::Constant => None,
        PadMode::Edge => Some(i.clamp(0, n - 1)),
        PadMode::Wrap => Some(i.rem_euclid(n)),
        PadMode::Reflect => {
            // bounce back and forth, one step at a time
            let (mut j, mut dir, mut steps) = (
                if i < 0 { 0 } else { n - 1 },
                if i < 0 { 1 } else { -1 },
                if i < 0 { -i } else { i - n + 1 },
            );
            while steps > 0 {
                if n == 1 {
                    break;
                }
                if j + dir < 0 || j + dir >= n {
                    dir = -dir;
                }
                j += dir;
                steps -= 1;
            }
            Some(j)
        }
    }
}

#[test]
fn pad_matches_reference() {
    let mut rng = Rng(23);
    for t in 0..400 {
        let rank = rng.below(4);
        let dims = rng.dims(rank, 4);
        let dt = DTYPES[t % 4];
        let x = rand_tensor(&mut rng, dt, &dims);
        let mode = [
            PadMode::Constant,
            PadMode::Reflect,
            PadMode::Edge,
            PadMode::Wrap,
        ][t % 4];
        let name = ["constant", "reflect", "edge", "wrap"][t % 4];
        let use_axes = rank > 0 && rng.below(2) == 0;
        let axes: Vec<usize> = if use_axes {
            (0..rank).filter(|_| rng.below(2) == 0).collect()
        } else {
            (0..rank).collect()
        };
        let k = axes.len();
        let mut pads = vec![0i64; 2 * k];
        for p in pads.iter_mut() {
            *p = rng.range(if mode == PadMode::Constant { -1 } else { 0 }, 5);
        }
        let cv = rand_tensor(&mut rng, dt, &[]);
        let mut ins = vec![Some(x.clone()), Some(ints(&pads)), Some(cv.clone())];
        if use_axes {
            ins.push(Some(ints(
                &axes
                    .iter()
                    .map(|&a| a as i64 - if rng.below(2) == 0 { 0 } else { rank as i64 })
                    .collect::<Vec<_>>(),
            )));
        }
        let attrs = Attrs::new().with("mode", Attr::Str(name.into()));
        let mut amount = vec![(0i64, 0i64); rank];
        for (j, &a) in axes.iter().enumerate() {
            amount[a] = (pads[j], pads[j + k]);
        }
        let od: Vec<usize> = (0..rank)
            .map(|a| (dims[a] as i64 + amount[a].0 + amount[a].1).max(0) as usize)
            .collect();
        let res = run(build_pad, &attrs, &ins);
        if od
            .iter()
            .zip(&dims)
            .zip(&amount)
            .any(|((&o, &d), &(b, e))| o as i64 != d as i64 + b + e)
        {
            assert!(res.is_err());
            continue;
        }
        let y = res.unwrap().remove(0);
        assert_eq!(y.dims, od);
        for i in 0..y.numel() {
            let o = unravel(i, &od);
            let src: Option<Vec<usize>> = (0..rank)
                .map(|a| {
                    pad_ref_index(o[a] as i64 - amount[a].0, dims[a] as i64, mode)
                        .map(|v| v as usize)
                })
                .collect();
            let want = match src {
                Some(s) => elem(&x, ravel(&s, &dims)),
                None => cv.data.as_bytes(),
            };
            assert_eq!(
                elem(&y, i),
                want,
                "dims {dims:?} pads {pads:?} axes {axes:?} mode {name} at {o:?}"
            );
        }
    }
}

#[test]
fn pad_details() {
    // f32 data with an f64-free int constant: the value is converted.
    let x = Tensor::from_slice(&[2], &[1f32, 2.]).unwrap();
    let c = Tensor::scalar(7i64);
    let y = run1(
        build_pad,
        &Attrs::new(),
        &[Some(x.clone()), Some(ints(&[1, 2])), Some(c)],
    );
    assert_eq!(y.as_slice::<f32>().unwrap(), &[7., 1., 2., 7., 7.]);
    let y = run1(
        build_pad,
        &Attrs::new(),
        &[Some(x.clone()), Some(ints(&[2, 0]))],
    );
    assert_eq!(y.as_slice::<f32>().unwrap(), &[0., 0., 1., 2.]);
    let y = run1(
        build_pad,
        &Attrs::new(),
        &[Some(x.clone()), Some(ints(&[-1, 1]))],
    );
    assert_eq!(y.as_slice::<f32>().unwrap(), &[2., 0.]);
    let refl = Attrs::new().with("mode", Attr::Str("reflect".into()));
    let x3 = Tensor::from_slice(&[3], &[1i32, 2, 3]).unwrap();
    let y = run1(build_pad, &refl, &[Some(x3), Some(ints(&[2, 2]))]);
    assert_eq!(y.as_slice::<i32>().unwrap(), &[3, 2, 1, 2, 3, 2, 1]);
    assert!(
        run(
            build_pad,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&[-3, 1]))]
        )
        .is_err()
    );
    assert!(
        run(
            build_pad,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&[1]))]
        )
        .is_err()
    );
    assert!(
        run(
            build_pad,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&[1, 1])), Some(ints(&[1, 2]))]
        )
        .is_err()
    );
    let e = Tensor::from_slice(&[0], &[0f32; 0]).unwrap();
    assert!(run(build_pad, &refl, &[Some(e), Some(ints(&[1, 1]))]).is_err());
    assert!(build_pad(&Attrs::new().with("mode", Attr::Str("mirror".into()))).is_err());
    let s = infer(
        build_pad,
        &Attrs::new(),
        &[
            fact(DType::F32, &["N", "3", "8"]),
            known(ints(&[1, 1])),
            None,
            known(ints(&[-1])),
        ],
    );
    assert_eq!(s.unwrap()[0].shape, shape(&["N", "3", "10"]));
    let s = infer(
        build_pad,
        &Attrs::new(),
        &[fact(DType::F32, &["N", "3"]), fact(DType::I64, &["4"])],
    );
    assert_eq!(s.unwrap()[0].shape, shape(&["?", "?"]));
}

#[test]
fn hostile_parameters_never_panic() {
    let mut rng = Rng(24);
    let vals = [i64::MIN, -1 << 40, -3, -1, 0, 1, 2, 3, 1 << 40, i64::MAX];
    for t in 0..2000 {
        let rank = rng.below(4);
        let dims: Vec<usize> = (0..rank).map(|_| rng.below(4)).collect();
        let x = rand_tensor(&mut rng, DType::F32, &dims);
        let list = ints(
            &(0..rng.below(7))
                .map(|_| vals[rng.below(vals.len())])
                .collect::<Vec<_>>(),
        );
        let mode = ["constant", "reflect", "edge", "wrap"][t % 4];
        let _ = run_small(
            build_pad,
            &Attrs::new().with("mode", Attr::Str(mode.into())),
            &[Some(x.clone()), Some(list.clone())],
        );
        let _ = run_small(
            build_expand,
            &Attrs::new(),
            &[Some(x.clone()), Some(list.clone())],
        );
        let _ = run_small(
            build_tile,
            &Attrs::new(),
            &[Some(x.clone()), Some(list.clone())],
        );
        let perm = list.to_i64_vec().unwrap();
        if let Ok(op) = build_transpose(&Attrs::new().with("perm", Attr::Ints(perm))) {
            let _ = crate::ops::eval_owned(&*op, &[Some(x)]);
        }
    }
}
