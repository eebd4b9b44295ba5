//! Certificate authorities for Istio's plug-in CA: one shared root, one intermediate per cluster.
//!
//! Properties follow Istio's `tools/certs` Makefiles point by point: RSA-4096
//! keys (or ECDSA P-256 for fast labs), SHA-256 signatures, root `O=Istio, CN=Root CA` with
//! `CA:true` and no path length, intermediates `O=Istio, CN=Intermediate CA, L=<cluster>` with
//! `CA:true, pathlen:0` and SAN `DNS:istiod.istio-system.svc`, both with critical key usage
//! `digitalSignature, nonRepudiation, keyEncipherment, keyCertSign` and a subject key identifier.
//! Serials are random and positive (a duplicated serial broke cross-cluster trust in istio#39987).
//!
//! This module only computes; [`layout`] reads and writes the files.

pub mod layout;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize, SanType, SerialNumber,
};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

/// SAN Istio's Makefile gives every intermediate (`INTERMEDIATE_SAN_DNS`).
pub const INTERMEDIATE_SAN: &str = "istiod.istio-system.svc";

/// Default validity of the root, in days (`ROOTCA_DAYS`).
pub const DEFAULT_ROOT_DAYS: u32 = 3650;

/// Default validity of an intermediate, in days (`INTERMEDIATE_DAYS` since Istio 1.18).
pub const DEFAULT_INTERMEDIATE_DAYS: u32 = 3650;

/// Key algorithm of newly generated CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// RSA 4096 with SHA-256, as Istio's Makefile does.
    #[default]
    Rsa4096,
    /// ECDSA P-256 with SHA-256: much faster to generate, accepted by istiod.
    EcdsaP256,
}

/// Errors of certificate generation and loading.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to generate or sign.
    #[error("cannot {what}: {source}")]
    Rcgen {
        /// What was being done.
        what: String,
        source: rcgen::Error,
    },
    /// An existing file does not hold what it should.
    #[error("{what} is not usable: {reason}")]
    Unusable {
        /// The file or object.
        what: String,
        reason: String,
    },
}

fn rcgen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Rcgen { what, source }
}

/// Validity of new certificates.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Root validity in days.
    pub root_days: u32,
    /// Intermediate validity in days.
    pub intermediate_days: u32,
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            root_days: DEFAULT_ROOT_DAYS,
            intermediate_days: DEFAULT_INTERMEDIATE_DAYS,
        }
    }
}

/// A fresh private key of the chosen type.
pub fn generate_key(key_type: KeyType) -> Result<KeyPair, PkiError> {
    match key_type {
        KeyType::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
        KeyType::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
    }
    .map_err(rcgen_err(format!("generate a {key_type:?} key")))
}

