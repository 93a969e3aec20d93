//! Vectorised f32 math (work in progress).
