//! RemoteVerifier against a real local HTTP server that runs the auth
//! function's handler at the Lambda Invoke API path, plus servers that
//! misbehave (slow, failing, answering nonsense).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use edgepush_auth::{AuthConfig, Claims, JwtVerifier, RemoteVerifier, mint_hs256};
use edgepush_auth_fn::{AuthRequest, AuthResponse, handler};
use edgepush_core::{AuthError, TokenVerifier};
use lambda_runtime::{Context, LambdaEvent};
use tokio::net::TcpListener;

const SECRET: &[u8] = b"remote-test-secret-0123456789";
const INVOKE_PATH: &str = "/2015-03-31/functions/auth/invocations";

async fn invoke(
    State(verifier): State<Arc<JwtVerifier>>,
    Json(request): Json<AuthRequest>,
) -> Result<Json<AuthResponse>, StatusCode> {
    let event = LambdaEvent::new(request, Context::default());
    handler(verifier.as_ref(), event)
        .await
        .map(Json)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "{}"
}

async fn failing() -> impl IntoResponse {
    (StatusCode::INTERNAL_SERVER_ERROR, "boom")
}

async fn function_error() -> impl IntoResponse {
    (
        [("x-amz-function-error", "Unhandled")],
        r#"{"errorType":"Panic","errorMessage":"oops"}"#,
    )
}

async fn nonsense() -> &'static str {
    r#"{"ok":true}"#
}

/// Serves the handler and the misbehaving routes on 127.0.0.1, port 0.
async fn serve() -> anyhow::Result<SocketAddr> {
    let verifier = Arc::new(JwtVerifier::new(AuthConfig::hs256(SECRET.to_vec()))?);
    let app = Router::new()
        .route(INVOKE_PATH, post(invoke))
        .route("/slow", post(slow))
        .route("/failing", post(failing))
        .route("/function-error", post(function_error))
        .route("/nonsense", post(nonsense))
        .with_state(verifier);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            panic!("test server failed: {e}");
        }
    });
    Ok(addr)
}

fn remote(addr: SocketAddr, path: &str) -> RemoteVerifier {
    RemoteVerifier::new(&format!("http://{addr}{path}"), Duration::from_secs(2)).expect("valid URL")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test]
async fn remote_verifier_accepts_a_valid_token() -> anyhow::Result<()> {
    let addr = serve().await?;
    let claims = Claims::new("alice", Duration::from_secs(300));
    let identity = remote(addr, INVOKE_PATH)
        .verify(&mint_hs256(SECRET, &claims))
        .await?;
    assert_eq!(identity.user_id.as_str(), "alice");
    assert_eq!(identity.expires_at, Some(claims.exp));
    Ok(())
}

#[tokio::test]
async fn remote_verifier_maps_refusals() -> anyhow::Result<()> {
    let addr = serve().await?;
    let verifier = remote(addr, INVOKE_PATH);

    let mut expired = Claims::new("alice", Duration::from_secs(300));
    expired.exp = now() - 3600;
    assert_eq!(
        verifier.verify(&mint_hs256(SECRET, &expired)).await,
        Err(AuthError::Expired)
    );

    let mut early = Claims::new("alice", Duration::from_secs(300));
    early.nbf = Some(now() + 600);
    assert_eq!(
        verifier.verify(&mint_hs256(SECRET, &early)).await,
        Err(AuthError::NotYetValid)
    );

    let forged = mint_hs256(
        b"not-the-server-secret-012345",
        &Claims::new("alice", Duration::from_secs(300)),
    );
    match verifier.verify(&forged).await {
        Err(AuthError::Invalid(reason)) => assert!(reason.contains("signature"), "{reason}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(matches!(
        verifier.verify("garbage").await,
        Err(AuthError::Invalid(_))
    ));
    assert_eq!(verifier.verify("").await, Err(AuthError::Missing));
    Ok(())
}

#[tokio::test]
async fn timeout_is_unavailable() -> anyhow::Result<()> {
    let addr = serve().await?;
    let verifier = RemoteVerifier::new(&format!("http://{addr}/slow"), Duration::from_millis(200))?;
    match verifier.verify("a.b.c").await {
        Err(AuthError::Unavailable(reason)) => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn server_failures_are_unavailable() -> anyhow::Result<()> {
    let addr = serve().await?;
    for (path, needle) in [
        ("/failing", "500"),
        ("/function-error", "Unhandled"),
        ("/nonsense", "unreadable"),
        ("/no-such-route", "404"),
    ] {
        match remote(addr, path).verify("a.b.c").await {
            Err(AuthError::Unavailable(reason)) => {
                assert!(reason.contains(needle), "{path}: {reason}")
            }
            other => panic!("{path}: expected Unavailable, got {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn unreachable_server_is_unavailable() -> anyhow::Result<()> {
    // Bind then drop, so the port is (almost certainly) closed.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        listener.local_addr()?
    };
    assert!(matches!(
        remote(addr, INVOKE_PATH).verify("a.b.c").await,
        Err(AuthError::Unavailable(_))
    ));
    Ok(())
}

#[test]
fn bad_urls_are_config_errors() {
    assert!(RemoteVerifier::new("not a url", Duration::from_secs(1)).is_err());
    assert!(RemoteVerifier::new("ftp://127.0.0.1/x", Duration::from_secs(1)).is_err());
}
