//! Bad input gives one clear error naming the tensor or node.

mod common;

use common::*;
use morsel::compress::onnx::proto::*;
use morsel::runtime::ErrorKind;
use morsel::{DType, Model, TensorRef};
use prost::Message;

fn digits() -> Model {
    Model::from_bytes(&digits_morsel_bytes()).unwrap()
}

fn f32s(x: &[f32]) -> &[u8] {
    morsel::runtime::bytemuck::cast_slice(x)
}

#[test]
fn wrong_input_shape_names_the_input_and_both_shapes() {
    let x = vec![0f32; 64];
    let e = digits()
        .run(&[(
            "x",
            TensorRef {
                dtype: DType::F32,
                dims: &[1, 8, 8],
                data: f32s(&x),
            },
        )])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Input);
    let m = e.to_string();
    assert!(
        m.contains("'x'") && m.contains("[N, 1, 8, 8]") && m.contains("[1, 8, 8]"),
        "{m}"
    );
    let x = vec![0f32; 2 * 81];
    let e = digits()
        .run(&[(
            "x",
            TensorRef {
                dtype: DType::F32,
                dims: &[2, 1, 9, 9],
                data: f32s(&x),
            },
        )])
        .unwrap_err();
    assert!(e.to_string().contains("[2, 1, 9, 9]"), "{e}");
}

#[test]
fn wrong_dtype_names_the_input_and_both_dtypes() {
    let x = vec![0i64; 64];
    let data = morsel::runtime::bytemuck::cast_slice(&x);
    let e = digits()
        .run(&[(
            "x",
            TensorRef {
                dtype: DType::I64,
                dims: &[1, 1, 8, 8],
                data,
            },
        )])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Input);
    assert!(e.to_string().contains("'x' must be f32, got i64"), "{e}");
}

#[test]
fn missing_and_unknown_inputs_are_named() {
    let e = digits().run(&[]).unwrap_err();
    assert!(e.to_string().contains("missing input 'x'"), "{e}");
    let x = vec![0f32; 64];
    let e = digits()
        .run(&[(
            "image",
            TensorRef {
                dtype: DType::F32,
                dims: &[1, 1, 8, 8],
                data: f32s(&x),
            },
        )])
        .unwrap_err();
    assert!(
        e.to_string().contains("no input 'image'") && e.to_string().contains("x"),
        "{e}"
    );
}

#[test]
fn data_length_must_match_shape() {
    let x = vec![0f32; 10];
    let e = digits()
        .run(&[(
            "x",
            TensorRef {
                dtype: DType::F32,
                dims: &[1, 1, 8, 8],
                data: f32s(&x),
            },
        )])
        .unwrap_err();
    assert!(e.to_string().contains("40 bytes"), "{e}");
}

#[test]
fn corrupt_file_is_a_format_error() {
    let mut b = digits_morsel_bytes();
    let mid = b.len() / 2;
    b[mid] ^= 0xFF;
    let e = Model::from_bytes(&b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(e.to_string().contains("checksum"), "{e}");
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            dim_value: Some(d),
                            dim_param: None,
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
    }
}

fn node(name: &str, op: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn unsupported_ops_are_all_listed_with_node_names() {
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            input: vec![value_info("x", &[1, 4])],
            output: vec![value_info("z", &[1, 4])],
            node: vec![
                node("first_weird", "Hardmax", &["x"], &["a"]),
                node("fine", "Relu", &["a"], &["b"]),
                node("second_weird", "Einsum", &["b"], &["z"]),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = morsel::compress::onnx::load_bytes(&model.encode_to_vec(), None).unwrap_err();
    let m = format!("{e:#}");
    assert!(
        m.contains("first_weird (op Hardmax)") && m.contains("second_weird (op Einsum)"),
        "{m}"
    );
    assert!(m.contains("2 node(s)"), "{m}");
}

#[test]
fn a_shape_mismatch_inside_the_graph_names_the_node() {
    // MatMul of [1,4] by [3,2]: inner dims differ
    let w = TensorProto {
        name: "w".into(),
        dims: vec![3, 2],
        data_type: 1,
        float_data: vec![0.0; 6],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            input: vec![value_info("x", &[1, 4])],
            output: vec![value_info("y", &[1, 2])],
            initializer: vec![w],
            node: vec![node("proj", "MatMul", &["x", "w"], &["y"])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = morsel::compress::onnx::load_bytes(&model.encode_to_vec(), None).unwrap_err();
    let m = format!("{e:#}");
    assert!(m.contains("proj") && m.contains("MatMul"), "{m}");
}
