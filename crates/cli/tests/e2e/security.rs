//! Who may talk to the ledger: TLS, client certificates, tokens and roles, SIGHUP reloads, and
//! the refusal to serve a public address unprotected — against the real binary.

use std::io::{ErrorKind, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use converge_api::{AppendRequest, GetRequest, LedgerApi, LedgerError};
use converge_client::{Client, ClientConfig, ClientTls};
use converge_proto::v1::context_service_client::ContextServiceClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::node::{BIN, Node};

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, as PEM
/// files in `dir`.
pub(crate) struct Pki {
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    pub(crate) other_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

pub(crate) fn pki(dir: &Path) -> Pki {
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

pub(crate) async fn tls_client(
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
    let plain = match Client::connect(format!("http://{}", node.grpc)).await {
        Ok(client) => client.tree_head("c").await.map(|_| ()),
        Err(err) => Err(err),
    };
    assert!(
        matches!(plain, Err(LedgerError::Unavailable(_))),
        "plaintext to a TLS port fails as unreachable, not as a server error: {plain:?}"
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
    let tls = Node::start(
        &dir.path().join("tls"),
        &["--tls-cert", s(&pki.server_cert), "--tls-key", s(&pki.server_key)],
    );
    let plain = Node::start(&dir.path().join("plain"), &[]);
    let started = Instant::now();
    // Silent from the start, and a trickle too slow to finish the 24-byte HTTP/2 preface.
    let mut silent_tls = std::net::TcpStream::connect(tls.grpc).unwrap();
    let mut silent_plain = std::net::TcpStream::connect(plain.grpc).unwrap();
    let mut trickle = std::net::TcpStream::connect(plain.grpc).unwrap();
    for byte in b"PRI * HT" {
        std::io::Write::write_all(&mut trickle, &[*byte]).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    for (what, stream) in
        [("TLS", &mut silent_tls), ("plaintext", &mut silent_plain), ("trickle", &mut trickle)]
    {
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // The server may speak first (HTTP/2 SETTINGS); what counts is that it then closes.
        let mut buf = [0u8; 256];
        let closed = loop {
            match stream.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break Err(e);
                }
                Err(_) => break Ok(()), // reset
            }
        };
        assert!(closed.is_ok(), "{what}: the server closes a connection that never gets going");
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "closed by the handshake timeout, after {:?}",
        started.elapsed()
    );
    let (_, metrics) = plain.http_get("/metrics");
    assert!(metrics.contains("converge_connections_silent_total 2"), "{metrics}");
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
            assert!(m.contains("reader") && m.contains("writer"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let a = with_token(&node, Some(&admin)).await;
    a.append(AppendRequest::new("c", "k", "by the admin")).await.unwrap();
    // AppendStream needs what Append needs: the whole stream is refused to a reader.
    for (token, allowed) in [(&reader, false), (&writer, true)] {
        let channel =
            tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        let mut grpc =
            ContextServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", bearer.clone());
                Ok(r)
            });
        let one = converge_proto::v1::AppendRequest {
            context_id: "c".into(),
            key: "k".into(),
            payload: "streamed".into(),
            ..Default::default()
        };
        let answer = match grpc.append_stream(futures_util::stream::iter([one])).await {
            Ok(responses) => responses.into_inner().message().await,
            Err(status) => Err(status),
        };
        match answer {
            Ok(Some(response)) => assert!(allowed && response.entry.is_some(), "{response:?}"),
            Err(status) => {
                assert!(!allowed, "{status:?}");
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
            }
            Ok(None) => panic!("no answer"),
        }
    }

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

/// Raw TLS `ClientHello`s, to offer what no well-behaved client (rustls included) would:
/// old protocol versions and non-AEAD cipher suites.
mod hello {
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`: TLS 1.2, AEAD.
    pub const ECDSA_AES128_GCM: u16 = 0xc02b;
    /// `TLS_AES_128_GCM_SHA256`: TLS 1.3.
    pub const TLS13_AES128_GCM: u16 = 0x1301;
    /// CBC (non-AEAD) suites, with ECDSA and RSA key exchange.
    pub const CBC: [u16; 4] = [0xc009, 0xc023, 0x002f, 0x0035];

    fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
        out.extend(data);
    }

    /// A `ClientHello` for `version` (0x0303 = TLS 1.2; 0x0304 = TLS 1.3, sent the 1.3 way)
    /// offering `suites`, X25519/P-256 and ECDSA/RSA-PSS signatures.
    pub fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
        let mut body = version.min(0x0303).to_be_bytes().to_vec();
        body.extend([0x5a; 32]); // random
        body.push(0); // no session id
        body.extend(u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
        for suite in suites {
            body.extend(suite.to_be_bytes());
        }
        body.extend([1, 0]); // null compression only
        let mut extensions = Vec::new();
        extension(&mut extensions, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // groups
        extension(&mut extensions, 0x000b, &[1, 0]); // uncompressed points
        extension(&mut extensions, 0x000d, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]); // sigs
        extension(&mut extensions, 0x0017, &[]); // extended master secret
        extension(&mut extensions, 0xff01, &[0]); // renegotiation info
        if version == 0x0304 {
            extension(&mut extensions, 0x002b, &[2, 0x03, 0x04]); // supported versions
            let mut share = vec![0, 36, 0x00, 0x1d, 0, 32];
            share.extend([9; 32]); // an X25519 public key
            extension(&mut extensions, 0x0033, &share);
        }
        body.extend(u16::try_from(extensions.len()).unwrap().to_be_bytes());
        body.extend(extensions);
        let mut handshake = vec![1]; // client_hello
        handshake.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        handshake.extend(body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend(u16::try_from(handshake.len()).unwrap().to_be_bytes());
        record.extend(handshake);
        record
    }
}

/// What the server answers a raw `ClientHello` with: `Ok(suite)` for a
/// `ServerHello` choosing that cipher suite, or `Err(description)` for an alert.
fn answer_to(addr: std::net::SocketAddr, hello: &[u8]) -> Result<u16, u8> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(hello).unwrap();
    // record header (5), handshake header (4), version (2), random (32), session id length (1)
    let mut head = [0u8; 44];
    stream.read_exact(&mut head[..7]).expect("the server answers a ClientHello");
    match head[0] {
        0x15 => Err(head[6]),
        0x16 => {
            stream.read_exact(&mut head[7..44]).unwrap();
            assert_eq!(head[5], 2, "a handshake answer to a ClientHello is a ServerHello");
            // TLS 1.2 servers may assign a session id; skip it to reach the suite.
            let mut rest = vec![0u8; usize::from(head[43]) + 2];
            stream.read_exact(&mut rest).unwrap();
            Ok(u16::from_be_bytes([rest[rest.len() - 2], rest[rest.len() - 1]]))
        }
        other => panic!("unexpected TLS record type {other:#x}"),
    }
}

#[test]
fn only_tls_1_3_and_tls_1_2_with_aead_suites_are_accepted() {
    const HANDSHAKE_FAILURE: u8 = 40;
    const PROTOCOL_VERSION: u8 = 70;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let node = Node::start(
        &dir.path().join("data"),
        &["--tls-cert", s(&pki.server_cert), "--tls-key", s(&pki.server_key)],
    );
    let both = [hello::TLS13_AES128_GCM, hello::ECDSA_AES128_GCM];
    assert_eq!(
        answer_to(node.grpc, &hello::client_hello(0x0304, &both)),
        Ok(hello::TLS13_AES128_GCM),
        "a client that offers TLS 1.3 gets it"
    );
    assert_eq!(
        answer_to(node.grpc, &hello::client_hello(0x0303, &both)),
        Ok(hello::ECDSA_AES128_GCM),
        "TLS 1.2 with an AEAD suite is accepted"
    );
    assert_eq!(
        answer_to(node.grpc, &hello::client_hello(0x0303, &hello::CBC)),
        Err(HANDSHAKE_FAILURE),
        "CBC suites are refused"
    );
    for old in [0x0301, 0x0302] {
        assert_eq!(
            answer_to(node.grpc, &hello::client_hello(old, &[hello::ECDSA_AES128_GCM])),
            Err(PROTOCOL_VERSION),
            "TLS {old:#06x} is refused"
        );
    }
}
