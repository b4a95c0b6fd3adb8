//! The HTTP client sinks push with: hyper over rustls (bundled Mozilla roots, or the configured
//! CA), optional client certificate, and the authentication header of the config.
//!
//! Building reads certificate and password files, so it happens when a sink is built, never on
//! the hot path; a bearer token file is read again for every request, so that a rotated token
//! (Kubernetes projected service account tokens) is picked up without a reload.

use crate::config::common::{BasicAuth, TlsConfig};
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {what} {path}: {source}")]
    File { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} {path} holds no usable PEM data")]
    Pem { what: &'static str, path: PathBuf },
    #[error("invalid TLS settings: {0}")]
    Tls(String),
    #[error("the authentication value cannot be sent as an HTTP header")]
    Header,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::File { what, path: path.to_path_buf(), source })
}

/// Accepts any server certificate (`insecure_skip_verify`), still checking signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls client configuration for `tls`.
pub fn tls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let pem = read("CA file", path)?;
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
            if certs.is_empty() {
                return Err(ClientError::Pem { what: "CA file", path: path.clone() });
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ClientError::Tls(format!("CA file {}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = if tls.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read("certificate file", cert)?;
            let chain: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
            if chain.is_empty() {
                return Err(ClientError::Pem { what: "certificate file", path: cert.clone() });
            }
            let key_pem = read("key file", key)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|_| ClientError::Pem { what: "key file", path: key.clone() })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| ClientError::Tls(e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(ClientError::Tls("cert_file and key_file go together".into())),
    }
}

/// A pooled HTTP/1.1 client for `http://` and `https://` endpoints.
pub fn build_client(tls: &TlsConfig) -> Result<HttpClient, ClientError> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config(tls)?).https_or_http();
    let builder = match &tls.server_name {
        Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            ServerName::try_from(name.clone())
                .map_err(|_| ClientError::Tls(format!("invalid server_name `{name}`")))?,
        )),
        None => builder,
    };
    let connector = builder.enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).pool_idle_timeout(std::time::Duration::from_secs(90)).build(connector))
}

/// How a sink authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// A fixed `Authorization` value (basic auth, inline bearer token).
    Fixed(HeaderValue),
    /// A bearer token read from this file for every request.
    BearerFile(PathBuf),
}

impl Auth {
    pub fn from_config(
        basic: Option<&BasicAuth>,
        bearer: Option<&str>,
        bearer_file: Option<&Path>,
    ) -> Result<Auth, ClientError> {
        if let Some(basic) = basic {
            let password = match (&basic.password, &basic.password_file) {
                (_, Some(file)) => String::from_utf8_lossy(&read("password file", file)?).trim().to_string(),
                (Some(p), None) => p.clone(),
                (None, None) => String::new(),
            };
            use base64::Engine as _;
            let credentials =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", basic.username));
            let value = format!("Basic {credentials}");
            return HeaderValue::from_str(&value).map(Auth::Fixed).map_err(|_| ClientError::Header);
        }
        if let Some(token) = bearer {
            return HeaderValue::from_str(&format!("Bearer {token}")).map(Auth::Fixed).map_err(|_| ClientError::Header);
        }
        if let Some(file) = bearer_file {
            read("bearer token file", file)?;
            return Ok(Auth::BearerFile(file.to_path_buf()));
        }
        Ok(Auth::None)
    }

    /// The `Authorization` header value for the next request.
    pub fn header(&self) -> Result<Option<HeaderValue>, ClientError> {
        match self {
            Auth::None => Ok(None),
            Auth::Fixed(v) => Ok(Some(v.clone())),
            Auth::BearerFile(path) => {
                let token = read("bearer token file", path)?;
                let token = String::from_utf8_lossy(&token);
                HeaderValue::from_str(&format!("Bearer {}", token.trim())).map(Some).map_err(|_| ClientError::Header)
            }
        }
    }
}
