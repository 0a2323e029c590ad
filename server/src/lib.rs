//! The tidings realtime hub (placeholder; see issue 3).
