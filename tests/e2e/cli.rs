//! The admin command line (`smsgw send|message|links|users`) against a
//! running gateway and the SMSC simulator, over gRPC.

use crate::harness::{ADMIN_KEY, Gateway, Sim, bound, cli, eventually, sim_config};
use std::time::Duration;

#[tokio::test]
async fn the_cli_sends_looks_up_lists_links_and_manages_users() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("cli@example.com").await;
    bound(&gw, &creds).await;
    let token = [
        ("SMSGW_TOKEN", creds.token.as_str()),
        ("SMSGW_APP_ID", creds.app_id.as_str()),
    ];
    let admin = [("ADMIN_API_KEY", ADMIN_KEY)];

    // Send with the user's token.
    let sent = cli(
        &gw,
        &[
            "send",
            "--to",
            "+4915112340000",
            "--from",
            "SMSGW",
            "--text",
            "hello from the cli",
            "--transaction-id",
            "cli-tx-1",
            "--output",
            "json",
        ],
        &token,
    )
    .json();
    assert_eq!(sent["success"], true, "{sent}");
    assert_eq!(sent["status"], "accepted");
    let id = sent["message_id"].as_str().unwrap().to_owned();

    // Look it up by transaction id (token) until delivered, then by id with
    // the admin key, as a table.
    let mut last = serde_json::Value::Null;
    let delivered = eventually(Duration::from_secs(10), async || {
        last = cli(
            &gw,
            &["message", "--transaction-id", "cli-tx-1", "-o", "json"],
            &token,
        )
        .json();
        last["status"] == "delivered"
    })
    .await;
    assert!(delivered.is_some(), "never delivered: {last}");
    assert_eq!(last["message_id"], id.as_str());
    assert_eq!(last["link"], "sim-link");
    assert_eq!(last["segments"][0]["receipt_state"], "DELIVRD");
    let table = cli(&gw, &["message", &id], &admin);
    assert!(table.status.success(), "{}", table.stderr);
    assert!(
        table.stdout.contains("status          delivered")
            && table.stdout.contains("SEQ  SUBMIT    RECEIPT"),
        "{}",
        table.stdout
    );

    // Links: a table by default, with the admin key and with a token.
    for env in [&admin[..], &token[..]] {
        let links = cli(&gw, &["links"], env);
        assert!(links.status.success(), "{}", links.stderr);
        let mut lines = links.stdout.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("NAME      STATE  SESSIONS")
        );
        assert!(
            lines.next().unwrap().starts_with("sim-link  bound  2/2"),
            "{}",
            links.stdout
        );
    }
    let links = cli(&gw, &["links", "-o", "json"], &admin).json();
    assert_eq!(links[0]["sessions_bound"], 2, "{links}");

    // Users: create an admin, list, revoke, delete.
    let created = cli(
        &gw,
        &[
            "users",
            "create",
            "--email",
            "ops@example.com",
            "--app-name",
            "ops",
            "--admin",
            "-o",
            "json",
        ],
        &[admin[0], ("SMSGW_USER_PASSWORD", "cli password 123")],
    )
    .json();
    let user = created["user_id"].as_str().unwrap().to_owned();
    assert!(!created["app_secret"].as_str().unwrap().is_empty());
    let list = cli(&gw, &["users", "list"], &admin);
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains("ops@example.com"))
        .unwrap_or_else(|| panic!("{}", list.stdout));
    assert!(row.starts_with(&user) && row.contains(" true "), "{row}");
    assert!(list.stdout.contains("cli@example.com"));
    let revoked = cli(
        &gw,
        &["users", "set-admin", &user, "--revoke", "-o", "json"],
        &admin,
    )
    .json();
    assert_eq!(revoked["admin"], false);
    let deleted = cli(&gw, &["users", "delete", &user], &admin);
    assert_eq!(
        deleted.stdout,
        format!("deleted {user}\n"),
        "{}",
        deleted.stderr
    );

    // Refusals: the gRPC code and message, non-zero exit.
    let gone = cli(&gw, &["users", "get", &user], &admin);
    assert!(!gone.status.success());
    assert!(gone.stderr.contains("NotFound (5)"), "{}", gone.stderr);
    let denied = cli(&gw, &["users", "list"], &token);
    assert!(!denied.status.success());
    assert!(
        denied.stderr.contains("PermissionDenied (7)"),
        "{}",
        denied.stderr
    );
    let bad = cli(
        &gw,
        &["send", "--to", "12", "--from", "SMSGW", "--text", "x"],
        &token,
    );
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("InvalidArgument (3)") && bad.stderr.contains("destination"),
        "{}",
        bad.stderr
    );
    let anonymous = cli(&gw, &["links"], &[]);
    assert!(!anonymous.status.success());
    assert!(
        anonymous.stderr.contains("no credentials"),
        "{}",
        anonymous.stderr
    );
    // The secrets given to the commands never show in their output.
    assert!(!table.stdout.contains(ADMIN_KEY) && !list.stdout.contains(&creds.token));
}

/// `smsgw bench` against `gw`'s link `sim-link` with `concurrency`
/// streams; the caller adds the run's own flags.
fn bench_command(gw: &Gateway, concurrency: usize) -> std::process::Command {
    let mut c = std::process::Command::new(crate::harness::SMSGW);
    c.args(["bench", "--rest", &gw.url(""), "--grpc"])
        .arg(format!("http://{}", gw.grpc))
        .args(["--esme", "sim-link", "--concurrency"])
        .arg(concurrency.to_string())
        .env_remove("ADMIN_API_KEY");
    c
}

