//! The import-time fusion passes (compress/src/fuse.rs) against ONNX Runtime.
//!
//! Each case in `tests/fusion/` is a small ONNX model exercising one
//! pattern (tests/fusion/make_fusion_models.py builds them and stores ONNX
//! Runtime's outputs). For each: import (the passes run), check the op
//! histogram and the fused nodes (inputs, `activation` attributes) — or, for
//! the `neg_*` cases, that the unsafe fusion did not happen — then run the
//! graph directly and through the `.morsel` writer/reader, and compare every
//! output with ORT's: `|ours - ort| <= 1e-5 · max(1, |ort|)`, integers exact.
//! `cargo test --release --test fusion -- --nocapture` prints the diffs.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use morsel::runtime::format::writer::{FloatStorage, to_bytes};
use morsel::runtime::graph::{Attr, Graph};
use morsel::runtime::ops::op_name;
use morsel::{DType, Model, Options, Tensor};

const TOL: f32 = 1e-5;

fn fixture(name: &str, ext: &str) -> PathBuf {
    repo().join("tests/fusion").join(format!("{name}.{ext}"))
}

/// What one MatMul/Gemm/Conv/ConvTranspose node must look like after import.
#[derive(Debug, Clone, PartialEq)]
struct Host {
    op: &'static str,
    /// Present inputs (a fused bias makes MatMul's third).
    inputs: usize,
    /// The `activation` attribute ("" when absent).
    activation: String,
    alpha: Option<f32>,
    beta: Option<f32>,
    /// `activation_scale` / `activation_shift` (a scalar affine after it).
    scale: Option<f32>,
    shift: Option<f32>,
}

fn host(op: &'static str, inputs: usize, activation: &'static str) -> Host {
    Host {
        op,
        inputs,
        activation: activation.into(),
        alpha: None,
        beta: None,
        scale: None,
        shift: None,
    }
}

fn host_affine(
    op: &'static str,
    inputs: usize,
    activation: &'static str,
    scale: Option<f32>,
    shift: Option<f32>,
) -> Host {
    Host {
        scale,
        shift,
        ..host(op, inputs, activation)
    }
}

fn host_ab(op: &'static str, inputs: usize, activation: &'static str, a: f32, b: f32) -> Host {
    Host {
        alpha: Some(a),
        beta: Some(b),
        ..host(op, inputs, activation)
    }
}

fn histogram(g: &Graph) -> BTreeMap<&'static str, usize> {
    let mut h = BTreeMap::new();
    for n in &g.nodes {
        *h.entry(op_name(n.op)).or_insert(0) += 1;
    }
    h
}

/// The hosts of `g` in graph order, as [`Host`]s.
fn hosts(g: &Graph) -> Vec<Host> {
    let f = |a: Option<&Attr>| match a {
        Some(Attr::Float(v)) => Some(*v),
        _ => None,
    };
    g.nodes
        .iter()
        .filter(|n| ["MatMul", "Gemm", "Conv", "ConvTranspose"].contains(&op_name(n.op)))
        .map(|n| Host {
            op: op_name(n.op),
            inputs: n.inputs.iter().flatten().count(),
            activation: match n.attrs.get("activation") {
                None => String::new(),
                Some(Attr::Str(s)) => s.clone(),
                Some(other) => panic!("activation attribute {other:?}"),
            },
            alpha: f(n.attrs.get("activation_alpha")),
            beta: f(n.attrs.get("activation_beta")),
            scale: f(n.attrs.get("activation_scale")),
            shift: f(n.attrs.get("activation_shift")),
        })
        .collect()
}

/// Largest `|got - want| / max(1, |want|)` and largest `|got - want|`.
fn diffs(got: &Tensor, want: &Tensor) -> (f32, f32) {
    let (g, w) = (got.to_f32_vec().unwrap(), want.to_f32_vec().unwrap());
    let abs = max_abs_diff(&g, &w);
    let scaled = g
        .iter()
        .zip(&w)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max);
    (scaled, abs)
}

