//! The snapshot server over real loopback gRPC, its hub fed directly (no
//! Kubernetes): pods get the current version at once and every new one,
//! their bind slots, and their acks and rejections are recorded.

use smsgw_crds::Resource;
use smsgw_operator::hub::{Hub, compile_best_effort};
use smsgw_operator::server::SnapshotServer;
use smsgw_proto::config::v1 as pb;
use smsgw_proto::config::v1::config_service_client::ConfigServiceClient;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const EXAMPLE: &str = include_str!("../../examples/standalone.yaml");

fn resources(yaml: &str) -> Vec<Resource> {
    smsgw_crds::parse_manifests(yaml)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

async fn serve(hub: Hub) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SnapshotServer::new(hub).into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

struct Pod {
    tx: mpsc::Sender<pb::PodMessage>,
    rx: tonic::Streaming<pb::Snapshot>,
}

impl Pod {
    async fn connect(url: &str, name: &str, held: &str) -> Pod {
        let mut client = ConfigServiceClient::connect(url.to_owned()).await.unwrap();
        let (tx, out) = mpsc::channel(4);
        tx.send(pb::PodMessage {
            msg: Some(pb::pod_message::Msg::Hello(pb::Hello {
                pod: name.into(),
                version: held.into(),
            })),
        })
        .await
        .unwrap();
        let rx = client
            .watch(ReceiverStream::new(out))
            .await
            .unwrap()
            .into_inner();
        Pod { tx, rx }
    }

    async fn next(&mut self) -> pb::Snapshot {
        tokio::time::timeout(Duration::from_secs(5), self.rx.next())
            .await
            .expect("a snapshot within 5s")
            .unwrap()
            .unwrap()
    }

    async fn ack(&self, version: &str, applied: bool, error: &str, resource: &str) {
        self.tx
            .send(pb::PodMessage {
                msg: Some(pb::pod_message::Msg::Ack(pb::Ack {
                    version: version.into(),
                    applied,
                    error: error.into(),
                    resource: resource.into(),
                })),
            })
            .await
            .unwrap();
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn pods_get_the_current_snapshot_then_each_new_version_and_their_acks_are_recorded() {
    let (hub, mut rejections) = Hub::new();
    hub.replace_kind(
        "SmppLink",
        resources(EXAMPLE)
            .into_iter()
            .filter(|r| r.kind() == "SmppLink")
            .collect(),
    );
    let url = serve(hub.clone()).await;

    let mut pod = Pod::connect(&url, "proxy-0", "").await;
    let first = pod.next().await;
    let snap: smsgw_crds::Snapshot = serde_json::from_slice(&first.snapshot_json).unwrap();
    assert_eq!(snap.version, first.version);
    assert!(snap.links.contains_key("local-sim"));
    assert_eq!(snap.links["local-sim"].password.as_deref(), Some("secret"));
    pod.ack(&first.version, true, "", "").await;
    eventually("the ack", || {
        hub.acks().get("proxy-0").is_some_and(|a| a.applied)
    })
    .await;

    // A new resource: a new version goes out at once.
    for r in resources(EXAMPLE) {
        hub.upsert(r);
    }
    let second = pod.next().await;
    assert_ne!(second.version, first.version);
    let snap: smsgw_crds::Snapshot = serde_json::from_slice(&second.snapshot_json).unwrap();
    assert!(snap.pools.contains_key("default") && snap.policies.contains_key("cp1"));

    // A rejection is recorded and handed to the status writer.
    pod.ack(
        &second.version,
        false,
        "bad policy",
        "ContactPolicy/default/cp1",
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(5), rejections.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.pod.as_str(), r.ack.resource.as_str()),
        ("proxy-0", "ContactPolicy/default/cp1")
    );
    assert!(!hub.acks()["proxy-0"].applied);
}

#[tokio::test]
async fn bind_slots_are_spread_over_ready_pods_and_follow_them() {
    let (hub, _r) = Hub::new();
    for r in resources(EXAMPLE) {
        hub.upsert(r); // local-sim has sessions: 2
    }
    let url = serve(hub.clone()).await;
    let mut a = Pod::connect(&url, "proxy-a", "").await;
    let mut b = Pod::connect(&url, "proxy-b", "").await;
    assert!(
        a.next().await.bind_slots.is_empty(),
        "not ready yet: no slots"
    );
    b.next().await;

    hub.set_ready_pods(["proxy-a".to_owned(), "proxy-b".to_owned()].into());
    let (sa, sb) = (a.next().await, b.next().await);
    assert_eq!(sa.bind_slots["local-sim"].slots.len(), 1);
    assert_eq!(sb.bind_slots["local-sim"].slots.len(), 1);
    assert_ne!(
        sa.bind_slots["local-sim"].slots,
        sb.bind_slots["local-sim"].slots
    );

    // proxy-b goes away: proxy-a holds both slots.
    hub.set_ready_pods(["proxy-a".to_owned()].into());
    assert_eq!(a.next().await.bind_slots["local-sim"].slots, [0, 1]);
    assert!(b.next().await.bind_slots.is_empty());
}

#[tokio::test]
async fn a_pod_reconnecting_with_the_current_version_is_not_sent_it_again() {
    let (hub, _r) = Hub::new();
    for r in resources(EXAMPLE) {
        hub.upsert(r);
    }
    let version = hub.current().snapshot.as_ref().unwrap().version.clone();
    let url = serve(hub.clone()).await;
    let mut pod = Pod::connect(&url, "proxy-0", &version).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), pod.rx.next())
            .await
            .is_err(),
        "nothing to send"
    );
    hub.remove("ContactPolicy", "cp1");
    assert_ne!(pod.next().await.version, version);
}

