//! Tests of Conv against a direct 7-loop convolution, and helpers shared by
//! the conv, conv-transpose and pool tests.

use super::*;
use crate::graph::Attr;
use crate::tensor::{AlignedBuf, Tensor};

pub(crate) struct Rng(pub u32);

impl Rng {
    pub(crate) fn f(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(1664525).wrapping_add(1013904223);
        (self.0 >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    }
    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// Infer then eval an op on known inputs with a fresh context.
pub(crate) fn run(op: &dyn Op, ins: &[Option<Tensor>], threads: usize) -> (Vec<usize>, Vec<f32>) {
    run_in(&mut Ctx::new(threads), op, ins)
}

pub(crate) fn run_in(ctx: &mut Ctx, op: &dyn Op, ins: &[Option<Tensor>]) -> (Vec<usize>, Vec<f32>) {
    let facts: Vec<Option<Fact>> = ins.iter().map(|t| t.clone().map(Fact::known)).collect();
    let out = op.infer(&facts).unwrap();
    let dims = out[0].dims().unwrap();
    let mut buf = AlignedBuf::zeroed(numel(&dims).unwrap() * out[0].dtype.size());
    // Stale garbage in the output must not leak into the result.
    buf.as_bytes_mut().fill(0xff);
    let views: Vec<Option<TensorRef<'_>>> =
        ins.iter().map(|t| t.as_ref().map(|t| t.view())).collect();
    {
        let mut outs = [TensorMut {
            dtype: out[0].dtype,
            dims: &dims,
            data: buf.as_bytes_mut(),
        }];
        op.eval(ctx, &views, &mut outs).unwrap();
    }
    let vals = match out[0].dtype {
        DType::F32 => bytemuck::cast_slice::<u8, f32>(buf.as_bytes()).to_vec(),
        _ => Vec::new(),
    };
    (dims, vals)
}

pub(crate) fn check_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// Pad a 1- or 2-D list of per-axis values to three axes.
pub(crate) fn pad3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut o = [fill; 3];
    o[3 - v.len()..].copy_from_slice(v);
    o
}

/// Output length and begin pad by the formulas in the ONNX Conv spec.
fn onnx_out(
    input: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pe: usize,
    auto: &str,
) -> (usize, usize) {
    let dk = d * (k - 1) + 1;
    match auto {
        "SAME_UPPER" | "SAME_LOWER" => {
            let out = input.div_ceil(s);
            let total = ((out - 1) * s + dk).saturating_sub(input);
            (
                out,
                if auto == "SAME_UPPER" {
                    total / 2
                } else {
                    total - total / 2
                },
            )
        }
        "VALID" => ((input - dk + 1).div_ceil(s), 0),
        _ => ((input + pb + pe - dk) / s + 1, pb),
    }
}

/// Direct convolution: batch, out channel, 3 output axes, in channel, 3 kernel axes.
fn naive_conv(
    x: &[f32],
    xd: [usize; 5],
    w: &[f32],
    wd: [usize; 5],
    b: Option<&[f32]>,
    group: usize,
    s: [usize; 3],
    d: [usize; 3],
    p: [usize; 3],
    od: [usize; 3],
) -> Vec<f32> {
    let [n, c, id, ih, iw] = xd;
    let [m, cg, kd, kh, kw] = wd;
    let mg = m / group;
    let mut y = Vec::new();
    for ni in 0..n {
        for oc in 0..m {
            for oz in 0..od[0] {
                for oy in 0..od[1] {
                    for ox in 0..od[2] {
                        let mut acc = b.map_or(0.0, |b| b[oc]) as f64;
                        for ci in 0..cg {
                            let ic = (oc / mg) * cg + ci;
                            for a in 0..kd {
                                for bb in 0..kh {
                                    for e in 0..kw {
                                        let iz = (oz * s[0] + a * d[0]) as i64 - p[0] as i64;
                                        let iy = (oy * s[1] + bb * d[1]) as i64 - p[1] as i64;
                                        let ix = (ox * s[2] + e * d[2]) as i64 - p[2] as i64;
                                        if iz < 0
                                            || iy < 0
                                            || ix < 0
                                            || iz >= id as i64
                                            || iy >= ih as i64
                                            || ix >= iw as i64
                                        {
                                            continue;
                                        }
                                        let xv = x[(((ni * c + ic) * id + iz as usize) * ih
                                            + iy as usize)
                                            * iw
                                            + ix as usize];
                                        let wv = w[(((oc * cg + ci) * kd + a) * kh + bb) * kw + e];
                                        acc += xv as f64 * wv as f64;
                                    }
                                }
                            }
                        }
                        y.push(acc as f32);
                    }
                }
            }
        }
    }
    let _ = c;
    y
}

fn act_ref(name: &str, alpha: f32, beta: f32, x: f32) -> f32 {
    match name {
        "relu" => x.max(0.0),
        "leaky_relu" => {
            if x < 0.0 {
                alpha * x
            } else {
                x
            }
        }
        "sigmoid" => 1.0 / (1.0 + (-x).exp()),
        "tanh" => x.tanh(),
        "hard_sigmoid" => (alpha * x + beta).clamp(0.0, 1.0),
        "hard_swish" => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        "clip" => x.clamp(alpha, beta),
        _ => x,
    }
}

struct Case {
    x: Vec<usize>,
    w: Vec<usize>,
    group: usize,
    strides: Vec<usize>,
    pads: Vec<usize>,
    dilations: Vec<usize>,
    auto: &'static str,
}

fn case(
    x: &[usize],
    w: &[usize],
    group: usize,
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
    auto: &'static str,
) -> Case {
    Case {
        x: x.to_vec(),
        w: w.to_vec(),
        group,
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: dilations.to_vec(),
        auto,
    }
}

fn check_case(rng: &mut Rng, c: &Case, bias: bool, act: (&str, f32, f32), threads: usize) {
    check_case_with(rng, c, bias, act, threads, false)
}

/// [`check_case`], and with `pruned` the weight is 90% zeros and the op is
/// told it is a constant, so a group-1 conv runs the sparse kernel.
fn check_case_with(
    rng: &mut Rng,
    c: &Case,
    bias: bool,
    act: (&str, f32, f32),
    threads: usize,
    pruned: bool,
) {
    let r = c.x.len() - 2;
    let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
    let mut a = Attrs::new().with("group", Attr::Int(c.group as i64));
    if !c.strides.is_empty() {
        a.set("strides", ints(&c.strides));
    }
    if !c.pads.is_empty() {
        a.set("pads", ints(&c.pads));
    }
    if !c.dilations.is_empty() {
        a.set("dilations", ints(&c.dilations));
    }
    if !c.auto.is_empty() {
        a.set("auto_pad", Attr::Str(c.auto.into()));
    }
    if !act.0.is_empty() {
        a.set("activation", Attr::Str(act.0.into()));
        a.set("activation_alpha", Attr::Float(act.1));
        a.set("activation_beta", Attr::Float(act.2));
    }
    let mut op = build_conv(&a).unwrap();
    let (x, mut w, b) = (
        rng.vec(c.x.iter().product()),
        rng.vec(c.w.iter().product()),
        rng.vec(c.w[0]),
    );
    if pruned {
        for (i, v) in w.iter_mut().enumerate() {
            if i % 10 != 3 {
                *v = 0.0;
            }
        }
        op.constant_inputs(&[false, true, true]);
    }
    let mut ins = vec![
        Some(Tensor::from_slice(&c.x, &x).unwrap()),
        Some(Tensor::from_slice(&c.w, &w).unwrap()),
    ];
    if bias {
        ins.push(Some(Tensor::from_slice(&[c.w[0]], &b).unwrap()));
    }
    let (s, d) = (
        if c.strides.is_empty() {
            vec![1; r]
        } else {
            c.strides.clone()
        },
        if c.dilations.is_empty() {
            vec![1; r]
        } else {
            c.dilations.clone()
        },
    );
    let (mut out, mut pb) = (vec![], vec![]);
    for i in 0..r {
        let (p0, p1) = if c.pads.is_empty() {
            (0, 0)
        } else {
            (c.pads[i], c.pads[r + i])
        };
        let (o, p) = onnx_out(c.x[2 + i], c.w[2 + i], s[i], d[i], p0, p1, c.auto);
        out.push(o);
        pb.push(p);
    }
    let what = format!(
        "x {:?} w {:?} group {} auto '{}' act {:?} threads {threads} pruned {pruned}",
        c.x, c.w, c.group, c.auto, act.0
    );
    let (dims, got) = run(&*op, &ins, threads);
    let mut want_dims = vec![c.x[0], c.w[0]];
    want_dims.extend(&out);
    assert_eq!(dims, want_dims, "{what}");
    let xk = pad3(&c.x[2..], 1);
    let wk = pad3(&c.w[2..], 1);
    let mut want = naive_conv(
        &x,
        [c.x[0], c.x[1], xk[0], xk[1], xk[2]],
        &w,
        [c.w[0], c.w[1], wk[0], wk[1], wk[2]],
        bias.then_some(&b[..]),
        c.group,
        pad3(&s, 1),
        pad3(&d, 1),
        pad3(&pb, 0),
        pad3(&out, 1),
    );
    want.iter_mut()
        .for_each(|v| *v = act_ref(act.0, act.1, act.2, *v));
    check_close(&got, &want, &what);
}

fn cases() -> Vec<Case> {
    vec![
        case(
            &[2, 3, 7, 9],
            &[5, 3, 3, 2],
            1,
            &[2, 1],
            &[1, 0, 2, 1],
            &[1, 2],
            "",
        ),
        case(&[1, 6, 6, 5], &[9, 2, 3, 3], 3, &[], &[1, 1, 1, 1], &[], ""),
        case(
            &[2, 5, 9, 8],
            &[5, 1, 3, 3],
            5,
            &[2, 2],
            &[1, 1, 1, 1],
            &[],
            "",
        ),
        case(
            &[1, 4, 10, 7],
            &[8, 1, 3, 3],
            4,
            &[1, 2],
            &[2, 1, 2, 1],
            &[2, 2],
            "",
        ),
        case(&[1, 1, 9, 9], &[4, 1, 3, 3], 1, &[2, 2], &[], &[], ""),
        case(&[2, 7, 5, 6], &[5, 7, 1, 1], 1, &[], &[], &[], ""),
        case(&[1, 4, 7, 7], &[3, 4, 1, 1], 1, &[2, 2], &[], &[], ""),
        case(&[1, 6, 5, 5], &[4, 3, 1, 1], 2, &[], &[], &[], ""),
        case(&[2, 3, 11], &[4, 3, 4], 1, &[3], &[2, 1], &[2], ""),
        case(&[1, 3, 12], &[3, 1, 5], 3, &[], &[2, 2], &[], ""),
        case(
            &[1, 2, 4, 5, 3],
            &[3, 2, 2, 3, 2],
            1,
            &[1, 2, 1],
            &[0, 1, 1, 1, 0, 0],
            &[],
            "",
        ),
        case(
            &[1, 3, 7, 8],
            &[4, 3, 3, 3],
            1,
            &[2, 2],
            &[],
            &[],
            "SAME_UPPER",
        ),
        case(
            &[1, 2, 6, 7],
            &[3, 2, 4, 4],
            1,
            &[2, 3],
            &[],
            &[],
            "SAME_LOWER",
        ),
        case(&[1, 2, 8, 9], &[3, 2, 3, 3], 1, &[2, 2], &[], &[], "VALID"),
        case(
            &[1, 6, 11, 11],
            &[6, 1, 5, 5],
            6,
            &[2, 2],
            &[],
            &[],
            "SAME_UPPER",
        ),
        case(&[1, 3, 9], &[2, 3, 3], 1, &[2], &[], &[], "SAME_LOWER"),
        // Depthwise rows wide enough for the 8-column register path, with
        // padding edges, a channel multiplier, stride 2 along y, dilation 2.
        case(
            &[1, 4, 9, 37],
            &[4, 1, 5, 5],
            4,
            &[],
            &[2, 2, 2, 2],
            &[],
            "",
        ),
        case(
            &[2, 3, 6, 29],
            &[6, 1, 3, 3],
            3,
            &[2, 1],
            &[1, 1, 1, 1],
            &[1, 2],
            "",
        ),
        case(
            &[1, 2, 5, 40],
            &[2, 1, 3, 3],
            2,
            &[],
            &[0, 0, 0, 0],
            &[],
            "",
        ),
        // Depthwise at stride 2 and 3 along x with rows wide enough for
        // the register path (phase-split planes), dilation, uneven pads.
        case(
            &[1, 3, 9, 40],
            &[6, 1, 3, 3],
            3,
            &[2, 2],
            &[1, 1, 1, 0],
            &[1, 2],
            "",
        ),
        case(
            &[2, 2, 7, 50],
            &[2, 1, 5, 5],
            2,
            &[1, 3],
            &[2, 2, 2, 2],
            &[],
            "",
        ),
        // Stride 1 with at least 4 channels per group (asymmetric pads
        // with dilation, groups, 1-D, a kernel wider than the input,
        // SAME_LOWER, no padding).
        case(
            &[2, 5, 7, 9],
            &[6, 5, 3, 3],
            1,
            &[],
            &[1, 0, 2, 1],
            &[1, 2],
            "",
        ),
        case(&[1, 8, 6, 5], &[4, 4, 3, 3], 2, &[], &[1, 1, 1, 1], &[], ""),
        case(&[1, 4, 12], &[3, 4, 5], 1, &[], &[2, 2], &[], ""),
        case(&[1, 6, 4, 4], &[5, 6, 5, 5], 1, &[], &[3, 3, 3, 3], &[], ""),
        case(&[1, 4, 7, 8], &[4, 4, 2, 2], 1, &[], &[], &[], "SAME_LOWER"),
        case(&[1, 4, 7, 8], &[3, 4, 3, 2], 1, &[], &[], &[], ""),
        // Depthwise rows wide enough for 64- and 32-column chunks, then 8s
        // and single columns (150 = 64·2 + 8·2 + 6; stride 2: 75).
        case(
            &[1, 3, 4, 150],
            &[3, 1, 5, 5],
            3,
            &[],
            &[2, 2, 2, 2],
            &[],
            "",
        ),
        case(
            &[1, 2, 5, 150],
            &[2, 1, 3, 3],
            2,
            &[2, 2],
            &[1, 1, 1, 1],
            &[],
            "",
        ),
        // Planes lower than the kernel (PP-OCR cls's 2×96): kernel rows in
        // the padding are skipped, also with dilation.
        case(
            &[1, 4, 2, 96],
            &[4, 1, 5, 5],
            4,
            &[],
            &[2, 2, 2, 2],
            &[],
            "",
        ),
        case(
            &[1, 2, 3, 40],
            &[2, 1, 3, 3],
            2,
            &[],
            &[3, 2, 1, 2],
            &[2, 2],
            "",
        ),
    ]
}

/// The depthwise plane gives the same bits whichever copy this CPU runs
/// (AVX-512, AVX2 or portable): each column adds its taps in one order,
/// multiply then add. 2×96 is PP-OCR cls's last planes: 64 + 32 columns
/// on AVX-512, and most kernel rows in the padding.
#[test]
fn depthwise_copies_give_the_same_bits() {
    let mut rng = Rng(12);
    let shapes = [
        (6, 150, 5, 1, 2),
        (7, 133, 3, 2, 1),
        (3, 70, 5, 1, 2),
        (2, 96, 5, 1, 2),
        (1, 40, 3, 1, 1),
    ];
    for (ih, iw, k, stride, pad) in shapes {
        let x = rng.vec(ih * iw);
        let w = rng.vec(k * k);
        let win = Window::parse(
            &Attrs::new()
                .with("strides", Attr::Ints(vec![stride, stride]))
                .with("pads", Attr::Ints(vec![pad; 4])),
            false,
        )
        .unwrap();
        let g = win.geo(&[ih, iw], &[k, k]).unwrap();
        let n = g.out_size();
        let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
        depthwise_plane(&x, &w, 0.25, &mut a, &g);
        depthwise_plane_impl::<32>(
            &x,
            &w,
            0.25,
            &mut b,
            &g,
            &mut Vec::new(),
            dw_chunk::<32>,
            dw_chunk::<32>,
        );
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{ih}x{iw} k{k} s{stride}"
        );
    }
}