/// Run `model` on the case's inputs and compare every output with ORT's;
/// the largest scaled diff.
fn compare(case: &str, how: &str, model: &Model, data: &[(String, Tensor)], threads: usize) -> f32 {
    let g = model.graph();
    let names: Vec<&str> = g
        .inputs
        .iter()
        .map(|&i| g.values[i].name.as_str())
        .collect();
    let feeds: Vec<(&str, _)> = names
        .iter()
        .map(|&n| {
            let t = &data
                .iter()
                .find(|(k, _)| k == n)
                .unwrap_or_else(|| panic!("{case}: no input '{n}' in the .npz"))
                .1;
            (n, t.view())
        })
        .collect();
    let mut s = model.session(Options {
        threads,
        ..Options::default()
    });
    let out = s
        .run(&feeds)
        .unwrap_or_else(|e| panic!("{case} ({how}): run: {e}"));
    assert_eq!(out.len(), g.outputs.len());
    let mut worst = 0.0f32;
    for (&o, got) in g.outputs.iter().zip(&out) {
        let name = &g.values[o].name;
        let want = &data
            .iter()
            .find(|(k, _)| *k == format!("out:{name}"))
            .unwrap_or_else(|| panic!("{case}: no reference 'out:{name}'"))
            .1;
        assert_eq!(
            (got.dtype, &got.dims),
            (want.dtype, &want.dims),
            "{case} ({how}): output '{name}' dtype/shape differs from ONNX Runtime's"
        );
        if want.dtype == DType::F32 {
            let (scaled, abs) = diffs(got, want);
            println!(
                "{case:36} {how:12} threads {threads}  {name:20} max abs diff {abs:.2e}, scaled {scaled:.2e}"
            );
            assert!(
                scaled <= TOL,
                "{case} ({how}, threads {threads}): output '{name}' differs from ONNX Runtime by {abs:e} (scaled {scaled:e})"
            );
            worst = worst.max(scaled);
        } else {
            assert_eq!(
                got.to_i64_vec().unwrap(),
                want.to_i64_vec().unwrap(),
                "{case} ({how}): integer output '{name}' differs from ONNX Runtime"
            );
            println!(
                "{case:36} {how:12} threads {threads}  {name:20} exact ({})",
                want.dtype
            );
        }
    }
    worst
}

/// Import `case`, check the fused graph against `ops` (the whole op
/// histogram) and `want_hosts` (every MatMul/Gemm/Conv/ConvTranspose, in
/// order), then compare its outputs with ORT's, run directly and after a
/// `.morsel` round trip.
fn check(case: &str, ops: &[(&str, usize)], want_hosts: &[Host]) {
    let g = morsel::compress::convert(&fixture(case, "onnx"))
        .unwrap_or_else(|e| panic!("{case}: import: {e:#}"));
    let got_ops = histogram(&g);
    let want_ops: BTreeMap<&str, usize> = ops.iter().copied().collect();
    assert_eq!(got_ops, want_ops, "{case}: op histogram after import");
    assert_eq!(hosts(&g), want_hosts, "{case}: fused nodes");

    // The passes reached a fixed point: running them again changes nothing.
    let mut again = g.clone();
    for r in morsel::compress::fuse::fuse_all(&mut again).unwrap() {
        assert_eq!(
            r.changed, 0,
            "{case}: {} fires again on its own output",
            r.pass
        );
    }

    let data = npz(&fixture(case, "npz"));
    let direct = Model::from_graph(g.clone()).unwrap_or_else(|e| panic!("{case}: {e}"));
    let bytes = to_bytes(&g, FloatStorage::F32).expect("serialise to .morsel");
    let loaded = Model::from_bytes(&bytes).expect("read the .morsel bytes back");
    assert_eq!(
        hosts(loaded.graph()),
        want_hosts,
        "{case}: fused nodes after the .morsel round trip"
    );
    compare(case, "graph", &direct, &data, 1);
    for threads in [1, 2] {
        compare(case, ".morsel", &loaded, &data, threads);
    }
}

