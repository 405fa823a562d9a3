//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator
//! replicas never both act: the holder renews the Lease every third of its
//! duration; another replica takes it over only once it expired.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;

/// One replica's side of the election.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    lease: String,
    identity: String,
    duration: Duration,
}

/// Whether `lease` is held by someone other than `identity` and still
/// fresh at `now`.
pub fn held_by_other(lease: &Lease, identity: &str, now: Timestamp) -> Option<String> {
    smsgw_leases::live_holder(lease, now)
        .filter(|h| *h != identity)
        .map(str::to_owned)
}

impl LeaderElector {
    /// An elector for the Lease `lease` in `api`'s namespace, as
    /// `identity` (the pod name).
    pub fn new(api: Api<Lease>, lease: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            lease: lease.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// How often the holder renews: a third of the duration.
    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    /// Takes or renews the Lease. `Ok(true)` when this replica holds it
    /// now; `Ok(false)` when another one does (or won a race).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let secs = self.duration.as_secs().max(1) as i32;
        match self.api.get_opt(&self.lease).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.lease.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                if held_by_other(&lease, &self.identity, now).is_some() {
                    return Ok(false);
                }
                let spec = lease.spec.get_or_insert_with(Default::default);
                if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(secs);
                spec.renew_time = Some(MicroTime(now));
                // replace carries resourceVersion: a concurrent writer wins,
                // we get 409.
                match self
                    .api
                    .replace(&self.lease, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Waits until this replica holds the Lease, retrying every renew
    /// interval.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        loop {
            if self.try_acquire_or_renew().await? {
                tracing::info!(identity = %self.identity, lease = %self.lease, "leadership acquired");
                return Ok(());
            }
            tokio::time::sleep(self.renew_interval()).await;
        }
    }

    /// Renews the Lease until it is lost or a renewal keeps failing past
    /// the lease duration; then returns the error. Meant to be raced
    /// against the leader's work, the process ending when it returns.
    pub async fn keep(&self) -> crate::Error {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_interval()).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    return crate::Error::LeadershipLost {
                        holder: "another replica".into(),
                    };
                }
                Err(e) if last_ok.elapsed() >= self.duration => return crate::Error::Kube(e),
                Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
            }
        }
    }
}
