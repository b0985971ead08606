//! Password hashing: Argon2id with the argon2 crate's default (OWASP)
//! parameters, in PHC strings, with its ~19 MiB of working memory reused.
//!
//! The crate's `PasswordHasher` allocates that memory anew for every hash,
//! on whichever blocking thread runs it; glibc keeps the freed blocks in
//! per-thread arenas, so a process that had logins on a few threads held
//! ~180 MB for good. Here each hash borrows a buffer from a pool that holds
//! at most `auth.max_concurrent_hashes` of them: the memory is bounded and
//! taken once.

use std::sync::Mutex;

use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// A valid hash (of a password no account has), checked when a username is
/// unknown, so a login takes as long whether or not the account exists.
/// Fixed, so starting takes no hash and no working memory.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$pfPMNlYJhyMcf4p47CxHQQ$TmWkX2wYqK2WQSH9AX5PG6EdUCmboBaYVAzhuYVOVwc";

pub struct Hasher {
    spare: Mutex<Vec<Vec<Block>>>,
    keep: usize,
}

impl Hasher {
    /// Keeps up to `keep` buffers (one per hash running at once).
    pub fn new(keep: usize) -> Self {
        Self {
            spare: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// The PHC string of `password` with a fresh salt.
    pub fn hash(&self, password: &[u8]) -> password_hash::Result<String> {
        let params = Params::default();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let salt = salt.as_salt();
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let output = self.with_memory(params.block_count(), |memory| {
            Output::init_with(len, |out| {
                Ok(argon2.hash_password_into_with_memory(password, salt_bytes, out, memory)?)
            })
        })?;
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
    pub fn verify(&self, password: &[u8], stored: &str) -> password_hash::Result<bool> {
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
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let computed = self.with_memory(params.block_count(), |memory| {
            Output::init_with(expected.len(), |out| {
                Ok(argon2.hash_password_into_with_memory(password, salt_bytes, out, memory)?)
            })
        })?;
        Ok(computed == expected)
    }

    fn with_memory<T>(&self, blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
        let spare = self.lock().pop().filter(|m| m.len() >= blocks);
        let mut memory = spare.unwrap_or_else(|| vec![Block::default(); blocks]);
        let result = f(&mut memory);
        let mut spare = self.lock();
        if spare.len() < self.keep {
            spare.push(memory);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    /// Hashes match the crate's own: each verifies the other's.
    #[test]
    fn hashes_are_the_crates_and_memory_is_reused() -> anyhow::Result<()> {
        let hasher = Hasher::new(1);
        let ours = hasher.hash("密码 password".as_bytes())?;
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
        assert!(hasher.verify(b"hunter42", &theirs)?);
        assert!(!hasher.verify(b"hunter43", &theirs)?);
        assert!(!hasher.verify("密码 passwore".as_bytes(), &ours)?);
        assert!(hasher.verify(b"x", "not a hash").is_err());
        assert!(!hasher.verify(b"x", DUMMY_HASH)?);
        assert!(hasher.verify(b"dummy password for timing", DUMMY_HASH)?);
        assert_eq!(hasher.lock().len(), 1, "one buffer kept");
        Ok(())
    }
}
