//! int8 kernels (work in progress).
