//! A client streaming small messages faster than the gateway takes them (its
//! SMSC frozen) is held back by HTTP/2 flow control and keeps its
//! connection: h2's guard against floods of small DATA frames must not take
//! a stream the server stopped reading for a moment for an attack (it did
//! with hyper's default 1 MiB windows: GOAWAY `too_many_data_frames`).

use crate::harness::{Gateway, Sim, bound, sim_config};
use smsgw_proto::sms::v1::{CheckEsmeRequest, SmsRequest, sms_service_client::SmsServiceClient};
use std::time::Duration;

#[tokio::test]
async fn a_stream_held_back_by_a_frozen_smsc_keeps_its_connection() {
    let sim = Sim::start("127.0.0.1:0");
    // One background submission at a time: with the SMSC frozen every send
    // waits for it, and the stream stops reading once 256 are in flight.
    let gw = Gateway::standalone_with_args(
        &sim_config(sim.addr),
        &["--max-background-submissions", "1"],
    );
    let creds = gw.user("held-back@example.com").await;
    bound(&gw, &creds).await;
    sim.signal("STOP");

    let total = 20_000u32;
    let (tx, rx) = tokio::sync::mpsc::channel::<SmsRequest>(64);
    let producer = tokio::spawn(async move {
        // Paced, as an application sends: each message leaves alone, in its
        // own small DATA frame (a burst would be coalesced into big ones).
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for i in 0..total {
            tick.tick().await;
            // Small on purpose: each is a DATA frame of ~45 bytes.
            let r = SmsRequest {
                transaction_id: format!("h{i}"),
                esme: "default".into(),
                saddr: "SMSGW".into(),
                daddr: format!("4915{i:09}"),
                message: "x".into(),
                ..Default::default()
            };
            if tx.send(r).await.is_err() {
                return i;
            }
        }
        total
    });
    let channel = gw.channel().await;
    let mut sms = SmsServiceClient::new(channel.clone());
    let mut out = sms
        .send_message_stream(creds.grpc(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();

    // Held back for 6 s (~6,000 small frames sent, ~250 KiB): answers
    // trickle at most, and the stream stays up.
    let held_until = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut answered = 0u32;
    loop {
        match tokio::time::timeout_at(held_until, out.message()).await {
            Err(_) => break,
            Ok(Ok(Some(_))) => answered += 1,
            Ok(Ok(None)) => panic!("the stream ended while held back"),
            Ok(Err(e)) => panic!("the stream failed while held back: {e:?}"),
        }
    }
    assert!(
        answered < total / 2,
        "the SMSC was frozen, yet {answered} answers came"
    );
    // The connection is alive: another call on it is answered.
    let mut other = SmsServiceClient::new(channel);
    other
        .check_esme(creds.grpc(CheckEsmeRequest {
            esme: "sim-link".into(),
        }))
        .await
        .expect("a unary call on the held-back stream's connection");

    // The SMSC thaws: the stream goes on where it stood.
    sim.signal("CONT");
    let more = 500;
    let resumed = tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..more {
            match out.message().await {
                Ok(Some(_)) => {}
                other => return Err(format!("{other:?}")),
            }
        }
        Ok(())
    })
    .await;
    assert!(
        matches!(resumed, Ok(Ok(()))),
        "after the thaw the stream must answer {more} more: {resumed:?}"
    );
    producer.abort();
}
