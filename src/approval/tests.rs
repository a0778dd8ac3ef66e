//! Tests for the approval gate.
