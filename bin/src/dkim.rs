//! `ringpost dkim keygen|record`: DKIM keys for `[[dkim.keys]]` and the
//! TXT records that publish them.

use ringpost_engine::dkim::load_key;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Help shown by `ringpost dkim --help`.
pub const ABOUT: &str = "DKIM signing keys and their DNS records";

/// What to do.
#[derive(clap::Subcommand)]
pub enum DkimCommand {
    /// Make a private key (mode 0600) and print the TXT record to publish
    /// and the config lines that use it.
    Keygen {
        /// The signing domain (d=), e.g. example.com.
        domain: String,
        /// The selector (s=); the record goes at SELECTOR._domainkey.DOMAIN.
        #[arg(long)]
        selector: String,
        /// rsa2048 (what every receiver checks) or ed25519 (RFC 8463; sign
        /// with both for receivers that know it).
        #[arg(long, default_value = "rsa2048")]
        algorithm: KeyAlgorithm,
        /// Where to write the key [default: SELECTOR._domainkey.DOMAIN.pem].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the TXT record for an existing key.
    Record {
        /// The signing domain.
        domain: String,
        /// The selector.
        #[arg(long)]
        selector: String,
        /// The private key (PEM).
        #[arg(long)]
        key: PathBuf,
    },
}

/// Which kind of key to make.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// RSA, 2048 bits.
    Rsa2048,
    /// Ed25519.
    Ed25519,
}

/// Run one `ringpost dkim` command.
pub fn run(command: DkimCommand) -> ExitCode {
    let result = match command {
        DkimCommand::Keygen {
            domain,
            selector,
            algorithm,
            out,
        } => keygen(&domain, &selector, algorithm, out),
        DkimCommand::Record {
            domain,
            selector,
            key,
        } => print_record(&domain, &selector, &key),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(text) => {
            eprintln!("ringpost: {text}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(
    domain: &str,
    selector: &str,
    algorithm: KeyAlgorithm,
    out: Option<PathBuf>,
) -> Result<(), String> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{selector}._domainkey.{domain}.pem")));
    let pem = match algorithm {
        KeyAlgorithm::Rsa2048 => {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                .map_err(|e| format!("cannot make an RSA key: {e}"))?;
            key.to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| format!("cannot encode the key: {e}"))?
                .to_string()
        }
        KeyAlgorithm::Ed25519 => {
            let pkcs8 =
                ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|_| "cannot make an Ed25519 key".to_owned())?;
            pem("PRIVATE KEY", pkcs8.as_ref())
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {} (mode 0600)", path.display());
    print_record(&domain, selector, &path)?;
    let absolute = std::fs::canonicalize(&path).unwrap_or(path);
    println!();
    println!("and sign with it (ringpost.toml):");
    println!("[[dkim.keys]]");
    println!("domain = \"{domain}\"");
    println!("selector = \"{selector}\"");
    println!("key = \"{}\"", absolute.display());
    Ok(())
}

/// DER as PEM, 64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn print_record(domain: &str, selector: &str, key: &Path) -> Result<(), String> {
    let key = load_key(domain, selector, key)?;
    let record = key.dns_record();
    println!("publish this TXT record:");
    // A TXT string holds at most 255 octets: longer values go in several.
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(250)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    println!(
        "{}._domainkey.{}. IN TXT ( {} )",
        key.selector(),
        key.domain(),
        strings.join(" ")
    );
    Ok(())
}
