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
    scramble_native_stage1(nonce, &Sha1::digest(password).into())
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

/// What the proxy proves to a server that it is a user with: the clear password, or
/// SHA1(password) recovered from the client's own login when the config holds only the
/// password's hash (`[[users]] password_hash`; mysql_native_password servers only).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Clear(String),
    NativeStage1([u8; 20]),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Clear(_) => f.write_str("Secret::Clear(..)"),
            Secret::NativeStage1(_) => f.write_str("Secret::NativeStage1(..)"),
        }
    }
}

/// A MariaDB password hash as `SELECT PASSWORD('...')` prints it (`*` and 40 hex digits):
/// SHA1(SHA1(password)).
pub fn parse_native_hash(s: &str) -> Option<[u8; 20]> {
    let hex = s.strip_prefix('*')?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA1(password) from a client's mysql_native_password response, given the stored
/// SHA1(SHA1(password)): the response XOR SHA1(nonce + hash), kept only if its SHA1 is the
/// hash (else the password was wrong).
pub fn recover_stage1(nonce: &[u8], hash: &[u8; 20], response: &[u8]) -> Option<[u8; 20]> {
    if response.len() != 20 {
        return None;
    }
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(hash);
    let mix = h.finalize();
    let mut stage1 = [0u8; 20];
    for (i, b) in stage1.iter_mut().enumerate() {
        *b = response[i] ^ mix[i];
    }
    constant_time_eq(&Sha1::digest(stage1), hash).then_some(stage1)
}

/// The mysql_native_password response from SHA1(password).
pub fn scramble_native_stage1(nonce: &[u8], stage1: &[u8; 20]) -> Vec<u8> {
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(stage2);
    let mix = h.finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
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

    #[test]
    fn a_hash_recovers_sha1_of_the_password_from_a_clients_response_only() {
        // SELECT PASSWORD('app') on MariaDB.
        let hash = parse_native_hash("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3").expect("hash");
        let n = nonce();
        let response = scramble_native(&n, b"app");
        let stage1 = recover_stage1(&n, &hash, &response).expect("the right password");
        assert_eq!(stage1.as_slice(), Sha1::digest(b"app").as_slice());
        // What the proxy then sends a server is what a client knowing the password sends.
        let other = nonce();
        assert_eq!(
            scramble_native_stage1(&other, &stage1),
            scramble_native(&other, b"app")
        );
        assert!(recover_stage1(&n, &hash, &scramble_native(&n, b"App")).is_none());
        assert!(recover_stage1(&n, &hash, &[]).is_none());
        assert!(parse_native_hash("5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3").is_none());
        assert!(parse_native_hash("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563DZ").is_none());
    }
}
