//! Who may talk to the ledger: TLS, client certificates, tokens and roles, SIGHUP reloads, and
//! the refusal to serve a public address unprotected — against the real binary.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use converge_api::{AppendRequest, GetRequest, LedgerApi, LedgerError};
use converge_client::{Client, ClientConfig, ClientTls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::node::{BIN, Node};

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, as PEM
/// files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki(dir: &Path) -> Pki {
    let authority = ca("converge test CA");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &authority)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["engine-1".to_string()])
        .unwrap()
        .signed_by(&client_key, &authority)
        .unwrap();
    Pki {
        ca: write("ca.pem", authority.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        other_ca: write("other-ca.pem", ca("someone else").pem()),
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

async fn tls_client(
    node: &Node,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    token: Option<&str>,
) -> Result<Client, LedgerError> {
    let mut config = ClientConfig::new(format!("https://{}", node.grpc));
    config.tls = Some(ClientTls {
        ca_pem: std::fs::read(ca).unwrap(),
        identity: identity.map(|(c, k)| (std::fs::read(c).unwrap(), std::fs::read(k).unwrap())),
        domain: None,
    });
    config.token = token.map(str::to_string);
    let client = Client::connect_with(config).await?;
    // The handshake may complete lazily: make one call to be sure.
    client.tree_head("probe").await?;
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let node = Node::start(
        &dir.path().join("data"),
        &["--tls-cert", s(&pki.server_cert), "--tls-key", s(&pki.server_key)],
    );
    let client = tls_client(&node, &pki.ca, None, None).await.expect("TLS with the right CA works");
    client.append(AppendRequest::new("c", "k", "over tls")).await.unwrap();
    assert!(
        tls_client(&node, &pki.other_ca, None, None).await.is_err(),
        "a server cert from another CA is refused"
    );
    let plain = Client::connect(format!("http://{}", node.grpc)).await;
    assert!(
        plain.is_err() || plain.unwrap().tree_head("c").await.is_err(),
        "plaintext to a TLS port fails"
    );
    drop(node);

    let mtls = Node::start(
        &dir.path().join("data2"),
        &[
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
            "--client-ca",
            s(&pki.ca),
        ],
    );
    assert!(
        tls_client(&mtls, &pki.ca, None, None).await.is_err(),
        "no client certificate, no connection"
    );
    let client = tls_client(&mtls, &pki.ca, Some((&pki.client_cert, &pki.client_key)), None)
        .await
        .expect("a client certificate from the CA works");
    client.append(AppendRequest::new("c", "k", "mutual")).await.unwrap();

    // The CLI takes the same settings.
    let out = Command::new(BIN)
        .args([
            "get",
            "c",
            "--server",
            &format!("https://{}", mtls.grpc),
            "--ca",
            s(&pki.ca),
            "--client-cert",
            s(&pki.client_cert),
            "--client-key",
            s(&pki.client_key),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mutual"));
}

#[test]
fn a_silent_client_is_cut_off_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let node = Node::start(
        &dir.path().join("data"),
        &["--tls-cert", s(&pki.server_cert), "--tls-key", s(&pki.server_key)],
    );
    let mut stream = std::net::TcpStream::connect(node.grpc).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = stream.read(&mut buf);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the server closes a connection that never completes a handshake"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "closed by the handshake timeout, after {:?}",
        started.elapsed()
    );
}

fn create_token(tokens: &Path, role: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "create", "--role", role, "--tokens", s(tokens), "--name", role])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn with_token(node: &Node, token: Option<&str>) -> Client {
    let mut config = ClientConfig::new(node.url());
    config.token = token.map(str::to_string);
    Client::connect_with(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let reader = create_token(&tokens, "reader");
    let writer = create_token(&tokens, "writer");
    let admin = create_token(&tokens, "admin");
    let file = std::fs::read_to_string(&tokens).unwrap();
    assert!(!file.contains(&reader) && !file.contains(&writer), "the file keeps only hashes");
    let node = Node::start(&dir.path().join("data"), &["--tokens", s(&tokens)]);

    let anonymous = with_token(&node, None).await;
    assert!(
        matches!(anonymous.get(GetRequest::all("c")).await, Err(LedgerError::Unauthenticated(m)) if m.contains("Bearer"))
    );
    let forged = with_token(&node, Some("cvl_not-a-real-token")).await;
    assert!(matches!(forged.get(GetRequest::all("c")).await, Err(LedgerError::Unauthenticated(_))));
    let w = with_token(&node, Some(&writer)).await;
    w.append(AppendRequest::new("c", "k", "by the writer")).await.unwrap();
    let r = with_token(&node, Some(&reader)).await;
    assert_eq!(r.get(GetRequest::all("c")).await.unwrap().entries.len(), 1);
    r.tree_head("c").await.unwrap();
    match r.append(AppendRequest::new("c", "k", "by a reader")).await {
        Err(LedgerError::PermissionDenied(m)) => {
            assert!(m.contains("reader") && m.contains("writer"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let a = with_token(&node, Some(&admin)).await;
    a.append(AppendRequest::new("c", "k", "by the admin")).await.unwrap();

    // Health needs no credentials.
    let channel =
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();

    // A token added while the node runs works after SIGHUP, not before.
    let late = create_token(&tokens, "reader");
    let late_client = with_token(&node, Some(&late)).await;
    assert!(matches!(
        late_client.get(GetRequest::all("c")).await,
        Err(LedgerError::Unauthenticated(_))
    ));
    assert!(
        Command::new("kill").args(["-HUP", &node.pid().to_string()]).status().unwrap().success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while late_client.get(GetRequest::all("c")).await.is_err() {
        assert!(Instant::now() < deadline, "the reloaded token was not accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Tokens never reach the log.
    let log = node.log.lock().unwrap().join("\n");
    for token in [&reader, &writer, &admin, &late] {
        assert!(!log.contains(token.as_str()), "a token was logged");
    }
    let (_, metrics) = node.http_get("/metrics");
    assert!(metrics.contains("converge_unauthenticated_total"), "{metrics}");
}

#[test]
fn a_public_address_is_refused_without_tls_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tls-cert")
            && stderr.contains("--tokens")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    // Explicitly accepting the risk starts it.
    let node = Node::start_at(&dir.path().join("data"), "0.0.0.0:0", &["--insecure"]);
    assert!(node.grpc.ip().is_unspecified());
}
