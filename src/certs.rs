//! `carbide tls-certs`: a self-signed CA and a server certificate signed by
//! it, written as PEM files (`ca.pem`, `ca.key`, `server.pem`,
//! `server.key`). Keys are written with mode 0600. `carbide secret`: a new
//! dataservice secret in a file of mode 0600.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

fn write_file(path: &Path, text: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if private {
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a new dataservice secret (64 hex digits from the kernel's random
/// source) to `path` with mode 0600; refuses to overwrite a file.
pub fn write_secret(path: &Path) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{hex}").map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the four files into `dir`; returns their paths.
pub fn write(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let hosts: Vec<String> = if hosts.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into()]
    } else {
        hosts.to_vec()
    };
    let rc = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(rc)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "carbide self-signed CA");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(rc)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().map_err(rc)?;
    let mut params = CertificateParams::new(hosts).map_err(rc)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "carbide connector");
    let cert = params.signed_by(&key, &issuer).map_err(rc)?;
    let files = [
        ("ca.pem", ca_cert.pem(), false),
        ("ca.key", issuer.key().serialize_pem(), true),
        ("server.pem", cert.pem(), false),
        ("server.key", key.serialize_pem(), true),
    ];
    let mut out = Vec::new();
    for (name, text, private) in files {
        let p = dir.join(name);
        write_file(&p, &text, private)?;
        out.push(p);
    }
    Ok(out)
}
