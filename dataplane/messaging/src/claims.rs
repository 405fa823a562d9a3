//! Source addresses for mobile-originated messages: who owns an MO's
//! destination (managed `User` resources first, then apps' approved
//! claims), and the claims apps make and admins decide on. The rule is
//! [`smsgw_core::claims`]'s.

use crate::MessagingError;
use crate::service::Messaging;
use smsgw_core::bounded::{BoundedMap, MemoryUse};
use smsgw_core::claims::{
    AddressClaim, ClaimInputError, ClaimStatus, MAX_CLAIMS_PER_APP, claim_id, first_word,
    parse_address, parse_claim_id, parse_keyword,
};
use smsgw_core::users::StoreError;
use smsgw_crds::Snapshot;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// How long a claim (or its absence) is cached for MO routing: an approval
/// or release on another pod is seen here within this time (on this pod
/// at once).
pub const CLAIM_CACHE: std::time::Duration = std::time::Duration::from_secs(5);

/// Claim ids (and absences) cached at most for MO routing.
pub const CLAIM_CACHE_ENTRIES: usize = 10_000;

/// An address as MO routing compares it: a number's digits only (no
/// `+`, spaces, dashes, dots or parentheses), anything else trimmed.
fn mo_key(address: &str) -> std::borrow::Cow<'_, str> {
    let t = address.trim();
    if t.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'))
    {
        t.chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .into()
    } else {
        t.into()
    }
}

/// The email of the managed user (a User resource) whose
/// `sourceAddresses` hold `address`, if any.
fn managed_owner<'a>(snap: &'a Snapshot, address: &str) -> Option<&'a str> {
    let key = mo_key(address);
    snap.users
        .values()
        .find(|u| u.source_addresses.iter().any(|a| mo_key(a) == key))
        .map(|u| u.email.as_str())
}

fn invalid(e: &ClaimInputError) -> MessagingError {
    let code = match e.field() {
        "address" => "invalid_address",
        "keyword" => "invalid_keyword",
        _ => "invalid_claim_id",
    };
    MessagingError::refused(code, e.to_string())
}

/// Address claims (or their absence) by id, for MO routing: each kept
/// [`CLAIM_CACHE`], at most [`CLAIM_CACHE_ENTRIES`]. A change made on this
/// pod bumps an epoch under the same lock, so a lookup that read the store
/// before the change cannot cache what it read after it.
pub(crate) struct ClaimCache {
    inner: Mutex<Cached>,
}

/// The cached claims, and the epoch of local changes.
type Cached = (BoundedMap<String, Option<Arc<AddressClaim>>>, u64);

impl ClaimCache {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new((
                BoundedMap::new(
                    "address_claims",
                    CLAIM_CACHE_ENTRIES,
                    usize::MAX,
                    CLAIM_CACHE,
                ),
                0,
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached claim (or absence), or the epoch to give back to
    /// [`ClaimCache::insert`] after reading the store.
    fn get(&self, id: &str) -> Result<Option<Arc<AddressClaim>>, u64> {
        let g = self.lock();
        g.0.get(&id.to_owned(), Instant::now().into_std())
            .cloned()
            .ok_or(g.1)
    }

    /// Caches what the store answered, unless a local change came since
    /// `epoch`.
    fn insert(&self, id: &str, claim: Option<Arc<AddressClaim>>, epoch: u64) {
        let mut g = self.lock();
        if g.1 == epoch {
            let bytes = 2 * id.len() + std::mem::size_of::<AddressClaim>() + 64;
            g.0.insert(id.to_owned(), claim, bytes, Instant::now().into_std());
        }
    }

    /// Drops `id` after a change made here.
    fn forget(&self, id: &str) {
        let mut g = self.lock();
        g.1 += 1;
        g.0.remove(&id.to_owned());
    }

    /// What it holds, for the `smsgw_memory_*` gauges.
    pub(crate) fn memory(&self) -> MemoryUse {
        self.lock().0.memory()
    }
}

/// Who owns an MO's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MoOwner {
    /// A managed user, by email.
    Managed(String),
    /// An app, through its approved claim.
    Claimed(Arc<AddressClaim>),
}

impl Messaging {
    /// Who receives an MO to `destination` whose text is `text`: the managed
    /// user listing the address, else the app holding an approved claim of
    /// the text's first word on it, else the app holding an approved claim
    /// of the bare address. Claims are read through a cache of
    /// [`CLAIM_CACHE`].
    pub(crate) async fn mo_owner(&self, destination: &str, text: &str) -> Option<MoOwner> {
        if let Some(email) = managed_owner(&self.config.load(), destination) {
            return Some(MoOwner::Managed(email.to_owned()));
        }
        let address = mo_key(destination);
        if let Some(word) = first_word(text)
            && let Some(c) = self.approved_claim(&claim_id(&address, Some(&word))).await
        {
            return Some(MoOwner::Claimed(c));
        }
        self.approved_claim(&address).await.map(MoOwner::Claimed)
    }

