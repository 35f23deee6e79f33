//! The random and time parts of the ids the server makes, in base 36 (CUID2's alphabet), the
//! random digits from the thread's CSPRNG. Why not `cuid2::create_id` for these: it hashes
//! with SHA3-512 and turns a big integer into base 36 for every id, a few microseconds each;
//! a message id taken from it was 5 % of the chat's request workers' CPU (BENCHMARKS.md).

use rand::Rng as _;

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Fills `out` with random base-36 digits.
pub fn fill_random(out: &mut [u8]) {
    let mut rng = rand::rng();
    for digit in out {
        *digit = DIGITS[rng.random_range(0..36)];
    }
}

/// Writes `value` in base 36 into `out`, right-aligned with leading zeros (the most
/// significant digits are cut if it does not fit).
pub fn fill_base36(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = DIGITS[(value % 36) as usize];
        value /= 36;
    }
}

/// `n` random base-36 characters.
pub fn random(n: usize) -> String {
    let mut digits = vec![0; n];
    fill_random(&mut digits);
    String::from_utf8(digits).expect("base 36 digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_base36_of_the_length_asked_and_differ() {
        let a = random(24);
        assert_eq!(a.len(), 24);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()),
            "{a}"
        );
        assert_ne!(a, random(24));
    }

    #[test]
    fn base36_is_right_aligned_and_cut_from_the_left() {
        let mut out = [0; 4];
        fill_base36(&mut out, 36 * 36 + 35);
        assert_eq!(&out, b"010z");
        fill_base36(&mut out, 36u64.pow(4) + 1);
        assert_eq!(&out, b"0001");
    }
}