// ---------------------------------------------------------------- GELU

#[test]
fn gelu_product_div_linear() {
    check(
        "gelu_product_div_linear",
        &[("MatMul", 1)],
        &[host("MatMul", 3, "gelu")],
    );
}

#[test]
fn gelu_half_x_div_linear() {
    check(
        "gelu_half_x_div_linear",
        &[("MatMul", 1)],
        &[host("MatMul", 3, "gelu")],
    );
}

#[test]
fn gelu_half_erf_mul_linear() {
    check(
        "gelu_half_erf_mul_linear",
        &[("MatMul", 1)],
        &[host("MatMul", 3, "gelu")],
    );
}

#[test]
fn gelu_product_mul_input() {
    check("gelu_product_mul_input", &[("Gelu", 1)], &[]);
}

#[test]
fn gelu_half_x_mul_input() {
    check("gelu_half_x_mul_input", &[("Gelu", 1)], &[]);
}

#[test]
fn gelu_half_erf_div_input() {
    check("gelu_half_erf_div_input", &[("Gelu", 1)], &[]);
}

#[test]
fn gelu_op20_linear() {
    check(
        "gelu_op20_linear",
        &[("MatMul", 1)],
        &[host("MatMul", 3, "gelu")],
    );
}

/// Gelu(approximate="tanh") is not fused (only exact GELU is); it still runs.
#[test]
fn gelu_tanh_op20_linear() {
    check(
        "gelu_tanh_op20_linear",
        &[("Gelu", 1), ("MatMul", 1)],
        &[host("MatMul", 3, "")],
    );
}

/// GELU after Gemm: Gelu, then the activation of the Gemm.
#[test]
fn gemm_gelu() {
    check("gemm_gelu", &[("Gemm", 1)], &[host("Gemm", 3, "gelu")]);
}

/// MatMul + bias feeding the GELU and a residual Add: GELU and bias fuse,
/// the activation cannot (its input has two readers).
#[test]
fn gelu_residual() {
    check(
        "gelu_residual",
        &[("Add", 1), ("Gelu", 1), ("MatMul", 1)],
        &[host("MatMul", 3, "")],
    );
}

// ---------------------------------------------------------------- bias

#[test]
fn bias_second() {
    check("bias_second", &[("MatMul", 1)], &[host("MatMul", 3, "")]);
}

#[test]
fn bias_first() {
    check("bias_first", &[("MatMul", 1)], &[host("MatMul", 3, "")]);
}

#[test]
fn bias_111n_rank3() {
    check(
        "bias_111n_rank3",
        &[("MatMul", 1)],
        &[host("MatMul", 3, "")],
    );
}

#[test]
fn bias_1n_rank2() {
    check("bias_1n_rank2", &[("MatMul", 1)], &[host("MatMul", 3, "")]);
}

/// x [K] @ W [K, N] + b [N]: the 1-D promotion.
#[test]
fn bias_1d_input() {
    check("bias_1d_input", &[("MatMul", 1)], &[host("MatMul", 3, "")]);
}

// ---------------------------------------------------------------- activations

#[test]
fn conv_relu() {
    check("conv_relu", &[("Conv", 1)], &[host("Conv", 3, "relu")]);
}

#[test]
fn conv_clip_0_6() {
    check(
        "conv_clip_0_6",
        &[("Conv", 1)],
        &[host_ab("Conv", 3, "clip", 0.0, 6.0)],
    );
}

#[test]
fn conv_clip_max_only() {
    check(
        "conv_clip_max_only",
        &[("Conv", 1)],
        &[host_ab("Conv", 3, "clip", f32::NEG_INFINITY, 0.25)],
    );
}

/// Opset 10: Clip's bounds are attributes.
#[test]
fn conv_clip_attr_opset10() {
    check(
        "conv_clip_attr_opset10",
        &[("Conv", 1)],
        &[host_ab("Conv", 3, "clip", 0.0, 6.0)],
    );
}