    /// The claim `id` if it is approved, through the cache.
    async fn approved_claim(&self, id: &str) -> Option<Arc<AddressClaim>> {
        let claim = match self.claim_cache.get(id) {
            Ok(c) => c,
            Err(epoch) => {
                let c = match self.users.claim(id).await {
                    Ok(c) => c.map(Arc::new),
                    Err(e) => {
                        tracing::warn!(claim = id, error = %e, "cannot read an address claim for a mobile-originated message");
                        return None;
                    }
                };
                self.claim_cache.insert(id, c.clone(), epoch);
                c
            }
        };
        claim.filter(|c| c.status == ClaimStatus::Approved)
    }

    /// `address_managed` when a User resource lists `address`.
    fn not_managed(&self, address: &str) -> Result<(), MessagingError> {
        match managed_owner(&self.config.load(), address) {
            Some(_) => Err(MessagingError::Conflict {
                code: "address_managed",
                message: format!(
                    "address {address} belongs to a user managed by the gateway's configuration"
                ),
            }),
            None => Ok(()),
        }
    }

    fn forget_claim(&self, id: &str) {
        self.claim_cache.forget(id);
    }

    /// The app of `user_id` (`app_id`) claims `address` (a short code or an
    /// E.164 number), or a `keyword` on it; the claim is pending until an
    /// admin approves it.
    ///
    /// Refused as `invalid_address` / `invalid_keyword` (malformed),
    /// `address_managed` (a User resource lists the address),
    /// `address_taken` (another app's claim), `already_claimed` (this
    /// app's) or `too_many_claims` ([`MAX_CLAIMS_PER_APP`]).
    pub async fn claim_address(
        &self,
        user_id: &str,
        app_id: &str,
        address: &str,
        keyword: Option<&str>,
    ) -> Result<AddressClaim, MessagingError> {
        let (address, kind) = parse_address(address).map_err(|e| invalid(&e))?;
        let keyword = keyword
            .filter(|k| !k.trim().is_empty())
            .map(parse_keyword)
            .transpose()
            .map_err(|e| invalid(&e))?;
        self.not_managed(&address)?;
        let claim = AddressClaim {
            address,
            kind,
            keyword,
            app_id: app_id.to_owned(),
            user_id: user_id.to_owned(),
            status: ClaimStatus::Pending,
            created_at: smsgw_core::unix_now(),
            approved_at: None,
        };
        let id = claim.id();
        match self.users.put_claim(&claim, MAX_CLAIMS_PER_APP).await {
            Ok(()) => {
                self.forget_claim(&id);
                tracing::info!(%app_id, claim = %id, "address claimed, pending approval");
                Ok(claim)
            }
            Err(StoreError::Conflict { .. }) => {
                let own = matches!(self.users.claim(&id).await, Ok(Some(c)) if c.app_id == app_id);
                Err(MessagingError::Conflict {
                    code: if own {
                        "already_claimed"
                    } else {
                        "address_taken"
                    },
                    message: if own {
                        format!("this app already claimed {id}")
                    } else {
                        format!("{id} is claimed by another app")
                    },
                })
            }
            Err(StoreError::TooManyClaims { max, .. }) => Err(MessagingError::Conflict {
                code: "too_many_claims",
                message: format!("an app may hold at most {max} address claims; release one first"),
            }),
            Err(e) => Err(MessagingError::Users(e)),
        }
    }

    /// The claims of an app, ordered by id.
    pub async fn address_claims(&self, app_id: &str) -> Result<Vec<AddressClaim>, MessagingError> {
        self.users
            .claims_of_app(app_id)
            .await
            .map_err(MessagingError::Users)
    }

