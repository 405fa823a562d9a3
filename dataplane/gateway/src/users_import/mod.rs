//! `smsgw users import`: the platform's users and apps moved over with
//! their `app_id` and `app_secret` unchanged (and their password hashes
//! when the gateway can check them), so their clients keep working.
//!
//! The file (the platform's SQLite user database, or a CSV or JSON export;
//! [`read`]) is read and checked whole first — every row, duplicates
//! within the file, clashes with the store — and nothing is written
//! unless all of it passes. Then the users go either into the user store
//! a standalone gateway uses (embedded, or Redis: [`write_store`]), or
//! into User resources and credentials Secrets for a cluster
//! ([`manifests`]). App secrets and password hashes are never printed or
//! logged; the report names users by row, email and app id.

mod manifests;
mod read;

use anyhow::{Context, bail};
use read::{Field, Format, RawRow, Value};
use smsgw_core::users::{UserRecord, UserStore, email_key};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Options of `smsgw users import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The platform's user database (SQLite), or a CSV or JSON export of
    /// it. Columns (case-insensitive; other columns are ignored): email,
    /// app_id, app_secret (required), app_name, password_hash, is_admin.
    #[arg(long, env = "SMSGW_IMPORT_FROM")]
    pub from: PathBuf,
    /// The file's format; by default from its extension (.db, .sqlite,
    /// .sqlite3, .csv, .json), else from its first bytes.
    #[arg(long, env = "SMSGW_IMPORT_FORMAT", value_enum)]
    pub format: Option<Format>,
    /// The users table of a SQLite file (case-insensitive).
    #[arg(long, env = "SMSGW_IMPORT_TABLE", default_value = "users")]
    pub table: String,
    /// Write User resources (`spec.existingCredentialsSecret`) and their
    /// credentials Secrets into `<DIR>/imported-users.yaml` (mode 0600),
    /// or to standard output with `-`, for `kubectl apply -f` or a
    /// standalone configuration file, instead of writing the user store.
    #[arg(long, env = "SMSGW_IMPORT_EMIT_MANIFESTS", value_name = "DIR")]
    pub emit_manifests: Option<PathBuf>,
    /// Namespace written into the emitted manifests (default: none, the
    /// one `kubectl apply` is given).
    #[arg(long, env = "SMSGW_IMPORT_NAMESPACE", requires = "emit_manifests")]
    pub namespace: Option<String>,
    /// Data directory of the embedded user store (the gateway's
    /// --data-dir). A standalone gateway holds that store open: stop it
    /// while importing.
    #[arg(long, env = "SMSGW_DATA_DIR", default_value = "smsgw-data")]
    pub data_dir: PathBuf,
    /// Redis URL of the user store (the gateway's --redis-url); when set,
    /// users are written there, seen at once by every running gateway.
    #[arg(long, env = "SMSGW_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Skip users already in the store with the same email and app id
    /// (to finish an interrupted import) instead of refusing the file.
    #[arg(long, env = "SMSGW_IMPORT_SKIP_EXISTING")]
    pub skip_existing: bool,
    /// Read and check everything, report what would be imported, write
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What becomes of an imported user's password.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// Its hash is kept: the user logs in with the password it had.
    Kept,
    /// No hash in the file.
    Absent,
    /// A hash the gateway cannot check; why (never the hash).
    Unsupported(String),
}

/// A user ready to import. Holds secrets: no `Debug`, never printed.
pub struct Imported {
    /// Its place in the file.
    pub at: String,
    /// Login email, as given (trimmed).
    pub email: String,
    /// Application name.
    pub app_name: String,
    /// Application id, exactly as given.
    pub app_id: String,
    /// Application secret, exactly as given.
    pub app_secret: String,
    /// The password hash to keep, when [`Password::Kept`].
    pub password_hash: Option<String>,
    /// What becomes of the password.
    pub password: Password,
    /// Admin rights.
    pub admin: bool,
}

impl Imported {
    /// "row 3: alice@example.com (app app-1)".
    fn who(&self) -> String {
        format!("{}: {} (app {})", self.at, self.email, self.app_id)
    }

    /// How the user will log in, for the report.
    fn login(&self) -> String {
        match &self.password {
            Password::Kept => "password login kept".to_owned(),
            Password::Absent => {
                "without password login (no password hash in the file); the app authenticates with its app_id and app_secret".to_owned()
            }
            Password::Unsupported(why) => format!(
                "without password login: its password hash is {why}; the app authenticates with its app_id and app_secret"
            ),
        }
    }
}

/// Application name of a user whose row has none.
const DEFAULT_APP_NAME: &str = "default";
/// Longest app id taken (clients send it as a header).
const MAX_APP_ID: usize = 128;
/// Longest app secret taken.
const MAX_APP_SECRET: usize = 1024;
/// Longest app name (as the User resource allows).
const MAX_APP_NAME: usize = 128;

/// Checks every row, and the file as a whole: every problem found, each
/// prefixed by the row's place, or the users to import.
pub fn plan(rows: Vec<RawRow>) -> Result<Vec<Imported>, Vec<String>> {
    let mut problems = Vec::new();
    let mut users = Vec::new();
    let mut emails: BTreeMap<String, String> = BTreeMap::new();
    let mut app_ids: BTreeMap<String, String> = BTreeMap::new();
    for row in rows {
        let at = row.at.clone();
        let mut bad: Vec<String> = row.problems.clone();
        let text = |f: Field, bad: &mut Vec<String>| -> Option<String> {
            match row.fields.get(&f) {
                None => None,
                Some(Value::Text(s)) => Some(s.clone()),
                Some(Value::Int(n)) => Some(n.to_string()),
                Some(Value::Bool(_)) => {
                    bad.push(format!("{} is a boolean, not text", f.name()));
                    None
                }
            }
        };
        let email = text(Field::Email, &mut bad).map(|e| e.trim().to_owned());
        let app_id = text(Field::AppId, &mut bad);
        let app_secret = text(Field::AppSecret, &mut bad);
        let app_name = text(Field::AppName, &mut bad).map(|n| n.trim().to_owned());
        let hash = text(Field::PasswordHash, &mut bad).map(|h| h.trim().to_owned());
        let admin = match row.fields.get(&Field::Admin) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Int(0)) => false,
            Some(Value::Int(1)) => true,
            Some(Value::Int(n)) => {
                bad.push(format!("is_admin {n} is not 0 or 1"));
                false
            }
            Some(Value::Text(t)) => match t.trim().to_ascii_lowercase().as_str() {
                "" | "0" | "false" | "f" | "no" | "n" => false,
                "1" | "true" | "t" | "yes" | "y" => true,
                other => {
                    bad.push(format!(
                        "is_admin {other:?} is not a boolean (1/0, true/false, yes/no)"
                    ));
                    false
                }
            },
        };
        for f in [Field::Email, Field::AppId, Field::AppSecret] {
            if !row.fields.contains_key(&f) && !bad.iter().any(|b| b.starts_with(f.name())) {
                bad.push(format!("no {} (empty or missing)", f.name()));
            }
        }
        if let Some(e) = &email
            && !smsgw_crds::is_plausible_email(e)
        {
            bad.push(format!("email {e:?} is not an email address"));
        }
        if let Some(id) = &app_id {
            if id.chars().count() > MAX_APP_ID {
                bad.push(format!("app_id is longer than {MAX_APP_ID} characters"));
            } else if !id.chars().all(|c| c.is_ascii_graphic()) {
                bad.push(format!(
                    "app_id {id:?} holds spaces or characters other than printable ASCII (clients send it as the X-App-ID header)"
                ));
            }
        }
        if let Some(s) = &app_secret
            && s.chars().count() > MAX_APP_SECRET
        {
            bad.push(format!(
                "app_secret is longer than {MAX_APP_SECRET} characters"
            ));
        }
        if app_secret
            .as_deref()
            .is_some_and(|s| s.chars().any(char::is_control))
        {
            bad.push("app_secret holds control characters".to_owned());
        }
        if let Some(n) = &app_name
            && n.chars().count() > MAX_APP_NAME
        {
            bad.push(format!("app_name is longer than {MAX_APP_NAME} characters"));
        }
        // Duplicates within the file.
        if let Some(e) = &email
            && let Some(first) = emails.insert(email_key(e), at.clone())
        {
            bad.push(format!("email {e:?} repeats {first}'s"));
        }
        if let Some(id) = &app_id
            && let Some(first) = app_ids.insert(id.clone(), at.clone())
        {
            bad.push(format!("app_id {id:?} repeats {first}'s"));
        }
        if !bad.is_empty() {
            problems.extend(bad.into_iter().map(|b| format!("{at}: {b}")));
            continue;
        }
        let (password_hash, password) = match hash.filter(|h| !h.is_empty()) {
            None => (None, Password::Absent),
            Some(h) => match smsgw_crds::check_password_hash(&h) {
                Ok(()) => (Some(h), Password::Kept),
                Err(why) => (None, Password::Unsupported(why)),
            },
        };
        users.push(Imported {
            at,
            email: email.expect("checked"),
            app_name: app_name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_APP_NAME.to_owned()),
            app_id: app_id.expect("checked"),
            app_secret: app_secret.expect("checked"),
            password_hash,
            password,
            admin,
        });
    }
    if problems.is_empty() {
        Ok(users)
    } else {
        Err(problems)
    }
}

/// At most this many problems are listed; the rest are counted.
const MAX_LISTED: usize = 50;

/// The error for a file refused with `problems`.
fn refused(from: &std::path::Path, problems: &[String]) -> anyhow::Error {
    let mut msg = format!(
        "{}: {} problem(s); nothing imported:",
        from.display(),
        problems.len()
    );
    for p in problems.iter().take(MAX_LISTED) {
        msg.push_str("\n  ");
        msg.push_str(p);
    }
    if problems.len() > MAX_LISTED {
        msg.push_str(&format!("\n  … and {} more", problems.len() - MAX_LISTED));
    }
    anyhow::anyhow!(msg)
}

/// Runs `smsgw users import`.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let format = match args.format {
        Some(f) => f,
        None => read::detect(&args.from)?,
    };
    let rows = read::read(&args.from, format, &args.table)?;
    if rows.is_empty() {
        bail!(
            "{}: no users in the file; nothing imported",
            args.from.display()
        );
    }
    let users = plan(rows).map_err(|p| refused(&args.from, &p))?;
    match &args.emit_manifests {
        Some(dir) => manifests::emit(&args, dir, &users),
        None => write_store(&args, users).await,
    }
}

/// Opens the user store `args` names.
async fn open_store(args: &ImportArgs) -> anyhow::Result<(Arc<dyn UserStore>, String)> {
    Ok(match &args.redis_url {
        Some(url) => (
            Arc::new(
                smsgw_store::RedisUserStore::connect(&smsgw_store::RedisConfig::new(url.clone()))
                    .await
                    .context("cannot reach Redis for the user store")?,
            ),
            "the Redis user store".to_owned(),
        ),
        None => {
            crate::runtime::private_data_dir(&args.data_dir)?;
            let path = args.data_dir.join("users.redb");
            let store = smsgw_store::EmbeddedUserStore::open(&path).with_context(|| {
                format!(
                    "cannot open the embedded user store {} (a gateway running on this data directory holds it: stop it while importing)",
                    path.display()
                )
            })?;
            (
                Arc::new(store),
                format!("the embedded user store {}", path.display()),
            )
        }
    })
}

/// Checks the users against the store (an email or app id taken is a
/// problem; with `--skip-existing` a user stored with both is skipped),
/// then hashes every app secret and creates every user.
async fn write_store(args: &ImportArgs, users: Vec<Imported>) -> anyhow::Result<()> {
    let (store, where_) = open_store(args).await?;
    let mut problems = Vec::new();
    let mut todo = Vec::new();
    let mut skipped = 0usize;
    for u in users {
        let by_email = store.by_email(&u.email).await?;
        let by_app = store.by_app_id(&u.app_id).await?;
        let owner = |r: &UserRecord| match &r.managed_by {
            Some(res) => format!("user {} (declared by User resource {res})", r.user_id),
            None => format!("user {}", r.user_id),
        };
        match (&by_email, &by_app) {
            (None, None) => todo.push(u),
            (Some(a), Some(b)) if a.user_id == b.user_id && args.skip_existing => {
                println!("{}: already in the store; skipped", u.who());
                skipped += 1;
            }
            (Some(a), Some(b)) if a.user_id == b.user_id => problems.push(format!(
                "{}: already in the store as {} (email {:?}, app_id {:?})",
                u.at,
                owner(a),
                u.email,
                u.app_id
            )),
            _ => {
                if let Some(r) = &by_email {
                    problems.push(format!(
                        "{}: email {:?} is already registered to {}",
                        u.at,
                        u.email,
                        owner(r)
                    ));
                }
                if let Some(r) = &by_app {
                    problems.push(format!(
                        "{}: app_id {:?} already belongs to {}",
                        u.at,
                        u.app_id,
                        owner(r)
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        let mut err = refused(&args.from, &problems);
        if !args.skip_existing {
            err = anyhow::anyhow!(
                "{err}\n(users already in the store with the same email and app id are skipped with --skip-existing)"
            );
        }
        return Err(err);
    }
    if args.dry_run {
        for u in &todo {
            println!("{}: would be imported, {}", u.who(), u.login());
        }
        println!(
            "dry run: {} user(s) would be imported into {where_}, {skipped} skipped; nothing written",
            todo.len()
        );
        return Ok(());
    }
    // Hash every app secret (and a random password for users without a
    // usable hash) before the first write.
    let mut records = Vec::with_capacity(todo.len());
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get());
    for chunk in todo.chunks(lanes) {
        let mut hashes = tokio::task::JoinSet::new();
        for (i, u) in chunk.iter().enumerate() {
            let secret = u.app_secret.clone();
            let kept = u.password_hash.clone();
            hashes.spawn(async move {
                let s = smsgw_api::auth::password::hash(secret).await;
                let p = match kept {
                    Some(h) => Ok(h),
                    // Nobody knows this password: no password login.
                    None => {
                        smsgw_api::auth::password::hash(smsgw_api::auth::password::random_secret())
                            .await
                    }
                };
                (i, s, p)
            });
        }
        let mut done: Vec<_> = hashes.join_all().await;
        done.sort_by_key(|(i, _, _)| *i);
        for (i, s, p) in done {
            let u = &chunk[i];
            let secret_hash = s.map_err(|e| anyhow::anyhow!("cannot hash an app secret: {e}"))?;
            let password_hash = p.map_err(|e| anyhow::anyhow!("cannot hash a password: {e}"))?;
            records.push(record(u, secret_hash, password_hash));
        }
    }
    let mut written = 0usize;
    for (u, r) in todo.iter().zip(&records) {
        if let Err(e) = store.create(r).await {
            bail!(
                "{}: cannot be written: {e}; {written} of {} user(s) were imported before it (run again with --skip-existing to import the rest)",
                u.who(),
                todo.len()
            );
        }
        written += 1;
        println!("{}: imported, {}", u.who(), u.login());
    }
    let with_password = todo.iter().filter(|u| u.password == Password::Kept).count();
    println!(
        "{written} user(s) imported into {where_} ({with_password} with password login, {} without), {skipped} skipped",
        written - with_password
    );
    Ok(())
}

/// The stored form of an imported user: an API user (not managed by a
/// User resource), with its app id as given.
fn record(u: &Imported, secret_hash: String, password_hash: String) -> UserRecord {
    UserRecord {
        user_id: format!("usr_{:032x}", rand::random::<u128>()),
        email: u.email.clone(),
        app_id: u.app_id.clone(),
        app_name: u.app_name.clone(),
        password_hash,
        secret_hash,
        admin: u.admin,
        managed_by: None,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        allowed_targets: Vec::new(),
        allowed_sender_ids: Vec::new(),
        rate: None,
        source_addresses: Vec::new(),
        webhook_url: None,
        webhook_secret: None,
        webhook_allow_private: false,
        webhook_options: Default::default(),
        quotas: Default::default(),
        token_generation: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: &str, fields: &[(Field, Value)]) -> RawRow {
        RawRow {
            at: at.into(),
            fields: fields.iter().cloned().collect(),
            problems: Vec::new(),
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn good(at: &str, email: &str, app: &str) -> RawRow {
        row(
            at,
            &[
                (Field::Email, t(email)),
                (Field::AppId, t(app)),
                (Field::AppSecret, t("s3cr3t value")),
            ],
        )
    }

    #[test]
    fn rows_become_users_keeping_app_ids_and_saying_what_becomes_of_each_password() {
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$eLs7GUHxnSL0bz6M0vNJU1JQ4OvwTzX2xSr2uGYzCxk";
        let mut a = good("row 1", "Alice@Example.com", "APP-1");
        a.fields.insert(Field::PasswordHash, t(phc));
        a.fields.insert(Field::Admin, Value::Int(1));
        a.fields.insert(Field::AppName, t("shop"));
        let mut b = good("row 2", "bob@example.com", "42");
        b.fields.insert(
            Field::PasswordHash,
            t("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"),
        );
        b.fields.insert(Field::Admin, t("no"));
        let c = good("row 3", "carol@example.com", "app-3");
        let users = plan(vec![a, b, c]).ok().unwrap();
        assert_eq!(users[0].app_id, "APP-1");
        assert_eq!(users[0].email, "Alice@Example.com");
        assert!(users[0].admin && users[0].password == Password::Kept);
        assert_eq!(users[0].password_hash.as_deref(), Some(phc));
        assert_eq!(users[0].app_name, "shop");
        assert!(!users[1].admin);
        assert!(matches!(&users[1].password, Password::Unsupported(w) if w.contains("bcrypt")));
        assert!(users[1].password_hash.is_none());
        assert!(!users[1].login().contains("R9h"));
        assert!(users[2].password == Password::Absent);
        assert_eq!(users[2].app_name, DEFAULT_APP_NAME);
    }

    #[test]
    fn every_bad_row_and_duplicate_is_listed_with_its_place_and_no_secret() {
        let mut bad_admin = good("row 2", "b@example.com", "app-2");
        bad_admin.fields.insert(Field::Admin, t("maybe"));
        let mut no_secret = good("row 3", "c@example.com", "app 3");
        no_secret.fields.remove(&Field::AppSecret);
        let dup_email = good("row 4", "A@EXAMPLE.COM", "app-4");
        let dup_app = good("row 5", "e@example.com", "app-2");
        let not_email = good("row 6", "nobody", "app-6");
        let problems = plan(vec![
            good("row 1", "a@example.com", "app-1"),
            bad_admin,
            no_secret,
            dup_email,
            dup_app,
            not_email,
        ])
        .err()
        .unwrap();
        assert_eq!(
            problems,
            [
                "row 2: is_admin \"maybe\" is not a boolean (1/0, true/false, yes/no)",
                "row 3: no app_secret (empty or missing)",
                "row 3: app_id \"app 3\" holds spaces or characters other than printable ASCII (clients send it as the X-App-ID header)",
                "row 4: email \"A@EXAMPLE.COM\" repeats row 1's",
                "row 5: app_id \"app-2\" repeats row 2's",
                "row 6: email \"nobody\" is not an email address",
            ]
        );
        assert!(!problems.concat().contains("s3cr3t"));
    }
}
