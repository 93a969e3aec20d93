//! Tests of the shape family's shared machinery and of Reshape, Flatten,
//! Squeeze, Unsqueeze, Identity and Shape; `util` is shared by the tests of
//! `shape_index`, `shape_layout` and `shape_values`.

/// Helpers for every test file of the shape family.
pub mod util {
    use crate::dtype::DType;
    use crate::graph::Attrs;
    use crate::ops::{Builder, Fact, eval_owned};
    use crate::tensor::{AlignedBuf, Blob, Dim, Shape, Tensor};

    /// xorshift64*: deterministic, no dependency.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
            lo + (self.next() % (hi - lo + 1) as u64) as i64
        }
        pub fn dims(&mut self, rank: usize, max: usize) -> Vec<usize> {
            (0..rank).map(|_| 1 + self.below(max)).collect()
        }
    }

    /// Random bytes of the right length: data movement must not care.
    pub fn rand_tensor(rng: &mut Rng, dtype: DType, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product::<usize>() * dtype.size();
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        Tensor::new(
            dtype,
            dims.to_vec(),
            Blob::owned(AlignedBuf::from_bytes(&bytes)),
        )
        .unwrap()
    }

    pub fn ints(v: &[i64]) -> Tensor {
        Tensor::from_slice(&[v.len()], v).unwrap()
    }

    pub fn run(
        build: Builder,
        attrs: &Attrs,
        inputs: &[Option<Tensor>],
    ) -> crate::Result<Vec<Tensor>> {
        let op = build(attrs)?;
        eval_owned(&*op, inputs)
    }

    /// Like `run`, but skips evaluating valid outputs too large to allocate
    /// in a test (hostile-input tests ask for them on purpose).
    pub fn run_small(
        build: Builder,
        attrs: &Attrs,
        inputs: &[Option<Tensor>],
    ) -> crate::Result<Vec<Tensor>> {
        let op = build(attrs)?;
        let facts: Vec<Option<Fact>> = inputs.iter().map(|t| t.clone().map(Fact::known)).collect();
        for f in op.infer(&facts)? {
            if f.dims().is_some_and(|d| {
                d.iter()
                    .try_fold(1usize, |a, &n| a.checked_mul(n))
                    .is_none_or(|n| n > 1 << 20)
            }) {
                return Ok(vec![]);
            }
        }
        eval_owned(&*op, inputs)
    }

    pub fn run1(build: Builder, attrs: &Attrs, inputs: &[Option<Tensor>]) -> Tensor {
        run(build, attrs, inputs).unwrap().remove(0)
    }

    /// Infer with facts (symbolic shapes allowed).
    pub fn infer(
        build: Builder,
        attrs: &Attrs,
        inputs: &[Option<Fact>],
    ) -> crate::Result<Vec<Fact>> {
        build(attrs)?.infer(inputs)
    }

    pub fn elem(t: &Tensor, i: usize) -> &[u8] {
        let es = t.dtype.size();
        &t.data.as_bytes()[i * es..(i + 1) * es]
    }

    pub fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; dims.len()];
        for k in (0..dims.len()).rev() {
            idx[k] = i % dims[k];
            i /= dims[k];
        }
        idx
    }

    pub fn ravel(idx: &[usize], dims: &[usize]) -> usize {
        idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
    }

    pub fn sym(s: &str) -> Dim {
        Dim::Sym(s.into())
    }

    pub fn shape(dims: &[&str]) -> Shape {
        dims.iter()
            .map(|d| {
                d.parse::<usize>()
                    .map(Dim::Known)
                    .unwrap_or_else(|_| sym(d))
            })
            .collect()
    }

    pub fn fact(dtype: DType, dims: &[&str]) -> Option<Fact> {
        Some(Fact::new(dtype, shape(dims)))
    }

    pub fn known(t: Tensor) -> Option<Fact> {
        Some(Fact::known(t))
    }

    pub const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::U8, DType::I64];
}

mod cases {
    use super::super::*;
    use super::util::*;
    use crate::graph::Attr;

