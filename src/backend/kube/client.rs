//! The Kubernetes client's configuration, from exactly one credential source: a kubeconfig
//! file, the in-cluster service account, or an API server URL with a token (and a CA).
//!
//! What must stay true: the API server's certificate is always verified (the caller refuses
//! a kubeconfig that turns verification off), and a bearer token never travels over plain
//! http except to a loopback address.

use std::net::IpAddr;

use futures::FutureExt;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::KubeCredentials;

/// The kube client configuration from the connection's one credential source (the
/// config already refused none or several).
pub(super) fn client_config(credentials: &KubeCredentials) -> Result<kube::Config, String> {
    let (url, token, tls) = match credentials {
        KubeCredentials::Kubeconfig(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            // `from_custom_kubeconfig` is async in signature only: it picks the current
            // context's cluster and user out of the parsed file (reading a CA file at most)
            // without awaiting anything, so one poll completes it and `new` stays
            // synchronous. Should a later kube version really wait, refuse rather than
            // block a runtime thread.
            return match kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .now_or_never()
            {
                Some(Ok(c)) => Ok(c),
                Some(Err(e)) => Err(format!("kubeconfig {}: {e}", path.display())),
                None => Err(format!(
                    "kubeconfig {}: loading did not complete synchronously",
                    path.display()
                )),
            };
        }
        KubeCredentials::InCluster => {
            return kube::Config::incluster().map_err(|e| {
                format!("in_cluster: not running in a pod with a service account ({e})")
            });
        }
        KubeCredentials::Token { url, token, tls } => (url, token, tls),
    };
    check_api_url(url)?;
    let mut kc = kube::Config::new(
        url.parse()
            .map_err(|_| format!("url `{url}` is not a valid API server URL"))?,
    );
    let token = token.resolve().map_err(|m| format!("token: {m}"))?;
    if token.expose().trim().is_empty() {
        return Err("token: the referenced token is empty".into());
    }
    kc.auth_info.token = Some(token.expose().trim().to_string().into());
    if let Some(ca) = &tls.ca {
        let pem = ca.resolve().map_err(|m| format!("tls.ca: {m}"))?;
        kc.root_cert = Some(parse_ca(pem.expose())?);
    }
    Ok(kc)
}

/// `https://`, or `http://` to a loopback address only: a bearer token must not cross a
/// network in the clear.
fn check_api_url(url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("url `{url}` is not a valid URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            // `host_str` keeps the brackets of an IPv6 literal.
            let host = parsed
                .host_str()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "url `{url}` is plain http; the API server must be reached over https"
                ))
            }
        }
        other => Err(format!(
            "url `{url}`: unsupported scheme `{other}` (use https://)"
        )),
    }
}

/// DER certificates from a PEM bundle.
fn parse_ca(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut ders = Vec::new();
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("tls.ca is not valid PEM: {e}"))?;
        ders.push(cert.as_ref().to_vec());
    }
    if ders.is_empty() {
        return Err("tls.ca contains no PEM certificate".into());
    }
    Ok(ders)
}

/// `host:port` of the API server (never userinfo or path).
pub(super) fn describe_server(config: &kube::Config) -> String {
    let uri = &config.cluster_url;
    match (uri.host(), uri.port_u16()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => "(no host)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        assert!(check_api_url("https://k8s.example:6443").is_ok());
        assert!(check_api_url("http://127.0.0.1:8080").is_ok());
        assert!(check_api_url("http://localhost:8080").is_ok());
        assert!(check_api_url("http://[::1]:8080").is_ok());
        assert!(check_api_url("http://10.0.0.1:8080").is_err());
        assert!(check_api_url("ftp://k8s.example").is_err());
        assert!(check_api_url("not a url").is_err());
    }

    #[test]
    fn ca_bundles() {
        assert!(parse_ca("").is_err());
        assert!(parse_ca("no pem here").is_err());
    }
}
