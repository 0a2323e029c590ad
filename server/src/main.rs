//! The `tidings` gateway binary (placeholder; see issue 3).
fn main() {}
