//! An engine wrapper that can be switched off, to test what happens while an
//! engine is unreachable.