/// The shared root CA: its PEM files and an issuer that signs intermediates.
pub struct RootCa {
    /// `root-cert.pem`.
    pub cert_pem: String,
    /// `root-key.pem`.
    pub key_pem: String,
    /// When the root expires; no intermediate it signs outlives it.
    pub not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("RootCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// One cluster's plug-in CA bundle: the four files of the `cacerts` secret.
#[derive(Clone, PartialEq, Eq)]
pub struct IntermediateCa {
    /// Cluster name (the `L=` of the subject and the folder name).
    pub cluster: String,
    /// `ca-cert.pem`: the intermediate certificate.
    pub ca_cert_pem: String,
    /// `ca-key.pem`: its private key.
    pub ca_key_pem: String,
    /// `cert-chain.pem`: intermediate, then root.
    pub cert_chain_pem: String,
    /// `root-cert.pem`: copy of the shared root.
    pub root_cert_pem: String,
}

impl std::fmt::Debug for IntermediateCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntermediateCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero byte, so the DER INTEGER keeps all 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn ca_params(dn: &[(DnType, &str)], constraints: BasicConstraints, days: u32) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    for (ty, value) in dn {
        name.push(ty.clone(), *value);
    }
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.serial_number = Some(random_serial());
    // rcgen's default validity runs from 1975 to 4096; always set it.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 ns is valid");
    params.not_before = now;
    params.not_after = now + Duration::days(i64::from(days));
    params
}

/// `2027-01-31`, for messages.
pub fn day(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl RootCa {
    /// A warning when the root ends before an intermediate of `intermediate_days` issued now would
    /// (that intermediate is then cut to end with the root).
    pub fn expiry_warning(&self, intermediate_days: u32) -> Option<String> {
        let wanted = OffsetDateTime::now_utc() + Duration::days(i64::from(intermediate_days));
        // A day of slack: a root made a moment ago with the same validity is not "ending early".
        (wanted - self.not_after > Duration::days(1)).then(|| {
            let left = (self.not_after - OffsetDateTime::now_utc()).whole_days();
            format!(
                "the root CA expires on {} ({left} days from now), before a new {intermediate_days}-day intermediate would; new intermediates end with the root. Plan a root rotation (docs/certificates.md)",
                day(self.not_after)
            )
        })
    }

    /// Self-signs a new root with `key`.
    pub fn generate(key: KeyPair, validity: Validity) -> Result<RootCa, PkiError> {
        // No path length on the root, as in the Makefile's `basicConstraints = critical, CA:true`.
        let params = ca_params(
            &[
                (DnType::OrganizationName, "Istio"),
                (DnType::CommonName, "Root CA"),
            ],
            BasicConstraints::Unconstrained,
            validity.root_days,
        );
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("self-sign the root CA"))?;
        let cert_pem = normalize_pem(&cert.pem());
        let key_pem = normalize_pem(&key.serialize_pem());
        Ok(RootCa {
            cert_pem,
            key_pem,
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing root (from `certs gen` or Istio's Makefile) to sign new intermediates.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<RootCa, PkiError> {
        let key = load_key(key_pem, "root-key.pem")?;
        check_key_matches(cert_pem, &key, "root-cert.pem")?;
        let cert = parse_pem_cert(cert_pem, "root-cert.pem")?;
        let (_, x509) = parse_certificate(&cert, "root-cert.pem")?;
        if !x509.is_ca() {
            return Err(unusable(
                "root-cert.pem",
                "is not a CA certificate (basicConstraints CA:false)".into(),
            ));
        }
        let not_after = x509.validity().not_after.to_datetime();
        let not_before = x509.validity().not_before.to_datetime();
        if not_before > OffsetDateTime::now_utc() {
            return Err(unusable(
                "root-cert.pem",
                format!(
                    "is not valid before {}: workloads would reject everything it signs until then (is this machine's clock right?)",
                    day(not_before)
                ),
            ));
        }
        if not_after <= OffsetDateTime::now_utc() {
            return Err(unusable(
                "root-cert.pem",
                format!(
                    "expired on {}: no intermediate can be issued under it. A new root means new `cacerts` in every cluster: move this directory away and run `meshctl certs gen` (or `meshctl up`) again, then follow docs/certificates.md to roll it out",
                    day(not_after)
                ),
            ));
        }
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(rcgen_err("load root-cert.pem as an issuer"))?;
        Ok(RootCa {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            not_after,
            issuer,
        })
    }

    /// Signs an intermediate CA for `cluster` with `key`.
    pub fn sign_intermediate(
        &self,
        cluster: &str,
        key: KeyPair,
        validity: Validity,
    ) -> Result<IntermediateCa, PkiError> {
        let mut params = ca_params(
            &[
                (DnType::OrganizationName, "Istio"),
                (DnType::CommonName, "Intermediate CA"),
                (DnType::LocalityName, cluster),
            ],
            BasicConstraints::Constrained(0),
            validity.intermediate_days,
        );
        // An intermediate never outlives its root: a chain is only as valid as its shortest link.
        params.not_after = params.not_after.min(self.not_after);
        params.subject_alt_names = vec![SanType::DnsName(
            INTERMEDIATE_SAN
                .try_into()
                .map_err(rcgen_err("encode the intermediate SAN"))?,
        )];
        // Lets verifiers pick the right root when several are trusted (the Makefile omits it).
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_err(format!(
            "sign the intermediate CA of cluster `{cluster}`"
        )))?;
        let ca_cert_pem = normalize_pem(&cert.pem());
        Ok(IntermediateCa {
            cluster: cluster.to_string(),
            cert_chain_pem: format!("{ca_cert_pem}{}", self.cert_pem),
            ca_cert_pem,
            ca_key_pem: normalize_pem(&key.serialize_pem()),
            root_cert_pem: self.cert_pem.clone(),
        })
    }
}

impl IntermediateCa {
    /// Checks what istiod checks when it loads `cacerts` (since 1.27 istiod exits with
    /// "incomplete signing CA bundle detected" otherwise): all four
    /// parts present, the key matches the certificate, the certificate is a CA signed by the root
    /// in `root-cert.pem`, and `root-cert.pem` is `root` (the mesh's shared root), alone or in a
    /// trust bundle with the next root during a root rotation.
    pub fn check_against(&self, root_cert_pem: &str) -> Result<(), PkiError> {
        let what = format!("intermediate CA of cluster `{}`", self.cluster);
        if !bundle_contains(&self.root_cert_pem, root_cert_pem) {
            return Err(unusable(
                &what,
                "its root-cert.pem is not the mesh's root CA (re-run with --force to re-issue it)".into(),
            ));
        }
        let key = load_key(&self.ca_key_pem, &format!("{}/ca-key.pem", self.cluster))?;
        check_key_matches(&self.ca_cert_pem, &key, &format!("{}/ca-cert.pem", self.cluster))?;
        let cert_der = parse_pem_cert(&self.ca_cert_pem, "ca-cert.pem")?;
        let root_der = parse_pem_cert(root_cert_pem, "root-cert.pem")?;
        let (_, cert) = parse_certificate(&cert_der, &what)?;
        let (_, root) = parse_certificate(&root_der, &what)?;
        if !cert.is_ca() {
            return Err(unusable(&what, "ca-cert.pem is not a CA certificate".into()));
        }
        // An intermediate outside its validity signs certificates no proxy accepts: never kept,
        // never put into `cacerts`.
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = (
            cert.validity().not_before.to_datetime(),
            cert.validity().not_after.to_datetime(),
        );
        if not_before > now {
            return Err(unusable(
                &what,
                format!(
                    "ca-cert.pem is not valid before {} (is this machine's clock right?); re-issue it: `meshctl certs rotate --cluster {}`, or `meshctl certs gen --force`",
                    day(not_before),
                    self.cluster
                ),
            ));
        }
        if not_after <= now {
            return Err(unusable(
                &what,
                format!(
                    "ca-cert.pem expired on {}; re-issue it: `meshctl certs rotate --cluster {}`, or `meshctl certs gen --force`",
                    day(not_after),
                    self.cluster
                ),
            ));
        }
        cert.verify_signature(Some(root.public_key()))
            .map_err(|e| unusable(&what, format!("ca-cert.pem is not signed by the root CA ({e})")))?;
        if !self.cert_chain_pem.starts_with(self.ca_cert_pem.trim_end()) {
            return Err(unusable(
                &what,
                "cert-chain.pem does not start with ca-cert.pem".into(),
            ));
        }
        Ok(())
    }
}

fn unusable(what: &str, reason: String) -> PkiError {
    PkiError::Unusable {
        what: what.to_string(),
        reason,
    }
}

/// The certificate in `der`; a damaged one is said so in words, not as the DER parser's dump.
fn parse_certificate<'a>(
    der: &'a [u8],
    what: &str,
) -> Result<(&'a [u8], x509_parser::certificate::X509Certificate<'a>), PkiError> {
    x509_parser::parse_x509_certificate(der).map_err(|_| {
        unusable(
            what,
            "is not a readable X.509 certificate (its contents are damaged or cut short)".into(),
        )
    })
}

fn parse_pem_cert(pem_text: &str, what: &str) -> Result<Vec<u8>, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).map_err(|_| {
        unusable(
            what,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        )
    })?;
    Ok(pem.contents)
}