    #[test]
    fn strided_copy_matches_index_arithmetic() {
        let mut rng = Rng(7);
        for _ in 0..300 {
            let rank = rng.below(5);
            let dims = rng.dims(rank, 5);
            let es = [1usize, 2, 4, 8][rng.below(4)];
            let src_len = 400;
            let src: Vec<u8> = (0..src_len * es).map(|_| rng.next() as u8).collect();
            let strides: Vec<isize> = (0..rank).map(|_| rng.range(-7, 7) as isize).collect();
            let offset = rng.below(src_len);
            let n: usize = dims.iter().product();
            let mut dst = vec![0u8; n * es];
            let res = copy_strided(&src, &mut dst, es, &dims, &strides, offset);
            let mut want = vec![0u8; n * es];
            let mut ok = true;
            for i in 0..n {
                let idx = unravel(i, &dims);
                let at: isize = offset as isize
                    + idx
                        .iter()
                        .zip(&strides)
                        .map(|(&k, &s)| k as isize * s)
                        .sum::<isize>();
                if at < 0 || at as usize >= src_len {
                    ok = false;
                    break;
                }
                want[i * es..(i + 1) * es]
                    .copy_from_slice(&src[at as usize * es..(at as usize + 1) * es]);
            }
            assert_eq!(
                res.is_ok(),
                ok,
                "dims {dims:?} strides {strides:?} offset {offset}"
            );
            if ok {
                assert_eq!(dst, want);
            }
        }
    }

    #[test]
    fn tiled_transpose_path_matches() {
        let mut rng = Rng(3);
        let (b, r, c) = (2usize, 37usize, 45usize);
        let src: Vec<u8> = (0..b * r * c * 4).map(|_| rng.next() as u8).collect();
        // out[b][r][c] = in[b][c][r]
        let mut dst = vec![0u8; src.len()];
        let st = [(r * c) as isize, 1, r as isize];
        copy_strided(&src, &mut dst, 4, &[b, r, c], &st, 0).unwrap();
        for i in 0..b * r * c {
            let idx = unravel(i, &[b, r, c]);
            let j = ravel(&[idx[0], idx[2], idx[1]], &[b, c, r]);
            assert_eq!(&dst[i * 4..i * 4 + 4], &src[j * 4..j * 4 + 4]);
        }
    }

    #[test]
    fn reshape_copies_zero_dims_and_infers_minus_one() {
        let mut rng = Rng(1);
        for &dt in &DTYPES {
            let x = rand_tensor(&mut rng, dt, &[2, 3, 4]);
            let y = run1(
                build_reshape,
                &Attrs::new(),
                &[Some(x.clone()), Some(ints(&[0, -1]))],
            );
            assert_eq!(y.dims, vec![2, 12]);
            assert_eq!(y.data.as_bytes(), x.data.as_bytes());
            let y = run1(
                build_reshape,
                &Attrs::new(),
                &[Some(x.clone()), Some(ints(&[-1, 3, 1, 2, 2]))],
            );
            assert_eq!(y.dims, vec![2, 3, 1, 2, 2]);
        }
        let x = rand_tensor(&mut rng, DType::F32, &[2, 0]);
        let az = Attrs::new().with("allowzero", Attr::Int(1));
        assert_eq!(
            run1(build_reshape, &az, &[Some(x.clone()), Some(ints(&[0, 5]))]).dims,
            vec![0, 5]
        );
        // errors, not panics
        let x = rand_tensor(&mut rng, DType::F32, &[2, 3]);
        for bad in [
            &[-1, -1][..],
            &[4, 2],
            &[-1, 4],
            &[0, 0, 0],
            &[-2, 3],
            &[i64::MAX, 2],
        ] {
            assert!(
                run(
                    build_reshape,
                    &Attrs::new(),
                    &[Some(x.clone()), Some(ints(bad))]
                )
                .is_err(),
                "{bad:?}"
            );
        }
        assert!(run(build_reshape, &az, &[Some(x), Some(ints(&[0, -1]))]).is_err());
        assert!(build_reshape(&Attrs::new().with("allowzero", Attr::Int(2))).is_err());
    }

