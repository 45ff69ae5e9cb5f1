//! The API over TCP: TLS with client certificates and a bearer token. Every
//! way of getting in without them is refused; with them, the real client
//! and `fdrctl` read the agent's data.

use std::process::Command;

use fdr_cli::client::{self, ClientTls, Target};
use fdr_proto::v1 as pb;
use fdr_tests::{fdrctl_binary, pki::Ca, Capture, TempDir};

const TOKEN: &str = "fdr-test-token-4f9c";

/// `GetStats` through `target`: the response, or why there is none.
async fn stats(target: &Target) -> Result<pb::Stats, String> {
    let mut c = client::connect(target).await.map_err(|e| e.to_string())?;
    c.get_stats(pb::GetStatsRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_api_requires_a_client_certificate_and_the_token() {
    let dir = TempDir::new("tls");
    let ca = Ca::new(dir.path(), "fdr-test-ca");
    let server = ca.server("agent");
    let client_pair = ca.client("console");
    let rogue_ca = Ca::new(dir.path(), "rogue-ca");
    let rogue = rogue_ca.client("intruder");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");

    let (cert, key, client_ca, token) = (
        server.cert.clone(),
        server.key.clone(),
        ca.cert.clone(),
        token_file.clone(),
    );
    let cap = Capture::start_with("tls", move |c| {
        c.api.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.api.tls_cert_file = Some(cert);
        c.api.tls_key_file = Some(key);
        c.api.tls_client_ca_file = Some(client_ca);
        c.api.tcp_token_file = Some(token);
    })
    .await;
    let addr = cap.agent.as_ref().and_then(|a| a.tcp).expect("TCP bound");
    let https = format!("https://{addr}");
    let good_tls = ClientTls {
        ca_file: Some(ca.cert.clone()),
        cert_file: Some(client_pair.cert.clone()),
        key_file: Some(client_pair.key.clone()),
        server_name: None,
    };
    let target = |url: &str, tls: &ClientTls, token: Option<&str>| Target::Tcp {
        url: url.to_owned(),
        token: token.map(str::to_owned),
        tls: tls.clone(),
    };

    // Certificate, key and token: in.
    let s = stats(&target(&https, &good_tls, Some(TOKEN)))
        .await
        .expect("an authenticated client gets the stats");
    assert!(s.processes.expect("process counts").live > 0);

    // The right certificate without the token.
    let err = stats(&target(&https, &good_tls, None)).await.unwrap_err();
    assert!(err.contains("Unauthenticated"), "{err}");
    let err = stats(&target(&https, &good_tls, Some("guess")))
        .await
        .unwrap_err();
    assert!(err.contains("Unauthenticated"), "{err}");

    // The token without a client certificate, or with one from another CA:
    // the handshake fails.
    let no_cert = ClientTls {
        cert_file: None,
        key_file: None,
        ..good_tls.clone()
    };
    let err = stats(&target(&https, &no_cert, Some(TOKEN)))
        .await
        .unwrap_err();
    assert!(
        !err.contains("Unauthenticated"),
        "refused before any call: {err}"
    );
    let foreign = ClientTls {
        cert_file: Some(rogue.cert.clone()),
        key_file: Some(rogue.key.clone()),
        ..good_tls.clone()
    };
    assert!(stats(&target(&https, &foreign, Some(TOKEN))).await.is_err());

    // A client that does not trust the agent's CA does not talk to it.
    let distrust = ClientTls {
        ca_file: Some(rogue_ca.cert.clone()),
        ..good_tls.clone()
    };
    let err = stats(&target(&https, &distrust, Some(TOKEN)))
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // Plain HTTP/2 to the TLS port.
    let plain = ClientTls::default();
    assert!(
        stats(&target(&format!("http://{addr}"), &plain, Some(TOKEN)))
            .await
            .is_err()
    );

    // fdrctl, with the same credentials.
    let out = Command::new(fdrctl_binary())
        .args(["--url", &https, "--token", TOKEN, "--ca-file"])
        .arg(&ca.cert)
        .arg("--cert-file")
        .arg(&client_pair.cert)
        .arg("--key-file")
        .arg(&client_pair.key)
        .args(["stats", "--json"])
        .output()
        .expect("run fdrctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    assert!(v["processes"]["live"].as_u64().unwrap_or(0) > 0, "{v}");
    // And without the client certificate, a clear failure.
    let out = Command::new(fdrctl_binary())
        .args(["--url", &https, "--token", TOKEN, "--ca-file"])
        .arg(&ca.cert)
        .arg("stats")
        .output()
        .expect("run fdrctl");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cert-file"), "a hint: {stderr}");
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_fails_start_up_with_its_path() {
    let dir = TempDir::new("tls-bad");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, "not a certificate").expect("write");
    std::fs::write(&key, "not a key").expect("write");
    let mut cfg = fdr_agent::config::Config::default();
    cfg.api.socket = dir.path().join("fdr.sock");
    cfg.recorder.data_dir = dir.path().join("data");
    cfg.api.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.api.tls_cert_file = Some(cert.clone());
    cfg.api.tls_key_file = Some(key);
    let err = fdr_agent::daemon::start(&cfg, fdr_agent::daemon::SelfFilter::RecordAll)
        .await
        .err()
        .expect("start-up fails")
        .to_string();
    assert!(err.contains(&cert.display().to_string()), "{err}");
}
