//! What a client must hold to reach a sandbox: the certificate authority that signed its
//! serving certificate, and its bearer token. Both are made for each sandbox directory and
//! kept in `DIR/credentials/`, so that a sandbox restarted on the same directory (`sandbox
//! up --dir`, `run --sandbox-dir`) still answers the kubeconfigs it wrote before.
//!
//! The server speaks TLS because kubectl sends no `Authorization` header to an `http://`
//! server: without TLS there could be no token, and anyone on the machine could run
//! commands through a Job or an exec.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The directory under the sandbox directory that holds the credentials.
const DIR_NAME: &str = "credentials";
const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "server.crt";
const KEY_FILE: &str = "server.key";
const TOKEN_FILE: &str = "token";

/// A sandbox's certificate authority, serving certificate and key, and bearer token.
pub struct Credentials {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key and the token are what keep others out: never in a log or a panic.
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credentials kept in `dir/credentials/`, made (and written, readable by the owner
    /// only) when there are none yet.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Credentials> {
        let home = dir.join(DIR_NAME);
        if is_complete(&home) {
            return Credentials::load(&home);
        }
        let credentials = Credentials::generate()?;
        // Written in a directory of their own (0700) and renamed into place whole: a sandbox
        // killed meanwhile leaves no half set behind, and of two sandboxes starting on one
        // directory at once the second uses the first one's.
        let partial = tempfile::Builder::new()
            .prefix(&format!("{DIR_NAME}.partial-"))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(dir)
            .with_context(|| format!("cannot create a directory in {}", dir.display()))?;
        write_private(&partial.path().join(CA_FILE), &credentials.ca_pem)?;
        write_private(&partial.path().join(CERT_FILE), &credentials.cert_pem)?;
        write_private(&partial.path().join(KEY_FILE), &credentials.key_pem)?;
        write_private(
            &partial.path().join(TOKEN_FILE),
            &format!("{}\n", credentials.token),
        )?;
        if home.exists() && !is_complete(&home) {
            // A set missing a file (removed by hand) serves nobody: a certificate without
            // its key, or a token without its certificate. A failure shows in the rename.
            let _ = std::fs::remove_dir_all(&home);
        }
        match std::fs::rename(partial.path(), &home) {
            Ok(()) => {
                let _ = partial.keep();
                Ok(credentials)
            }
            Err(_) if is_complete(&home) => Credentials::load(&home),
            Err(error) => Err(error).with_context(|| format!("cannot create {}", home.display())),
        }
    }

    fn load(home: &Path) -> anyhow::Result<Credentials> {
        let [ca, cert, key, token] = files_of(home).map(|file| read(&file));
        let credentials = Credentials {
            ca_pem: ca?,
            cert_pem: cert?,
            key_pem: key?,
            token: token?.trim().to_string(),
        };
        let usable = if credentials.token.is_empty() {
            // An empty token would let in every request that sends `Bearer ` and nothing.
            Err(anyhow::anyhow!("the token is empty"))
        } else {
            credentials.server_config().map(|_| ())
        };
        usable.with_context(|| {
            format!(
                "the sandbox's credentials in {} are not usable; remove that directory to \
                 make new ones",
                home.display()
            )
        })?;
        Ok(credentials)
    }

    /// A certificate authority, a serving certificate it signed for 127.0.0.1, ::1 and
    /// localhost, and a random token.
    fn generate() -> anyhow::Result<Credentials> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "runbook sandbox CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().context("cannot make the sandbox CA's key")?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("cannot make the sandbox CA")?;
        let issuer = Issuer::new(ca_params, ca_key);

        // rcgen's default validity (1975 to 4096) is kept: a sandbox directory can be
        // picked up again years later, and nothing but this sandbox trusts the CA.
        let mut params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "runbook sandbox");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().context("cannot make the sandbox's key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("cannot make the sandbox's certificate")?;

        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|error| anyhow::anyhow!("cannot draw the sandbox's token: {error}"))?;
        let token = secret.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Credentials {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            token,
        })
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The TLS configuration of the server: its certificate and key, HTTP/1.1 only (the
    /// connection loop speaks nothing else; exec's WebSocket upgrades need it too).
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("the sandbox's certificate is not PEM")?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .context("the sandbox's key is not PEM")?;
        // The provider is named rather than taken from the process default: with kube's
        // ring and any other provider linked in, rustls would refuse to choose.
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("cannot configure TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the sandbox's certificate and key do not match")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The kubeconfig that reaches the sandbox at `url` (`https://127.0.0.1:PORT`): its CA,
    /// its token, one context named `sandbox`, current.
    pub fn kubeconfig_text(&self, url: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let token = &self.token;
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: {url}
    certificate-authority-data: {ca}
contexts:
- name: sandbox
  context:
    cluster: sandbox
    user: sandbox
    namespace: default
current-context: sandbox
users:
- name: sandbox
  user:
    token: \"{token}\"
preferences: {{}}
"
        )
    }
}

