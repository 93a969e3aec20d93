//! Tests of Slice, Gather, Concat and Split against naive index-by-index
//! references.

use super::super::shape::tests::util::*;
use super::*;
use crate::graph::Attr;
use crate::tensor::Tensor;

/// Naive Slice: walk every candidate index of every axis (numpy style).
fn slice_ref(
    x: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: &[usize],
    steps: &[i64],
) -> (Vec<usize>, Vec<u8>) {
    let mut picks: Vec<Vec<usize>> = x.dims.iter().map(|&d| (0..d).collect()).collect();
    for k in 0..axes.len() {
        let d = x.dims[axes[k]] as i64;
        let (mut s, mut e, st) = (starts[k], ends[k], steps[k]);
        if s < 0 {
            s = s.saturating_add(d);
        }
        if e < 0 {
            e = e.saturating_add(d);
        }
        let mut v = vec![];
        if st > 0 {
            let (s, e) = (s.clamp(0, d), e.clamp(0, d));
            let mut i = s;
            while i < e {
                v.push(i as usize);
                i = i.saturating_add(st);
            }
        } else {
            let (s, e) = (s.clamp(0, (d - 1).max(0)), e.clamp(-1, d - 1));
            let mut i = s;
            while i > e && d > 0 {
                v.push(i as usize);
                i = i.saturating_add(st);
            }
        }
        picks[axes[k]] = v;
    }
    let od: Vec<usize> = picks.iter().map(|p| p.len()).collect();
    let n: usize = od.iter().product();
    let mut out = vec![];
    for i in 0..n {
        let idx = unravel(i, &od);
        let src: Vec<usize> = idx.iter().enumerate().map(|(k, &j)| picks[k][j]).collect();
        out.extend_from_slice(elem(x, ravel(&src, &x.dims)));
    }
    (od, out)
}

#[test]
fn slice_matches_reference() {
    let mut rng = Rng(11);
    let edge = [i64::MIN, i64::MAX, -1000, 1000];
    for t in 0..400 {
        let rank = 1 + rng.below(4);
        let dims: Vec<usize> = (0..rank).map(|_| rng.below(6)).collect();
        let x = rand_tensor(&mut rng, DTYPES[t % 4], &dims);
        let k = 1 + rng.below(rank);
        let mut axes: Vec<usize> = (0..rank).collect();
        for i in 0..rank {
            axes.swap(i, rng.below(rank));
        }
        axes.truncate(k);
        let pick = |rng: &mut Rng| {
            if rng.below(8) == 0 {
                edge[rng.below(4)]
            } else {
                rng.range(-8, 8)
            }
        };
        let starts: Vec<i64> = (0..k).map(|_| pick(&mut rng)).collect();
        let ends: Vec<i64> = (0..k).map(|_| pick(&mut rng)).collect();
        let steps: Vec<i64> = (0..k)
            .map(|_| [-3, -2, -1, 1, 1, 2, 3, i64::MIN, i64::MAX][rng.below(9)])
            .collect();
        let neg_axes: Vec<i64> = axes
            .iter()
            .map(|&a| {
                if rng.below(2) == 0 {
                    a as i64
                } else {
                    a as i64 - rank as i64
                }
            })
            .collect();
        let y = run1(
            build_slice,
            &Attrs::new(),
            &[
                Some(x.clone()),
                Some(ints(&starts)),
                Some(ints(&ends)),
                Some(ints(&neg_axes)),
                Some(ints(&steps)),
            ],
        );
        let (od, want) = slice_ref(&x, &starts, &ends, &axes, &steps);
        assert_eq!(
            y.dims, od,
            "dims {dims:?} starts {starts:?} ends {ends:?} axes {axes:?} steps {steps:?}"
        );
        assert_eq!(y.data.as_bytes(), want.as_slice());
    }
}

