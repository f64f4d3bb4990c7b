//! Runnable trellis programs live in examples/.
