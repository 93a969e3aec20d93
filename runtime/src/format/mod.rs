//! The `.morsel` file format (spec: `runtime/FORMAT.md`): constants shared
//! by the reader and the writer.

mod bytes;
pub mod int8;
pub mod reader;
pub mod sparse;
#[cfg(feature = "write")]
pub mod writer;

pub const MAGIC: [u8; 8] = *b"\x7fMORSEL\n";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 0;
pub const BOM: u32 = 0x0A0B_0C0D;
pub const HEADER_LEN: usize = 64;
pub const ALIGN: usize = 64;
pub const MAX_SECTIONS: usize = 64;
pub const MAX_RANK: usize = 64;
/// Required feature bits this reader understands (none in 1.0).
pub const KNOWN_REQUIRED: u64 = 0;
pub const NONE: u32 = u32::MAX;

pub const SECTION_META: u32 = 1;
pub const SECTION_GRAPH: u32 = 2;
pub const SECTION_TENSORS: u32 = 3;
pub const SECTION_DATA: u32 = 4;

/// Tensor encodings (FORMAT.md, "Encodings").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Raw,
    F16,
    BF16,
    /// f32 as int8 with one f32 scale per slice along an axis ([`int8`]).
    Int8PerChannel,
    /// The same with IEEE half scales ([`int8`]).
    Int8PerChannelF16,
    /// Bitmask of nonzero elements, then those elements ([`sparse`]).
    SparseBitmask,
    /// Per-row counts and column indices, then the nonzero elements ([`sparse`]).
    SparseCsr,
    /// Rice-coded gaps between nonzeros, then the nonzero elements ([`sparse`]).
    SparseRice,
}

impl Encoding {
    pub fn id(self) -> u16 {
        match self {
            Encoding::Raw => 0,
            Encoding::F16 => 1,
            Encoding::BF16 => 2,
            Encoding::Int8PerChannel => 16,
            Encoding::Int8PerChannelF16 => 18,
            Encoding::SparseBitmask => 32,
            Encoding::SparseCsr => 33,
            Encoding::SparseRice => 34,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::F16 => "f16",
            Encoding::BF16 => "bf16",
            Encoding::Int8PerChannel => "int8-per-channel",
            Encoding::Int8PerChannelF16 => "int8-per-channel-f16",
            Encoding::SparseBitmask => "sparse-bitmask",
            Encoding::SparseCsr => "sparse-csr",
            Encoding::SparseRice => "sparse-rice",
        }
    }
    pub fn from_id(id: u16) -> Option<Encoding> {
        match id {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::F16),
            2 => Some(Encoding::BF16),
            16 => Some(Encoding::Int8PerChannel),
            18 => Some(Encoding::Int8PerChannelF16),
            32 => Some(Encoding::SparseBitmask),
            33 => Some(Encoding::SparseCsr),
            34 => Some(Encoding::SparseRice),
            _ => None,
        }
    }
}

pub const ATTR_INT: u8 = 1;
pub const ATTR_FLOAT: u8 = 2;
pub const ATTR_INTS: u8 = 3;
pub const ATTR_FLOATS: u8 = 4;
pub const ATTR_STR: u8 = 5;
