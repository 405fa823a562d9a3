//! argon2id hashing of passwords and app secrets, on the blocking pool so
//! the async workers never stall on it.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashes `secret` with argon2id (default parameters: 19 MiB, 2 passes)
/// into a PHC string.
pub async fn hash(secret: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Whether `secret` matches the PHC string `phc` (constant time). A
/// malformed hash never matches.
pub async fn verify(secret: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// Bounds how many argon2 computations run at once: each holds ~19 MiB,
/// so without a bound a burst of unauthenticated logins or registrations
/// exhausts memory. Callers beyond the bound wait a little; when the
/// queue is full too, they are told to come back (429 with Retry-After).
#[derive(Debug)]
pub struct HashGate {
    permits: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
    max_wait: std::time::Duration,
}

/// The gate is full: retry after about a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl HashGate {
    /// At most `concurrent` hashes at once and `max_waiting` callers
    /// waiting (each at most `max_wait`).
    pub fn new(concurrent: usize, max_waiting: usize, max_wait: std::time::Duration) -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(concurrent.max(1)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting,
            max_wait,
        }
    }

    async fn enter(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Busy> {
        use std::sync::atomic::Ordering::AcqRel;
        if let Ok(p) = self.permits.try_acquire() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, AcqRel);
            return Err(Busy);
        }
        let r = tokio::time::timeout(self.max_wait, self.permits.acquire()).await;
        self.waiting.fetch_sub(1, AcqRel);
        match r {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Busy),
        }
    }

    /// [`hash`] inside the gate.
    pub async fn hash(&self, secret: String) -> Result<Result<String, String>, Busy> {
        let _p = self.enter().await?;
        Ok(hash(secret).await)
    }

    /// [`verify`] inside the gate.
    pub async fn verify(&self, secret: String, phc: String) -> Result<bool, Busy> {
        let _p = self.enter().await?;
        Ok(verify(secret, phc).await)
    }
}

/// A PHC string of a random secret nobody knows: verifying against it
/// costs what verifying a real hash costs, so unknown accounts answer in
/// the same time as known ones.
pub async fn decoy_hash() -> &'static str {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DECOY
        .get_or_init(|| async {
            hash(random_secret())
                .await
                .expect("hashing a random secret cannot fail")
        })
        .await
}

/// A random secret: 32 bytes, base64url.
pub fn random_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_hash_verifies_only_its_own_secret_and_is_argon2id() {
        let h = super::hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(super::verify("correct horse".into(), h.clone()).await);
        assert!(!super::verify("wrong horse".into(), h).await);
        assert!(!super::verify("x".into(), "not a hash".into()).await);
    }

    #[tokio::test]
    async fn the_gate_refuses_callers_beyond_its_queue() {
        let gate = super::HashGate::new(1, 0, std::time::Duration::from_secs(5));
        let held = gate.enter().await.unwrap();
        assert_eq!(gate.enter().await.err(), Some(super::Busy));
        drop(held);
        assert!(gate.enter().await.is_ok());
        let gate = super::HashGate::new(1, 4, std::time::Duration::from_millis(50));
        let _held = gate.enter().await.unwrap();
        assert_eq!(gate.enter().await.err(), Some(super::Busy), "times out");
    }
}