    #[test]
    fn reshape_keeps_symbols() {
        let f = |x: &[&str], spec: &[i64]| {
            infer(
                build_reshape,
                &Attrs::new(),
                &[fact(DType::F32, x), known(ints(spec))],
            )
            .unwrap()[0]
                .shape
                .clone()
        };
        assert_eq!(f(&["N", "16", "4", "4"], &[0, -1]), shape(&["N", "256"]));
        assert_eq!(
            f(&["N", "256"], &[-1, 16, 4, 4]),
            shape(&["N", "16", "4", "4"])
        );
        assert_eq!(
            f(&["N", "S", "64"], &[0, 0, 8, 8]),
            shape(&["N", "S", "8", "8"])
        );
        assert_eq!(f(&["N", "S", "64"], &[0, -1, 8]), shape(&["N", "?", "8"]));
        let x = fact(DType::F32, &["N", "6"]);
        let s = Some(Fact::new(DType::I64, shape(&["3"])));
        assert_eq!(
            infer(build_reshape, &Attrs::new(), &[x, s]).unwrap()[0].shape,
            shape(&["?", "?", "?"])
        );
    }

    #[test]
    fn flatten_all_axes() {
        let mut rng = Rng(2);
        let x = rand_tensor(&mut rng, DType::F16, &[2, 3, 4]);
        for (a, want) in [
            (0, [1, 24]),
            (1, [2, 12]),
            (2, [6, 4]),
            (3, [24, 1]),
            (-1, [6, 4]),
            (-3, [1, 24]),
        ] {
            let y = run1(
                build_flatten,
                &Attrs::new().with("axis", Attr::Int(a)),
                &[Some(x.clone())],
            );
            assert_eq!(y.dims, want.to_vec());
            assert_eq!(y.data.as_bytes(), x.data.as_bytes());
        }
        assert!(
            run(
                build_flatten,
                &Attrs::new().with("axis", Attr::Int(4)),
                &[Some(x)]
            )
            .is_err()
        );
        let s = infer(
            build_flatten,
            &Attrs::new(),
            &[fact(DType::F32, &["N", "16", "4", "4"])],
        )
        .unwrap();
        assert_eq!(s[0].shape, shape(&["N", "256"]));
        let s = infer(
            build_flatten,
            &Attrs::new().with("axis", Attr::Int(2)),
            &[fact(DType::F32, &["N", "1", "S", "4"])],
        );
        assert_eq!(s.unwrap()[0].shape, shape(&["N", "?"]));
    }

    #[test]
    fn squeeze_and_unsqueeze() {
        let mut rng = Rng(4);
        let x = rand_tensor(&mut rng, DType::I64, &[1, 3, 1, 2]);
        let y = run1(build_squeeze, &Attrs::new(), &[Some(x.clone())]);
        assert_eq!(y.dims, vec![3, 2]);
        assert_eq!(y.data.as_bytes(), x.data.as_bytes());
        assert_eq!(
            run1(
                build_squeeze,
                &Attrs::new(),
                &[Some(x.clone()), Some(ints(&[-2]))]
            )
            .dims,
            vec![1, 3, 2]
        );
        assert_eq!(
            run1(
                build_squeeze,
                &Attrs::new(),
                &[Some(x.clone()), Some(ints(&[]))]
            )
            .dims,
            vec![3, 2]
        );
        assert!(
            run(
                build_squeeze,
                &Attrs::new(),
                &[Some(x.clone()), Some(ints(&[1]))]
            )
            .is_err()
        );
        assert!(
            run(
                build_squeeze,
                &Attrs::new(),
                &[Some(x.clone()), Some(ints(&[0, 0]))]
            )
            .is_err()
        );
        assert!(
            run(
                build_squeeze,
                &Attrs::new(),
                &[Some(x.clone()), Some(ints(&[4]))]
            )
            .is_err()
        );

        let y = run1(
            build_unsqueeze,
            &Attrs::new(),
            &[Some(x.clone()), Some(ints(&[0, -1, 3]))],
        );
        assert_eq!(y.dims, vec![1, 1, 3, 1, 1, 2, 1]);
        assert_eq!(y.data.as_bytes(), x.data.as_bytes());
        assert!(
            run(
                build_unsqueeze,
                &Attrs::new(),
                &[Some(x.clone()), Some(ints(&[7]))]
            )
            .is_err()
        );
        assert!(
            run(
                build_unsqueeze,
                &Attrs::new(),
                &[Some(x.clone()), Some(ints(&[1, -5]))]
            )
            .is_err()
        );
        assert!(run(build_unsqueeze, &Attrs::new(), &[Some(x)]).is_err());

        let s = infer(
            build_unsqueeze,
            &Attrs::new(),
            &[fact(DType::F32, &["N", "3"]), known(ints(&[1]))],
        );
        assert_eq!(s.unwrap()[0].shape, shape(&["N", "1", "3"]));
        let s = infer(
            build_squeeze,
            &Attrs::new(),
            &[fact(DType::F32, &["N", "1", "3"])],
        );
        assert_eq!(s.unwrap()[0].shape, shape(&["N", "3"]));
        let axes = Some(Fact::new(DType::I64, shape(&["1"])));
        let s = infer(
            build_unsqueeze,
            &Attrs::new(),
            &[fact(DType::F32, &["N", "3"]), axes],
        );
        assert_eq!(s.unwrap()[0].shape, shape(&["?", "?", "?"]));
    }