/// Loads a PEM private key (PKCS#8, PKCS#1 or SEC1). RSA keys sign with SHA-256.
pub fn load_key(pem: &str, what: &str) -> Result<KeyPair, PkiError> {
    let key = KeyPair::from_pem(pem).map_err(|e| unusable(what, why_no_key(pem, &e.to_string())))?;
    if key.is_compatible(&PKCS_RSA_SHA256) && key.algorithm() != &PKCS_RSA_SHA256 {
        return KeyPair::from_pem_and_sign_algo(pem, &PKCS_RSA_SHA256)
            .map_err(|e| unusable(what, format!("RSA key cannot sign with SHA-256 ({e})")));
    }
    Ok(key)
}

/// Why `pem` gave no usable key, in the user's terms: an encrypted key, a PEM block that is not a
/// key, an RSA key too short for the crypto library (2048 bits at least), or the parser's word.
fn why_no_key(pem: &str, parser_said: &str) -> String {
    let label = pem
        .lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .unwrap_or("");
    match label {
        "" => "holds no PEM block (-----BEGIN PRIVATE KEY-----)".into(),
        "ENCRYPTED PRIVATE KEY" => "is encrypted with a passphrase; istiod reads cacerts keys unencrypted, and so does meshctl: decrypt it (`openssl pkey -in root-key.pem -out root-key.pem.plain`) and keep it 0600".into(),
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => match rsa_modulus_bits(pem) {
            Some(bits) if bits < 2048 => format!(
                "is an RSA key of {bits} bits; RSA keys must have 2048 bits or more (Istio's own tooling makes 4096)"
            ),
            _ => format!("is a private key meshctl cannot read ({parser_said})"),
        },
        other => format!("holds a {other}, not a private key"),
    }
}

