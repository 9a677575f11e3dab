//! The auth function as an API Gateway WebSocket `$connect` REQUEST
//! authorizer: a recorded-shape event (fixture) with a real token in the
//! query string or the `Authorization` header, through [`dispatch`] as the
//! Lambda runtime would call it, with a real JwtVerifier.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use edgepush_auth::{AuthConfig, Claims, JwtVerifier, mint_hs256};
use edgepush_auth_fn::authorizer::{
    EXP_CONTEXT_KEY, SUBSCRIBE_CONTEXT_KEY, USER_ID_CONTEXT_KEY, request_token,
};
use edgepush_auth_fn::{AuthAnswer, AuthEvent, dispatch};
use edgepush_core::{AuthError, Identity, TokenVerifier};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

const SECRET: &[u8] = b"authorizer-test-secret-0123456789";
const FIXTURE: &str = include_str!("fixtures/websocket-connect-authorizer.json");
const METHOD_ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/production/$connect";

fn verifier() -> JwtVerifier {
    JwtVerifier::new(AuthConfig::hs256(SECRET.to_vec())).expect("valid config")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is JSON")
}

/// The fixture with `token` in the query string, as a browser sends it.
fn with_query_token(token: &str) -> Value {
    let mut event = fixture();
    event["queryStringParameters"]["token"] = json!(token);
    event["multiValueQueryStringParameters"]["token"] = json!([token]);
    event
}

/// The fixture with an `Authorization` header, as a native client sends it.
fn with_header(value: &str) -> Value {
    let mut event = fixture();
    event["headers"]["Authorization"] = json!(value);
    event["multiValueHeaders"]["Authorization"] = json!([value]);
    event
}

async fn call_with(verifier: &dyn TokenVerifier, event: Value) -> Value {
    let answer = dispatch(verifier, LambdaEvent::new(event, Context::default()))
        .await
        .expect("a refusal is an answer, not an error");
    assert!(matches!(answer, AuthAnswer::Policy(_)), "{answer:?}");
    serde_json::to_value(answer).expect("serialises")
}

async fn call(event: Value) -> Value {
    call_with(&verifier(), event).await
}

fn token_for(user: &str) -> String {
    mint_hs256(SECRET, &Claims::new(user, Duration::from_secs(300)))
}

/// The single statement of the answer's policy, checked for shape.
fn statement(answer: &Value) -> &Value {
    let document = &answer["policyDocument"];
    assert_eq!(document["Version"], "2012-10-17", "{answer}");
    let statements = document["Statement"].as_array().expect("statements");
    assert_eq!(statements.len(), 1, "{answer}");
    let statement = &statements[0];
    assert_eq!(
        statement["Action"],
        json!(["execute-api:Invoke"]),
        "{answer}"
    );
    assert_eq!(statement["Resource"], json!([METHOD_ARN]), "{answer}");
    statement
}

fn assert_denied(answer: &Value) {
    assert_eq!(statement(answer)["Effect"], "Deny", "{answer}");
    assert!(
        answer["context"].get(USER_ID_CONTEXT_KEY).is_none(),
        "a denial names no user: {answer}"
    );
}

#[test]
fn the_fixture_is_a_request_authorizer_event() {
    match AuthEvent::from_value(fixture()).expect("parses") {
        AuthEvent::Request(request) => {
            assert_eq!(request.type_.as_deref(), Some("REQUEST"));
            assert_eq!(request.method_arn.as_deref(), Some(METHOD_ARN));
            assert_eq!(request.query_string_parameters.first("after"), Some("41"));
            assert_eq!(request_token(&request), None);
        }
        other => panic!("expected a REQUEST event, got {other:?}"),
    }
}

#[test]
fn the_context_keys_are_the_ones_connections_reads() {
    assert_eq!(
        USER_ID_CONTEXT_KEY,
        edgepush_connections::AUTHORIZER_USER_ID_KEY
    );
    assert_eq!(EXP_CONTEXT_KEY, edgepush_connections::AUTHORIZER_EXP_KEY);
    assert_eq!(
        SUBSCRIBE_CONTEXT_KEY,
        edgepush_connections::AUTHORIZER_SUBSCRIBE_KEY
    );
}

#[tokio::test]
async fn query_token_is_allowed_with_the_user_in_the_context() {
    let answer = call(with_query_token(&token_for("alice"))).await;
    assert_eq!(statement(&answer)["Effect"], "Allow", "{answer}");
    assert_eq!(answer["principalId"], "alice");
    let context = answer["context"].as_object().expect("a context object");
    assert_eq!(context.len(), 2, "{answer}");
    assert_eq!(context["userId"], "alice");
    // The token's exp, so connections closes the connection then.
    let exp = context["exp"].as_u64().expect("exp is a number");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    assert!(exp > now && exp <= now + 300, "exp {exp}, now {now}");
}

