//! placeholder, replaced with the docs/protocol.md check
