//! The simulator alone: a raw load generator (pre-encoded submit_sm, header
//! parsing only) drives it over 4 loopback connections with up to 1,024
//! outstanding PDUs each. The simulator runs on a single-threaded runtime
//! (one core). Measured with receipts off and with receipts on (each
//! submit then also costs a deliver_sm and its deliver_sm_resp).
//!
//! `cargo bench -p smsgw-smpp --bench sim_throughput`

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use rusmpp::{
    Command, CommandStatus, Pdu,
    pdus::{BindTransceiver, SubmitSm},
    types::{COctetString, OctetString},
    values::{InterfaceVersion, RegisteredDelivery},
};
use smsgw_smpp::{
    codec::encode_into,
    sim::{SimConfig, SimHandle},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

const CONNS: usize = 4;
const OUTSTANDING: u64 = 1024;

fn main() {
    let n: u64 = std::env::var("SMPP_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    for receipts in [false, true] {
        run(n, receipts);
    }
}

fn run(n: u64, receipts: bool) {
    let cancel = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel::<SimHandle>();
    let c = cancel.clone();
    let sim_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sim = smsgw_smpp::sim::run(
                SimConfig::default().receipt_delay(Duration::ZERO),
                c.clone(),
            )
            .await
            .unwrap();
            tx.send(sim).unwrap();
            c.cancelled().await;
        });
    });
    let sim = rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let per_conn = n / CONNS as u64;
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CONNS {
            let addr = sim.addr();
            tasks.push(tokio::spawn(drive(addr, per_conn, receipts)));
        }
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed()
    });
    let total = per_conn * CONNS as u64;
    println!(
        "sim_throughput (receipts {}): {total} submit_sm in {elapsed:.2?}: {:.0} submit_sm/s; counters {:?}",
        if receipts { "on" } else { "off" },
        total as f64 / elapsed.as_secs_f64(),
        sim.counters()
    );
    cancel.cancel();
    sim_thread.join().unwrap();
}

async fn drive(addr: std::net::SocketAddr, n: u64, receipts: bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut out = BytesMut::new();
    let bind = BindTransceiver::builder()
        .system_id("smsgw".parse::<COctetString<1, 16>>().unwrap())
        .password("secret".parse::<COctetString<1, 9>>().unwrap())
        .interface_version(InterfaceVersion::Smpp3_4)
        .build();
    encode_into(
        &Command::new(CommandStatus::EsmeRok, 1, Pdu::BindTransceiver(bind)),
        &mut out,
    );
    s.write_all(&out).await.unwrap();
    out.clear();
    let mut inbuf = BytesMut::with_capacity(256 * 1024);
    // Wait for bind_resp.
    while inbuf.len() < 16 {
        s.read_buf(&mut inbuf).await.unwrap();
    }
    let len = u32::from_be_bytes(inbuf[..4].try_into().unwrap()) as usize;
    while inbuf.len() < len {
        s.read_buf(&mut inbuf).await.unwrap();
    }
    assert_eq!(
        u32::from_be_bytes(inbuf[8..12].try_into().unwrap()),
        0,
        "bind ok"
    );
    inbuf.advance(len);

    let sm = SubmitSm::builder()
        .source_addr("smsgw".parse::<COctetString<1, 21>>().unwrap())
        .destination_addr("4917012345".parse::<COctetString<1, 21>>().unwrap())
        .registered_delivery(RegisteredDelivery::from(u8::from(receipts)))
        .short_message(
            OctetString::from_static_slice(b"benchmark message, 40 characters long...").unwrap(),
        )
        .build();
    let mut template = BytesMut::new();
    encode_into(
        &Command::new(CommandStatus::EsmeRok, 0, Pdu::SubmitSm(sm)),
        &mut template,
    );
    let template = template.freeze();

    let (mut r, mut w) = s.into_split();
    enum Ctl {
        Credit(u64),
        Resp(bytes::Bytes),
    }
    let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::unbounded_channel::<Ctl>();
    let writer = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut credit = OUTSTANDING;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            if sent < n && credit > 0 {
                let batch = credit.min(n - sent).min(256);
                for i in 0..batch {
                    let seq = (sent + i + 2) as u32;
                    buf.extend_from_slice(&template);
                    let at = buf.len() - template.len() + 12;
                    buf[at..at + 4].copy_from_slice(&seq.to_be_bytes());
                }
                sent += batch;
                credit -= batch;
            }
            let ctl = if sent < n && credit > 0 {
                ctl_rx.try_recv().ok()
            } else {
                if !buf.is_empty() {
                    w.write_all(&buf).await.unwrap();
                    buf.clear();
                }
                match ctl_rx.recv().await {
                    Some(c) => Some(c),
                    None => break,
                }
            };
            match ctl {
                Some(Ctl::Credit(c)) => credit += c,
                Some(Ctl::Resp(b)) => buf.extend_from_slice(&b),
                None => {}
            }
            if buf.len() >= 32 * 1024 {
                w.write_all(&buf).await.unwrap();
                buf.clear();
            }
        }
    });
    let mut got = 0u64;
    let mut receipts_seen = 0u64;
    let mut resp = BytesMut::new();
    while got < n || (receipts && receipts_seen < n) {
        if r.read_buf(&mut inbuf).await.unwrap() == 0 {
            panic!("closed");
        }
        let mut new = 0;
        while inbuf.len() >= 16 {
            let len = u32::from_be_bytes(inbuf[..4].try_into().unwrap()) as usize;
            if inbuf.len() < len {
                break;
            }
            let id = u32::from_be_bytes(inbuf[4..8].try_into().unwrap());
            let seq = u32::from_be_bytes(inbuf[12..16].try_into().unwrap());
            if id == 0x8000_0004 {
                new += 1;
            } else if id == 0x0000_0005 {
                receipts_seen += 1;
                resp.put_u32(17);
                resp.put_u32(0x8000_0005);
                resp.put_u32(0);
                resp.put_u32(seq);
                resp.put_u8(0);
            }
            inbuf.advance(len);
        }
        got += new;
        if new > 0 {
            let _ = ctl_tx.send(Ctl::Credit(new));
        }
        if !resp.is_empty() {
            let _ = ctl_tx.send(Ctl::Resp(resp.split().freeze()));
        }
    }
    drop(ctl_tx);
    writer.await.unwrap();
}
