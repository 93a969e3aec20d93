//! Tensors: shapes with symbolic dims, shared immutable tensors (constants,
//! outputs) and the borrowed views kernels work on.

use std::sync::Arc;

use crate::dtype::{DType, Element};
use crate::{Error, Result};

/// One dimension of a shape known before running: a number, or a symbol
/// (such as a free batch dim `N`). `?` is a dim nobody named.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    Sym(Arc<str>),
}

impl Dim {
    pub fn unknown() -> Dim {
        Dim::Sym(Arc::from("?"))
    }
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

pub type Shape = Vec<Dim>;

pub fn shape_str(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

pub fn dims_str(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

pub fn known_shape(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| Dim::Known(d)).collect()
}

/// The concrete dims of a shape, if every dim is known.
pub fn concrete(shape: &[Dim]) -> Option<Vec<usize>> {
    shape.iter().map(Dim::known).collect()
}

/// Number of elements, refusing overflow (a hostile file can claim huge dims).
pub fn numel(dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Error::Graph(format!("shape {} overflows", dims_str(dims))))
    })
}

/// One cache line: the unit [`AlignedBuf`] allocates in.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u64; 8]);

// SAFETY: `Line` is 64 bytes of plain integers with no padding (size 64 =
// alignment 64), so every bit pattern is valid and zero is a valid value.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; `Line` is `Copy`, `repr(C)` and has no padding.
unsafe impl bytemuck::Pod for Line {}

const ZERO_LINE: Line = Line([0; 8]);

/// A byte buffer aligned to 64 bytes (a cache line): typed views of
/// f32/i64 data are valid, and SIMD loads of rows that start on a line
/// never split across two.
#[derive(Clone, Default)]
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf {
            lines: vec![ZERO_LINE; len.div_ceil(64)],
            len,
        }
    }
    pub fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(bytes.len());
        b.as_bytes_mut().copy_from_slice(bytes);
        b
    }
    /// Grow (never shrink) the capacity and set the length; contents are unspecified.
    pub fn resize(&mut self, len: usize) {
        let lines = len.div_ceil(64);
        if self.lines.len() < lines {
            self.lines.resize(lines, ZERO_LINE);
        }
        self.len = len;
    }
    pub fn capacity_bytes(&self) -> usize {
        self.lines.len() * 64
    }
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
    /// The contents as f32s (`len` must be a multiple of 4 for all of them).
    pub fn as_f32(&self) -> &[f32] {
        let whole = self.len / 4 * 4;
        bytemuck::cast_slice(&self.as_bytes()[..whole])
    }
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        let whole = self.len / 4 * 4;
        bytemuck::cast_slice_mut(&mut self.as_bytes_mut()[..whole])
    }
}

/// Where a tensor's bytes live: owned memory, or a range of a model file
/// (memory-mapped or borrowed), shared without copying.
#[derive(Clone)]
pub struct Blob {
    store: Arc<dyn AsRef<[u8]> + Send + Sync>,
    start: usize,
    len: usize,
}

