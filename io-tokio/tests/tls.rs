/// A certificate signed by `pki`'s CA whose validity ended yesterday.
fn expired_cert(pki: &Pki, name: &str) -> (PathBuf, PathBuf) {
    let ca_pem = std::fs::read_to_string(pki.ca()).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(pki.dir.join("consul-agent-ca-key.pem")).unwrap(),
    )
    .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![
        "server.dc1.consul".to_string(),
        "localhost".to_string(),
    ])
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(10);
    params.not_after = now - time::Duration::days(1);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (c, k) = (
        pki.dir.join(format!("{name}.pem")),
        pki.dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// The fourth reason the issue names: an expired certificate. As the
/// agent's own it stops the agent at start; presented by a peer it fails
/// the handshake with one line saying so.
#[test]
fn an_expired_certificate_stops_the_agent_and_is_refused_from_a_peer() {
    let pki = Pki::new("tls-expired");
    let dir = pki.dir.clone();
    let ca = pki.ca();
    let (old_cert, old_key) = expired_cert(&pki, "expired");
    let (code, out) = agent_refuses(&dir, &tls_hcl(&ca, &old_cert, &old_key));
    assert_ne!(code, 0, "{out}");
    let want = format!(
        "cert_file: the certificate in {:?} expired on",
        old_cert.display().to_string()
    );
    assert_eq!(
        out.lines().filter(|l| l.contains(&want)).count(),
        1,
        "{out}"
    );

    let (cert, key) = pki.cert(&["-server", "-node=solo"]);
    let solo = Agent::start("solo", &dir, false, 1, &[], &tls_hcl(&ca, &cert, &key));
    assert_eq!(leader(&[&solo]), Some(0), "{}", solo.log());
    let expired = (old_cert, old_key);
    if let Ok(mut s) = tls_connect(
        solo.server,
        client_config(&ca, Some(&expired), &[]),
        &[3],
        "server.dc1.consul",
    ) {
        let _ = s.write_all(&[4]);
        let _ = s.flush();
        assert!(ends(&mut s));
    }
    let refused = wait_for(Duration::from_secs(5), || {
        Some(solo.log()).filter(|l| l.contains("failed: certificate expired"))
    });
    assert!(refused.is_some(), "{}", solo.log());
    let _ = std::fs::remove_dir_all(&dir);
}
