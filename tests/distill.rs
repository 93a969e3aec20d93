//! Training on the IR and distillation (compress/src/train, distill): the
//! candle forward pass equals the runtime's (the digits CNN and a table of
//! small graphs); a seed fixes the result; pruned zeros stay zero; repair
//! by distillation brings a 90%-pruned digits CNN's accuracy back up; a
//! resumed run ends where an uninterrupted one does; a NaN loss stops with
//! the last good checkpoint kept; bad inputs give clear errors.
//!
//! `cargo test --test distill -- --nocapture`

mod common;

use common::*;
use morsel::compress::distill::{
    self, DistillOptions, Loss, Optim, TransferSet, check_student, distill, forward_tensors,
    teacher_outputs, transfer_from_arrays,
};
use morsel::compress::measure::{argmax_rows, run_batched};
use morsel::compress::prune::{PruneOptions, prune_magnitude};
use morsel::compress::quantize::{QuantOptions, Rounding, qat_plan, quantize_dynamic};
use morsel::compress::train::Student;
use morsel::runtime::format::writer::{FloatStorage, to_bytes};
use morsel::runtime::graph::{Attr, Attrs, Graph, Node};
use morsel::runtime::ops::{op_id, op_name};
use morsel::runtime::tensor::Dim;
use morsel::{DType, Model, Tensor};

fn digits() -> Graph {
    morsel::compress::convert(&digits_dir().join("digits_cnn.onnx")).unwrap()
}

fn split(name: &str) -> Vec<(String, Tensor)> {
    npz(&digits_dir().join(name))
}

fn transfer(g: &Graph, name: &str) -> TransferSet {
    transfer_from_arrays(split(name), g, name).unwrap()
}

/// The first `n` samples.
fn head(d: &TransferSet, n: usize) -> TransferSet {
    TransferSet {
        inputs: d
            .inputs
            .iter()
            .map(|t| morsel::compress::measure::rows(t, 0, n).unwrap())
            .collect(),
        labels: d.labels.as_ref().map(|y| y[..n].to_vec()),
        n,
    }
}

/// Runtime accuracy of `g` on labelled data.
fn accuracy(g: &Graph, d: &TransferSet) -> f64 {
    let m = Model::from_graph(g.clone()).unwrap();
    let name = g.values[g.inputs[0]].name.clone();
    let (out, _) = run_batched(&m, &[(name, d.inputs[0].clone())], 256, 1).unwrap();
    let pred = argmax_rows(&out, 10);
    let y = d.labels.as_ref().unwrap();
    pred.iter()
        .zip(y)
        .filter(|(p, y)| **p as i64 == **y)
        .count() as f64
        / y.len() as f64
}

fn quick(epochs: usize) -> DistillOptions {
    DistillOptions {
        epochs,
        batch: 64,
        lr: 3e-3,
        progress: false,
        ..DistillOptions::default()
    }
}

fn weights(g: &Graph) -> Vec<Vec<f32>> {
    g.values
        .iter()
        .filter_map(|v| v.konst.as_ref())
        .filter(|t| t.dtype == DType::F32)
        .map(|t| t.to_f32_vec().unwrap())
        .collect()
}

fn pruned_digits(ratio: f32) -> Graph {
    let mut g = digits();
    prune_magnitude(
        &mut g,
        &PruneOptions {
            ratio,
            global: true,
            ends: None,
            overrides: vec![],
        },
    )
    .unwrap();
    g
}

// ------------------------------------------------------------ forward

#[test]
fn forward_equals_the_runtime_on_the_digits_test_set() {
    let g = digits();
    let data = transfer(&g, "digits_test.npz");
    let student = Student::new(g.clone()).unwrap();
    let ours = forward_tensors(&student, &data.inputs).unwrap();
    let m = Model::from_graph(g).unwrap();
    let want = m.run(&[("x", data.inputs[0].view())]).unwrap();
    let d = max_abs_diff(
        &ours[0].to_f32_vec().unwrap(),
        &want[0].to_f32_vec().unwrap(),
    );
    println!(
        "digits test set ({} samples): candle vs runtime max |diff| {d:.3e}",
        data.n
    );
    assert!(d <= 1e-4, "max |diff| {d}");
}

/// A one-node graph (plus constants) and its input.
struct Case {
    what: &'static str,
    op: &'static str,
    attrs: Attrs,
    x: Vec<usize>,
    /// Constant inputs after x: dims (values random), or i64 values.
    consts: Vec<Konst>,
}

