//! Signature verification for `jsonwebtoken`, backed by `ring`.
//!
//! `jsonwebtoken` 10 delegates its cryptography to a process-wide `CryptoProvider`. The
//! RustCrypto one verifies RS256 with a generic big-integer library (~250 µs per token here);
//! `ring`, already linked for TLS, does it in a tenth of that. [`install`] puts a provider in
//! place whose verifiers use `ring` for every asymmetric algorithm and whose signers (the dev
//! `token` command, tests) stay RustCrypto's.
//!
//! Nothing here widens what is accepted: the algorithm allow-list, key-type match and claim
//! checks stay in [`super::jwt`]. `ring` additionally refuses RSA moduli under 2048 bits.

use std::sync::OnceLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature as signature_trait;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};

/// Installs the `ring` verifiers as `jsonwebtoken`'s provider for this process. Idempotent.
/// Returns false when another provider was already in use (a token was signed or verified
/// before this call); verification is then correct but slower.
pub fn install() -> bool {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let provider = PROVIDER.get_or_init(|| CryptoProvider {
            verifier_factory: new_verifier,
            ..rust_crypto::DEFAULT_PROVIDER.clone()
        });
        let ok = provider.install_default().is_ok();
        if !ok {
            tracing::warn!("jsonwebtoken crypto provider was already chosen; using RustCrypto");
        }
        ok
    })
}

/// One verification: the algorithm, ring's parameters for it, and the key.
struct RingVerifier {
    alg: Algorithm,
    params: &'static dyn VerificationAlgorithm,
    rsa: Option<&'static signature::RsaParameters>,
    key: DecodingKey,
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    use Algorithm as A;
    let (family, params, rsa): (_, &'static dyn VerificationAlgorithm, _) = match alg {
        A::RS256 => rsa_params(&signature::RSA_PKCS1_2048_8192_SHA256),
        A::RS384 => rsa_params(&signature::RSA_PKCS1_2048_8192_SHA384),
        A::RS512 => rsa_params(&signature::RSA_PKCS1_2048_8192_SHA512),
        A::PS256 => rsa_params(&signature::RSA_PSS_2048_8192_SHA256),
        A::PS384 => rsa_params(&signature::RSA_PSS_2048_8192_SHA384),
        A::PS512 => rsa_params(&signature::RSA_PSS_2048_8192_SHA512),
        A::ES256 => (
            AlgorithmFamily::Ec,
            &signature::ECDSA_P256_SHA256_FIXED,
            None,
        ),
        A::ES384 => (
            AlgorithmFamily::Ec,
            &signature::ECDSA_P384_SHA384_FIXED,
            None,
        ),
        A::EdDSA => (AlgorithmFamily::Ed, &signature::ED25519, None),
        // Symmetric algorithms never reach here from our verifier (they are not on any
        // allow-list); keep the library's own behaviour for them.
        A::HS256 | A::HS384 | A::HS512 => {
            return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key);
        }
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        params,
        rsa,
        key: key.clone(),
    }))
}

fn rsa_params(
    p: &'static signature::RsaParameters,
) -> (
    AlgorithmFamily,
    &'static dyn VerificationAlgorithm,
    Option<&'static signature::RsaParameters>,
) {
    (AlgorithmFamily::Rsa, p, Some(p))
}

impl signature_trait::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature_trait::Error> {
        let ok = match (self.key.kind(), self.rsa) {
            (DecodingKeyKind::RsaModulusExponent { n, e }, Some(rsa)) => {
                RsaPublicKeyComponents { n, e }
                    .verify(rsa, msg, sig)
                    .is_ok()
            }
            (DecodingKeyKind::RsaModulusExponent { .. }, None) => false,
            // PKCS#1 RSAPublicKey DER, a SEC1 uncompressed point, or a raw Ed25519 key.
            (DecodingKeyKind::SecretOrDer(bytes), _) => UnparsedPublicKey::new(self.params, bytes)
                .verify(msg, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(signature_trait::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::crypto::JwtSigner;

    fn rsa_key() -> (jsonwebtoken::EncodingKey, DecodingKey) {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let der = key.to_pkcs1_der().unwrap();
        (
            jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
            DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be()),
        )
    }

    fn sign(alg: Algorithm, key: &jsonwebtoken::EncodingKey, msg: &[u8]) -> Vec<u8> {
        let signer: Box<dyn JwtSigner> =
            (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&alg, key).unwrap();
        signer.try_sign(msg).unwrap()
    }

    #[test]
    fn rsa_signatures_verify_and_tampering_fails() {
        let (enc, dec) = rsa_key();
        for alg in [Algorithm::RS256, Algorithm::PS256, Algorithm::RS512] {
            let sig = sign(alg, &enc, b"header.payload");
            let v = new_verifier(&alg, &dec).unwrap();
            assert!(v.verify(b"header.payload", &sig).is_ok(), "{alg:?}");
            assert!(v.verify(b"header.payloaD", &sig).is_err(), "{alg:?}");
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(v.verify(b"header.payload", &bad).is_err(), "{alg:?}");
        }
        // An RS256 signature is not a PS256 one.
        let sig = sign(Algorithm::RS256, &enc, b"m");
        let v = new_verifier(&Algorithm::PS256, &dec).unwrap();
        assert!(v.verify(b"m", &sig).is_err());
    }

    #[test]
    fn es256_verifies_a_jwk_point() {
        use base64::Engine as _;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let dec = DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..])).unwrap();
        let enc = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
        let sig = sign(Algorithm::ES256, &enc, b"header.payload");
        let v = new_verifier(&Algorithm::ES256, &dec).unwrap();
        assert!(v.verify(b"header.payload", &sig).is_ok());
        assert!(v.verify(b"header.payloae", &sig).is_err());
        assert!(
            new_verifier(&Algorithm::ES384, &dec)
                .unwrap()
                .verify(b"header.payload", &sig)
                .is_err()
        );
    }

    #[test]
    fn a_key_of_another_family_is_refused() {
        let (_, rsa) = rsa_key();
        for alg in [Algorithm::ES256, Algorithm::EdDSA] {
            assert!(new_verifier(&alg, &rsa).is_err(), "{alg:?}");
        }
        let ed =
            DecodingKey::from_ed_components("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert!(new_verifier(&Algorithm::RS256, &ed).is_err());
    }

    #[test]
    fn ed25519_verifies_with_the_dev_key() {
        let dev = crate::devkeys::DevKey::generate();
        let enc = jsonwebtoken::EncodingKey::from_ed_pem(dev.to_pem().as_bytes()).unwrap();
        let sig = sign(Algorithm::EdDSA, &enc, b"msg");
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&dev.jwks_json()).unwrap();
        let dec = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let v = new_verifier(&Algorithm::EdDSA, &dec).unwrap();
        assert!(v.verify(b"msg", &sig).is_ok());
        assert!(v.verify(b"msh", &sig).is_err());
    }
}
