//! The tidings browser client (placeholder; see issue 4).