#[test]
fn slice_defaults_errors_and_symbols() {
    let mut rng = Rng(12);
    let x = rand_tensor(&mut rng, DType::F32, &[4, 5]);
    let y = run1(
        build_slice,
        &Attrs::new(),
        &[Some(x.clone()), Some(ints(&[1])), Some(ints(&[3]))],
    );
    assert_eq!(y.dims, vec![2, 5]);
    assert_eq!(y.data.as_bytes(), &x.data.as_bytes()[20..60]);
    let bad = |s: &[i64], e: &[i64], a: Option<&[i64]>, st: Option<&[i64]>| {
        let ins = [
            Some(x.clone()),
            Some(ints(s)),
            Some(ints(e)),
            a.map(ints),
            st.map(ints),
        ];
        assert!(run(build_slice, &Attrs::new(), &ins).is_err());
    };
    bad(&[0], &[1, 2], None, None);
    bad(&[0], &[1], Some(&[2]), None);
    bad(&[0, 0], &[1, 1], Some(&[1, -1]), None);
    bad(&[0], &[1], None, Some(&[0]));
    bad(&[0, 0, 0], &[1, 1, 1], None, None);
    let f = |ins: &[Option<Fact>]| {
        infer(build_slice, &Attrs::new(), ins).unwrap()[0]
            .shape
            .clone()
    };
    let x = fact(DType::F32, &["N", "8", "8"]);
    let s = |v: &[i64]| known(ints(v));
    assert_eq!(
        f(&[x.clone(), s(&[0]), s(&[i64::MAX]), s(&[0]), None]),
        shape(&["N", "8", "8"])
    );
    assert_eq!(
        f(&[x.clone(), s(&[1, 2]), s(&[-1, 100]), s(&[1, 2]), None]),
        shape(&["N", "6", "6"])
    );
    assert_eq!(
        f(&[x.clone(), s(&[1]), s(&[2]), None, None]),
        shape(&["?", "8", "8"])
    );
    let unknown = Some(Fact::new(DType::I64, shape(&["1"])));
    assert_eq!(
        f(&[x.clone(), unknown.clone(), s(&[2]), s(&[-1]), None]),
        shape(&["N", "8", "?"])
    );
    assert_eq!(
        f(&[x.clone(), s(&[2]), s(&[2]), unknown, None]),
        shape(&["?", "?", "?"])
    );
}

fn gather_ref(x: &Tensor, idx: &[i64], idims: &[usize], a: usize) -> (Vec<usize>, Vec<u8>) {
    let mut od = x.dims[..a].to_vec();
    od.extend_from_slice(idims);
    od.extend_from_slice(&x.dims[a + 1..]);
    let n: usize = od.iter().product();
    let mut out = vec![];
    for i in 0..n {
        let o = unravel(i, &od);
        let k = ravel(&o[a..a + idims.len()], idims);
        let mut j = idx[k];
        if j < 0 {
            j += x.dims[a] as i64;
        }
        let mut src = o[..a].to_vec();
        src.push(j as usize);
        src.extend_from_slice(&o[a + idims.len()..]);
        out.extend_from_slice(elem(x, ravel(&src, &x.dims)));
    }
    (od, out)
}

#[test]
fn gather_matches_reference() {
    let mut rng = Rng(13);
    for t in 0..200 {
        let rank = 1 + rng.below(4);
        let dims = rng.dims(rank, 5);
        let x = rand_tensor(&mut rng, DTYPES[t % 4], &dims);
        let a = rng.below(rank);
        let irank = rng.below(3);
        let idims = rng.dims(irank, 3);
        let d = dims[a] as i64;
        let idx: Vec<i64> = (0..idims.iter().product())
            .map(|_| rng.range(-d, d - 1))
            .collect();
        let it = if t % 2 == 0 {
            Tensor::from_slice(&idims, &idx).unwrap()
        } else {
            Tensor::from_slice(&idims, &idx.iter().map(|&v| v as i32).collect::<Vec<_>>()).unwrap()
        };
        let axis_attr = if rng.below(2) == 0 {
            a as i64
        } else {
            a as i64 - rank as i64
        };
        let y = run1(
            build_gather,
            &Attrs::new().with("axis", Attr::Int(axis_attr)),
            &[Some(x.clone()), Some(it)],
        );
        let (od, want) = gather_ref(&x, &idx, &idims, a);
        assert_eq!(y.dims, od);
        assert_eq!(
            y.data.as_bytes(),
            want.as_slice(),
            "dims {dims:?} axis {a} idx {idx:?}"
        );
    }
    let x = rand_tensor(&mut rng, DType::F32, &[3, 4]);
    for bad in [4i64, -5, i64::MAX, i64::MIN] {
        let a = Attrs::new().with("axis", Attr::Int(1));
        assert!(run(build_gather, &a, &[Some(x.clone()), Some(ints(&[0, bad]))]).is_err());
    }
    assert!(
        run(
            build_gather,
            &Attrs::new().with("axis", Attr::Int(2)),
            &[Some(x.clone()), Some(ints(&[0]))]
        )
        .is_err()
    );
    let fi = Tensor::from_slice(&[1], &[0f32]).unwrap();
    assert!(run(build_gather, &Attrs::new(), &[Some(x), Some(fi)]).is_err());
    let s = infer(
        build_gather,
        &Attrs::new().with("axis", Attr::Int(1)),
        &[fact(DType::F32, &["N", "5", "7"]), fact(DType::I64, &["S"])],
    );
    assert_eq!(s.unwrap()[0].shape, shape(&["N", "S", "7"]));
}

