//! Embedded user store on redb: one file, ACID transactions. redb runs one
//! write transaction at a time, which makes `create` atomic on its unique
//! keys. The quota ledger's tables live in the same file (`quotas.rs`).

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use smsgw_core::claims::{AddressClaim, ClaimStatus};
use smsgw_core::users::{StoreError, UserRecord, UserStore, email_key};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const EMAILS: TableDefinition<&str, &str> = TableDefinition::new("user_emails");
const APPS: TableDefinition<&str, &str> = TableDefinition::new("user_apps");
/// Address claims by id, as JSON.
const CLAIMS: TableDefinition<&str, &[u8]> = TableDefinition::new("address_claims");
/// `app_id NUL claim_id` of every claim: an app's claims are one range.
const APP_CLAIMS: TableDefinition<&str, ()> = TableDefinition::new("app_claims");

/// Key of `APP_CLAIMS`.
fn app_claim_key(app_id: &str, claim_id: &str) -> String {
    format!("{app_id}\0{claim_id}")
}

/// The `APP_CLAIMS` range of one app.
fn app_claim_range(app_id: &str) -> (String, String) {
    (format!("{app_id}\0"), format!("{app_id}\u{1}"))
}

/// The user store's page cache: users are few and read through caches
/// (redb's own default, 1 GiB, is for far bigger files).
pub const USER_STORE_CACHE: usize = 4 << 20;

