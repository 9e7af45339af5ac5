//! Where an SSH connection goes and whom it trusts: the `ssh://user@host:port` URL and the
//! pinned host key, both parsed once at startup.
//!
//! What must stay true: only the pinned key is ever accepted (by SHA-256 fingerprint, or the
//! key itself from a known_hosts line); a pin that cannot be parsed is a startup error that
//! says what is wrong, and a URL carrying a password is refused without being echoed.

use std::str::FromStr;

use russh::keys::{self, Algorithm, HashAlg, PublicKey};

/// The pinned host key, parsed at startup.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum HostKeyPin {
    /// `SHA256:<base64>`: the server's key must have this SHA-256 fingerprint.
    Fingerprint(keys::ssh_key::Fingerprint),
    /// From a known_hosts line: the server's key must be exactly this key.
    Key(PublicKey),
}

impl HostKeyPin {
    pub(super) fn matches(&self, key: &PublicKey) -> bool {
        match self {
            HostKeyPin::Fingerprint(fp) => key.fingerprint(HashAlg::Sha256) == *fp,
            // Compare the key material only: the comment is not part of the identity.
            HostKeyPin::Key(pinned) => pinned.key_data() == key.key_data(),
        }
    }

    /// What the operator configured, for error messages.
    pub(super) fn describe(&self) -> String {
        match self {
            HostKeyPin::Fingerprint(fp) => fp.to_string(),
            HostKeyPin::Key(k) => format!(
                "{} {}",
                k.algorithm().as_str(),
                k.fingerprint(HashAlg::Sha256)
            ),
        }
    }

    /// Host key algorithms to offer in key exchange. With a pinned key we only offer its
    /// type, so a server holding several host keys presents the pinned one instead of
    /// failing the pin with another. A bare fingerprint does not say which type it is, so
    /// russh's default order applies (ed25519 first); the mismatch error names the type the
    /// server presented so the operator can pin the right one.
    pub(super) fn host_key_algorithms(&self) -> Option<Vec<Algorithm>> {
        let HostKeyPin::Key(k) = self else {
            return None;
        };
        let pinned = k.algorithm();
        let algs: Vec<Algorithm> = russh::Preferred::DEFAULT
            .key
            .iter()
            .filter(|a| {
                if matches!(pinned, Algorithm::Rsa { .. }) {
                    // One RSA key signs with any of the rsa-sha2-* / ssh-rsa algorithms.
                    matches!(a, Algorithm::Rsa { .. })
                } else {
                    **a == pinned
                }
            })
            .cloned()
            .collect();
        if algs.is_empty() { None } else { Some(algs) }
    }
}

/// Parses `host_key`: a `SHA256:` fingerprint or a known_hosts line (with or without the
/// host field). The message names what is wrong; a pin is public, so echoing it is fine.
pub(super) fn parse_host_key_pin(raw: &str) -> Result<HostKeyPin, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(
            "host_key is empty; pin the host key (SHA256:... or a known_hosts line)".into(),
        );
    }
    if let Some(b64) = s.strip_prefix("SHA256:") {
        if b64.is_empty() || b64.contains(char::is_whitespace) {
            return Err(format!(
                "host_key `{s}` is not a SHA256:<base64> fingerprint"
            ));
        }
        return keys::ssh_key::Fingerprint::from_str(s)
            .map(HostKeyPin::Fingerprint)
            .map_err(|e| format!("host_key `{s}` is not a valid SHA256 fingerprint: {e}"));
    }
    if s.starts_with("MD5:") || s.starts_with("SHA1:") || s.starts_with("SHA512:") {
        return Err(format!(
            "host_key `{s}`: only SHA256 fingerprints are accepted (ssh-keygen -lf -E sha256)"
        ));
    }
    if s.starts_with('@') {
        return Err(
            "host_key: known_hosts markers (@cert-authority, @revoked) are not pins; give the host's own key"
                .into(),
        );
    }
    let tokens: Vec<&str> = s.split_whitespace().collect();
    // `type base64 [comment]` or `hosts type base64 [comment]`.
    let at = tokens
        .iter()
        .take(2)
        .position(|t| Algorithm::new(t).is_ok())
        .ok_or_else(|| {
            format!(
                "host_key `{s}` is neither a SHA256:... fingerprint nor a known_hosts line \
                 (`[host]:port ssh-ed25519 AAAA...` or `ssh-ed25519 AAAA...`): no key type found"
            )
        })?;
    let type_name = tokens.get(at).copied().unwrap_or_default();
    let blob = tokens
        .get(at + 1)
        .ok_or_else(|| format!("host_key: the known_hosts line has no key after `{type_name}`"))?;
    let key = keys::parse_public_key_base64(blob).map_err(|e| {
        format!("host_key: the `{type_name}` key is not valid base64 key data: {e}")
    })?;
    let declared = Algorithm::new(type_name)
        .map_err(|e| format!("host_key: unknown key type `{type_name}`: {e}"))?;
    if key.algorithm() != declared {
        return Err(format!(
            "host_key: the line says `{type_name}` but the key is `{}`",
            key.algorithm().as_str()
        ));
    }
    Ok(HostKeyPin::Key(key))
}

