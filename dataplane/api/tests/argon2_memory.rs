//! Resident memory stays flat across many password hashes (FUZZING.md
//! finding 2). Its own test binary: resident memory is per process, and
//! other tests allocating beside it would blur the measurement.

use smsgw_api::auth::password;

/// Resident set size of this process, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024
}

#[test]
fn sixty_hashes_and_verifications_in_a_row_leave_resident_memory_flat() {
    // A current-thread runtime like the fuzz fixture's: each computation
    // runs on whichever blocking-pool thread is free. When every one
    // allocated and freed its own 19 MiB, the allocator kept them per
    // thread arena: ~420 MiB resident after 50 logins on this runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _gate = password::HashGate::new(4, 0, std::time::Duration::from_secs(1));
    rt.block_on(async {
        let phc = password::hash("warm up".into()).await.unwrap();
        assert!(password::verify("warm up".into(), phc).await);
        let before = rss_mib();
        for i in 0..60 {
            let phc = password::hash(format!("secret {i}")).await.unwrap();
            assert!(password::verify(format!("secret {i}"), phc.clone()).await);
            assert!(!password::verify(format!("secret {i}!"), phc).await);
        }
        let after = rss_mib();
        let pool = password::memory();
        eprintln!("resident {before} → {after} MiB; pool {pool:?}");
        assert!(pool.entries <= pool.capacity, "{pool:?}");
        // At most the pool's other buffers (sequential calls reuse one).
        assert!(
            after <= before + 40,
            "resident memory grew from {before} to {after} MiB over 180 computations"
        );
    });
}