    /// Releases a claim of `app_id` (`NotFound` when it holds no claim of
    /// that id); MO to the address stops reaching it at once on this pod,
    /// within [`CLAIM_CACHE`] on the others.
    pub async fn release_address(
        &self,
        app_id: &str,
        id: &str,
    ) -> Result<AddressClaim, MessagingError> {
        let (address, keyword) = parse_claim_id(id).map_err(|e| invalid(&e))?;
        let id = claim_id(&address, keyword.as_deref());
        let c = self
            .users
            .delete_claim(&id, Some(app_id))
            .await
            .map_err(MessagingError::Users)?
            .ok_or_else(|| MessagingError::NotFound(format!("this app holds no claim {id}")))?;
        self.forget_claim(&id);
        tracing::info!(%app_id, claim = %id, "address claim released");
        Ok(c)
    }

    /// Every app's claims (only those in `status` when given), ordered by
    /// id after `after`, from a page of at most `limit` stored claims; the
    /// second value is where the next page starts, `None` at the end.
    pub async fn list_address_claims(
        &self,
        status: Option<ClaimStatus>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AddressClaim>, Option<String>), MessagingError> {
        let page = self
            .users
            .list_claims(after.filter(|a| !a.is_empty()), limit)
            .await
            .map_err(MessagingError::Users)?;
        let next = (page.len() == limit)
            .then(|| page.last().map(AddressClaim::id))
            .flatten();
        let page = page
            .into_iter()
            .filter(|c| status.is_none_or(|s| c.status == s))
            .collect();
        Ok((page, next))
    }

    /// An admin approves a claim: MO to its address reaches its app from
    /// now on (at once on this pod, within [`CLAIM_CACHE`] on others).
    /// Refused as `address_managed` when a User resource has listed the
    /// address since it was claimed.
    pub async fn approve_address_claim(&self, id: &str) -> Result<AddressClaim, MessagingError> {
        let (address, keyword) = parse_claim_id(id).map_err(|e| invalid(&e))?;
        self.not_managed(&address)?;
        let id = claim_id(&address, keyword.as_deref());
        let c = self
            .users
            .approve_claim(&id, smsgw_core::unix_now())
            .await
            .map_err(MessagingError::Users)?
            .ok_or_else(|| MessagingError::NotFound(format!("no claim {id}")))?;
        self.forget_claim(&id);
        tracing::info!(app_id = %c.app_id, claim = %id, "address claim approved");
        Ok(c)
    }

    /// An admin rejects (deletes) a claim, pending or approved.
    pub async fn reject_address_claim(&self, id: &str) -> Result<AddressClaim, MessagingError> {
        let (address, keyword) = parse_claim_id(id).map_err(|e| invalid(&e))?;
        let id = claim_id(&address, keyword.as_deref());
        let c = self
            .users
            .delete_claim(&id, None)
            .await
            .map_err(MessagingError::Users)?
            .ok_or_else(|| MessagingError::NotFound(format!("no claim {id}")))?;
        self.forget_claim(&id);
        tracing::info!(app_id = %c.app_id, claim = %id, "address claim rejected");
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(address: &str) -> Arc<AddressClaim> {
        Arc::new(AddressClaim {
            address: address.into(),
            kind: smsgw_core::claims::AddressKind::ShortCode,
            keyword: None,
            app_id: "app".into(),
            user_id: "user".into(),
            status: ClaimStatus::Pending,
            created_at: 0,
            approved_at: None,
        })
    }

    #[test]
    fn a_lookup_that_read_the_store_before_a_local_change_does_not_cache_it() {
        let cache = ClaimCache::new();
        let epoch = cache.get("4444").expect_err("nothing cached yet");
        // Approved here while the lookup was reading the store...
        cache.forget("4444");
        // ...so what it read (still pending) is not cached.
        cache.insert("4444", Some(pending("4444")), epoch);
        let now = cache
            .get("4444")
            .expect_err("the stale read was not cached");
        cache.insert("4444", None, now);
        assert_eq!(cache.get("4444"), Ok(None), "a fresh read is cached");
    }

    #[test]
    fn numbers_compare_by_their_digits_and_other_addresses_as_written() {
        assert_eq!(mo_key("+49 (1555) 00-01"), "4915550001");
        assert_eq!(mo_key(" ACME "), "ACME");
    }
}