/// Relu then Sigmoid: the first fuses, the second stays.
#[test]
fn conv_relu_sigmoid() {
    check(
        "conv_relu_sigmoid",
        &[("Conv", 1), ("Sigmoid", 1)],
        &[host("Conv", 3, "relu")],
    );
}

#[test]
fn conv_hardswish() {
    check(
        "conv_hardswish",
        &[("Conv", 1)],
        &[host("Conv", 3, "hard_swish")],
    );
}

#[test]
fn conv_hardsigmoid() {
    check(
        "conv_hardsigmoid",
        &[("Conv", 1)],
        &[host_ab("Conv", 3, "hard_sigmoid", 1.0 / 6.0, 0.5)],
    );
}

#[test]
fn convtranspose_leakyrelu() {
    check(
        "convtranspose_leakyrelu",
        &[("ConvTranspose", 1)],
        &[Host {
            alpha: Some(0.1),
            ..host("ConvTranspose", 3, "leaky_relu")
        }],
    );
}

/// BatchNormalization folded into the Conv before it (which gains a bias),
/// then Relu fused.
#[test]
fn conv_bn_relu() {
    check("conv_bn_relu", &[("Conv", 1)], &[host("Conv", 3, "relu")]);
}

/// ... into a ConvTranspose (weight [C_in, C_out, k, k]), as in PP-OCR det.
#[test]
fn convtranspose_bn_relu() {
    check(
        "convtranspose_bn_relu",
        &[("ConvTranspose", 1)],
        &[host("ConvTranspose", 3, "relu")],
    );
}

/// ... into a grouped ConvTranspose without bias: each input channel scales
/// by its own group's output channels.
#[test]
fn convtranspose_grouped_bn() {
    check(
        "convtranspose_grouped_bn",
        &[("ConvTranspose", 1)],
        &[host("ConvTranspose", 3, "")],
    );
}

/// The bias as a separate Add before the BatchNormalization: the Add folds
/// into the ConvTranspose's bias, then the BatchNormalization (second
/// fold-batchnorm), then Relu.
#[test]
fn convtranspose_add_bn_relu() {
    check(
        "convtranspose_add_bn_relu",
        &[("ConvTranspose", 1)],
        &[host("ConvTranspose", 3, "relu")],
    );
}

/// A per-channel affine after a grouped ConvTranspose (fold-conv-affine).
#[test]
fn convtranspose_grouped_affine() {
    check(
        "convtranspose_grouped_affine",
        &[("ConvTranspose", 1)],
        &[host("ConvTranspose", 3, "")],
    );
}

#[test]
fn gemm_transb_sigmoid() {
    check(
        "gemm_transb_sigmoid",
        &[("Gemm", 1)],
        &[host("Gemm", 3, "sigmoid")],
    );
}

#[test]
fn matmul_bias_tanh() {
    check(
        "matmul_bias_tanh",
        &[("MatMul", 1)],
        &[host("MatMul", 3, "tanh")],
    );
}

// ---------------------------------------------------------------- HardSwish, Conv affine

/// `(x·clip(x+3, 0, 6))/6` after a Conv: HardSwish, then the Conv's activation.
#[test]
fn hardswish_spelled_conv() {
    check(
        "hardswish_spelled_conv",
        &[("Conv", 1)],
        &[host("Conv", 3, "hard_swish")],
    );
}

/// `(clip(x+3, 0, 6)·⅙)·x` of a graph input.
#[test]
fn hardswish_spelled_input() {
    check("hardswish_spelled_input", &[("HardSwish", 1)], &[]);
}

/// `Conv(x)·s + t`, scalar `s`, `t` [1, M, 1, 1]: folded into the Conv.
#[test]
fn conv_affine() {
    check("conv_affine", &[("Conv", 1)], &[host("Conv", 3, "")]);
}

/// Grouped Conv without bias, `t + s·Conv(x)` per channel [M, 1, 1], Relu.
#[test]
fn conv_affine_grouped_relu() {
    check(
        "conv_affine_grouped_relu",
        &[("Conv", 1)],
        &[host("Conv", 3, "relu")],
    );
}

