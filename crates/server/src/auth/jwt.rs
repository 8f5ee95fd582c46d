//! JSON Web Tokens as OIDC providers issue them (RFC 7515, 7517, 7518, 7519): splitting a
//! compact token, reading a JSON Web Key Set, checking the signature with aws-lc-rs (the crypto
//! rustls already links) and the registered claims. Pure functions of their inputs: where the
//! key set comes from, and what the claims grant, is `oidc`'s business.
//!
//! Only asymmetric algorithms are accepted (RS*, PS*, ES256, ES384). `none` and the HMAC
//! family are refused: a shared secret would have to live in Spoor's configuration, and the
//! classic "alg confusion" attacks need one of them to be accepted.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value as Json};

/// Base64url as JWTs and key sets write it: without padding, though some providers pad.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A token longer than this is not a JWT we would accept (it would not fit a sane header).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The signature algorithms accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            _ => return None,
        })
    }

    fn curve(self) -> Option<Curve> {
        match self {
            Alg::Es256 => Some(Curve::P256),
            Alg::Es384 => Some(Curve::P384),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

#[derive(Debug)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point, `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
}

/// One verification key of a key set.
#[derive(Debug)]
pub struct Key {
    kid: Option<String>,
    /// The key's own `alg`, when it names one: a token must then use exactly that.
    alg: Option<Alg>,
    material: Material,
}

impl Key {
    fn fits(&self, alg: Alg) -> bool {
        let family = match &self.material {
            Material::Rsa { .. } => alg.curve().is_none(),
            Material::Ec { curve, .. } => alg.curve() == Some(*curve),
        };
        family && self.alg.is_none_or(|a| a == alg)
    }

    fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            Material::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    Alg::Es256 | Alg::Es384 => return false,
                };
                RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }.verify(params, message, sig).is_ok()
            }
            Material::Ec { point, .. } => {
                let algorithm: &signature::EcdsaVerificationAlgorithm = match alg {
                    Alg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Alg::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                UnparsedPublicKey::new(algorithm, point).verify(message, sig).is_ok()
            }
        }
    }
}

/// A JSON Web Key Set (`{"keys": [...]}`), keeping the keys that can verify signatures.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a key set. Keys Spoor cannot use (encryption keys, symmetric keys, other curves)
    /// are skipped, since providers publish those too; a set with no usable key is an error.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        let doc: Json = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let Some(list) = doc.get("keys").and_then(Json::as_array) else {
            return Err("no \"keys\" array (a JSON Web Key Set is {\"keys\": [...]})".into());
        };
        let mut keys = Vec::new();
        for (i, k) in list.iter().enumerate() {
            match key(k) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(e) => return Err(format!("key {i}: {e}")),
            }
        }
        if keys.is_empty() {
            return Err("no RSA or EC (P-256, P-384) signing key in it".into());
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token names (by `kid`), or, for a token without `kid`, the one key fitting
    /// its algorithm.
    fn find(&self, alg: Alg, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
    }
}

fn field<'a>(k: &'a Json, name: &str) -> Option<&'a str> {
    k.get(name).and_then(Json::as_str)
}

fn bytes(k: &Json, name: &str) -> Result<Vec<u8>, String> {
    let s = field(k, name).ok_or_else(|| format!("no {name:?}"))?;
    B64URL.decode(s).map_err(|e| format!("{name:?} is not base64url: {e}"))
}

/// One key of a set; `None` for a key that is not for signatures by an algorithm we accept.
fn key(k: &Json) -> Result<Option<Key>, String> {
    if field(k, "use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match field(k, "alg") {
        Some(name) => match Alg::parse(name) {
            Some(a) => Some(a),
            None => return Ok(None),
        },
        None => None,
    };
    let kid = field(k, "kid").map(str::to_owned);
    let material = match field(k, "kty") {
        Some("RSA") => {
            let mut n = bytes(k, "n")?;
            // A leading zero byte is legal in some encoders and refused by the verifier.
            let zeros = n.iter().take_while(|b| **b == 0).count();
            n.drain(..zeros);
            Material::Rsa { n, e: bytes(k, "e")? }
        }
        Some("EC") => {
            let curve = match field(k, "crv") {
                Some("P-256") => Curve::P256,
                Some("P-384") => Curve::P384,
                _ => return Ok(None),
            };
            let len = curve.coordinate_len();
            let (x, y) = (bytes(k, "x")?, bytes(k, "y")?);
            if x.len() > len || y.len() > len {
                return Err(format!("EC coordinates longer than {len} bytes"));
            }
            let mut point = vec![4u8];
            for c in [x, y] {
                point.resize(point.len() + len - c.len(), 0);
                point.extend_from_slice(&c);
            }
            Material::Ec { curve, point }
        }
        _ => return Ok(None),
    };
    let key = Key { kid, alg, material };
    if let Some(a) = alg
        && !key.fits(a)
    {
        return Err(format!("its alg {a:?} does not fit its key type"));
    }
    Ok(Some(key))
}