#[tokio::test]
async fn bearer_header_is_allowed_and_wins_over_the_query() {
    let mut event = with_header(&format!("Bearer {}", token_for("bob")));
    event["queryStringParameters"]["token"] = json!(token_for("mallory"));
    let answer = call(event).await;
    assert_eq!(statement(&answer)["Effect"], "Allow", "{answer}");
    assert_eq!(answer["context"][USER_ID_CONTEXT_KEY], "bob");
    assert_eq!(answer["principalId"], "bob");

    // The header name is case-insensitive, as HTTP says.
    let mut event = fixture();
    event["headers"]["authorization"] = json!(format!("bearer {}", token_for("carol")));
    let answer = call(event).await;
    assert_eq!(answer["context"][USER_ID_CONTEXT_KEY], "carol", "{answer}");
}

#[tokio::test]
async fn expired_token_is_denied() {
    let mut claims = Claims::new("alice", Duration::from_secs(300));
    claims.exp = now() - 3600;
    assert_denied(&call(with_query_token(&mint_hs256(SECRET, &claims))).await);
}

#[tokio::test]
async fn a_subscribe_token_cannot_open_a_connection() {
    let mut claims = Claims::new("alice", Duration::from_secs(300));
    claims.topic = Some("vip:lounge".into());
    assert_denied(&call(with_query_token(&mint_hs256(SECRET, &claims))).await);
}

#[tokio::test]
async fn garbage_and_wrongly_signed_tokens_are_denied() {
    let wrong_secret = mint_hs256(
        b"some-other-secret-0123456789",
        &Claims::new("alice", Duration::from_secs(300)),
    );
    for token in ["garbage-token-value", wrong_secret.as_str()] {
        assert_denied(&call(with_query_token(token)).await);
        assert_denied(&call(with_header(&format!("Bearer {token}"))).await);
    }
}

#[tokio::test]
async fn missing_token_is_denied() {
    // The fixture as recorded: no Authorization header, no ?token=.
    assert_denied(&call(fixture()).await);
    // Empty values and other schemes count as no token.
    assert_denied(&call(with_query_token("")).await);
    assert_denied(&call(with_header("Basic YWxpY2U6c2VjcmV0")).await);
    assert_denied(&call(with_header("Bearer ")).await);
}

#[tokio::test]
async fn an_event_without_method_arn_allows_nothing() {
    let mut event = with_query_token(&token_for("alice"));
    event.as_object_mut().expect("object").remove("methodArn");
    let answer = call(event).await;
    let statement = &answer["policyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Deny", "{answer}");
    assert_eq!(statement["Resource"], json!(["*"]), "{answer}");
}

/// A verifier whose own dependency is down.
struct Down;

#[async_trait]
impl TokenVerifier for Down {
    async fn verify(&self, _token: &str) -> Result<Identity, AuthError> {
        Err(AuthError::Unavailable("jwks endpoint unreachable".into()))
    }
}

#[tokio::test]
async fn an_unavailable_verifier_fails_the_invocation_instead_of_denying() {
    let event = LambdaEvent::new(with_query_token("whatever"), Context::default());
    let err = dispatch(&Down, event)
        .await
        .expect_err("neither Allow nor a cacheable Deny");
    assert!(err.to_string().contains("unavailable"), "{err}");
}

#[tokio::test]
async fn token_authorizer_events_are_answered_too() {
    let event = json!({
        "type": "TOKEN",
        "authorizationToken": format!("Bearer {}", token_for("dave")),
        "methodArn": METHOD_ARN,
    });
    let answer = call(event).await;
    assert_eq!(statement(&answer)["Effect"], "Allow", "{answer}");
    assert_eq!(answer["context"][USER_ID_CONTEXT_KEY], "dave");

    let event = json!({"type": "TOKEN", "authorizationToken": "nope", "methodArn": METHOD_ARN});
    assert_denied(&call(event).await);
}

#[tokio::test]
async fn the_token_contract_still_answers_in_its_own_shape() {
    let token = token_for("erin");
    let answer = dispatch(
        &verifier(),
        LambdaEvent::new(json!({"token": token}), Context::default()),
    )
    .await
    .expect("handler never fails");
    let body = serde_json::to_value(answer).expect("serialises");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["user_id"], "erin", "{body}");

    let answer = dispatch(&verifier(), LambdaEvent::new(json!({}), Context::default()))
        .await
        .expect("handler never fails");
    let body = serde_json::to_value(answer).expect("serialises");
    assert_eq!(body["error"]["code"], "missing", "{body}");

    // A payload that fits no shape is a function error, not a panic.
    let err = dispatch(
        &verifier(),
        LambdaEvent::new(json!({"token": 5}), Context::default()),
    )
    .await;
    assert!(err.is_err());
}