/// Conv, HardSwish, `·s + t` with [1]-shaped scalars: one Conv whose
/// hard_swish is followed by the affine.
#[test]
fn conv_hardswish_affine() {
    check(
        "conv_hardswish_affine",
        &[("Conv", 1)],
        &[host_affine(
            "Conv",
            3,
            "hard_swish",
            Some(0.83),
            Some(-0.21),
        )],
    );
}

/// MatMul + bias, Relu, `0.5 + ·`: the shift alone.
#[test]
fn matmul_relu_shift() {
    check(
        "matmul_relu_shift",
        &[("MatMul", 1)],
        &[host_affine("MatMul", 3, "relu", None, Some(0.5))],
    );
}

/// Q·Kᵀ / √8: the batched MatMul scales by 1/√8 (an ulp from dividing).
#[test]
fn attention_scores_div() {
    check(
        "attention_scores_div",
        &[("MatMul", 1)],
        &[host_affine("MatMul", 2, "", Some(1.0 / 8f32.sqrt()), None)],
    );
}

/// MatMul + bias, `·0.7 - 0.25` with no activation.
#[test]
fn matmul_scale_shift() {
    check(
        "matmul_scale_shift",
        &[("MatMul", 1)],
        &[host_affine("MatMul", 3, "", Some(0.7), Some(-0.25))],
    );
}

/// `2 / (MatMul(x) + 30)`: the + 30 is a shift, the Div stays.
#[test]
fn neg_scalar_div_by_matmul() {
    check(
        "neg_scalar_div_by_matmul",
        &[("MatMul", 1), ("Div", 1)],
        &[host_affine("MatMul", 3, "", None, Some(30.0))],
    );
}

/// A per-channel Mul after the activation is not a scalar affine.
#[test]
fn neg_affine_per_channel_after_act() {
    check(
        "neg_affine_per_channel_after_act",
        &[("Conv", 1), ("Mul", 1)],
        &[host("Conv", 3, "relu")],
    );
}

/// No affine after a fused GELU (the runtime has none).
#[test]
fn neg_affine_after_gelu() {
    check(
        "neg_affine_after_gelu",
        &[("MatMul", 1), ("Mul", 1)],
        &[host("MatMul", 3, "gelu")],
    );
}

/// LayerNorm spelled out with Pow and γ, β: one LayerNormalization.
#[test]
fn layer_norm_pow_affine() {
    check("layer_norm_pow_affine", &[("LayerNormalization", 1)], &[]);
}

/// LayerNorm spelled out with Mul(d, d), no γ or β.
#[test]
fn layer_norm_mul_plain() {
    check("layer_norm_mul_plain", &[("LayerNormalization", 1)], &[]);
}

// ---------------------------------------------------------------- negative

/// The same pattern over axis 0 is not a LayerNormalization.
#[test]
fn neg_layer_norm_axis0() {
    check(
        "neg_layer_norm_axis0",
        &[
            ("Add", 1),
            ("Div", 1),
            ("Pow", 1),
            ("ReduceMean", 2),
            ("Sqrt", 1),
            ("Sub", 1),
        ],
        &[],
    );
}

/// The MatMul's and the Conv's outputs are graph outputs: no bias or
/// activation may be fused into them.
#[test]
fn neg_matmul_output_is_graph_output() {
    check(
        "neg_matmul_output_is_graph_output",
        &[("Add", 1), ("Conv", 1), ("MatMul", 1), ("Relu", 1)],
        &[host("MatMul", 2, ""), host("Conv", 3, "")],
    );
}

/// The MatMul's and the Conv's outputs have a second reader.
#[test]
fn neg_second_reader() {
    check(
        "neg_second_reader",
        &[
            ("Add", 1),
            ("Conv", 1),
            ("MatMul", 1),
            ("Mul", 1),
            ("Relu", 1),
            ("Sigmoid", 1),
        ],
        &[host("MatMul", 2, ""), host("Conv", 3, "")],
    );
}