/// A pruned constant weight (90% zeros) runs the sparse kernel for group-1
/// convs (pointwise straight on the input, others on im2col rows) and the
/// dense paths otherwise; all match the direct loops, with bias, a fused
/// activation and two threads.
#[test]
fn pruned_constant_weights_match_direct_loops() {
    let mut rng = Rng(5);
    for c in cases() {
        for threads in [1, 2] {
            check_case_with(&mut rng, &c, true, ("relu", 0.0, 0.0), threads, true);
            check_case_with(&mut rng, &c, false, ("", 0.0, 0.0), threads, true);
        }
    }
    // A pointwise one with more than a block of positions.
    let pw = case(&[2, 16, 9, 11], &[8, 16, 1, 1], 1, &[], &[], &[], "");
    check_case_with(&mut rng, &pw, true, ("hard_swish", 0.0, 0.0), 2, true);
    // And the op really took the sparse path there.
    let mut op = build_conv(&Attrs::new()).unwrap();
    op.constant_inputs(&[false, true]);
    let x = Tensor::from_slice(&[1, 16, 9, 11], &rng.vec(16 * 99)).unwrap();
    let w: Vec<f32> = (0..8 * 16)
        .map(|i| if i % 10 == 3 { 1.0 } else { 0.0 })
        .collect();
    let w = Tensor::from_slice(&[8, 16, 1, 1], &w).unwrap();
    run(&*op, &[Some(x), Some(w)], 1);
    assert!(op.prepared_bytes() > 0, "no sparse weight was built");
}