/// Whether a bearer token has a JWT's shape: three base64url parts, the first a JSON object
/// naming an `alg`. Opaque tokens from the tokens file are looked up first; this only decides
/// whether an unknown one is worth verifying as a JWT (and explaining why it fails).
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    B64URL
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice::<Map<String, Json>>(&b).ok())
        .is_some_and(|m| m.contains_key("alg"))
}

/// A token whose signature has been checked: its claims.
pub type Claims = Map<String, Json>;

/// Why a key set could not vouch for a token.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The token names a `kid` the key set does not hold (yet: a refreshed set may).
    UnknownKid(String),
    /// Anything else; the message says what, never the token.
    Invalid(String),
}

/// Checks a compact JWT's form and signature against `keys` and returns its claims; the
/// claims themselves are `check_claims`'s.
pub fn verify(token: &str, keys: &KeySet) -> Result<Claims, Refusal> {
    let bad = |m: &str| Refusal::Invalid(m.to_owned());
    if token.len() > MAX_TOKEN_BYTES {
        return Err(bad("the JWT is longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("malformed JWT: not three dot-separated parts"));
    };
    let header: Map<String, Json> = B64URL
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("malformed JWT: the header is not base64url JSON"))?;
    if header.contains_key("crit") {
        return Err(bad("the JWT header has crit extensions, which are not supported"));
    }
    let alg_name = header.get("alg").and_then(Json::as_str).unwrap_or("");
    let Some(alg) = Alg::parse(alg_name) else {
        return Err(Refusal::Invalid(format!(
            "JWT algorithm {alg_name:?} is not accepted (RS256/384/512, PS256/384/512, ES256, ES384)"
        )));
    };
    let kid = header.get("kid").and_then(Json::as_str);
    let key = match (keys.find(alg, kid), kid) {
        (Some(k), _) => k,
        (None, Some(kid)) => return Err(Refusal::UnknownKid(kid.to_owned())),
        (None, None) => return Err(bad("the JWT names no kid and the key set has no single key for its algorithm")),
    };
    if !key.fits(alg) {
        return Err(Refusal::Invalid(format!("key {:?} is not a key for {alg_name}", kid.unwrap_or(""))));
    }
    let sig = B64URL.decode(s).map_err(|_| bad("malformed JWT: the signature is not base64url"))?;
    let signed = &token[..h.len() + 1 + p.len()];
    if !key.verify(alg, signed.as_bytes(), &sig) {
        return Err(bad("bad JWT signature"));
    }
    let payload = B64URL.decode(p).map_err(|_| bad("malformed JWT: the payload is not base64url"))?;
    serde_json::from_slice(&payload).map_err(|_| bad("malformed JWT: the payload is not a JSON object"))
}

/// What the registered claims must say.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Clock skew forgiven on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Seconds since the Unix epoch.
    pub now: u64,
}

