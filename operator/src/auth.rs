//! Who may open the snapshot stream. Every snapshot carries resolved
//! secrets (bind passwords, users' credentials), so only a proxy pod of
//! this release gets one: the pod sends its projected ServiceAccount token
//! (with the audience of this server) as `authorization: Bearer …`; the
//! operator asks the API server about it (TokenReview) and accepts it only
//! when it is valid for that audience, belongs to the proxies'
//! ServiceAccount and is bound to a pod, whose name the pod's `Hello` must
//! then carry. Anything else is refused with UNAUTHENTICATED before a
//! snapshot is sent. Tokens are never logged.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The `extra` key of a reviewed token naming the pod it is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// The checks of the snapshot stream's callers.
#[derive(Clone)]
pub struct ProxyAuth {
    reviews: kube::Api<TokenReview>,
    audience: String,
    username: String,
}

impl std::fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyAuth")
            .field("audience", &self.audience)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A caller whose token passed the review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The pod the token is bound to.
    pub pod: String,
}

impl ProxyAuth {
    /// Accepts tokens of ServiceAccount `service_account` in `namespace`
    /// issued for `audience`, reviewed through `client`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        service_account: &str,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            reviews: kube::Api::all(client),
            audience: audience.into(),
            username: format!("system:serviceaccount:{namespace}:{service_account}"),
        }
    }

    /// The caller of a request with `metadata`, or the status refusing it:
    /// UNAUTHENTICATED for a missing, invalid or foreign token, UNAVAILABLE
    /// when the API server cannot review it.
    pub async fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                refused(
                    "a proxy ServiceAccount token (Bearer) is required",
                    "no authorization metadata",
                )
            })?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let reviewed = self
            .reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "TokenReview failed");
                Status::unavailable("cannot review the token now")
            })?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(refused(
                "invalid token",
                status.error.as_deref().unwrap_or("not authenticated"),
            ));
        }
        if !status
            .audiences
            .as_ref()
            .is_none_or(|a| a.contains(&self.audience))
        {
            return Err(refused("invalid token", "issued for another audience"));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username != self.username {
            return Err(refused(
                "the token is not the proxies' ServiceAccount's",
                &username,
            ));
        }
        let pod = user
            .extra
            .as_ref()
            .and_then(|e| e.get(POD_NAME_EXTRA))
            .and_then(|p| p.first())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| refused("the token is not bound to a pod", &username))?;
        Ok(Caller { pod: pod.clone() })
    }
}

impl Caller {
    /// Refuses a `Hello` naming another pod than the token's.
    pub fn check_hello(&self, hello_pod: &str) -> Result<(), Status> {
        if hello_pod == self.pod {
            Ok(())
        } else {
            Err(refused(
                "Hello.pod is not the pod the token is bound to",
                &format!("token pod {}, Hello pod {hello_pod}", self.pod),
            ))
        }
    }
}

/// UNAUTHENTICATED with `what` for the caller; `detail` only in the log.
fn refused(what: &'static str, detail: &str) -> Status {
    tracing::warn!(reason = what, detail, "snapshot stream refused");
    Status::unauthenticated(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, StatusCode};
    use smsgw_leases::testing::{expect, mock_client};

    fn review(authenticated: bool, username: &str, pod: Option<&str>) -> serde_json::Value {
        let mut user = serde_json::json!({"username": username});
        if let Some(p) = pod {
            user["extra"] = serde_json::json!({POD_NAME_EXTRA: [p]});
        }
        serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {},
            "status": {"authenticated": authenticated, "audiences": ["smsgw-config"], "user": user}
        })
    }

    fn bearer(token: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert("authorization", format!("Bearer {token}").parse().unwrap());
        md
    }

    const PROXY: &str = "system:serviceaccount:smsgw:smsgw-proxy";

    #[tokio::test]
    async fn a_proxy_token_bound_to_a_pod_is_accepted_for_that_pod_only() {
        let (client, mut api) = mock_client();
        let auth = ProxyAuth::new(client, "smsgw", "smsgw-proxy", "smsgw-config");
        let server = tokio::spawn(async move {
            let sent = expect(
                &mut api,
                Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews",
                StatusCode::CREATED,
                review(true, PROXY, Some("smsgw-proxy-abc")),
            )
            .await;
            assert_eq!(sent["spec"]["token"], "tok-1");
            assert_eq!(
                sent["spec"]["audiences"],
                serde_json::json!(["smsgw-config"])
            );
        });
        let caller = auth.caller(&bearer("tok-1")).await.unwrap();
        server.await.unwrap();
        assert_eq!(caller.pod, "smsgw-proxy-abc");
        assert!(caller.check_hello("smsgw-proxy-abc").is_ok());
        let err = caller.check_hello("smsgw-proxy-other").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn missing_invalid_foreign_and_unbound_tokens_are_unauthenticated() {
        let (client, mut api) = mock_client();
        let auth = ProxyAuth::new(client, "smsgw", "smsgw-proxy", "smsgw-config");
        // No token: refused without asking the API server.
        let err = auth.caller(&MetadataMap::new()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let answers = [
            review(false, "", None),
            review(true, "system:serviceaccount:smsgw:default", Some("p")),
            review(true, PROXY, None),
        ];
        let server = tokio::spawn(async move {
            for a in answers {
                expect(
                    &mut api,
                    Method::POST,
                    "/apis/authentication.k8s.io/v1/tokenreviews",
                    StatusCode::CREATED,
                    a,
                )
                .await;
            }
            api
        });
        for want in [
            "invalid token",
            "the token is not the proxies' ServiceAccount's",
            "the token is not bound to a pod",
        ] {
            let err = auth.caller(&bearer("t")).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert_eq!(err.message(), want);
        }
        let mut api = server.await.unwrap();
        // The API server failing is not the caller's fault.
        let server = tokio::spawn(async move {
            expect(
                &mut api,
                Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews",
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "boom", "reason": "InternalError"}),
            )
            .await;
        });
        let err = auth.caller(&bearer("t")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        server.await.unwrap();
    }
}