#[test]
fn conv_matches_direct_loops() {
    let mut rng = Rng(1);
    for c in cases() {
        for bias in [false, true] {
            check_case(&mut rng, &c, bias, ("", 0.0, 0.0), 1);
        }
    }
}

#[test]
fn conv_fused_activations() {
    let mut rng = Rng(2);
    let acts = [
        ("relu", 0.0, 0.0),
        ("leaky_relu", 0.2, 0.0),
        ("sigmoid", 0.0, 0.0),
        ("tanh", 0.0, 0.0),
        ("hard_sigmoid", 0.3, 0.4),
        ("hard_swish", 0.0, 0.0),
        ("clip", -0.5, 0.25),
    ];
    let cs = cases();
    for act in acts {
        for c in [&cs[0], &cs[2], &cs[5]] {
            check_case(&mut rng, c, true, act, 1);
        }
    }
}

#[test]
fn conv_threaded_paths_match() {
    let mut rng = Rng(3);
    let big = [
        case(
            &[1, 16, 28, 28],
            &[32, 16, 3, 3],
            1,
            &[],
            &[1, 1, 1, 1],
            &[],
            "",
        ),
        case(
            &[1, 32, 40, 40],
            &[32, 1, 3, 3],
            32,
            &[],
            &[1, 1, 1, 1],
            &[],
            "",
        ),
        case(&[1, 32, 24, 24], &[48, 32, 1, 1], 1, &[], &[], &[], ""),
        // A wide stride-1 conv split over threads.
        case(
            &[1, 8, 30, 70],
            &[48, 8, 3, 3],
            1,
            &[],
            &[1, 1, 1, 1],
            &[],
            "",
        ),
    ];
    for c in &big {
        for threads in [1, 2] {
            check_case(&mut rng, c, true, ("relu", 0.0, 0.0), threads);
        }
    }
}

