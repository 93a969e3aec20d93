//! f32 GEMM with packed weights (work in progress).