/// Where to connect and as whom, from `ssh://user@host:port`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
}

impl Target {
    pub(super) fn label(&self) -> String {
        if self.host.contains(':') {
            format!("{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

pub(super) fn parse_ssh_url(raw: &str) -> Result<Target, String> {
    let url =
        reqwest::Url::parse(raw).map_err(|e| format!("url `{raw}` is not a valid URL: {e}"))?;
    if url.scheme() != "ssh" {
        return Err(format!(
            "url must start with ssh://, not {}://",
            url.scheme()
        ));
    }
    if url.password().is_some() {
        // Do not echo the URL: it carries a password.
        return Err("the ssh url carries a password; use `password = \"env:NAME\"`".into());
    }
    let user = percent_decode(url.username())
        .ok_or_else(|| format!("url `{raw}`: the user name is not valid percent-encoded UTF-8"))?;
    if user.is_empty() {
        return Err(format!(
            "url `{raw}`: name the remote user: ssh://user@host:port"
        ));
    }
    // `host_str` keeps the brackets of an IPv6 literal; the socket API wants them off.
    let host = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .unwrap_or_default();
    if host.is_empty() {
        return Err(format!("url `{raw}` has no host"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "url `{raw}`: an ssh url is ssh://user@host:port, without path or query"
        ));
    }
    Ok(Target {
        host,
        port: url.port().unwrap_or(22),
        user,
    })
}

/// `%XX` decoding for the user part of the URL (`url` keeps it encoded).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJtmxfHZaM1Xoh36ie6nXFjJwXGbmZ47HLy+oAIzyyNy";
    const ED25519_FP: &str = "SHA256:K0HneSmHup7kXHqw6tpOYTtWo3BntRr7NPLCA/vnMgk";

    fn key() -> PublicKey {
        keys::parse_public_key_base64(ED25519).unwrap()
    }

    #[test]
    fn fingerprint_pin_matches_its_key_only() {
        let pin = parse_host_key_pin(ED25519_FP).unwrap();
        assert!(matches!(pin, HostKeyPin::Fingerprint(_)));
        assert!(pin.matches(&key()));
        let other =
            parse_host_key_pin("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(!other.matches(&key()));
        assert_eq!(pin.describe(), ED25519_FP);
    }

    #[test]
    fn known_hosts_lines_pin_the_key() {
        for line in [
            format!("[127.0.0.1]:2222 ssh-ed25519 {ED25519}"),
            format!("ssh-ed25519 {ED25519}"),
            format!("  host.example,10.0.0.1 ssh-ed25519 {ED25519} root@vm  "),
            format!("ssh-ed25519 {ED25519} some comment"),
        ] {
            let pin = parse_host_key_pin(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(matches!(pin, HostKeyPin::Key(_)), "{line}");
            assert!(pin.matches(&key()), "{line}");
            assert_eq!(
                pin.host_key_algorithms(),
                Some(vec![Algorithm::Ed25519]),
                "{line}"
            );
        }
    }

    #[test]
    fn invalid_pins_are_refused_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("SHA256:", "not a SHA256"),
            ("SHA256:!!!notbase64", "not a valid SHA256"),
            ("MD5:12:34", "only SHA256"),
            ("@cert-authority * ssh-ed25519 AAAA", "markers"),
            ("just some text", "no key type"),
            ("ssh-ed25519", "no key after"),
            ("ssh-ed25519 not_base64!!", "not valid base64"),
            (
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIJtmxfHZaM1Xoh36ie6nXFjJwXGbmZ47HLy+oAIzyyNy",
                "the line says",
            ),
        ];
        for (raw, want) in cases {
            let e = parse_host_key_pin(raw).unwrap_err();
            assert!(e.contains(want), "{raw:?}: {e}");
        }
    }

    #[test]
    fn ssh_urls() {
        assert_eq!(
            parse_ssh_url("ssh://deploy@db1.example:2222").unwrap(),
            Target {
                host: "db1.example".into(),
                port: 2222,
                user: "deploy".into()
            }
        );
        let t = parse_ssh_url("ssh://root@127.0.0.1").unwrap();
        assert_eq!((t.port, t.user.as_str()), (22, "root"));
        let t = parse_ssh_url("ssh://a%40b@[::1]:22/").unwrap();
        assert_eq!((t.host.as_str(), t.user.as_str()), ("::1", "a@b"));
        assert_eq!(t.label(), "a@b@[::1]:22");
        for bad in [
            "ssh://host:22",
            "http://u@host",
            "ssh://u@host/path",
            "ssh://u@host?x=1",
            "not a url",
        ] {
            assert!(parse_ssh_url(bad).is_err(), "{bad}");
        }
        let e = parse_ssh_url("ssh://u:hunter2@host").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
