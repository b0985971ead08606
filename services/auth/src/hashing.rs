//! Password hashing: Argon2id with the argon2 crate's default (OWASP)
//! parameters, in PHC strings, with its ~19 MiB of working memory given back
//! to the system after each hash.
//!
//! The crate's `PasswordHasher` allocates that memory with a plain `Vec`.
//! glibc serves the first such block with `mmap`, but freeing it raises
//! glibc's mmap threshold to its size, so every later block comes from the
//! blocking thread's heap arena and stays there once freed: a process that
//! had logins on a few threads held ~180 MB for good. Here the buffer's
//! capacity is reserved above glibc's highest mmap threshold (32 MiB), so it
//! is always mapped on its own and unmapped when dropped; only the pages
//! the hash touches (~19 MiB) are ever resident, and only while it runs.
//! At most `auth.max_concurrent_hashes` hashes run at once.

use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// A valid hash (of a password no account has), checked when a username is
/// unknown, so a login takes as long whether or not the account exists.
/// Fixed, so starting takes no hash and no working memory.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$pfPMNlYJhyMcf4p47CxHQQ$TmWkX2wYqK2WQSH9AX5PG6EdUCmboBaYVAzhuYVOVwc";

/// Capacity reserved for a hash's memory, in 1 KiB blocks: more than
/// glibc's `DEFAULT_MMAP_THRESHOLD_MAX` (32 MiB on 64-bit), so the buffer is
/// always its own mapping. Only the blocks in use are touched.
const MAPPED_BLOCKS: usize = 33 * 1024;

/// The PHC string of `password` with a fresh salt.
pub fn hash(password: &[u8]) -> password_hash::Result<String> {
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let salt = salt.as_salt();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = compute(&argon2, password, salt_bytes, len)?;
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt),
        hash: Some(output),
    }
    .to_string())
}

/// Whether `password` matches the stored PHC string (compared in
/// constant time); an error for a string that is not an Argon2 hash.
pub fn verify(password: &[u8], stored: &str) -> password_hash::Result<bool> {
    let stored = PasswordHash::new(stored)?;
    let algorithm = Algorithm::try_from(stored.algorithm)?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(&stored)?;
    let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else {
        return Err(password_hash::Error::PhcStringField);
    };
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let argon2 = Argon2::new(algorithm, version, params);
    let computed = compute(&argon2, password, salt_bytes, expected.len())?;
    Ok(computed == expected)
}

/// The `len`-byte Argon2 output of `password` and `salt`, in working memory
/// of its own mapping (see [`MAPPED_BLOCKS`]).
fn compute(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    len: usize,
) -> password_hash::Result<Output> {
    let blocks = argon2.params().block_count();
    let mut memory = Vec::with_capacity(blocks.max(MAPPED_BLOCKS));
    memory.resize(blocks, Block::default());
    Output::init_with(len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut memory)?)
    })
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    /// Hashes match the crate's own: each verifies the other's.
    #[test]
    fn hashes_are_the_crates() -> anyhow::Result<()> {
        let ours = hash("密码 password".as_bytes())?;
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours)?;
        assert!(
            Argon2::default()
                .verify_password("密码 password".as_bytes(), &parsed)
                .is_ok()
        );
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = Argon2::default()
            .hash_password(b"hunter42", &salt)?
            .to_string();
        assert!(verify(b"hunter42", &theirs)?);
        assert!(!verify(b"hunter43", &theirs)?);
        assert!(!verify("密码 passwore".as_bytes(), &ours)?);
        assert!(verify(b"x", "not a hash").is_err());
        assert!(!verify(b"x", DUMMY_HASH)?);
        assert!(verify(b"dummy password for timing", DUMMY_HASH)?);
        Ok(())
    }
}
