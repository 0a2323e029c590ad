//! Load tool (placeholder; see issue 3).
fn main() {}
