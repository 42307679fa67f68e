//! The alphabets of the envelope's attributes, checked by table.
//!
//! Every decoded event checks its id, tenant, type and `traceparent` byte by
//! byte. Written as `is_ascii_hexdigit() || ...` chains, each byte is a branch
//! on which range it falls in; random hex and UUIDs mix digits and letters, so
//! those branches mispredict about every other byte (in a profile of the
//! gateway, `is_traceparent` alone took 3% of the runtime's CPU). A class
//! table, and checks that read every byte without stopping at the first bad
//! one, cost one load and an `and` per byte instead.

/// A set of bytes, as a bit in [`CLASSES`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Class(u8);

/// `0-9 a-f A-F`.
pub(super) const HEX: Class = Class(1);
/// `a-z 0-9 -`: tenants.
pub(super) const TENANT: Class = Class(1 << 1);
/// `a-z 0-9 _ -`: a token of an event type.
pub(super) const TYPE_TOKEN: Class = Class(1 << 2);
/// `A-Z a-z 0-9 . _ : -`: event ids.
pub(super) const ID: Class = Class(1 << 3);
/// `a-z 0-9`: extension attribute names.
pub(super) const ATTRIBUTE_NAME: Class = Class(1 << 4);

const fn classes_of(b: u8) -> u8 {
    let lower = b.is_ascii_lowercase();
    let digit = b.is_ascii_digit();
    let mut c = 0;
    if b.is_ascii_hexdigit() {
        c |= HEX.0;
    }
    if lower || digit || b == b'-' {
        c |= TENANT.0;
    }
    if lower || digit || b == b'_' || b == b'-' {
        c |= TYPE_TOKEN.0;
    }
    if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-') {
        c |= ID.0;
    }
    if lower || digit {
        c |= ATTRIBUTE_NAME.0;
    }
    c
}

static CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = classes_of(b as u8);
        b += 1;
    }
    table
};

/// Whether `b` is in `class`.
#[inline]
pub(super) fn is(class: Class, b: u8) -> bool {
    CLASSES[b as usize] & class.0 != 0
}

/// Whether every byte of `bytes` is in `class`.
#[inline]
pub(super) fn all(class: Class, bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & is(class, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_is_the_alphabet_it_names() {
        for b in 0..=255u8 {
            let lower_or_digit = b.is_ascii_lowercase() || b.is_ascii_digit();
            assert_eq!(is(HEX, b), b.is_ascii_hexdigit(), "{b}");
            assert_eq!(is(TENANT, b), lower_or_digit || b == b'-', "{b}");
            assert_eq!(
                is(TYPE_TOKEN, b),
                lower_or_digit || b == b'_' || b == b'-',
                "{b}"
            );
            assert_eq!(
                is(ID, b),
                b.is_ascii_alphanumeric() || b".:_-".contains(&b),
                "{b}"
            );
            assert_eq!(is(ATTRIBUTE_NAME, b), lower_or_digit, "{b}");
        }
    }

    #[test]
    fn all_refuses_a_bad_byte_anywhere() {
        assert!(all(HEX, b"0123456789abcdefABCDEF"));
        assert!(all(HEX, b""));
        assert!(!all(HEX, b"g0123"));
        assert!(!all(HEX, b"0123g"));
        assert!(!all(TENANT, "acmé".as_bytes()));
    }
}
