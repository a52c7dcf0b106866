//! Password scrambles of `mysql_native_password` and `caching_sha2_password`: computing them
//! (as a client of the backends) and checking them (as the server clients log in to).

use sha1::{Digest, Sha1};
use sha2::Sha256;

pub const NATIVE: &str = "mysql_native_password";
pub const CACHING_SHA2: &str = "caching_sha2_password";

/// A fresh 20-byte nonce of printable bytes (some clients mishandle NUL or '$' in it).
pub fn nonce() -> [u8; 20] {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut n = [0u8; 20];
    for b in &mut n {
        *b = rng.gen_range(0x21u8..0x7f);
        if *b == b'$' {
            *b = b'%';
        }
    }
    n
}

/// SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))); empty for an empty password.
pub fn scramble_native(nonce: &[u8], password: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(stage2);
    let mix = h.finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

/// SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce); empty for an empty password.
pub fn scramble_sha2(nonce: &[u8], password: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha256::digest(password);
    let stage2 = Sha256::digest(stage1);
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(nonce);
    let mix = h.finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

/// Whether a client's auth response proves it knows `password`, for the plugin it used.
pub fn verify(plugin: &str, nonce: &[u8], password: &str, response: &[u8]) -> bool {
    let expected = match plugin {
        CACHING_SHA2 => scramble_sha2(nonce, password.as_bytes()),
        _ => scramble_native(nonce, password.as_bytes()),
    };
    // Some clients send a trailing NUL after an empty response.
    let response = if expected.is_empty() && response == [0] {
        &[][..]
    } else {
        response
    };
    constant_time_eq(&expected, response)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_scramble_verifies_only_the_right_password_and_nonce() {
        let s = scramble_native(&[b'a'; 20], b"secret");
        assert_eq!(s.len(), 20);
        assert!(verify(NATIVE, &[b'a'; 20], "secret", &s));
        assert!(!verify(NATIVE, &[b'a'; 20], "Secret", &s));
        assert!(!verify(NATIVE, &[b'b'; 20], "secret", &s));
    }

    #[test]
    fn sha2_scramble_verifies_and_empty_passwords_send_nothing() {
        let n = nonce();
        let s = scramble_sha2(&n, b"pw");
        assert_eq!(s.len(), 32);
        assert!(verify(CACHING_SHA2, &n, "pw", &s));
        assert!(!verify(NATIVE, &n, "pw", &s));
        assert!(verify(NATIVE, &n, "", &[]));
        assert!(verify(NATIVE, &n, "", &[0]));
        assert!(!verify(NATIVE, &n, "", &s));
    }
}
