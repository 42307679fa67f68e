//! Shannon entropy of a string: how unpredictable its characters are, in bits
//! per character. Random keys score high (base64 about 4.7 over 40 characters);
//! words, placeholders and repeated characters score low.

/// Bits per character over the bytes of `s` (0 for an empty string).
pub(crate) fn shannon_entropy(s: &str) -> f64 {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_known_strings() {
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
        assert!((shannon_entropy("abcdefgh") - 3.0).abs() < 1e-9);
        assert!(shannon_entropy("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") > 4.5);
        assert!(shannon_entropy("da39a3ee5e6b4b0d3255bfef95601890afd80709") < 4.0);
    }
}