#[tokio::test]
async fn one_invalid_resource_is_left_out_and_reported_while_the_rest_compiles() {
    let mut all = resources(EXAMPLE);
    // A pool naming a link that does not exist.
    all.extend(resources(
        "apiVersion: smsgw.io/v1alpha1\nkind: EsmePool\nmetadata: {name: broken}\nspec: {members: [{link: ghost}]}\n",
    ));
    let (snap, errors) = compile_best_effort(all);
    assert!(snap.links.contains_key("local-sim") && snap.pools.contains_key("default"));
    assert!(!snap.pools.contains_key("broken"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].name.as_deref(), Some("broken"));
    assert_eq!(errors[0].field, "spec.members[0].link");
}

#[tokio::test]
async fn a_strategy_name_two_policies_declare_stays_with_the_first_and_the_other_is_reported() {
    let (hub, _r) = Hub::new();
    // Name order decides in a cluster, whatever order the resources came
    // in: "a-onbuild" keeps the name; "z-onbuild", declaring it too, is
    // left out with the error its status shows.
    for r in resources(EXAMPLE).into_iter().chain(resources(
        "apiVersion: smsgw.io/v1alpha1\nkind: ContactPolicy\nmetadata: {name: z-onbuild}\nspec: {frequency: {daily: 2}, strategies: [own_name, onbuild_x]}\n---\napiVersion: smsgw.io/v1alpha1\nkind: ContactPolicy\nmetadata: {name: a-onbuild}\nspec: {frequency: {daily: 1}, strategies: [onbuild_x]}\n",
    )) {
        hub.upsert(r);
    }
    let snap = hub.current().snapshot.clone().unwrap();
    let errors = hub.compile_errors();
    assert_eq!(snap.policies["a-onbuild"].strategies, ["onbuild_x"]);
    assert!(!snap.policies.contains_key("z-onbuild"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].name.as_deref(), errors[0].field.as_str()),
        (Some("z-onbuild"), "spec.strategies[1]")
    );
    assert!(errors[0].reason.contains("\"a-onbuild\""), "{errors:?}");
}

#[tokio::test]
async fn a_resource_breaking_a_field_rule_is_refused_like_standalone_does() {
    let mut all = resources(EXAMPLE);
    if let Resource::SmppLink(m) = &mut all[0] {
        m.spec.sessions = 0;
    }
    let (snap, errors) = compile_best_effort(all);
    assert!(!snap.links.contains_key("local-sim"));
    // The pool that named it goes too, with its own error, and so does
    // the (default) route to that pool.
    assert!(!snap.pools.contains_key("default"));
    assert!(!snap.routes.contains_key("default"));
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.sessions", "spec.members[0].link", "spec.target"]
    );
}

/// Only the secrets a proxy needs travel: links' bind passwords (any pod
/// may be handed any link's bind slot), and users' passwords and app
/// secrets only as argon2id hashes.
#[tokio::test]
async fn the_stream_carries_hashes_of_user_passwords_and_app_secrets_not_the_secrets() {
    let users = "---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {name: bob}\nspec: {email: bob@example.com, appName: b, passwordSecretRef: {name: bob-login, key: password}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: bob-login}\nstringData: {password: bob login password}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: bob-credentials}\nstringData: {appId: app-bob, appSecret: bobs app secret 0123456789}\n";
    let (hub, _rejections) = Hub::new();
    for r in resources(&format!("{EXAMPLE}{users}")) {
        hub.upsert(r);
    }
    let url = serve(hub.clone()).await;
    let mut pod = Pod::connect(&url, "proxy-0", "").await;
    let msg = pod.next().await;
    let json = String::from_utf8(msg.snapshot_json.clone()).unwrap();
    for secret in ["bob login password", "bobs app secret 0123456789"] {
        assert!(!json.contains(secret), "{secret:?} travels: {json}");
    }
    let snap: smsgw_crds::Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(snap.links["local-sim"].password.as_deref(), Some("secret"));
    assert_eq!(snap.users["bob"].password, None);
    assert!(snap.password_hashes["bob"].starts_with("$argon2id$"));
    let creds = &snap.app_credentials["bob"];
    assert_eq!(creds.app_id, "app-bob");
    assert!(creds.app_secret.is_empty());
    assert!(
        creds
            .app_secret_hash
            .as_deref()
            .unwrap()
            .starts_with("$argon2id$")
    );
    assert_eq!(snap.version, msg.version);
}
