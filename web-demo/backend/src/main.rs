//! Demo backend (placeholder; see issue 5).
fn main() {}
