//! argon2id hashing of passwords and app secrets, on the blocking pool so
//! the async workers never stall on it.
//!
//! Each computation needs 19 MiB of working memory. Allocated and freed per
//! call, on whichever blocking thread runs it, the allocator keeps the freed
//! blocks in that thread's arena: one hash at a time left 420 MiB resident
//! after 50 logins (FUZZING.md finding 2). So the working memory comes from
//! a small pool of buffers allocated once and reused ([`memory`] reports it).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use smsgw_core::bounded::MemoryUse;

/// Buffers of argon2 working memory kept for reuse, at most `capacity`
/// (the largest hashing concurrency a [`HashGate`] was built with).
struct BlockPool {
    free: Mutex<Vec<Vec<Block>>>,
    capacity: AtomicUsize,
    /// Buffers dropped because the pool was full (a computation outside
    /// every gate ran beside a full gate).
    dropped: AtomicU64,
}

static POOL: BlockPool = BlockPool {
    free: Mutex::new(Vec::new()),
    capacity: AtomicUsize::new(1),
    dropped: AtomicU64::new(0),
};

impl BlockPool {
    /// A buffer of at least `blocks` blocks: a pooled one, or a new one.
    fn take(&self, blocks: usize) -> Vec<Block> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        match free.iter().position(|b| b.len() >= blocks) {
            Some(i) => free.swap_remove(i),
            None => vec![Block::default(); blocks],
        }
    }

    /// Returns `buf` to the pool, or drops it when the pool is full.
    fn give(&self, buf: Vec<Block>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.capacity.load(Ordering::Relaxed) {
            free.push(buf);
        } else {
            drop(free);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the pool of argon2 working memory holds, for the `smsgw_memory_*`
/// gauges (structure `argon2_blocks`; an entry is one computation's 19 MiB).
pub fn memory() -> MemoryUse {
    let free = POOL.free.lock().unwrap_or_else(|p| p.into_inner());
    MemoryUse {
        structure: "argon2_blocks",
        entries: free.len() as u64,
        bytes: free
            .iter()
            .map(|b| (b.len() * std::mem::size_of::<Block>()) as u64)
            .sum(),
        capacity: POOL.capacity.load(Ordering::Relaxed) as u64,
        evicted: POOL.dropped.load(Ordering::Relaxed),
    }
}

/// argon2id with `params` over `secret` and `salt` into `out`, in pooled
/// working memory.
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    secret: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    let mut buf = POOL.take(blocks);
    let r = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        secret,
        salt,
        out,
        &mut buf[..blocks],
    );
    POOL.give(buf);
    r
}

/// The PHC string of `secret` under a new random salt, with argon2id's
/// default parameters (19 MiB, 2 passes): the same string
/// `Argon2::default().hash_password` writes.
fn hash_now(secret: &[u8]) -> Result<String, String> {
    let params = Params::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut raw = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut raw).map_err(|e| e.to_string())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        secret,
        salt_raw,
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `secret` matches the PHC string `phc`, comparing in constant
/// time (`Output`'s equality). A malformed hash never matches.
fn verify_now(secret: &[u8], phc: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (h.hash, h.salt) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    let mut raw = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut raw) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    compute(algorithm, version, params, secret, salt_raw, &mut out).is_ok()
        && Output::new(&out).is_ok_and(|o| o == expected)
}

/// Hashes `secret` with argon2id (default parameters: 19 MiB, 2 passes)
/// into a PHC string.
pub async fn hash(secret: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || hash_now(secret.as_bytes()))
        .await
        .map_err(|e| e.to_string())?
}

/// Whether `secret` matches the PHC string `phc` (constant time). A
/// malformed hash never matches.
pub async fn verify(secret: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify_now(secret.as_bytes(), &phc))
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
    /// The pool of working memory keeps as many buffers as the largest
    /// gate lets computations run at once.
    pub fn new(concurrent: usize, max_waiting: usize, max_wait: std::time::Duration) -> Self {
        POOL.capacity
            .fetch_max(concurrent.max(1), Ordering::Relaxed);
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

    #[test]
    fn hashes_are_the_phc_strings_the_argon2_crate_writes_and_reads() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Ours, checked by the crate: stored hashes stay verifiable by any
        // argon2id implementation, and earlier versions' hashes by ours.
        let ours = super::hash_now(b"correct horse").unwrap();
        let parsed = super::PasswordHash::new(&ours).unwrap();
        assert!(
            super::Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            super::Argon2::default()
                .verify_password(b"wrong horse", &parsed)
                .is_err()
        );
        let theirs = super::Argon2::default()
            .hash_password(
                b"battery staple",
                &super::SaltString::generate(&mut super::OsRng),
            )
            .unwrap()
            .to_string();
        assert_eq!(
            ours.split('$').take(4).collect::<Vec<_>>(),
            theirs.split('$').take(4).collect::<Vec<_>>(),
            "same algorithm, version and parameters"
        );
        assert!(super::verify_now(b"battery staple", &theirs));
        assert!(!super::verify_now(b"battery stapler", &theirs));
        // Other parameters (argon2i, smaller memory) verify too.
        let other = super::Argon2::new(
            super::Algorithm::Argon2i,
            super::Version::V0x13,
            super::Params::new(64, 1, 1, Some(16)).unwrap(),
        )
        .hash_password(b"x", &super::SaltString::generate(&mut super::OsRng))
        .unwrap()
        .to_string();
        assert!(super::verify_now(b"x", &other) && !super::verify_now(b"y", &other));
        for bad in [
            "",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
            "$bcrypt$x",
            "$argon2id$v=99$m=8,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!super::verify_now(b"x", bad), "{bad}");
        }
    }

    #[test]
    fn the_pool_of_working_memory_keeps_at_most_its_capacity() {
        // Other tests in this process hash at the same time, so only the
        // bound is checked here; reuse is tested in its own process
        // (tests/argon2_memory.rs).
        let _gate = super::HashGate::new(2, 0, std::time::Duration::from_secs(1));
        let h = super::hash_now(b"pw").unwrap();
        let start = std::sync::Barrier::new(6);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..2 {
                        assert!(super::verify_now(b"pw", &h));
                    }
                });
            }
        });
        let m = super::memory();
        assert_eq!(m.structure, "argon2_blocks");
        assert!(m.capacity >= 2 && m.entries <= m.capacity, "{m:?}");
        assert!(m.bytes >= 19 * 1024 * 1024 * m.entries, "{m:?}");
        assert!(
            m.evicted > 0,
            "six at once, at most the capacity kept: {m:?}"
        );
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
