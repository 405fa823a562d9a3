//! One link, 4 sessions, window 64, against the simulator on loopback:
//! N submit_sm (default 200,000; `SMPP_BENCH_N` overrides) with every
//! response and every receipt processed.
//!
//! The simulator runs on its own single-threaded runtime (one core); the
//! link on a two-worker runtime.
//!
//! With `SMPP_BENCH_TLS=1` the simulator serves TLS (a certificate made at
//! start) and the link verifies it against that CA.
//!
//! `cargo bench -p smsgw-smpp --bench link_throughput`

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use smsgw_smpp::{
    Address, Link, LinkConfig, LinkEvent, Segment, SegmentOutcome, SubmitRequest,
    sim::{SimConfig, SimIdFormat, SimTls},
};
use tokio_util::sync::CancellationToken;

fn main() {
    let n: u64 = std::env::var("SMPP_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let sessions = 4;
    let window = 64;
    let cancel = CancellationToken::new();
    let tls = std::env::var("SMPP_BENCH_TLS").is_ok_and(|v| v == "1");
    let id = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
    let sim_tls = SimTls {
        cert_pem: id.cert.pem(),
        key_pem: id.signing_key.serialize_pem(),
    };
    let ca = sim_tls.cert_pem.clone();

    // Simulator: one core.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let sim_cancel = cancel.clone();
    let sim_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut cfg = SimConfig::default()
                .id_format(SimIdFormat::Hex)
                .receipt_delay(Duration::ZERO);
            if tls {
                cfg = cfg.tls(sim_tls);
            }
            let sim = smsgw_smpp::sim::run(cfg, sim_cancel.clone()).await.unwrap();
            addr_tx.send(sim.clone()).unwrap();
            sim_cancel.cancelled().await;
        });
    });
    let sim = addr_rx.recv().unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (tx, mut events) = tokio::sync::mpsc::channel(65_536);
        let cfg = LinkConfig::test(sim.addr())
            .sessions(sessions)
            .window(window)
            .message_id_format(smsgw_smpp::IdFormat::Hex)
            .response_timeout(Duration::from_secs(30))
            .window_wait(Duration::from_secs(30))
            .tls(tls)
            .tls_ca(tls.then_some(ca))
            .tls_server_name(tls.then(|| "localhost".to_owned()));
        let link = Link::spawn(cfg, tx, cancel.clone()).unwrap();
        assert!(link.wait_all_bound(Duration::from_secs(5)).await);

        let receipts = Arc::new(AtomicU64::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
        let r = receipts.clone();
        tokio::spawn(async move {
            let mut done_tx = Some(done_tx);
            while let Some(ev) = events.recv().await {
                if let LinkEvent::Receipt(_) = ev
                    && r.fetch_add(1, Ordering::Relaxed) + 1 == n
                    && let Some(d) = done_tx.take()
                {
                    let _ = d.send(Instant::now());
                }
            }
        });

        let next = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let workers = sessions * window * 2;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (link, next, accepted) = (link.clone(), next.clone(), accepted.clone());
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let m = SubmitRequest::new(
                        Address::new("smsgw", 5, 0),
                        Address::new("4917012345", 1, 1),
                        vec![Segment::new(&b"benchmark message, 40 characters long..."[..])],
                    );
                    let out = link.submit(m).await.expect("submit");
                    if matches!(out[0], SegmentOutcome::Accepted { .. }) {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let submit_elapsed = start.elapsed();
        let all_receipts_at = tokio::time::timeout(Duration::from_secs(60), done_rx)
            .await
            .expect("all receipts within 60 s")
            .unwrap();
        let total_elapsed = all_receipts_at - start;
        let acc = accepted.load(Ordering::Relaxed);
        let st = link.status();
        println!("link_throughput: sessions={sessions} window={window} messages={n} tls={tls}");
        println!(
            "  accepted {acc} in {:.2?}: {:.0} submit_sm/s (responses matched)",
            submit_elapsed,
            acc as f64 / submit_elapsed.as_secs_f64()
        );
        println!(
            "  all {} receipts in {:.2?}: {:.0} msg/s end to end (submit + resp + receipt + deliver_sm_resp)",
            receipts.load(Ordering::Relaxed),
            total_elapsed,
            n as f64 / total_elapsed.as_secs_f64()
        );
        println!(
            "  simulator counters: {:?}; link errors: {:?}",
            sim.counters(),
            st.last_error
        );
        assert_eq!(acc, n);
        link.shutdown().await;
        cancel.cancel();
    });
    sim_thread.join().unwrap();
}
