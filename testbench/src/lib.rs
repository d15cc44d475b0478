//! Shared helpers for the cross-check suites in tests/.