/// Concat big enough to be split across threads at byte ranges that cut
/// rows and inputs anywhere (and an empty input), against a plain build.
#[test]
fn threaded_concat_matches_reference() {
    let mut rng = Rng(15);
    for (rows, sizes, inner) in [
        (3usize, &[5usize, 0, 17, 40][..], 997usize),
        (1, &[7000, 9001], 5),
    ] {
        let parts: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&s| {
                (0..rows * s * inner)
                    .map(|_| rng.below(1000) as f32)
                    .collect()
            })
            .collect();
        let mut want = Vec::new();
        for r in 0..rows {
            for (p, &s) in parts.iter().zip(sizes) {
                want.extend_from_slice(&p[r * s * inner..(r + 1) * s * inner]);
            }
        }
        let ins: Vec<Option<Tensor>> = parts
            .iter()
            .zip(sizes)
            .map(|(p, &s)| Some(Tensor::from_slice(&[rows, s, inner], p).unwrap()))
            .collect();
        let op = build_concat(&Attrs::new().with("axis", Attr::Int(1))).unwrap();
        for threads in [1, 2] {
            let (dims, got) = crate::ops::conv::tests::run(&*op, &ins, threads);
            assert_eq!(dims, [rows, sizes.iter().sum(), inner]);
            assert!(got == want, "rows {rows} sizes {sizes:?} threads {threads}");
        }
    }
}

#[test]
fn concat_and_split_round_trip_against_reference() {
    let mut rng = Rng(14);
    for t in 0..200 {
        let rank = 1 + rng.below(4);
        let base = rng.dims(rank, 4);
        let a = rng.below(rank);
        let k = 1 + rng.below(4);
        let sizes: Vec<usize> = (0..k).map(|_| rng.below(4)).collect();
        let dt = DTYPES[t % 4];
        let parts: Vec<Tensor> = sizes
            .iter()
            .map(|&s| {
                let mut d = base.clone();
                d[a] = s;
                rand_tensor(&mut rng, dt, &d)
            })
            .collect();
        let ins: Vec<Option<Tensor>> = parts.iter().cloned().map(Some).collect();
        let y = run1(
            build_concat,
            &Attrs::new().with("axis", Attr::Int(a as i64 - rank as i64)),
            &ins,
        );
        // reference: output index -> (part, index within part)
        let mut od = base.clone();
        od[a] = sizes.iter().sum();
        assert_eq!(y.dims, od);
        for i in 0..od.iter().product() {
            let mut idx = unravel(i, &od);
            let mut p = 0;
            while idx[a] >= sizes[p] {
                idx[a] -= sizes[p];
                p += 1;
            }
            assert_eq!(elem(&y, i), elem(&parts[p], ravel(&idx, &parts[p].dims)));
        }
        // Split with explicit sizes gives the parts back.
        let split =
            Tensor::from_slice(&[k], &sizes.iter().map(|&s| s as i64).collect::<Vec<_>>()).unwrap();
        let attrs = Attrs::new()
            .with("axis", Attr::Int(a as i64))
            .with("num_outputs", Attr::Int(k as i64));
        let back = run(build_split, &attrs, &[Some(y.clone()), Some(split)]).unwrap();
        for (b, p) in back.iter().zip(&parts) {
            assert_eq!((&b.dims, b.data.as_bytes()), (&p.dims, p.data.as_bytes()));
        }
    }
    assert!(build_concat(&Attrs::new()).is_err());
    let x = rand_tensor(&mut rng, DType::F32, &[2, 3]);
    let y = rand_tensor(&mut rng, DType::F32, &[3, 3]);
    assert!(
        run(
            build_concat,
            &Attrs::new().with("axis", Attr::Int(1)),
            &[Some(x.clone()), Some(y)]
        )
        .is_err()
    );
    let z = rand_tensor(&mut rng, DType::I64, &[2, 3]);
    assert!(
        run(
            build_concat,
            &Attrs::new().with("axis", Attr::Int(0)),
            &[Some(x), Some(z)]
        )
        .is_err()
    );
    let s = infer(
        build_concat,
        &Attrs::new().with("axis", Attr::Int(1)),
        &[fact(DType::F32, &["N", "3"]), fact(DType::F32, &["?", "S"])],
    );
    assert_eq!(s.unwrap()[0].shape, shape(&["N", "?"]));
}

