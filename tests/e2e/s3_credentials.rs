//! S3 through the AWS SDK's standard credential chain (issue 20): without
//! `--s3-access-key`, the gateway's journal reaches a real S3-compatible
//! server with credentials from the `AWS_*` environment, or from a shared
//! credentials file (profiles); with none anywhere it says so and keeps
//! the journal spilled instead of failing.

use crate::harness::{ADMIN_KEY, EXAMPLE_CONFIG, Gateway, eventually};
use smsgw_archive::ObjectStore;
use smsgw_archive::testing::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};
use std::time::Duration;

/// A gateway journaling statistics every second to `s3` under `prefix`,
/// its S3 credentials only from `env`.
fn journaling(s3: &S3Server, prefix: &str, env: &[(&str, &str)]) -> Gateway {
    let endpoint = format!("http://{}", s3.addr);
    let mut all = vec![
        ("ADMIN_API_KEY", ADMIN_KEY),
        // Nothing from the machine running the tests: only what `env`
        // gives (empty values count as unset), and never the instance
        // metadata service (loopback only here).
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_SESSION_TOKEN", ""),
        ("AWS_PROFILE", ""),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ("AWS_CONFIG_FILE", "/nonexistent/config"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", ""),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", ""),
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", ""),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    all.extend_from_slice(env);
    Gateway::spawn(
        EXAMPLE_CONFIG,
        &all,
        &[
            "--s3-endpoint",
            &endpoint,
            "--s3-max-attempts",
            "2",
            "--journal-bucket",
            BUCKET,
            "--journal-prefix",
            prefix,
            "--journal-stats-interval",
            "1s",
            "--journal-batch-age",
            "1s",
        ],
    )
}

async fn objects_under(s3: &S3Server, prefix: &str) -> usize {
    s3.store().list(prefix).await.unwrap().len()
}

#[tokio::test]
async fn the_journal_reaches_s3_with_keys_from_the_aws_environment() {
    let s3 = S3Server::start().await;
    let gw = journaling(
        &s3,
        "env",
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    );
    let up = eventually(Duration::from_secs(20), async || {
        objects_under(&s3, "env/").await > 0
    })
    .await;
    assert!(up.is_some(), "nothing journaled: {}", gw.logs());
    assert!(!gw.logs().contains(SECRET_KEY), "the secret key was logged");
}

#[tokio::test]
async fn the_journal_reaches_s3_with_keys_from_a_profile_in_the_credentials_file() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n\
             [journal]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    let gw = journaling(
        &s3,
        "profile",
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
            ("AWS_PROFILE", "journal"),
        ],
    );
    let up = eventually(Duration::from_secs(20), async || {
        objects_under(&s3, "profile/").await > 0
    })
    .await;
    assert!(up.is_some(), "nothing journaled: {}", gw.logs());
}

#[tokio::test]
async fn without_credentials_anywhere_the_journal_waits_and_says_why() {
    let s3 = S3Server::start().await;
    let gw = journaling(&s3, "none", &[]);
    let said = eventually(Duration::from_secs(20), async || {
        let logs = gw.logs();
        logs.contains("journal") && logs.contains("credentials")
    })
    .await;
    assert!(said.is_some(), "no reason logged: {}", gw.logs());
    assert_eq!(objects_under(&s3, "none/").await, 0);
    let m = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("smsgw_journal_s3_up 0"), "{m}");
}
