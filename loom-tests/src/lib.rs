//! Black-box loom models of trellis (see tests/).
