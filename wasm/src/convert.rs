//! JS values ↔ runtime tensors. Inputs are copied once from their typed
//! arrays into 8-byte aligned buffers in wasm memory; outputs are copied
//! once into fresh typed arrays, so nothing handed to JS aliases wasm memory
//! (which moves when it grows).

use js_sys::{
    Array, BigInt64Array, Float32Array, Int8Array, Int32Array, Object, Reflect, Uint8Array,
};
use morsel_runtime::tensor::{AlignedBuf, dims_str, numel};
use morsel_runtime::{DType, ErrorKind, Graph, Tensor, TensorRef};
use wasm_bindgen::{JsCast, JsValue};

use crate::error_value;

/// One input of a run, owned by wasm.
pub(crate) struct Input {
    pub name: String,
    dtype: DType,
    dims: Vec<usize>,
    buf: AlignedBuf,
}

impl Input {
    pub fn view(&self) -> TensorRef<'_> {
        TensorRef {
            dtype: self.dtype,
            dims: &self.dims,
            data: self.buf.as_bytes(),
        }
    }
}

fn bad_input(message: String) -> JsValue {
    error_value(ErrorKind::Input, &format!("bad input: {message}"))
}

/// Read `{name: {data, shape}, ...}`. Names, dtypes and shapes are checked
/// against the model by the session; here only what JS can get wrong on its
/// own (not an object, a shape that is not integers, a length that does not
/// match the shape, an unsupported array type).
pub(crate) fn read_feeds(graph: &Graph, feeds: &JsValue) -> Result<Vec<Input>, JsValue> {
    let Some(obj) = feeds
        .dyn_ref::<Object>()
        .filter(|_| !Array::is_array(feeds))
    else {
        return Err(bad_input(
            "run() takes an object {name: {data, shape}, ...}".to_string(),
        ));
    };
    let mut inputs = Vec::new();
    for key in Object::keys(obj).iter() {
        let name = key.as_string().unwrap_or_default();
        let feed = Reflect::get(obj, &key)?;
        if !feed.is_object() {
            return Err(bad_input(format!(
                "input '{name}' must be an object {{data, shape}}"
            )));
        }
        let dims = read_shape(&name, &Reflect::get(&feed, &"shape".into())?)?;
        let want = graph
            .inputs
            .iter()
            .map(|&v| &graph.values[v])
            .find(|v| v.name == name)
            .map(|v| v.dtype);
        let data = Reflect::get(&feed, &"data".into())?;
        let (dtype, buf) = read_data(&name, &dims, &data, want)?;
        inputs.push(Input {
            name,
            dtype,
            dims,
            buf,
        });
    }
    Ok(inputs)
}

fn read_shape(name: &str, shape: &JsValue) -> Result<Vec<usize>, JsValue> {
    let bad = || {
        bad_input(format!(
            "input '{name}': shape must be an array of non-negative integers"
        ))
    };
    if !Array::is_array(shape) {
        return Err(bad());
    }
    Array::from(shape)
        .iter()
        .map(|d| match d.as_f64() {
            Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= usize::MAX as f64 => Ok(n as usize),
            _ => Err(bad()),
        })
        .collect()
}

/// Copy a typed array into an aligned buffer, checking its length against
/// the shape first (so a huge claimed shape allocates nothing).
fn read_data(
    name: &str,
    dims: &[usize],
    data: &JsValue,
    want: Option<DType>,
) -> Result<(DType, AlignedBuf), JsValue> {
    let n = numel(dims).map_err(|e| bad_input(format!("input '{name}': {e}")))?;
    let check_len = |len: u32| {
        if len as usize == n {
            Ok(())
        } else {
            Err(bad_input(format!(
                "input '{name}': data has {len} elements but shape {} needs {n}",
                dims_str(dims)
            )))
        }
    };
    if let Some(a) = data.dyn_ref::<Float32Array>() {
        check_len(a.length())?;
        return Ok(match want {
            Some(d @ (DType::F16 | DType::BF16)) => {
                let v = a.to_vec();
                let mut buf = AlignedBuf::zeroed(n * 2);
                let out: &mut [u16] = bytemuck::cast_slice_mut(buf.as_bytes_mut());
                for (o, &x) in out.iter_mut().zip(&v) {
                    *o = match d {
                        DType::F16 => half::f16::from_f32(x).to_bits(),
                        _ => half::bf16::from_f32(x).to_bits(),
                    };
                }
                (d, buf)
            }
            _ => {
                let mut buf = AlignedBuf::zeroed(n * 4);
                a.copy_to(bytemuck::cast_slice_mut(buf.as_bytes_mut()));
                (DType::F32, buf)
            }
        });
    }
    if let Some(a) = data.dyn_ref::<Int32Array>() {
        check_len(a.length())?;
        let mut buf = AlignedBuf::zeroed(n * 4);
        a.copy_to(bytemuck::cast_slice_mut(buf.as_bytes_mut()));
        return Ok((DType::I32, buf));
    }
    if let Some(a) = data.dyn_ref::<BigInt64Array>() {
        check_len(a.length())?;
        let mut buf = AlignedBuf::zeroed(n * 8);
        a.copy_to(bytemuck::cast_slice_mut(buf.as_bytes_mut()));
        return Ok((DType::I64, buf));
    }
    if let Some(a) = data.dyn_ref::<Int8Array>() {
        check_len(a.length())?;
        let mut buf = AlignedBuf::zeroed(n);
        a.copy_to(bytemuck::cast_slice_mut(buf.as_bytes_mut()));
        return Ok((DType::I8, buf));
    }
    if let Some(a) = data.dyn_ref::<Uint8Array>() {
        check_len(a.length())?;
        let mut buf = AlignedBuf::zeroed(n);
        a.copy_to(buf.as_bytes_mut());
        if want == Some(DType::Bool) {
            // Any non-zero byte is true; the runtime's bool is exactly 0 or 1.
            for b in buf.as_bytes_mut() {
                *b = (*b != 0) as u8;
            }
            return Ok((DType::Bool, buf));
        }
        return Ok((DType::U8, buf));
    }
    Err(bad_input(format!(
        "input '{name}': data must be a Float32Array, Int32Array, BigInt64Array, Int8Array or Uint8Array"
    )))
}

/// An output as `{dtype, shape, data}` with `data` a fresh typed array.
pub(crate) fn output(t: &Tensor) -> morsel_runtime::Result<JsValue> {
    let data: JsValue = match t.dtype {
        DType::F32 => Float32Array::from(t.as_slice::<f32>()?).into(),
        DType::F16 | DType::BF16 => Float32Array::from(&t.to_f32_vec()?[..]).into(),
        DType::I32 => Int32Array::from(t.as_slice::<i32>()?).into(),
        DType::I64 => BigInt64Array::from(t.as_slice::<i64>()?).into(),
        DType::I8 => Int8Array::from(t.as_slice::<i8>()?).into(),
        DType::U8 | DType::Bool => Uint8Array::from(t.data.as_bytes()).into(),
    };
    let shape: Array = t.dims.iter().map(|&d| JsValue::from(d as f64)).collect();
    let obj = Object::new();
    // Setting properties on a plain object cannot fail.
    let _ = Reflect::set(&obj, &"dtype".into(), &t.dtype.name().into());
    let _ = Reflect::set(&obj, &"shape".into(), &shape);
    let _ = Reflect::set(&obj, &"data".into(), &data);
    Ok(obj.into())
}