/// Checks `exp` (required), `nbf`, `iss` and `aud`. Issuer and audience are not secrets, so
/// messages name them: an operator reading a refusal sees at once which side is misconfigured.
pub fn check_claims(claims: &Claims, want: &Expect) -> Result<(), String> {
    let time = |name: &str| -> Result<Option<u64>, String> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map(|t| Some(t as u64))
                .ok_or_else(|| format!("the JWT's {name} is not a number of seconds")),
        }
    };
    let exp = time("exp")?.ok_or("the JWT has no exp (expiry) claim")?;
    if want.now > exp.saturating_add(want.leeway) {
        return Err(format!("the JWT expired {} s ago", want.now - exp));
    }
    if let Some(nbf) = time("nbf")?
        && want.now.saturating_add(want.leeway) < nbf
    {
        return Err(format!("the JWT is not valid yet (nbf is {} s from now)", nbf - want.now));
    }
    let iss = claims.get("iss").and_then(Json::as_str).unwrap_or("");
    if iss.trim_end_matches('/') != want.issuer.trim_end_matches('/') {
        return Err(format!("the JWT was issued by {iss:?}, not by the configured issuer {:?}", want.issuer));
    }
    let aud_ok = match claims.get("aud") {
        Some(Json::String(a)) => a == want.audience,
        Some(Json::Array(list)) => list.iter().any(|a| a.as_str() == Some(want.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("the JWT's audience (aud) does not include {:?}", want.audience));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::engine::general_purpose;

    fn b64(b: &[u8]) -> String {
        general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn es256() -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..])},
        ]});
        (pair, jwks.to_string())
    }

    fn sign(pair: &EcdsaKeyPair, header: &Json, claims: &Json) -> String {
        let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64(sig.as_ref()))
    }

    #[test]
    fn verifies_es256_and_refuses_what_it_should() {
        let (pair, jwks) = es256();
        let keys = KeySet::parse(jwks.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        let claims = serde_json::json!({"iss": "https://idp", "aud": ["x", "spoor"], "exp": 2000, "sub": "u"});
        let token = sign(&pair, &serde_json::json!({"alg": "ES256", "kid": "k1"}), &claims);
        assert!(looks_like_jwt(&token) && !looks_like_jwt("tok-read-a") && !looks_like_jwt("a.b.c"));
        let got = verify(&token, &keys).unwrap();
        let want = Expect { issuer: "https://idp/", audience: "spoor", leeway: 60, now: 1000 };
        assert!(check_claims(&got, &want).is_ok());
        assert!(check_claims(&got, &Expect { now: 2100, ..want }).unwrap_err().contains("expired 100 s ago"));
        assert!(check_claims(&got, &Expect { audience: "other", ..want }).unwrap_err().contains("audience"));
        assert!(check_claims(&got, &Expect { issuer: "https://evil", ..want }).unwrap_err().contains("issued by"));

        // Tampered payload, other kid, other algorithms.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(serde_json::json!({"iss": "https://idp", "aud": "spoor", "exp": 9999}).to_string().as_bytes());
        parts[1] = &forged;
        assert_eq!(verify(&parts.join("."), &keys), Err(Refusal::Invalid("bad JWT signature".into())));
        let other = sign(&pair, &serde_json::json!({"alg": "ES256", "kid": "k2"}), &claims);
        assert_eq!(verify(&other, &keys), Err(Refusal::UnknownKid("k2".into())));
        let hs = sign(&pair, &serde_json::json!({"alg": "HS256", "kid": "k1"}), &claims);
        assert!(matches!(verify(&hs, &keys), Err(Refusal::Invalid(m)) if m.contains("not accepted")));
        let rs = sign(&pair, &serde_json::json!({"alg": "RS256", "kid": "k1"}), &claims);
        assert!(matches!(verify(&rs, &keys), Err(Refusal::Invalid(m)) if m.contains("not a key for RS256")));
        let no_kid = sign(&pair, &serde_json::json!({"alg": "ES256"}), &claims);
        assert!(verify(&no_kid, &keys).is_ok());
    }

    #[test]
    fn claims_need_exp_and_respect_nbf() {
        let want = Expect { issuer: "i", audience: "a", leeway: 5, now: 100 };
        let c = |v: Json| v.as_object().unwrap().clone();
        assert!(check_claims(&c(serde_json::json!({"iss": "i", "aud": "a"})), &want).unwrap_err().contains("no exp"));
        let early = c(serde_json::json!({"iss": "i", "aud": "a", "exp": 500, "nbf": 200}));
        assert!(check_claims(&early, &want).unwrap_err().contains("not valid yet"));
        let skewed = c(serde_json::json!({"iss": "i", "aud": "a", "exp": 96, "nbf": 104}));
        assert!(check_claims(&skewed, &want).is_ok());
        assert!(KeySet::parse(b"{\"keys\": []}").unwrap_err().contains("no RSA or EC"));
        assert!(KeySet::parse(b"[]").unwrap_err().contains("keys"));
    }
}