#[test]
fn conv_scratch_reuse_with_stale_contents() {
    let mut rng = Rng(4);
    let mut ctx = Ctx::new(1);
    ctx.scratch(4096).fill(f32::NAN);
    let op = build_conv(&Attrs::new().with("pads", Attr::Ints(vec![1, 1, 1, 1]))).unwrap();
    for (xd, wd) in [
        ([1usize, 3, 9, 7], [4usize, 3, 3, 3]),
        ([1, 2, 5, 5], [2, 2, 3, 3]),
    ] {
        let (x, w) = (rng.vec(xd.iter().product()), rng.vec(wd.iter().product()));
        let ins = [
            Some(Tensor::from_slice(&xd, &x).unwrap()),
            Some(Tensor::from_slice(&wd, &w).unwrap()),
        ];
        let (_, got) = run_in(&mut ctx, &*op, &ins);
        let want = naive_conv(
            &x,
            [xd[0], xd[1], 1, xd[2], xd[3]],
            &w,
            [wd[0], wd[1], 1, wd[2], wd[3]],
            None,
            1,
            [1; 3],
            [1; 3],
            [0, 1, 1],
            [1, xd[2], xd[3]],
        );
        check_close(&got, &want, "reuse");
    }
}

#[test]
fn conv_infer_symbolic_batch_and_spatial() {
    let op = build_conv(
        &Attrs::new()
            .with("strides", Attr::Ints(vec![2, 2]))
            .with("pads", Attr::Ints(vec![1, 1, 1, 1])),
    )
    .unwrap();
    let x = Fact::new(
        DType::F32,
        vec![
            Dim::Sym("N".into()),
            Dim::Known(3),
            Dim::Sym("H".into()),
            Dim::Known(10),
        ],
    );
    let w = Fact::known(Tensor::from_slice(&[8, 3, 3, 3], &[0f32; 216]).unwrap());
    let out = op.infer(&[Some(x), Some(w)]).unwrap();
    assert_eq!(
        out[0].shape,
        vec![
            Dim::Sym("N".into()),
            Dim::Known(8),
            Dim::unknown(),
            Dim::Known(5)
        ]
    );
    assert_eq!(out[0].dtype, DType::F32);
}