enum Konst {
    F(Vec<usize>),
    I(Vec<i64>),
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

fn case(what: &'static str, op: &'static str, attrs: &[(&str, Attr)], x: &[usize]) -> Case {
    let mut a = Attrs::new();
    for (k, v) in attrs {
        a.set(k, v.clone());
    }
    Case {
        what,
        op,
        attrs: a,
        x: x.to_vec(),
        consts: vec![],
    }
}

impl Case {
    fn with(mut self, k: Konst) -> Case {
        self.consts.push(k);
        self
    }
    fn graph(&self, rng: &mut Rng) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value(
            "x",
            DType::F32,
            self.x.iter().map(|&d| Dim::Known(d)).collect(),
        );
        g.inputs.push(x);
        let mut inputs = vec![Some(x)];
        for (i, k) in self.consts.iter().enumerate() {
            let tensor = match k {
                Konst::F(d) => t(d, &rng.vec(d.iter().product())),
                Konst::I(v) => Tensor::from_slice(&[v.len()], v).unwrap(),
            };
            inputs.push(Some(g.add_const(&format!("c{i}"), tensor)));
        }
        let y = g.add_value("y", DType::F32, vec![]);
        g.nodes.push(Node {
            name: format!("the_{}", self.op),
            op: op_id(self.op).unwrap(),
            attrs: self.attrs.clone(),
            inputs,
            outputs: vec![y],
        });
        g.outputs.push(y);
        g.infer_shapes().unwrap();
        g
    }
}

fn act(name: &str) -> (&'static str, Attr) {
    ("activation", Attr::Str(name.into()))
}