struct Owned(AlignedBuf);
impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Blob {
    pub fn owned(buf: AlignedBuf) -> Blob {
        let len = buf.len;
        Blob {
            store: Arc::new(Owned(buf)),
            start: 0,
            len,
        }
    }
    /// A range of a shared store; the caller has checked the range.
    pub fn slice_of(
        store: Arc<dyn AsRef<[u8]> + Send + Sync>,
        start: usize,
        len: usize,
    ) -> Result<Blob> {
        let total = (*store).as_ref().len();
        match start.checked_add(len) {
            Some(end) if end <= total => Ok(Blob { store, start, len }),
            _ => Err(Error::Format(format!(
                "tensor data {start}+{len} lies outside the {total}-byte store"
            ))),
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &(*self.store).as_ref()[self.start..self.start + self.len]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An immutable tensor with a concrete shape: a constant weight, a folded
/// value, or a run's output.
#[derive(Clone)]
pub struct Tensor {
    pub dtype: DType,
    pub dims: Vec<usize>,
    pub data: Blob,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {})", self.dtype, dims_str(&self.dims))
    }
}

impl Tensor {
    /// A tensor over bytes; checks the byte length against dtype and dims.
    pub fn new(dtype: DType, dims: Vec<usize>, data: Blob) -> Result<Tensor> {
        let want = numel(&dims)?
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::Graph("tensor size overflows".into()))?;
        if data.len() != want {
            return Err(Error::Format(format!(
                "tensor {} {} needs {want} bytes, has {}",
                dtype,
                dims_str(&dims),
                data.len()
            )));
        }
        Ok(Tensor { dtype, dims, data })
    }
    pub fn from_slice<T: Element>(dims: &[usize], values: &[T]) -> Result<Tensor> {
        Tensor::new(
            T::DTYPE,
            dims.to_vec(),
            Blob::owned(AlignedBuf::from_bytes(bytemuck::cast_slice(values))),
        )
    }
    pub fn from_bool(dims: &[usize], values: &[bool]) -> Result<Tensor> {
        let bytes: Vec<u8> = values.iter().map(|&b| b as u8).collect();
        Tensor::new(
            DType::Bool,
            dims.to_vec(),
            Blob::owned(AlignedBuf::from_bytes(&bytes)),
        )
    }
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::new(
            T::DTYPE,
            vec![],
            Blob::owned(AlignedBuf::from_bytes(bytemuck::bytes_of(&v))),
        )
        .expect("ok: one element matches a scalar shape") // ok: size matches by construction
    }
    pub fn view(&self) -> TensorRef<'_> {
        TensorRef {
            dtype: self.dtype,
            dims: &self.dims,
            data: self.data.as_bytes(),
        }
    }
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.view().as_slice::<T>()
    }
    /// The values as i64, for shape-like inputs (i32 and i64 accepted).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        self.view().to_i64_vec()
    }
    /// The values as f32, converting f16/bf16/ints.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        self.view().to_f32_vec()
    }
}

/// A borrowed read-only tensor, as kernels see their inputs.
#[derive(Clone, Copy)]
pub struct TensorRef<'a> {
    pub dtype: DType,
    pub dims: &'a [usize],
    pub data: &'a [u8],
}

fn cast<T: Element>(dtype: DType, data: &[u8]) -> Result<&[T]> {
    if dtype != T::DTYPE {
        return Err(Error::Graph(format!(
            "expected {} data, found {}",
            T::DTYPE,
            dtype
        )));
    }
    bytemuck::try_cast_slice(data)
        .map_err(|e| Error::Graph(format!("misaligned {dtype} data: {e:?}")))
}

impl<'a> TensorRef<'a> {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn rank(&self) -> usize {
        self.dims.len()
    }
    pub fn as_slice<T: Element>(&self) -> Result<&'a [T]> {
        cast(self.dtype, self.data)
    }
    pub fn f32(&self) -> Result<&'a [f32]> {
        self.as_slice::<f32>()
    }
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        match self.dtype {
            DType::I64 => Ok(self.as_slice::<i64>()?.to_vec()),
            DType::I32 => Ok(self.as_slice::<i32>()?.iter().map(|&v| v as i64).collect()),
            d => Err(Error::Graph(format!(
                "expected an integer tensor, found {d}"
            ))),
        }
    }
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(match self.dtype {
            DType::F32 => self.as_slice::<f32>()?.to_vec(),
            DType::F16 => self
                .as_slice::<half::f16>()?
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            DType::BF16 => self
                .as_slice::<half::bf16>()?
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            DType::I64 => self.as_slice::<i64>()?.iter().map(|&v| v as f32).collect(),
            DType::I32 => self.as_slice::<i32>()?.iter().map(|&v| v as f32).collect(),
            DType::I8 => self.as_slice::<i8>()?.iter().map(|&v| v as f32).collect(),
            DType::U8 | DType::Bool => self.data.iter().map(|&v| v as f32).collect(),
        })
    }
    pub fn to_tensor(&self) -> Tensor {
        Tensor {
            dtype: self.dtype,
            dims: self.dims.to_vec(),
            data: Blob::owned(AlignedBuf::from_bytes(self.data)),
        }
    }
}

/// A borrowed writable tensor: a kernel's output, shape already decided.
pub struct TensorMut<'a> {
    pub dtype: DType,
    pub dims: &'a [usize],
    pub data: &'a mut [u8],
}

impl<'a> TensorMut<'a> {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn as_slice_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        if self.dtype != T::DTYPE {
            return Err(Error::Graph(format!(
                "expected {} output, found {}",
                T::DTYPE,
                self.dtype
            )));
        }
        bytemuck::try_cast_slice_mut(self.data)
            .map_err(|e| Error::Graph(format!("misaligned output: {e:?}")))
    }
    pub fn f32(&mut self) -> Result<&mut [f32]> {
        self.as_slice_mut::<f32>()
    }
}