#[test]
fn conv_rejects_bad_graphs_without_panicking() {
    let f = |d: &[usize]| Fact::new(DType::F32, d.iter().map(|&x| Dim::Known(x)).collect());
    let plain = build_conv(&Attrs::new()).unwrap();
    let infer = |op: &dyn Op, x: &[usize], w: &[usize]| op.infer(&[Some(f(x)), Some(f(w))]);
    // channel mismatch, rank mismatch, rank 2, kernel larger than input
    assert!(infer(&*plain, &[1, 4, 5, 5], &[2, 3, 3, 3]).is_err());
    assert!(infer(&*plain, &[1, 3, 5, 5], &[2, 3, 3]).is_err());
    assert!(infer(&*plain, &[1, 3], &[2, 3]).is_err());
    assert!(infer(&*plain, &[1, 3, 2, 5], &[2, 3, 3, 3]).is_err());
    // group must divide M; kernel_shape must match W
    let g2 = build_conv(&Attrs::new().with("group", Attr::Int(2))).unwrap();
    assert!(infer(&*g2, &[1, 4, 5, 5], &[3, 2, 3, 3]).is_err());
    let ks = build_conv(&Attrs::new().with("kernel_shape", Attr::Ints(vec![2, 2]))).unwrap();
    assert!(infer(&*ks, &[1, 3, 5, 5], &[2, 3, 3, 3]).is_err());
    // wrong attribute lengths for the rank
    let st = build_conv(&Attrs::new().with("strides", Attr::Ints(vec![1, 1, 1]))).unwrap();
    assert!(infer(&*st, &[1, 3, 5, 5], &[2, 3, 3, 3]).is_err());
    // bias of the wrong length
    let b = f(&[3]);
    assert!(
        plain
            .infer(&[Some(f(&[1, 3, 5, 5])), Some(f(&[2, 3, 3, 3])), Some(b)])
            .is_err()
    );
    // bad attributes fail at build
    for (k, v) in [
        ("strides", Attr::Ints(vec![0, 1])),
        ("pads", Attr::Ints(vec![-1, 0, 0, 0])),
        ("pads", Attr::Ints(vec![1, 1, 1])),
        ("dilations", Attr::Ints(vec![i64::MAX, 1])),
        ("group", Attr::Int(0)),
        ("auto_pad", Attr::Str("SAME".into())),
        ("activation", Attr::Str("swish".into())),
    ] {
        assert!(
            build_conv(&Attrs::new().with(k, v.clone())).is_err(),
            "{k} = {v:?}"
        );
    }
    // huge pads: no panic, no overflow
    let huge = build_conv(
        &Attrs::new()
            .with("pads", Attr::Ints(vec![i32::MAX as i64; 4]))
            .with("dilations", Attr::Ints(vec![i32::MAX as i64; 2])),
    )
    .unwrap();
    let _ = infer(&*huge, &[1, 3, 5, 5], &[2, 3, 3, 3]);
    // a wrong output buffer is an error at eval
    let x = Tensor::from_slice(&[1, 1, 3, 3], &[0f32; 9]).unwrap();
    let w = Tensor::from_slice(&[1, 1, 2, 2], &[0f32; 4]).unwrap();
    let mut buf = vec![0f32; 9];
    let mut outs = [TensorMut {
        dtype: DType::F32,
        dims: &[1, 1, 3, 3],
        data: bytemuck::cast_slice_mut(&mut buf),
    }];
    assert!(
        plain
            .eval(
                &mut Ctx::new(1),
                &[Some(x.view()), Some(w.view())],
                &mut outs
            )
            .is_err()
    );
}