#[test]
fn forward_equals_the_runtime_op_by_op() {
    use Konst::{F, I};
    let cases = vec![
        case(
            "gemm transB alpha beta",
            "Gemm",
            &[
                ("transB", Attr::Int(1)),
                ("alpha", Attr::Float(0.5)),
                ("beta", Attr::Float(2.0)),
            ],
            &[3, 5],
        )
        .with(F(vec![4, 5]))
        .with(F(vec![4])),
        case(
            "gemm + leaky_relu",
            "Gemm",
            &[act("leaky_relu"), ("activation_alpha", Attr::Float(0.1))],
            &[3, 5],
        )
        .with(F(vec![5, 4]))
        .with(F(vec![4])),
        case(
            "matmul 3-D + bias + gelu",
            "MatMul",
            &[act("gelu")],
            &[2, 3, 5],
        )
        .with(F(vec![5, 4]))
        .with(F(vec![4])),
        case("matmul + gelu_tanh", "MatMul", &[act("gelu_tanh")], &[3, 5]).with(F(vec![5, 4])),
        case("matmul + sigmoid", "MatMul", &[act("sigmoid")], &[3, 5]).with(F(vec![5, 4])),
        case("matmul + tanh", "MatMul", &[act("tanh")], &[3, 5]).with(F(vec![5, 4])),
        case(
            "matmul + hard_swish",
            "MatMul",
            &[act("hard_swish")],
            &[3, 5],
        )
        .with(F(vec![5, 4])),
        case(
            "matmul + clip",
            "MatMul",
            &[
                act("clip"),
                ("activation_alpha", Attr::Float(-0.2)),
                ("activation_beta", Attr::Float(0.3)),
            ],
            &[3, 5],
        )
        .with(F(vec![5, 4])),
        case(
            "conv stride 2, asymmetric pads, relu",
            "Conv",
            &[
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[0, 1, 1, 0])),
                act("relu"),
            ],
            &[2, 3, 7, 6],
        )
        .with(F(vec![4, 3, 3, 3]))
        .with(F(vec![4])),
        case(
            "conv groups, dilation, SAME_UPPER",
            "Conv",
            &[
                ("group", Attr::Int(2)),
                ("dilations", ints(&[2, 2])),
                ("auto_pad", Attr::Str("SAME_UPPER".into())),
            ],
            &[1, 4, 6, 6],
        )
        .with(F(vec![6, 2, 3, 3])),
        case("conv 1-D", "Conv", &[("pads", ints(&[1, 1]))], &[2, 3, 9])
            .with(F(vec![5, 3, 3]))
            .with(F(vec![5])),
        case(
            "maxpool 2x2",
            "MaxPool",
            &[("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))],
            &[2, 3, 8, 8],
        ),
        case(
            "maxpool 3x3 stride 2 pads ceil",
            "MaxPool",
            &[
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
                ("ceil_mode", Attr::Int(1)),
            ],
            &[1, 2, 8, 7],
        ),
        case(
            "avgpool pads, pad not counted",
            "AveragePool",
            &[
                ("kernel_shape", ints(&[3, 3])),
                ("pads", ints(&[1, 1, 1, 1])),
            ],
            &[1, 2, 5, 5],
        ),
        case(
            "avgpool pads counted, stride 2",
            "AveragePool",
            &[
                ("kernel_shape", ints(&[2, 3])),
                ("strides", ints(&[2, 1])),
                ("pads", ints(&[1, 0, 0, 1])),
                ("count_include_pad", Attr::Int(1)),
            ],
            &[1, 2, 5, 5],
        ),
        case(
            "global average pool",
            "GlobalAveragePool",
            &[],
            &[2, 3, 4, 5],
        ),
        case("global max pool", "GlobalMaxPool", &[], &[2, 3, 4, 5]),
        case(
            "softmax axis 1",
            "Softmax",
            &[("axis", Attr::Int(1))],
            &[2, 5, 3],
        ),
        case("softmax last", "Softmax", &[], &[4, 7]),
        case("add broadcast", "Add", &[], &[2, 3, 4]).with(F(vec![3, 1])),
        case("sub", "Sub", &[], &[2, 3]).with(F(vec![3])),
        case("mul", "Mul", &[], &[2, 3]).with(F(vec![2, 1])),
        case("div", "Div", &[], &[2, 3]).with(F(vec![1])),
        case("relu", "Relu", &[], &[3, 4]),
        case("sigmoid", "Sigmoid", &[], &[3, 4]),
        case("tanh", "Tanh", &[], &[3, 4]),
        case("gelu", "Gelu", &[], &[3, 4]),
        case("hard swish", "HardSwish", &[], &[3, 4]),
        case(
            "leaky relu",
            "LeakyRelu",
            &[("alpha", Attr::Float(0.2))],
            &[3, 4],
        ),
        case(
            "flatten axis 2",
            "Flatten",
            &[("axis", Attr::Int(2))],
            &[2, 3, 4, 5],
        ),
        case(
            "transpose",
            "Transpose",
            &[("perm", ints(&[0, 2, 3, 1]))],
            &[2, 3, 4, 5],
        ),
        case("reshape -1 and 0", "Reshape", &[], &[2, 3, 4]).with(I(vec![0, -1])),
        case("slice", "Slice", &[], &[4, 6])
            .with(I(vec![1]))
            .with(I(vec![5]))
            .with(I(vec![1])),
        case(
            "gather rows",
            "Gather",
            &[("axis", Attr::Int(1))],
            &[2, 5, 3],
        )
        .with(I(vec![4, 0, 2])),
        case("unsqueeze", "Unsqueeze", &[], &[2, 3]).with(I(vec![1])),
        // what BERT-style encoders (MiniLM) need
        case(
            "layer norm, last axis",
            "LayerNormalization",
            &[("epsilon", Attr::Float(1e-5))],
            &[2, 3, 8],
        )
        .with(F(vec![8]))
        .with(F(vec![8])),
        case(
            "layer norm, axis 1, no shift",
            "LayerNormalization",
            &[("axis", Attr::Int(1)), ("epsilon", Attr::Float(1e-3))],
            &[2, 3, 4],
        )
        .with(F(vec![3, 4])),
        case("reduce sum, axes input", "ReduceSum", &[], &[2, 3, 4]).with(I(vec![1])),
        case(
            "reduce sum, two axes, keepdims 0",
            "ReduceSum",
            &[("keepdims", Attr::Int(0))],
            &[2, 3, 4],
        )
        .with(I(vec![0, -1])),
        // (the importer turns opset < 18 `axes` attributes into this input)
        case("reduce mean", "ReduceMean", &[], &[2, 3, 4]).with(I(vec![1])),
        case("reduce l2, last axis", "ReduceL2", &[], &[2, 3, 4]).with(I(vec![-1])),
        case("expand", "Expand", &[], &[3, 1]).with(I(vec![2, 3, 4])),
    ];
    let mut rng = Rng(7);
    for c in &cases {
        let g = c.graph(&mut rng);
        let x = t(&c.x, &rng.vec(c.x.iter().product()));
        let student = Student::new(g.clone()).unwrap();
        let ours = forward_tensors(&student, std::slice::from_ref(&x)).unwrap();
        let want = Model::from_graph(g)
            .unwrap()
            .run(&[("x", x.view())])
            .unwrap();
        assert_eq!(ours[0].dims, want[0].dims, "{}: shape", c.what);
        let d = max_abs_diff(
            &ours[0].to_f32_vec().unwrap(),
            &want[0].to_f32_vec().unwrap(),
        );
        println!("{:<40} max |diff| {d:.2e}", c.what);
        assert!(d <= 1e-5, "{}: max |diff| {d}", c.what);
    }
}

#[test]
fn every_weight_and_bias_of_the_digits_cnn_is_trainable() {
    let g = digits();
    let student = Student::new(g).unwrap();
    // Conv_2, Conv_9, Gemm_24, Gemm_26: a weight and a bias each.
    assert_eq!(student.params().len(), 8);
    assert_eq!(student.num_params(), 38282);
}

// ------------------------------------------------------------ training

#[test]
fn the_same_seed_gives_the_same_weights() {
    let teacher = digits();
    let student_g = pruned_digits(0.8);
    let data = head(&transfer(&teacher, "digits_train.npz"), 384);
    let tm = Model::from_graph(teacher).unwrap();
    let targets = teacher_outputs(&tm, &data, 256, 1).unwrap();
    let run = |seed: u64| {
        let s = Student::new(student_g.clone()).unwrap();
        let o = DistillOptions { seed, ..quick(2) };
        distill(&s, &data, &targets, &o).unwrap();
        weights(&s.export().unwrap())
    };
    let (a, b, c) = (run(3), run(3), run(4));
    assert!(a == b, "two runs with seed 3 differ");
    assert!(a != c, "seeds 3 and 4 gave the same weights");
    assert!(a != weights(&student_g), "training changed nothing");
}

