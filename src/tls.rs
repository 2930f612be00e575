//! `server.tls` (GATEWAY.md 10): the webhook listener's certificate and key, read from PEM
//! files into a rustls server config (ring provider, TLS 1.2 and 1.3, HTTP/1.1). Loaded
//! with the config, so `pollgate check` and a reload report a bad pair naming its file, and
//! a reload that fails keeps the last good pair.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The certificate and key in use, and the rustls config made of them.
#[derive(Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub config: Arc<ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Why a certificate and key could not be used; each names the file (never key bytes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error("cannot read {file}: {reason}")]
    Unreadable {
        /// `server.tls.cert` or `server.tls.key`.
        key: &'static str,
        file: String,
        reason: String,
    },
    #[error("{file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { file: String },
    #[error("{file} holds no PEM private key (-----BEGIN PRIVATE KEY-----)")]
    NoKey { file: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: String, key: String },
    #[error("cannot use the certificate in {cert} with the key in {key}: {reason}")]
    Rejected {
        cert: String,
        key: String,
        reason: String,
    },
}

impl TlsError {
    /// The config key the problem is reported under.
    pub fn config_key(&self) -> &'static str {
        match self {
            Self::Unreadable { key, .. } => key,
            Self::NoCertificate { .. } => "server.tls.cert",
            Self::NoKey { .. } => "server.tls.key",
            Self::Mismatch { .. } | Self::Rejected { .. } => "server.tls",
        }
    }
}

fn read(path: &Path, key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Unreadable {
        key,
        file: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads `cert` (a chain, leaf first) and `key` and checks that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let cert_pem = read(cert, "server.tls.cert")?;
    let key_pem = read(key, "server.tls.key")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            file: cert.display().to_string(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        file: key.display().to_string(),
    })?;
    let config = server_config(chain, private).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
        },
        other => TlsError::Rejected {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason: other.to_string(),
        },
    })?;
    Ok(Tls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        config: Arc::new(config),
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // Only HTTP/1.1 is served (hyper's http1); tills do not ask for more.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
