//! Pruning and low-rank factorization (compress/src/prune.rs, lowrank.rs):
//! structured pruning gives the same outputs as the dense model with the
//! removed channels zeroed; magnitude and N:M pruning zero what they say;
//! factorizing an exactly low-rank weight changes nothing; the bundled
//! digits CNN keeps its accuracy at 80% sparsity and its file shrinks.
//!
//! `cargo test --release --test prune -- --nocapture`

mod common;

use common::*;
use morsel::compress::lowrank::{LowRankOptions, Rank, factorize};
use morsel::compress::prune::{
    self, Layout, PruneOptions, Score, channel_groups, prune_magnitude, prune_n_m, remove_channels,
    select_channels, weight_of, zero_channels,
};
use morsel::runtime::format::writer::{FloatStorage, to_bytes};
use morsel::runtime::graph::{Attr, Attrs, Graph, Node};
use morsel::runtime::ops::{op_id, op_name};
use morsel::runtime::tensor::Dim;
use morsel::{DType, Model, Tensor};

/// Run `g` on inputs by name; every output as f32.
fn run(g: &Graph, feed: &[(String, Tensor)]) -> Vec<Vec<f32>> {
    let m = Model::from_graph(g.clone()).unwrap();
    let refs: Vec<(&str, _)> = feed.iter().map(|(n, t)| (n.as_str(), t.view())).collect();
    m.run(&refs)
        .unwrap()
        .iter()
        .map(|o| o.to_f32_vec().unwrap())
        .collect()
}

/// A graph builder for small test graphs.
struct B {
    g: Graph,
    n: usize,
}