#[test]
fn neg_bias_is_input() {
    check(
        "neg_bias_is_input",
        &[("Add", 1), ("MatMul", 1)],
        &[host("MatMul", 2, "")],
    );
}

#[test]
fn neg_weight_is_input() {
    check(
        "neg_weight_is_input",
        &[("Add", 1), ("MatMul", 1)],
        &[host("MatMul", 2, "")],
    );
}

/// A [1, 1, N] bias on a 2-D product makes the output 3-D.
#[test]
fn neg_bias_raises_rank() {
    check(
        "neg_bias_raises_rank",
        &[("Add", 1), ("MatMul", 1)],
        &[host("MatMul", 2, "")],
    );
}

#[test]
fn neg_clip_bounds_are_inputs() {
    check(
        "neg_clip_bounds_are_inputs",
        &[("Clip", 1), ("Conv", 1)],
        &[host("Conv", 3, "")],
    );
}

/// 0.6 instead of ½: not GELU. The bias still fuses.
#[test]
fn neg_gelu_wrong_half() {
    check(
        "neg_gelu_wrong_half",
        &[
            ("Add", 1),
            ("Div", 1),
            ("Erf", 1),
            ("MatMul", 1),
            ("Mul", 2),
        ],
        &[host("MatMul", 3, "")],
    );
}

/// The Erf's output is a graph output.
#[test]
fn neg_gelu_erf_is_output() {
    check(
        "neg_gelu_erf_is_output",
        &[("Add", 1), ("Div", 1), ("Erf", 1), ("Mul", 2)],
        &[],
    );
}

/// GELU spelled with [1, 1, 1] constants on a 2-D input: the output is 3-D,
/// which a Gelu node would not reproduce.
#[test]
fn neg_gelu_constants_raise_rank() {
    check(
        "neg_gelu_constants_raise_rank",
        &[("Add", 1), ("Erf", 1), ("Mul", 3)],
        &[],
    );
}

/// An int32 MatMul then Relu: fused activations are f32-only.
#[test]
fn neg_int_matmul_relu() {
    check(
        "neg_int_matmul_relu",
        &[("MatMul", 1), ("Relu", 1)],
        &[host("MatMul", 2, "")],
    );
}

/// `clip(x+3, 0, 5)`: not HardSwish.
#[test]
fn neg_hardswish_clip_0_5() {
    check(
        "neg_hardswish_clip_0_5",
        &[("Add", 1), ("Clip", 1), ("Div", 1), ("Mul", 1)],
        &[],
    );
}

/// HardSwish spelled with [1, 1, 1] constants on a 2-D input: 3-D output.
#[test]
fn neg_hardswish_constants_raise_rank() {
    check(
        "neg_hardswish_constants_raise_rank",
        &[("Add", 1), ("Clip", 1), ("Div", 1), ("Mul", 1)],
        &[],
    );
}

/// As many values as channels, but along W and H: not per channel.
#[test]
fn neg_conv_affine_not_per_channel() {
    check(
        "neg_conv_affine_not_per_channel",
        &[("Add", 1), ("Conv", 1), ("Mul", 1)],
        &[host("Conv", 3, "")],
    );
}

/// A one-element [1, 1, 1, 1, 1] scale makes the Conv's output 5-D.
#[test]
fn neg_conv_affine_raises_rank() {
    check(
        "neg_conv_affine_raises_rank",
        &[("Conv", 1), ("Mul", 1)],
        &[host("Conv", 3, "")],
    );
}

/// Every fixture has a test above (and every test a fixture).
#[test]
fn every_fixture_is_tested() {
    let src = std::fs::read_to_string(repo().join("tests/fusion.rs")).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("tests/fusion")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "onnx") {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                src.contains(&format!("fn {stem}()")),
                "tests/fusion/{stem}.onnx has no test in tests/fusion.rs"
            );
            assert!(fixture(&stem, "npz").exists(), "{stem}.npz is missing");
            n += 1;
        }
    }
    assert_eq!(n, 58, "fixtures in tests/fusion");
}