/// The modulus size of an RSA private key in PEM (PKCS#1 or PKCS#8), read from its DER.
fn rsa_modulus_bits(pem: &str) -> Option<usize> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    // One DER element at `at`: (tag, start of contents, end of contents).
    fn element(der: &[u8], at: usize) -> Option<(u8, usize, usize)> {
        let tag = *der.get(at)?;
        let first = *der.get(at + 1)? as usize;
        let (len, start) = if first < 0x80 {
            (first, at + 2)
        } else {
            let n = first & 0x7f;
            let bytes = der.get(at + 2..at + 2 + n)?;
            (
                bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
                at + 2 + n,
            )
        };
        Some((tag, start, start + len))
    }
    // PKCS#1 RSAPrivateKey: SEQUENCE { version INTEGER, modulus INTEGER, … }.
    let modulus = |der: &[u8]| -> Option<usize> {
        let (_, seq, _) = element(der, 0)?;
        let (_, _, after_version) = element(der, seq)?;
        let (tag, start, end) = element(der, after_version)?;
        (tag == 0x02).then(|| {
            let digits = &der[start..end];
            let skip = digits.iter().take_while(|b| **b == 0).count();
            (digits.len() - skip) * 8
        })
    };
    let (_, seq, _) = element(&der, 0)?;
    let (_, _, after_version) = element(&der, seq)?;
    match element(&der, after_version)? {
        // PKCS#8: version, AlgorithmIdentifier (a SEQUENCE), then the PKCS#1 key in an OCTET STRING.
        (0x30, _, after_algorithm) => {
            const RSA_OID: [u8; 11] = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
            if !der[after_version..after_algorithm]
                .windows(RSA_OID.len())
                .any(|w| w == RSA_OID)
            {
                return None;
            }
            let (tag, start, end) = element(&der, after_algorithm)?;
            (tag == 0x04).then(|| modulus(&der[start..end])).flatten()
        }
        _ => modulus(&der),
    }
}

fn check_key_matches(cert_pem: &str, key: &KeyPair, what: &str) -> Result<(), PkiError> {
    use rcgen::PublicKeyData;
    let der = parse_pem_cert(cert_pem, what)?;
    let (_, cert) = parse_certificate(&der, what)?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(unusable(
            what,
            "its private key does not match the certificate".into(),
        ));
    }
    Ok(())
}

/// What a person wants to know of a CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertFacts {
    /// Subject, e.g. `O=Istio, CN=Intermediate CA, L=cluster1`.
    pub subject: String,
    pub serial: String,
    /// End of validity, `YYYY-MM-DD`.
    pub not_after: String,
    /// Whole days from now until then (negative once expired).
    pub days_left: i64,
}

/// Subject, serial and expiry of the first certificate in `pem`.
pub fn cert_facts(pem: &str, what: &str) -> Result<CertFacts, PkiError> {
    let der = parse_pem_cert(pem, what)?;
    let (_, cert) = parse_certificate(&der, what)?;
    let not_after = cert.validity().not_after.to_datetime();
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_after: day(not_after),
        days_left: (not_after - OffsetDateTime::now_utc()).whole_days(),
    })
}