/// `smsgw bench` (issue 5's load tool): flat out over the gRPC stream until
/// every receipt is applied, then REST at a fixed rate with a latency log.
#[tokio::test]
async fn the_load_tool_drives_the_stream_and_rest_and_counts_receipts() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    // Any user to see the link bound; the tool registers its own.
    let creds = gw.user("bench-watcher@example.com").await;
    bound(&gw, &creds).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("latency.txt");
    let bench = |extra: &[&str]| {
        let out = bench_command(&gw, 4).args(extra).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };

    let out = bench(&["--count", "300", "--wait-receipts"]);
    assert!(out.contains("mode GrpcStream: 300 sent, 0 failed"), "{out}");
    assert!(out.contains("accept latency: p50"), "{out}");
    assert!(out.contains("stolen by the hypervisor"), "{out}");
    assert!(out.contains("delivered (receipt applied): 300 in"), "{out}");

    // 200 at 400/s: the last leaves about 500 ms after the first.
    let out = bench(&[
        "--mode",
        "rest",
        "--count",
        "200",
        "--rate",
        "400",
        "--latency-log",
        log.to_str().unwrap(),
        "--warmup",
        "250ms",
    ]);
    assert!(out.contains("mode Rest: 200 sent, 0 failed"), "{out}");
    // Sends 0..=99 are due in the first 250 ms: about 100 are left out
    // (fewer or more when a loaded machine is slow to send on time: CI's
    // 2-core VM saw 69, a machine at load 12 saw 4). Some, and not all, is
    // what the flag promises.
    let left_out: usize = out
        .split("leaves out the first 250.00ms: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no warm-up line: {out}"));
    assert!((1..200).contains(&left_out), "{out}");
    let lines: Vec<(f64, f64)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let (at, took) = l.split_once(' ').unwrap();
            (at.parse().unwrap(), took.parse().unwrap())
        })
        .collect();
    assert_eq!(lines.len(), 200);
    assert!(
        lines.windows(2).all(|w| w[0].0 <= w[1].0),
        "sorted by send time"
    );
    assert!(lines.iter().all(|&(_, took)| took > 0.0));
    // Nominally 497.5 ms; sends due while the machine was busy go out late
    // and the schedule catches up, so a loaded CI machine saw 434 ms.
    let spread = lines[199].0 - lines[0].0;
    assert!(
        spread >= 350.0,
        "paced at 400/s, the sends spread over only {spread} ms"
    );
}

/// `smsgw bench --duration … --soak-csv` (issue 22's soak mode): a few
/// seconds at a fixed rate against the real binary write a well-formed CSV,
/// one row per sample, with the gateway's memory and the load's counters.
#[tokio::test]
async fn the_soak_mode_samples_the_gateway_into_a_csv() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("soak-watcher@example.com").await;
    bound(&gw, &creds).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("soak.csv");
    let out = std::process::Command::new(crate::harness::SMSGW)
        .args(["bench", "--rest", &gw.url(""), "--grpc"])
        .arg(format!("http://{}", gw.grpc))
        .args(["--esme", "sim-link", "--concurrency", "2", "--rate", "100"])
        .args([
            "--duration",
            "4s",
            "--sample-every",
            "1s",
            "--wait-receipts",
        ])
        .arg("--soak-csv")
        .arg(&csv)
        .args(["--gateway-pid", &gw.pid().to_string()])
        .env_remove("ADMIN_API_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("soak samples written to"), "{stdout}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "elapsed_s",
            "rss_kib",
            "cpu_percent",
            "sent_per_s",
            "accepted_per_s",
            "delivered_per_s",
            "sent_total",
            "accepted_total",
            "delivered_total",
            "failed_total",
            "data_dir_bytes",
            "rss_anon_kib",
            "rss_file_kib",
            "threads"
        ]
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    // One a second for about 4 s, and one at the end.
    assert!(rows.len() >= 4, "{text}");
    let num = |r: &Vec<String>, i: usize| -> f64 {
        r[i].parse()
            .unwrap_or_else(|_| panic!("column {} not a number: {text}", header[i]))
    };
    for r in &rows {
        assert_eq!(r.len(), header.len(), "{text}");
        assert!(num(r, 1) > 1024.0, "an RSS in KiB: {text}");
        assert!(num(r, 2) >= 0.0);
        assert_eq!(r[10], "", "no --data-dir given: {text}");
        assert!(num(r, 11) > 1024.0, "an anonymous RSS in KiB: {text}");
        assert!(num(r, 11) <= num(r, 1), "part of the RSS: {text}");
        assert!(num(r, 13) >= 2.0, "a tokio gateway has threads: {text}");
    }
    assert!(
        rows.windows(2).all(|w| num(&w[0], 0) < num(&w[1], 0)),
        "{text}"
    );
    assert!(
        rows.windows(2).all(|w| num(&w[0], 7) <= num(&w[1], 7)),
        "totals only grow: {text}"
    );
    let last = rows.last().unwrap();
    // 100/s for 4 s: 400 sent, every one accepted and delivered (the last
    // sample is taken after the receipts).
    assert_eq!(num(last, 6), 400.0, "{text}");
    assert_eq!(num(last, 7), 400.0, "{text}");
    assert_eq!(num(last, 8), 400.0, "{text}");
    assert_eq!(num(last, 9), 0.0, "{text}");
    assert!(
        stdout.contains("mode GrpcStream: 400 sent, 0 failed"),
        "{stdout}"
    );
}
