//! The runtime's one error type. Every message names what is wrong: the node,
//! the tensor, the expected and the actual shape or dtype.

/// What went wrong, as a value callers can match on; the `String` is the
/// human message (one line).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a valid `.morsel` file (truncated, corrupt, hostile).
    #[error("invalid .morsel file: {0}")]
    Format(String),
    /// The file or graph needs something this build does not have
    /// (a newer format version, an unknown op or encoding, a dtype).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller's inputs do not fit the model (name, dtype, shape).
    #[error("bad input: {0}")]
    Input(String),
    /// The graph is inconsistent (shapes that cannot match, bad attributes).
    #[error("invalid graph: {0}")]
    Graph(String),
    /// A run needs more memory than the caller allowed.
    #[error("memory budget exceeded: {0}")]
    Memory(String),
    /// Reading the file failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The kind of an [`Error`], without its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Format,
    Unsupported,
    Input,
    Graph,
    Memory,
    Io,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Format(_) => ErrorKind::Format,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Input(_) => ErrorKind::Input,
            Error::Graph(_) => ErrorKind::Graph,
            Error::Memory(_) => ErrorKind::Memory,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    /// Prefix the message with the node it happened in.
    pub fn in_node(self, node: &str, op: &str) -> Error {
        let at = |m: String| format!("node '{node}' ({op}): {m}");
        match self {
            Error::Format(m) => Error::Format(at(m)),
            Error::Unsupported(m) => Error::Unsupported(at(m)),
            Error::Input(m) => Error::Input(at(m)),
            Error::Graph(m) => Error::Graph(at(m)),
            Error::Memory(m) => Error::Memory(at(m)),
            e @ Error::Io { .. } => e,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `bail!(Graph, "...")` returns an error of that kind with a formatted message.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::Error::$kind(format!($($arg)*)))
    };
}

/// `ensure!(cond, Graph, "...")`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $kind:ident, $($arg:tt)*) => {
        match $cond {
            true => {}
            false => $crate::bail!($kind, $($arg)*),
        }
    };
}