impl B {
    fn new(x_dims: &[usize]) -> B {
        let mut g = Graph::default();
        let x = g.add_value(
            "x",
            DType::F32,
            x_dims.iter().map(|&d| Dim::Known(d)).collect(),
        );
        g.inputs.push(x);
        B { g, n: 0 }
    }
    fn x(&self) -> usize {
        self.g.inputs[0]
    }
    fn konst(&mut self, dims: &[usize], v: &[f32]) -> usize {
        self.n += 1;
        self.g.add_const(&format!("c{}", self.n), t(dims, v))
    }
    fn node(&mut self, op: &str, inputs: &[usize], attrs: Attrs) -> usize {
        self.n += 1;
        let y = self
            .g
            .add_value(&format!("v{}", self.n), DType::F32, vec![]);
        self.g.nodes.push(Node {
            name: format!("n{}_{op}", self.n),
            op: op_id(op).unwrap(),
            attrs,
            inputs: inputs.iter().map(|&i| Some(i)).collect(),
            outputs: vec![y],
        });
        y
    }
    fn finish(mut self, out: usize) -> Graph {
        self.g.outputs.push(out);
        self.g.infer_shapes().unwrap();
        self.g
    }
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// Prune `g` structurally at `ratio` and check it against the same model
/// with those channels zeroed; returns (pruned graph, groups found).
fn pruned_vs_zeroed(g: &Graph, ratio: f32, feed: &[(String, Tensor)], tol: f32) -> (Graph, usize) {
    let mut pruned = g.clone();
    let (groups, _) = channel_groups(&mut pruned).unwrap();
    let keeps = select_channels(&pruned, &groups, ratio, &Score::L2).unwrap();
    let mut zeroed = pruned.clone();
    zero_channels(&mut zeroed, &groups, &keeps).unwrap();
    remove_channels(&mut pruned, &groups, &keeps).unwrap();
    let (a, b) = (run(&pruned, feed), run(&zeroed, feed));
    for (o, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = max_abs_diff(x, y);
        println!("output {o}: pruned vs zeroed max |diff| {d:.3e}");
        assert!(d <= tol, "output {o}: pruned vs zeroed differ by {d}");
    }
    // And it is really smaller.
    let (p0, _) = prune::parameters(g);
    let (p1, _) = prune::parameters(&pruned);
    if groups.iter().zip(&keeps).any(|(g, k)| k.len() < g.channels) {
        assert!(p1 < p0, "parameters {p0} -> {p1}");
    }
    (pruned, groups.len())
}

// ------------------------------------------------------------ structured

/// MiniLM's fixture inputs, first 2 sentences.
fn minilm_two_sentences() -> Vec<(String, Tensor)> {
    npz(&fixture("minilm/inputs.npz"))
        .into_iter()
        .map(|(k, v)| {
            let per = v.numel() / v.dims[0];
            let data = v.to_i64_vec().unwrap();
            (
                k,
                Tensor::from_slice(&[2, v.dims[1]], &data[..2 * per]).unwrap(),
            )
        })
        .collect()
}

#[test]
fn structured_digits_equals_the_zeroed_dense_model() {
    let g = morsel::compress::convert(&digits_dir().join("digits_cnn.onnx")).unwrap();
    let data = npz(&digits_dir().join("digits_test.npz"));
    let x = data.into_iter().find(|(k, _)| k == "x").unwrap().1;
    let feed = vec![("x".to_string(), x)];
    let (pruned, n) = pruned_vs_zeroed(&g, 0.5, &feed, 1e-5);
    // Conv_2 → Conv_9 and Gemm_24 → Gemm_26; Conv_9 feeds a Transpose and
    // Gemm_26 is the output, so they stay whole.
    assert_eq!(n, 2);
    let w = |name: &str| {
        let node = pruned.nodes.iter().find(|n| n.name == name).unwrap();
        pruned.values[node.inputs[1].unwrap()]
            .konst
            .as_ref()
            .unwrap()
            .dims
            .clone()
    };
    assert_eq!(w("node_Conv_2"), vec![8, 1, 3, 3]);
    assert_eq!(w("node_Conv_9"), vec![32, 8, 3, 3]);
    assert_eq!(w("node_Gemm_24"), vec![512, 32]);
    assert_eq!(w("node_Gemm_26"), vec![32, 10]);
}

#[test]
fn structured_minilm_ffn_equals_the_zeroed_dense_model() {
    let g = morsel::compress::convert(&fixture("minilm/model.onnx")).unwrap();
    let feed = minilm_two_sentences();
    let (pruned, n) = pruned_vs_zeroed(&g, 0.5, &feed, 2e-5);
    // Exactly the six FFN intermediates: Q/K/V reach a Reshape, the
    // attention output and FFN output a residual Add.
    assert_eq!(n, 6);
    let inter: Vec<_> = pruned
        .nodes
        .iter()
        .filter(|n| n.name.contains("intermediate"))
        .filter_map(|n| weight_of(&pruned, n))
        .map(|(_, l)| l)
        .collect();
    assert_eq!(inter.len(), 6);
    assert!(inter.iter().all(|l| *l == Layout::KN { k: 384, n: 768 }));
}

/// Attention-head pruning: MiniLM with half the heads of every layer
/// removed equals MiniLM with those heads' V columns and bias zeroed (the
/// heads then add nothing), and every projection shrinks accordingly.
#[test]
fn minilm_heads_removed_equal_the_zeroed_dense_model() {
    use morsel::compress::heads::{attention_blocks, remove_heads, select_heads, zero_heads};
    let g = morsel::compress::convert(&fixture("minilm/model.onnx")).unwrap();
    let feed = minilm_two_sentences();
    let mut pruned = g.clone();
    let (blocks, not) = attention_blocks(&mut pruned).unwrap();
    assert_eq!(blocks.len(), 6, "{not:?}");
    assert!(blocks.iter().all(|b| (b.heads, b.dim) == (12, 32)));
    let keeps = select_heads(&pruned, &blocks, 0.5).unwrap();
    assert!(keeps.iter().all(|k| k.len() == 6));
    let mut zeroed = pruned.clone();
    zero_heads(&mut zeroed, &blocks, &keeps).unwrap();
    remove_heads(&mut pruned, &blocks, &keeps).unwrap();
    let (a, b) = (run(&pruned, &feed), run(&zeroed, &feed));
    for (o, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = max_abs_diff(x, y);
        println!("output {o}: heads removed vs zeroed max |diff| {d:.3e}");
        assert!(d <= 2e-5, "output {o}: removed vs zeroed differ by {d}");
    }
    // And zeroing them does change the model (the check is not vacuous).
    let dense = run(&g, &feed);
    assert!(max_abs_diff(&dense[0], &b[0]) > 1e-2);
    let dims = |name: &str| -> Vec<usize> {
        let n = pruned.nodes.iter().find(|n| n.name == name).unwrap();
        pruned.values[n.inputs[1].unwrap()]
            .konst
            .as_ref()
            .unwrap()
            .dims
            .clone()
    };
    for l in 0..6 {
        let p = format!("/encoder/layer.{l}/attention");
        for w in ["query", "key", "value"] {
            assert_eq!(dims(&format!("{p}/self/{w}/MatMul")), [384, 192]);
        }
        assert_eq!(dims(&format!("{p}/output/dense/MatMul")), [192, 384]);
    }
    // 4 × 384 × 192 weights and 3 × 192 biases fewer per layer.
    let (p0, _) = prune::parameters(&g);
    let (p1, _) = prune::parameters(&pruned);
    assert_eq!(p0 - p1, 6 * (4 * 384 * 192 + 3 * 192), "{p0} -> {p1}");
}

#[test]
fn structured_folds_a_nonzero_constant_into_the_next_bias() {
    // x → MatMul(+b, sigmoid) → ·s (per channel) → +c → MatMul → y:
    // a removed neuron outputs sigmoid(0)·s + c, which must reach y.
    let mut rng = Rng(7);
    let mut b = B::new(&[5, 8]);
    let x = b.x();
    let (w1, b1) = (b.konst(&[8, 6], &rng.vec(48)), b.konst(&[6], &rng.vec(6)));
    let h = b.node(
        "MatMul",
        &[x, w1, b1],
        Attrs::new().with("activation", Attr::Str("sigmoid".into())),
    );
    let s = b.konst(&[6], &rng.vec(6));
    let h = b.node("Mul", &[h, s], Attrs::new());
    let c = b.konst(&[1, 6], &rng.vec(6));
    let h = b.node("Add", &[c, h], Attrs::new());
    let w2 = b.konst(&[6, 3], &rng.vec(18));
    let y = b.node("MatMul", &[h, w2], Attrs::new());
    let g = b.finish(y);
    let feed = vec![("x".to_string(), t(&[5, 8], &rng.vec(40)))];
    let (pruned, n) = pruned_vs_zeroed(&g, 0.5, &feed, 1e-5);
    assert_eq!(n, 1);
    // The consumer gained a bias input holding the folded constants.
    let last = pruned.nodes.last().unwrap();
    assert_eq!(last.inputs.len(), 3);
    // And the dense original differs from the pruned one (pruning is lossy).
    let d = max_abs_diff(&run(&g, &feed)[0], &run(&pruned, &feed)[0]);
    assert!(d > 1e-3, "{d}");
}

#[test]
fn structured_conv_chain_with_padding_pins_channels_with_a_constant() {
    let mut rng = Rng(3);
    for (pads, act, expect_removed) in [
        (0, "Sigmoid", true),  // constant 0.5 folded into the next bias
        (1, "Sigmoid", false), // 0.5 meets zero padding: every channel pinned
        (1, "Relu", true),     // relu(0) = 0: padding does not matter
    ] {
        let mut b = B::new(&[2, 3, 7, 7]);
        let x = b.x();
        let w1 = b.konst(&[6, 3, 3, 3], &rng.vec(162));
        let b1 = b.konst(&[6], &rng.vec(6));
        let h = b.node(
            "Conv",
            &[x, w1, b1],
            Attrs::new().with("pads", ints(&[1, 1, 1, 1])),
        );
        let h = b.node(act, &[h], Attrs::new());
        let h = b.node(
            "MaxPool",
            &[h],
            Attrs::new()
                .with("kernel_shape", ints(&[2, 2]))
                .with("strides", ints(&[1, 1])),
        );
        let w2 = b.konst(&[4, 6, 3, 3], &rng.vec(216));
        let b2 = b.konst(&[4], &rng.vec(4));
        let y = b.node(
            "Conv",
            &[h, w2, b2],
            Attrs::new().with("pads", ints(&[pads; 4])),
        );
        let g = b.finish(y);
        let feed = vec![("x".to_string(), t(&[2, 3, 7, 7], &rng.vec(294)))];
        let (pruned, n) = pruned_vs_zeroed(&g, 0.5, &feed, 1e-5);
        assert_eq!(n, 1, "{act} pads {pads}");
        let w = pruned.values[pruned.nodes[0].inputs[1].unwrap()]
            .konst
            .as_ref()
            .unwrap()
            .dims[0];
        assert_eq!(
            w < 6,
            expect_removed,
            "{act} pads {pads}: {w} channels left"
        );
    }
}

#[test]
fn structured_leaves_residual_and_output_layers_alone() {
    let mut rng = Rng(5);
    let mut b = B::new(&[4, 8]);
    let x = b.x();
    let w1 = b.konst(&[8, 8], &rng.vec(64));
    let h = b.node("MatMul", &[x, w1], Attrs::new());
    let r = b.node("Add", &[h, x], Attrs::new());
    let w2 = b.konst(&[8, 3], &rng.vec(24));
    let y = b.node("MatMul", &[r, w2], Attrs::new());
    let mut g = b.finish(y);
    let (groups, not) = channel_groups(&mut g).unwrap();
    assert!(groups.is_empty());
    assert_eq!(not.len(), 2);
    assert!(not[0].reason.contains("residual"), "{}", not[0].reason);
    assert!(not[1].reason.contains("graph output"), "{}", not[1].reason);
}

// ------------------------------------------------------------ unstructured

fn weights(g: &Graph) -> Vec<(String, Layout, Vec<f32>)> {
    g.nodes
        .iter()
        .filter_map(|n| {
            let (w, l) = weight_of(g, n)?;
            Some((
                n.name.clone(),
                l,
                g.values[w].konst.as_ref()?.to_f32_vec().ok()?,
            ))
        })
        .collect()
}

fn zeros(v: &[f32]) -> usize {
    v.iter().filter(|x| **x == 0.0).count()
}

#[test]
fn magnitude_pruning_hits_the_ratio_and_keeps_the_ends_dense() {
    let g0 = morsel::compress::convert(&digits_dir().join("digits_cnn.onnx")).unwrap();
    let before = weights(&g0);
    let total: usize = before.iter().map(|w| w.2.len()).sum();

    let mut g = g0.clone();
    let r = prune_magnitude(
        &mut g,
        &PruneOptions {
            ratio: 0.8,
            global: true,
            ends: None,
            overrides: vec![],
        },
    )
    .unwrap();
    let after = weights(&g);
    let z: usize = after.iter().map(|w| zeros(&w.2)).sum();
    assert!(
        z.abs_diff((0.8 * total as f64).round() as usize) <= 1,
        "{z} of {total}"
    );
    assert_eq!(zeros(&after[0].2), zeros(&before[0].2), "first layer dense");
    assert_eq!(zeros(&after[3].2), zeros(&before[3].2), "last layer dense");
    assert_eq!(r.iter().map(|l| l.zeros).sum::<usize>(), z);
    // Global: what was zeroed is never larger than what was kept, across
    // the pruned layers.
    let mut largest_zeroed = 0f32;
    let mut smallest_kept = f32::INFINITY;
    for (b, a) in before[1..3].iter().zip(&after[1..3]) {
        for (x, y) in b.2.iter().zip(&a.2) {
            if *y == 0.0 {
                largest_zeroed = largest_zeroed.max(x.abs());
            } else {
                smallest_kept = smallest_kept.min(x.abs());
            }
        }
    }
    assert!(largest_zeroed <= smallest_kept);

    // Per layer, with an override and pruned ends.
    let mut g = g0.clone();
    prune_magnitude(
        &mut g,
        &PruneOptions {
            ratio: 0.5,
            global: false,
            ends: Some(0.25),
            overrides: vec![("node_Gemm_24".into(), 0.9)],
        },
    )
    .unwrap();
    let want = [0.25, 0.5, 0.9, 0.25];
    for ((name, _, w), r) in weights(&g).iter().zip(want) {
        let expect = (r * w.len() as f64).round() as usize;
        assert!(
            zeros(w).abs_diff(expect) <= 1,
            "{name}: {} zeros, want {expect}",
            zeros(w)
        );
    }

    for bad in [1.0, -0.1, f32::NAN] {
        let e = prune_magnitude(
            &mut g0.clone(),
            &PruneOptions {
                ratio: bad,
                global: true,
                ends: None,
                overrides: vec![],
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("--prune"), "{e}");
    }
    let e = prune_magnitude(
        &mut g0.clone(),
        &PruneOptions {
            ratio: 0.5,
            global: true,
            ends: None,
            overrides: vec![("no_such_node".into(), 0.5)],
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("no_such_node"), "{e}");
}

#[test]
fn two_of_four_keeps_the_two_largest_in_every_run() {
    let g0 = morsel::compress::convert(&digits_dir().join("digits_cnn.onnx")).unwrap();
    let mut g = g0.clone();
    prune_n_m(&mut g, 2, 4, &[]).unwrap();
    let (before, after) = (weights(&g0), weights(&g));
    let mut runs = 0;
    for (b, a) in before.iter().zip(&after) {
        let l = a.1;
        if l.reduction() < 4 {
            continue;
        }
        for o in 0..l.outputs() {
            for s in (0..l.reduction()).step_by(4) {
                let idx: Vec<usize> = (s..(s + 4).min(l.reduction()))
                    .map(|r| l.at(o, r))
                    .collect();
                let kept: Vec<usize> = idx.iter().copied().filter(|&i| a.2[i] != 0.0).collect();
                assert!(kept.len() <= 2);
                // Every dropped weight is no larger than every kept one.
                for &i in &idx {
                    if a.2[i] == 0.0 {
                        for &k in &kept {
                            assert!(b.2[i].abs() <= b.2[k].abs());
                        }
                    } else {
                        assert_eq!(a.2[i], b.2[i]);
                    }
                }
                runs += 1;
            }
        }
    }
    assert!(runs > 1000, "{runs}");
    assert!(prune_n_m(&mut g0.clone(), 4, 4, &[]).is_err());
}

#[test]
fn digits_at_80_percent_sparsity_keeps_accuracy_and_shrinks_the_file() {
    let g0 = morsel::compress::convert(&digits_dir().join("digits_cnn.onnx")).unwrap();
    let data = npz(&digits_dir().join("digits_test.npz"));
    let x = data.iter().find(|(k, _)| k == "x").unwrap().1.clone();
    let y = data
        .iter()
        .find(|(k, _)| k == "y")
        .unwrap()
        .1
        .to_i64_vec()
        .unwrap();
    let accuracy = |g: &Graph| accuracy(&run(g, &[("x".to_string(), x.clone())])[0], &y, 10);
    let dense_len = to_bytes(&g0, FloatStorage::F32).unwrap().len();
    let mut g = g0.clone();
    prune_magnitude(
        &mut g,
        &PruneOptions {
            ratio: 0.8,
            global: true,
            ends: None,
            overrides: vec![],
        },
    )
    .unwrap();
    let bytes = to_bytes(&g, FloatStorage::F32).unwrap();
    let (a0, a1) = (accuracy(&g0), accuracy(&g));
    println!(
        "digits: accuracy {:.2}% -> {:.2}%, file {dense_len} -> {} bytes ({:.2}x)",
        a0 * 100.0,
        a1 * 100.0,
        bytes.len(),
        dense_len as f64 / bytes.len() as f64
    );
    assert!(a0 - a1 <= 0.01, "lost {:.2} points", (a0 - a1) * 100.0);
    assert!(
        bytes.len() * 3 <= dense_len,
        "{} vs {dense_len}",
        bytes.len()
    );
    // What is read back is what was pruned.
    let m = Model::from_bytes(&bytes).unwrap();
    let back = weights(m.graph());
    for (a, b) in back.iter().zip(weights(&g)) {
        assert_eq!(a.2, b.2, "{}", a.0);
    }
}

// ------------------------------------------------------------ low rank

#[test]
fn factorizing_an_exactly_low_rank_weight_changes_nothing() {
    let mut rng = Rng(11);
    // MatMul [32, 24] of rank 3, with bias and activation.
    let (k, n, r) = (32, 24, 3);
    let (u, v) = (rng.vec(k * r), rng.vec(r * n));
    let mut w = vec![0f32; k * n];
    for i in 0..k {
        for j in 0..n {
            w[i * n + j] = (0..r).map(|q| u[i * r + q] * v[q * n + j]).sum();
        }
    }
    let mut b = B::new(&[6, k]);
    let x = b.x();
    let wc = b.konst(&[k, n], &w);
    let bc = b.konst(&[n], &rng.vec(n));
    let y = b.node(
        "MatMul",
        &[x, wc, bc],
        Attrs::new().with("activation", Attr::Str("relu".into())),
    );
    let g = b.finish(y);
    // Gemm with transB and alpha, same weight transposed.
    let mut wt = vec![0f32; k * n];
    for i in 0..k {
        for j in 0..n {
            wt[j * k + i] = w[i * n + j];
        }
    }
    let mut b = B::new(&[6, k]);
    let x = b.x();
    let wc = b.konst(&[n, k], &wt);
    let bc = b.konst(&[n], &rng.vec(n));
    let y = b.node(
        "Gemm",
        &[x, wc, bc],
        Attrs::new()
            .with("transB", Attr::Int(1))
            .with("alpha", Attr::Float(0.5))
            .with("beta", Attr::Float(2.0)),
    );
    let gemm = b.finish(y);
    // Conv [8, 4, 3, 3] of rank 2, strided and padded.
    let (o, red, r2) = (8, 36, 2);
    let (u, v) = (rng.vec(o * r2), rng.vec(r2 * red));
    let mut cw = vec![0f32; o * red];
    for i in 0..o {
        for j in 0..red {
            cw[i * red + j] = (0..r2).map(|q| u[i * r2 + q] * v[q * red + j]).sum();
        }
    }
    let mut b = B::new(&[2, 4, 9, 9]);
    let x = b.x();
    let wc = b.konst(&[o, 4, 3, 3], &cw);
    let bc = b.konst(&[o], &rng.vec(o));
    let y = b.node(
        "Conv",
        &[x, wc, bc],
        Attrs::new()
            .with("pads", ints(&[1, 1, 1, 1]))
            .with("strides", ints(&[2, 2])),
    );
    let conv = b.finish(y);

    for (g, x_dims, rank) in [
        (g, vec![6, k], r),
        (gemm, vec![6, k], r),
        (conv, vec![2, 4, 9, 9], r2),
    ] {
        let numel: usize = x_dims.iter().product();
        let feed = vec![("x".to_string(), t(&x_dims, &rng.vec(numel)))];
        let mut f = g.clone();
        let rep = factorize(
            &mut f,
            &LowRankOptions {
                rank: Rank::Energy(0.999999),
                skip: vec![],
                min_size: 0,
                input_stats: Default::default(),
                alpha: 0.5,
            },
        )
        .unwrap();
        assert_eq!(rep.factorized.len(), 1, "{:?}", rep.skipped);
        assert_eq!(rep.factorized[0].rank, rank);
        assert_eq!(f.nodes.len(), 2);
        let (a, b) = (&run(&g, &feed)[0], &run(&f, &feed)[0]);
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = max_abs_diff(a, b);
        println!(
            "{}: rank {rank}, max |diff| {d:.2e} (outputs up to {scale:.1})",
            op_name(g.nodes[0].op)
        );
        assert!(d <= 1e-5 * scale.max(1.0), "{d}");
    }
}

#[test]
fn low_rank_skips_layers_where_it_would_not_save() {
    let mut rng = Rng(2);
    let mut b = B::new(&[3, 16]);
    let x = b.x();
    let w = b.konst(&[16, 16], &rng.vec(256));
    let y = b.node("MatMul", &[x, w], Attrs::new());
    let mut g = b.finish(y);
    // A random matrix needs ~all its rank for 99% energy: 2·16·r ≥ 256.
    let rep = factorize(
        &mut g,
        &LowRankOptions {
            rank: Rank::Energy(0.99),
            skip: vec![],
            min_size: 0,
            input_stats: Default::default(),
            alpha: 0.5,
        },
    )
    .unwrap();
    assert!(rep.factorized.is_empty());
    assert!(
        rep.skipped[0].reason.contains("not be smaller"),
        "{:?}",
        rep.skipped
    );
    assert_eq!(g.nodes.len(), 1);
    // Rank ratio 0.25: rank 4, 2·16·4 = 128 < 256.
    let rep = factorize(
        &mut g,
        &LowRankOptions {
            rank: Rank::Ratio(0.25),
            skip: vec![],
            min_size: 0,
            input_stats: Default::default(),
            alpha: 0.5,
        },
    )
    .unwrap();
    assert_eq!(rep.factorized[0].rank, 4);
    assert_eq!(rep.factorized[0].params_after, 128);
    for bad in [0.0, 1.5, f64::NAN] {
        assert!(
            factorize(
                &mut g.clone(),
                &LowRankOptions {
                    rank: Rank::Energy(bad),
                    skip: vec![],
                    min_size: 0,
                    input_stats: Default::default(),
                    alpha: 0.5,
                }
            )
            .is_err()
        );
    }
}

#[test]
fn activation_aware_low_rank_beats_plain_svd_when_inputs_differ_in_scale() {
    // Inputs whose channels differ in size by up to 100x, a random weight:
    // at the same rank, weighting the SVD by the input scale must give a
    // smaller output error on fresh inputs from the same distribution.
    let mut rng = Rng(17);
    let (k, n, rows) = (32, 24, 64);
    let scale: Vec<f32> = (0..k)
        .map(|i| 10f32.powf(2.0 * i as f32 / k as f32 - 1.0))
        .collect();
    let draw =
        |rng: &mut Rng| -> Vec<f32> { (0..rows * k).map(|i| rng.f() * scale[i % k]).collect() };
    let calib = draw(&mut rng);
    let fresh = draw(&mut rng);
    let mut b = B::new(&[rows, k]);
    let x = b.x();
    let w = b.konst(&[k, n], &rng.vec(k * n));
    let y = b.node("MatMul", &[x, w], Attrs::new());
    let g = b.finish(y);
    let mean_abs: Vec<f64> = (0..k)
        .map(|c| {
            (0..rows)
                .map(|r| calib[r * k + c].abs() as f64)
                .sum::<f64>()
                / rows as f64
        })
        .collect();
    let node = g.nodes[0].name.clone();
    let feed = vec![("x".to_string(), t(&[rows, k], &fresh))];
    let want = &run(&g, &feed)[0];
    let err = |aware: bool| {
        let mut f = g.clone();
        let mut stats = std::collections::HashMap::new();
        if aware {
            stats.insert(node.clone(), mean_abs.clone());
        }
        let r = factorize(
            &mut f,
            &LowRankOptions {
                rank: Rank::Ratio(0.25),
                skip: vec![],
                min_size: 0,
                input_stats: stats,
                alpha: 0.5,
            },
        )
        .unwrap();
        assert_eq!(r.factorized[0].rank, 6);
        let got = &run(&f, &feed)[0];
        let e: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let nrm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        (e / nrm).sqrt()
    };
    let (plain, aware) = (err(false), err(true));
    println!("rank 6 of 24: output error plain SVD {plain:.4}, activation-aware {aware:.4}");
    assert!(aware < plain, "aware {aware} vs plain {plain}");
}