/// The PEM blocks of a bundle, each normalized.
pub fn pem_blocks(bundle: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in bundle.replace("\r\n", "\n").lines() {
        if line.starts_with("-----BEGIN ") {
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END ") {
            blocks.push(std::mem::take(&mut current));
        }
    }
    blocks
}

/// Whether trust bundle `bundle` holds certificate `cert` (a root may sit in a bundle with the
/// next root while roots are rotated).
pub fn bundle_contains(bundle: &str, cert: &str) -> bool {
    let wanted = pem_blocks(cert);
    !wanted.is_empty() && pem_blocks(bundle).contains(&wanted[0])
}

/// The SHA-256 fingerprint of the first certificate in `pem`, as `openssl x509 -noout
/// -fingerprint -sha256` prints it (`AB:CD:…`), so a person can compare it with what a cluster or
/// another machine holds; `None` when `pem` holds no readable certificate.
pub fn sha256_fingerprint(pem: &str) -> Option<String> {
    use sha2::Digest as _;
    let der = parse_pem_cert(pem, "certificate").ok()?;
    let digest = sha2::Sha256::digest(&der);
    Some(
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// LF line endings and exactly one trailing newline, so files compare byte for byte.
pub fn normalize_pem(pem: &str) -> String {
    let mut text = pem.replace("\r\n", "\n");
    while text.ends_with("\n\n") {
        text.pop();
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::parse_x509_certificate;

    fn fast_root() -> RootCa {
        RootCa::generate(generate_key(KeyType::EcdsaP256).unwrap(), Validity::default()).unwrap()
    }

    fn parse(pem_text: &str) -> Vec<u8> {
        parse_pem_cert(pem_text, "test").unwrap()
    }

    #[test]
    fn intermediate_has_istio_subject_pathlen_zero_and_istiod_san() {
        let root = fast_root();
        let ca = root
            .sign_intermediate(
                "cluster7",
                generate_key(KeyType::EcdsaP256).unwrap(),
                Validity::default(),
            )
            .unwrap();
        let der = parse(&ca.ca_cert_pem);
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.subject().to_string(),
            "O=Istio, CN=Intermediate CA, L=cluster7"
        );
        assert_eq!(cert.issuer().to_string(), "O=Istio, CN=Root CA");
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::DNSName(INTERMEDIATE_SAN)]
        );
        ca.check_against(&root.cert_pem).unwrap();
        assert!(ca.cert_chain_pem.ends_with(&root.cert_pem));
    }

    #[test]
    fn loaded_root_signs_intermediates_that_verify_against_the_original() {
        let root = fast_root();
        let loaded = RootCa::load(&root.cert_pem, &root.key_pem).unwrap();
        let ca = loaded
            .sign_intermediate(
                "c",
                generate_key(KeyType::EcdsaP256).unwrap(),
                Validity::default(),
            )
            .unwrap();
        ca.check_against(&root.cert_pem).unwrap();
    }

    #[test]
    fn root_with_someone_elses_key_is_refused() {
        let a = fast_root();
        let b = fast_root();
        let err = RootCa::load(&a.cert_pem, &b.key_pem).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn intermediate_of_another_root_fails_the_check() {
        let a = fast_root();
        let b = fast_root();
        let ca = b
            .sign_intermediate(
                "c",
                generate_key(KeyType::EcdsaP256).unwrap(),
                Validity::default(),
            )
            .unwrap();
        assert!(ca.check_against(&a.cert_pem).is_err());
    }

    #[test]
    fn serials_are_positive_sixteen_bytes_and_distinct() {
        let a = fast_root();
        let b = fast_root();
        let serial = |p: &str| parse_x509_certificate(&parse(p)).unwrap().1.raw_serial().to_vec();
        let (sa, sb) = (serial(&a.cert_pem), serial(&b.cert_pem));
        assert_ne!(sa, sb);
        assert_eq!(sa.len(), 16);
        assert!(sa[0] & 0x80 == 0 && sa[0] != 0);
    }

    #[test]
    fn pem_is_normalized_to_lf_with_one_trailing_newline() {
        assert_eq!(normalize_pem("a\r\nb\r\n\n\n"), "a\nb\n");
        assert_eq!(normalize_pem("a"), "a\n");
    }
}