fn files_of(home: &Path) -> [PathBuf; 4] {
    [CA_FILE, CERT_FILE, KEY_FILE, TOKEN_FILE].map(|name| home.join(name))
}

fn is_complete(home: &Path) -> bool {
    files_of(home).iter().all(|file| file.exists())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes `text` to `path` readable and writable by the owner only, replacing it whole (a
/// reader never sees half a key).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut partial = PathBuf::from(path);
    partial.as_mut_os_string().push(".partial");
    let written = (|| {
        // A leftover from a killed writer may have other modes: start over.
        let _ = std::fs::remove_file(&partial);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
    })();
    written.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn are_made_once_per_directory_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = Credentials::load_or_create(dir.path()).unwrap();
        assert_eq!(first.token().len(), 64);
        let home = dir.path().join(DIR_NAME);
        assert_eq!(mode(&home), 0o700);
        for file in [CA_FILE, CERT_FILE, KEY_FILE, TOKEN_FILE] {
            assert_eq!(mode(&home.join(file)), 0o600, "{file}");
        }
        let again = Credentials::load_or_create(dir.path()).unwrap();
        assert_eq!(again.token(), first.token());
        assert_eq!(
            again.kubeconfig_text("https://127.0.0.1:1"),
            first.kubeconfig_text("https://127.0.0.1:1")
        );
        let other = Credentials::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(other.token(), first.token());
        assert_ne!(other.ca_pem, first.ca_pem);
    }

    #[test]
    fn sandboxes_starting_together_on_one_directory_share_one_set() {
        let dir = tempfile::tempdir().unwrap();
        let tokens: Vec<String> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| Credentials::load_or_create(dir.path()).unwrap()))
                .collect();
            starts
                .into_iter()
                .map(|start| start.join().unwrap().token().to_string())
                .collect()
        });
        let kept = Credentials::load_or_create(dir.path()).unwrap();
        assert!(
            tokens.iter().all(|token| token == kept.token()),
            "{tokens:?}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, [DIR_NAME], "no partial directory is left behind");
    }

    #[test]
    fn an_incomplete_set_is_made_anew_and_a_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Credentials::load_or_create(dir.path()).unwrap();
        let home = dir.path().join(DIR_NAME);
        std::fs::remove_file(home.join(KEY_FILE)).unwrap();
        let second = Credentials::load_or_create(dir.path()).unwrap();
        assert_ne!(second.token(), first.token());
        std::fs::write(home.join(KEY_FILE), "not a key").unwrap();
        let error = Credentials::load_or_create(dir.path()).unwrap_err();
        assert!(
            format!("{error:#}").contains("remove that directory"),
            "{error:#}"
        );
        std::fs::write(home.join(KEY_FILE), &second.key_pem).unwrap();
        Credentials::load_or_create(dir.path()).unwrap();
        std::fs::write(home.join(TOKEN_FILE), "\n").unwrap();
        let error = Credentials::load_or_create(dir.path()).unwrap_err();
        assert!(format!("{error:#}").contains("token is empty"), "{error:#}");
    }

    #[test]
    fn the_kubeconfig_carries_the_ca_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = Credentials::load_or_create(dir.path()).unwrap();
        let text = credentials.kubeconfig_text("https://127.0.0.1:6443");
        let kubeconfig: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let cluster = &kubeconfig["clusters"][0]["cluster"];
        assert_eq!(cluster["server"], "https://127.0.0.1:6443");
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster["certificate-authority-data"].as_str().unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(ca).unwrap(), credentials.ca_pem);
        assert_eq!(kubeconfig["users"][0]["user"]["token"], credentials.token());
    }
}