#[test]
fn split_even_and_uneven() {
    let mut rng = Rng(15);
    for dim in 1..12usize {
        for n in 1..6usize {
            let x = rand_tensor(&mut rng, DType::U8, &[2, dim, 3]);
            let attrs = Attrs::new()
                .with("axis", Attr::Int(-2))
                .with("num_outputs", Attr::Int(n as i64));
            let chunk = dim.div_ceil(n);
            let res = run(build_split, &attrs, &[Some(x.clone())]);
            if chunk * (n - 1) > dim {
                assert!(res.is_err(), "dim {dim} n {n}");
                continue;
            }
            let outs = res.unwrap();
            assert_eq!(outs.len(), n);
            let mut start = 0;
            for (k, o) in outs.iter().enumerate() {
                let want = if k + 1 < n {
                    chunk
                } else {
                    dim - chunk * (n - 1)
                };
                assert_eq!(o.dims, vec![2, want, 3]);
                for i in 0..o.numel() {
                    let idx = unravel(i, &o.dims);
                    let src = ravel(&[idx[0], idx[1] + start, idx[2]], &x.dims);
                    assert_eq!(elem(o, i), elem(&x, src));
                }
                start += want;
            }
        }
    }
    let x = rand_tensor(&mut rng, DType::F32, &[5]);
    let a2 = Attrs::new().with("num_outputs", Attr::Int(2));
    assert!(run(build_split, &a2, &[Some(x.clone()), Some(ints(&[2, 2]))]).is_err());
    assert!(run(build_split, &a2, &[Some(x.clone()), Some(ints(&[6, -1]))]).is_err());
    assert!(run(build_split, &a2, &[Some(x.clone()), Some(ints(&[1, 1, 3]))]).is_err());
    assert!(run(build_split, &Attrs::new(), &[Some(x.clone())]).is_err());
    assert!(build_split(&Attrs::new().with("num_outputs", Attr::Int(0))).is_err());
    let outs = run(
        build_split,
        &Attrs::new(),
        &[Some(x), Some(ints(&[2, 0, 3]))],
    )
    .unwrap();
    assert_eq!(
        outs.iter().map(|o| o.dims[0]).collect::<Vec<_>>(),
        vec![2, 0, 3]
    );
    let s = infer(build_split, &a2, &[fact(DType::F32, &["N", "8"])]);
    assert_eq!(
        s.unwrap()
            .iter()
            .map(|f| f.shape.clone())
            .collect::<Vec<_>>(),
        vec![shape(&["?", "8"]); 2]
    );
    let s = infer(
        build_split,
        &a2.clone().with("axis", Attr::Int(1)),
        &[fact(DType::F32, &["N", "8"])],
    );
    assert_eq!(s.unwrap()[1].shape, shape(&["N", "4"]));
}

#[test]
fn hostile_parameters_never_panic() {
    let mut rng = Rng(16);
    let vals = [
        i64::MIN,
        i64::MIN + 1,
        -1 << 40,
        -3,
        -1,
        0,
        1,
        2,
        3,
        1 << 40,
        i64::MAX - 1,
        i64::MAX,
    ];
    for _ in 0..2000 {
        let rank = rng.below(4);
        let dims: Vec<usize> = (0..rank).map(|_| rng.below(4)).collect();
        let x = rand_tensor(&mut rng, DType::F32, &dims);
        let list = |rng: &mut Rng| -> Option<Tensor> {
            match rng.below(6) {
                0 => None,
                _ => Some(ints(
                    &(0..rng.below(4))
                        .map(|_| vals[rng.below(vals.len())])
                        .collect::<Vec<_>>(),
                )),
            }
        };
        let ins = [
            Some(x.clone()),
            list(&mut rng),
            list(&mut rng),
            list(&mut rng),
            list(&mut rng),
        ];
        let _ = run_small(build_slice, &Attrs::new(), &ins);
        let ax = Attrs::new().with("axis", Attr::Int(vals[rng.below(vals.len())]));
        let _ = run_small(build_gather, &ax, &ins[..2]);
        let _ = run_small(build_concat, &ax, &[Some(x.clone()), Some(x.clone())]);
        let ax = ax.with("num_outputs", Attr::Int(vals[rng.below(vals.len())]));
        let _ = run_small(build_split, &ax, &ins[..2]);
    }
}
