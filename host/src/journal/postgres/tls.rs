//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` ask for it
//! (managed PostgreSQL services require TLS).
//!
//! tokio-postgres reads `disable`, `prefer` and `require` only, and no
//! certificate settings, so the modes that verify (`verify-ca`,
//! `verify-full`) and `sslrootcert` are taken out of the URL here and
//! become the rustls configuration:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | no | - |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | yes | no; against `sslrootcert` if given (libpq's rule) |
//! | `verify-ca` | yes | chain, against `sslrootcert` (else Mozilla's roots) |
//! | `verify-full` | yes | chain and the host's name |
//!
//! `sslrootcert=system` means Mozilla's roots, as `webpki-roots` has them.

use anyhow::{Context, Result, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::SslMode;
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not at all (encryption only).
    Nothing,
    /// Its chain, not the name it is for.
    Chain,
    /// Its chain and the host's name.
    ChainAndName,
}

/// What the URL asked of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// For tokio-postgres: whether to encrypt.
    pub mode: SslMode,
    /// What to check of the server's certificate.
    pub check: Check,
    /// `sslrootcert`: a PEM file of the certificates to trust, or
    /// `system`.
    pub root_cert: Option<String>,
}

/// Takes the TLS settings out of `url` (a `postgres://` URL, or libpq's
/// `key=value` form); returns the URL tokio-postgres can read and the
/// settings.
pub fn split(url: &str) -> Result<(String, TlsSettings)> {
    let mut mode = None;
    let mut root_cert = None;
    let rest = if let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            // The other parameters go on as they were written.
            match form_urlencoded::parse(pair.as_bytes()).next() {
                Some((name, value)) if name == "sslmode" => mode = Some(value.into_owned()),
                Some((name, value)) if name == "sslrootcert" => {
                    root_cert = Some(value.into_owned())
                }
                _ => kept.push(pair),
            }
        }
        match kept.is_empty() {
            true => base.to_string(),
            false => format!("{base}?{}", kept.join("&")),
        }
    } else if url.contains("://") {
        url.to_string()
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            match pair.split_once('=') {
                Some(("sslmode", value)) => mode = Some(value.to_string()),
                Some(("sslrootcert", value)) => root_cert = Some(value.to_string()),
                _ => kept.push(pair),
            }
        }
        kept.join(" ")
    };
    let (mode, check) = match mode.as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, Check::Nothing),
        "allow" | "prefer" => (SslMode::Prefer, Check::Nothing),
        "require" if root_cert.is_some() => (SslMode::Require, Check::Chain),
        "require" => (SslMode::Require, Check::Nothing),
        "verify-ca" => (SslMode::Require, Check::Chain),
        "verify-full" => (SslMode::Require, Check::ChainAndName),
        other => bail!(
            "sslmode={other} is not a TLS mode: use disable, prefer, require, verify-ca or verify-full"
        ),
    };
    Ok((
        rest,
        TlsSettings {
            mode,
            check,
            root_cert,
        },
    ))
}

/// The connector that does what `settings` ask.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?;
    let algorithms = provider.signature_verification_algorithms;
    let chain = match settings.check {
        Check::Nothing => None,
        Check::Chain | Check::ChainAndName => {
            let roots = roots(settings.root_cert.as_deref())?;
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .context("setting up the certificate check")?,
            )
        }
    };
    let config = match (settings.check, chain) {
        (Check::ChainAndName, Some(chain)) => {
            builder.with_webpki_verifier(chain).with_no_client_auth()
        }
        (_, chain) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient { chain, algorithms }))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates `sslrootcert` names: a PEM file, or `system` (and no
/// file) for Mozilla's roots.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        None | Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let path = PathBuf::from(path);
            let certificates: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&path)
                    .and_then(|certs| certs.collect::<Result<_, _>>())
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "reading sslrootcert {}: {e}; it should be a PEM file of the CA certificates to trust",
                            path.display()
                        )
                    })?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                bail!(
                    "sslrootcert {} holds no certificate: it should be a PEM file of the CA certificates to trust",
                    path.display()
                );
            }
        }
    }
    Ok(roots)
}

/// The checks rustls's own verifier does not offer: `require` without
/// `sslrootcert` (encrypted, any certificate, as libpq) when `chain` is
/// `None`; `verify-ca` (the chain checked, not the name it is for)
/// otherwise. The handshake's signatures are checked either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifying_modes_and_the_root_certificate_leave_the_url() {
        let (url, tls) = split(
            "postgres://u@db:5432/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@db:5432/d?application_name=x");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.check, Check::ChainAndName);
        assert_eq!(tls.root_cert.as_deref(), Some("/etc/ca.pem"));

        let (url, tls) = split("postgres://u@db/d?sslmode=verify-ca").unwrap();
        assert_eq!(url, "postgres://u@db/d");
        assert_eq!(tls.check, Check::Chain);

        let (_, tls) = split("postgres://u@db/d?sslmode=require").unwrap();
        assert_eq!((tls.mode, tls.check), (SslMode::Require, Check::Nothing));
        let (_, tls) = split("postgres://u@db/d?sslmode=require&sslrootcert=ca.pem").unwrap();
        assert_eq!(
            tls.check,
            Check::Chain,
            "libpq checks the chain when given a CA"
        );
        let (_, tls) = split("postgres://u@db/d").unwrap();
        assert_eq!((tls.mode, tls.check), (SslMode::Prefer, Check::Nothing));

        let (url, tls) = split("host=db user=u sslmode=verify-full sslrootcert=/ca.pem").unwrap();
        assert_eq!(url, "host=db user=u");
        assert_eq!(tls.check, Check::ChainAndName);
    }

    #[test]
    fn an_unknown_mode_or_an_unreadable_root_certificate_is_a_clear_error() {
        let error = split("postgres://u@db/d?sslmode=always").unwrap_err();
        assert!(error.to_string().contains("not a TLS mode"), "{error}");
        let (_, tls) =
            split("postgres://u@db/d?sslmode=verify-full&sslrootcert=/nonexistent.pem").unwrap();
        let error = connector(&tls).err().unwrap().to_string();
        assert!(
            error.contains("reading sslrootcert /nonexistent.pem"),
            "{error}"
        );
    }
}
