//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not part
//! of the stable API).

use std::sync::{Arc, Mutex};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{mpsc, watch},
};
use tokio_util::{codec::FramedRead, sync::CancellationToken};

use crate::{
    codec::SmppCodec,
    config::LinkConfig,
    deliver::Reassembler,
    link::Shared,
    rate::RateMeter,
    session::{End, Session, run_connection},
    types::{LinkEvent, SessionRole},
};

/// How a session driven by [`run_bound_session`] ended.
#[derive(Debug)]
pub struct SessionEnd {
    /// Why the connection ended: `peer unbind`, `shutdown`, `stopped`, or
    /// the error that failed it.
    pub reason: String,
    /// Incomplete MO sets the link still holds.
    pub pending_sets: usize,
    /// Payload octets those sets hold.
    pub held_bytes: usize,
}

/// Runs one already-bound transceiver session of a link configured by
/// `config` over `io` (e.g. one end of `tokio::io::duplex`) until the
/// connection ends. Events go to `events`, which must be consumed.
pub async fn run_bound_session<T>(
    config: LinkConfig,
    io: T,
    events: mpsc::Sender<LinkEvent>,
) -> SessionEnd
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (r, w) = tokio::io::split(io);
    let shared = Shared {
        reassembler: Mutex::new(Reassembler::new(config.reassembly)),
        name: config.name.clone(),
        config: arc_swap::ArcSwap::from_pointee(config),
        events,
        submit_meter: RateMeter::default(),
        receipt_meter: RateMeter::default(),
        gcra: arc_swap::ArcSwapOption::empty(),
        tls: None,
        desired: watch::Sender::new(true),
        cancel: CancellationToken::new(),
        resubmitted: std::sync::atomic::AtomicU64::new(0),
        late_forgotten: std::sync::atomic::AtomicU64::new(0),
    };
    let session = Arc::new(Session::new(
        0,
        SessionRole::Transceiver,
        shared.config.load().window,
        0,
        true,
    ));
    let mut desired = session.run.subscribe();
    let reader = FramedRead::with_capacity(
        Box::new(r) as crate::tls::BoxRead,
        SmppCodec::default(),
        64 * 1024,
    );
    let end = run_connection(&shared, &session, reader, Box::new(w), &mut desired).await;
    let reason = match end {
        End::Shutdown => "shutdown".to_owned(),
        End::Stopped => "stopped".to_owned(),
        End::PeerUnbind => "peer unbind".to_owned(),
        End::Stalled => "stalled".to_owned(),
        End::Failed(e) => e.to_string(),
    };
    let r = shared.reassembler.lock().expect("reassembler lock");
    SessionEnd {
        reason,
        pending_sets: r.pending(),
        held_bytes: r.held_bytes(),
    }
}