#[test]
fn pruned_zeros_stay_zero_and_the_rest_trains() {
    let teacher = digits();
    let pruned = pruned_digits(0.9);
    let data = head(&transfer(&teacher, "digits_train.npz"), 256);
    let targets = teacher_outputs(&Model::from_graph(teacher).unwrap(), &data, 256, 1).unwrap();
    let s = Student::new(pruned.clone()).unwrap();
    let o = DistillOptions {
        val_fraction: 0.0,
        optim: Optim::AdamW { weight_decay: 0.1 },
        ..quick(1)
    };
    distill(&s, &data, &targets, &o).unwrap();
    let after = s.export().unwrap();
    let (mut zeros, mut changed) = (0usize, 0usize);
    for p in s.params().iter().filter(|p| p.mask.is_some()) {
        let w0 = pruned.values[p.value]
            .konst
            .as_ref()
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let w1 = after.values[p.value]
            .konst
            .as_ref()
            .unwrap()
            .to_f32_vec()
            .unwrap();
        for (a, b) in w0.iter().zip(&w1) {
            if *a == 0.0 {
                assert_eq!(*b, 0.0, "{}: a pruned weight moved", p.name);
                zeros += 1;
            } else if a != b {
                changed += 1;
            }
        }
    }
    println!("{zeros} pruned weights stayed zero, {changed} others changed");
    assert!(
        zeros > 30_000 && changed > 3_000,
        "{zeros} zeros, {changed} changed"
    );
}

#[test]
fn repair_brings_back_accuracy_lost_to_pruning() {
    let teacher = digits();
    let test = transfer(&teacher, "digits_test.npz");
    let train = transfer(&teacher, "digits_train.npz");
    let pruned = pruned_digits(0.9);
    let (acc_teacher, acc_pruned) = (accuracy(&teacher, &test), accuracy(&pruned, &test));
    let targets = teacher_outputs(&Model::from_graph(teacher).unwrap(), &train, 256, 1).unwrap();
    let s = Student::new(pruned).unwrap();
    let r = distill(&s, &train, &targets, &quick(3)).unwrap();
    let acc_repaired = accuracy(&s.export().unwrap(), &test);
    println!(
        "digits test accuracy: teacher {acc_teacher:.4}, 90% pruned {acc_pruned:.4}, repaired {acc_repaired:.4} ({} epochs, {:.0} samples/s)",
        r.history.len(),
        r.samples_per_sec
    );
    // A real gain: at least a third of what pruning lost.
    assert!(
        acc_repaired - acc_pruned >= (acc_teacher - acc_pruned) / 3.0,
        "pruned {acc_pruned}, repaired {acc_repaired}, teacher {acc_teacher}"
    );
}

