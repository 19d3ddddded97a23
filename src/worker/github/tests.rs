use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use jsonwebtoken::{DecodingKey, Validation};
use tokio::sync::RwLock;

use super::*;

/// A key made for these tests only (`openssl genrsa -traditional 2048`).
const TEST_KEY: &str = include_str!("../../../tests/fixtures/github-app-test-key.pem");
const TEST_PUB: &str = include_str!("../../../tests/fixtures/github-app-test-key.pub.pem");

fn secret_json(app_id: &str) -> SecretString {
    SecretString::new(
        serde_json::json!({
            "app_id": app_id.parse::<u64>().map(serde_json::Value::from)
                .unwrap_or_else(|_| app_id.into()),
            "installation_id": "4242",
            "private_key": TEST_KEY,
        })
        .to_string(),
    )
}

fn verify(jwt: &str) -> AppClaims {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.validate_exp = false;
    jsonwebtoken::decode::<AppClaims>(
        jwt,
        &DecodingKey::from_rsa_pem(TEST_PUB.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap()
    .claims
}

#[test]
fn the_jwt_is_rs256_with_githubs_window_and_the_app_as_issuer() {
    let secret = AppSecret::parse(&secret_json("12345")).unwrap();
    assert_eq!(secret.app_id, "12345");
    assert_eq!(secret.installation_id, "4242");
    let jwt = app_jwt(&secret, 1_700_000_000).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&jwt).unwrap().alg,
        Algorithm::RS256
    );
    assert_eq!(
        verify(&jwt),
        AppClaims {
            iat: 1_700_000_000 - 60,
            exp: 1_700_000_000 + 540,
            iss: "12345".into()
        }
    );
}

#[test]
fn a_bad_secret_is_reported_without_its_value() {
    let err = AppSecret::parse(&SecretString::new("{\"private_key\": \"SECRET-PEM\"")).unwrap_err();
    assert!(!format!("{err:#}").contains("SECRET-PEM"), "{err:#}");
    let secret = AppSecret::parse(&secret_json("7")).unwrap();
    assert!(!format!("{secret:?}").contains("PRIVATE KEY"));
}

#[test]
fn credentials_are_for_the_git_host() {
    assert_eq!(credential_host("https://github.com"), "github.com");
    assert_eq!(
        credential_host("https://ghe.example.com/base"),
        "ghe.example.com"
    );
    assert_eq!(credential_host("file:///srv/git"), "github.com");
    assert_eq!(credential_host("/srv/git"), "github.com");
}

type Seen = Arc<std::sync::Mutex<Vec<(String, AppClaims)>>>;

async fn access_tokens(
    State(seen): State<Seen>,
    UrlPath(installation): UrlPath<String>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let Some(jwt) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return (StatusCode::UNAUTHORIZED, String::new());
    };
    let claims = verify(jwt);
    let n = {
        let mut seen = seen.lock().unwrap();
        seen.push((installation, claims));
        seen.len()
    };
    (
        StatusCode::CREATED,
        serde_json::json!({"token": format!("ghs_token{n}"), "expires_at": "2030-01-01T00:00:00Z"})
            .to_string(),
    )
}

#[tokio::test]
async fn a_refresh_mints_a_token_and_rewrites_the_agents_credentials() {
    let seen = Seen::default();
    let app = Router::new()
        .route("/app/installations/{id}/access_tokens", post(access_tokens))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let home = tempfile::tempdir().unwrap();
    let files = CredentialFiles {
        home: home.path().to_path_buf(),
        host: "github.com".into(),
        owner: None,
    };
    let minter = TokenMinter::new(
        reqwest::Client::new(),
        &base,
        AppSecret::parse(&secret_json("99")).unwrap(),
    );
    let shared: SharedToken = Arc::new(RwLock::new(SecretString::new("old")));
    refresh(&minter, &files, &shared, 1_000).await.unwrap();
    refresh(&minter, &files, &shared, 4_000).await.unwrap();

    assert_eq!(shared.read().await.expose(), "ghs_token2");
    assert_eq!(
        std::fs::read_to_string(files.git_credentials()).unwrap(),
        "https://x-access-token:ghs_token2@github.com\n"
    );
    let hosts = std::fs::read_to_string(files.gh_hosts()).unwrap();
    assert!(hosts.contains("oauth_token: ghs_token2"), "{hosts}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "4242");
    assert_eq!(seen[1].1.iat, 4_000 - 60);
    assert_eq!(seen[1].1.iss, "99");
}