/// Users in a redb file on local disk (standalone mode).
#[derive(Clone)]
pub struct EmbeddedUserStore {
    db: Arc<Database>,
}

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EmbeddedUserStore {
    /// Opens (or creates) the store file at `path`, with a page cache of
    /// [`USER_STORE_CACHE`] bytes.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(USER_STORE_CACHE)
            .create(path)
            .map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(USERS).map_err(backend)?;
        txn.open_table(EMAILS).map_err(backend)?;
        txn.open_table(APPS).map_err(backend)?;
        txn.open_table(CLAIMS).map_err(backend)?;
        txn.open_table(APP_CLAIMS).map_err(backend)?;
        txn.open_table(crate::quotas::QUOTA_COUNTS)
            .map_err(backend)?;
        txn.open_table(crate::quotas::BALANCES).map_err(backend)?;
        txn.open_table(crate::quotas::TOP_UPS).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(Self { db: Arc::new(db) })
    }

    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(backend)?
    }

    /// Up to `limit` values (JSON) of `table`, in key order, after the key
    /// `after`: a page of users or of claims.
    async fn json_page<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let after = after.map(str::to_owned);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(table).map_err(backend)?;
            let start = match &after {
                Some(a) => Bound::Excluded(a.as_str()),
                None => Bound::Unbounded,
            };
            let mut out = Vec::new();
            for entry in table
                .range::<&str>((start, Bound::Unbounded))
                .map_err(backend)?
                .take(limit)
            {
                let (_, v) = entry.map_err(backend)?;
                out.push(serde_json::from_slice(v.value()).map_err(backend)?);
            }
            Ok(out)
        })
        .await
    }

    fn read_user(db: &Database, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let txn = db.begin_read().map_err(backend)?;
        let table = txn.open_table(USERS).map_err(backend)?;
        match table.get(user_id).map_err(backend)? {
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(backend),
            None => Ok(None),
        }
    }

    fn read_index(
        db: &Database,
        table: TableDefinition<&str, &str>,
        key: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let id = {
            let txn = db.begin_read().map_err(backend)?;
            let t = txn.open_table(table).map_err(backend)?;
            t.get(key).map_err(backend)?.map(|v| v.value().to_owned())
        };
        match id {
            Some(id) => Self::read_user(db, &id),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl UserStore for EmbeddedUserStore {
    async fn create(&self, user: &UserRecord) -> Result<(), StoreError> {
        let user = user.clone();
        self.blocking(move |db| {
            let json = serde_json::to_vec(&user).map_err(backend)?;
            let email = email_key(&user.email);
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut emails = txn.open_table(EMAILS).map_err(backend)?;
                if emails.get(email.as_str()).map_err(backend)?.is_some() {
                    return Err(StoreError::Conflict {
                        field: "email",
                        value: user.email.clone(),
                    });
                }
                let mut apps = txn.open_table(APPS).map_err(backend)?;
                if apps.get(user.app_id.as_str()).map_err(backend)?.is_some() {
                    return Err(StoreError::Conflict {
                        field: "app_id",
                        value: user.app_id.clone(),
                    });
                }
                let mut users = txn.open_table(USERS).map_err(backend)?;
                if users.get(user.user_id.as_str()).map_err(backend)?.is_some() {
                    return Err(StoreError::Conflict {
                        field: "user_id",
                        value: user.user_id.clone(),
                    });
                }
                emails
                    .insert(email.as_str(), user.user_id.as_str())
                    .map_err(backend)?;
                apps.insert(user.app_id.as_str(), user.user_id.as_str())
                    .map_err(backend)?;
                users
                    .insert(user.user_id.as_str(), json.as_slice())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn update(&self, user: &UserRecord) -> Result<(), StoreError> {
        let user = user.clone();
        self.blocking(move |db| {
            let json = serde_json::to_vec(&user).map_err(backend)?;
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut users = txn.open_table(USERS).map_err(backend)?;
                let old: UserRecord = match users.get(user.user_id.as_str()).map_err(backend)? {
                    Some(v) => serde_json::from_slice(v.value()).map_err(backend)?,
                    None => return Err(StoreError::NotFound(user.user_id.clone())),
                };
                if email_key(&old.email) != email_key(&user.email) || old.app_id != user.app_id {
                    return Err(StoreError::Backend("email and app_id cannot change".into()));
                }
                users
                    .insert(user.user_id.as_str(), json.as_slice())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn delete(&self, user_id: &str) -> Result<bool, StoreError> {
        let user_id = user_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut users = txn.open_table(USERS).map_err(backend)?;
                let Some(old) = users.remove(user_id.as_str()).map_err(backend)? else {
                    return Ok(false);
                };
                let old: UserRecord = serde_json::from_slice(old.value()).map_err(backend)?;
                txn.open_table(EMAILS)
                    .map_err(backend)?
                    .remove(email_key(&old.email).as_str())
                    .map_err(backend)?;
                txn.open_table(APPS)
                    .map_err(backend)?
                    .remove(old.app_id.as_str())
                    .map_err(backend)?;
                let mut index = txn.open_table(APP_CLAIMS).map_err(backend)?;
                let (lo, hi) = app_claim_range(&old.app_id);
                let keys = index
                    .range(lo.as_str()..hi.as_str())
                    .map_err(backend)?
                    .map(|e| e.map(|(k, _)| k.value().to_owned()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                let mut claims = txn.open_table(CLAIMS).map_err(backend)?;
                for k in keys {
                    index.remove(k.as_str()).map_err(backend)?;
                    if let Some((_, id)) = k.split_once('\0') {
                        claims.remove(id).map_err(backend)?;
                    }
                }
            }
            txn.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn get(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let id = user_id.to_owned();
        self.blocking(move |db| Self::read_user(db, &id)).await
    }

    async fn by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let key = email_key(email);
        self.blocking(move |db| Self::read_index(db, EMAILS, &key))
            .await
    }

    async fn by_app_id(&self, app_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let key = app_id.to_owned();
        self.blocking(move |db| Self::read_index(db, APPS, &key))
            .await
    }

    async fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        self.json_page(USERS, after, limit).await
    }

    async fn put_claim(&self, claim: &AddressClaim, max_per_app: usize) -> Result<(), StoreError> {
        let claim = claim.clone();
        self.blocking(move |db| {
            let id = claim.id();
            let json = serde_json::to_vec(&claim).map_err(backend)?;
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut claims = txn.open_table(CLAIMS).map_err(backend)?;
                if claims.get(id.as_str()).map_err(backend)?.is_some() {
                    return Err(StoreError::Conflict {
                        field: "address",
                        value: id,
                    });
                }
                let mut index = txn.open_table(APP_CLAIMS).map_err(backend)?;
                let (lo, hi) = app_claim_range(&claim.app_id);
                let held = index
                    .range(lo.as_str()..hi.as_str())
                    .map_err(backend)?
                    .count();
                if held >= max_per_app {
                    return Err(StoreError::TooManyClaims {
                        app_id: claim.app_id.clone(),
                        max: max_per_app,
                    });
                }
                index
                    .insert(app_claim_key(&claim.app_id, &id).as_str(), ())
                    .map_err(backend)?;
                claims
                    .insert(id.as_str(), json.as_slice())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn claim(&self, claim_id: &str) -> Result<Option<AddressClaim>, StoreError> {
        let id = claim_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(CLAIMS).map_err(backend)?;
            match table.get(id.as_str()).map_err(backend)? {
                Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(backend),
                None => Ok(None),
            }
        })
        .await
    }

    async fn claims_of_app(&self, app_id: &str) -> Result<Vec<AddressClaim>, StoreError> {
        let app_id = app_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let index = txn.open_table(APP_CLAIMS).map_err(backend)?;
            let claims = txn.open_table(CLAIMS).map_err(backend)?;
            let (lo, hi) = app_claim_range(&app_id);
            let mut out = Vec::new();
            for entry in index.range(lo.as_str()..hi.as_str()).map_err(backend)? {
                let (k, _) = entry.map_err(backend)?;
                let Some((_, id)) = k.value().split_once('\0') else {
                    continue;
                };
                if let Some(v) = claims.get(id).map_err(backend)? {
                    out.push(serde_json::from_slice(v.value()).map_err(backend)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list_claims(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AddressClaim>, StoreError> {
        self.json_page(CLAIMS, after, limit).await
    }

    async fn approve_claim(
        &self,
        claim_id: &str,
        at: u64,
    ) -> Result<Option<AddressClaim>, StoreError> {
        let id = claim_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let claim = {
                let mut claims = txn.open_table(CLAIMS).map_err(backend)?;
                let mut claim: AddressClaim = match claims.get(id.as_str()).map_err(backend)? {
                    Some(v) => serde_json::from_slice(v.value()).map_err(backend)?,
                    None => return Ok(None),
                };
                if claim.status == ClaimStatus::Approved {
                    return Ok(Some(claim));
                }
                claim.status = ClaimStatus::Approved;
                claim.approved_at = Some(at);
                let json = serde_json::to_vec(&claim).map_err(backend)?;
                claims
                    .insert(id.as_str(), json.as_slice())
                    .map_err(backend)?;
                claim
            };
            txn.commit().map_err(backend)?;
            Ok(Some(claim))
        })
        .await
    }

    async fn delete_claim(
        &self,
        claim_id: &str,
        app_id: Option<&str>,
    ) -> Result<Option<AddressClaim>, StoreError> {
        let id = claim_id.to_owned();
        let app_id = app_id.map(str::to_owned);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let claim = {
                let mut claims = txn.open_table(CLAIMS).map_err(backend)?;
                let claim: AddressClaim = match claims.get(id.as_str()).map_err(backend)? {
                    Some(v) => serde_json::from_slice(v.value()).map_err(backend)?,
                    None => return Ok(None),
                };
                if app_id.as_ref().is_some_and(|a| *a != claim.app_id) {
                    return Ok(None);
                }
                claims.remove(id.as_str()).map_err(backend)?;
                txn.open_table(APP_CLAIMS)
                    .map_err(backend)?
                    .remove(app_claim_key(&claim.app_id, &id).as_str())
                    .map_err(backend)?;
                claim
            };
            txn.commit().map_err(backend)?;
            Ok(Some(claim))
        })
        .await
    }
}
