//! TLS at the edge: HTTPS and WSS with a certificate from PEM files, and a
//! renewed certificate served without a restart.

use std::sync::Arc;
use std::time::Duration;

use e2e::{Mode, System};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// A self-signed certificate for `localhost`, written as PEM files.
fn certificate(dir: &std::path::Path, cn: &str) -> anyhow::Result<CertificateDer<'static>> {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(cert.der().clone())
}

/// A client that trusts exactly `trusted`.
fn connector(trusted: &[CertificateDer<'static>]) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Connects over TLS; returns the stream and the certificate the edge showed.
async fn tls_connect(
    addr: std::net::SocketAddr,
    trusted: &[CertificateDer<'static>],
) -> anyhow::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    CertificateDer<'static>,
)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector(trusted)?
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let shown = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no certificate shown"))?;
    Ok((tls, shown))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_serves_https_and_wss_and_picks_up_a_renewed_certificate() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    let alice = system.api().user("alice").await?;
    let dir = tempfile::tempdir()?;
    let first = certificate(dir.path(), "first")?;

    // A second edge, with TLS, on the same system.
    let mut config = e2e::edge_config(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &system.settings,
    );
    config.tls_cert_file = dir.path().join("cert.pem").display().to_string();
    config.tls_key_file = dir.path().join("key.pem").display().to_string();
    config.tls_reload_secs = 1;
    let mut nats_config = system.nats_config();
    nats_config.user = Some("edge".into());
    nats_config.nkey_file = Some(system.keys.seed_file("edge"));
    let nats = shared::Nats::connect(&nats_config, "tls-edge").await?;
    let stop = CancellationToken::new();
    let edge = edge::Edge::bind(config, nats, stop.clone()).await?;
    let addr = edge.local_addr();
    let serving = tokio::spawn(edge.serve());

    // HTTPS: the health check answers, with the first certificate (once
    // the edge has its token keys and the ended sessions: until then 503).
    let mut answer = String::new();
    for _ in 0..200 {
        let (mut tls, shown) = tls_connect(addr, std::slice::from_ref(&first)).await?;
        assert_eq!(shown, first);
        tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        answer.clear();
        tls.read_to_string(&mut answer).await?;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Plain HTTP on the TLS port gets no answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await?;
    plain
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await;
    assert!(
        !matches!(read, Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200")),
        "plain HTTP was served"
    );

    // WSS: a real WebSocket over the same TLS, welcomed as alice.
    let (tls, _) = tls_connect(addr, std::slice::from_ref(&first)).await?;
    let url = format!(
        "wss://localhost:{}/v1/ws?token={}",
        addr.port(),
        alice.token
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await?;
    use futures::StreamExt as _;
    let welcome = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("closed"))??;
    let text = welcome.into_text()?;
    assert!(
        text.contains("welcome") && text.contains(&alice.user_id),
        "{text}"
    );

    // A renewed certificate: new connections see it, without a restart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = certificate(dir.path(), "second")?;
    let mut renewed = false;
    for _ in 0..50 {
        if let Ok((_, shown)) = tls_connect(addr, &[first.clone(), second.clone()]).await
            && shown == second
        {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the renewed certificate was never served");
    // A broken file is not picked up: the renewed one stays.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate")?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, shown) = tls_connect(addr, &[first, second.clone()]).await?;
    assert_eq!(shown, second);

    stop.cancel();
    serving.await??;
    system.stop().await;
    Ok(())
}