/// Hidden-state matching (`--match`): with the second conv's output (the
/// first pruned layer; the first conv stays dense) exposed on both sides,
/// repair pulls that layer towards the teacher's (same seed,
/// same data, the only difference the extra loss term), and a name that is
/// not a layer output is refused.
#[test]
fn matching_a_hidden_layer_pulls_it_towards_the_teachers() {
    let teacher = digits();
    let conv = teacher
        .nodes
        .iter()
        .filter(|n| op_name(n.op) == "Conv")
        .nth(1)
        .unwrap()
        .name
        .clone();
    let matches = [conv.clone()];
    let train = head(&transfer(&teacher, "digits_train.npz"), 512);
    let test = transfer(&teacher, "digits_test.npz");
    let mut exposed_teacher = teacher.clone();
    distill::expose(&mut exposed_teacher, &matches, "teacher").unwrap();
    let hidden = |g: &Graph| -> Vec<f32> {
        let m = Model::from_graph(g.clone()).unwrap();
        let name = g.values[g.inputs[0]].name.clone();
        m.run(&[(name.as_str(), test.inputs[0].view())]).unwrap()[1]
            .to_f32_vec()
            .unwrap()
    };
    let want = hidden(&exposed_teacher);
    let mse = |g: &Graph| -> f64 {
        let got = hidden(g);
        got.iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / want.len() as f64
    };
    let mut runs = vec![];
    for matched in [false, true] {
        let mut student = pruned_digits(0.9);
        let targets = if matched {
            distill::expose(&mut student, &matches, "student").unwrap();
            teacher_outputs(
                &Model::from_graph(exposed_teacher.clone()).unwrap(),
                &train,
                256,
                1,
            )
            .unwrap()
        } else {
            teacher_outputs(&Model::from_graph(teacher.clone()).unwrap(), &train, 256, 1).unwrap()
        };
        let s = Student::new(student).unwrap();
        let o = DistillOptions {
            intermediates: matched as usize,
            ..quick(2)
        };
        distill(&s, &train, &targets, &o).unwrap();
        let mut g = s.export().unwrap();
        if !matched {
            distill::expose(&mut g, &matches, "student").unwrap();
        }
        runs.push(mse(&g));
    }
    let before = {
        let mut g = pruned_digits(0.9);
        distill::expose(&mut g, &matches, "student").unwrap();
        mse(&g)
    };
    println!(
        "'{conv}' output MSE to the teacher's: pruned {before:.4e}, repaired {:.4e}, repaired with --match {:.4e}",
        runs[0], runs[1]
    );
    assert!(runs[1] < 0.8 * runs[0], "{runs:?}");

    let mut g = digits();
    let input = g.values[g.inputs[0]].name.clone();
    for (name, why) in [
        ("no_such_layer", "has no value or node of that name"),
        (input.as_str(), "is a constant or an input"),
    ] {
        let err = distill::expose(&mut g, &[name.to_string()], "teacher")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("--match {name}: ")) && err.contains(why),
            "{err}"
        );
    }
    let out = g.values[g.outputs[0]].name.clone();
    let err = distill::expose(&mut g, &[out], "teacher")
        .unwrap_err()
        .to_string();
    assert!(err.contains("is an output already"), "{err}");
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let teacher = digits();
    let data = head(&transfer(&teacher, "digits_train.npz"), 320);
    let targets = teacher_outputs(&Model::from_graph(teacher).unwrap(), &data, 256, 1).unwrap();
    let student_g = pruned_digits(0.8);
    let dir = std::env::temp_dir().join(format!("morsel-distill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("resume.safetensors");
    let _ = std::fs::remove_file(&ckpt);

    let straight = Student::new(student_g.clone()).unwrap();
    distill(&straight, &data, &targets, &quick(3)).unwrap();

    let resumed = Student::new(student_g.clone()).unwrap();
    let o = DistillOptions {
        checkpoint: Some(ckpt.clone()),
        resume: true,
        ..quick(3)
    };
    let first = distill(
        &resumed,
        &data,
        &targets,
        &DistillOptions {
            stop_after: Some(1),
            ..o.clone()
        },
    )
    .unwrap();
    assert_eq!(first.history.len(), 1);
    // A fresh process: the student starts from the file's weights again.
    let resumed = Student::new(student_g).unwrap();
    let second = distill(&resumed, &data, &targets, &o).unwrap();
    assert_eq!(second.resumed_from, Some(1));
    assert_eq!(second.history.len(), 2);
    assert!(
        weights(&straight.export().unwrap()) == weights(&resumed.export().unwrap()),
        "resumed weights differ from the uninterrupted run's"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let teacher = digits();
    let data = head(&transfer(&teacher, "digits_train.npz"), 256);
    let targets = teacher_outputs(&Model::from_graph(teacher).unwrap(), &data, 256, 1).unwrap();
    let g = pruned_digits(0.5);
    let dir = std::env::temp_dir().join(format!("morsel-distill-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("nan.safetensors");
    let _ = std::fs::remove_file(&ckpt);
    let o = DistillOptions {
        checkpoint: Some(ckpt.clone()),
        resume: true,
        ..quick(3)
    };
    let s = Student::new(g.clone()).unwrap();
    distill(
        &s,
        &data,
        &targets,
        &DistillOptions {
            stop_after: Some(1),
            ..o.clone()
        },
    )
    .unwrap();
    let good = std::fs::read(&ckpt).unwrap();
    // Resume with an absurd step size: SGD overflows to inf, then NaN.
    let s = Student::new(g).unwrap();
    let bad = DistillOptions {
        lr: 1e300,
        optim: Optim::Sgd { momentum: 0.9 },
        warmup: 0.0,
        ..o
    };
    let err = distill(&s, &data, &targets, &bad).unwrap_err().to_string();
    println!("{err}");
    assert!(
        err.contains("loss is NaN") || err.contains("loss is inf"),
        "{err}"
    );
    assert!(
        err.contains("last good checkpoint") && err.contains("after epoch 1"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        good,
        "the good checkpoint was overwritten"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------ bad input

#[test]
fn transfer_data_of_the_wrong_shape_is_refused() {
    let teacher = digits();
    let x = t(&[4, 1, 9, 9], &[0.0; 4 * 81]);
    let err = transfer_from_arrays(vec![("x".into(), x)], &teacher, "bad.npz")
        .err()
        .unwrap()
        .to_string();
    println!("{err}");
    assert!(
        err.contains(
            "bad.npz: array 'x' has shape [4, 1, 9, 9], the teacher's input 'x' is [N, 1, 8, 8]"
        ),
        "{err}"
    );
    let y = t(&[4, 8, 8], &[0.0; 4 * 64]);
    assert!(transfer_from_arrays(vec![("x".into(), y)], &teacher, "bad.npz").is_err());
    let err = transfer_from_arrays(vec![("z".into(), t(&[1], &[0.0]))], &teacher, "bad.npz")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no array for the teacher's input 0 'x'"),
        "{err}"
    );
}

/// x [N, 1, 8, 8] → Flatten → Gemm(64 → classes).
fn mlp(classes: usize) -> Graph {
    let mut rng = Rng(1);
    let mut g = Graph::default();
    let x = g.add_value(
        "x",
        DType::F32,
        vec![
            Dim::Sym("N".into()),
            Dim::Known(1),
            Dim::Known(8),
            Dim::Known(8),
        ],
    );
    g.inputs.push(x);
    let f = g.add_value("flat", DType::F32, vec![]);
    g.nodes.push(Node {
        name: "flatten".into(),
        op: op_id("Flatten").unwrap(),
        attrs: Attrs::new(),
        inputs: vec![Some(x)],
        outputs: vec![f],
    });
    let w: Vec<f32> = rng.vec(64 * classes).iter().map(|v| v * 0.1).collect();
    let w = g.add_const("w", t(&[64, classes], &w));
    let b = g.add_const("b", t(&[classes], &vec![0.0; classes]));
    let y = g.add_value("logits", DType::F32, vec![]);
    g.nodes.push(Node {
        name: "fc".into(),
        op: op_id("Gemm").unwrap(),
        attrs: Attrs::new(),
        inputs: vec![Some(f), Some(w), Some(b)],
        outputs: vec![y],
    });
    g.outputs.push(y);
    g.infer_shapes().unwrap();
    g
}

#[test]
fn a_student_with_other_outputs_is_refused() {
    let teacher = digits();
    check_student(&teacher, &mlp(10)).unwrap();
    let err = check_student(&teacher, &mlp(5)).unwrap_err().to_string();
    println!("{err}");
    assert!(
        err.contains("the student's outputs (logits: f32 [N, 5]) do not match the teacher's (logits: f32 [N, 10])"),
        "{err}"
    );
    // Found at run time too, when shapes are not known ahead.
    let data = head(&transfer(&teacher, "digits_train.npz"), 64);
    let targets = teacher_outputs(&Model::from_graph(teacher).unwrap(), &data, 64, 1).unwrap();
    let s = Student::new(mlp(5)).unwrap();
    let err = distill(&s, &data, &targets, &quick(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has shape [5] per sample, the teacher's is [10]"),
        "{err}"
    );
}

#[test]
fn an_mlp_student_learns_from_the_teacher() {
    let teacher = digits();
    let train = transfer(&teacher, "digits_train.npz");
    let test = transfer(&teacher, "digits_test.npz");
    let targets = teacher_outputs(&Model::from_graph(teacher).unwrap(), &train, 256, 1).unwrap();
    let g = mlp(10);
    let before = accuracy(&g, &test);
    let s = Student::new(g).unwrap();
    let o = DistillOptions {
        lr: 1e-2,
        ..quick(3)
    };
    distill(&s, &train, &targets, &o).unwrap();
    let after = accuracy(&s.export().unwrap(), &test);
    println!("MLP student accuracy: {before:.4} -> {after:.4}");
    assert!(after > before + 0.3, "{before} -> {after}");
}

#[test]
fn unsupported_ops_are_listed_with_their_nodes() {
    let mut g = mlp(10);
    let y = g.outputs[0];
    let z = g.add_value("z", DType::F32, vec![]);
    g.nodes.push(Node {
        name: "the_reduce".into(),
        op: op_id("ReduceMax").unwrap(),
        attrs: Attrs::new(),
        inputs: vec![Some(y)],
        outputs: vec![z],
    });
    g.outputs = vec![z];
    let err = Student::new(g).err().unwrap().to_string();
    assert!(err.contains("node 'the_reduce' (ReduceMax)"), "{err}");
}

#[test]
fn labels_are_needed_for_alpha() {
    let teacher = digits();
    let mut data = head(&transfer(&teacher, "digits_train.npz"), 64);
    data.labels = None;
    let targets =
        teacher_outputs(&Model::from_graph(teacher.clone()).unwrap(), &data, 64, 1).unwrap();
    let s = Student::new(teacher).unwrap();
    let o = DistillOptions {
        loss: Loss::Kl {
            temperature: 2.0,
            alpha: 0.5,
        },
        ..quick(1)
    };
    let err = distill(&s, &data, &targets, &o).unwrap_err().to_string();
    assert!(err.contains("no labels"), "{err}");
    let _ = distill::Loss::Mse;
}

// ------------------------------------------------------------ int8-aware

/// `g` as `--quantize int8` writes it, read back (int8-stored weights
/// are rounded in the file, not in the graph).
fn int8_of(g: &Graph, o: &QuantOptions) -> Graph {
    let mut q = g.clone();
    quantize_dynamic(&mut q, o).unwrap();
    let bytes = to_bytes(&q, FloatStorage::F32).unwrap();
    Model::from_bytes(&bytes).unwrap().graph().clone()
}

/// `g` ready to train through the rounding `int8_of(g, o)` applies.
fn int8_aware(g: &Graph, o: &QuantOptions) -> (Student, Vec<(String, Rounding)>) {
    let plan = qat_plan(g, o).unwrap();
    let mut s = Student::new(g.clone()).unwrap();
    s.fake_quantize(&plan).unwrap();
    (s, plan)
}

fn every_layer() -> QuantOptions {
    QuantOptions {
        min_size: 0,
        ..QuantOptions::default()
    }
}

/// The first output of `g` on `inputs` (by the graph's input order).
fn run_first(g: &Graph, inputs: &[Tensor]) -> Vec<f32> {
    let m = Model::from_graph(g.clone()).unwrap();
    let names: Vec<String> = g.inputs.iter().map(|&i| g.values[i].name.clone()).collect();
    let feed: Vec<(&str, _)> = names
        .iter()
        .zip(inputs)
        .map(|(n, t)| (n.as_str(), t.view()))
        .collect();
    m.run(&feed).unwrap()[0].to_f32_vec().unwrap()
}

/// How far the int8-aware forward pass and the plain one are from the
/// int8 model the runtime runs: `(int8-aware, plain, largest |output|)`.
fn distance_to_int8(g: &Graph, o: &QuantOptions, inputs: &[Tensor]) -> (f32, f32, f32) {
    let int8 = run_first(&int8_of(g, o), inputs);
    let (aware, _) = int8_aware(g, o);
    let plain = Student::new(g.clone()).unwrap();
    let first = |s: &Student| forward_tensors(s, inputs).unwrap()[0].to_f32_vec().unwrap();
    let big = int8.iter().fold(0f32, |m, v| m.max(v.abs()));
    (
        max_abs_diff(&first(&aware), &int8),
        max_abs_diff(&first(&plain), &int8),
        big,
    )
}

#[test]
fn the_int8_aware_forward_pass_computes_what_the_int8_model_does() {
    use Konst::F;
    // A real export (jax2onnx): two Gemms, all int8 with --min-size 0.
    let mlp = morsel::compress::convert(&digits_dir().join("digits_student_mlp.onnx")).unwrap();
    let test = transfer(&mlp, "digits_test.npz");
    let (_, plan) = int8_aware(&mlp, &every_layer());
    assert_eq!(
        plan.iter().filter(|(_, r)| *r == Rounding::Compute).count(),
        2,
        "{plan:?}"
    );
    let mut rng = Rng(11);
    // A table lookup into a MatMul on 3-D rows (a transformer's first
    // steps), with a bias and a fused GELU.
    let emb = embedding_and_dense(&mut rng, 40, 16, 24);
    let id_values: Vec<i64> = (0..10).map(|i| (i * 7 + 3) % 40).collect();
    let ids_in = Tensor::from_slice(&[2, 5], &id_values).unwrap();
    // Gemm with transB and alpha (int8 stores alpha·Bᵀ).
    let gemm = case(
        "gemm",
        "Gemm",
        &[("transB", Attr::Int(1)), ("alpha", Attr::Float(0.5))],
        &[6, 24],
    )
    .with(F(vec![16, 24]))
    .with(F(vec![16]))
    .graph(&mut rng);
    let gemm_in = t(&[6, 24], &rng.vec(144));
    // Convs computing in f32 (--min-reduction): of a chain of three, the
    // first keeps f32 weights, the second stores halves, the third int8.
    let mut convs = Graph::default();
    let x = convs.add_value(
        "x",
        DType::F32,
        vec![Dim::Known(2), Dim::Known(3), Dim::Known(9), Dim::Known(9)],
    );
    convs.inputs.push(x);
    let mut v = x;
    for (i, c) in [(0, 3usize), (1, 8), (2, 8)] {
        let w = convs.add_const(&format!("w{i}"), t(&[8, c, 3, 3], &rng.vec(8 * c * 9)));
        let y = convs.add_value(&format!("y{i}"), DType::F32, vec![]);
        let mut a = Attrs::new();
        a.set("pads", Attr::Ints(vec![1; 4]));
        convs.nodes.push(Node {
            name: format!("conv{i}"),
            op: op_id("Conv").unwrap(),
            attrs: a,
            inputs: vec![Some(v), Some(w)],
            outputs: vec![y],
        });
        v = y;
    }
    convs.outputs.push(v);
    convs.infer_shapes().unwrap();
    let stored = QuantOptions {
        min_reduction: 1 << 20,
        ..every_layer()
    };
    let (_, conv_plan) = int8_aware(&convs, &stored);
    assert_eq!(
        conv_plan,
        [("conv1", Rounding::Half), ("conv2", Rounding::Stored)].map(|(n, r)| (n.to_string(), r))
    );
    let conv_in = t(&[2, 3, 9, 9], &rng.vec(486));

    for (what, g, o, inputs) in [
        (
            "digits MLP (2 Gemm)",
            &mlp,
            every_layer(),
            test.inputs.clone(),
        ),
        ("Gather + MatMul + GELU", &emb, every_layer(), vec![ids_in]),
        ("Gemm transB alpha", &gemm, every_layer(), vec![gemm_in]),
        (
            "f32 Convs: halves, int8-stored",
            &convs,
            stored,
            vec![conv_in],
        ),
    ] {
        let (aware, plain, big) = distance_to_int8(g, &o, &inputs);
        println!(
            "{what}: max |diff| to the int8 model: int8-aware {aware:.2e}, plain f32 {plain:.2e} (outputs up to {big:.2})"
        );
        // What is left is f32 rounding (sums in another order).
        assert!(aware <= 1e-5 * big.max(1.0), "{what}: {aware} vs {big}");
        assert!(plain >= 1000.0 * aware, "{what}: {plain} vs {aware}");
    }
}

#[test]
fn int8_aware_repair_ships_the_weights_it_trained() {
    let teacher = digits();
    let pruned = pruned_digits(0.9);
    let train = transfer(&teacher, "digits_train.npz");
    let test = transfer(&teacher, "digits_test.npz");
    let targets = teacher_outputs(&Model::from_graph(teacher).unwrap(), &train, 256, 1).unwrap();
    let o = every_layer();
    let before = accuracy(&int8_of(&pruned, &o), &test);
    let (s, plan) = int8_aware(&pruned, &o);
    assert!(plan.iter().any(|(_, r)| *r == Rounding::Compute));
    distill(&s, &train, &targets, &quick(3)).unwrap();
    let trained = s.export().unwrap();
    let shipped = int8_of(&trained, &o);
    let after = accuracy(&shipped, &test);
    // The forward pass that trained agrees with the file that ships (its
    // conv inputs get one range per sample, the runtime's one per patch).
    let seen = forward_tensors(&s, &test.inputs).unwrap()[0]
        .to_f32_vec()
        .unwrap();
    let runs = run_first(&shipped, &test.inputs);
    let agree = argmax_rows(&seen, 10)
        .iter()
        .zip(argmax_rows(&runs, 10))
        .filter(|(a, b)| **a == *b)
        .count() as f64
        / test.n as f64;
    println!(
        "90%-pruned digits CNN, int8: {:.2}% -> {:.2}% after 3 int8-aware epochs; trained vs shipped top-1 agreement {:.2}%",
        100.0 * before,
        100.0 * after,
        100.0 * agree
    );
    assert!(after >= before + 0.05, "{before} -> {after}");
    assert!(agree >= 0.99, "{agree}");
}

// ------------------------------------------------------------ student mode

/// The MLP student (7,210 parameters, a fifth of the CNN's) on the digits
/// training split: distilled (KL, T=2) against the same student on the
/// labels alone, same schedule, same seeds (`morsel distill … --lr 1e-2
/// --epochs 60`; examples/digits/student_vs_labels.sh runs ten seeds).
#[test]
fn distillation_beats_the_labels_alone_for_an_mlp_student() {
    let teacher = digits();
    let student = morsel::compress::convert(&digits_dir().join("digits_student_mlp.onnx")).unwrap();
    let train = transfer(&teacher, "digits_train.npz");
    let test = transfer(&teacher, "digits_test.npz");
    let targets = teacher_outputs(&Model::from_graph(teacher).unwrap(), &train, 256, 1).unwrap();
    let trained = |seed: u64, alpha: f32| {
        let s = Student::new(student.clone()).unwrap();
        let o = DistillOptions {
            epochs: 60,
            lr: 1e-2,
            seed,
            loss: Loss::Kl {
                temperature: 2.0,
                alpha,
            },
            progress: false,
            ..DistillOptions::default()
        };
        distill(&s, &train, &targets, &o).unwrap();
        100.0 * accuracy(&s.export().unwrap(), &test)
    };
    let seeds = 1..=5u64;
    let labels: Vec<f64> = seeds.clone().map(|s| trained(s, 1.0)).collect();
    let kl: Vec<f64> = seeds.map(|s| trained(s, 0.0)).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("MLP student, test accuracy % by seed: labels alone {labels:.2?}, distilled {kl:.2?}");
    println!("means: {:.3} vs {:.3}", mean(&labels), mean(&kl));
    // Measured 97.64 vs 98.26 here: 2.8 test images ahead on average.
    assert!(mean(&kl) >= mean(&labels) + 0.3, "{labels:?} vs {kl:?}");
    let ahead = labels.iter().zip(&kl).filter(|(l, k)| k > l).count();
    assert!(ahead >= 4, "{labels:?} vs {kl:?}");
}