    #[test]
    fn relabelled_constants_keep_their_value() {
        let x = Tensor::from_slice(&[2, 3], &[1f32, 2., 3., 4., 5., 6.]).unwrap();
        let out = infer(
            build_reshape,
            &Attrs::new(),
            &[known(x), known(ints(&[3, 2]))],
        )
        .unwrap();
        let v = out[0].value.as_ref().unwrap();
        assert_eq!(v.dims, vec![3, 2]);
        assert_eq!(v.as_slice::<f32>().unwrap(), &[1., 2., 3., 4., 5., 6.]);
    }

    #[test]
    fn shape_start_end_and_folding() {
        let mut rng = Rng(5);
        let dims = [2usize, 3, 4, 5];
        let x = rand_tensor(&mut rng, DType::U8, &dims);
        for start in -6i64..6 {
            for end in (-6i64..6).map(Some).chain([None]) {
                let mut a = Attrs::new().with("start", Attr::Int(start));
                if let Some(e) = end {
                    a.set("end", Attr::Int(e));
                }
                let y = run1(build_shape, &a, &[Some(x.clone())]);
                // reference: python-style slicing of the dims list
                let r = 4i64;
                let norm = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let (s, e) = (norm(start), norm(end.unwrap_or(r)));
                let want: Vec<i64> = if s < e {
                    dims[s..e].iter().map(|&d| d as i64).collect()
                } else {
                    vec![]
                };
                assert_eq!(
                    y.as_slice::<i64>().unwrap(),
                    want.as_slice(),
                    "start {start} end {end:?}"
                );
                let f = infer(
                    build_shape,
                    &a,
                    &[Some(Fact::new(DType::U8, known_shape(&dims)))],
                )
                .unwrap();
                assert_eq!(
                    f[0].value.as_ref().unwrap().as_slice::<i64>().unwrap(),
                    want.as_slice()
                );
            }
        }
        let f = infer(build_shape, &Attrs::new(), &[fact(DType::F32, &["N", "3"])]).unwrap();
        assert!(f[0].value.is_none());
        assert_eq!(f[0].shape, shape(&["2"]));
        let f = infer(
            build_shape,
            &Attrs::new().with("start", Attr::Int(1)),
            &[fact(DType::F32, &["N", "3"])],
        );
        assert_eq!(
            f.unwrap()[0]
                .value
                .as_ref()
                .unwrap()
                .as_slice::<i64>()
                .unwrap(),
            &[3]
        );
    }

    #[test]
    fn identity_copies() {
        let mut rng = Rng(6);
        let x = rand_tensor(&mut rng, DType::BF16, &[3, 5]);
        let y = run1(build_identity, &Attrs::new(), &[Some(x.clone())]);
        assert_eq!(
            (y.dims.clone(), y.data.as_bytes()),
            (x.dims.clone(), x.data.as_bytes())
        );
    }

    #[test]
    fn shape_like_inputs_are_checked() {
        let x = fact(DType::F32, &["2", "3"]);
        let f = known(Tensor::from_slice(&[2], &[2f32, 3.]).unwrap());
        assert!(infer(build_reshape, &Attrs::new(), &[x.clone(), f]).is_err());
        let s = Some(Fact::new(DType::I64, shape(&["M"])));
        assert!(infer(build_reshape, &Attrs::new(), &[x.clone(), s]).is_err());
        assert!(infer(build_reshape, &Attrs::new(), &[x]).is_err());
    }
}
